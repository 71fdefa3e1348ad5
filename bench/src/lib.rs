//! A small benchmark harness: each benchmark runs beside its baseline in
//! the same process, and the report gives ns/op for both and their ratio.
//!
//! Timing: every case runs [`SAMPLES`] samples of a fixed number of
//! operations after a warm-up sample; the median sample is reported (the
//! machines are shared and noisy, and the median ignores the odd stall).
//! Results print as a table and as JSON lines (for `scripts/bench.sh`).
#![warn(missing_docs)]

use std::hint::black_box;
use std::time::Instant;

/// Samples per case; the median is reported.
pub const SAMPLES: usize = 7;

/// One measured case.
#[derive(Clone, Debug)]
pub struct Measured {
    /// What was measured.
    pub name: String,
    /// Median nanoseconds per operation.
    pub ns_per_op: f64,
}

/// Measures `op`, called `ops` times per sample (the closure receives the
/// sample's iteration index and may do `ops` operations itself when
/// `batched`). Returns the median ns per operation.
pub fn measure(name: &str, ops: u64, mut sample: impl FnMut(u64)) -> Measured {
    sample(ops); // warm-up
    let mut times: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let start = Instant::now();
            sample(ops);
            start.elapsed().as_nanos() as f64 / ops as f64
        })
        .collect();
    times.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    Measured {
        name: name.to_string(),
        ns_per_op: times[SAMPLES / 2],
    }
}

/// Runs `f` `ops` times, keeping its result alive.
pub fn repeat<T>(ops: u64, mut f: impl FnMut() -> T) {
    for _ in 0..ops {
        black_box(f());
    }
}

/// Prints a comparison: ours against the baseline, and the speed-up.
pub fn report(group: &str, ours: &Measured, baseline: &Measured) {
    let ratio = baseline.ns_per_op / ours.ns_per_op;
    println!(
        "{group:<10} {:<44} {:>12.1} ns/op   baseline {:<40} {:>12.1} ns/op   {:>6.2}x",
        ours.name, ours.ns_per_op, baseline.name, baseline.ns_per_op, ratio
    );
    println!(
        "{{\"bench\":\"{group}\",\"case\":\"{}\",\"ns_per_op\":{:.1},\"baseline\":\"{}\",\"baseline_ns_per_op\":{:.1},\"speedup\":{:.2}}}",
        ours.name, ours.ns_per_op, baseline.name, baseline.ns_per_op, ratio
    );
}
