//! The result of a run: the `--json` contract and the human summary.
//!
//! `--json` prints [`JsonReport`] on the last line of stdout: exactly the
//! keys scripts rely on, in this order. Latencies are microseconds, `null`
//! when nothing was measured; `gateway_rss_per_conn_bytes` is `null` without
//! `--gateway-pid`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::gateway::CommitBatches;
use crate::stats::{Percentiles, Totals};
use crate::verify::Verdict;

/// The `--json` object.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct JsonReport {
    /// `flood`, `chat` or `soak`.
    pub scenario: String,
    /// Connections established (flood) or clients (chat, soak).
    pub connections: u64,
    /// Chat messages sent (first transmissions), whole run.
    pub sent: u64,
    /// Chat messages acked, whole run.
    pub acked: u64,
    /// Chat messages delivered to the other side (first delivery), whole run.
    pub delivered: u64,
    /// Acked messages the other side never got.
    pub lost: u64,
    /// Entries delivered twice on one connection, or stored twice.
    pub duplicated: u64,
    /// Entries delivered out of `seq` order.
    pub reordered: u64,
    /// Errors of any kind (see the human summary for the breakdown).
    pub errors: u64,
    /// Messages per second both acked and delivered in the measurement
    /// window (the smaller of the two rates).
    pub msgs_per_sec: f64,
    /// Connections established per second while connecting.
    pub connect_per_sec: f64,
    /// Scheduled send → ack, median.
    pub ack_p50_us: Option<u64>,
    /// Scheduled send → ack, 99th percentile.
    pub ack_p99_us: Option<u64>,
    /// Scheduled send → ack, 99.9th percentile.
    pub ack_p999_us: Option<u64>,
    /// Scheduled send → delivered, median.
    pub deliver_p50_us: Option<u64>,
    /// Scheduled send → delivered, 99th percentile.
    pub deliver_p99_us: Option<u64>,
    /// Scheduled send → delivered, 99.9th percentile.
    pub deliver_p999_us: Option<u64>,
    /// Gateway RSS growth per connection.
    pub gateway_rss_per_conn_bytes: Option<f64>,
}

/// Everything a run found.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// `flood`, `chat` or `soak`.
    pub scenario: String,
    /// Clients (or connections asked for, flood).
    pub clients: u64,
    /// Summed counters.
    pub totals: Totals,
    /// The end-to-end check (chat, soak).
    pub verdict: Option<Verdict>,
    /// Scheduled send → ack.
    pub ack: Percentiles,
    /// Scheduled send → delivered.
    pub deliver: Percentiles,
    /// Scheduled connect → welcome.
    pub connect: Percentiles,
    /// The generator's lateness against its own schedule.
    pub lag: Percentiles,
    /// Connections per second while connecting.
    pub connect_per_sec: f64,
    /// Length of the measurement window, seconds.
    pub window_secs: f64,
    /// Gateway RSS before and after, bytes.
    pub rss: Option<(u64, u64)>,
    /// The load generator's own RSS before and after, bytes.
    pub own_rss: Option<(u64, u64)>,
    /// Connections the RSS growth is divided by.
    pub rss_connections: u64,
    /// Connections open at the end of the measurement (flood: of the hold).
    pub held: u64,
    /// Group-commit batch sizes during the window.
    pub batches: Option<CommitBatches>,
    /// Error kinds and counts.
    pub error_kinds: BTreeMap<String, u64>,
    /// Why the run stopped early, if it did.
    pub aborted: Option<String>,
    /// Notes for the human summary.
    pub notes: Vec<String>,
}

impl Outcome {
    /// Lost messages (0 without a verdict).
    pub fn lost(&self) -> u64 {
        self.verdict.as_ref().map_or(0, |v| v.lost)
    }

    /// The rate of messages both acked and delivered in the window.
    pub fn msgs_per_sec(&self) -> f64 {
        if self.window_secs <= 0.0 {
            return 0.0;
        }
        self.totals
            .acked_in_window
            .min(self.totals.delivered_in_window) as f64
            / self.window_secs
    }

    /// Gateway RSS growth per connection.
    pub fn rss_per_conn(&self) -> Option<f64> {
        let (before, after) = self.rss?;
        (self.rss_connections > 0)
            .then(|| (after as f64 - before as f64) / self.rss_connections as f64)
    }

