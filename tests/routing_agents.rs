//! Agent commands and agent presence end to end (PROTOCOL.md, "Agent
//! commands" and "Routing"): `status`, the grace period after a
//! disconnect, and `transfer` to an agent or back to the queue.

mod common;
#[path = "routing_support/mod.rs"]
mod support;

use common::{Client, Gateway, Options};
use serde_json::json;
use support::*;

/// An anonymous visitor: (client, its id).
fn anon(gw: &Gateway) -> (Client, String) {
    let (c, welcome) = gw.anonymous("demo");
    let id = welcome["id"].as_str().expect("visitor id").to_string();
    (c, id)
}

fn visitor_from(id: &str) -> serde_json::Value {
    json!({"role": "visitor", "id": id})
}

#[test]
fn away_agents_get_nothing_new_keep_their_conversations_and_get_work_when_back() {
    let gw = Gateway::start(Options::default());
    let token = gw.agent_token("alice", &[]);
    let (mut alice, _) = gw.login(&token);
    let (mut v1, v1_id) = anon(&gw);
    let c1 = open(&mut v1, "m-1", "hello");
    expect_assigned_at_once(&mut v1, &c1, agent("alice"));
    expect_new_assignment(&mut alice, &c1, &v1_id, ("m-1", "hello"), agent("alice"));

    // A second device: its welcome lists c1 and replays it.
    let (mut alice2, welcome) = gw.login(&token);
    assert_eq!(
        welcome,
        json!({"type": "welcome", "role": "agent", "id": "alice", "tenant": "demo",
               "conversations": [{"conv": c1, "state": "assigned", "last_seq": 3,
                                  "agent": {"id": "alice"}}]})
    );
    expect_new_assignment(&mut alice2, &c1, &v1_id, ("m-1", "hello"), agent("alice"));

    // Away, from one device: echoed to both.
    set_status(&mut alice, "away");
    assert_eq!(alice2.recv(), json!({"type": "status", "status": "away"}));

    // A new visitor waits.
    let (mut v2, v2_id) = anon(&gw);
    let c2 = open(&mut v2, "m-1", "anyone?");
    expect_queued_at(&mut v2, &c2, 1);
    expect_quiet(&mut alice, "an away agent");
    expect_quiet(&mut alice2, "an away agent's other device");

    // Away keeps the conversations she has: both ways.
    let ack = v1.say("m-2", None, "still there?");
    assert_eq!(ack["seq"], 4);
    let m2 = chat(&c1, 4, "m-2", visitor_from(&v1_id), "still there?");
    assert_eq!(next_entry(&mut alice), m2);
    assert_eq!(next_entry(&mut alice2), m2);
    let ack = alice.say("a-1", Some(&c1), "yes");
    assert_eq!(ack["seq"], 5);
    let a1 = chat(
        &c1,
        5,
        "a-1",
        json!({"role": "agent", "id": "alice"}),
        "yes",
    );
    assert_eq!(next_entry(&mut v1), a1);
    assert_eq!(next_entry(&mut alice2), a1);

    // Away again changes nothing and is still echoed.
    set_status(&mut alice2, "away");
    assert_eq!(alice.recv(), json!({"type": "status", "status": "away"}));
    expect_quiet(&mut v2, "a queued visitor while the only agent is away");

    // Back online: the waiting conversation is hers, on both devices.
    set_status(&mut alice2, "online");
    assert_eq!(alice.recv(), json!({"type": "status", "status": "online"}));
    expect_new_assignment(&mut alice, &c2, &v2_id, ("m-1", "anyone?"), agent("alice"));
    expect_new_assignment(&mut alice2, &c2, &v2_id, ("m-1", "anyone?"), agent("alice"));
    assert_eq!(next_entry(&mut v2), assigned(&c2, 3, agent("alice")));

    // A visitor has no status.
    v1.send(json!({"type": "status", "status": "away"}));
    expect_error(&mut v1, "forbidden", None);
}

