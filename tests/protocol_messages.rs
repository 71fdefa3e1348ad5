//! PROTOCOL.md, "Conversations and messages", "System entries" and
//! "Errors": `msg` and `ack` for both roles, the sender's other devices,
//! idempotent resends, system entries, and every error code a client can
//! provoke over the wire.
//!
//! Error codes not provoked here, and why:
//! - `unauthorized`: identity is settled by `hello`, and every refused
//!   hello closes the connection (4401) instead of answering an `error`
//!   frame; after a good hello no command is refused for identity reasons
//!   (a command outside the role's rights is `forbidden`). So the code is
//!   not reachable over the wire in protocol v1.
//! - `unavailable`: needs a storage fault; covered by the durability tests.
//! - `internal`: only for gateway bugs; no input is meant to reach it.
//!
//! Every test starts its own gateway. Most run one shard; the ones started
//! with `Options::shards(2)` also cross shards (connections, conversations
//! and the tenant's router may then live on different shards).

mod common;

use std::time::Duration;

use common::wire::{assert_error, no_ts};
use common::{Client, Gateway, Options};
use serde_json::{json, Value};

/// Two tenants with a visitor and an agent each.
const TWO_TENANTS: &str = r#"
[[tenants]]
id = "acme"
secret = "acme-secret-0123456789abcdef0123456789"
anonymous_visitors = true

[[tenants]]
id = "globex"
secret = "globex-secret-0123456789abcdef012345678"
anonymous_visitors = true
"#;

const SHORT: Duration = Duration::from_millis(300);

/// Ann (visitor, named) opens a conversation, Alice (agent, named) is
/// assigned to it. Returns (visitor, agent, conv) with every frame so far read.
fn assigned_conversation(gw: &Gateway) -> (Client, Client, String) {
    let (mut agent, _) = gw.login(&gw.agent_token("alice", &["--name", "Alice"]));
    let (mut visitor, _) = gw.login(&gw.visitor_token("ann", &["--name", "Ann"]));
    let conv = visitor.say("m-1", None, "hello")["conv"]
        .as_str()
        .unwrap()
        .to_string();
    let (assigned, _) = visitor.recv_until(|v| v["event"] == "assigned");
    let (same, _) = agent.recv_until(|v| v["event"] == "assigned");
    assert_eq!(assigned, same);
    (visitor, agent, conv)
}

/// The next frame that answers the client frame with this id/ref.
fn answer_to(c: &mut Client, reference: &str) -> Value {
    c.recv_until(|v| {
        (v["type"] == "ack" && v["id"] == reference)
            || (v["type"] == "error" && v["ref"] == reference)
    })
    .0
}

fn error_after(c: &mut Client, frame: Value) -> Value {
    c.send(frame);
    let (e, _) = c.recv_until(|v| v["type"] == "error");
    e
}