    /// The process exit status (see the CLI docs).
    pub fn exit_code(&self) -> u8 {
        let t = &self.totals;
        if self.lost() > 0 || t.duplicated > 0 || t.reordered > 0 {
            1
        } else if self.aborted.is_some() {
            2
        } else if t.errors > 0 {
            3
        } else {
            0
        }
    }

    /// The `--json` object.
    pub fn json(&self) -> JsonReport {
        let t = &self.totals;
        JsonReport {
            scenario: self.scenario.clone(),
            connections: if self.scenario == "flood" {
                t.connected
            } else {
                self.clients
            },
            sent: t.sent,
            acked: t.acked,
            delivered: t.delivered,
            lost: self.lost(),
            duplicated: t.duplicated,
            reordered: t.reordered,
            errors: t.errors,
            msgs_per_sec: round1(self.msgs_per_sec()),
            connect_per_sec: round1(self.connect_per_sec),
            ack_p50_us: self.ack.p50,
            ack_p99_us: self.ack.p99,
            ack_p999_us: self.ack.p999,
            deliver_p50_us: self.deliver.p50,
            deliver_p99_us: self.deliver.p99,
            deliver_p999_us: self.deliver.p999,
            gateway_rss_per_conn_bytes: self.rss_per_conn().map(round1),
        }
    }

