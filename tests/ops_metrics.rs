//! Operations: `/metrics`, `/health` and `/ready`.
//!
//! The exposition is read with a Prometheus text parser (`prometheus-parse`)
//! after some traffic, and must hold every family the operations issue
//! lists, per shard, with values that follow from that traffic. Every
//! `kefu_*` name the Grafana dashboard queries must be in it.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::wire::{claims, jwt};
use common::{Client, Gateway, Options};
use jsonwebtoken::Algorithm::HS256;
use prometheus_parse::{LineInfo, Sample, Scrape, Value as Sampled};
use serde_json::json;

const SECRET: &str = "acme-metrics-secret-0123456789abcdef0123456789";
const SHARDS: usize = 2;

/// A gateway with one tenant, `acme` (agents take one chat each).
fn gateway() -> Gateway {
    Gateway::start(Options::shards(SHARDS).config(&format!(
        "[[tenants]]\nid = \"acme\"\nsecret = \"{SECRET}\"\nanonymous_visitors = true\nmax_chats = 1\n"
    )))
}

/// What the traffic left open, so that the gauges have something to show.
struct Traffic {
    _open: Vec<Client>,
}

/// Two agents (one online and busy, one away), two visitors (one served,
/// one queued), a pending connection, a refused hello and a bad frame.
fn traffic(gw: &Gateway) -> Traffic {
    let token = |sub: &str, role: &str| jwt(HS256, SECRET.as_bytes(), &claims("acme", sub, role));
    let (mut bob, _) = gw.login(&token("bob", "agent"));
    bob.send(json!({"type": "status", "status": "away"}));
    bob.recv_until(|v| v["type"] == "status");
    let (alice, _) = gw.login(&token("alice", "agent"));

    let (mut served, _) = gw.anonymous("acme");
    served.say("m-1", None, "first visitor");
    served.recv_until(|v| v["event"] == "assigned");
    served.say("m-2", None, "second message");
    let (mut queued, _) = gw.anonymous("acme");
    queued.say("q-1", None, "second visitor");
    queued.recv_until(|v| v["type"] == "queue");

    // An error frame (bad_request), a refused hello (unauthorized), and a
    // connection still waiting to say hello (pending).
    served.send_text("not json");
    served.recv_until(|v| v["type"] == "error");
    let mut refused = gw.connect();
    refused.send(json!({"type": "hello", "token": "not-a-token"}));
    assert_eq!(refused.expect_close(), 4401);
    // Once its socket is closed, its shard has counted it gone.
    refused.close_and_wait();
    let pending = gw.connect();
    Traffic {
        _open: vec![bob, alice, served, queued, pending],
    }
}

fn scrape(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("the exposition parses")
}

/// The raw `# TYPE` of every family.
fn types(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            (name.to_owned(), kind.to_owned())
        })
        .collect()
}

/// Every sample name in the exposition (`kefu_acks_total`, `kefu_flush_seconds_bucket`, ...).
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

fn value(s: &Sample) -> f64 {
    match s.value {
        Sampled::Counter(v) | Sampled::Gauge(v) | Sampled::Untyped(v) => v,
        _ => panic!("not a scalar: {s:?}"),
    }
}

/// Samples of `metric` whose labels include every pair of `labels`.
fn series<'a>(scrape: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect()
}

/// The sum over the matching series; panics if there is none.
fn total(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let found = series(scrape, metric, labels);
    assert!(!found.is_empty(), "no series {metric}{labels:?}");
    found.iter().map(|s| value(s)).sum()
}

