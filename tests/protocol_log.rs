//! PROTOCOL.md, "Receipts, sync, history": `recv` cursors, `sync` and
//! `synced`, `history` pages (before, limit, ref, more; default 50, cap
//! 100; oldest first), from memory and from the store.
//!
//! Every test starts its own gateway. Most run one shard; the ones started
//! with `Options::shards(2)` also cross shards (connections, conversations
//! and the tenant's router may then live on different shards).

mod common;

use std::time::Duration;

use common::{Client, Gateway, Options};
use serde_json::{json, Value};

/// A visitor whose conversation holds `messages` chat messages plus the
/// `queued` entry (seqs 1..=messages+1, no agent). Returns the visitor,
/// the conversation and every entry's frame, by seq (index 0 = seq 1).
fn long_conversation(gw: &Gateway, messages: usize) -> (Client, String, Vec<Value>) {
    let (mut visitor, _) = gw.login(&gw.visitor_token("ann", &["--name", "Ann"]));
    let conv = visitor.say("m-0", None, "message 0")["conv"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 1..messages {
        visitor
            .send(json!({"type": "msg", "id": format!("m-{i}"), "text": format!("message {i}")}));
    }
    let last = messages as u64 + 1;
    let (ack, _) = visitor.recv_until(|v| v["type"] == "ack" && v["seq"] == last);
    assert_eq!(ack["id"], format!("m-{}", messages - 1));
    visitor.send(json!({"type": "sync", "conv": conv, "after": 0}));
    let mut entries = Vec::new();
    loop {
        let v = visitor.recv();
        match v["type"].as_str().unwrap() {
            "queue" => continue,
            "synced" => {
                assert_eq!(v, json!({"type": "synced", "conv": conv, "last_seq": last}));
                break;
            }
            "msg" => entries.push(v),
            _ => panic!("unexpected {v}"),
        }
    }
    let seqs: Vec<u64> = entries.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=last).collect::<Vec<_>>(),
        "sync sends every entry in order"
    );
    (visitor, conv, entries)
}

fn history(c: &mut Client, request: Value) -> Value {
    c.send(request);
    loop {
        let v = c.recv();
        if v["type"] != "queue" {
            return v;
        }
    }
}

/// The entries with seqs `from..=to` (inclusive) of `log`.
fn page(log: &[Value], from: usize, to: usize) -> Vec<Value> {
    log[from - 1..to].to_vec()
}

#[test]
fn sync_sends_entries_after_the_given_seq_then_synced() {
    let gw = Gateway::start(Options::default());
    let (mut visitor, _) = gw.login(&gw.visitor_token("ann", &[]));
    let conv = visitor.say("m-1", None, "hi")["conv"]
        .as_str()
        .unwrap()
        .to_string();
    let queued = visitor.recv_type("msg");
    let (mut agent, _) = gw.login(&gw.agent_token("alice", &[]));
    let one = agent.recv_type("msg");
    assert_eq!(agent.recv_type("msg"), queued);
    let assigned = agent.recv_type("msg");
    assert_eq!(visitor.recv_skip_queue(), assigned);
    agent.say("a-1", Some(&conv), "hello");
    let four = visitor.recv();
    let log = [one, queued, assigned, four];

    for c in [&mut visitor, &mut agent] {
        for after in [0u64, 1, 3, 4, 99] {
            c.send(json!({"type": "sync", "conv": conv, "after": after}));
            for expected in log.iter().skip(after as usize) {
                assert_eq!(&c.recv(), expected, "sync after {after}");
            }
            assert_eq!(
                c.recv(),
                json!({"type": "synced", "conv": conv, "last_seq": 4}),
                "sync after {after}"
            );
        }
        // `after` defaults to 0.
        c.send(json!({"type": "sync", "conv": conv}));
        for expected in &log {
            assert_eq!(&c.recv(), expected);
        }
        assert_eq!(c.recv()["type"], "synced");
    }
    // A sync is an answer, not a subscription change: live entries still
    // arrive once.
    agent.say("a-2", Some(&conv), "again");
    assert_eq!(visitor.recv()["seq"], 5);
    visitor.expect_nothing(Duration::from_millis(200));
}

