//! PROTOCOL.md, "Session", "Transport" and the close codes: hello and
//! welcome for both roles, anonymous visitors, replay past the receipt
//! cursor on reconnection, every way a hello is refused, the WebSocket
//! close codes, and the plain HTTP answers of the main listener.
//!
//! Every test starts its own gateway. Most run one shard; the ones started
//! with `Options::shards(2)` also cross shards (connections, conversations
//! and the tenant's router may then live on different shards).

mod common;

use std::time::{Duration, Instant};

use common::wire::{self, claims, jwt, jwt_none, no_ts, now_secs, RawWs};
use common::{Client, Gateway, Options};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use tungstenite::Message;

/// Two tenants: `acme` (anonymous visitors, one allowed origin) and
/// `globex` (tokens only, any origin).
const TWO_TENANTS: &str = r#"
[[tenants]]
id = "acme"
secret = "acme-secret-0123456789abcdef0123456789"
anonymous_visitors = true
origins = ["https://shop.acme.example"]

[[tenants]]
id = "globex"
secret = "globex-secret-0123456789abcdef012345678"
anonymous_visitors = false
"#;

const ACME_SECRET: &[u8] = b"acme-secret-0123456789abcdef0123456789";

/// Sends `first` as the first text frame and returns the close code.
fn close_code_after(gw: &Gateway, first: &str) -> u16 {
    let mut c = gw.connect();
    c.send_text(first);
    c.expect_close()
}

fn hello_token_close_code(gw: &Gateway, token: &str) -> u16 {
    close_code_after(gw, &json!({"type": "hello", "token": token}).to_string())
}

/// The JSON claims of a JWT (unverified).
fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("three parts");
    let mut bits = Vec::new();
    let mut acc = 0u32;
    let mut n = 0;
    for c in payload.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => panic!("not base64url: {payload}"),
        };
        acc = (acc << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            bits.push((acc >> n) as u8);
            acc &= (1 << n) - 1;
        }
    }
    serde_json::from_slice(&bits).expect("JSON claims")
}

// ----- hello and welcome -----

#[test]
fn token_hello_welcomes_a_visitor() {
    let gw = Gateway::start(Options::default());
    let token = gw.visitor_token("ann", &["--name", "Ann"]);
    let (_c, welcome) = gw.login(&token);
    assert_eq!(
        welcome,
        json!({"type": "welcome", "role": "visitor", "id": "ann", "tenant": "demo",
               "conversations": []}),
        "no token in the welcome of a client that brought its own"
    );
}

#[test]
fn token_hello_welcomes_an_agent() {
    let gw = Gateway::start(Options::default());
    let token = gw.agent_token("alice", &["--name", "Alice"]);
    let (_c, welcome) = gw.login(&token);
    assert_eq!(
        welcome,
        json!({"type": "welcome", "role": "agent", "id": "alice", "tenant": "demo",
               "conversations": []})
    );
}

#[test]
fn hello_with_a_token_of_a_configured_tenant() {
    let gw = Gateway::start(Options::default().config(TWO_TENANTS));
    let token = gw.token(&["--role", "agent", "--sub", "gina", "--tenant", "globex"]);
    let (_c, welcome) = gw.login(&token);
    assert_eq!(
        welcome,
        json!({"type": "welcome", "role": "agent", "id": "gina", "tenant": "globex",
               "conversations": []})
    );
    // A token made here with jsonwebtoken and the configured secret works too.
    let token = jwt(
        Algorithm::HS256,
        ACME_SECRET,
        &claims("acme", "v-7", "visitor"),
    );
    let (_c, welcome) = gw.login(&token);
    assert_eq!(
        (
            welcome["role"].clone(),
            welcome["id"].clone(),
            welcome["tenant"].clone()
        ),
        (json!("visitor"), json!("v-7"), json!("acme"))
    );
}

