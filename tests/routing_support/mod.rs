//! Helpers shared by the routing tests (`tests/routing*.rs`): the frames a
//! routing decision produces, written out as exact JSON, and readers that
//! wait for them frame by frame.
//!
//! Every reader here is strict: it names the frames it may skip (queue
//! positions, where the protocol lets them come at any time) and fails on
//! anything else, so that an unexpected entry or error cannot go unnoticed.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{Client, Gateway};

/// How long a negative assertion ("nothing arrives") waits.
pub const QUIET: Duration = Duration::from_millis(400);

/// The entry without its `ts` (asserted to be a number), for exact comparison.
pub fn without_ts(mut v: Value) -> Value {
    let ts = v.as_object_mut().and_then(|o| o.remove("ts"));
    assert!(
        ts.as_ref().is_some_and(Value::is_u64),
        "entry without a numeric ts: {v}"
    );
    v
}

/// A `queued` system entry, without `ts`.
pub fn queued(conv: &str, seq: u64) -> Value {
    json!({"type": "msg", "conv": conv, "seq": seq, "from": {"role": "system"},
           "event": "queued"})
}

/// An `assigned` system entry naming `agent` (`{"id":..,"name":..}`), without `ts`.
pub fn assigned(conv: &str, seq: u64, agent: Value) -> Value {
    json!({"type": "msg", "conv": conv, "seq": seq, "from": {"role": "system"},
           "event": "assigned", "agent": agent})
}

/// A `closed` system entry, closed by `role`/`id`, without `ts`.
pub fn closed(conv: &str, seq: u64, role: &str, id: &str) -> Value {
    json!({"type": "msg", "conv": conv, "seq": seq, "from": {"role": "system"},
           "event": "closed", "by": {"role": role, "id": id}})
}

/// A chat entry, without `ts`. `from` is the `from` object.
pub fn chat(conv: &str, seq: u64, id: &str, from: Value, text: &str) -> Value {
    json!({"type": "msg", "conv": conv, "seq": seq, "id": id, "from": from, "text": text})
}

/// `{"id": id}`: an agent as entries name it when its token has no name.
pub fn agent(id: &str) -> Value {
    json!({ "id": id })
}

/// A `queue` frame.
pub fn position(conv: &str, position: u32) -> Value {
    json!({"type": "queue", "conv": conv, "position": position})
}

/// A visitor token (the demo tenant) and a client logged in with it.
pub fn visitor(gw: &Gateway, id: &str, extra: &[&str]) -> Client {
    let token = gw.visitor_token(id, extra);
    let (c, welcome) = gw.login(&token);
    assert_eq!(
        welcome,
        json!({"type": "welcome", "role": "visitor", "id": id, "tenant": "demo",
               "conversations": []})
    );
    c
}

/// An agent logged in with a fresh token; asserts an empty welcome.
pub fn agent_login(gw: &Gateway, id: &str, extra: &[&str]) -> Client {
    let token = gw.agent_token(id, extra);
    let (c, welcome) = gw.login(&token);
    assert_eq!(
        welcome,
        json!({"type": "welcome", "role": "agent", "id": id, "tenant": "demo",
               "conversations": []})
    );
    c
}

/// The visitor's first message: opens a conversation. The next frame must be
/// its ack, with seq 1. Returns the conversation id.
pub fn open(visitor: &mut Client, id: &str, text: &str) -> String {
    visitor.send(json!({"type": "msg", "id": id, "text": text}));
    let ack = visitor.recv();
    assert_eq!(ack["type"], "ack", "expected the ack of {id}, got {ack}");
    let conv = ack["conv"]
        .as_str()
        .expect("ack names its conv")
        .to_string();
    assert_eq!(
        ack,
        json!({"type": "ack", "id": id, "conv": conv, "seq": 1})
    );
    conv
}

/// The next log entry (queue positions skipped), without `ts`.
pub fn next_entry(c: &mut Client) -> Value {
    loop {
        let v = c.recv();
        match v["type"].as_str() {
            Some("queue") => continue,
            Some("msg") => return without_ts(v),
            _ => panic!("expected a log entry, got {v}"),
        }
    }
}

/// Asserts the next entries (queue positions skipped) are exactly `expected`.
pub fn expect_entries(c: &mut Client, expected: &[Value]) {
    for e in expected {
        assert_eq!(&next_entry(c), e);
    }
}

