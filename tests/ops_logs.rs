//! Operations: logs.
//!
//! `--log-format json` writes one JSON object per line on stderr, and no
//! log line, at any level, carries a message text, a token or a secret.

mod common;

use std::time::Duration;

use common::wire::{claims, jwt};
use common::{Gateway, Options};
use jsonwebtoken::Algorithm::HS256;
use serde_json::{json, Value};

/// Distinctive texts, to look for in the logs.
const VISITOR_TEXT: &str = "zebra-parasol-7731 where is my order";
const AGENT_TEXT: &str = "quokka-lantern-4410 it ships today";

/// Secrets a log line must never carry.
struct Secrets {
    texts: Vec<String>,
    tokens: Vec<String>,
    keys: Vec<String>,
}

/// A chat at `RUST_LOG=trace`: an agent and a visitor exchange messages,
/// someone hellos with a forged token, a message is resent; then the
/// gateway drains. Returns every stderr line and what must not be in them.
fn chat_and_collect(format: &str) -> (Vec<String>, Secrets) {
    let mut gw = Gateway::start(
        Options::shards(2)
            .arg("--log-format")
            .arg(format)
            .arg("--drain-timeout")
            .arg("3s")
            .env("RUST_LOG", "trace"),
    );
    let secret = String::from_utf8(gw.demo_secret()).unwrap();
    let agent_token = gw.agent_token("alice", &["--name", "Alice"]);
    let (mut agent, _) = gw.login(&agent_token);
    let (mut visitor, welcome) = gw.anonymous("demo");
    let visitor_token = welcome["token"].as_str().unwrap().to_owned();

    let ack = visitor.say("v-1", None, VISITOR_TEXT);
    let conv = ack["conv"].as_str().unwrap().to_owned();
    agent.recv_until(|v| v["text"] == VISITOR_TEXT);
    agent.say("a-1", Some(&conv), AGENT_TEXT);
    visitor.recv_until(|v| v["text"] == AGENT_TEXT);
    // A resend (dedupe path) and a text over the limit (error path).
    visitor.say("v-1", None, VISITOR_TEXT);
    visitor.send(
        json!({"type": "msg", "id": "v-2", "text": format!("{VISITOR_TEXT} {}", "x".repeat(5000))}),
    );
    visitor.recv_until(|v| v["type"] == "error");
    // A token with a bad signature, and one for an unknown tenant.
    let forged = jwt(
        HS256,
        b"not-the-secret-0123456789abcdef",
        &claims("demo", "mallory", "agent"),
    );
    let foreign = jwt(
        HS256,
        secret.as_bytes(),
        &claims("nobody", "mallory", "agent"),
    );
    for token in [&forged, &foreign] {
        let mut c = gw.connect();
        c.send(json!({"type": "hello", "token": token}));
        assert_eq!(c.expect_close(), 4401);
    }
    // History and sync read the texts back from the store.
    visitor.send(json!({"type": "history", "conv": conv, "ref": "h"}));
    visitor.recv_until(|v| v["type"] == "history");

    let status = gw.terminate(Duration::from_secs(15));
    assert!(status.success());
    let lines = gw.stderr_to_end(Duration::from_secs(10));
    (
        lines,
        Secrets {
            texts: vec![VISITOR_TEXT.into(), AGENT_TEXT.into()],
            tokens: vec![agent_token, visitor_token, forged, foreign],
            keys: vec![secret],
        },
    )
}

fn assert_nothing_leaks(lines: &[String], secrets: &Secrets) {
    // Tokens are checked whole and by their signature part, which is what
    // identifies them even if a log cut or re-encoded the rest.
    let mut needles: Vec<(&str, &str)> = Vec::new();
    for t in &secrets.texts {
        needles.push(("a message text", t.as_str()));
        needles.push(("a message text", t.split(' ').next().unwrap()));
    }
    for t in &secrets.tokens {
        needles.push(("a token", t.as_str()));
        needles.push(("a token's signature", t.rsplit('.').next().unwrap()));
        needles.push(("a token's payload", t.split('.').nth(1).unwrap()));
    }
    for k in &secrets.keys {
        needles.push(("a tenant secret", k.as_str()));
    }
    for line in lines {
        for (what, needle) in &needles {
            assert!(!line.contains(needle), "{what} in the log: {line}");
        }
    }
}

#[test]
fn json_logs_are_one_object_per_line_and_leak_nothing() {
    let (lines, secrets) = chat_and_collect("json");
    assert!(lines.len() > 20, "trace logs something: {lines:?}");
    let mut messages = Vec::new();
    for line in &lines {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {line}"));
        for key in ["timestamp", "level", "target", "fields"] {
            assert!(obj.contains_key(key), "no {key}: {line}");
        }
        if let Some(m) = v["fields"]["message"].as_str() {
            messages.push(m.to_owned());
        }
    }
    // The life of the process shows: start, ready, drain, stop.
    for expected in ["starting", "accepting connections", "draining", "stopped"] {
        assert!(
            messages.iter().any(|m| m == expected),
            "no {expected:?} in {messages:?}"
        );
    }
    assert_nothing_leaks(&lines, &secrets);
}

#[test]
fn text_logs_leak_nothing_either() {
    let (lines, secrets) = chat_and_collect("text");
    assert!(lines.len() > 20, "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("accepting connections")));
    assert_nothing_leaks(&lines, &secrets);
}
