//! The buffer pool against fresh allocation, for the 4 KiB buffers that
//! carry partial frames and handshakes.

use std::hint::black_box;

use kefu_bench::{measure, report};
use shards::pool::BufferPool;

fn main() {
    const OPS: u64 = 2_000_000;
    let pool = BufferPool::new(4096, 64 * 1024, 256);
    let pooled = measure("pool take+fill 64B+give", OPS, |ops| {
        for _ in 0..ops {
            let mut buf = pool.take();
            buf.extend_from_slice(&[7u8; 64]);
            black_box(&buf);
            pool.give(buf);
        }
    });
    let fresh = measure("Vec::with_capacity(4096)+fill 64B+drop", OPS, |ops| {
        for _ in 0..ops {
            let mut buf: Vec<u8> = Vec::with_capacity(4096);
            buf.extend_from_slice(&[7u8; 64]);
            black_box(&buf);
        }
    });
    report("pool", &pooled, &fresh);
}