#[test]
fn grace_expired_requeues_at_the_front_of_the_queue() {
    let gw = Gateway::start(Options::default().arg("--agent-grace").arg("300ms"));
    let alice_ref = json!({"id": "alice", "name": "Alice"});
    let mut alice = agent_login(&gw, "alice", &["--name", "Alice", "--max-chats", "1"]);
    let (mut v1, v1_id) = anon(&gw);
    let c1 = open(&mut v1, "m-1", "first");
    expect_assigned_at_once(&mut v1, &c1, alice_ref.clone());
    expect_new_assignment(&mut alice, &c1, &v1_id, ("m-1", "first"), alice_ref.clone());
    let (mut v2, v2_id) = anon(&gw);
    let c2 = open(&mut v2, "m-1", "second");
    expect_queued_at(&mut v2, &c2, 1);

    // alice's connection drops (no close frame) and she does not come back.
    drop(alice);
    // After the grace period: `queued`, and c1 is ahead of c2, which waited longer.
    expect_requeued(&mut v1, &c1, 4, 1);
    expect_position(&mut v2, &c2, 2);

    // The next agent gets c1 first, and its whole log.
    let mut bob = agent_login(&gw, "bob", &["--max-chats", "1"]);
    assert_eq!(
        expect_log(&mut bob, &c1, 5),
        [
            chat(&c1, 1, "m-1", visitor_from(&v1_id), "first"),
            queued(&c1, 2),
            assigned(&c1, 3, alice_ref),
            queued(&c1, 4),
            assigned(&c1, 5, agent("bob")),
        ]
    );
    assert_eq!(next_entry(&mut v1), assigned(&c1, 5, agent("bob")));
    expect_position(&mut v2, &c2, 1);
    expect_quiet(&mut bob, "a full agent");

    // c1 carries on with bob.
    let ack = v1.say("m-2", None, "hello again");
    assert_eq!(ack["seq"], 6);
    assert_eq!(
        next_entry(&mut bob),
        chat(&c1, 6, "m-2", visitor_from(&v1_id), "hello again")
    );

    // alice comes back later: she is a new agent with nothing assigned, and
    // she takes the conversation still waiting.
    let mut alice = agent_login(&gw, "alice", &["--name", "Alice", "--max-chats", "1"]);
    expect_new_assignment(
        &mut alice,
        &c2,
        &v2_id,
        ("m-1", "second"),
        json!({"id": "alice", "name": "Alice"}),
    );
    assert_eq!(
        next_entry(&mut v2),
        assigned(&c2, 3, json!({"id": "alice", "name": "Alice"}))
    );
}

#[test]
fn grace_expired_hands_the_conversations_to_an_online_agent() {
    // Two shards: conversations, router and connections spread over both.
    let gw = Gateway::start(Options::shards(2).arg("--agent-grace").arg("300ms"));
    let mut alice = agent_login(&gw, "alice", &[]);
    let mut convs = Vec::new();
    for i in 0..2 {
        let (mut v, vid) = anon(&gw);
        let text = format!("question {i}");
        let c = open(&mut v, "m-1", &text);
        expect_assigned_at_once(&mut v, &c, agent("alice"));
        expect_new_assignment(&mut alice, &c, &vid, ("m-1", &text), agent("alice"));
        convs.push((v, vid, c, text));
    }
    let mut bob = agent_login(&gw, "bob", &[]);

    // alice closes her connection and does not come back: after the grace
    // period each conversation reads `queued`, then `assigned` to bob.
    alice.close();
    for (v, _, c, _) in &mut convs {
        assert_eq!(next_entry(v), queued(c, 4));
        assert_eq!(next_entry(v), assigned(c, 5, agent("bob")));
    }
    let got = entries_by_conv(&mut bob, 10);
    for (_, vid, c, text) in &convs {
        assert_eq!(
            got[c],
            [
                chat(c, 1, "m-1", visitor_from(vid), text),
                queued(c, 2),
                assigned(c, 3, agent("alice")),
                queued(c, 4),
                assigned(c, 5, agent("bob")),
            ]
        );
    }
    expect_quiet(&mut bob, "bob");
}

