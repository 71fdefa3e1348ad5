//! Counters and latency histograms.
//!
//! Each thread owns a [`Tally`] (counters that the coordinator reads for
//! the progress line and the drain check, each written by its thread only)
//! and a [`Latencies`] (HdrHistograms, plain thread-local data). Nothing
//! here is shared for writing, so the hot path takes no lock. At the end the
//! threads hand their histograms back and [`Latencies::merge`] adds them.

use hdrhistogram::Histogram;

use crate::util::Counter;

/// One thread's counters (see each field); written by that thread only.
#[derive(Debug, Default)]
pub struct Tally {
    /// Connections that got their welcome (each reconnection counts).
    pub connected: Counter,
    /// Connections currently open (welcomed and not yet ended).
    pub open: Counter,
    /// Connection attempts that failed (refused, timed out, rejected).
    pub connect_failed: Counter,
    /// Established connections that ended without us asking (EOF, close
    /// frame, error), churn and the end of the run excepted.
    pub dropped: Counter,
    /// Disconnections the soak's churn asked for.
    pub churned: Counter,
    /// Gateway `1001` closes (shutting down: reconnect).
    pub going_away: Counter,
    /// Chat messages written for the first time.
    pub sent: Counter,
    /// Chat messages written again after a reconnection (same id).
    pub resent: Counter,
    /// Chat messages acked (first ack of each).
    pub acked: Counter,
    /// Chat messages delivered to the other side for the first time.
    pub delivered: Counter,
    /// Entries delivered again after a reconnection (dropped by `seq`).
    pub redelivered: Counter,
    /// Entries delivered twice on one connection, or one message id stored
    /// under two `seq`s.
    pub duplicated: Counter,
    /// Entries delivered out of `seq` order.
    pub reordered: Counter,
    /// `error` frames, malformed frames, unexpected acks, failed sends.
    pub errors: Counter,
    /// Acks that arrived inside the measurement window.
    pub acked_in_window: Counter,
    /// First deliveries that arrived inside the measurement window.
    pub delivered_in_window: Counter,
    /// Visitors whose conversation is assigned to an agent.
    pub assigned: Counter,
    /// Messages written and not acked yet (or waiting for a connection).
    pub unacked: Counter,
    /// `recv` frames written.
    pub receipts: Counter,
}

/// Everything a thread's [`Tally`] says, summed over threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// See [`Tally::connected`].
    pub connected: u64,
    /// See [`Tally::open`].
    pub open: u64,
    /// See [`Tally::connect_failed`].
    pub connect_failed: u64,
    /// See [`Tally::dropped`].
    pub dropped: u64,
    /// See [`Tally::churned`].
    pub churned: u64,
    /// See [`Tally::going_away`].
    pub going_away: u64,
    /// See [`Tally::sent`].
    pub sent: u64,
    /// See [`Tally::resent`].
    pub resent: u64,
    /// See [`Tally::acked`].
    pub acked: u64,
    /// See [`Tally::delivered`].
    pub delivered: u64,
    /// See [`Tally::redelivered`].
    pub redelivered: u64,
    /// See [`Tally::duplicated`].
    pub duplicated: u64,
    /// See [`Tally::reordered`].
    pub reordered: u64,
    /// See [`Tally::errors`].
    pub errors: u64,
    /// See [`Tally::acked_in_window`].
    pub acked_in_window: u64,
    /// See [`Tally::delivered_in_window`].
    pub delivered_in_window: u64,
    /// See [`Tally::assigned`].
    pub assigned: u64,
    /// See [`Tally::unacked`].
    pub unacked: u64,
    /// See [`Tally::receipts`].
    pub receipts: u64,
}