#[test]
fn anonymous_visitor_gets_a_token_that_keeps_its_id_and_conversation() {
    let gw = Gateway::start(Options::shards(2));
    let (mut first, welcome) = gw.anonymous("demo");
    let id = welcome["id"].as_str().expect("an id").to_string();
    let token = welcome["token"].as_str().expect("a token").to_string();
    assert!(
        id.starts_with("v-") && id.len() > 2,
        "made-up visitor ids look like v-...: {id}"
    );
    assert_eq!(
        welcome,
        json!({"type": "welcome", "role": "visitor", "id": id, "tenant": "demo",
               "token": token, "conversations": []})
    );
    // The token is an HS256 JWT of the demo tenant for that visitor.
    let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp"]);
    let verified = jsonwebtoken::decode::<Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(&gw.demo_secret()),
        &validation,
    )
    .expect("the issued token verifies with the demo secret")
    .claims;
    assert_eq!(
        (
            verified["tenant"].clone(),
            verified["sub"].clone(),
            verified["role"].clone()
        ),
        (json!("demo"), json!(id), json!("visitor"))
    );
    assert!(verified["exp"].as_u64().unwrap() > now_secs() + 3600);
    assert_eq!(jwt_claims(&token), verified);

    let ack = first.say("m-1", None, "hi");
    let conv = ack["conv"].as_str().unwrap().to_string();
    assert_eq!(
        ack,
        json!({"type": "ack", "id": "m-1", "conv": conv, "seq": 1})
    );
    let queued = first.recv_type("msg");
    first.close();

    // The next connection presents the token: same id, same open conversation.
    let (mut again, welcome) = gw.login(&token);
    assert_eq!(
        welcome,
        json!({"type": "welcome", "role": "visitor", "id": id, "tenant": "demo",
               "conversations": [{"conv": conv, "state": "queued", "last_seq": 2}]})
    );
    // Nothing was received yet (no `recv`): the whole log is replayed.
    let one = again.recv_skip_queue();
    assert_eq!(
        no_ts(&one),
        json!({"type": "msg", "conv": conv, "seq": 1, "id": "m-1",
               "from": {"role": "visitor", "id": id}, "text": "hi"})
    );
    let two = again.recv_skip_queue();
    assert_eq!(two, queued, "the same seq is the same entry");
    assert_eq!(
        no_ts(&two),
        json!({"type": "msg", "conv": conv, "seq": 2, "from": {"role": "system"},
               "event": "queued"})
    );
    // A message without `conv` goes to that same open conversation.
    let ack = again.say("m-2", None, "still there?");
    assert_eq!(
        ack,
        json!({"type": "ack", "id": "m-2", "conv": conv, "seq": 3})
    );
}

