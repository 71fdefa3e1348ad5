//! A Bloom filter of every `(sender, id)` ever stored, shared by all shards.
//!
//! Idempotent sends need "was this id stored before?" for every new
//! message, and the dedupe index that answers it lives in the store: asking
//! it means a blocking-pool round trip and a B-tree lookup per message. But
//! almost every new id is new. The filter answers "certainly not stored"
//! from memory for nearly all of them, so only the rare "maybe" (a resend,
//! or a false positive) pays for the lookup.
//!
//! It is one process-wide bit array of `AtomicU64`s, written with
//! `fetch_or` and read with plain loads: no lock, and shards only ever set
//! bits, so a reader can only see too many bits (a false "maybe", which
//! costs a lookup), never too few for an id whose commit has completed. It
//! is filled at start-up from the store's dedupe index, and each committed
//! message adds its id. Its false-positive rate grows with the number of
//! ids: with the default 16 MiB (2^27 bits, 4 probes) it stays under 1% up
//! to about 12 million stored ids, and past that it degrades gracefully
//! into more lookups, never into a wrong answer. Its memory is only
//! resident as bits get set.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bits in the default filter: 16 MiB.
pub const DEFAULT_BITS: u64 = 1 << 27;
/// Probes per fingerprint.
const PROBES: u64 = 4;

/// The filter.
pub struct DedupeFilter {
    /// The bit array.
    words: Box<[AtomicU64]>,
    /// `bits - 1`; the number of bits is a power of two.
    mask: u64,
}

impl DedupeFilter {
    /// A filter of `bits` bits (rounded up to a power of two, at least 64).
    pub fn new(bits: u64) -> Self {
        let bits = bits.max(64).next_power_of_two();
        let words = (0..bits / 64).map(|_| AtomicU64::new(0)).collect();
        DedupeFilter {
            words,
            mask: bits - 1,
        }
    }

    /// The bit positions of a fingerprint (double hashing).
    fn probes(&self, fingerprint: u64) -> impl Iterator<Item = u64> + '_ {
        let h1 = fingerprint;
        let h2 = fingerprint.rotate_left(32) | 1;
        (0..PROBES).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) & self.mask)
    }

    /// Records a stored fingerprint.
    pub fn insert(&self, fingerprint: u64) {
        for bit in self.probes(fingerprint) {
            self.words[(bit / 64) as usize].fetch_or(1 << (bit % 64), Ordering::Release);
        }
    }

    /// `false`: certainly never inserted. `true`: maybe.
    pub fn may_contain(&self, fingerprint: u64) -> bool {
        self.probes(fingerprint).all(|bit| {
            self.words[(bit / 64) as usize].load(Ordering::Acquire) & (1 << (bit % 64)) != 0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserted_fingerprints_are_always_found_and_others_mostly_not() {
        let filter = DedupeFilter::new(1 << 20);
        let fp = |i: u64| shards::stable_hash(&[&i.to_le_bytes()]);
        for i in 0..50_000 {
            filter.insert(fp(i));
        }
        assert!(
            (0..50_000).all(|i| filter.may_contain(fp(i))),
            "no false negatives"
        );
        let false_positives = (50_000..150_000)
            .filter(|&i| filter.may_contain(fp(i)))
            .count();
        // 50k ids in 1 Mi bits with 4 probes: about 0.2% expected.
        assert!(
            false_positives < 1_000,
            "{false_positives} false positives in 100k"
        );
    }

    #[test]
    fn sizes_round_up_to_a_power_of_two() {
        assert_eq!(DedupeFilter::new(1000).mask, 1023);
        assert_eq!(DedupeFilter::new(1).mask, 63);
    }
}