#[test]
fn an_agent_back_within_grace_keeps_its_conversations_and_resumes_past_its_cursor() {
    // A grace long enough that the reconnection surely lands inside it on a
    // loaded machine; its end is observed through bob (see below), not slept.
    let gw = Gateway::start(Options::default().arg("--agent-grace").arg("2s"));
    let alice_token = gw.agent_token("alice", &["--name", "Alice"]);
    let alice_ref = json!({"id": "alice", "name": "Alice"});
    let (mut alice, _) = gw.login(&alice_token);
    let (mut v1, v1_id) = anon(&gw);
    let c1 = open(&mut v1, "m-1", "first");
    expect_assigned_at_once(&mut v1, &c1, alice_ref.clone());
    expect_new_assignment(&mut alice, &c1, &v1_id, ("m-1", "first"), alice_ref.clone());
    let mut bob = agent_login(&gw, "bob", &[]);
    let (mut v2, v2_id) = anon(&gw);
    let c2 = open(&mut v2, "m-1", "second");
    expect_assigned_at_once(&mut v2, &c2, agent("bob"));
    expect_new_assignment(&mut bob, &c2, &v2_id, ("m-1", "second"), agent("bob"));

    // alice holds everything up to 3, and leaves.
    alice.send(json!({"type": "recv", "conv": c1, "seq": 3}));
    alice.close();
    // While she is gone the visitor writes.
    let ack = v1.say("m-2", None, "are you there?");
    assert_eq!(ack["seq"], 4);

    // She is back within the grace period: the welcome lists c1, still
    // hers, and only what she lacks follows.
    let (mut alice, welcome) = gw.login(&alice_token);
    assert_eq!(
        welcome,
        json!({"type": "welcome", "role": "agent", "id": "alice", "tenant": "demo",
               "conversations": [{"conv": c1, "state": "assigned", "last_seq": 4,
                                  "agent": {"id": "alice", "name": "Alice"}}]})
    );
    assert_eq!(
        next_entry(&mut alice),
        chat(&c1, 4, "m-2", visitor_from(&v1_id), "are you there?")
    );

    // bob leaves after her and does not come back. When his conversation is
    // requeued, alice's grace deadline (earlier than his) has passed too.
    bob.close();
    assert_eq!(next_entry(&mut v2), queued(&c2, 4));
    // alice is online with room: bob's conversation comes to her.
    assert_eq!(next_entry(&mut v2), assigned(&c2, 5, alice_ref.clone()));
    let got = entries_by_conv(&mut alice, 5);
    assert_eq!(got[&c2][4], assigned(&c2, 5, alice_ref.clone()));
    // Nothing happened to c1: still alice's, live both ways.
    expect_quiet(&mut v1, "the visitor of an agent back in time");
    let ack = alice.say("a-1", Some(&c1), "yes, sorry");
    assert_eq!(ack["seq"], 5);
    assert_eq!(
        next_entry(&mut v1),
        chat(
            &c1,
            5,
            "a-1",
            json!({"role": "agent", "id": "alice", "name": "Alice"}),
            "yes, sorry"
        )
    );
}