#[test]
fn visitor_message_opens_a_conversation_then_goes_to_the_open_one() {
    let gw = Gateway::start(Options::shards(2));
    let (mut visitor, _) = gw.login(&gw.visitor_token("ann", &["--name", "Ann"]));
    visitor.send(json!({"type": "msg", "id": "m-1", "text": "where is my order?"}));
    let ack = visitor.recv();
    let conv = ack["conv"].as_str().expect("conv").to_string();
    assert_eq!(
        ack,
        json!({"type": "ack", "id": "m-1", "conv": conv, "seq": 1}),
        "the ack comes first; the sender gets no msg frame of its own entry"
    );
    assert!(conv.starts_with("c-"), "{conv}");
    let queued = visitor.recv();
    assert_eq!(
        no_ts(&queued),
        json!({"type": "msg", "conv": conv, "seq": 2, "from": {"role": "system"},
               "event": "queued"})
    );
    assert_eq!(
        visitor.recv(),
        json!({"type": "queue", "conv": conv, "position": 1})
    );
    // No conv: the open conversation. Naming it: the same.
    let ack = visitor.say("m-2", None, "hello?");
    assert_eq!(
        ack,
        json!({"type": "ack", "id": "m-2", "conv": conv, "seq": 3})
    );
    let ack = visitor.say("m-3", Some(&conv), "anyone?");
    assert_eq!(
        ack,
        json!({"type": "ack", "id": "m-3", "conv": conv, "seq": 4})
    );

    // An agent assigned later receives the whole log, entry for entry.
    let (mut agent, _) = gw.login(&gw.agent_token("alice", &["--name", "Alice"]));
    let mut log = Vec::new();
    for _ in 0..5 {
        log.push(no_ts(&agent.recv_type("msg")));
    }
    let from = json!({"role": "visitor", "id": "ann", "name": "Ann"});
    assert_eq!(
        log,
        vec![
            json!({"type": "msg", "conv": conv, "seq": 1, "id": "m-1", "from": from,
                   "text": "where is my order?"}),
            no_ts(&queued),
            json!({"type": "msg", "conv": conv, "seq": 3, "id": "m-2", "from": from,
                   "text": "hello?"}),
            json!({"type": "msg", "conv": conv, "seq": 4, "id": "m-3", "from": from,
                   "text": "anyone?"}),
            json!({"type": "msg", "conv": conv, "seq": 5, "from": {"role": "system"},
                   "event": "assigned", "agent": {"id": "alice", "name": "Alice"}}),
        ]
    );
    assert_eq!(no_ts(&visitor.recv_skip_queue()), log[4]);

    // The agent answers, naming the conversation.
    let ack = agent.say("a-1", Some(&conv), "let me check");
    assert_eq!(
        ack,
        json!({"type": "ack", "id": "a-1", "conv": conv, "seq": 6})
    );
    assert_eq!(
        no_ts(&visitor.recv()),
        json!({"type": "msg", "conv": conv, "seq": 6, "id": "a-1",
               "from": {"role": "agent", "id": "alice", "name": "Alice"},
               "text": "let me check"})
    );
    agent.expect_nothing(SHORT);
}