    /// The gateway's group commits during the window, one line per shard
    /// and measure (empty without `--admin`).
    pub fn batch_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let Some(batches) = &self.batches else {
            return lines;
        };
        for (shard, h) in &batches.shards {
            lines.push(format!(
                "gateway shard {shard}: {} group commits, {} entries, mean {} per commit, p50 ≤ {}, p99 ≤ {}",
                h.count,
                h.sum,
                h.mean().map_or("-".into(), |m| format!("{m:.1}")),
                h.quantile_bound(0.5).map_or("-".into(), |b| format!("{b}")),
                h.quantile_bound(0.99).map_or("-".into(), |b| format!("{b}")),
            ));
            if let Some(f) = batches.flush.get(shard) {
                let ms = |v: Option<f64>| v.map_or("-".into(), |s| format!("{:.2} ms", s * 1e3));
                lines.push(format!(
                    "gateway shard {shard}: commit latency mean {}, p50 ≤ {}, p99 ≤ {}",
                    ms(f.mean()),
                    ms(f.quantile_bound(0.5)),
                    ms(f.quantile_bound(0.99)),
                ));
            }
        }
        lines
    }

    /// The human-readable summary.
    pub fn human(&self) -> String {
        let t = &self.totals;
        let mut s = String::new();
        let _ = writeln!(s, "== kefu-loadgen {} ==", self.scenario);
        if let Some(why) = &self.aborted {
            let _ = writeln!(s, "ABORTED: {why}");
        }
        let _ = writeln!(
            s,
            "connections: {} established, {} failed attempts, {} open at the end of the measurement; {:.0}/s while connecting",
            t.connected, t.connect_failed, self.held, self.connect_per_sec
        );
        if self.connect.count > 0 {
            let _ = writeln!(s, "connect→welcome: {}", fmt_percentiles(&self.connect));
        }
        if self.scenario != "flood" {
            let _ = writeln!(
                s,
                "messages: sent {} (+{} resent), acked {}, delivered {}, still unacked {}, receipts {}",
                t.sent, t.resent, t.acked, t.delivered, t.unacked, t.receipts
            );
            let _ = writeln!(
                s,
                "throughput in the {:.1} s window: {:.0} msg/s acked, {:.0} msg/s delivered",
                self.window_secs,
                if self.window_secs > 0.0 {
                    t.acked_in_window as f64 / self.window_secs
                } else {
                    0.0
                },
                if self.window_secs > 0.0 {
                    t.delivered_in_window as f64 / self.window_secs
                } else {
                    0.0
                },
            );
            let _ = writeln!(s, "send→ack:       {}", fmt_percentiles(&self.ack));
            let _ = writeln!(s, "send→delivered: {}", fmt_percentiles(&self.deliver));
            let _ = writeln!(
                s,
                "disconnections: {} dropped, {} churned, {} gateway going away (1001); {} redelivered entries dropped by seq",
                t.dropped, t.churned, t.going_away, t.redelivered
            );
            match &self.verdict {
                Some(v) => {
                    let ok = v.lost == 0 && t.duplicated == 0 && t.reordered == 0;
                    let _ = writeln!(
                        s,
                        "verification: {} — lost {}, duplicated {}, reordered {} ({} conversations)",
                        if ok { "OK" } else { "FAILED" },
                        v.lost,
                        t.duplicated,
                        t.reordered,
                        v.conversations
                    );
                    for (conv, seq) in &v.examples {
                        let _ = writeln!(s, "  lost: conversation {conv} seq {seq}");
                    }
                }
                None => {
                    let _ = writeln!(s, "verification: not run");
                }
            }
        }
        if self.lag.count > 0 {
            let _ = writeln!(
                s,
                "generator lag (scheduled → started): {}",
                fmt_percentiles(&self.lag)
            );
        }
        if let Some((before, after)) = self.rss {
            let _ = writeln!(
                s,
                "gateway RSS: {:.1} MiB before, {:.1} MiB after: {} per connection ({} connections)",
                before as f64 / 1048576.0,
                after as f64 / 1048576.0,
                self.rss_per_conn()
                    .map_or("-".to_string(), |b| format!("{b:.0} bytes")),
                self.rss_connections
            );
        }
        if let (Some((before, after)), true) = (self.own_rss, self.held > 0) {
            let _ = writeln!(
                s,
                "load generator RSS: {:.1} MiB before, {:.1} MiB after: {:.0} bytes per connection",
                before as f64 / 1048576.0,
                after as f64 / 1048576.0,
                (after as f64 - before as f64) / self.held as f64
            );
        }
        for line in self.batch_lines() {
            let _ = writeln!(s, "{line}");
        }
        let _ = writeln!(s, "errors: {}", t.errors);
        for (kind, n) in &self.error_kinds {
            let _ = writeln!(s, "  {n:>8} {kind}");
        }
        for note in &self.notes {
            let _ = writeln!(s, "note: {note}");
        }
        s
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn fmt_percentiles(p: &Percentiles) -> String {
    let f = |v: Option<u64>| match v {
        None => "-".to_string(),
        Some(us) if us >= 10_000 => format!("{:.1} ms", us as f64 / 1000.0),
        Some(us) => format!("{us} µs"),
    };
    format!(
        "p50 {}  p99 {}  p99.9 {}  max {}  (n={})",
        f(p.p50),
        f(p.p99),
        f(p.p999),
        f(p.max),
        p.count
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_object_has_exactly_the_contract_keys() {
        let o = Outcome {
            scenario: "chat".into(),
            clients: 3,
            window_secs: 2.0,
            totals: Totals {
                acked_in_window: 10,
                delivered_in_window: 8,
                ..Totals::default()
            },
            ..Outcome::default()
        };
        let v = serde_json::to_value(o.json()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = vec![
            "scenario",
            "connections",
            "sent",
            "acked",
            "delivered",
            "lost",
            "duplicated",
            "reordered",
            "errors",
            "msgs_per_sec",
            "connect_per_sec",
            "ack_p50_us",
            "ack_p99_us",
            "ack_p999_us",
            "deliver_p50_us",
            "deliver_p99_us",
            "deliver_p999_us",
            "gateway_rss_per_conn_bytes",
        ];
        let mut got = keys.clone();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(v["msgs_per_sec"], 4.0);
        assert!(v["gateway_rss_per_conn_bytes"].is_null());
        assert!(v["ack_p99_us"].is_null());
        assert_eq!(o.exit_code(), 0);
    }

    #[test]
    fn exit_codes() {
        let mut o = Outcome::default();
        o.totals.errors = 1;
        assert_eq!(o.exit_code(), 3);
        o.aborted = Some("x".into());
        assert_eq!(o.exit_code(), 2);
        o.totals.reordered = 1;
        assert_eq!(o.exit_code(), 1);
        let o = Outcome {
            verdict: Some(Verdict {
                lost: 2,
                ..Verdict::default()
            }),
            ..Outcome::default()
        };
        assert_eq!(o.exit_code(), 1);
    }
}