#[test]
fn transfer_to_a_connected_agent_moves_the_whole_conversation() {
    // Two shards: conversations, router and connections spread over both.
    let gw = Gateway::start(Options::shards(2));
    let mut alice = agent_login(&gw, "alice", &[]);
    let (mut v1, v1_id) = anon(&gw);
    let c1 = open(&mut v1, "m-1", "I need bob");
    expect_assigned_at_once(&mut v1, &c1, agent("alice"));
    expect_new_assignment(
        &mut alice,
        &c1,
        &v1_id,
        ("m-1", "I need bob"),
        agent("alice"),
    );
    alice.say("a-1", Some(&c1), "one moment");
    assert_eq!(next_entry(&mut v1)["seq"], 4);
    let mut bob = agent_login(&gw, "bob", &["--name", "Bob"]);

    alice.send(json!({"type": "transfer", "conv": c1, "to": "bob"}));
    let moved = assigned(&c1, 5, json!({"id": "bob", "name": "Bob"}));
    assert_eq!(next_entry(&mut v1), moved);
    assert_eq!(next_entry(&mut alice), moved);
    assert_eq!(
        expect_log(&mut bob, &c1, 5),
        [
            chat(&c1, 1, "m-1", visitor_from(&v1_id), "I need bob"),
            queued(&c1, 2),
            assigned(&c1, 3, agent("alice")),
            chat(
                &c1,
                4,
                "a-1",
                json!({"role": "agent", "id": "alice"}),
                "one moment"
            ),
            moved,
        ]
    );

    // From now on bob serves it and alice sees nothing more.
    let ack = v1.say("m-2", None, "hi bob");
    assert_eq!(ack["seq"], 6);
    assert_eq!(
        next_entry(&mut bob),
        chat(&c1, 6, "m-2", visitor_from(&v1_id), "hi bob")
    );
    let ack = bob.say("b-1", Some(&c1), "hi");
    assert_eq!(ack["seq"], 7);
    assert_eq!(
        next_entry(&mut v1),
        chat(
            &c1,
            7,
            "b-1",
            json!({"role": "agent", "id": "bob", "name": "Bob"}),
            "hi"
        )
    );
    expect_quiet(&mut alice, "the agent who handed the conversation over");
    alice.send(json!({"type": "msg", "id": "a-2", "conv": c1, "text": "me again"}));
    expect_error(&mut alice, "forbidden", Some("a-2"));
    alice.send(json!({"type": "transfer", "conv": c1, "to": "alice"}));
    expect_error(&mut alice, "forbidden", None);

    // The transfer freed alice's capacity: the next visitor is hers.
    let (mut v2, v2_id) = anon(&gw);
    let c2 = open(&mut v2, "m-1", "hello");
    expect_assigned_at_once(&mut v2, &c2, agent("alice"));
    expect_new_assignment(&mut alice, &c2, &v2_id, ("m-1", "hello"), agent("alice"));
}

#[test]
fn transfer_of_a_long_conversation_gives_the_new_agent_its_whole_log() {
    // Longer than what the gateway keeps in memory per conversation: the
    // new agent's copy comes partly from the store.
    const MESSAGES: u64 = 60;
    let gw = Gateway::start(Options::default());
    let mut alice = agent_login(&gw, "alice", &[]);
    let (mut v1, v1_id) = anon(&gw);
    let c1 = open(&mut v1, "m-0", "hello");
    expect_assigned_at_once(&mut v1, &c1, agent("alice"));
    expect_new_assignment(&mut alice, &c1, &v1_id, ("m-0", "hello"), agent("alice"));
    let mut log = vec![
        chat(&c1, 1, "m-0", visitor_from(&v1_id), "hello"),
        queued(&c1, 2),
        assigned(&c1, 3, agent("alice")),
    ];
    for i in 1..=MESSAGES {
        let (sender, other, id, from) = if i % 2 == 0 {
            (&mut v1, &mut alice, format!("m-{i}"), visitor_from(&v1_id))
        } else {
            (
                &mut alice,
                &mut v1,
                format!("a-{i}"),
                json!({"role": "agent", "id": "alice"}),
            )
        };
        let text = format!("message {i}");
        let conv = (i % 2 == 1).then_some(c1.as_str());
        let seq = sender.say(&id, conv, &text)["seq"].as_u64().unwrap();
        assert_eq!(seq, 3 + i);
        let entry = chat(&c1, seq, &id, from, &text);
        assert_eq!(next_entry(other), entry);
        log.push(entry);
    }
    let bob_token = gw.agent_token("bob", &[]);
    let (mut bob, _) = gw.login(&bob_token);

    alice.send(json!({"type": "transfer", "conv": c1, "to": "bob"}));
    let moved = assigned(&c1, 4 + MESSAGES, agent("bob"));
    assert_eq!(next_entry(&mut v1), moved);
    assert_eq!(next_entry(&mut alice), moved);
    log.push(moved);
    assert_eq!(expect_log(&mut bob, &c1, 4 + MESSAGES), log);

    // And bob is live on it.
    let ack = v1.say("m-last", None, "thanks");
    assert_eq!(ack["seq"], 5 + MESSAGES);
    let last = chat(&c1, 5 + MESSAGES, "m-last", visitor_from(&v1_id), "thanks");
    assert_eq!(next_entry(&mut bob), last);
    log.push(last);

    // A second device of bob's, with no receipt sent: its welcome is
    // followed by the whole log again.
    let (mut bob2, welcome) = gw.login(&bob_token);
    assert_eq!(
        welcome["conversations"],
        json!([{"conv": c1, "state": "assigned", "last_seq": 5 + MESSAGES, "agent": {"id": "bob"}}])
    );
    assert_eq!(expect_log(&mut bob2, &c1, 5 + MESSAGES), log);
}