impl Totals {
    /// Sums the tallies of every thread.
    pub fn sum<'a>(tallies: impl IntoIterator<Item = &'a Tally>) -> Totals {
        let mut t = Totals::default();
        for x in tallies {
            t.connected += x.connected.get();
            t.open += x.open.get();
            t.connect_failed += x.connect_failed.get();
            t.dropped += x.dropped.get();
            t.churned += x.churned.get();
            t.going_away += x.going_away.get();
            t.sent += x.sent.get();
            t.resent += x.resent.get();
            t.acked += x.acked.get();
            t.delivered += x.delivered.get();
            t.redelivered += x.redelivered.get();
            t.duplicated += x.duplicated.get();
            t.reordered += x.reordered.get();
            t.errors += x.errors.get();
            t.acked_in_window += x.acked_in_window.get();
            t.delivered_in_window += x.delivered_in_window.get();
            t.assigned += x.assigned.get();
            t.unacked += x.unacked.get();
            t.receipts += x.receipts.get();
        }
        t
    }
}

/// The largest latency recorded: an hour, in microseconds.
const MAX_MICROS: u64 = 3_600_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

/// One thread's latency histograms, in microseconds.
#[derive(Clone, Debug)]
pub struct Latencies {
    /// Scheduled send → ack.
    pub ack: Histogram<u64>,
    /// Scheduled send → delivered to the other side.
    pub deliver: Histogram<u64>,
    /// Scheduled connect → welcome (TCP connect, upgrade, hello, welcome).
    pub connect: Histogram<u64>,
    /// The generator's own lateness: scheduled time → when it actually
    /// started the send or the connect. Large values mean the load
    /// generator, not the gateway, was the bottleneck.
    pub lag: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            ack: histogram(),
            deliver: histogram(),
            connect: histogram(),
            lag: histogram(),
        }
    }
}

/// Records `ns` nanoseconds (rounded up to a microsecond, clamped).
pub fn record(h: &mut Histogram<u64>, ns: u64) {
    let us = ns.div_ceil(1000).clamp(1, MAX_MICROS);
    h.record(us).expect("value within bounds");
}

impl Latencies {
    /// Adds every thread's histograms.
    pub fn merge(all: impl IntoIterator<Item = Latencies>) -> Latencies {
        let mut total = Latencies::default();
        for l in all {
            total.ack.add(&l.ack).expect("same bounds");
            total.deliver.add(&l.deliver).expect("same bounds");
            total.connect.add(&l.connect).expect("same bounds");
            total.lag.add(&l.lag).expect("same bounds");
        }
        total
    }
}

/// Percentiles of one histogram, in microseconds (`None` when empty).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: Option<u64>,
    /// 99th percentile.
    pub p99: Option<u64>,
    /// 99.9th percentile.
    pub p999: Option<u64>,
    /// Largest.
    pub max: Option<u64>,
}

impl Percentiles {
    /// Reads them off `h`.
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            p50: Some(h.value_at_quantile(0.5)),
            p99: Some(h.value_at_quantile(0.99)),
            p999: Some(h.value_at_quantile(0.999)),
            max: Some(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_merge_and_report_percentiles() {
        let mut a = Latencies::default();
        let mut b = Latencies::default();
        for i in 1..=900 {
            record(&mut a.ack, i * 1000);
        }
        for i in 901..=1000 {
            record(&mut b.ack, i * 1000);
        }
        record(&mut b.deliver, 0);
        let m = Latencies::merge([a, b]);
        let p = Percentiles::of(&m.ack);
        assert_eq!(p.count, 1000);
        assert!((499..=501).contains(&p.p50.unwrap()), "{p:?}");
        assert!((989..=991).contains(&p.p99.unwrap()), "{p:?}");
        assert_eq!(
            Percentiles::of(&m.deliver).max,
            Some(1),
            "0 ns counts as 1 µs"
        );
        assert_eq!(Percentiles::of(&m.connect), Percentiles::default());
    }

    #[test]
    fn tallies_sum() {
        let a = Tally::default();
        let b = Tally::default();
        a.sent.add(3);
        b.sent.add(4);
        b.unacked.add(2);
        b.unacked.sub(5);
        let t = Totals::sum([&a, &b]);
        assert_eq!((t.sent, t.unacked), (7, 0));
    }
}
