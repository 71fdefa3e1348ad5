//! Faults: storage failures (injected with the hidden `--fault-injection`
//! flag, and a real full disk on a small tmpfs) and panics while handling a
//! frame or a message between shards. Throughout, the gateway stays up, no
//! message is acknowledged that is not stored, and once the fault is gone
//! the logs carry on with no gap and no duplicate.

mod common;
#[path = "../src/store/test_tmpfs.rs"]
mod test_tmpfs;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::wire::{assert_error, http_request};
use common::{Client, Gateway, Options};
use serde_json::{json, Value};
use test_tmpfs::Tmpfs;

/// A bounded negative check: long enough for a wrongly sent frame to show.
const QUIET: Duration = Duration::from_millis(300);

fn faulty(shards: usize) -> Options {
    Options::shards(shards)
        .arg("--fault-injection")
        .arg("--msg-rate-limit")
        .arg("0")
}

/// `METHOD path` on the admin listener: (status, body).
fn admin(gw: &Gateway, method: &str, path: &str) -> (u16, String) {
    let (status, _, body) = http_request(
        gw.admin,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    );
    (status, body)
}

fn set_store_mode(gw: &Gateway, mode: &str) {
    let (status, body) = admin(gw, "POST", &format!("/debug/store?mode={mode}"));
    assert_eq!(
        (status, body.trim()),
        (200, &*format!("{{\"mode\":\"{mode}\"}}"))
    );
}

/// The sum of a metric's samples whose labels include `label` (`code="x"`).
fn metric_with(gw: &Gateway, name: &str, label: &str) -> f64 {
    gw.metrics()
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn health(gw: &Gateway) -> u16 {
    Gateway::http_get(gw.addr, "/health").0
}

/// Reads until the `msg` frame of `conv` at `seq`; returns it. Fails
/// with what came instead if it does not come in time.
#[track_caller]
fn recv_entry(c: &mut Client, conv: &str, seq: u64) -> Value {
    let deadline = Instant::now() + common::READ_TIMEOUT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.try_recv(left) {
            Some(v) if v["type"] == "msg" && v["conv"] == conv && v["seq"] == seq => return v,
            Some(v) => seen.push(v),
            None => panic!("no entry {seq} of {conv}; came instead: {seen:?}"),
        }
    }
}

/// Reads until every `msg` of `wanted` (conv, seq) has come, in any
/// order; returns them.
#[track_caller]
fn recv_entries(c: &mut Client, wanted: &[(&str, u64)]) -> BTreeMap<(String, u64), Value> {
    let deadline = Instant::now() + common::READ_TIMEOUT;
    let mut got = BTreeMap::new();
    let mut seen = Vec::new();
    while got.len() < wanted.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(v) = c.try_recv(left) else {
            panic!("missing some of {wanted:?}; came: {seen:?}");
        };
        if v["type"] == "msg" {
            let key = (
                v["conv"].as_str().unwrap().to_string(),
                v["seq"].as_u64().unwrap(),
            );
            if wanted
                .iter()
                .any(|(conv, seq)| (*conv, *seq) == (key.0.as_str(), key.1))
            {
                got.insert(key, v);
                continue;
            }
        }
        seen.push(v);
    }
    got
}

/// Reads until the answer to message `id`: its `ack` or its `error`.
fn answer(c: &mut Client, id: &str) -> Value {
    c.recv_until(|v| {
        (v["type"] == "ack" && v["id"] == id) || (v["type"] == "error" && v["ref"] == id)
    })
    .0
}

fn send_msg(c: &mut Client, id: &str, conv: Option<&str>, text: &str) {
    let mut frame = json!({"type": "msg", "id": id, "text": text});
    if let Some(conv) = conv {
        frame["conv"] = json!(conv);
    }
    c.send(frame);
}

/// Sends message `id` and expects `unavailable` for it, never an ack.
fn refused(c: &mut Client, id: &str, conv: Option<&str>) {
    send_msg(c, id, conv, &format!("text of {id}"));
    assert_error(&answer(c, id), "unavailable", Some(id));
}

/// The whole log of `conv` from a `sync`.
fn sync_log(c: &mut Client, conv: &str) -> Vec<Value> {
    c.send(json!({"type": "sync", "conv": conv, "after": 0}));
    let mut log = Vec::new();
    loop {
        let v = c.recv();
        if v["conv"] != conv {
            continue;
        }
        match v["type"].as_str() {
            Some("msg") => {
                if v["seq"] == 1 {
                    // The sync's first entry: what came before was live.
                    log.clear();
                }
                log.push(v);
            }
            Some("synced") => {
                assert_eq!(v["last_seq"], log.len() as u64, "synced after {log:?}");
                return log;
            }
            _ => {}
        }
    }
}