#[test]
fn reconnection_replays_only_entries_past_the_receipt_cursor() {
    let gw = Gateway::start(Options::shards(2));
    let visitor_token = gw.visitor_token("ann", &["--name", "Ann"]);
    let (mut visitor, _) = gw.login(&visitor_token);
    let conv = visitor.say("m-1", None, "hello")["conv"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(visitor.recv_skip_queue()["event"], "queued");

    let agent_token = gw.agent_token("alice", &["--name", "Alice"]);
    let (mut agent, welcome) = gw.login(&agent_token);
    assert_eq!(welcome["conversations"], json!([]));
    let (assigned, before) = agent.recv_until(|v| v["event"] == "assigned");
    assert_eq!(before.len(), 2, "the log so far: {before:?}");
    assert_eq!(assigned["seq"], 3);
    assert_eq!(visitor.recv_skip_queue(), assigned);

    for (i, text) in ["one", "two", "three"].iter().enumerate() {
        let ack = agent.say(&format!("a-{i}"), Some(&conv), text);
        assert_eq!(ack["seq"], 4 + i);
    }
    let mut live = Vec::new();
    for _ in 0..3 {
        live.push(visitor.recv());
    }
    assert_eq!(
        live.iter().map(|v| v["seq"].clone()).collect::<Vec<_>>(),
        vec![json!(4), json!(5), json!(6)]
    );

    // The visitor holds up to 4; the agent up to 6.
    visitor.send(json!({"type": "recv", "conv": conv, "seq": 4}));
    agent.send(json!({"type": "recv", "conv": conv, "seq": 6}));
    // recv has no answer: a `sync` behind it on the same connection proves
    // it was handled (same path, same order).
    for c in [&mut visitor, &mut agent] {
        c.send(json!({"type": "sync", "conv": conv, "after": 6}));
        assert_eq!(
            c.recv(),
            json!({"type": "synced", "conv": conv, "last_seq": 6})
        );
    }
    visitor.close();
    agent.close();

    let (mut visitor, welcome) = gw.login(&visitor_token);
    let summary = json!({"conv": conv, "state": "assigned", "last_seq": 6,
                         "agent": {"id": "alice", "name": "Alice"}});
    assert_eq!(
        welcome,
        json!({"type": "welcome", "role": "visitor", "id": "ann", "tenant": "demo",
               "conversations": [summary]})
    );
    assert_eq!(visitor.recv(), live[1], "seq 5 first: 1..=4 were received");
    assert_eq!(visitor.recv(), live[2]);
    visitor.expect_nothing(Duration::from_millis(200));

    let (mut agent, welcome) = gw.login(&agent_token);
    assert_eq!(
        welcome,
        json!({"type": "welcome", "role": "agent", "id": "alice", "tenant": "demo",
               "conversations": [summary]})
    );
    agent.expect_nothing(Duration::from_millis(200));

    // A new entry after the reconnection arrives live, as usual.
    agent.say("a-9", Some(&conv), "back");
    assert_eq!(visitor.recv()["seq"], 7);
}

// ----- refused hellos -----

#[test]
fn malformed_first_frames_close_4400() {
    let gw = Gateway::start(Options::default());
    for first in [
        "hello",
        "[1,2]",
        "\"hello\"",
        "42",
        r#"{"type":"hello"}"#,
        r#"{"type":"hello","ref":"x"}"#,
    ] {
        assert_eq!(close_code_after(&gw, first), 4400, "first frame {first}");
    }
}

#[test]
fn first_frame_that_is_not_json_at_all_closes_4400() {
    // "A first frame that is not a JSON object": invalid JSON is not one,
    // even when it starts with a brace.
    let gw = Gateway::start(Options::default());
    for first in ["{", r#"{"type":"hello","tenant":"demo""#, "{nope}"] {
        assert_eq!(close_code_after(&gw, first), 4400, "first frame {first}");
    }
}

#[test]
fn first_frame_of_another_type_closes_4401() {
    let gw = Gateway::start(Options::default());
    for first in [
        json!({"type": "msg", "id": "m-1", "text": "hi"}),
        json!({"type": "status", "status": "away"}),
        json!({"type": "launch"}),
        json!({"token": "x"}),
    ] {
        assert_eq!(
            close_code_after(&gw, &first.to_string()),
            4401,
            "first frame {first}"
        );
    }
}

#[test]
fn bad_tokens_close_4401() {
    let gw = Gateway::start(Options::default());
    let secret = gw.demo_secret();
    // Sanity: a token built the same way with the right key is accepted.
    let good = jwt(Algorithm::HS256, &secret, &claims("demo", "alice", "agent"));
    assert_eq!(gw.login(&good).1["id"], "alice");

    let cases = [
        (
            "bad signature",
            jwt(
                Algorithm::HS256,
                b"not-the-demo-secret-0123456789abcdef",
                &claims("demo", "alice", "agent"),
            ),
        ),
        ("alg none", jwt_none(&claims("demo", "alice", "agent"))),
        (
            "HS512",
            jwt(Algorithm::HS512, &secret, &claims("demo", "alice", "agent")),
        ),
        (
            "HS384",
            jwt(Algorithm::HS384, &secret, &claims("demo", "alice", "agent")),
        ),
        (
            "expired an hour ago",
            jwt(
                Algorithm::HS256,
                &secret,
                &json!({"tenant": "demo", "sub": "alice", "role": "agent",
                        "exp": now_secs() - 3600}),
            ),
        ),
        (
            "no exp",
            jwt(
                Algorithm::HS256,
                &secret,
                &json!({"tenant": "demo", "sub": "alice", "role": "agent"}),
            ),
        ),
        (
            "unknown tenant",
            jwt(
                Algorithm::HS256,
                &secret,
                &claims("initech", "alice", "agent"),
            ),
        ),
        ("not a JWT", "garbage".to_string()),
    ];
    for (why, token) in cases {
        assert_eq!(hello_token_close_code(&gw, &token), 4401, "{why}");
    }
    // An anonymous hello for a tenant that does not exist.
    assert_eq!(
        close_code_after(&gw, r#"{"type":"hello","tenant":"initech"}"#),
        4401
    );
}

#[test]
fn tenant_without_anonymous_visitors_needs_a_token() {
    let gw = Gateway::start(Options::default().config(TWO_TENANTS));
    assert_eq!(
        close_code_after(&gw, r#"{"type":"hello","tenant":"globex"}"#),
        4401
    );
    // A token of the other tenant signed with this tenant's key: bad signature.
    let forged = jwt(
        Algorithm::HS256,
        ACME_SECRET,
        &claims("globex", "gina", "agent"),
    );
    assert_eq!(hello_token_close_code(&gw, &forged), 4401);
    // The tenant that allows anonymous visitors admits one.
    let (_c, welcome) = gw.anonymous("acme");
    assert_eq!(welcome["tenant"], "acme");
}

#[test]
fn origin_must_be_in_the_tenants_allowlist_exactly() {
    let gw = Gateway::start(Options::default().config(TWO_TENANTS));
    let hello = json!({"type": "hello", "tenant": "acme"});
    let with_origin = |origin: &str| {
        let mut c = Client::connect_with(&gw.url(), &[("Origin", origin)]);
        c.send(hello.clone());
        c
    };
    for bad in [
        "https://evil.example",
        "http://shop.acme.example",
        "https://shop.acme.example:443",
        "https://shop.acme.example.evil.example",
        "https://SHOP.acme.example",
        "https://shop.acme.exampl",
        "null",
    ] {
        assert_eq!(with_origin(bad).expect_close(), 4403, "Origin: {bad}");
    }
    let mut ok = with_origin("https://shop.acme.example");
    let welcome = ok.recv_type("welcome");
    assert_eq!(welcome["tenant"], "acme");
    // With a token, the same check applies.
    let token = gw.token(&["--role", "agent", "--sub", "al", "--tenant", "acme"]);
    let mut c = Client::connect_with(&gw.url(), &[("Origin", "https://evil.example")]);
    c.send(json!({"type": "hello", "token": token}));
    assert_eq!(c.expect_close(), 4403);
    // globex has no allowlist: any origin.
    let token = gw.token(&["--role", "agent", "--sub", "gina", "--tenant", "globex"]);
    let mut c = Client::connect_with(&gw.url(), &[("Origin", "https://evil.example")]);
    c.send(json!({"type": "hello", "token": token}));
    assert_eq!(c.recv_type("welcome")["tenant"], "globex");
}

#[test]
fn no_hello_within_the_hello_timeout_closes_4408() {
    let gw = Gateway::start(Options::default().arg("--hello-timeout").arg("300ms"));
    let started = Instant::now();
    let mut c = gw.connect();
    assert_eq!(c.expect_close(), 4408);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    // A hello in time is not affected by the timer.
    let token = gw.agent_token("alice", &[]);
    let (mut c, _) = gw.login(&token);
    c.send(json!({"type": "status", "status": "away"}));
    assert_eq!(c.recv(), json!({"type": "status", "status": "away"}));
    c.expect_nothing(Duration::from_millis(300));
}

// ----- WebSocket close codes -----

#[test]
fn binary_frame_closes_1003() {
    let gw = Gateway::start(Options::default());
    let token = gw.agent_token("alice", &[]);
    let (mut c, _) = gw.login(&token);
    c.ws.send(Message::binary(vec![1u8, 2, 3])).unwrap();
    assert_eq!(c.expect_close(), 1003);
    // Before hello too.
    let mut c = gw.connect();
    c.ws.send(Message::binary(b"{}".to_vec())).unwrap();
    assert_eq!(c.expect_close(), 1003);
}

#[test]
fn message_over_max_message_bytes_closes_1009() {
    let gw = Gateway::start(
        Options::default()
            .arg("--max-message-bytes")
            .arg("2048")
            .arg("--max-text-bytes")
            .arg("512"),
    );
    let token = gw.visitor_token("ann", &[]);
    let (mut c, _) = gw.login(&token);
    // Under both limits: stored.
    let ack = c.say("m-1", None, &"x".repeat(500));
    assert_eq!(ack["seq"], 1);
    // Over the text limit, under the message limit: an error, not a close.
    let frame = json!({"type": "msg", "id": "m-2", "text": "x".repeat(1900)}).to_string();
    assert!(frame.len() <= 2048);
    c.send_text(&frame);
    let (e, _) = c.recv_until(|v| v["type"] == "error");
    wire::assert_error(&e, "too_large", Some("m-2"));
    // Over the message limit: closed with 1009, whatever the frame holds.
    let frame = json!({"type": "msg", "id": "m-3", "text": "x".repeat(2100)}).to_string();
    c.send_text(&frame);
    let (_, code) = c.recv_until_close();
    assert_eq!(code, 1009);
    // Before hello as well.
    let mut c = gw.connect();
    c.send_text(&" ".repeat(3000));
    assert_eq!(c.expect_close(), 1009);
}

#[test]
fn invalid_utf8_text_closes_1007() {
    let gw = Gateway::start(Options::default());
    let mut raw = RawWs::connect(gw.addr);
    raw.send_frame(
        wire::op::TEXT,
        b"{\"type\":\"hello\",\"tenant\":\"\xff\xfe\"}",
    );
    assert_eq!(raw.expect_close(), 1007);
    // After hello as well.
    let mut raw = RawWs::connect(gw.addr);
    raw.send(json!({"type": "hello", "tenant": "demo"}));
    assert_eq!(raw.recv()["type"], "welcome");
    raw.send_frame(wire::op::TEXT, b"\xc3\x28");
    assert_eq!(raw.expect_close(), 1007);
}

#[test]
fn unmasked_client_frame_closes_1002() {
    let gw = Gateway::start(Options::default());
    let mut raw = RawWs::connect(gw.addr);
    let hello = json!({"type": "hello", "tenant": "demo"}).to_string();
    raw.send_raw(0x80 | wire::op::TEXT, hello.as_bytes(), false);
    assert_eq!(raw.expect_close(), 1002);
}

#[test]
fn reserved_opcode_and_reserved_bits_close_1002() {
    let gw = Gateway::start(Options::default());
    for (why, first) in [
        ("reserved data opcode 3", 0x83u8),
        ("reserved control opcode 0xB", 0x8B),
        ("RSV1 without an extension", 0xC1),
        ("continuation with no message", 0x80),
    ] {
        let mut raw = RawWs::connect(gw.addr);
        raw.send(json!({"type": "hello", "tenant": "demo"}));
        assert_eq!(raw.recv()["type"], "welcome");
        raw.send_raw(first, b"{}", true);
        assert_eq!(raw.expect_close(), 1002, "{why}");
    }
}

#[test]
fn fragmented_messages_are_reassembled_and_their_total_size_counts() {
    let gw = Gateway::start(
        Options::default()
            .arg("--max-message-bytes")
            .arg("1024")
            .arg("--max-text-bytes")
            .arg("512"),
    );
    let mut raw = RawWs::connect(gw.addr);
    // A hello in two fragments.
    raw.send_raw(wire::op::TEXT, br#"{"type":"hello","#, true);
    raw.send_raw(0x80 | wire::op::CONT, br#""tenant":"demo"}"#, true);
    assert_eq!(raw.recv()["type"], "welcome");
    // A message in three fragments, a ping between them, and a UTF-8
    // character cut between two fragments.
    let text = json!({"type": "msg", "id": "m-1", "text": "caf\u{e9} \u{1F600}"}).to_string();
    let bytes = text.as_bytes();
    let cut = text.find('\u{e9}').unwrap() + 1;
    raw.send_raw(wire::op::TEXT, &bytes[..cut], true);
    raw.send_frame(wire::op::PING, b"p");
    raw.send_raw(wire::op::CONT, &bytes[cut..cut + 3], true);
    raw.send_raw(0x80 | wire::op::CONT, &bytes[cut + 3..], true);
    let pong = raw.read_frame();
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (wire::op::PONG, &b"p"[..])
    );
    let ack = raw.recv();
    assert_eq!(
        (ack["type"].clone(), ack["seq"].clone()),
        (json!("ack"), json!(1))
    );
    raw.send(json!({"type": "sync", "conv": ack["conv"], "after": 0}));
    let first = loop {
        let v = raw.recv();
        if v["seq"] == 1 {
            break v;
        }
    };
    assert_eq!(first["text"], "caf\u{e9} \u{1F600}");
    // Fragments each under the limit, together over it: 1009.
    let chunk = vec![b' '; 600];
    raw.send_raw(wire::op::TEXT, &chunk, true);
    raw.send_raw(0x80 | wire::op::CONT, &chunk, true);
    let (code, _) = loop {
        let f = raw.read_frame();
        if f.opcode == wire::op::CLOSE {
            break (f.close_code(), f);
        }
    };
    assert_eq!(code, 1009);
}

#[test]
fn ping_is_answered_with_pong_and_close_is_echoed() {
    let gw = Gateway::start(Options::default());
    let mut raw = RawWs::connect(gw.addr);
    raw.send_frame(wire::op::PING, b"are you there");
    let pong = raw.read_frame();
    assert_eq!(
        (pong.fin, pong.opcode, pong.payload.as_slice()),
        (true, wire::op::PONG, &b"are you there"[..])
    );
    raw.send_frame(wire::op::CLOSE, &1000u16.to_be_bytes());
    let close = raw.read_frame();
    assert_eq!(close.close_code(), 1000);
    assert_eq!(raw.try_read_frame(), None, "then the socket closes");
}

#[test]
fn sigterm_closes_connections_1001() {
    let mut gw = Gateway::start(Options::default());
    let token = gw.agent_token("alice", &[]);
    let (mut agent, _) = gw.login(&token);
    let mut pending = gw.connect();
    std::thread::scope(|s| {
        let waiter = s.spawn(move || (agent.expect_close(), pending.expect_close()));
        let status = gw.terminate(Duration::from_secs(15));
        assert!(status.success(), "exit status {status}");
        assert_eq!(waiter.join().unwrap(), (1001, 1001));
    });
}

// ----- HTTP on the main listener -----

#[test]
fn health_answers_200_ok() {
    let gw = Gateway::start(Options::default());
    let (status, head, body) = wire::http_request(
        gw.addr,
        "GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
}

#[test]
fn unknown_path_is_404() {
    let gw = Gateway::start(Options::default());
    assert_eq!(Gateway::http_get(gw.addr, "/nope").0, 404);
    assert_eq!(Gateway::http_get(gw.addr, "/v2/ws").0, 404);
    assert_eq!(
        Gateway::http_get(gw.addr, "/metrics").0,
        404,
        "metrics is admin only"
    );
}

#[test]
fn ws_path_without_upgrade_is_400() {
    let gw = Gateway::start(Options::default());
    assert_eq!(Gateway::http_get(gw.addr, "/v1/ws").0, 400);
}

#[test]
fn unsupported_websocket_version_is_426() {
    let gw = Gateway::start(Options::default());
    let (status, head, _) = wire::http_request(
        gw.addr,
        &format!(
            "GET /v1/ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 8\r\n\r\n",
            wire::WS_KEY
        ),
    );
    assert_eq!(status, 426);
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "426 names the supported version: {head}"
    );
}
