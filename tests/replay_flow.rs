//! Long replays are paced to what the connection takes in: an agent newly
//! assigned a conversation whose log is far larger than the outbound limit
//! receives all of it, in order, and is not dropped as a slow consumer.

mod common;

use common::{Gateway, Options};
use serde_json::json;

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
    let text = "x".repeat(200);
    // Pipelined in batches, reading the acks as a client does (a client
    // that never reads would itself be dropped by the outbound limit).
    for batch in 0..MESSAGES / 200 {
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