/// A visitor that just opened `conv` while nobody could take it: the
/// `queued` entry, then its first position.
pub fn expect_queued_at(visitor: &mut Client, conv: &str, at: u32) {
    assert_eq!(without_ts(visitor.recv()), queued(conv, 2));
    assert_eq!(visitor.recv(), position(conv, at));
}

/// A visitor that just opened `conv` while `agent` could take it at once:
/// `queued`, then `assigned`, and no position in between.
pub fn expect_assigned_at_once(visitor: &mut Client, conv: &str, agent: Value) {
    assert_eq!(without_ts(visitor.recv()), queued(conv, 2));
    assert_eq!(without_ts(visitor.recv()), assigned(conv, 3, agent));
}

/// Reads `queue` frames of `conv` (and nothing else) until `at` arrives.
pub fn expect_position(c: &mut Client, conv: &str, at: u32) {
    loop {
        let v = c.recv();
        assert_eq!(
            (&v["type"], &v["conv"]),
            (&json!("queue"), &json!(conv)),
            "waiting for position {at} of {conv}, got {v}"
        );
        if v["position"] == at {
            return;
        }
    }
}

/// Asserts nothing at all arrives within [`QUIET`].
pub fn expect_quiet(c: &mut Client, who: &str) {
    if let Some(v) = c.try_recv(QUIET) {
        panic!("{who} should receive nothing, got {v}");
    }
}

/// The whole log of `conv` as a newly assigned agent receives it: `n`
/// entries, seq 1 to `n`, in order. Returns them without `ts`.
pub fn expect_log(agent: &mut Client, conv: &str, n: u64) -> Vec<Value> {
    (1..=n)
        .map(|seq| {
            let e = next_entry(agent);
            assert_eq!(
                (&e["conv"], &e["seq"]),
                (&json!(conv), &json!(seq)),
                "expected entry {seq} of {conv}, got {e}"
            );
            e
        })
        .collect()
}

/// The whole log of a conversation its agent just received by routing: the
/// visitor's first message, `queued`, and `assigned` naming `agent` last.
pub fn expect_new_assignment(
    a: &mut Client,
    conv: &str,
    visitor_id: &str,
    first: (&str, &str),
    agent: Value,
) {
    let log = expect_log(a, conv, 3);
    assert_eq!(
        log,
        vec![
            chat(
                conv,
                1,
                first.0,
                json!({"role": "visitor", "id": visitor_id}),
                first.1
            ),
            queued(conv, 2),
            assigned(conv, 3, agent),
        ]
    );
}

/// Sends an agent command and expects `{"type":"status",...}` back.
pub fn set_status(a: &mut Client, status: &str) {
    a.send(json!({"type": "status", "status": status}));
    assert_eq!(a.recv(), json!({"type": "status", "status": status}));
}

/// Closes `conv` from `c` (no ack: the `closed` entry is the answer).
pub fn close(c: &mut Client, conv: &str) {
    c.send(json!({"type": "close", "conv": conv}));
}

/// The next frame must be an `error` with `code` (and `ref` if given).
pub fn expect_error(c: &mut Client, code: &str, reference: Option<&str>) {
    let v = c.recv();
    assert_eq!(v["type"], "error", "expected an error {code}, got {v}");
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v.get("ref").and_then(Value::as_str), reference, "{v}");
    assert!(v["message"].is_string(), "{v}");
}

/// The next `n` entries (queue positions skipped), split by conversation,
/// each conversation's in arrival order: for a client that receives entries
/// of several conversations whose interleaving is not specified.
pub fn entries_by_conv(c: &mut Client, n: usize) -> std::collections::BTreeMap<String, Vec<Value>> {
    let mut by_conv = std::collections::BTreeMap::<String, Vec<Value>>::new();
    for _ in 0..n {
        let e = next_entry(c);
        let conv = e["conv"]
            .as_str()
            .expect("entry names its conv")
            .to_string();
        by_conv.entry(conv).or_default().push(e);
    }
    by_conv
}

/// A visitor whose conversation went back to the queue: the `queued` entry
/// `seq` and the position `at`, in either order (the position comes from
/// routing at once, the entry once it is durable).
pub fn expect_requeued(visitor: &mut Client, conv: &str, seq: u64, at: u32) {
    let mut seen = [visitor.recv(), visitor.recv()];
    seen.sort_by_key(|v| v["type"].as_str().unwrap_or_default().to_string());
    let [entry, queue] = seen;
    assert_eq!(queue, position(conv, at), "with {entry}");
    assert_eq!(entry["type"], "msg", "{entry}");
    assert_eq!(without_ts(entry), queued(conv, seq));
}
