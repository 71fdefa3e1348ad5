//! Operations: SIGTERM drains.
//!
//! Every client gets 1001, in waves spread over the first third of
//! `--drain-timeout`; `/ready` answers 503 meanwhile; nothing acknowledged
//! is lost (checked after a restart); the process exits within the drain
//! timeout. (An idle gateway exiting at once: `tests/durability.rs`.)

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::wire::{RawWs, WS_KEY};
use common::{Client, Gateway, Options, READ_TIMEOUT};
use serde_json::{json, Value};
use tungstenite::Message;

/// How much later than `--drain-timeout` the process may exit: thread
/// joins and process teardown, on a busy two-core test machine.
const SLACK: Duration = Duration::from_secs(3);

/// What one chatting client saw before the gateway closed it.
struct Chat {
    /// Its token (issued by the gateway), to come back after the restart.
    token: String,
    /// Every ack received: (id, conv, seq).
    acked: Vec<(String, String, u64)>,
    /// The close code.
    close: u16,
}

/// A visitor that sends messages in windows of `WINDOW`, without waiting
/// for each ack, until the gateway closes it. Reports on `started` once it
/// has `WARMUP` acks.
fn chat_until_closed(name: usize, url: String, started: mpsc::Sender<()>) -> Chat {
    const WINDOW: usize = 4;
    const WARMUP: usize = 12;
    let mut c = Client::connect(&url);
    c.send(json!({"type": "hello", "tenant": "demo"}));
    let welcome = c.recv_type("welcome");
    let token = welcome["token"].as_str().unwrap().to_owned();
    let first = c.say(&format!("m-{name}-0"), None, "opening the conversation");
    let conv = first["conv"].as_str().unwrap().to_owned();
    let mut acked = vec![(
        format!("m-{name}-0"),
        conv.clone(),
        first["seq"].as_u64().unwrap(),
    )];
    let mut next = 1;
    loop {
        let mut waiting = HashSet::new();
        for _ in 0..WINDOW {
            let id = format!("m-{name}-{next}");
            next += 1;
            let frame =
                json!({"type": "msg", "id": id, "conv": conv, "text": format!("text of {id}")});
            if c.ws.send(Message::text(frame.to_string())).is_err() {
                break;
            }
            waiting.insert(id);
        }
        while !waiting.is_empty() {
            match c.ws.read() {
                Ok(Message::Text(text)) => {
                    let v: Value = serde_json::from_str(&text).unwrap();
                    if v["type"] == "ack" {
                        let id = v["id"].as_str().unwrap().to_owned();
                        assert!(waiting.remove(&id), "unexpected ack {v}");
                        assert_eq!(v["conv"], conv.as_str());
                        acked.push((id, conv.clone(), v["seq"].as_u64().unwrap()));
                        if acked.len() == WARMUP {
                            let _ = started.send(());
                        }
                    } else {
                        assert_ne!(v["type"], "error", "{v}");
                    }
                }
                Ok(Message::Close(frame)) => {
                    let close = frame.map_or(1005, |f| u16::from(f.code));
                    return Chat {
                        token,
                        acked,
                        close,
                    };
                }
                Ok(_) => {}
                Err(e) => panic!("client {name}: no close frame: {e}"),
            }
        }
    }
}

