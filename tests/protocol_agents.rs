//! PROTOCOL.md, "Ephemeral signals" and "Agent commands": `typing`,
//! `read`, `queue` positions, `status`, `transfer`, and what an agent's
//! welcome lists. Simple cases only; routing order is tested elsewhere.
//!
//! Every test starts its own gateway. Most run one shard; the ones started
//! with `Options::shards(2)` also cross shards (connections, conversations
//! and the tenant's router may then live on different shards).

mod common;

use std::time::Duration;

use common::wire::{assert_error, no_ts};
use common::{Client, Gateway, Options};
use serde_json::{json, Value};

const SHORT: Duration = Duration::from_millis(300);

fn conv_of(ack: &Value) -> String {
    ack["conv"].as_str().expect("conv").to_string()
}

fn error_after(c: &mut Client, frame: Value) -> Value {
    c.send(frame);
    c.recv_until(|v| v["type"] == "error").0
}

#[test]
fn typing_and_read_go_to_the_other_side_with_by_and_are_not_echoed() {
    let gw = Gateway::start(Options::default());
    let (mut agent, _) = gw.login(&gw.agent_token("alice", &["--name", "Alice"]));
    let (mut visitor, _) = gw.login(&gw.visitor_token("ann", &["--name", "Ann"]));
    let conv = conv_of(&visitor.say("m-1", None, "hi"));
    visitor.recv_until(|v| v["event"] == "assigned");
    agent.recv_until(|v| v["event"] == "assigned");

    visitor.send(json!({"type": "typing", "conv": conv, "on": true}));
    assert_eq!(
        agent.recv(),
        json!({"type": "typing", "conv": conv, "on": true,
               "by": {"role": "visitor", "id": "ann"}})
    );
    agent.send(json!({"type": "typing", "conv": conv, "on": false}));
    assert_eq!(
        visitor.recv(),
        json!({"type": "typing", "conv": conv, "on": false,
               "by": {"role": "agent", "id": "alice"}})
    );
    agent.send(json!({"type": "read", "conv": conv, "seq": 1}));
    assert_eq!(
        visitor.recv(),
        json!({"type": "read", "conv": conv, "seq": 1, "by": {"role": "agent", "id": "alice"}})
    );
    visitor.send(json!({"type": "read", "conv": conv, "seq": 3}));
    assert_eq!(
        agent.recv(),
        json!({"type": "read", "conv": conv, "seq": 3, "by": {"role": "visitor", "id": "ann"}})
    );
    // Not echoed to the sender.
    visitor.expect_nothing(SHORT);
    agent.expect_nothing(Duration::from_millis(50));

    // Not in the log: the next entry is seq 4, and sync ends at 3 before it.
    visitor.send(json!({"type": "sync", "conv": conv, "after": 3}));
    assert_eq!(
        visitor.recv(),
        json!({"type": "synced", "conv": conv, "last_seq": 3})
    );
    assert_eq!(agent.say("a-1", Some(&conv), "typed")["seq"], 4);

    // Every connection of the other side gets them.
    let (mut agent2, _) = gw.login(&gw.agent_token("alice", &["--name", "Alice"]));
    agent2.recv_until(|v| v["seq"] == 4);
    visitor.recv_until(|v| v["seq"] == 4);
    visitor.send(json!({"type": "typing", "conv": conv, "on": true}));
    let typing = json!({"type": "typing", "conv": conv, "on": true,
                        "by": {"role": "visitor", "id": "ann"}});
    assert_eq!(agent.recv(), typing);
    assert_eq!(agent2.recv(), typing);
}

