//! Connection limits: idle timeout with server pings, connection caps,
//! and the frame budget that ends in 4429.

mod common;

use std::time::{Duration, Instant};

use common::wire::{op, RawWs};
use common::{Gateway, Options};
use serde_json::json;

#[test]
fn silent_connections_are_pinged_then_dropped_and_answering_keeps_them() {
    let gw = Gateway::start(Options::default().arg("--idle-timeout").arg("300ms"));
    // A raw client that says hello and then never answers anything.
    let mut silent = RawWs::connect(gw.addr);
    silent.send(json!({"type": "hello", "tenant": "demo"}));
    assert_eq!(silent.recv()["type"], "welcome");
    let started = Instant::now();
    let ping = silent.read_frame();
    assert_eq!(ping.opcode, op::PING, "a silent connection is pinged");
    let pinged_after = started.elapsed();
    // No pong: the gateway drops it (EOF, no close frame: the peer is presumed dead).
    loop {
        match silent.try_read_frame() {
            None => break,
            Some(f) if f.opcode == op::PING => continue,
            Some(f) => panic!("unexpected frame {}", f.opcode),
        }
    }
    let dropped_after = started.elapsed();
    assert!(
        pinged_after >= Duration::from_millis(250),
        "pinged too early: {pinged_after:?}"
    );
    assert!(
        dropped_after < Duration::from_secs(5),
        "dropped too late: {dropped_after:?}"
    );
    assert!(gw.metric_sum("kefu_idle_timeouts_total") >= 1.0);

    // A client that answers pings (tungstenite does, while reading) stays.
    let (mut live, _) = gw.anonymous("demo");
    let quiet_for = Instant::now();
    while quiet_for.elapsed() < Duration::from_millis(1500) {
        // Reading is what makes tungstenite answer the gateway's pings.
        if let Some(frame) = live.try_recv(Duration::from_millis(200)) {
            panic!("nothing but pings expected, got {frame}");
        }
    }
    let ack = live.say("m-1", None, "still here");
    assert_eq!(ack["seq"], 1, "the answering client was kept: {ack}");
}

#[test]
fn connections_over_the_per_ip_cap_get_503() {
    let gw = Gateway::start(Options::default().arg("--max-connections-per-ip").arg("2"));
    let (_a, _) = gw.anonymous("demo");
    let (_b, _) = gw.anonymous("demo");
    let (status, _) = Gateway::http_get(gw.addr, "/health");
    assert_eq!(status, 503, "a third connection from 127.0.0.1 is refused");
    assert_eq!(
        common::sum_metric(
            &gw.metrics(),
            "kefu_handshake_failures_total{shard=\"0\",reason=\"limit\"}"
        ),
        1.0,
        "the refusal is counted"
    );
    drop(_a);
    // Once one closes, a new one is admitted (the count follows closes).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _) = Gateway::http_get(gw.addr, "/health");
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the cap never freed up");
        std::thread::yield_now();
    }
}

#[test]
fn connections_over_the_shard_cap_get_503() {
    let gw = Gateway::start(
        Options::default()
            .arg("--max-connections-per-shard")
            .arg("1"),
    );
    let (_a, _) = gw.anonymous("demo");
    assert_eq!(Gateway::http_get(gw.addr, "/health").0, 503);
}

#[test]
fn flooding_frames_or_garbage_gets_rate_limited_then_4429() {
    let gw = Gateway::start(Options::default().arg("--msg-rate-limit").arg("1"));
    // Frame budget: max(4 x 1, 100) per second, bursts of 200; garbage costs 10 more.
    let mut flood = RawWs::connect(gw.addr);
    flood.send(json!({"type": "hello", "tenant": "demo"}));
    assert_eq!(flood.recv()["type"], "welcome");
    let garbage: Vec<String> = (0..200).map(|i| format!("not json {i}")).collect();
    flood.send_texts(&garbage);
    let mut rate_limited = 0;
    let code = loop {
        let frame = flood.read_frame();
        match frame.opcode {
            op::CLOSE => break frame.close_code(),
            op::TEXT if frame.json()["code"] == "rate_limited" => rate_limited += 1,
            _ => {}
        }
    };
    assert_eq!(code, 4429);
    assert!(rate_limited >= 10, "warnings came first: {rate_limited}");
}