#[test]
fn sigterm_closes_chatting_clients_1001_and_loses_no_acked_message() {
    const CLIENTS: usize = 8;
    let drain = Duration::from_secs(6);
    let options = Options::shards(2)
        .arg("--drain-timeout")
        .arg("6s")
        .arg("--msg-rate-limit")
        .arg("0");
    let mut gw = Gateway::start(options.clone());

    let (started_tx, started_rx) = mpsc::channel();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (url, started) = (gw.url(), started_tx.clone());
            std::thread::spawn(move || chat_until_closed(i, url, started))
        })
        .collect();
    for _ in 0..CLIENTS {
        started_rx
            .recv_timeout(READ_TIMEOUT)
            .expect("every client is chatting");
    }

    // SIGTERM while every client has messages in flight.
    let t0 = Instant::now();
    gw.signal(libc::SIGTERM);
    let (status, _) = gw.wait_exit(drain + SLACK);
    let took = t0.elapsed();
    assert!(status.success(), "exit status {status}");
    let chats: Vec<Chat> = clients.into_iter().map(|h| h.join().unwrap()).collect();
    for (i, chat) in chats.iter().enumerate() {
        assert_eq!(chat.close, 1001, "client {i}");
    }
    // These clients answer the close at once, so nothing holds the drain.
    assert!(
        took < drain,
        "a drain of cooperating clients took {took:?} (timeout {drain:?})"
    );

    // After a restart, every acknowledged message is there, at its seq, once.
    gw.restart(options);
    for (i, chat) in chats.iter().enumerate() {
        let (mut c, welcome) = gw.login(&chat.token);
        let conv = chat.acked[0].1.as_str();
        assert_eq!(
            welcome["conversations"][0]["conv"], conv,
            "client {i}: {welcome}"
        );
        c.send(json!({"type": "sync", "conv": conv, "after": 0}));
        let (synced, frames) = c.recv_until(|v| v["type"] == "synced");
        let mut log: BTreeMap<u64, Value> = BTreeMap::new();
        for f in frames.into_iter().filter(|f| f["type"] == "msg") {
            let seq = f["seq"].as_u64().unwrap();
            if let Some(seen) = log.insert(seq, f.clone()) {
                assert_eq!(seen, f, "client {i}: seq {seq} means one entry");
            }
        }
        let last = synced["last_seq"].as_u64().unwrap();
        assert_eq!(
            log.keys().copied().collect::<Vec<_>>(),
            (1..=last).collect::<Vec<_>>(),
            "client {i}: no gaps"
        );
        for (id, _, seq) in &chat.acked {
            assert_eq!(
                log[seq]["id"],
                id.as_str(),
                "client {i}: acked {id} at {seq}"
            );
        }
        let ids: Vec<&str> = log.values().filter_map(|f| f["id"].as_str()).collect();
        let unique: HashSet<&str> = ids.iter().copied().collect();
        assert_eq!(ids.len(), unique.len(), "client {i}: no id stored twice");
    }
}