#[test]
fn queued_visitors_get_their_position() {
    let gw = Gateway::start(Options::default());
    let (mut first, _) = gw.login(&gw.visitor_token("ann", &[]));
    let conv1 = conv_of(&first.say("m-1", None, "hi"));
    assert_eq!(first.recv()["event"], "queued");
    assert_eq!(
        first.recv(),
        json!({"type": "queue", "conv": conv1, "position": 1})
    );
    let (mut second, _) = gw.login(&gw.visitor_token("bea", &[]));
    let conv2 = conv_of(&second.say("m-1", None, "hi"));
    assert_eq!(second.recv()["event"], "queued");
    assert_eq!(
        second.recv(),
        json!({"type": "queue", "conv": conv2, "position": 2})
    );
    first.expect_nothing(SHORT);

    // The first leaves the queue: the second moves up.
    first.send(json!({"type": "close"}));
    assert_eq!(first.recv()["event"], "closed");
    assert_eq!(
        second.recv(),
        json!({"type": "queue", "conv": conv2, "position": 1})
    );

    // An agent comes: the second is served, and gets no more positions.
    let (mut agent, _) = gw.login(&gw.agent_token("alice", &[]));
    let assigned = second.recv();
    assert_eq!(
        no_ts(&assigned),
        json!({"type": "msg", "conv": conv2, "seq": 3, "from": {"role": "system"},
               "event": "assigned", "agent": {"id": "alice"}})
    );
    let (got, _) = agent.recv_until(|v| v["event"] == "assigned");
    assert_eq!(got, assigned);
    second.expect_nothing(SHORT);
}

#[test]
fn a_queued_visitor_that_reconnects_gets_its_position() {
    // PROTOCOL.md: `queue` is "sent to a queued visitor when it enters the
    // queue and whenever its position changes; the last one sent is
    // current". A new connection of a queued visitor must be sent one too,
    // or it cannot show where it stands until the position next changes.
    let gw = Gateway::start(Options::default());
    let token = gw.visitor_token("ann", &[]);
    let (mut first, _) = gw.login(&token);
    let conv = conv_of(&first.say("m-1", None, "hi"));
    assert_eq!(first.recv()["event"], "queued");
    assert_eq!(first.recv()["type"], "queue");
    first.close();
    let (mut again, welcome) = gw.login(&token);
    assert_eq!(welcome["conversations"][0]["state"], "queued");
    // The replay (seq 1, 2) and the position, which is not part of the log
    // and may come before, between or after.
    let (queue, frames): (Vec<Value>, Vec<Value>) = (0..3)
        .map(|_| again.recv())
        .partition(|v| v["type"] == "queue");
    assert_eq!(
        queue,
        vec![json!({"type": "queue", "conv": conv, "position": 1})]
    );
    assert_eq!(
        frames.iter().map(|v| v["seq"].clone()).collect::<Vec<_>>(),
        vec![json!(1), json!(2)]
    );
    again.expect_nothing(SHORT);
}

#[test]
fn status_is_echoed_and_away_agents_get_no_new_conversation() {
    let gw = Gateway::start(Options::shards(2));
    let token = gw.agent_token("alice", &[]);
    let (mut desk, _) = gw.login(&token);
    let (mut phone, _) = gw.login(&token);

    // One conversation before going away: it stays with the agent.
    let (mut ann, _) = gw.login(&gw.visitor_token("ann", &[]));
    let conv1 = conv_of(&ann.say("m-1", None, "hi"));
    desk.recv_until(|v| v["event"] == "assigned");
    phone.recv_until(|v| v["event"] == "assigned");
    ann.recv_until(|v| v["event"] == "assigned");

    desk.send(json!({"type": "status", "status": "away"}));
    let away = json!({"type": "status", "status": "away"});
    assert_eq!(desk.recv(), away);
    assert_eq!(phone.recv(), away, "every connection of the agent");

    let (mut bea, _) = gw.login(&gw.visitor_token("bea", &[]));
    let conv2 = conv_of(&bea.say("m-1", None, "hello?"));
    assert_eq!(bea.recv()["event"], "queued");
    assert_eq!(
        bea.recv(),
        json!({"type": "queue", "conv": conv2, "position": 1})
    );
    desk.expect_nothing(SHORT);
    phone.expect_nothing(Duration::from_millis(50));

    // Away keeps the existing conversation going.
    let ack = ann.say("m-2", None, "still here");
    assert_eq!(ack["conv"], conv1.as_str());
    assert_eq!(desk.recv()["seq"], 4);
    assert_eq!(phone.recv()["seq"], 4);
    assert_eq!(desk.say("a-1", Some(&conv1), "me too")["seq"], 5);
    assert_eq!(phone.recv()["seq"], 5);

    // Back online: echoed, and the queued conversation is assigned.
    phone.send(json!({"type": "status", "status": "online"}));
    let online = json!({"type": "status", "status": "online"});
    assert_eq!(phone.recv(), online);
    assert_eq!(desk.recv(), online);
    let (assigned, log) = phone.recv_until(|v| v["event"] == "assigned");
    assert_eq!(
        (assigned["conv"].clone(), assigned["seq"].clone(), log.len()),
        (json!(conv2), json!(3), 2)
    );
    desk.recv_until(|v| v["event"] == "assigned" && v["conv"] == conv2.as_str());
    assert_eq!(bea.recv_skip_queue(), assigned);

    // Status twice in a row is still echoed.
    desk.send(json!({"type": "status", "status": "online"}));
    assert_eq!(desk.recv(), online);
    assert_eq!(phone.recv(), online);
}