#[test]
fn sync_of_a_long_conversation_reads_past_the_memory_tail() {
    let gw = Gateway::start(Options::default().arg("--msg-rate-limit").arg("0"));
    let (mut visitor, conv, log) = long_conversation(&gw, 80);
    visitor.send(json!({"type": "sync", "conv": conv, "after": 5}));
    for expected in &log[5..] {
        assert_eq!(&visitor.recv(), expected);
    }
    assert_eq!(
        visitor.recv(),
        json!({"type": "synced", "conv": conv, "last_seq": 81})
    );
}

#[test]
fn history_pages_before_limit_ref_more_oldest_first() {
    let gw = Gateway::start(Options::default().arg("--msg-rate-limit").arg("0"));
    let (mut visitor, conv, log) = long_conversation(&gw, 119);
    assert_eq!(log.len(), 120);
    let answer = |reference: Option<&str>, messages: Vec<Value>, more: bool| {
        let mut v = json!({"type": "history", "conv": conv, "messages": messages, "more": more});
        if let Some(r) = reference {
            v["ref"] = json!(r);
        }
        v
    };

    // Default limit 50, default before: the newest 50.
    assert_eq!(
        history(
            &mut visitor,
            json!({"type": "history", "conv": conv, "ref": "h1"})
        ),
        answer(Some("h1"), page(&log, 71, 120), true)
    );
    // The limit is capped at 100.
    assert_eq!(
        history(
            &mut visitor,
            json!({"type": "history", "conv": conv, "limit": 500, "ref": "h2"})
        ),
        answer(Some("h2"), page(&log, 21, 120), true)
    );
    assert_eq!(
        history(
            &mut visitor,
            json!({"type": "history", "conv": conv, "before": 121, "limit": 100})
        ),
        answer(None, page(&log, 21, 120), true)
    );
    // Small pages, from memory (recent) and from the store (old).
    assert_eq!(
        history(
            &mut visitor,
            json!({"type": "history", "conv": conv, "before": 121, "limit": 5, "ref": "h3"})
        ),
        answer(Some("h3"), page(&log, 116, 120), true)
    );
    assert_eq!(
        history(
            &mut visitor,
            json!({"type": "history", "conv": conv, "before": 10, "limit": 3, "ref": "h4"})
        ),
        answer(Some("h4"), page(&log, 7, 9), true)
    );
    // Reaching the start: more is false.
    assert_eq!(
        history(
            &mut visitor,
            json!({"type": "history", "conv": conv, "before": 3, "limit": 5})
        ),
        answer(None, page(&log, 1, 2), false)
    );
    assert_eq!(
        history(
            &mut visitor,
            json!({"type": "history", "conv": conv, "before": 6, "limit": 5})
        ),
        answer(None, page(&log, 1, 5), false)
    );
    assert_eq!(
        history(
            &mut visitor,
            json!({"type": "history", "conv": conv, "before": 1, "ref": "h5"})
        ),
        answer(Some("h5"), vec![], false)
    );
    // `before` past the end: the newest entries.
    assert_eq!(
        history(
            &mut visitor,
            json!({"type": "history", "conv": conv, "before": 1000, "limit": 2})
        ),
        answer(None, page(&log, 119, 120), true)
    );
    // Walking back page by page covers the log exactly once, oldest first.
    let mut before = 121u64;
    let mut pages = Vec::new();
    loop {
        let v = history(
            &mut visitor,
            json!({"type": "history", "conv": conv, "before": before, "limit": 37}),
        );
        let messages = v["messages"].as_array().unwrap().clone();
        before = messages[0]["seq"].as_u64().unwrap();
        pages.push(messages);
        if v["more"] == false {
            break;
        }
    }
    let walked: Vec<Value> = pages.into_iter().rev().flatten().collect();
    assert_eq!(walked, log);
}

