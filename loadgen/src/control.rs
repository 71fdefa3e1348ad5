//! What the threads share: the run's configuration (read-only), its phase
//! and measurement window (set by the coordinator), and every thread's
//! counters (each written by its own thread).
//!
//! The coordinator is the process's main thread. It never touches a
//! client: it watches the counters, moves the phase forward, and prints
//! the progress line. Threads look at the phase when they are woken anyway,
//! and a control task per thread looks every few milliseconds.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use crate::stats::Tally;
use crate::ws::Target;

/// Where the run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// Agents connect (chat, soak); flood connects everything.
    Setup = 0,
    /// Visitors connect.
    Visitors = 1,
    /// Visitors send on schedule (warmup, then the measurement window);
    /// flood holds its connections.
    Run = 2,
    /// No new messages: waiting for acks and deliveries to catch up.
    Drain = 3,
    /// Close everything and report.
    Done = 4,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Setup,
            1 => Phase::Visitors,
            2 => Phase::Run,
            3 => Phase::Drain,
            _ => Phase::Done,
        }
    }
}

/// The measurement window, `[start, end)` in [`crate::util::now_ns`] time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Start (`u64::MAX` until known).
    pub start: u64,
    /// End (`u64::MAX` until known).
    pub end: u64,
}

impl Window {
    /// Is `t` inside?
    #[inline]
    pub fn contains(&self, t: u64) -> bool {
        t >= self.start && t < self.end
    }
}

/// The shared, changing state of a run.
#[derive(Debug)]
pub struct Control {
    /// The current [`Phase`].
    phase: AtomicU8,
    /// When visitors start sending (open-loop time zero).
    pub send_start_ns: AtomicU64,
    /// Measurement window start.
    window_start: AtomicU64,
    /// Measurement window end.
    window_end: AtomicU64,
    /// The latest welcome on any thread (flood's connect rate).
    pub last_welcome_ns: AtomicU64,
    /// Every thread's counters.
    pub tallies: Vec<Tally>,
}

impl Control {
    /// A run of `threads` threads, in [`Phase::Setup`].
    pub fn new(threads: usize) -> Self {
        Control {
            phase: AtomicU8::new(Phase::Setup as u8),
            send_start_ns: AtomicU64::new(u64::MAX),
            window_start: AtomicU64::new(u64::MAX),
            window_end: AtomicU64::new(u64::MAX),
            last_welcome_ns: AtomicU64::new(0),
            tallies: (0..threads).map(|_| Tally::default()).collect(),
        }
    }

    /// The current phase.
    #[inline]
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    /// Moves to `phase` (never backwards).
    pub fn set_phase(&self, phase: Phase) {
        self.phase.fetch_max(phase as u8, Ordering::AcqRel);
    }

    /// The measurement window.
    #[inline]
    pub fn window(&self) -> Window {
        Window {
            start: self.window_start.load(Ordering::Acquire),
            end: self.window_end.load(Ordering::Acquire),
        }
    }

    /// Sets the measurement window.
    pub fn set_window(&self, start: u64, end: u64) {
        self.window_end.store(end, Ordering::Release);
        self.window_start.store(start, Ordering::Release);
    }
}

/// What kind of run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Open connections and hold them.
    Flood,
    /// Visitors and agents chat.
    Chat,
    /// Chat with churn.
    Soak,
}

impl Kind {
    /// The scenario's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Flood => "flood",
            Kind::Chat => "chat",
            Kind::Soak => "soak",
        }
    }
}

/// The run's configuration, the same for every thread.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The scenario.
    pub kind: Kind,
    /// Where to connect.
    pub target: Target,
    /// The tenant.
    pub tenant: String,
    /// Source addresses to spread connections over (empty: the kernel's choice).
    pub source_ips: Vec<IpAddr>,
    /// Limit for TCP connect + upgrade.
    pub connect_timeout: Duration,
    /// Bytes of each message text.
    pub text_bytes: usize,
    /// Share of visitor messages an agent answers.
    pub reply_fraction: f64,
    /// One message in flight per visitor, the next one sent when the
    /// agent's reply to it arrives.
    pub ping_pong: bool,
    /// Check that no message id is stored under two `seq`s (costs memory).
    pub track_ids: bool,
    /// Reconnect after a connection ends (chat, soak).
    pub reconnect: bool,
    /// Dropped connections are part of the scenario, not errors (soak:
    /// gateway restarts).
    pub expect_drops: bool,
    /// Longest wait between reconnection attempts.
    pub backoff_max: Duration,
    /// Soak: how long a churned client stays away, at most (uniform).
    pub downtime: Duration,
}

/// What makes a chat a soak.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Churn {
    /// Disconnections per second, over all clients.
    pub per_sec: f64,
    /// A churned client reconnects after a random time up to this.
    pub downtime: Duration,
    /// Longest wait between reconnection attempts.
    pub backoff_max: Duration,
}
