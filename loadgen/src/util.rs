//! Small shared pieces: the clock every thread measures with, a cheap
//! per-thread random generator, and counters one thread writes and others
//! read.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The process's time origin: every timestamp is nanoseconds since it, on
/// the monotonic clock, so a time taken on one thread (a visitor's
/// scheduled send time, carried in the message text) can be subtracted
/// from a time taken on another (the agent's receipt of that message).
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Sets the time origin (idempotent); call before starting threads.
pub fn init_clock() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the time origin.
pub fn now_ns() -> u64 {
    init_clock().elapsed().as_nanos() as u64
}

/// The `Instant` of a timestamp from [`now_ns`].
pub fn instant_of(ns: u64) -> Instant {
    init_clock() + Duration::from_nanos(ns)
}

/// Sleeps (on the glommio executor) until the timestamp `ns`.
pub async fn sleep_until(ns: u64) {
    let now = now_ns();
    if ns > now {
        glommio::timer::sleep(Duration::from_nanos(ns - now)).await;
    }
}

thread_local! {
    /// This thread's xorshift state (never 0).
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        bytes = (now_ns() | 1).to_le_bytes();
    }
    u64::from_le_bytes(bytes) | 1
}

/// A random `u64` from this thread's generator (xorshift64*: fast, not
/// cryptographic; used for masks, jitter and sampling).
pub fn rand_u64() -> u64 {
    RNG.with(|r| {
        let mut x = r.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        r.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// A random number in `0..n` (`n > 0`).
pub fn rand_below(n: u64) -> u64 {
    ((u128::from(rand_u64()) * u128::from(n)) >> 64) as u64
}

/// A random 4-byte WebSocket mask.
pub fn rand_mask() -> [u8; 4] {
    (rand_u64() as u32).to_ne_bytes()
}

/// A stable hash of two numbers in `0..1`, to decide reproducibly (for
/// instance whether an agent answers message `n` of visitor `v`).
pub fn unit_hash(a: u64, b: u64) -> f64 {
    let mut x = a
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F));
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// A counter on its own cache line, written by one thread only and read by
/// any: the writer does a plain load and store (no locked instruction),
/// readers see a value at most one update old.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n` (owner thread only).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0
            .store(self.0.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    /// Subtracts `n`, saturating (owner thread only).
    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).saturating_sub(n),
            Ordering::Relaxed,
        );
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Parses a duration like `500ms`, `10s`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

/// Parses a CPU list like `1`, `0,2` or `2-3`.
pub fn parse_cpus(s: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().map_err(|_| format!("bad CPU {a:?}"))?;
                let b: usize = b.trim().parse().map_err(|_| format!("bad CPU {b:?}"))?;
                if a > b {
                    return Err(format!("bad CPU range {part:?}"));
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(|_| format!("bad CPU {part:?}"))?),
        }
    }
    if cpus.is_empty() {
        return Err("empty CPU list".into());
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpus("1").unwrap(), vec![1]);
        assert_eq!(parse_cpus("0,2-4").unwrap(), vec![0, 2, 3, 4]);
        assert!(parse_cpus("3-1").is_err());
        assert!(parse_cpus("").is_err());
    }

    #[test]
    fn random_numbers_stay_in_range_and_hashes_are_stable() {
        for _ in 0..1000 {
            assert!(rand_below(7) < 7);
        }
        assert_eq!(unit_hash(3, 4), unit_hash(3, 4));
        let n = 10_000;
        let below = (0..n).filter(|&i| unit_hash(1, i) < 0.25).count();
        assert!((2000..3000).contains(&below), "{below}");
    }
}