#[test]
fn ready_turns_503_while_draining_and_closes_come_in_waves() {
    const CLIENTS: usize = 30;
    // Waves: 10, one every (9 s / 3) / 10 = 300 ms, three clients each.
    let drain = Duration::from_secs(9);
    let pause = drain / 3 / 10;
    let mut gw = Gateway::start(Options::shards(1).arg("--drain-timeout").arg("9s"));
    assert_eq!(
        Gateway::http_get(gw.admin, "/ready"),
        (200, r#"{"status":"ready"}"#.to_owned())
    );
    assert_eq!(Gateway::http_get(gw.addr, "/ready").0, 200);

    let (closed_tx, closed_rx) = mpsc::channel();
    let mut clients: Vec<Client> = (0..CLIENTS).map(|_| gw.anonymous("demo").0).collect();
    let waiters: Vec<_> = clients
        .drain(..)
        .map(|mut c| {
            let closed = closed_tx.clone();
            std::thread::spawn(move || {
                let code = c.expect_close();
                closed.send((Instant::now(), code)).unwrap();
            })
        })
        .collect();

    let t0 = Instant::now();
    gw.signal(libc::SIGTERM);
    // The first wave closes at once; from then on the drain is under way
    // and /ready says so, while /health still answers.
    let (first, code) = closed_rx.recv_timeout(READ_TIMEOUT).expect("a close");
    assert_eq!(code, 1001);
    assert_eq!(
        Gateway::http_get(gw.admin, "/ready"),
        (503, r#"{"status":"draining"}"#.to_owned())
    );
    assert_eq!(Gateway::http_get(gw.admin, "/health").0, 200);
    let mut closes = vec![first];
    for _ in 1..CLIENTS {
        let (at, code) = closed_rx.recv_timeout(drain).expect("every client closed");
        assert_eq!(code, 1001);
        closes.push(at);
    }
    let (status, _) = gw.wait_exit(drain + SLACK);
    assert!(status.success(), "{status}");
    assert!(t0.elapsed() < drain + SLACK);
    for w in waiters {
        w.join().unwrap();
    }

    // The closes are spread out: not all at once, over most of the nine
    // pauses between the waves.
    closes.sort();
    let spread = *closes.last().unwrap() - closes[0];
    assert!(
        spread >= pause * 9 / 2,
        "closes spread over {spread:?} only (waves every {pause:?})"
    );
    let in_first_wave = closes
        .iter()
        .filter(|t| **t - closes[0] < pause / 2)
        .count();
    assert!(
        in_first_wave <= 2 * CLIENTS.div_ceil(10),
        "{in_first_wave} of {CLIENTS} clients closed in the first wave"
    );
}

#[test]
fn drain_timeout_bounds_the_exit_when_clients_do_not_answer() {
    // Clients that never answer the close frame: each would hold its
    // connection for the close linger (2 s); the drain timeout (500 ms)
    // cuts that short.
    let mut gw = Gateway::start(Options::shards(2).arg("--drain-timeout").arg("500ms"));
    let mut clients: Vec<RawWs> = (0..6)
        .map(|_| {
            let mut c = RawWs::connect(gw.addr);
            c.send(json!({"type": "hello", "tenant": "demo"}));
            assert_eq!(c.recv()["type"], "welcome");
            c
        })
        .collect();
    let t0 = Instant::now();
    gw.signal(libc::SIGTERM);
    let (status, _) = gw.wait_exit(Duration::from_secs(10));
    let took = t0.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        took < Duration::from_millis(1700),
        "exit took {took:?} with --drain-timeout 500ms"
    );
    for c in &mut clients {
        let frame = c.read_frame();
        assert_eq!(frame.close_code(), 1001);
    }
}

/// Reads from `s` until `buf` holds the HTTP head and `more` bytes after it.
fn read_head_and(s: &mut TcpStream, more: usize) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if buf.len() >= end + 4 + more {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                return (head, buf[end + 4..].to_vec());
            }
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).expect("read");
        assert!(n > 0, "EOF after {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn a_connection_that_upgrades_during_the_drain_is_closed_1001_too() {
    let mut gw = Gateway::start(Options::shards(1).arg("--drain-timeout").arg("10s"));
    // One client that closes at once, to see the drain begin; one that never
    // answers its close, which keeps the drain going for the close linger.
    let (mut watcher, _) = gw.anonymous("demo");
    let mut holder = RawWs::connect(gw.addr);
    holder.send(json!({"type": "hello", "tenant": "demo"}));
    assert_eq!(holder.recv()["type"], "welcome");
    // A connection accepted before the drain, its upgrade request half sent.
    let mut late = TcpStream::connect(gw.addr).unwrap();
    late.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let addr = gw.addr;
    late.write_all(format!("GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\n").as_bytes())
        .unwrap();
    // Make sure the gateway has accepted it (a request on another
    // connection is answered after this one was accepted, on one shard).
    assert_eq!(Gateway::http_get(gw.addr, "/health").0, 200);

    gw.signal(libc::SIGTERM);
    assert_eq!(watcher.expect_close(), 1001);
    // Now the upgrade completes, during the drain.
    late.write_all(
        format!(
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let t0 = Instant::now();
    let (head, frame) = read_head_and(&mut late, 4);
    if head.starts_with("HTTP/1.1 101") {
        assert_eq!(frame[0], 0x88, "a close frame: {frame:?}");
        assert_eq!(u16::from_be_bytes([frame[2], frame[3]]), 1001);
    } else {
        // Refusing the upgrade outright is as good: the client retries elsewhere.
        assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    }
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "told at once, not at the drain deadline"
    );
    assert_eq!(holder.read_frame().close_code(), 1001);
    let (status, _) = gw.wait_exit(Duration::from_secs(10) + SLACK);
    assert!(status.success());
}
