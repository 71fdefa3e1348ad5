//! Metrics: counted per shard without sharing, gathered by message.
//!
//! Each shard counts in plain `Cell`s that only its own thread touches, so
//! counting costs an add, never an atomic or a lock. A scrape of `/metrics`
//! (served by shard 0) asks every shard for a [`ShardSnapshot`] over the
//! mesh, then renders them all in the Prometheus text format through
//! `prometheus-client`'s encoder. Per-shard series carry a `shard` label, so
//! imbalance between shards shows; `sum by` gives the totals.

mod render;

use std::cell::Cell;

use crate::protocol::ErrorCode;

pub use render::render;

/// Why an HTTP/WebSocket handshake or a hello failed, as a metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The HTTP request was malformed or not an upgrade.
    BadRequest,
    /// The request head was over the size limit.
    TooLarge,
    /// The request did not arrive in time.
    Timeout,
    /// No hello in time after the upgrade.
    HelloTimeout,
    /// The first frame was not a hello.
    BadHello,
    /// The token or tenant was refused.
    Unauthorized,
    /// The Origin is not allowed for the tenant.
    Origin,
    /// Over the connection limit of the shard or of the source address.
    Limit,
}

impl HandshakeFailure {
    /// Every reason, for rendering.
    pub const ALL: [HandshakeFailure; 8] = [
        HandshakeFailure::BadRequest,
        HandshakeFailure::TooLarge,
        HandshakeFailure::Timeout,
        HandshakeFailure::HelloTimeout,
        HandshakeFailure::BadHello,
        HandshakeFailure::Unauthorized,
        HandshakeFailure::Origin,
        HandshakeFailure::Limit,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::BadRequest => "bad_request",
            HandshakeFailure::TooLarge => "too_large",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::HelloTimeout => "hello_timeout",
            HandshakeFailure::BadHello => "bad_hello",
            HandshakeFailure::Unauthorized => "unauthorized",
            HandshakeFailure::Origin => "origin",
            HandshakeFailure::Limit => "limit",
        }
    }
}

/// SIGHUP reloads whose config file loaded; the shards take its tenants
/// right after (process-wide: the control thread counts them).
pub static RELOADS_OK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// SIGHUP reloads refused because the config file did not load.
pub static RELOADS_FAILED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A histogram with fixed bucket bounds, counted in cells.
pub struct Histogram {
    /// Upper bounds of the buckets (the `le` labels), ascending.
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative; the last is +Inf).
    counts: Vec<Cell<u64>>,
    /// Sum of all observations.
    sum: Cell<f64>,
}

impl Histogram {
    /// A histogram over these bucket bounds.
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| Cell::new(0)).collect(),
            sum: Cell::new(0.0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) {
        let i = self.bounds.partition_point(|&b| b < value);
        self.counts[i].set(self.counts[i].get() + 1);
        self.sum.set(self.sum.get() + value);
    }

    /// A copy of the current values.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: self.counts.iter().map(Cell::get).collect(),
            sum: self.sum.get(),
        }
    }
}

/// A histogram's values at one moment.
#[derive(Clone, Debug, Default)]
pub struct HistogramSnapshot {
    /// Bucket upper bounds.
    pub bounds: &'static [f64],
    /// Per-bucket counts, the last one for +Inf.
    pub counts: Vec<u64>,
    /// Sum of observations.
    pub sum: f64,
}

impl HistogramSnapshot {
    /// Total observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Per-bucket counts as `prometheus-client`'s encoder takes them (it
    /// accumulates them itself), with `f64::MAX` standing for `+Inf`.
    pub fn per_bucket(&self) -> Vec<(f64, u64)> {
        let mut out: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .zip(self.counts.iter().copied())
            .collect();
        out.push((f64::MAX, self.counts.last().copied().unwrap_or(0)));
        out
    }

    /// Cumulative buckets as Prometheus shows them: (upper bound, count ≤ bound).
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut acc = 0;
        let mut out: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .zip(&self.counts)
            .map(|(&b, &c)| {
                acc += c;
                (b, acc)
            })
            .collect();
        out.push((f64::INFINITY, self.count()));
        out
    }
}

/// Seconds buckets for disk flushes: 50 µs to 2.5 s.
pub const FLUSH_SECONDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5,
];
/// The phases of a group commit, as labelled in
/// `kefu_commit_phase_seconds_total`: encoding and applying the batch to
/// sled's tree, sled's `flush` (writing its log), and the `fdatasync`.
pub const COMMIT_PHASES: [&str; 3] = ["apply", "flush", "sync"];