#[test]
fn history_of_a_short_conversation_and_for_the_agent() {
    let gw = Gateway::start(Options::default());
    let (mut visitor, _) = gw.login(&gw.visitor_token("ann", &[]));
    let conv = visitor.say("m-1", None, "hi")["conv"]
        .as_str()
        .unwrap()
        .to_string();
    let (mut agent, _) = gw.login(&gw.agent_token("alice", &[]));
    let mut log = Vec::new();
    for _ in 0..3 {
        log.push(agent.recv_type("msg"));
    }
    let (assigned, _) = visitor.recv_until(|v| v["event"] == "assigned");
    assert_eq!(assigned, log[2]);
    for c in [&mut visitor, &mut agent] {
        assert_eq!(
            history(c, json!({"type": "history", "conv": conv, "ref": "x"})),
            json!({"type": "history", "conv": conv, "ref": "x", "messages": log, "more": false})
        );
    }
    // After the conversation closes, its participants can still page it.
    agent.send(json!({"type": "close", "conv": conv}));
    let closed = agent.recv();
    assert_eq!(closed["event"], "closed");
    log.push(closed);
    for c in [&mut visitor, &mut agent] {
        let v = loop {
            let v = history(c, json!({"type": "history", "conv": conv, "ref": "y"}));
            if v["type"] == "history" {
                break v;
            }
            assert_eq!(v["event"], "closed", "only the closed entry may come first");
        };
        assert_eq!(
            v,
            json!({"type": "history", "conv": conv, "ref": "y", "messages": log, "more": false})
        );
    }
}

#[test]
fn recv_cursor_is_cumulative_and_never_moves_back() {
    let gw = Gateway::start(Options::shards(2));
    let token = gw.visitor_token("ann", &[]);
    let (mut visitor, _) = gw.login(&token);
    let conv = visitor.say("m-1", None, "hi")["conv"]
        .as_str()
        .unwrap()
        .to_string();
    let (mut agent, _) = gw.login(&gw.agent_token("alice", &[]));
    agent.recv_until(|v| v["event"] == "assigned");
    for i in 0..4 {
        agent.say(&format!("a-{i}"), Some(&conv), "x");
    }
    let (seventh, _) = visitor.recv_until(|v| v["seq"] == 7);
    // 5, then 2 (ignored: the cursor only moves forward), then a seq past
    // the end (clamped to what exists).
    for seq in [5u64, 2] {
        visitor.send(json!({"type": "recv", "conv": conv, "seq": seq}));
    }
    visitor.send(json!({"type": "sync", "conv": conv, "after": 7}));
    assert_eq!(visitor.recv()["type"], "synced");
    visitor.close();
    let (mut again, welcome) = gw.login(&token);
    assert_eq!(welcome["conversations"][0]["last_seq"], 7);
    let six = again.recv();
    assert_eq!(six["seq"], 6);
    assert_eq!(again.recv(), seventh);
    again.expect_nothing(Duration::from_millis(200));

    // A cursor past the last seq does not swallow later entries.
    again.send(json!({"type": "recv", "conv": conv, "seq": 1000}));
    again.send(json!({"type": "sync", "conv": conv, "after": 7}));
    assert_eq!(again.recv()["type"], "synced");
    agent.say("a-9", Some(&conv), "new");
    assert_eq!(again.recv()["seq"], 8);
    again.close();
    let (mut third, _) = gw.login(&token);
    assert_eq!(
        third.recv()["seq"],
        8,
        "seq 8 came after the cursor was clamped to 7: it is replayed"
    );
    third.expect_nothing(Duration::from_millis(200));
}

#[test]
fn long_logs_are_replayed_whole_on_welcome_and_to_a_newly_assigned_agent() {
    // More entries than the in-memory tail holds: the replays read the store.
    let gw = Gateway::start(Options::shards(2).arg("--msg-rate-limit").arg("0"));
    let (visitor, conv, log) = long_conversation(&gw, 60);
    visitor.close();
    let token = gw.visitor_token("ann", &["--name", "Ann"]);
    let (mut again, welcome) = gw.login(&token);
    assert_eq!(
        welcome["conversations"],
        json!([{"conv": conv, "state": "queued", "last_seq": 61}])
    );
    let replay: Vec<Value> = (0..61).map(|_| again.recv_skip_queue()).collect();
    assert_eq!(replay, log, "nothing was received: everything is replayed");

    let (mut agent, _) = gw.login(&gw.agent_token("alice", &[]));
    let got: Vec<Value> = (0..62).map(|_| agent.recv()).collect();
    assert_eq!(got[..61], log[..], "the whole log, in order");
    assert_eq!(got[61]["event"], "assigned");
    assert_eq!(again.recv_skip_queue(), got[61]);
    agent.expect_nothing(Duration::from_millis(200));
}
