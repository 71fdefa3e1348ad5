//! A visitor and an agent hold a conversation, end to end.

mod common;

use common::{Gateway, Options};
use serde_json::json;

#[test]
fn visitor_and_agent_chat_in_order_with_durable_acks() {
    let gw = Gateway::start(Options::default());
    let (mut visitor, welcome) = gw.anonymous("demo");
    assert_eq!(welcome["role"], "visitor");
    assert_eq!(welcome["tenant"], "demo");
    assert!(
        welcome["token"].is_string(),
        "an anonymous visitor gets a token: {welcome}"
    );
    assert_eq!(welcome["conversations"], json!([]));

    let ack = visitor.say("m-1", None, "where is my order?");
    let conv = ack["conv"].as_str().unwrap().to_string();
    assert_eq!(ack["seq"], 1);
    let queued = visitor.recv_type("msg");
    assert_eq!(
        (queued["seq"].clone(), queued["event"].clone()),
        (json!(2), json!("queued"))
    );

    let agent_token = gw.agent_token("alice", &["--name", "Alice"]);
    let (mut agent, welcome) = gw.login(&agent_token);
    assert_eq!(welcome["role"], "agent");
    // The newly assigned agent receives the whole log: message, queued, assigned.
    let first = agent.recv_type("msg");
    assert_eq!(
        (first["seq"].clone(), first["text"].clone()),
        (json!(1), json!("where is my order?"))
    );
    assert_eq!(agent.recv_type("msg")["event"], "queued");
    let assigned = agent.recv_type("msg");
    assert_eq!(assigned["event"], "assigned");
    assert_eq!(assigned["agent"], json!({"id": "alice", "name": "Alice"}));
    let v_assigned = visitor.recv_type("msg");
    assert_eq!(v_assigned["seq"], 3);

    let ack = agent.say("a-1", Some(&conv), "let me check");
    assert_eq!(ack["seq"], 4);
    let got = visitor.recv_type("msg");
    assert_eq!(
        (got["seq"].clone(), got["text"].clone()),
        (json!(4), json!("let me check"))
    );
    assert_eq!(
        got["from"],
        json!({"role": "agent", "id": "alice", "name": "Alice"})
    );

    // Resending an id returns the original ack and appends nothing.
    let again = visitor.say("m-1", None, "where is my order?");
    assert_eq!(
        again,
        json!({"type": "ack", "id": "m-1", "conv": conv, "seq": 1})
    );
    let next = visitor.say("m-2", None, "thanks");
    assert_eq!(next["seq"], 5, "the resend appended nothing");
}

#[test]
fn health_and_metrics_answer() {
    let gw = Gateway::start(Options::shards(2));
    assert_eq!(
        Gateway::http_get(gw.addr, "/health"),
        (200, r#"{"status":"ok"}"#.to_string())
    );
    let (mut visitor, _) = gw.anonymous("demo");
    visitor.say("m-1", None, "hello");
    assert!(gw.metric_sum("kefu_acks_total") >= 1.0);
    assert!(gw.metric_sum("kefu_entries_appended_total") >= 2.0);
    assert!(gw.metrics().contains("kefu_flush_seconds_bucket"));
}
