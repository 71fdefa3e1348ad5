//! Long replays are paced to what the connection takes in: an agent newly
//! assigned a conversation whose log is far larger than the outbound limit
//! receives all of it, in order, and is not dropped as a slow consumer; two
//! replays of one conversation to one connection are paced each on its own.

mod common;

use std::collections::BTreeMap;

use common::{Client, Gateway, Options};
use serde_json::json;

/// Sends `count` messages of 200 bytes, pipelined in batches of 200, reading
/// the acks as a client does (one that never reads would itself be dropped
/// by the outbound limit).
fn send_long_log(visitor: &mut Client, count: u64) {
    let text = "x".repeat(200);
    for batch in 0..count / 200 {
        for i in batch * 200..(batch + 1) * 200 {
            visitor.send(json!({"type": "msg", "id": format!("m-{i}"), "text": text}));
        }
        let mut acked = 0;
        while acked < 200 {
            let v = visitor.recv();
            assert_ne!(v["type"], "error", "{v}");
            if v["type"] == "ack" {
                acked += 1;
            }
        }
    }
}

#[test]
fn a_log_larger_than_the_outbound_limit_is_replayed_whole_without_a_drop() {
    const MESSAGES: u64 = 3_000;
    // 64 KiB of outbound room; the log below is about 15 times that.
    let gw = Gateway::start(
        Options::default()
            .arg("--outbound-limit")
            .arg("65536")
            .arg("--msg-rate-limit")
            .arg("0"),
    );
    let (mut visitor, _) = gw.anonymous("demo");
    send_long_log(&mut visitor, MESSAGES);

    let token = gw.agent_token("alice", &[]);
    eprintln!("visitor done: {} acks", MESSAGES);
    let (mut agent, _) = gw.login(&token);
    // The whole log: the first message, `queued`, the rest, then `assigned`.
    let mut seqs = Vec::new();
    loop {
        let v = agent.recv();
        assert_eq!(v["type"], "msg", "{v}");
        seqs.push(v["seq"].as_u64().unwrap());
        if v["event"] == "assigned" {
            break;
        }
    }
    assert_eq!(
        seqs,
        (1..=MESSAGES + 2).collect::<Vec<_>>(),
        "every entry once, in order"
    );
    assert_eq!(
        gw.metric_sum("kefu_slow_consumers_total"),
        0.0,
        "nobody was dropped"
    );
}

/// A visitor that never sent `recv` comes back and, while the welcome's
/// replay of its long log is still under way, asks for the same log with
/// `sync`. Both replays read from the store, chunk by chunk, each waiting
/// for the connection's credit: a credit must wake the replay it is for,
/// or one of them stalls (it did, when credits were keyed by conversation
/// and connection).
#[test]
fn a_sync_during_the_welcome_replay_of_the_same_log_completes_both() {
    const MESSAGES: u64 = 2_000;
    let gw = Gateway::start(
        Options::shards(2)
            .arg("--outbound-limit")
            .arg("65536")
            .arg("--msg-rate-limit")
            .arg("0"),
    );
    let (mut visitor, welcome) = gw.anonymous("demo");
    let token = welcome["token"].as_str().unwrap().to_owned();
    send_long_log(&mut visitor, MESSAGES);
    drop(visitor);

    let (mut back, welcome) = gw.login(&token);
    let conv = welcome["conversations"][0]["conv"]
        .as_str()
        .unwrap()
        .to_owned();
    back.send(json!({"type": "sync", "conv": conv, "after": 0}));
    // Every entry (the messages and `queued`) twice: once from each replay.
    let last = MESSAGES + 1;
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    let mut synced = None;
    while synced.is_none() || seen.values().any(|&n| n < 2) || seen.len() < last as usize {
        let v = back.recv();
        match v["type"].as_str() {
            Some("msg") => *seen.entry(v["seq"].as_u64().unwrap()).or_default() += 1,
            Some("synced") => synced = Some(v["last_seq"].as_u64().unwrap()),
            Some("queue") => {}
            _ => panic!("unexpected {v}"),
        }
    }
    assert_eq!(synced, Some(last));
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>()
    );
    assert!(seen.values().all(|&n| n == 2), "each entry once per replay");
    assert_eq!(gw.metric_sum("kefu_slow_consumers_total"), 0.0);
}