/// Entries per group commit.
pub const BATCH_ENTRIES: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];
/// Seconds a conversation waited in the queue: 1 s to 1 h.
pub const WAIT_SECONDS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// One shard's counters. Only the shard's own thread touches them.
pub struct ShardMetrics {
    /// Open connections that completed hello as visitors.
    pub visitors: Cell<i64>,
    /// Open connections that completed hello as agents.
    pub agents: Cell<i64>,
    /// Open connections still in the HTTP handshake or waiting for hello.
    pub pending: Cell<i64>,
    /// Connections accepted.
    pub connects: Cell<u64>,
    /// Connections closed.
    pub disconnects: Cell<u64>,
    /// Handshake and hello failures, by [`HandshakeFailure`].
    pub handshake_failures: [Cell<u64>; 8],
    /// Log entries made durable (chat and system).
    pub entries_appended: Cell<u64>,
    /// `ack` frames sent (including the original ack returned for a resent id).
    pub acks: Cell<u64>,
    /// Resent ids answered from the dedupe index without appending.
    pub duplicates: Cell<u64>,
    /// New messages accepted without a store lookup (the dedupe filter
    /// ruled them out).
    pub dedupe_filter_skips: Cell<u64>,
    /// Frames queued to connections (fan-out deliveries, replays, answers).
    pub frames_out: Cell<u64>,
    /// `error` frames sent, by [`ErrorCode`].
    pub errors: [Cell<u64>; 9],
    /// Group commits that failed (the entries got `unavailable`).
    pub commit_failures: Cell<u64>,
    /// Entries per group commit.
    pub commit_entries: Histogram,
    /// Group commit latency: apply, flush and fdatasync.
    pub commit_seconds: Histogram,
    /// Time spent in each phase of the successful group commits, in
    /// microseconds, by [`COMMIT_PHASES`]: says whether a slow commit is
    /// the B-tree (apply), sled's write (flush) or the disk (fdatasync).
    pub commit_phase_micros: [Cell<u64>; 3],
    /// Connections dropped because they did not read their outbound frames.
    pub slow_consumers: Cell<u64>,
    /// Panics caught while handling a connection.
    pub panics: Cell<u64>,
    /// Panics caught while handling a message between shards.
    pub shard_panics: Cell<u64>,
    /// Connections dropped after twice the idle timeout without a byte.
    pub idle_timeouts: Cell<u64>,
}

/// Routing counters of one tenant, kept by the shard that routes it.
pub struct TenantMetrics {
    /// Conversations assigned by routing (transfers excluded).
    pub assignments: Cell<u64>,
    /// How long those conversations waited in the queue.
    pub queue_wait_seconds: Histogram,
}

impl Default for TenantMetrics {
    fn default() -> Self {
        TenantMetrics {
            assignments: Cell::new(0),
            queue_wait_seconds: Histogram::new(WAIT_SECONDS),
        }
    }
}

impl Default for ShardMetrics {
    fn default() -> Self {
        let zero = || Cell::new(0);
        ShardMetrics {
            visitors: Cell::new(0),
            agents: Cell::new(0),
            pending: Cell::new(0),
            connects: zero(),
            disconnects: zero(),
            handshake_failures: std::array::from_fn(|_| zero()),
            entries_appended: zero(),
            acks: zero(),
            duplicates: zero(),
            dedupe_filter_skips: zero(),
            frames_out: zero(),
            errors: std::array::from_fn(|_| zero()),
            commit_failures: zero(),
            commit_entries: Histogram::new(BATCH_ENTRIES),
            commit_seconds: Histogram::new(FLUSH_SECONDS),
            commit_phase_micros: std::array::from_fn(|_| zero()),
            slow_consumers: zero(),
            panics: zero(),
            shard_panics: zero(),
            idle_timeouts: zero(),
        }
    }
}

/// Adds `n` to a counter cell.
pub fn add(cell: &Cell<u64>, n: u64) {
    cell.set(cell.get().wrapping_add(n));
}

/// Adds `n` (possibly negative) to a gauge cell.
pub fn gauge_add(cell: &Cell<i64>, n: i64) {
    cell.set(cell.get() + n);
}

impl ShardMetrics {
    /// Counts one `error` frame.
    pub fn error(&self, code: ErrorCode) {
        add(&self.errors[code.index()], 1);
    }

    /// Counts one handshake failure.
    pub fn handshake_failed(&self, why: HandshakeFailure) {
        add(&self.handshake_failures[why as usize], 1);
    }
}

/// A tenant's routing numbers, from the shard that routes it.
#[derive(Clone, Debug, Default)]
pub struct TenantSnapshot {
    /// The tenant.
    pub tenant: String,
    /// Conversations waiting.
    pub queue_len: u64,
    /// Agents connected and online.
    pub agents_online: u64,
    /// Agents connected and away.
    pub agents_away: u64,
    /// Agents disconnected within their grace period.
    pub agents_in_grace: u64,
    /// Open assigned conversations.
    pub assigned: u64,
    /// See [`TenantMetrics::assignments`].
    pub assignments: u64,
    /// See [`TenantMetrics::queue_wait_seconds`].
    pub queue_wait_seconds: HistogramSnapshot,
}