#[test]
fn transfer_refusals_leave_the_conversation_where_it_is() {
    let gw = Gateway::start(Options::default());
    let mut alice = agent_login(&gw, "alice", &[]);
    let (mut v1, v1_id) = anon(&gw);
    let c1 = open(&mut v1, "m-1", "hello");
    expect_assigned_at_once(&mut v1, &c1, agent("alice"));
    expect_new_assignment(&mut alice, &c1, &v1_id, ("m-1", "hello"), agent("alice"));
    let mut bob = agent_login(&gw, "bob", &[]);

    // To an agent who is not connected.
    alice.send(json!({"type": "transfer", "conv": c1, "to": "carol"}));
    expect_error(&mut alice, "not_found", None);
    // By an agent it is not assigned to.
    bob.send(json!({"type": "transfer", "conv": c1, "to": "bob"}));
    expect_error(&mut bob, "forbidden", None);
    bob.send(json!({"type": "transfer", "conv": c1}));
    expect_error(&mut bob, "forbidden", None);
    // By its visitor.
    v1.send(json!({"type": "transfer", "conv": c1, "to": "bob"}));
    expect_error(&mut v1, "forbidden", None);
    // A conversation that does not exist.
    alice.send(json!({"type": "transfer", "conv": "c-nope", "to": "bob"}));
    expect_error(&mut alice, "not_found", None);

    // Nothing moved: no entry anywhere, and alice still serves c1.
    expect_quiet(&mut v1, "the visitor");
    expect_quiet(&mut bob, "bob");
    let ack = alice.say("a-1", Some(&c1), "still me");
    assert_eq!(ack["seq"], 4);
    assert_eq!(
        next_entry(&mut v1),
        chat(
            &c1,
            4,
            "a-1",
            json!({"role": "agent", "id": "alice"}),
            "still me"
        )
    );

    // A closed conversation cannot be transferred.
    close(&mut v1, &c1);
    assert_eq!(next_entry(&mut alice), closed(&c1, 5, "visitor", &v1_id));
    alice.send(json!({"type": "transfer", "conv": c1, "to": "bob"}));
    expect_error(&mut alice, "closed", None);
}

#[test]
fn transfer_back_to_the_queue_goes_to_another_agent_never_back_to_the_sender() {
    let gw = Gateway::start(Options::default());
    let mut alice = agent_login(&gw, "alice", &[]);
    let (mut v1, v1_id) = anon(&gw);
    let c1 = open(&mut v1, "m-1", "a hard one");
    expect_assigned_at_once(&mut v1, &c1, agent("alice"));
    expect_new_assignment(
        &mut alice,
        &c1,
        &v1_id,
        ("m-1", "a hard one"),
        agent("alice"),
    );

    alice.send(json!({"type": "transfer", "conv": c1}));
    assert_eq!(next_entry(&mut alice), queued(&c1, 4));
    // The visitor sees the entry and its place.
    expect_requeued(&mut v1, &c1, 4, 1);
    // alice has room and is online, but is not offered it back.
    expect_quiet(&mut alice, "the agent who handed the conversation back");
    alice.send(json!({"type": "msg", "id": "a-1", "conv": c1, "text": "wait"}));
    expect_error(&mut alice, "forbidden", Some("a-1"));

    // She still gets other work meanwhile; c1 keeps waiting.
    let (mut v2, v2_id) = anon(&gw);
    let c2 = open(&mut v2, "m-1", "an easy one");
    expect_assigned_at_once(&mut v2, &c2, agent("alice"));
    expect_new_assignment(
        &mut alice,
        &c2,
        &v2_id,
        ("m-1", "an easy one"),
        agent("alice"),
    );
    expect_quiet(&mut v1, "the visitor waiting");

    // Another agent comes: c1 is his, with the whole log.
    let mut bob = agent_login(&gw, "bob", &[]);
    assert_eq!(
        expect_log(&mut bob, &c1, 5),
        [
            chat(&c1, 1, "m-1", visitor_from(&v1_id), "a hard one"),
            queued(&c1, 2),
            assigned(&c1, 3, agent("alice")),
            queued(&c1, 4),
            assigned(&c1, 5, agent("bob")),
        ]
    );
    assert_eq!(next_entry(&mut v1), assigned(&c1, 5, agent("bob")));
    expect_quiet(&mut alice, "the agent who handed the conversation back");
}