/// Checks a log: seqs 1, 2, 3... without a gap, each client id once, and
/// every acknowledged `(id, seq)` where its ack said.
#[track_caller]
fn check_log(log: &[Value], acked: &[(String, u64)]) {
    let seqs: Vec<u64> = log.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=log.len() as u64).collect::<Vec<_>>(),
        "gap: {log:?}"
    );
    let mut ids = HashSet::new();
    for v in log {
        if let Some(id) = v["id"].as_str() {
            assert!(ids.insert(id.to_string()), "{id} stored twice: {log:?}");
        }
    }
    for (id, seq) in acked {
        let entry = &log[*seq as usize - 1];
        assert_eq!(
            entry["id"],
            json!(id),
            "ack of {id} said seq {seq}: {entry}"
        );
    }
}

fn events(log: &[Value]) -> Vec<&str> {
    log.iter()
        .map(|v| v["event"].as_str().unwrap_or("chat"))
        .collect()
}

#[test]
fn injected_commit_failures_answer_unavailable_and_everything_lands_after_recovery() {
    let gw = Gateway::start(faulty(2));
    let (status, body) = admin(&gw, "GET", "/debug/store");
    assert_eq!((status, body.trim()), (200, r#"{"mode":"healthy"}"#));

    // Healthy: alice serves ann's and carl's conversations.
    let (mut alice, _) = gw.login(&gw.agent_token("alice", &["--name", "Alice"]));
    let (mut ann, _) = gw.login(&gw.visitor_token("ann", &[]));
    let ack = ann.say("m-1", None, "hello");
    let a = ack["conv"].as_str().unwrap().to_string();
    recv_entry(&mut ann, &a, 3);
    recv_entry(&mut alice, &a, 3);
    let (mut carl, _) = gw.login(&gw.visitor_token("carl", &[]));
    let c = carl.say("c-1", None, "hi")["conv"]
        .as_str()
        .unwrap()
        .to_string();
    recv_entry(&mut carl, &c, 3);
    recv_entry(&mut alice, &c, 3);
    let (mut bob, _) = gw.login(&gw.visitor_token("bob", &[]));
    let failures_before = gw.metric_sum("kefu_commit_failures_total");
    assert_eq!(failures_before, 0.0);
    assert_eq!(gw.metric_sum("kefu_store_writable"), 1.0);

    set_store_mode(&gw, "fail_commits");
    // Chat messages are refused with `unavailable`, never acknowledged.
    refused(&mut ann, "m-2", None);
    refused(&mut ann, "m-3", None);
    refused(&mut alice, "a-1", Some(&a));
    // A new conversation: its first message is refused, and its `queued`
    // entry waits (routing starts only once it is stored).
    refused(&mut bob, "b-1", None);
    // A close: the `closed` entry waits too.
    alice.send(json!({"type": "close", "conv": c}));
    // Nothing was appended: nobody hears of any of it.
    alice.expect_silence(QUIET);
    ann.expect_silence(QUIET);
    carl.expect_silence(QUIET);
    bob.expect_silence(QUIET);

    // The gateway stays up: health, reads, signals, new connections.
    assert_eq!(health(&gw), 200);
    let log = sync_log(&mut ann, &a);
    assert_eq!(events(&log), ["chat", "queued", "assigned"]);
    ann.send(json!({"type": "typing", "conv": a, "on": true}));
    let typing = alice.recv_until(|v| v["type"] == "typing").0;
    assert_eq!(typing["by"]["id"], "ann");
    let (mut dana, welcome) = gw.anonymous("demo");
    assert_eq!(welcome["type"], "welcome");
    refused(&mut dana, "d-1", None);

    // And with every store call failing, too.
    set_store_mode(&gw, "fail_all");
    refused(&mut ann, "m-3", None);
    assert_eq!(health(&gw), 200);

    // Counted: failed commits, and the errors by code.
    assert!(gw.metric_sum("kefu_commit_failures_total") > failures_before);
    assert!(metric_with(&gw, "kefu_errors_total", "code=\"unavailable\"") >= 6.0);
    assert_eq!(
        gw.metric_sum("kefu_store_writable"),
        0.0,
        "an operator sees it"
    );

    set_store_mode(&gw, "healthy");
    assert_eq!(gw.metric_sum("kefu_store_writable"), 1.0);
    // The waiting system entries land: carl's conversation closes, bob's
    // (and dana's) are queued, then assigned to alice.
    let closed = recv_entry(&mut carl, &c, 4);
    assert_eq!(closed["event"], "closed");
    let b = bob
        .recv_until(|v| v["type"] == "msg" && v["event"] == "queued")
        .0;
    assert_eq!(b["seq"], 1, "the refused message left no hole: {b}");
    let b = b["conv"].as_str().unwrap().to_string();
    assert_eq!(recv_entry(&mut bob, &b, 2)["event"], "assigned");
    // Conversations on different shards land in any order.
    let got = recv_entries(&mut alice, &[(&c, 4), (&b, 1), (&b, 2)]);
    assert_eq!(got[&(c.clone(), 4)], closed);
    assert_eq!(got[&(b.clone(), 2)]["event"], "assigned");

    // Resending the same ids stores them once, in order, without a gap.
    let mut acked_a = vec![("m-1".to_string(), 1)];
    for (who, id) in [("ann", "m-2"), ("ann", "m-3"), ("alice", "a-1")] {
        let (client, conv) = match who {
            "ann" => (&mut ann, None),
            _ => (&mut alice, Some(a.as_str())),
        };
        send_msg(client, id, conv, &format!("text of {id}"));
        let ack = answer(client, id);
        assert_eq!(ack["type"], "ack", "{ack}");
        assert_eq!(ack["conv"], json!(a));
        acked_a.push((id.to_string(), ack["seq"].as_u64().unwrap()));
    }
    assert_eq!(
        acked_a.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
        [1, 4, 5, 6]
    );
    let ack_b = bob.say("b-1", None, "text of b-1");
    assert_eq!(
        (ack_b["conv"].as_str(), ack_b["seq"].as_u64()),
        (Some(&*b), Some(3))
    );
    // A second resend is a duplicate: the original ack, nothing appended.
    assert_eq!(ann.say("m-2", None, "text of m-2")["seq"], 4);

    let log = sync_log(&mut ann, &a);
    check_log(&log, &acked_a);
    assert_eq!(
        events(&log),
        ["chat", "queued", "assigned", "chat", "chat", "chat"]
    );
    let log = sync_log(&mut bob, &b);
    check_log(&log, &[("b-1".to_string(), 3)]);
    assert_eq!(events(&log), ["queued", "assigned", "chat"]);
    let log = sync_log(&mut alice, &c);
    check_log(&log, &[("c-1".to_string(), 1)]);
    assert_eq!(events(&log), ["chat", "queued", "assigned", "closed"]);
}

#[test]
fn every_tenant_is_served_through_a_storage_fault_and_after_it() {
    let gw = Gateway::start(faulty(2).config(
        r#"
[[tenants]]
id = "acme"
secret = "acme-secret-0123456789abcdef0123456789"

[[tenants]]
id = "globex"
secret = "globex-secret-0123456789abcdef012345678"
"#,
    ));
    let token = |tenant: &str, role: &str, sub: &str| {
        gw.token(&["--role", role, "--sub", sub, "--tenant", tenant])
    };
    let mut pairs = Vec::new();
    for tenant in ["acme", "globex"] {
        let (mut agent, _) = gw.login(&token(tenant, "agent", "alice"));
        let (mut visitor, _) = gw.login(&token(tenant, "visitor", "ann"));
        let conv = visitor.say("m-1", None, "hi")["conv"]
            .as_str()
            .unwrap()
            .to_string();
        recv_entry(&mut agent, &conv, 3);
        recv_entry(&mut visitor, &conv, 3);
        pairs.push((agent, visitor, conv));
    }

    set_store_mode(&gw, "fail_all");
    for (tenant, (agent, visitor, conv)) in ["acme", "globex"].iter().zip(&mut pairs) {
        // New connections of either tenant are welcomed; messages refused.
        let (mut again, welcome) = gw.login(&token(tenant, "visitor", "ann"));
        assert_eq!(welcome["conversations"][0]["conv"], json!(conv));
        refused(&mut again, "m-2", None);
        refused(agent, "a-1", Some(conv));
        visitor.expect_silence(QUIET);
    }
    assert_eq!(health(&gw), 200);

    set_store_mode(&gw, "healthy");
    for (agent, visitor, conv) in &mut pairs {
        assert_eq!(visitor.say("m-2", None, "again")["seq"], 4);
        assert_eq!(recv_entry(agent, conv, 4)["text"], "again");
        assert_eq!(agent.say("a-1", Some(conv), "hello")["seq"], 5);
        assert_eq!(recv_entry(visitor, conv, 5)["text"], "hello");
    }
}

#[test]
fn a_panic_while_handling_a_frame_closes_only_that_connection() {
    let gw = Gateway::start(faulty(1));
    let (mut alice, _) = gw.login(&gw.agent_token("alice", &[]));
    let (mut ann, _) = gw.login(&gw.visitor_token("ann", &[]));
    let a = ann.say("m-1", None, "hello")["conv"]
        .as_str()
        .unwrap()
        .to_string();
    recv_entry(&mut alice, &a, 3);

    let (mut mallory, _) = gw.anonymous("demo");
    mallory.send(json!({"type": "__panic"}));
    assert_eq!(mallory.expect_close(), 1011);
    assert_eq!(gw.metric_sum("kefu_connection_panics_total"), 1.0);

    // The one shard goes on serving the others.
    assert_eq!(health(&gw), 200);
    let ack = ann.say("m-2", None, "still there?");
    assert_eq!(ack["seq"], 4);
    assert_eq!(recv_entry(&mut alice, &a, 4)["text"], "still there?");
    alice.say("a-1", Some(&a), "yes");
    assert_eq!(recv_entry(&mut ann, &a, 5)["text"], "yes");
}

#[test]
fn a_panic_in_a_shard_message_handler_is_caught_and_the_shard_goes_on() {
    let gw = Gateway::start(faulty(1));
    let (mut alice, _) = gw.login(&gw.agent_token("alice", &[]));
    let (mut ann, _) = gw.login(&gw.visitor_token("ann", &[]));
    let a = ann.say("m-1", None, "hello")["conv"]
        .as_str()
        .unwrap()
        .to_string();
    recv_entry(&mut alice, &a, 3);

    ann.send(json!({"type": "__panic_shard", "conv": a}));
    // The sync goes to the same shard after it: once `synced` is back, the
    // panic has happened.
    let log = sync_log(&mut ann, &a);
    assert_eq!(log.len(), 3);
    assert_eq!(gw.metric_sum("kefu_shard_panics_total"), 1.0);
    assert_eq!(gw.metric_sum("kefu_connection_panics_total"), 0.0);

    // Nothing was lost: the connection and the conversation carry on.
    assert_eq!(ann.say("m-2", None, "after")["seq"], 4);
    assert_eq!(recv_entry(&mut alice, &a, 4)["text"], "after");

    // Without a conversation, the frame is refused.
    ann.send(json!({"type": "__panic_shard"}));
    assert_error(&ann.recv_skip_queue(), "bad_request", None);
}

#[test]
fn without_the_flag_there_are_no_testing_aids() {
    let gw = Gateway::start(Options::default());
    assert_eq!(admin(&gw, "POST", "/debug/store?mode=fail_all").0, 404);
    assert_eq!(admin(&gw, "GET", "/debug/store").0, 404);
    let (mut ann, _) = gw.login(&gw.visitor_token("ann", &[]));
    ann.send(json!({"type": "__panic"}));
    assert_error(&ann.recv_skip_queue(), "bad_request", None);
    assert_eq!(ann.say("m-1", None, "fine")["seq"], 1);
    assert_eq!(gw.metric_sum("kefu_connection_panics_total"), 0.0);

    // The flag is not in --help.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains("fault-injection"));
    // A bad mode, with the flag.
    let gw = Gateway::start(faulty(1));
    assert_eq!(admin(&gw, "POST", "/debug/store?mode=broken").0, 400);
    assert_eq!(admin(&gw, "DELETE", "/debug/store").0, 405);
}

/// Sends messages `m-{from}..` from `c` with up to `window` unanswered,
/// until one is refused; then waits for every answer. Returns the acked
/// `(id, seq)`s and the refused ids.
fn chat_until_refused(
    c: &mut Client,
    from: usize,
    text: &str,
) -> (Vec<(String, u64)>, Vec<String>) {
    const WINDOW: usize = 32;
    const MAX: usize = 200_000;
    let (mut acked, mut refused) = (Vec::new(), Vec::new());
    let mut outstanding = 0;
    let mut next = from;
    loop {
        while refused.is_empty() && outstanding < WINDOW && next < from + MAX {
            send_msg(c, &format!("m-{next}"), None, text);
            next += 1;
            outstanding += 1;
        }
        if outstanding == 0 {
            break;
        }
        let v = c.recv();
        match v["type"].as_str() {
            Some("ack") => {
                acked.push((
                    v["id"].as_str().unwrap().to_string(),
                    v["seq"].as_u64().unwrap(),
                ));
                outstanding -= 1;
            }
            Some("error") => {
                assert_eq!(v["code"], "unavailable", "{v}");
                refused.push(v["ref"].as_str().unwrap().to_string());
                outstanding -= 1;
            }
            _ => {}
        }
    }
    assert!(!refused.is_empty(), "the disk never filled up");
    (acked, refused)
}

#[test]
fn a_full_disk_refuses_messages_and_the_gateway_recovers_when_it_has_space_again() {
    // 64 MiB: sled needs room for a few of its 16 MiB segments, and a
    // filler takes 40 of them, leaving the log about 24 MiB.
    let Some(tmpfs) = Tmpfs::mount(64) else {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs here (needs root); the full-disk test did not run"
        );
        return;
    };
    let data: PathBuf = tmpfs.path().join("data");
    let filler = tmpfs.path().join("filler");
    // A sync of the whole log is several MiB: over the default outbound cap.
    let options = Options::shards(1)
        .arg("--msg-rate-limit")
        .arg("0")
        .arg("--outbound-limit")
        .arg("64MiB");
    let mut gw = Gateway::start_in(&data, options.clone());
    let token = gw.visitor_token("ann", &[]);
    let (mut ann, _) = gw.login(&token);
    let ack = ann.say("m-0", None, "hello");
    let conv = ack["conv"].as_str().unwrap().to_string();
    std::fs::write(&filler, vec![1u8; 40 << 20]).unwrap();

    // Chat until the disk is full: refused messages get `unavailable`.
    let text = "x".repeat(4000);
    let (mut acked, refused) = chat_until_refused(&mut ann, 1, &text);
    acked.insert(0, ("m-0".to_string(), 1));
    assert!(acked.len() > 100, "only {} messages fit", acked.len());
    assert_eq!(health(&gw), 200, "the gateway stays up");
    assert!(gw.metric_sum("kefu_commit_failures_total") >= 1.0);
    assert_eq!(gw.metric_sum("kefu_store_writable"), 0.0, "stopped");
    // Still full: still refused (the store does not reopen on a full disk).
    send_msg(&mut ann, &refused[0], None, &text);
    assert_error(
        &answer(&mut ann, &refused[0]),
        "unavailable",
        Some(&refused[0]),
    );

    // Space again: without a restart, the refused messages are acked once
    // resent (the store reopens at the next attempt after its backoff).
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        send_msg(&mut ann, &refused[0], None, &text);
        let v = answer(&mut ann, &refused[0]);
        if v["type"] == "ack" {
            break v;
        }
        assert_error(&v, "unavailable", Some(&refused[0]));
        assert!(Instant::now() < deadline, "the store never came back");
        // Resending at a client's pace: the store retries a reopen at most
        // every 2 s, and this waits for that, not for a frame.
        std::thread::sleep(Duration::from_millis(100));
    };
    acked.push((refused[0].clone(), first["seq"].as_u64().unwrap()));
    assert_eq!(gw.metric_sum("kefu_store_writable"), 1.0, "reopened");
    for id in &refused[1..] {
        send_msg(&mut ann, id, None, &text);
        let v = answer(&mut ann, id);
        assert_eq!(v["type"], "ack", "{v}");
        acked.push((id.clone(), v["seq"].as_u64().unwrap()));
    }
    let ack = ann.say("after", None, "the disk is back");
    acked.push(("after".to_string(), ack["seq"].as_u64().unwrap()));
    let log = sync_log(&mut ann, &conv);
    check_log(&log, &acked);
    let entries: BTreeMap<u64, Value> = log
        .into_iter()
        .map(|v| (v["seq"].as_u64().unwrap(), v))
        .collect();

    // Everything acknowledged survives a crash and a restart.
    gw.kill9();
    gw.restart(options);
    let (mut ann, _) = gw.login(&token);
    // The welcome's replay (ann never sent a receipt) first, then a sync.
    let last = *entries.keys().last().unwrap();
    assert_eq!(&recv_entry(&mut ann, &conv, last), &entries[&last]);
    let log = sync_log(&mut ann, &conv);
    check_log(&log, &acked);
    assert_eq!(log.len(), entries.len());
    for v in &log {
        assert_eq!(&entries[&v["seq"].as_u64().unwrap()], v);
    }
    drop(ann);
    drop(gw);
}
