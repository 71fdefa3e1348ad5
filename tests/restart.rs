//! Restarts that change the shard count (1 -> 2 -> 1 -> 3 -> 1).
//!
//! State on disk is not per shard (DESIGN.md), so whatever was true before a
//! restart must be true after it under any shard count: open conversations
//! (queued and assigned, the queue's order), assignments (an agent's welcome
//! lists its conversations within the grace period), receipt cursors (the
//! replay after a reconnection starts past them), a visitor's open
//! conversation (a message without `conv` goes there), closed conversations
//! (stay closed), and idempotency (a resent id gets its original ack).
//! Restarts alternate between SIGKILL and a SIGTERM drain.

mod common;
mod logcheck;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Client, Gateway, Options};
use logcheck::{Entry, View};
use serde_json::{json, Value};

/// The next `msg` frame (queue positions skipped; anything else fails).
fn next_msg(c: &mut Client) -> Value {
    c.recv_type("msg")
}

/// Asserts the next `msg` frame is entry `seq` of `conv`; returns it.
fn expect_msg(c: &mut Client, conv: &str, seq: u64) -> Value {
    let m = next_msg(c);
    assert_eq!(
        (m["conv"].as_str(), m["seq"].as_u64()),
        (Some(conv), Some(seq)),
        "expected seq {seq} of {conv}, got {m}"
    );
    m
}

/// Sends a message and checks its ack: `(conv, seq)`.
fn say_at(c: &mut Client, id: &str, conv: Option<&str>, seq: u64) -> String {
    let ack = c.say(id, conv, &format!("text of {id}"));
    assert_eq!(ack["seq"], seq, "ack of {id}: {ack}");
    if let Some(conv) = conv {
        assert_eq!(ack["conv"], conv, "ack of {id}: {ack}");
    }
    ack["conv"].as_str().expect("conv").to_string()
}

/// Resends an old id: the original ack comes back.
fn resend(c: &mut Client, id: &str, conv_field: Option<&str>, conv: &str, seq: u64) {
    let ack = c.say(id, conv_field, &format!("text of {id}"));
    assert_eq!(
        ack,
        json!({"type": "ack", "id": id, "conv": conv, "seq": seq}),
        "a resend of {id} after the restart gets its original ack"
    );
}

/// One conversation as a welcome should list it.
struct Listed<'a> {
    conv: &'a str,
    state: &'a str,
    agent: Option<&'a str>,
    last_seq: u64,
    /// The replay that follows the welcome: `from..=last_seq` (none when
    /// `from > last_seq`).
    from: u64,
}