#[test]
fn transfer_to_another_agent_and_back_to_the_queue() {
    let gw = Gateway::start(Options::shards(2));
    // Only Alice has the skill this visitor needs, so routing can only
    // choose her; a transfer names its target explicitly.
    let (mut alice, _) =
        gw.login(&gw.agent_token("alice", &["--name", "Alice", "--skills", "billing"]));
    let (mut visitor, _) = gw.login(&gw.visitor_token("ann", &["--skill", "billing"]));
    let conv = conv_of(&visitor.say("m-1", None, "refund please"));
    visitor.recv_until(|v| v["event"] == "assigned");
    alice.recv_until(|v| v["event"] == "assigned");
    let (mut bob, _) = gw.login(&gw.agent_token("bob", &["--name", "Bob"]));

    alice.send(json!({"type": "transfer", "conv": conv, "to": "bob"}));
    let to_bob = visitor.recv_skip_queue();
    assert_eq!(
        no_ts(&to_bob),
        json!({"type": "msg", "conv": conv, "seq": 4, "from": {"role": "system"},
               "event": "assigned", "agent": {"id": "bob", "name": "Bob"}})
    );
    assert_eq!(
        alice.recv(),
        to_bob,
        "the previous agent sees the hand-over"
    );
    // Bob receives the whole log.
    let bob_log: Vec<Value> = (0..4).map(|_| bob.recv()).collect();
    assert_eq!(
        bob_log.iter().map(|v| v["seq"].clone()).collect::<Vec<_>>(),
        vec![json!(1), json!(2), json!(3), json!(4)]
    );
    assert_eq!(bob_log[3], to_bob);

    // Alice no longer may write; Bob does.
    let e = error_after(
        &mut alice,
        json!({"type": "msg", "id": "a-1", "conv": conv, "text": "hi"}),
    );
    assert_error(&e, "forbidden", Some("a-1"));
    assert_eq!(bob.say("b-1", Some(&conv), "Bob here")["seq"], 5);
    assert_eq!(visitor.recv()["text"], "Bob here");
    alice.expect_nothing(SHORT);

    // Back to the queue: a `queued` entry; routing gives it to Alice.
    bob.send(json!({"type": "transfer", "conv": conv}));
    let queued = visitor.recv_skip_queue();
    assert_eq!(
        no_ts(&queued),
        json!({"type": "msg", "conv": conv, "seq": 6, "from": {"role": "system"},
               "event": "queued"})
    );
    assert_eq!(bob.recv(), queued);
    let to_alice = visitor.recv_skip_queue();
    assert_eq!(
        no_ts(&to_alice),
        json!({"type": "msg", "conv": conv, "seq": 7, "from": {"role": "system"},
               "event": "assigned", "agent": {"id": "alice", "name": "Alice"}})
    );
    // Alice, newly assigned again, receives the whole log from seq 1.
    let alice_log: Vec<Value> = (0..7).map(|_| alice.recv()).collect();
    assert_eq!(
        alice_log
            .iter()
            .map(|v| v["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    assert_eq!(alice_log[6], to_alice);
    bob.expect_nothing(SHORT);
    let e = error_after(
        &mut bob,
        json!({"type": "msg", "id": "b-2", "conv": conv, "text": "hi"}),
    );
    assert_error(&e, "forbidden", Some("b-2"));
}

#[test]
fn transfer_to_an_unknown_agent_is_not_found() {
    let gw = Gateway::start(Options::default());
    let (mut alice, _) = gw.login(&gw.agent_token("alice", &[]));
    let (mut visitor, _) = gw.login(&gw.visitor_token("ann", &[]));
    let conv = conv_of(&visitor.say("m-1", None, "hi"));
    alice.recv_until(|v| v["event"] == "assigned");
    visitor.recv_until(|v| v["event"] == "assigned");
    for to in ["nobody", "not a valid id!", ""] {
        let e = error_after(
            &mut alice,
            json!({"type": "transfer", "conv": conv, "to": to}),
        );
        assert_error(&e, "not_found", None);
    }
    // An agent that was connected and left is not connected. Waiting for
    // the gateway to close Bob's socket orders his departure before the
    // transfer below (one shard: one order).
    let (bob, _) = gw.login(&gw.agent_token("bob", &[]));
    bob.close_and_wait();
    let e = error_after(
        &mut alice,
        json!({"type": "transfer", "conv": conv, "to": "bob"}),
    );
    assert_error(&e, "not_found", None);
    // Nothing happened to the conversation.
    visitor.expect_silence(Duration::from_millis(100));
    assert_eq!(alice.say("a-1", Some(&conv), "still mine")["seq"], 4);
}

#[test]
fn agent_welcome_lists_every_assigned_conversation() {
    let gw = Gateway::start(Options::shards(2));
    let token = gw.agent_token("alice", &["--name", "Alice"]);
    let (mut alice, _) = gw.login(&token);
    let (mut ann, _) = gw.login(&gw.visitor_token("ann", &[]));
    let (mut bea, _) = gw.login(&gw.visitor_token("bea", &[]));
    let c1 = conv_of(&ann.say("m-1", None, "one"));
    alice.recv_until(|v| v["event"] == "assigned" && v["conv"] == c1.as_str());
    let c2 = conv_of(&bea.say("m-1", None, "two"));
    alice.recv_until(|v| v["event"] == "assigned" && v["conv"] == c2.as_str());
    bea.recv_until(|v| v["event"] == "assigned");
    bea.say("m-2", None, "more");
    alice.recv_until(|v| v["seq"] == 4 && v["conv"] == c2.as_str());
    alice.send(json!({"type": "recv", "conv": c2, "seq": 3}));
    alice.send(json!({"type": "sync", "conv": c2, "after": 4}));
    assert_eq!(alice.recv()["type"], "synced");

    let (mut again, welcome) = gw.login(&token);
    let mut listed = welcome["conversations"].as_array().unwrap().clone();
    listed.sort_by_key(|c| c["conv"].as_str().unwrap().to_string());
    let agent = json!({"id": "alice", "name": "Alice"});
    let mut expected = vec![
        json!({"conv": c1, "state": "assigned", "last_seq": 3, "agent": agent}),
        json!({"conv": c2, "state": "assigned", "last_seq": 4, "agent": agent}),
    ];
    expected.sort_by_key(|c| c["conv"].as_str().unwrap().to_string());
    assert_eq!(listed, expected);
    // Replays: c1 from its start (no receipt), c2 after 3; each in order.
    let mut got: Vec<(String, u64)> = (0..4)
        .map(|_| {
            let v = again.recv();
            (
                v["conv"].as_str().unwrap().to_string(),
                v["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    let c1_seqs: Vec<u64> = got
        .iter()
        .filter(|(c, _)| *c == c1)
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(c1_seqs, vec![1, 2, 3]);
    got.retain(|(c, _)| *c == c2);
    assert_eq!(got, vec![(c2.clone(), 4)]);
    again.expect_nothing(Duration::from_millis(200));
}
