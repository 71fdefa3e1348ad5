//! Routing state across a gateway restart (`kill -9`): what routing knew is
//! recovered from the store, and the rules still hold.

mod common;
#[path = "routing_support/mod.rs"]
mod support;

use common::{Gateway, Options};
use serde_json::json;
use support::*;

fn visitor_from(id: &str) -> serde_json::Value {
    json!({"role": "visitor", "id": id})
}

#[test]
fn a_conversation_handed_back_is_still_not_offered_to_its_agent_after_a_restart() {
    let mut gw = Gateway::start(Options::default());
    let alice_token = gw.agent_token("alice", &[]);
    let visitor_token = gw.visitor_token("v1", &[]);
    let (mut alice, _) = gw.login(&alice_token);
    let (mut v1, _) = gw.login(&visitor_token);
    let c1 = open(&mut v1, "m-1", "a hard one");
    expect_assigned_at_once(&mut v1, &c1, agent("alice"));
    expect_new_assignment(&mut alice, &c1, "v1", ("m-1", "a hard one"), agent("alice"));
    alice.send(json!({"type": "transfer", "conv": c1}));
    assert_eq!(next_entry(&mut alice), queued(&c1, 4));
    expect_requeued(&mut v1, &c1, 4, 1);

    // The `queued` entry is durable: so is the conversation's state.
    gw.kill9();
    gw.restart(gw.options.clone());

    // alice is back first, online with room: c1 still may not go to her.
    let (mut alice, welcome) = gw.login(&alice_token);
    assert_eq!(welcome["conversations"], json!([]), "{welcome}");
    expect_quiet(&mut alice, "the agent who handed the conversation back");
    let (mut v1, welcome) = gw.login(&visitor_token);
    assert_eq!(
        welcome["conversations"],
        json!([{"conv": c1, "state": "queued", "last_seq": 4}])
    );
    expect_log(&mut v1, &c1, 4);

    // Another agent takes it.
    let mut bob = agent_login(&gw, "bob", &[]);
    assert_eq!(
        expect_log(&mut bob, &c1, 5)[4],
        assigned(&c1, 5, agent("bob"))
    );
    assert_eq!(next_entry(&mut v1), assigned(&c1, 5, agent("bob")));
    expect_quiet(&mut alice, "the agent who handed the conversation back");
}

#[test]
fn after_a_restart_an_agent_who_does_not_come_back_loses_its_conversations_after_grace() {
    let options = Options::default().arg("--agent-grace").arg("300ms");
    let mut gw = Gateway::start(options.clone());
    let mut alice = agent_login(&gw, "alice", &["--name", "Alice"]);
    let alice_ref = json!({"id": "alice", "name": "Alice"});
    let visitor_token = gw.visitor_token("v1", &[]);
    let (mut v1, _) = gw.login(&visitor_token);
    let c1 = open(&mut v1, "m-1", "hello");
    expect_assigned_at_once(&mut v1, &c1, alice_ref.clone());
    expect_new_assignment(&mut alice, &c1, "v1", ("m-1", "hello"), alice_ref.clone());
    alice.say("a-1", Some(&c1), "hi");

    gw.kill9();
    gw.restart(options);

    // Only bob comes back. alice's grace starts with the new process; when
    // it ends, c1 is requeued and bob gets it, with its whole log (read
    // back from the store: nothing of it is in memory after a restart).
    let (mut v1, welcome) = gw.login(&visitor_token);
    assert_eq!(
        welcome["conversations"],
        json!([{"conv": c1, "state": "assigned", "last_seq": 4, "agent": alice_ref}])
    );
    expect_log(&mut v1, &c1, 4);
    let mut bob = agent_login(&gw, "bob", &[]);
    // (A position may come in between if the grace ends before bob is in.)
    assert_eq!(next_entry(&mut v1), queued(&c1, 5));
    assert_eq!(next_entry(&mut v1), assigned(&c1, 6, agent("bob")));
    assert_eq!(
        expect_log(&mut bob, &c1, 6),
        [
            chat(&c1, 1, "m-1", visitor_from("v1"), "hello"),
            queued(&c1, 2),
            assigned(&c1, 3, alice_ref.clone()),
            chat(
                &c1,
                4,
                "a-1",
                json!({"role": "agent", "id": "alice", "name": "Alice"}),
                "hi"
            ),
            queued(&c1, 5),
            assigned(&c1, 6, agent("bob")),
        ]
    );
}