/// Everything a shard reports to a scrape.
#[derive(Clone, Debug, Default)]
pub struct ShardSnapshot {
    /// The shard.
    pub shard: usize,
    /// See [`ShardMetrics::visitors`].
    pub visitors: i64,
    /// See [`ShardMetrics::agents`].
    pub agents: i64,
    /// See [`ShardMetrics::pending`].
    pub pending: i64,
    /// See [`ShardMetrics::connects`].
    pub connects: u64,
    /// See [`ShardMetrics::disconnects`].
    pub disconnects: u64,
    /// See [`ShardMetrics::handshake_failures`].
    pub handshake_failures: [u64; 8],
    /// See [`ShardMetrics::entries_appended`].
    pub entries_appended: u64,
    /// See [`ShardMetrics::acks`].
    pub acks: u64,
    /// See [`ShardMetrics::duplicates`].
    pub duplicates: u64,
    /// See [`ShardMetrics::dedupe_filter_skips`].
    pub dedupe_filter_skips: u64,
    /// See [`ShardMetrics::frames_out`].
    pub frames_out: u64,
    /// See [`ShardMetrics::errors`].
    pub errors: [u64; 9],
    /// See [`ShardMetrics::commit_failures`].
    pub commit_failures: u64,
    /// See [`ShardMetrics::commit_entries`].
    pub commit_entries: HistogramSnapshot,
    /// See [`ShardMetrics::commit_seconds`].
    pub commit_seconds: HistogramSnapshot,
    /// See [`ShardMetrics::commit_phase_micros`].
    pub commit_phase_micros: [u64; 3],
    /// See [`ShardMetrics::slow_consumers`].
    pub slow_consumers: u64,
    /// See [`ShardMetrics::panics`].
    pub panics: u64,
    /// See [`ShardMetrics::shard_panics`].
    pub shard_panics: u64,
    /// Whether the store took commits when the snapshot was taken (one
    /// store serves every shard: the same answer from each).
    pub store_writable: bool,
    /// See [`ShardMetrics::idle_timeouts`].
    pub idle_timeouts: u64,
    /// Messages sent over the mesh.
    pub mesh_sent: u64,
    /// Batches moved into mesh rings.
    pub mesh_batches: u64,
    /// Times a mesh ring was full.
    pub mesh_ring_full: u64,
    /// Messages waiting in this shard's outboxes.
    pub mesh_backlog: u64,
    /// Open conversations this shard owns.
    pub conversations: u64,
    /// Entries accepted and waiting for the next group commit.
    pub append_pending: u64,
    /// The tenants this shard routes.
    pub tenants: Vec<TenantSnapshot>,
}

impl ShardMetrics {
    /// Copies the counters (routing and mesh numbers are filled in by the shard).
    pub fn snapshot(&self, shard: usize) -> ShardSnapshot {
        let copy = |cells: &[Cell<u64>]| -> Vec<u64> { cells.iter().map(Cell::get).collect() };
        ShardSnapshot {
            shard,
            visitors: self.visitors.get(),
            agents: self.agents.get(),
            pending: self.pending.get(),
            connects: self.connects.get(),
            disconnects: self.disconnects.get(),
            handshake_failures: copy(&self.handshake_failures)
                .try_into()
                .expect("8 reasons"),
            entries_appended: self.entries_appended.get(),
            acks: self.acks.get(),
            duplicates: self.duplicates.get(),
            dedupe_filter_skips: self.dedupe_filter_skips.get(),
            frames_out: self.frames_out.get(),
            errors: copy(&self.errors).try_into().expect("9 codes"),
            commit_failures: self.commit_failures.get(),
            commit_entries: self.commit_entries.snapshot(),
            commit_seconds: self.commit_seconds.snapshot(),
            commit_phase_micros: copy(&self.commit_phase_micros)
                .try_into()
                .expect("3 phases"),
            slow_consumers: self.slow_consumers.get(),
            panics: self.panics.get(),
            shard_panics: self.shard_panics.get(),
            idle_timeouts: self.idle_timeouts.get(),
            ..ShardSnapshot::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[1.0, 2.0, 5.0]);
        for v in [0.5, 1.0, 1.5, 3.0, 10.0] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 5);
        assert_eq!(
            s.cumulative(),
            vec![(1.0, 2), (2.0, 3), (5.0, 4), (f64::INFINITY, 5)]
        );
        assert_eq!(s.sum, 16.0);
    }
}
