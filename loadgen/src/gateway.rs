//! What the load generator reads about the gateway from outside: its RSS
//! from `/proc/PID/status`, and its group-commit batch sizes from the
//! Prometheus text of its admin listener (`kefu_commit_batch_entries`,
//! one histogram per shard).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The resident set size of process `pid`, in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    parse_vm_rss(&text).ok_or_else(|| format!("{path}: no VmRSS line"))
}

/// `VmRSS:   1234 kB` → bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// One histogram series: bucket upper bounds with cumulative counts, the
/// sum and the count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramSeries {
    /// `(le, cumulative count)`, ascending `le` (`+Inf` as infinity).
    pub buckets: Vec<(f64, f64)>,
    /// Sum of observations.
    pub sum: f64,
    /// Number of observations.
    pub count: f64,
}

impl HistogramSeries {
    /// `self - earlier`, bucket by bucket (same bounds).
    pub fn since(&self, earlier: &HistogramSeries) -> HistogramSeries {
        HistogramSeries {
            buckets: self
                .buckets
                .iter()
                .map(|&(le, c)| {
                    let before = earlier
                        .buckets
                        .iter()
                        .find(|(l, _)| *l == le)
                        .map_or(0.0, |&(_, c)| c);
                    (le, c - before)
                })
                .collect(),
            sum: self.sum - earlier.sum,
            count: self.count - earlier.count,
        }
    }

    /// The mean observation.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }

    /// The upper bound of the bucket holding quantile `q`.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        let rank = q * self.count;
        self.buckets
            .iter()
            .find(|(_, c)| *c >= rank)
            .map(|&(le, _)| le)
    }
}

/// Every series of histogram `name` in Prometheus text, by their `shard`
/// label (`""` when there is none).
pub fn parse_histograms(text: &str, name: &str) -> BTreeMap<String, HistogramSeries> {
    let mut out: BTreeMap<String, HistogramSeries> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (suffix, rest) = match rest.find(['{', ' ']) {
            Some(i) => rest.split_at(i),
            None => continue,
        };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once('}') {
                Some((labels, value)) => (labels, value),
                None => continue,
            },
            None => ("", rest),
        };
        let Some(value) = value.split_whitespace().next().and_then(parse_number) else {
            continue;
        };
        let label = |key: &str| {
            labels.split(',').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
            })
        };
        let series = out.entry(label("shard").unwrap_or_default()).or_default();
        match suffix {
            "_bucket" => {
                if let Some(le) = label("le").as_deref().and_then(parse_number) {
                    series.buckets.push((le, value));
                }
            }
            "_sum" => series.sum = value,
            "_count" => series.count = value,
            _ => {}
        }
    }
    for s in out.values_mut() {
        s.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

fn parse_number(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        _ => s.parse().ok(),
    }
}

/// `GET /metrics` from the admin listener at `addr`.
pub fn scrape(addr: SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut body = String::new();
    s.read_to_string(&mut body)
        .map_err(|e| format!("reading /metrics: {e}"))?;
    match body.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(dechunk(head, body)),
        _ => Err(format!(
            "unexpected /metrics answer: {}",
            body.lines().next().unwrap_or("")
        )),
    }
}

/// Undoes `Transfer-Encoding: chunked` if the head says so.
fn dechunk(head: &str, body: &str) -> String {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_string();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// Per-shard group commits over a measurement: batch sizes and latency.
#[derive(Clone, Debug, Default)]
pub struct CommitBatches {
    /// Shard label → growth of the entries-per-commit histogram.
    pub shards: BTreeMap<String, HistogramSeries>,
    /// Shard label → growth of the commit latency histogram (seconds).
    pub flush: BTreeMap<String, HistogramSeries>,
}

/// The metric the gateway exports for entries per group commit.
pub const COMMIT_BATCH_METRIC: &str = "kefu_commit_batch_entries";
/// The metric the gateway exports for group commit latency.
pub const FLUSH_METRIC: &str = "kefu_flush_seconds";

/// Per-series growth of histogram `name` between two scrapes.
fn growth(before: &str, after: &str, name: &str) -> BTreeMap<String, HistogramSeries> {
    let b = parse_histograms(before, name);
    parse_histograms(after, name)
        .iter()
        .map(|(k, s)| {
            (
                k.clone(),
                s.since(b.get(k).unwrap_or(&HistogramSeries::default())),
            )
        })
        .collect()
}

impl CommitBatches {
    /// The growth of the commit histograms between two scrapes.
    pub fn between(before: &str, after: &str) -> CommitBatches {
        CommitBatches {
            shards: growth(before, after, COMMIT_BATCH_METRIC),
            flush: growth(before, after, FLUSH_METRIC),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss() {
        let status = "Name:\tkefu\nVmPeak:\t 9 kB\nVmRSS:\t   2048 kB\nThreads: 3\n";
        assert_eq!(parse_vm_rss(status), Some(2 * 1024 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn batch_histograms_per_shard() {
        let before = "# HELP kefu_commit_batch_entries Entries per group commit.\n\
            # TYPE kefu_commit_batch_entries histogram\n\
            kefu_commit_batch_entries_sum{shard=\"0\"} 10.0\n\
            kefu_commit_batch_entries_count{shard=\"0\"} 10\n\
            kefu_commit_batch_entries_bucket{le=\"1.0\",shard=\"0\"} 10\n\
            kefu_commit_batch_entries_bucket{le=\"16.0\",shard=\"0\"} 10\n\
            kefu_commit_batch_entries_bucket{le=\"+Inf\",shard=\"0\"} 10\n";
        let after = "kefu_commit_batch_entries_sum{shard=\"0\"} 210.0\n\
            kefu_commit_batch_entries_count{shard=\"0\"} 30\n\
            kefu_commit_batch_entries_bucket{le=\"1.0\",shard=\"0\"} 12\n\
            kefu_commit_batch_entries_bucket{le=\"16.0\",shard=\"0\"} 30\n\
            kefu_commit_batch_entries_bucket{le=\"+Inf\",shard=\"0\"} 30\n\
            kefu_commit_batch_entries_sum{shard=\"1\"} 5.0\n\
            kefu_commit_batch_entries_count{shard=\"1\"} 1\n\
            kefu_commit_batch_entries_bucket{shard=\"1\",le=\"+Inf\"} 1\n\
            kefu_commit_failures_total{shard=\"0\"} 0\n";
        let batches = CommitBatches::between(before, after);
        let s0 = &batches.shards["0"];
        assert_eq!((s0.count, s0.sum), (20.0, 200.0));
        assert_eq!(s0.mean(), Some(10.0));
        assert_eq!(
            s0.buckets,
            vec![(1.0, 2.0), (16.0, 20.0), (f64::INFINITY, 20.0)]
        );
        assert_eq!(s0.quantile_bound(0.5), Some(16.0));
        assert_eq!(s0.quantile_bound(0.05), Some(1.0));
        assert_eq!(batches.shards["1"].mean(), Some(5.0));
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(
            dechunk(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked",
                "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            ),
            "abcde"
        );
        assert_eq!(dechunk("HTTP/1.1 200 OK", "plain"), "plain");
    }
}