#[test]
fn after_a_restart_an_agent_back_in_time_finds_its_conversations() {
    let mut gw = Gateway::start(Options::default());
    let alice_token = gw.agent_token("alice", &[]);
    let (mut alice, _) = gw.login(&alice_token);
    let (mut v1, v1_id) = {
        let (c, w) = gw.anonymous("demo");
        (c, w["id"].as_str().unwrap().to_string())
    };
    let c1 = open(&mut v1, "m-1", "hello");
    expect_assigned_at_once(&mut v1, &c1, agent("alice"));
    expect_new_assignment(&mut alice, &c1, &v1_id, ("m-1", "hello"), agent("alice"));
    alice.send(json!({"type": "recv", "conv": c1, "seq": 2}));
    alice.say("a-1", Some(&c1), "hi");

    gw.kill9();
    gw.restart(gw.options.clone());

    // Within the (default, 30 s) grace: still hers; the welcome lists it
    // and the replay covers everything past her receipt, from the store.
    // Cursors are written at most once a second, so a kill -9 may lose the
    // newest one: entries at or before it may come again (at least once;
    // the client drops them by seq), but never fewer, never out of order.
    let (mut alice, welcome) = gw.login(&alice_token);
    assert_eq!(
        welcome,
        json!({"type": "welcome", "role": "agent", "id": "alice", "tenant": "demo",
               "conversations": [{"conv": c1, "state": "assigned", "last_seq": 4,
                                  "agent": {"id": "alice"}}]})
    );
    let mut replayed = Vec::new();
    while replayed
        .last()
        .map(|e: &serde_json::Value| e["seq"].as_u64())
        != Some(Some(4))
    {
        replayed.push(next_entry(&mut alice));
    }
    let seqs: Vec<u64> = replayed
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    let first = seqs[0];
    assert!(
        first <= 3,
        "the replay starts at or before the receipt cursor's successor: {seqs:?}"
    );
    assert_eq!(
        seqs,
        (first..=4).collect::<Vec<_>>(),
        "contiguous and in order"
    );
    assert_eq!(
        replayed[replayed.len() - 2..],
        [
            assigned(&c1, 3, agent("alice")),
            chat(&c1, 4, "a-1", json!({"role": "agent", "id": "alice"}), "hi"),
        ]
    );
    expect_quiet(&mut alice, "alice");
}

/// The next `n` entries.
#[test]
fn the_sticky_agent_survives_a_restart() {
    let mut gw = Gateway::start(Options::default());
    let zed_token = gw.agent_token("zed", &[]);
    let (mut zed, _) = gw.login(&zed_token);
    let visitor_token = gw.visitor_token("v1", &[]);
    let (mut v1, _) = gw.login(&visitor_token);
    let c1 = open(&mut v1, "m-1", "first visit");
    expect_assigned_at_once(&mut v1, &c1, agent("zed"));
    expect_new_assignment(&mut zed, &c1, "v1", ("m-1", "first visit"), agent("zed"));
    close(&mut v1, &c1);
    assert_eq!(next_entry(&mut v1), closed(&c1, 4, "visitor", "v1"));
    assert_eq!(next_entry(&mut zed), closed(&c1, 4, "visitor", "v1"));

    gw.kill9();
    gw.restart(gw.options.clone());

    // amy comes first and would win on id; zed served this visitor.
    let mut amy = agent_login(&gw, "amy", &[]);
    let (mut zed, _) = gw.login(&zed_token);
    let (mut v1, _) = gw.login(&visitor_token);
    let c2 = open(&mut v1, "m-2", "second visit");
    expect_assigned_at_once(&mut v1, &c2, agent("zed"));
    expect_new_assignment(&mut zed, &c2, "v1", ("m-2", "second visit"), agent("zed"));
    expect_quiet(&mut amy, "amy");
}
