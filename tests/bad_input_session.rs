//! The bad-input suite, session level, over raw TCP: hostile handshakes
//! (oversize, slowloris, half-open), hostile tokens, another tenant's ids,
//! JSON bombs, duplicate message ids, and a storm of garbage connections.
//! Each case gets the close code or error PROTOCOL.md documents, and
//! throughout, a normal visitor↔agent chat on other connections goes on
//! unaffected (an exchange before and after each burst, or in a parallel
//! thread) and the gateway stays healthy (`/health`, no connection
//! panicked). The WebSocket layer's cases (Autobahn's categories) are in
//! `bad_input.rs`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::hostile::{
    assert_healthy, close_after, http_status, raw_visitor, read_to_end_or_reset, tcp, write_lossy,
    Chat, Rng, StopOnDrop,
};
use common::wire::{self, assert_error, b64url, claims, jwt, jwt_none, masked_frame, now_secs};
use common::wire::{RawWs, WS_KEY};
use common::{Gateway, Options};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

/// Three tenants: `demo` (the chat kept going beside the tests), `acme`
/// and `globex`, all with anonymous visitors.
const TENANTS: &str = r#"
[[tenants]]
id = "demo"
secret = "demo-secret-0123456789abcdef0123456789ab"
anonymous_visitors = true

[[tenants]]
id = "acme"
secret = "acme-secret-0123456789abcdef0123456789"
anonymous_visitors = true

[[tenants]]
id = "globex"
secret = "globex-secret-0123456789abcdef012345678"
anonymous_visitors = true
"#;

const DEMO_SECRET: &[u8] = b"demo-secret-0123456789abcdef0123456789ab";
const ACME_SECRET: &[u8] = b"acme-secret-0123456789abcdef0123456789";
const GLOBEX_SECRET: &[u8] = b"globex-secret-0123456789abcdef012345678";

/// A gateway and a normal chat on it, already talking.
fn gateway(options: Options) -> (Gateway, Chat) {
    let gw = Gateway::start(options);
    let chat = Chat::open(&gw);
    (gw, chat)
}

/// After a burst: the chat still works and the gateway is healthy.
#[track_caller]
fn still_fine(gw: &Gateway, chat: &mut Chat) {
    chat.exchange();
    assert_healthy(gw);
}