#[test]
fn a_goodbye_sent_right_before_close_lands_in_the_conversation() {
    let gw = Gateway::start(Options::default());
    let mut alice = agent_login(&gw, "alice", &[]);
    let alice_from = json!({"role": "agent", "id": "alice"});

    // The agent says goodbye and closes, without waiting for the ack.
    let (mut v1, v1_id) = anon(&gw);
    let c1 = open(&mut v1, "m-1", "hello");
    expect_assigned_at_once(&mut v1, &c1, agent("alice"));
    expect_new_assignment(&mut alice, &c1, &v1_id, ("m-1", "hello"), agent("alice"));
    alice.send(json!({"type": "msg", "id": "a-1", "conv": c1, "text": "bye"}));
    close(&mut alice, &c1);
    assert_eq!(
        alice.recv(),
        json!({"type": "ack", "id": "a-1", "conv": c1, "seq": 4})
    );
    assert_eq!(next_entry(&mut alice), closed(&c1, 5, "agent", "alice"));
    assert_eq!(next_entry(&mut v1), chat(&c1, 4, "a-1", alice_from, "bye"));
    assert_eq!(next_entry(&mut v1), closed(&c1, 5, "agent", "alice"));

    // The visitor does the same (its message without `conv`): the message
    // goes to the conversation it closes, it opens no new one.
    let (mut v2, v2_id) = anon(&gw);
    let c2 = open(&mut v2, "m-1", "hello");
    expect_assigned_at_once(&mut v2, &c2, agent("alice"));
    expect_new_assignment(&mut alice, &c2, &v2_id, ("m-1", "hello"), agent("alice"));
    v2.send(json!({"type": "msg", "id": "m-2", "text": "thanks, bye"}));
    close(&mut v2, &c2);
    assert_eq!(
        v2.recv(),
        json!({"type": "ack", "id": "m-2", "conv": c2, "seq": 4})
    );
    assert_eq!(next_entry(&mut v2), closed(&c2, 5, "visitor", &v2_id));
    assert_eq!(
        next_entry(&mut alice),
        chat(&c2, 4, "m-2", visitor_from(&v2_id), "thanks, bye")
    );
    assert_eq!(next_entry(&mut alice), closed(&c2, 5, "visitor", &v2_id));
    expect_quiet(&mut alice, "alice");
    expect_quiet(&mut v2, "the visitor");
}

#[test]
fn an_agent_connecting_is_online_and_its_other_devices_hear_it() {
    let gw = Gateway::start(Options::default());
    let token = gw.agent_token("alice", &[]);
    let (mut alice, _) = gw.login(&token);
    set_status(&mut alice, "away");
    let (mut v1, v1_id) = anon(&gw);
    let c1 = open(&mut v1, "m-1", "hello");
    expect_queued_at(&mut v1, &c1, 1);

    // A new device: the agent is online again, which the first device is
    // told, and the waiting conversation comes to both.
    let (mut alice2, welcome) = gw.login(&token);
    assert_eq!(welcome["conversations"], json!([]));
    assert_eq!(alice.recv(), json!({"type": "status", "status": "online"}));
    expect_new_assignment(&mut alice, &c1, &v1_id, ("m-1", "hello"), agent("alice"));
    expect_new_assignment(&mut alice2, &c1, &v1_id, ("m-1", "hello"), agent("alice"));
    assert_eq!(next_entry(&mut v1), assigned(&c1, 3, agent("alice")));
}