/// Logs in and checks the welcome's conversations (in any order) and the
/// replays after it: each conversation's entries from `from` to its last
/// seq, in order, and nothing else (checked with a short bounded wait).
///
/// After a `kill -9` (`killed`), a replay may start earlier than `from`:
/// receipt cursors are written at most once a second, so the newest one
/// can be lost, and the entries after the older cursor come again (at least
/// once; the client drops them by seq). A graceful restart writes cursors,
/// so then the replay starts exactly at `from`.
fn login_expect(gw: &Gateway, token: &str, who: &str, expected: &[Listed], killed: bool) -> Client {
    let (mut c, welcome) = gw.login(token);
    let mut got: Vec<(String, String, Option<String>, u64)> = welcome["conversations"]
        .as_array()
        .expect("conversations")
        .iter()
        .map(|c| {
            (
                c["conv"].as_str().unwrap().to_string(),
                c["state"].as_str().unwrap().to_string(),
                c["agent"]["id"].as_str().map(str::to_string),
                c["last_seq"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut want: Vec<(String, String, Option<String>, u64)> = expected
        .iter()
        .map(|l| {
            (
                l.conv.to_string(),
                l.state.to_string(),
                l.agent.map(str::to_string),
                l.last_seq,
            )
        })
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "{who}'s welcome: {welcome}");

    let mut views: BTreeMap<&str, (View, u64)> = expected
        .iter()
        .filter(|l| l.from <= l.last_seq)
        .map(|l| {
            (
                l.conv,
                (View::holding(l.from - 1, BTreeMap::new()), l.last_seq),
            )
        })
        .collect();
    let mut started = std::collections::BTreeSet::new();
    while views.values().any(|(v, last)| v.held < *last) {
        let m = next_msg(&mut c);
        let conv = m["conv"].as_str().unwrap_or_default().to_string();
        let Some((view, _)) = views.get_mut(conv.as_str()) else {
            panic!("{who}: replay of a conversation not expected: {m}");
        };
        let e = Entry::of(&m);
        if killed && started.insert(conv.clone()) && e.seq <= view.held {
            *view = View::holding(e.seq - 1, BTreeMap::new());
        }
        assert!(
            e.seq > view.held,
            "{who}: replay of {conv} must start past the receipt cursor, at {}; got seq {}",
            view.held + 1,
            e.seq
        );
        view.take(e);
        view.assert_ok(who);
    }
    // Nothing more: no second copy, no replay from before the cursor.
    while let Some(v) = c.try_recv(Duration::from_millis(150)) {
        assert_eq!(v["type"], "queue", "{who}: nothing after the replay: {v}");
    }
    c
}

fn metric_total(gw: &Gateway, name: &str) -> f64 {
    gw.metric_sum(name)
}

#[test]
fn state_survives_restarts_with_other_shard_counts() {
    let started = Instant::now();
    let mut gw = Gateway::start(Options::shards(1));
    let alice_t = gw.agent_token("alice", &["--name", "Alice", "--max-chats", "2"]);
    let bob_t = gw.agent_token("bob", &["--max-chats", "1"]);
    let carol_t = gw.agent_token("carol", &[]);
    let va_t = gw.visitor_token("va", &[]);
    let vb_t = gw.visitor_token("vb", &[]);
    let vc_t = gw.visitor_token("vc", &[]);

    // ----- shards = 1: two conversations assigned to alice (her limit),
    // two queued behind them: vc's, then an anonymous visitor's.
    let (mut alice, _) = gw.login(&alice_t);
    let (mut va, _) = gw.login(&va_t);
    let a = say_at(&mut va, "a-1", None, 1);
    assert_eq!(expect_msg(&mut va, &a, 2)["event"], "queued");
    assert_eq!(expect_msg(&mut va, &a, 3)["event"], "assigned");
    for seq in 1..=3 {
        expect_msg(&mut alice, &a, seq);
    }
    let (mut vb, _) = gw.login(&vb_t);
    let b = say_at(&mut vb, "b-1", None, 1);
    expect_msg(&mut vb, &b, 2);
    expect_msg(&mut vb, &b, 3);
    for seq in 1..=3 {
        expect_msg(&mut alice, &b, seq);
    }
    let (mut vc, _) = gw.login(&vc_t);
    let c = say_at(&mut vc, "c-1", None, 1);
    assert_eq!(expect_msg(&mut vc, &c, 2)["event"], "queued");
    let (mut anon, welcome) = gw.anonymous("demo");
    let anon_t = welcome["token"].as_str().expect("token").to_string();
    let anon_id = welcome["id"].as_str().expect("id").to_string();
    let d = say_at(&mut anon, "n-1", None, 1);
    assert_eq!(expect_msg(&mut anon, &d, 2)["event"], "queued");

    // Conversation A: a chat, and receipt cursors (va at 5, alice at 4),
    // each made durable by a message acked after it on the same shard.
    say_at(&mut alice, "x-1", Some(&a), 4);
    expect_msg(&mut va, &a, 4);
    say_at(&mut va, "a-2", None, 5);
    expect_msg(&mut alice, &a, 5);
    say_at(&mut alice, "x-2", Some(&a), 6);
    expect_msg(&mut va, &a, 6);
    va.send(json!({"type": "recv", "conv": a, "seq": 5}));
    say_at(&mut va, "a-3", None, 7);
    expect_msg(&mut alice, &a, 7);
    alice.send(json!({"type": "recv", "conv": a, "seq": 4}));
    say_at(&mut alice, "x-3", Some(&a), 8);
    expect_msg(&mut va, &a, 8);
    drop((alice, va, vb, vc, anon));
    gw.kill9();

    // ----- SIGKILL, shards = 2.
    gw.restart(Options::shards(2));
    let assigned = |conv, last_seq, from| Listed {
        conv,
        state: "assigned",
        agent: Some("alice"),
        last_seq,
        from,
    };
    let queued = |conv, from| Listed {
        conv,
        state: "queued",
        agent: None,
        last_seq: 2,
        from,
    };
    let mut alice = login_expect(
        &gw,
        &alice_t,
        "alice",
        &[assigned(&a, 8, 5), assigned(&b, 3, 1)],
        true,
    );
    let mut va = login_expect(&gw, &va_t, "va", &[assigned(&a, 8, 6)], true);
    let vb = login_expect(&gw, &vb_t, "vb", &[assigned(&b, 3, 1)], true);
    let mut vc = login_expect(&gw, &vc_t, "vc", &[queued(&c, 1)], true);
    let mut anon = login_expect(
        &gw,
        &anon_t,
        "the anonymous visitor",
        &[queued(&d, 1)],
        true,
    );
    resend(&mut va, "a-1", None, &a, 1);
    resend(&mut alice, "x-1", Some(&a), &a, 4);
    resend(&mut vc, "c-1", None, &c, 1);
    resend(&mut anon, "n-1", None, &d, 1);
    // The resends appended nothing; new messages go on from the last seq.
    say_at(&mut va, "a-4", None, 9);
    expect_msg(&mut alice, &a, 9);
    alice.send(json!({"type": "recv", "conv": a, "seq": 9}));
    say_at(&mut alice, "x-4", Some(&a), 10);
    expect_msg(&mut va, &a, 10);
    alice.send(json!({"type": "recv", "conv": b, "seq": 3}));
    say_at(&mut alice, "y-1", Some(&b), 4);
    va.send(json!({"type": "recv", "conv": a, "seq": 10}));
    say_at(&mut va, "a-5", None, 11);
    expect_msg(&mut alice, &a, 11);
    let open = common::metric_by_label(&gw.metrics(), "kefu_conversations_open", "shard");
    eprintln!("shards=2: open conversations by shard {open:?}");
    assert_eq!(open.values().sum::<f64>(), 4.0, "four open conversations");
    // Clients gone first: a drain waits (at most 2 s) for each client's
    // answer to its close frame.
    drop((alice, va, vb, vc, anon));
    let status = gw.terminate(Duration::from_secs(15));
    assert!(status.success());

    // ----- SIGTERM, shards = 1.
    gw.restart(Options::shards(1));
    let mut alice = login_expect(
        &gw,
        &alice_t,
        "alice",
        &[assigned(&a, 11, 10), assigned(&b, 4, 4)],
        false,
    );
    let mut va = login_expect(&gw, &va_t, "va", &[assigned(&a, 11, 11)], false);
    let mut vc = login_expect(&gw, &vc_t, "vc", &[queued(&c, 1)], false);
    let mut anon = login_expect(
        &gw,
        &anon_t,
        "the anonymous visitor",
        &[queued(&d, 1)],
        false,
    );
    resend(&mut va, "a-2", None, &a, 5);
    resend(&mut alice, "x-4", Some(&a), &a, 10);
    resend(&mut alice, "y-1", Some(&b), &b, 4);
    // The queue kept its order: bob (room for one) takes vc's, queued first.
    let (mut bob, welcome) = gw.login(&bob_t);
    assert_eq!(welcome["conversations"], json!([]));
    for seq in 1..=3 {
        expect_msg(&mut bob, &c, seq);
    }
    let m = expect_msg(&mut vc, &c, 3);
    assert_eq!(
        (m["event"].as_str(), m["agent"]["id"].as_str()),
        (Some("assigned"), Some("bob"))
    );
    say_at(&mut bob, "z-1", Some(&c), 4);
    expect_msg(&mut vc, &c, 4);
    assert!(
        anon.try_recv(Duration::from_millis(200))
            .is_none_or(|v| v["type"] == "queue"),
        "the anonymous visitor's conversation is still queued"
    );
    drop((alice, va, vc, anon, bob));
    gw.kill9();

    // ----- SIGKILL, shards = 3.
    gw.restart(Options::shards(3));
    let by_bob = Listed {
        conv: &c,
        state: "assigned",
        agent: Some("bob"),
        last_seq: 4,
        from: 1,
    };
    let mut alice = login_expect(
        &gw,
        &alice_t,
        "alice",
        &[assigned(&a, 11, 10), assigned(&b, 4, 4)],
        true,
    );
    let mut bob = login_expect(&gw, &bob_t, "bob", &[by_bob], true);
    let va = login_expect(&gw, &va_t, "va", &[assigned(&a, 11, 11)], true);
    let mut vc = login_expect(
        &gw,
        &vc_t,
        "vc",
        &[Listed {
            conv: &c,
            state: "assigned",
            agent: Some("bob"),
            last_seq: 4,
            from: 1,
        }],
        true,
    );
    let mut anon = login_expect(
        &gw,
        &anon_t,
        "the anonymous visitor",
        &[queued(&d, 1)],
        true,
    );
    resend(&mut bob, "z-1", Some(&c), &c, 4);
    resend(&mut vc, "c-1", None, &c, 1);
    resend(&mut anon, "n-1", None, &d, 1);
    // The anonymous visitor's conversation waited through three restarts.
    let (mut carol, _) = gw.login(&carol_t);
    for seq in 1..=3 {
        expect_msg(&mut carol, &d, seq);
    }
    let m = expect_msg(&mut anon, &d, 3);
    assert_eq!(m["agent"]["id"], "carol");
    // Alice closes B: closed is final, across restarts too.
    alice.send(json!({"type": "close", "conv": b}));
    assert_eq!(expect_msg(&mut alice, &b, 5)["event"], "closed");
    say_at(&mut carol, "w-1", Some(&d), 4);
    expect_msg(&mut anon, &d, 4);
    drop((alice, bob, va, vc, anon, carol));
    let status = gw.terminate(Duration::from_secs(15));
    assert!(status.success());

    // ----- SIGTERM, shards = 1.
    gw.restart(Options::shards(1));
    let _alice = login_expect(&gw, &alice_t, "alice", &[assigned(&a, 11, 10)], false);
    let mut vb = login_expect(&gw, &vb_t, "vb", &[], false);
    let mut anon = login_expect(
        &gw,
        &anon_t,
        "the anonymous visitor",
        &[Listed {
            conv: &d,
            state: "assigned",
            agent: Some("carol"),
            last_seq: 4,
            from: 1,
        }],
        false,
    );
    resend(&mut vb, "b-1", None, &b, 1);
    resend(&mut anon, "n-1", None, &d, 1);
    // Its open conversation is still where a message without `conv` goes.
    assert_eq!(say_at(&mut anon, "n-2", None, 5), d);
    let fresh = say_at(&mut vb, "b-2", None, 1);
    assert_ne!(
        fresh, b,
        "a closed conversation stays closed: vb's next message opens a new one"
    );
    assert_eq!(metric_total(&gw, "kefu_conversations_open"), 4.0);
    eprintln!(
        "restarts 1 -> 2 (SIGKILL) -> 1 (SIGTERM) -> 3 (SIGKILL) -> 1 (SIGTERM): welcomes, replays from cursors, queue order, assignments, closed state and 12 resends checked for {anon_id} and 5 others; {:.1?}",
        started.elapsed()
    );
}