/// A histogram's (+Inf count, sum of `_sum`) over the matching series,
/// after checking each one's buckets are cumulative and end at +Inf.
fn histogram(scrape: &Scrape, text: &str, metric: &str, labels: &[(&str, &str)]) -> (f64, f64) {
    let found = series(scrape, metric, labels);
    assert!(!found.is_empty(), "no histogram {metric}{labels:?}");
    let mut count = 0.0;
    for s in &found {
        let Sampled::Histogram(buckets) = &s.value else {
            panic!("{metric} is not a histogram: {s:?}")
        };
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].less_than < w[1].less_than && w[0].count <= w[1].count),
            "{metric}: buckets not cumulative: {buckets:?}"
        );
        let last = buckets.last().unwrap();
        assert!(last.less_than.is_infinite(), "{metric}: no +Inf bucket");
        count += last.count;
    }
    let count_line = |suffix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(&format!("{metric}_{suffix}")))
            .filter(|l| {
                labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    assert_eq!(
        count_line("count"),
        count,
        "{metric}_count is the +Inf bucket"
    );
    (count, count_line("sum"))
}

#[test]
fn the_exposition_parses_and_has_every_family_with_sensible_values() {
    let gw = gateway();
    let _traffic = traffic(&gw);
    let text = gw.metrics();
    let scrape = scrape(&text);

    // Every line is a comment the parser knows or a sample it reads; the
    // OpenMetrics text ends with `# EOF`.
    for line in text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Doc { .. } | LineInfo::Type { .. } | LineInfo::Sample { .. } => {}
            LineInfo::Empty => {}
            _ => assert_eq!(line, "# EOF", "a line the parser does not read"),
        }
    }
    assert_eq!(text.lines().last(), Some("# EOF"));

    // Naming: counters are `_total`, durations `_seconds`, one TYPE per family.
    let types = types(&text);
    for (family, kind) in &types {
        assert!(family.starts_with("kefu_"), "{family}");
        let samples: Vec<_> = sample_names(&text)
            .into_iter()
            .filter(|n| n.starts_with(family.as_str()))
            .collect();
        match kind.as_str() {
            "counter" => assert_eq!(samples, [format!("{family}_total")], "{family}"),
            "gauge" => assert!(samples.contains(family), "{family}"),
            "histogram" => {
                for suffix in ["bucket", "count", "sum"] {
                    assert!(samples.contains(&format!("{family}_{suffix}")), "{family}");
                }
            }
            other => panic!("{family}: unexpected type {other}"),
        }
    }
    assert_eq!(
        text.matches("# TYPE ").count(),
        types.len(),
        "one TYPE line per family"
    );
    for family in ["kefu_flush_seconds", "kefu_queue_wait_seconds"] {
        assert_eq!(types[family], "histogram");
    }

    // Per-shard families carry every shard.
    for family in [
        "kefu_connections",
        "kefu_connects_total",
        "kefu_disconnects_total",
        "kefu_handshake_failures_total",
        "kefu_entries_appended_total",
        "kefu_frames_out_total",
        "kefu_acks_total",
        "kefu_errors_total",
        "kefu_commit_batch_entries",
        "kefu_flush_seconds",
        "kefu_commit_phase_seconds_total",
        "kefu_mesh_backlog",
        "kefu_mesh_ring_full_total",
        "kefu_mesh_messages_total",
        "kefu_conversations_open",
        "kefu_append_pending",
    ] {
        let shards: BTreeSet<&str> = series(&scrape, family, &[])
            .iter()
            .map(|s| {
                s.labels
                    .get("shard")
                    .unwrap_or_else(|| panic!("{family}: no shard label"))
            })
            .collect();
        let want: BTreeSet<String> = (0..SHARDS).map(|s| s.to_string()).collect();
        assert_eq!(
            shards,
            want.iter().map(String::as_str).collect(),
            "{family}"
        );
    }

    // Connections by role: the two agents, the two visitors, the pending one.
    let t = |metric: &str, labels: &[(&str, &str)]| total(&scrape, metric, labels);
    assert_eq!(t("kefu_connections", &[("role", "agent")]), 2.0);
    assert_eq!(t("kefu_connections", &[("role", "visitor")]), 2.0);
    assert_eq!(t("kefu_connections", &[("role", "pending")]), 1.0);
    let connects = t("kefu_connects_total", &[]);
    let disconnects = t("kefu_disconnects_total", &[]);
    assert!(connects >= 6.0, "{connects}");
    assert!(disconnects <= connects - 5.0, "{disconnects} of {connects}");
    assert_eq!(
        t(
            "kefu_handshake_failures_total",
            &[("reason", "unauthorized")]
        ),
        1.0
    );
    assert_eq!(
        t("kefu_handshake_failures_total", &[("reason", "origin")]),
        0.0
    );

    // The log: three chat messages and the system entries they caused
    // (queued, assigned for the first; queued for the second).
    assert_eq!(t("kefu_acks_total", &[]), 3.0);
    assert!(t("kefu_entries_appended_total", &[]) >= 6.0);
    assert!(t("kefu_frames_out_total", &[]) >= t("kefu_acks_total", &[]));
    assert_eq!(t("kefu_errors_total", &[("code", "bad_request")]), 1.0);
    assert_eq!(t("kefu_errors_total", &[("code", "internal")]), 0.0);
    assert_eq!(t("kefu_commit_failures_total", &[]), 0.0);
    assert_eq!(t("kefu_store_writable", &[]), 1.0);
    let (commits, entries) = histogram(&scrape, &text, "kefu_commit_batch_entries", &[]);
    assert!(
        commits >= 1.0 && entries >= 6.0,
        "{commits} commits, {entries} entries"
    );
    let (flushes, seconds) = histogram(&scrape, &text, "kefu_flush_seconds", &[]);
    assert_eq!(flushes, commits, "one flush per commit");
    assert!(seconds > 0.0 && seconds < 10.0, "{seconds}");
    // The commit's phases: each counted, together within the commits' time.
    let phases: Vec<f64> = ["apply", "flush", "sync"]
        .iter()
        .map(|p| t("kefu_commit_phase_seconds_total", &[("phase", p)]))
        .collect();
    assert!(phases.iter().all(|&s| s > 0.0), "{phases:?}");
    assert!(
        phases.iter().sum::<f64>() <= seconds,
        "{phases:?} of {seconds}"
    );

    // The cross-shard channels: present, and idle now (but for the
    // scrape's own requests, which may still sit in an outbox).
    assert!(t("kefu_mesh_messages_total", &[]) > 0.0);
    let backlog = t("kefu_mesh_backlog", &[]);
    assert!(backlog <= SHARDS as f64, "{backlog}");
    assert_eq!(t("kefu_mesh_ring_full_total", &[]), 0.0);
    assert_eq!(t("kefu_append_pending", &[]), 0.0);
    assert_eq!(t("kefu_conversations_open", &[]), 2.0);

    // The tenant: one served, one waiting; one agent online, one away.
    let acme = [("tenant", "acme")];
    assert_eq!(t("kefu_queue_length", &acme), 1.0);
    assert_eq!(t("kefu_assignments_total", &acme), 1.0);
    assert_eq!(t("kefu_conversations_assigned", &acme), 1.0);
    assert_eq!(
        t("kefu_agents", &[("tenant", "acme"), ("status", "online")]),
        1.0
    );
    assert_eq!(
        t("kefu_agents", &[("tenant", "acme"), ("status", "away")]),
        1.0
    );
    assert_eq!(
        t("kefu_agents", &[("tenant", "acme"), ("status", "grace")]),
        0.0
    );
    let (waits, waited) = histogram(&scrape, &text, "kefu_queue_wait_seconds", &acme);
    assert_eq!(waits, 1.0);
    assert!(waited < 10.0, "{waited}");

    // The process.
    let rss = t("kefu_process_resident_memory_bytes", &[]);
    assert!((1e6..4e9).contains(&rss), "{rss}");
    let fds = t("kefu_process_open_fds", &[]);
    assert!((7.0..10_000.0).contains(&fds), "{fds}");
}