/// An upgrade request with extra header lines.
fn upgrade_request(extra: &str) -> String {
    format!(
        "GET /v1/ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Writes `request` (whatever of it the gateway takes) and reads the
/// answer's head: its status, if any, and how long it took.
fn answer_to(addr: SocketAddr, request: &[u8]) -> (Option<u16>, Duration) {
    let started = Instant::now();
    let mut s = tcp(addr);
    write_lossy(&mut s, request);
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
    (http_status(&got), started.elapsed())
}

// ----- Oversize handshakes: 431 -----

#[test]
fn oversize_handshakes_get_431_at_once() {
    let (gw, mut chat) = gateway(Options::default());
    let limit = 8192; // --max-handshake-bytes default
    let base = upgrade_request("X-Pad: \r\n").len();
    // Exactly the limit: accepted. One byte more: 431.
    let fits = upgrade_request(&format!("X-Pad: {}\r\n", "p".repeat(limit - base)));
    assert_eq!(fits.len(), limit);
    assert_eq!(answer_to(gw.addr, fits.as_bytes()).0, Some(101));
    let over = upgrade_request(&format!("X-Pad: {}\r\n", "p".repeat(limit + 1 - base)));
    assert_eq!(answer_to(gw.addr, over.as_bytes()).0, Some(431));
    // 64 header lines pass, 65 are too many (431), however short.
    let lines = |n: usize| {
        (0..n)
            .map(|i| format!("X-{i}: {i}\r\n"))
            .collect::<String>()
    };
    assert_eq!(
        answer_to(gw.addr, upgrade_request(&lines(64 - 5)).as_bytes()).0,
        Some(101)
    );
    assert_eq!(
        answer_to(gw.addr, upgrade_request(&lines(65 - 5)).as_bytes()).0,
        Some(431)
    );
    // A megabyte of head, in one write: 431 once the limit is read, not
    // after the rest (or the timeout); the gateway reads no further.
    let huge = upgrade_request(&format!("X-Pad: {}\r\n", "p".repeat(1 << 20)));
    let (status, took) = answer_to(gw.addr, huge.as_bytes());
    assert!(
        status == Some(431) || status.is_none(),
        "431 or a reset: {status:?}"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    // A head that never ends, sent a kilobyte at a time: 431 as soon as
    // the limit is reached.
    let mut s = tcp(gw.addr);
    let started = Instant::now();
    s.write_all(b"GET /v1/ws HTTP/1.1\r\nX-Endless: ").unwrap();
    let mut answer = Vec::new();
    for _ in 0..16 {
        if !write_lossy(&mut s, &[b'e'; 1024]) {
            break;
        }
    }
    let (got, ended) = read_to_end_or_reset(&mut s);
    answer.extend(got);
    assert!(ended);
    assert!(
        http_status(&answer).is_none_or(|status| status == 431),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    still_fine(&gw, &mut chat);
}

// ----- Slowloris and half-open handshakes: 408 at the handshake timeout -----

#[test]
fn slowloris_handshakes_are_cut_at_the_handshake_timeout() {
    let (gw, mut chat) = gateway(Options::default().arg("--handshake-timeout").arg("500ms"));
    let request = upgrade_request("");
    // Twenty clients trickle a valid upgrade request, a byte every 40 ms:
    // the whole would take about 6 s. The timeout is for the whole head,
    // not between bytes: each is answered 408 and dropped after about
    // 500 ms, while it is still sending.
    let results = std::thread::scope(|s| {
        let clients: Vec<_> = (0..20)
            .map(|_| {
                let request = request.as_bytes();
                let addr = gw.addr;
                s.spawn(move || slowloris(addr, request, Duration::from_millis(40)))
            })
            .collect();
        // Meanwhile: the chat goes on, and new clients connect and say hello.
        chat.exchange();
        let (mut fresh, welcome) = gw.anonymous("demo");
        assert_eq!(welcome["type"], "welcome");
        fresh.say("fresh-1", None, "hello during a slowloris");
        chat.exchange();
        clients
            .into_iter()
            .map(|c| c.join().unwrap())
            .collect::<Vec<_>>()
    });
    for (status, took, sent) in results {
        assert!(
            matches!(status, Some(408) | None),
            "408 or a reset, got {status:?}"
        );
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(3),
            "dropped after {took:?}"
        );
        assert!(sent < request.len(), "dropped before it finished sending");
    }
    still_fine(&gw, &mut chat);
}

/// Sends `request` a byte at a time, `pace` apart, until the gateway ends
/// the connection. Returns the status it answered (if it was readable), how
/// long after connecting the connection ended, and how many bytes went out.
fn slowloris(addr: SocketAddr, request: &[u8], pace: Duration) -> (Option<u16>, Duration, usize) {
    let started = Instant::now();
    let mut writer = tcp(addr);
    let mut reader = writer.try_clone().unwrap();
    let ended = AtomicBool::new(false);
    std::thread::scope(|s| {
        let reading = s.spawn(|| {
            let (got, _) = read_to_end_or_reset(&mut reader);
            let took = started.elapsed();
            ended.store(true, Ordering::SeqCst);
            (http_status(&got), took)
        });
        let mut sent = 0;
        for byte in request {
            if ended.load(Ordering::SeqCst) || writer.write_all(&[*byte]).is_err() {
                break;
            }
            sent += 1;
            // The pacing is this test's subject, not synchronisation.
            std::thread::sleep(pace);
        }
        let (status, took) = reading.join().unwrap();
        (status, took, sent)
    })
}

#[test]
fn half_open_connections_are_dropped_at_the_handshake_timeout() {
    let (gw, mut chat) = gateway(Options::default().arg("--handshake-timeout").arg("500ms"));
    let started = Instant::now();
    // Fifty that connect and send nothing; ten that send part of a head.
    let mut silent: Vec<TcpStream> = (0..50).map(|_| tcp(gw.addr)).collect();
    let mut partial: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut s = tcp(gw.addr);
            s.write_all(b"GET /v1/ws HTTP/1.1\r\nHost: t\r\n").unwrap();
            s
        })
        .collect();
    chat.exchange();
    for s in silent.iter_mut().chain(partial.iter_mut()) {
        let (got, ended) = read_to_end_or_reset(s);
        assert!(ended, "still open");
        assert_eq!(
            http_status(&got),
            Some(408),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(
        common::sum_metric(
            &gw.metrics(),
            "kefu_handshake_failures_total{shard=\"0\",reason=\"timeout\"}"
        ) >= 60.0
    );
    still_fine(&gw, &mut chat);
}

// ----- Hostile tokens: 4401 -----

/// A token with this header and these claims, signed HS256 with `secret`
/// whatever the header says (the algorithm-confusion shape).
fn token_with_header(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(secret),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{message}.{signature}")
}

/// Says hello with `token` on a new connection; returns the close code,
/// or 0 if a welcome came instead.
fn hello_outcome(gw: &Gateway, hello: Value) -> u16 {
    let mut c = gw.connect();
    c.send(hello);
    match c.ws.read() {
        Ok(tungstenite::Message::Text(text)) => {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["type"], "welcome", "{v}");
            0
        }
        Ok(tungstenite::Message::Close(Some(frame))) => u16::from(frame.code),
        other => panic!("neither a welcome nor a close: {other:?}"),
    }
}

#[test]
fn hostile_tokens_close_4401() {
    let (gw, mut chat) = gateway(Options::default().config(TENANTS));
    let acme = |sub: &str| claims("acme", sub, "agent");
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});
    let good = jwt(Algorithm::HS256, ACME_SECRET, &acme("al"));
    assert_eq!(
        hello_outcome(&gw, json!({"type": "hello", "token": good})),
        0
    );
    let (header, payload, signature) = {
        let mut parts = good.split('.');
        (
            parts.next().unwrap().to_string(),
            parts.next().unwrap().to_string(),
            parts.next().unwrap().to_string(),
        )
    };
    let now = now_secs();
    let cases: Vec<(&str, String)> = vec![
        // alg none in every spelling, with and without a signature.
        ("alg none", jwt_none(&acme("al"))),
        (
            "alg None",
            format!("{}.{payload}.", b64url(br#"{"alg":"None"}"#)),
        ),
        (
            "alg NONE with a signature",
            format!("{}.{payload}.{signature}", b64url(br#"{"alg":"NONE"}"#)),
        ),
        (
            "alg nOnE",
            format!("{}.{payload}.", b64url(br#"{"alg":"nOnE","typ":"JWT"}"#)),
        ),
        ("no alg", format!("{}.{payload}.{signature}", b64url(b"{}"))),
        (
            "alg not a string",
            format!("{}.{payload}.{signature}", b64url(br#"{"alg":["HS256"]}"#)),
        ),
        (
            "alg hs256 (case)",
            token_with_header(&json!({"alg": "hs256"}), &acme("al"), ACME_SECRET),
        ),
        // Other algorithms, including the HMAC-as-public-key confusion.
        ("HS512", jwt(Algorithm::HS512, ACME_SECRET, &acme("al"))),
        ("HS384", jwt(Algorithm::HS384, ACME_SECRET, &acme("al"))),
        (
            "RS256 header, HMAC signature",
            token_with_header(&json!({"alg": "RS256"}), &acme("al"), ACME_SECRET),
        ),
        (
            "ES256 header, HMAC signature",
            token_with_header(&json!({"alg": "ES256"}), &acme("al"), ACME_SECRET),
        ),
        // Signatures.
        ("empty signature", format!("{header}.{payload}.")),
        (
            "truncated signature",
            format!("{header}.{payload}.{}", &signature[..20]),
        ),
        (
            "signature of another token",
            format!(
                "{header}.{payload}.{}",
                jwt(Algorithm::HS256, ACME_SECRET, &acme("bob"))
                    .rsplit('.')
                    .next()
                    .unwrap()
            ),
        ),
        // Another tenant's secret, both ways, and a tenant switched after
        // signing.
        (
            "acme claims, globex secret",
            jwt(Algorithm::HS256, GLOBEX_SECRET, &acme("al")),
        ),
        (
            "globex claims, acme secret",
            jwt(
                Algorithm::HS256,
                ACME_SECRET,
                &claims("globex", "al", "agent"),
            ),
        ),
        (
            "demo claims, acme secret",
            jwt(
                Algorithm::HS256,
                ACME_SECRET,
                &claims("demo", "al", "agent"),
            ),
        ),
        (
            "tenant changed after signing",
            format!(
                "{header}.{}.{signature}",
                b64url(claims("globex", "al", "agent").to_string().as_bytes())
            ),
        ),
        // Expiry.
        (
            "expired beyond the leeway",
            jwt(
                Algorithm::HS256,
                ACME_SECRET,
                &json!({"tenant": "acme", "sub": "al", "role": "agent", "exp": now - 60}),
            ),
        ),
        (
            "exp as a string",
            jwt(
                Algorithm::HS256,
                ACME_SECRET,
                &json!({"tenant": "acme", "sub": "al", "role": "agent", "exp": (now + 3600).to_string()}),
            ),
        ),
        (
            "not valid before an hour from now",
            jwt(
                Algorithm::HS256,
                ACME_SECRET,
                &json!({"tenant": "acme", "sub": "al", "role": "agent", "exp": now + 7200, "nbf": now + 3600}),
            ),
        ),
        // Claims.
        (
            "tenant not a string",
            jwt(
                Algorithm::HS256,
                ACME_SECRET,
                &json!({"tenant": ["acme"], "sub": "al", "role": "agent", "exp": now + 60}),
            ),
        ),
        (
            "role admin",
            jwt(
                Algorithm::HS256,
                ACME_SECRET,
                &claims("acme", "al", "admin"),
            ),
        ),
        (
            "sub with a slash",
            jwt(
                Algorithm::HS256,
                ACME_SECRET,
                &claims("acme", "a/l", "agent"),
            ),
        ),
        (
            "sub of 65 characters",
            jwt(
                Algorithm::HS256,
                ACME_SECRET,
                &claims("acme", &"a".repeat(65), "agent"),
            ),
        ),
        // Shapes.
        ("two parts", format!("{header}.{payload}")),
        ("four parts", format!("{good}.{signature}")),
        ("header not base64", format!("!!!.{payload}.{signature}")),
        (
            "payload not JSON",
            token_with_header(&hs256, &json!("just a string"), ACME_SECRET),
        ),
        ("empty", String::new()),
        (
            "60 KB of token",
            format!("{header}.{}.{signature}", "A".repeat(60_000)),
        ),
    ];
    for (why, token) in cases {
        let started = Instant::now();
        assert_eq!(
            hello_outcome(&gw, json!({"type": "hello", "token": token})),
            4401,
            "{why}"
        );
        assert!(started.elapsed() < Duration::from_secs(3), "{why}: slow");
    }
    // Expired within the leeway (5 s by default): accepted.
    let recent = jwt(
        Algorithm::HS256,
        ACME_SECRET,
        &json!({"tenant": "acme", "sub": "al", "role": "agent", "exp": now - 1}),
    );
    assert_eq!(
        hello_outcome(&gw, json!({"type": "hello", "token": recent})),
        0
    );
    // A token and a `tenant` naming another tenant: the token decides.
    let mut c = gw.connect();
    c.send(json!({"type": "hello", "token": good, "tenant": "globex"}));
    assert_eq!(c.recv_type("welcome")["tenant"], "acme");
    // The demo tenant's own secret still works (the chat's tokens).
    let demo = jwt(
        Algorithm::HS256,
        DEMO_SECRET,
        &claims("demo", "d", "visitor"),
    );
    assert_eq!(
        hello_outcome(&gw, json!({"type": "hello", "token": demo})),
        0
    );
    still_fine(&gw, &mut chat);
}

// ----- Another tenant's ids: not_found, and nothing crosses -----

/// `conv` written with JSON escapes (`\u0063` for `c`, `\u002d` for `-`):
/// the same string to a JSON reader, but not the same bytes.
fn escaped(conv: &str) -> String {
    conv.chars()
        .map(|c| match c {
            'c' | '-' => format!("\\u{:04x}", c as u32),
            other => other.to_string(),
        })
        .collect()
}

#[test]
fn another_tenants_ids_reach_nothing() {
    let (gw, mut chat) = gateway(Options::shards(2).config(TENANTS));
    let token = |tenant: &str, role: &str, sub: &str| {
        gw.token(&["--role", role, "--sub", sub, "--tenant", tenant])
    };
    // acme: alice serves ann.
    let (mut alice, _) = gw.login(&token("acme", "agent", "alice"));
    let (mut ann, _) = gw.login(&token("acme", "visitor", "ann"));
    let first = ann.say("m-1", None, "acme's first message");
    let conv = first["conv"].as_str().unwrap().to_string();
    alice.recv_until(|v| v["event"] == "assigned");
    ann.recv_until(|v| v["event"] == "assigned");
    // globex: bob, and a visitor with the same id as acme's ann.
    let (mut bob, _) = gw.login(&token("globex", "agent", "bob"));
    let (mut gann, _) = gw.login(&token("globex", "visitor", "ann"));

    // The same visitor id and the same message id in globex: a message of
    // its own, in a conversation of its own (dedupe is per tenant).
    let own = gann.say("m-1", None, "globex's first message");
    assert_ne!(own["conv"], first["conv"], "{own}");
    assert_eq!(own["seq"], 1);
    // Acme's conversation id, plain and JSON-escaped, on every
    // conversation-scoped frame from globex: not_found.
    for conv_json in [json!(conv).to_string(), format!("\"{}\"", escaped(&conv))] {
        for c in [&mut gann, &mut bob] {
            let frames = [
                (
                    format!(r#"{{"type":"msg","id":"x-1","conv":{conv_json},"text":"in?"}}"#),
                    Some("x-1"),
                ),
                (
                    format!(r#"{{"type":"history","conv":{conv_json},"ref":"h-1"}}"#),
                    Some("h-1"),
                ),
                (format!(r#"{{"type":"sync","conv":{conv_json}}}"#), None),
                (
                    format!(r#"{{"type":"recv","conv":{conv_json},"seq":1}}"#),
                    None,
                ),
                (
                    format!(r#"{{"type":"typing","conv":{conv_json},"on":true}}"#),
                    None,
                ),
                (
                    format!(r#"{{"type":"read","conv":{conv_json},"seq":1}}"#),
                    None,
                ),
                (format!(r#"{{"type":"close","conv":{conv_json}}}"#), None),
            ];
            for (frame, reference) in frames {
                c.send_text(&frame);
                let (e, _) = c.recv_until(|v| v["type"] == "error");
                assert_error(&e, "not_found", reference);
            }
        }
        bob.send_text(&format!(
            r#"{{"type":"transfer","conv":{conv_json},"to":"bob"}}"#
        ));
        let (e, _) = bob.recv_until(|v| v["type"] == "error");
        assert_error(&e, "not_found", None);
    }
    // Acme's alice hands the conversation to "bob": connected, but in
    // globex: not_found, and the conversation stays hers.
    alice.send(json!({"type": "transfer", "conv": conv, "to": "bob"}));
    let (e, _) = alice.recv_until(|v| v["type"] == "error");
    assert_error(&e, "not_found", None);
    // Globex's ann closes "her" conversation: her own, not acme's.
    gann.send(json!({"type": "close"}));
    let (closed, _) = gann.recv_until(|v| v["event"] == "closed");
    assert_eq!(closed["conv"], own["conv"]);
    // Nothing reached acme's side; its conversation goes on.
    ann.expect_silence(Duration::from_millis(300));
    let next = ann.say("m-2", None, "still mine");
    assert_eq!(
        (next["conv"].as_str(), next["seq"].as_u64()),
        (Some(&*conv), Some(4))
    );
    let got = alice.recv_skip_queue();
    assert_eq!(
        (got["text"].as_str(), got["seq"].as_u64()),
        (Some("still mine"), Some(4))
    );
    // Nor globex's agent, beyond its own visitor's conversation.
    let (assigned, _) = bob.recv_until(|v| v["event"] == "closed");
    assert_eq!(assigned["conv"], own["conv"]);
    bob.expect_silence(Duration::from_millis(100));
    still_fine(&gw, &mut chat);
}

// ----- Deeply nested and huge JSON: errors, in time, the connection stays -----

#[test]
fn json_bombs_get_errors_in_time_and_the_connection_stays() {
    let (gw, mut chat) = gateway(Options::default());
    let limit = 65_536; // --max-message-bytes default
    let deep_arrays = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_objects = format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    let many_keys = |id: &str, extra: usize| {
        let mut frame = format!(r#"{{"type":"msg","id":"{id}","text":"many keys""#);
        let mut i = 0;
        while frame.len() + 20 < limit - extra {
            frame.push_str(&format!(r#","k{i}":{i}"#));
            i += 1;
        }
        frame.push('}');
        frame
    };
    let duplicate_keys = {
        let mut frame = r#"{"type":"msg","id":"dup","text":"a""#.to_string();
        while frame.len() + 20 < limit {
            frame.push_str(r#","text":"b""#);
        }
        frame.push('}');
        frame
    };
    let big_unknown_string = format!(
        r#"{{"type":"msg","id":"big-string","text":"ok","x":"{}"}}"#,
        "s".repeat(limit - 100)
    );
    let big_array = format!(
        r#"{{"type":"msg","id":"big-array","text":"ok","x":[{}0]}}"#,
        "0,".repeat((limit - 100) / 2)
    );
    let whitespace = format!(
        "{}{}{}",
        " ".repeat(30_000),
        r#"{"type":"msg","id":"spaced","text":"ok"}"#,
        "\n".repeat(30_000)
    );
    let escapes = format!(
        r#"{{"type":"msg","id":"escapes","text":"{}"}}"#,
        "\\u0041".repeat(9_000)
    );
    let cases: Vec<(&str, String, Expect)> = vec![
        (
            "10k nested arrays",
            deep_arrays.clone(),
            Err(("bad_request", None)),
        ),
        (
            "10k nested objects",
            deep_objects.clone(),
            Err(("bad_request", None)),
        ),
        // An unknown field is skipped whatever its depth (without
        // recursion): the message itself is fine.
        (
            "10k nested arrays in an unknown field",
            format!(r#"{{"type":"msg","id":"deep","text":"x","x":{deep_arrays}}}"#),
            Ok("deep"),
        ),
        (
            "10k nested objects in an unknown field",
            format!(r#"{{"type":"msg","id":"deep2","text":"x","x":{deep_objects}}}"#),
            Ok("deep2"),
        ),
        // Where a string is expected: bad_request, with the frame's id.
        (
            "10k nested objects as the text",
            format!(r#"{{"type":"msg","id":"deep3","text":{deep_objects}}}"#),
            Err(("bad_request", Some("deep3"))),
        ),
        (
            "10k nested arrays as the conv",
            format!(r#"{{"type":"msg","id":"deep4","text":"x","conv":{deep_arrays}}}"#),
            Err(("bad_request", Some("deep4"))),
        ),
        (
            "duplicate keys to the limit",
            duplicate_keys,
            Err(("bad_request", Some("dup"))),
        ),
        (
            "a text of 9000 escapes (over 4096 bytes)",
            escapes,
            Err(("too_large", Some("escapes"))),
        ),
        (
            "a text of 64 KiB",
            msg_near_limit(limit),
            Err(("too_large", Some("near-limit"))),
        ),
        (
            "thousands of unknown keys",
            many_keys("many-keys", 0),
            Ok("many-keys"),
        ),
        (
            "a 64 KiB unknown string",
            big_unknown_string,
            Ok("big-string"),
        ),
        ("a 32k-element unknown array", big_array, Ok("big-array")),
        ("60 KB of whitespace", whitespace, Ok("spaced")),
    ];
    let mut raw = raw_visitor(&gw);
    // The chat keeps going in parallel; every round must stay quick.
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let talking = s.spawn(|| chat.talk_until(&stop));
        let stopper = StopOnDrop(&stop);
        for (why, frame, expected) in &cases {
            assert!(frame.len() <= limit, "{why}: {} bytes", frame.len());
            let started = Instant::now();
            raw.send_text(frame);
            // The answer: an ack or an error (the conversation's own
            // entries and queue positions may come between).
            let v = loop {
                let f = raw.read_frame();
                if f.opcode == wire::op::TEXT {
                    let v = f.json();
                    if v["type"] == "ack" || v["type"] == "error" {
                        break v;
                    }
                }
            };
            let took = started.elapsed();
            assert!(
                took < Duration::from_secs(2),
                "{why}: answered after {took:?}"
            );
            match expected {
                Ok(id) => assert_eq!(
                    (&v["type"], &v["id"]),
                    (&json!("ack"), &json!(id)),
                    "{why}: {v}"
                ),
                Err((code, reference)) => {
                    assert_eq!(v["type"], "error", "{why}: {v}");
                    assert_error(&v, code, *reference);
                }
            }
        }
        drop(stopper);
        let (rounds, slowest) = talking.join().unwrap();
        assert!(
            slowest < Duration::from_secs(2),
            "a chat round took {slowest:?} ({rounds} rounds)"
        );
    });
    // Still the same session.
    raw.send(json!({"type": "msg", "id": "after", "text": "still here"}));
    let ack = loop {
        let v = raw.recv();
        if v["type"] == "ack" {
            break v;
        }
    };
    assert_eq!(ack["id"], "after");
    // Before hello: a 10k-level first frame is not a JSON object (4400);
    // a 10k-level hello is malformed (4400); a hello with 10k levels in an
    // unknown field is a hello.
    let mut first = RawWs::connect(gw.addr);
    first.send_text(&deep_arrays);
    assert_eq!(close_after(&mut first).1, 4400);
    let mut first = RawWs::connect(gw.addr);
    first.send_text(&format!(r#"{{"type":"hello","tenant":{deep_objects}}}"#));
    assert_eq!(close_after(&mut first).1, 4400);
    let mut first = RawWs::connect(gw.addr);
    first.send_text(&format!(
        r#"{{"type":"hello","tenant":"demo","x":{deep_arrays}}}"#
    ));
    assert_eq!(first.recv()["type"], "welcome");
    still_fine(&gw, &mut chat);
}

/// What a JSON bomb gets: `Ok(id)`, the ack of that message, or
/// `Err((code, ref))`, that error.
type Expect = Result<&'static str, (&'static str, Option<&'static str>)>;

/// A msg frame of exactly `limit` bytes whose text is far over 4096.
fn msg_near_limit(limit: usize) -> String {
    common::hostile::msg_of_len("near-limit", limit)
}

// ----- Duplicate ids with different texts: the original ack, the first text -----

#[test]
fn duplicate_ids_with_different_texts_keep_the_first() {
    let (gw, mut chat) = gateway(Options::shards(2));
    let token = gw.visitor_token("dana", &[]);
    let (mut phone, _) = gw.login(&token);
    let original = phone.say("d-1", None, "the first text");
    let conv = original["conv"].as_str().unwrap().to_string();
    // Again from the same connection, then from another device, with
    // other texts, with and without conv: the original ack each time.
    assert_eq!(phone.say("d-1", None, "second text"), original);
    let (mut laptop, _) = gw.login(&token);
    assert_eq!(laptop.say("d-1", Some(&conv), "third text"), original);
    assert_eq!(laptop.say("d-1", None, "fourth text"), original);
    // Two sends of a new id in one write, before either is durable: one
    // entry, the same ack twice.
    let a = json!({"type": "msg", "id": "d-2", "text": "racing A"}).to_string();
    let b = json!({"type": "msg", "id": "d-2", "text": "racing B"}).to_string();
    let mut raw = RawWs::connect(gw.addr);
    raw.send(json!({"type": "hello", "token": token}));
    let mut both = masked_frame(0x81, a.as_bytes());
    both.extend(masked_frame(0x81, b.as_bytes()));
    raw.stream.write_all(&both).unwrap();
    let mut acks = Vec::new();
    while acks.len() < 2 {
        let v = raw.recv();
        if v["type"] == "ack" {
            acks.push(v);
        }
    }
    assert_eq!(acks[0], acks[1]);
    // The log holds each id once, with its first text: by sync and by
    // history, for the visitor and for the agent who later serves it.
    let expected = vec![
        ("d-1".to_string(), "the first text".to_string()),
        ("d-2".to_string(), "racing A".to_string()),
    ];
    phone.send(json!({"type": "sync", "conv": conv, "after": 0}));
    let (_, entries) = phone.recv_until(|v| v["type"] == "synced");
    assert_eq!(chat_texts(&entries), expected);
    phone.send(json!({"type": "history", "conv": conv, "ref": "h"}));
    let (history, _) = phone.recv_until(|v| v["type"] == "history");
    assert_eq!(
        chat_texts(history["messages"].as_array().unwrap()),
        expected
    );
    still_fine(&gw, &mut chat);
}

/// The (id, text) of the chat entries among `frames`, once per seq.
fn chat_texts(frames: &[Value]) -> Vec<(String, String)> {
    let mut seen = std::collections::BTreeMap::new();
    for v in frames {
        if v["type"] == "msg" && v["text"].is_string() {
            seen.insert(
                v["seq"].as_u64().unwrap(),
                (
                    v["id"].as_str().unwrap().to_string(),
                    v["text"].as_str().unwrap().to_string(),
                ),
            );
        }
    }
    seen.into_values().collect()
}

#[test]
fn a_duplicate_id_after_a_restart_gets_the_original_ack() {
    let mut gw = Gateway::start(Options::default());
    let token = gw.visitor_token("dana", &[]);
    let (mut c, _) = gw.login(&token);
    let original = c.say("d-1", None, "before the restart");
    drop(c);
    gw.kill9();
    gw.restart(Options::default());
    let (mut c, _) = gw.login(&token);
    assert_eq!(c.say("d-1", None, "after the restart"), original);
    let conv = original["conv"].as_str().unwrap();
    c.send(json!({"type": "sync", "conv": conv, "after": 0}));
    let (_, entries) = c.recv_until(|v| v["type"] == "synced");
    assert_eq!(
        chat_texts(&entries),
        [("d-1".to_string(), "before the restart".to_string())]
    );
    assert_healthy(&gw);
}

// ----- A storm of garbage connections beside a normal chat -----

#[test]
fn a_storm_of_garbage_connections_leaves_the_chat_unaffected() {
    let (gw, mut chat) = gateway(
        Options::shards(2)
            .arg("--handshake-timeout")
            .arg("1s")
            .arg("--hello-timeout")
            .arg("1s"),
    );
    let baseline = gw.metric_sum("kefu_connections");
    let addr = gw.addr;
    let stop = AtomicBool::new(false);
    // 200 connections at once, each from its own thread: each sends
    // garbage of one kind and reads until the gateway ends it.
    let outcome = std::thread::scope(|s| {
        let storm: Vec<_> = (1..=200u64)
            .map(|seed| s.spawn(move || garbage_connection(addr, seed)))
            .collect();
        let talking = s.spawn(|| chat.talk_until(&stop));
        let stopper = StopOnDrop(&stop);
        for t in storm {
            t.join().unwrap();
        }
        drop(stopper);
        talking.join().unwrap()
    });
    let (rounds, slowest) = outcome;
    assert!(rounds >= 1);
    assert!(
        slowest < Duration::from_secs(3),
        "a chat round took {slowest:?} during the storm ({rounds} rounds)"
    );
    // A client arriving after the storm is served as usual.
    let (mut late, welcome) = gw.anonymous("demo");
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(late.say("late-1", None, "after the storm")["type"], "ack");
    drop(late);
    // Every garbage connection is gone: the count is back to the chat's.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = gw.metric_sum("kefu_connections");
        if now <= baseline {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{now} connections left, {baseline} before the storm"
        );
    }
    still_fine(&gw, &mut chat);
}

/// One hostile connection: garbage of a kind picked by `seed`, then reads
/// until the gateway ends it (at most 8 s).
fn garbage_connection(addr: SocketAddr, seed: u64) {
    let mut rng = Rng::new(seed);
    let len = 1 + rng.below(2048);
    let garbage = rng.bytes(len);
    let mut s = tcp(addr);
    s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    match seed % 5 {
        // Random bytes instead of a request.
        0 => {
            write_lossy(&mut s, &garbage);
        }
        // An upgrade, then random bytes.
        1 => {
            write_lossy(&mut s, upgrade_request("").as_bytes());
            write_lossy(&mut s, &garbage);
        }
        // An upgrade, a hello, then masked frames of random bytes. These
        // may leave a message half sent, which a session may do: the
        // gateway then waits (the idle timeout ends it), so this one is
        // not required to end.
        2 => {
            write_lossy(&mut s, upgrade_request("").as_bytes());
            let hello = json!({"type": "hello", "tenant": "demo"}).to_string();
            write_lossy(&mut s, &masked_frame(0x81, hello.as_bytes()));
            for chunk in garbage.chunks(97) {
                let first = [0x81, 0x82, 0x89, 0x8A, 0x01, 0x00][rng.below(6)];
                write_lossy(&mut s, &masked_frame(first, chunk));
            }
            s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let _ = read_to_end_or_reset(&mut s);
            return;
        }
        // A request line of random bytes, headers that never end.
        3 => {
            write_lossy(&mut s, b"GET /");
            write_lossy(&mut s, &garbage);
        }
        // Connect and hang up at once.
        _ => return,
    }
    let (_, ended) = read_to_end_or_reset(&mut s);
    assert!(ended, "seed {seed}: still open after 8 s");
}