#[test]
fn system_entries_queued_assigned_closed() {
    let gw = Gateway::start(Options::default());
    let (mut visitor, _) = gw.login(&gw.visitor_token("ann", &[]));
    let conv = visitor.say("m-1", None, "hi")["conv"]
        .as_str()
        .unwrap()
        .to_string();
    let system = |seq: u64, extra: Value| {
        let mut v = json!({"type": "msg", "conv": conv, "seq": seq, "from": {"role": "system"}});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    assert_eq!(
        no_ts(&visitor.recv_skip_queue()),
        system(2, json!({"event": "queued"}))
    );
    // An agent without a name: `agent` has only the id.
    let (mut agent, _) = gw.login(&gw.agent_token("bob", &[]));
    let assigned = system(3, json!({"event": "assigned", "agent": {"id": "bob"}}));
    assert_eq!(no_ts(&visitor.recv_skip_queue()), assigned);
    let (got, _) = agent.recv_until(|v| v["seq"] == 3);
    assert_eq!(no_ts(&got), assigned);

    agent.send(json!({"type": "close", "conv": conv}));
    let closed = system(
        4,
        json!({"event": "closed", "by": {"role": "agent", "id": "bob"}}),
    );
    assert_eq!(no_ts(&agent.recv()), closed, "the closer sees it too");
    assert_eq!(no_ts(&visitor.recv()), closed);

    // A visitor closes its own (without naming it).
    let conv2 = visitor.say("m-2", None, "one more thing")["conv"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(conv2, conv, "closed is final: a new conversation");
    let (assigned2, _) = visitor.recv_until(|v| v["event"] == "assigned");
    assert_eq!(assigned2["seq"], 3);
    agent.recv_until(|v| v["seq"] == 3 && v["conv"] == conv2.as_str());
    visitor.send(json!({"type": "close"}));
    let closed = json!({"type": "msg", "conv": conv2, "seq": 4, "from": {"role": "system"},
                        "event": "closed", "by": {"role": "visitor", "id": "ann"}});
    assert_eq!(no_ts(&visitor.recv()), closed);
    assert_eq!(no_ts(&agent.recv()), closed);
}

#[test]
fn agent_must_name_a_conversation() {
    let gw = Gateway::start(Options::default());
    let (mut agent, _) = gw.login(&gw.agent_token("alice", &[]));
    let e = error_after(
        &mut agent,
        json!({"type": "msg", "id": "a-1", "text": "hi"}),
    );
    assert_error(&e, "bad_request", Some("a-1"));
    let e = error_after(&mut agent, json!({"type": "close"}));
    assert_error(&e, "bad_request", None);
}

#[test]
fn agent_naming_a_conversation_not_assigned_to_it_is_forbidden() {
    let gw = Gateway::start(Options::default());
    let (mut visitor, mut alice, conv) = assigned_conversation(&gw);
    let (mut bob, _) = gw.login(&gw.agent_token("bob", &[]));
    let e = error_after(
        &mut bob,
        json!({"type": "msg", "id": "b-1", "conv": conv, "text": "mine?"}),
    );
    assert_error(&e, "forbidden", Some("b-1"));
    // Nothing was appended: Alice's next entry is seq 4.
    assert_eq!(alice.say("a-1", Some(&conv), "still me")["seq"], 4);
    assert_eq!(visitor.recv()["seq"], 4);

    // Neither may Bob act on it otherwise.
    for frame in [
        json!({"type": "close", "conv": conv}),
        json!({"type": "transfer", "conv": conv}),
        json!({"type": "typing", "conv": conv, "on": true}),
        json!({"type": "read", "conv": conv, "seq": 1}),
        json!({"type": "recv", "conv": conv, "seq": 1}),
        json!({"type": "sync", "conv": conv}),
    ] {
        let e = error_after(&mut bob, frame.clone());
        assert_error(&e, "forbidden", None);
    }
    let e = error_after(
        &mut bob,
        json!({"type": "history", "conv": conv, "ref": "h1"}),
    );
    assert_error(&e, "forbidden", Some("h1"));

    // A queued conversation is assigned to nobody: forbidden as well.
    let (mut other, _) = gw.login(&gw.visitor_token("carl", &[]));
    alice.send(json!({"type": "status", "status": "away"}));
    assert_eq!(alice.recv(), json!({"type": "status", "status": "away"}));
    bob.send(json!({"type": "status", "status": "away"}));
    assert_eq!(bob.recv(), json!({"type": "status", "status": "away"}));
    let queued_conv = other.say("m-1", None, "hi")["conv"]
        .as_str()
        .unwrap()
        .to_string();
    let e = error_after(
        &mut alice,
        json!({"type": "msg", "id": "a-2", "conv": queued_conv, "text": "hi"}),
    );
    assert_error(&e, "forbidden", Some("a-2"));

    // A visitor naming another visitor's conversation.
    let e = error_after(
        &mut other,
        json!({"type": "msg", "id": "m-9", "conv": conv, "text": "hi"}),
    );
    assert_error(&e, "forbidden", Some("m-9"));
}

#[test]
fn unknown_or_malformed_conversation_is_not_found() {
    let gw = Gateway::start(Options::default());
    let (mut visitor, mut agent, real) = assigned_conversation(&gw);
    // Well formed but unknown; and not a conversation id at all.
    let unknown = format!("{}ffff", &real[..real.len() - 4]);
    let unknown = if unknown == real {
        format!("{}0000", &real[..real.len() - 4])
    } else {
        unknown
    };
    for conv in [unknown.as_str(), "c-0123456789abcdef-00000000", "nope", ""] {
        for c in [&mut visitor, &mut agent] {
            let e = error_after(
                c,
                json!({"type": "msg", "id": "x-1", "conv": conv, "text": "hi"}),
            );
            assert_error(&e, "not_found", Some("x-1"));
            let e = error_after(c, json!({"type": "history", "conv": conv, "ref": "h-1"}));
            assert_error(&e, "not_found", Some("h-1"));
            for frame in [
                json!({"type": "recv", "conv": conv, "seq": 1}),
                json!({"type": "sync", "conv": conv, "after": 0}),
                json!({"type": "typing", "conv": conv, "on": true}),
                json!({"type": "read", "conv": conv, "seq": 1}),
                json!({"type": "close", "conv": conv}),
            ] {
                let e = error_after(c, frame.clone());
                assert_error(&e, "not_found", None);
            }
        }
        let e = error_after(&mut agent, json!({"type": "transfer", "conv": conv}));
        assert_error(&e, "not_found", None);
    }
    // The real conversation still works for both.
    assert_eq!(agent.say("a-1", Some(&real), "ok")["seq"], 4);
    assert_eq!(visitor.recv()["seq"], 4);
}

#[test]
fn another_tenants_conversation_is_not_found() {
    let gw = Gateway::start(Options::shards(2).config(TWO_TENANTS));
    let acme_agent = gw.token(&["--role", "agent", "--sub", "alice", "--tenant", "acme"]);
    let (mut alice, _) = gw.login(&acme_agent);
    let (mut ann, _) = gw.anonymous("acme");
    let conv = ann.say("m-1", None, "hi")["conv"]
        .as_str()
        .unwrap()
        .to_string();
    alice.recv_until(|v| v["event"] == "assigned");
    ann.recv_until(|v| v["event"] == "assigned");

    // Same agent id and a same-looking visitor in the other tenant.
    let globex_agent = gw.token(&["--role", "agent", "--sub", "alice", "--tenant", "globex"]);
    let (mut galice, _) = gw.login(&globex_agent);
    let globex_visitor = gw.token(&["--role", "visitor", "--sub", "ann", "--tenant", "globex"]);
    let (mut gann, _) = gw.login(&globex_visitor);
    for c in [&mut galice, &mut gann] {
        let e = error_after(
            c,
            json!({"type": "msg", "id": "x-1", "conv": conv, "text": "let me in"}),
        );
        assert_error(&e, "not_found", Some("x-1"));
        let e = error_after(c, json!({"type": "history", "conv": conv, "ref": "h"}));
        assert_error(&e, "not_found", Some("h"));
        for frame in [
            json!({"type": "sync", "conv": conv}),
            json!({"type": "recv", "conv": conv, "seq": 1}),
            json!({"type": "typing", "conv": conv, "on": true}),
            json!({"type": "read", "conv": conv, "seq": 1}),
            json!({"type": "close", "conv": conv}),
        ] {
            let e = error_after(c, frame.clone());
            assert_error(&e, "not_found", None);
        }
    }
    let e = error_after(&mut galice, json!({"type": "transfer", "conv": conv}));
    assert_error(&e, "not_found", None);
    // Nothing leaked to the acme side.
    ann.expect_silence(SHORT);
    alice.expect_nothing(Duration::from_millis(50));
    assert_eq!(alice.say("a-1", Some(&conv), "hi")["seq"], 4);
}

#[test]
fn text_over_the_limit_is_too_large_and_the_connection_stays() {
    let gw = Gateway::start(Options::default().arg("--max-text-bytes").arg("16"));
    let (mut visitor, mut agent, conv) = assigned_conversation(&gw);
    for (c, id) in [(&mut visitor, "m-big"), (&mut agent, "a-big")] {
        // 17 bytes of UTF-8 in 9 characters: the limit is in bytes.
        let text = "ééééé\u{1F600}abc";
        assert_eq!((text.len(), text.chars().count()), (17, 9));
        c.send(json!({"type": "msg", "id": id, "conv": conv, "text": text}));
        assert_error(&answer_to(c, id), "too_large", Some(id));
    }
    // Exactly the limit is fine, and nothing was appended before it.
    let ack = visitor.say("m-2", None, "0123456789abcdef");
    assert_eq!(ack["seq"], 4);
    assert_eq!(agent.recv()["text"], "0123456789abcdef");
    let ack = agent.say("a-2", Some(&conv), "ok");
    assert_eq!(ack["seq"], 5);
}

#[test]
fn resending_an_id_from_another_connection_returns_the_original_ack() {
    let gw = Gateway::start(Options::shards(2));
    let token = gw.visitor_token("ann", &[]);
    let (mut phone, _) = gw.login(&token);
    let original = phone.say("m-1", None, "first");
    let conv = original["conv"].as_str().unwrap().to_string();
    phone.recv_type("msg");

    let (mut laptop, welcome) = gw.login(&token);
    assert_eq!(welcome["conversations"][0]["conv"], conv.as_str());
    laptop.recv_type("msg");
    laptop.recv_type("msg");
    // Same id, different text, no conv: the original ack, nothing appended.
    let again = laptop.say("m-1", None, "first, edited");
    assert_eq!(again, original);
    let again = laptop.say("m-1", Some(&conv), "first");
    assert_eq!(again, original);
    phone.expect_silence(SHORT);
    // The same id from the same connection, too.
    assert_eq!(phone.say("m-1", None, "first"), original);

    let next = laptop.say("m-2", None, "second");
    assert_eq!(
        next,
        json!({"type": "ack", "id": "m-2", "conv": conv, "seq": 3})
    );

    // Ids are per sender: an agent's "m-1" is its own message.
    let (mut agent, _) = gw.login(&gw.agent_token("alice", &[]));
    agent.recv_until(|v| v["event"] == "assigned");
    let ack = agent.say("m-1", Some(&conv), "agent's own m-1");
    assert_eq!(
        ack,
        json!({"type": "ack", "id": "m-1", "conv": conv, "seq": 5})
    );
}

#[test]
fn the_senders_other_devices_get_the_msg_frame() {
    let gw = Gateway::start(Options::shards(2));
    let (mut visitor, mut agent, conv) = assigned_conversation(&gw);
    // A second device of the agent: its welcome lists the conversation.
    let (mut agent2, welcome) = gw.login(&gw.agent_token("alice", &["--name", "Alice"]));
    assert_eq!(welcome["conversations"][0]["conv"], conv.as_str());
    let (_, replay) = agent2.recv_until(|v| v["seq"] == 3);
    assert_eq!(replay.len(), 2, "the whole log: {replay:?}");

    let ack = agent.say("a-1", Some(&conv), "from the desk");
    let frame = json!({"type": "msg", "conv": conv, "seq": ack["seq"], "id": "a-1",
                       "from": {"role": "agent", "id": "alice", "name": "Alice"},
                       "text": "from the desk"});
    let on_second = agent2.recv();
    assert_eq!(no_ts(&on_second), frame);
    assert_eq!(
        visitor.recv(),
        on_second,
        "one entry, one frame, for everyone"
    );
    agent.expect_nothing(Duration::from_millis(100));

    // A second device of the visitor, with the same token.
    let (mut visitor2, _) = gw.login(&gw.visitor_token("ann", &["--name", "Ann"]));
    visitor2.recv_until(|v| v["seq"] == 4);
    let ack = visitor.say("m-2", None, "from the phone");
    assert_eq!(ack["seq"], 5);
    let frame = json!({"type": "msg", "conv": conv, "seq": 5, "id": "m-2",
                       "from": {"role": "visitor", "id": "ann", "name": "Ann"},
                       "text": "from the phone"});
    let on_second = visitor2.recv();
    assert_eq!(no_ts(&on_second), frame);
    assert_eq!(agent.recv(), on_second);
    assert_eq!(agent2.recv(), on_second);
    visitor.expect_nothing(Duration::from_millis(100));
}

#[test]
fn a_visitors_other_device_sees_the_conversation_it_opens() {
    let gw = Gateway::start(Options::shards(2));
    let token = gw.visitor_token("ann", &["--name", "Ann"]);
    let (mut phone, _) = gw.login(&token);
    let (mut laptop, _) = gw.login(&token);
    let ack = phone.say("m-1", None, "hi");
    let conv = ack["conv"].as_str().unwrap();
    let first = laptop.recv();
    assert_eq!(
        no_ts(&first),
        json!({"type": "msg", "conv": conv, "seq": 1, "id": "m-1",
               "from": {"role": "visitor", "id": "ann", "name": "Ann"}, "text": "hi"})
    );
    let queued = laptop.recv();
    assert_eq!(queued["event"], "queued");
    assert_eq!(phone.recv(), queued);
    let position = json!({"type": "queue", "conv": conv, "position": 1});
    assert_eq!(
        laptop.recv(),
        position,
        "every connection of the queued visitor"
    );
    assert_eq!(phone.recv(), position);
}

#[test]
fn bad_requests_get_errors_and_the_connection_stays() {
    let gw = Gateway::start(Options::default());
    let (mut c, _) = gw.login(&gw.visitor_token("ann", &[]));
    let cases: Vec<(&str, Option<&str>)> = vec![
        ("not json", None),
        ("{\"type\":", None),
        ("[1,2]", None),
        ("\"msg\"", None),
        (r#"{"id":"m-1","text":"no type"}"#, Some("m-1")),
        (r#"{"type":"launch","ref":"r-1"}"#, Some("r-1")),
        (r#"{"type":"msg","id":"m-2"}"#, Some("m-2")),
        (r#"{"type":"msg","text":"no id"}"#, None),
        (r#"{"type":"msg","id":"m-3","text":42}"#, Some("m-3")),
        (r#"{"type":"recv","conv":"c-1"}"#, None),
        (r#"{"type":"recv","seq":1}"#, None),
        (r#"{"type":"recv","conv":"c-1","seq":-1}"#, None),
        (r#"{"type":"sync"}"#, None),
        (r#"{"type":"history","ref":"h-1"}"#, Some("h-1")),
        (r#"{"type":"typing","conv":"c-1"}"#, None),
        (r#"{"type":"read","conv":"c-1"}"#, None),
        (r#"{"type":"status","status":"busy"}"#, None),
        (r#"{"type":"transfer"}"#, None),
        (r#"{"type":"hello","tenant":"demo"}"#, None),
    ];
    for (frame, reference) in cases {
        c.send_text(frame);
        let e = c.recv_skip_queue();
        assert_error(&e, "bad_request", reference);
    }
    // An empty id is not an id (the error may echo it or not).
    c.send_text(r#"{"type":"msg","id":"","text":"empty id"}"#);
    let e = c.recv_skip_queue();
    if e.get("ref").is_some() {
        assert_error(&e, "bad_request", Some(""));
    } else {
        assert_error(&e, "bad_request", None);
    }
    let id = "m".repeat(65);
    c.send(json!({"type": "msg", "id": id, "text": "id too long"}));
    assert_error(&c.recv_skip_queue(), "bad_request", Some(&id));
    // Still open, still the same session.
    let ack = c.say("m-ok", None, "fine");
    assert_eq!(ack["seq"], 1);
}

#[test]
fn visitor_only_commands_and_agent_only_commands_are_forbidden_to_the_other() {
    let gw = Gateway::start(Options::default());
    let (mut visitor, _agent, conv) = assigned_conversation(&gw);
    let e = error_after(&mut visitor, json!({"type": "status", "status": "away"}));
    assert_error(&e, "forbidden", None);
    let e = error_after(
        &mut visitor,
        json!({"type": "transfer", "conv": conv, "to": "bob"}),
    );
    assert_error(&e, "forbidden", None);
    let e = error_after(&mut visitor, json!({"type": "transfer", "conv": conv}));
    assert_error(&e, "forbidden", None);
}

#[test]
fn message_to_a_closed_conversation_is_closed_and_the_next_opens_a_new_one() {
    let gw = Gateway::start(Options::default());
    let (mut visitor, mut agent, conv) = assigned_conversation(&gw);
    agent.send(json!({"type": "close", "conv": conv}));
    assert_eq!(agent.recv()["event"], "closed");
    assert_eq!(visitor.recv()["event"], "closed");

    for (c, id) in [(&mut visitor, "m-2"), (&mut agent, "a-2")] {
        let e = error_after(
            c,
            json!({"type": "msg", "id": id, "conv": conv, "text": "late"}),
        );
        assert_error(&e, "closed", Some(id));
        let e = error_after(c, json!({"type": "close", "conv": conv}));
        assert_error(&e, "closed", None);
        let e = error_after(c, json!({"type": "typing", "conv": conv, "on": true}));
        assert_error(&e, "closed", None);
    }
    let e = error_after(&mut agent, json!({"type": "transfer", "conv": conv}));
    assert_error(&e, "closed", None);
    // Without a conv, there is no open conversation to close.
    let e = error_after(&mut visitor, json!({"type": "close"}));
    assert_error(&e, "not_found", None);

    // The visitor's next message opens a new conversation at seq 1.
    let ack = visitor.say("m-3", None, "new question");
    let new_conv = ack["conv"].as_str().unwrap();
    assert_ne!(new_conv, conv);
    assert_eq!(ack["seq"], 1);
    assert_eq!(visitor.recv_skip_queue()["event"], "queued");
    // The new conversation goes to Alice (the visitor's last agent).
    let (assigned, log) = agent.recv_until(|v| v["event"] == "assigned");
    assert_eq!(visitor.recv_skip_queue(), assigned);
    assert_eq!(
        (assigned["conv"].clone(), assigned["seq"].clone(), log.len()),
        (json!(new_conv), json!(3), 2)
    );
    // The old one still answers sync/history for its participants.
    visitor.send(json!({"type": "sync", "conv": conv, "after": 3}));
    let closed = visitor.recv_skip_queue();
    assert_eq!(
        (closed["seq"].clone(), closed["event"].clone()),
        (json!(4), json!("closed"))
    );
    let synced = visitor.recv_skip_queue();
    assert_eq!(
        synced,
        json!({"type": "synced", "conv": conv, "last_seq": 4})
    );
}

#[test]
fn rate_limited_warnings_then_close_4429() {
    let gw = Gateway::start(Options::default().arg("--msg-rate-limit").arg("1"));
    let (mut c, _) = gw.login(&gw.visitor_token("ann", &[]));
    // Burst of 2, then 1 per second: send many at once.
    for i in 0..40 {
        c.send(json!({"type": "msg", "id": format!("m-{i}"), "text": "spam"}));
    }
    let (frames, code) = c.recv_until_close();
    assert_eq!(code, 4429, "frames before the close: {frames:?}");
    let limited: Vec<&Value> = frames.iter().filter(|v| v["type"] == "error").collect();
    assert!(!limited.is_empty(), "rate_limited warnings come first");
    for (i, e) in limited.iter().enumerate() {
        assert_error(e, "rate_limited", Some(&format!("m-{}", i + 2)));
    }
    for v in &frames {
        match v["type"].as_str().unwrap() {
            "ack" => assert!(v["id"] == "m-0" || v["id"] == "m-1", "{v}"),
            "error" | "msg" | "queue" => {}
            other => panic!("unexpected {other}: {v}"),
        }
    }
}

#[test]
fn rate_limited_message_can_be_resent_later() {
    let gw = Gateway::start(Options::default().arg("--msg-rate-limit").arg("5"));
    let (mut c, _) = gw.login(&gw.visitor_token("ann", &[]));
    for i in 0..11 {
        c.send(json!({"type": "msg", "id": format!("m-{i}"), "text": "x"}));
    }
    // The refusal is immediate, the acks wait for the disk: any order.
    let mut acks = 0;
    let mut limited = None;
    while acks < 10 || limited.is_none() {
        let v = c.recv_skip_queue();
        match v["type"].as_str().unwrap() {
            "ack" => acks += 1,
            "error" => {
                assert!(limited.is_none(), "one refusal only: {v}");
                limited = Some(v);
            }
            _ => {}
        }
    }
    assert_error(&limited.unwrap(), "rate_limited", Some("m-10"));
    assert_eq!(acks, 10, "a burst of twice the rate passes");
    // The refused id was not stored: once tokens are back, it is appended.
    // (Reading frames paces the retry; the bucket refills at 5/s.)
    let ack = loop {
        c.send(json!({"type": "msg", "id": "m-10", "text": "x"}));
        let v = answer_to(&mut c, "m-10");
        if v["type"] == "ack" {
            break v;
        }
        assert_error(&v, "rate_limited", Some("m-10"));
        c.expect_silence(Duration::from_millis(100));
    };
    assert_eq!(ack["seq"], 12, "10 messages and queued before it");
}

#[test]
fn nothing_is_sent_after_the_4429_close_frame() {
    // RFC 6455 §5.5.1: after sending a close frame, an endpoint sends no
    // more data frames. Acks of the messages that were accepted before
    // the close may be pending when it is sent.
    let gw = Gateway::start(Options::default().arg("--msg-rate-limit").arg("1"));
    let token = gw.visitor_token("ann", &[]);
    let mut raw = common::wire::RawWs::connect(gw.addr);
    raw.send(json!({"type": "hello", "token": token}));
    assert_eq!(raw.recv()["type"], "welcome");
    let burst: Vec<String> = (0..40)
        .map(|i| json!({"type": "msg", "id": format!("m-{i}"), "text": "spam"}).to_string())
        .collect();
    raw.send_texts(&burst);
    assert_eq!(raw.expect_close_and_silence(SHORT), 4429);
}

#[test]

fn errors_echo_the_ref_of_any_frame_that_had_one() {
    // PROTOCOL.md, Errors: "`ref` is the `id` (or `ref`) of the frame that
    // failed, when it had one". The gateway echoes it when it refuses a
    // frame itself (bad_request, a malformed conv id) but not when the
    // conversation's shard refuses it (not_found, forbidden, closed for
    // close, transfer, typing, read, recv, sync).
    let gw = Gateway::start(Options::default());
    let (mut visitor, mut agent, conv) = assigned_conversation(&gw);
    let unknown = "c-0123456789abcdef-00000000";
    // Refused before leaving the connection's shard: ref echoed (passes).
    let e = error_after(
        &mut agent,
        json!({"type": "close", "conv": "nope", "ref": "r-0"}),
    );
    assert_error(&e, "not_found", Some("r-0"));
    for (i, frame) in [
        json!({"type": "close", "conv": unknown}),
        json!({"type": "typing", "conv": unknown, "on": true}),
        json!({"type": "read", "conv": unknown, "seq": 1}),
        json!({"type": "recv", "conv": unknown, "seq": 1}),
        json!({"type": "sync", "conv": unknown}),
        json!({"type": "transfer", "conv": unknown}),
        json!({"type": "transfer", "conv": conv, "to": "nobody"}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut frame = frame;
        let reference = format!("r-{}", i + 1);
        frame["ref"] = json!(reference);
        let e = error_after(&mut agent, frame.clone());
        assert_eq!(e["ref"], json!(reference), "{frame} -> {e}");
    }
    let e = error_after(
        &mut visitor,
        json!({"type": "close", "conv": unknown, "ref": "v-1"}),
    );
    assert_eq!(e["ref"], "v-1", "{e}");
}