/// The `kefu_*` names in a PromQL expression.
fn promql_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("kefu_") {
        let before = rest[..at].chars().last();
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.push(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(list) => list.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/kefu.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap())
            .expect("the dashboard is JSON");
    let mut all = Vec::new();
    exprs(&dashboard, &mut all);
    assert!(all.len() >= 10, "the dashboard has queries: {all:?}");
    let used: BTreeSet<String> = all.iter().flat_map(|e| promql_names(e)).collect();
    assert!(!used.is_empty());

    let gw = gateway();
    let _traffic = traffic(&gw);
    let exported = sample_names(&gw.metrics());
    let missing: Vec<_> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics that are not exported: {missing:?}"
    );
}

#[test]
fn promql_names_are_found() {
    assert_eq!(
        promql_names(
            r#"histogram_quantile(0.5, sum by (le) (rate(kefu_flush_seconds_bucket{instance=~"$i"}[5m]))) / kefu_x"#
        ),
        ["kefu_flush_seconds_bucket", "kefu_x"]
    );
    assert!(promql_names("my_kefu_thing").is_empty());
}

#[test]
fn health_and_ready_while_serving() {
    let gw = gateway();
    for addr in [gw.addr, gw.admin] {
        assert_eq!(
            Gateway::http_get(addr, "/health"),
            (200, r#"{"status":"ok"}"#.to_owned())
        );
        assert_eq!(
            Gateway::http_get(addr, "/ready"),
            (200, r#"{"status":"ready"}"#.to_owned())
        );
    }
    // Draining: see ops_drain.rs (`/ready` turns 503, `/health` stays 200).
}
