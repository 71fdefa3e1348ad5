//! Stable shard placement.
//!
//! Placement must not change across restarts, releases or machines: a
//! conversation id records the hash that placed it, and state on disk is
//! found again by recomputing hashes. So this is a fixed, documented
//! function (FNV-1a over the key's parts, then the SplitMix64 finaliser to
//! spread FNV's weak low bits), never `std`'s randomly keyed `DefaultHasher`.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Hashes a key made of several parts. Parts are separated by a byte that
/// cannot be confused with their contents' boundaries (each part is followed
/// by its length), so `("ab", "c")` and `("a", "bc")` hash differently.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h = FNV_OFFSET;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(FNV_PRIME);
        }
        for b in (part.len() as u64).to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(FNV_PRIME);
        }
    }
    mix(h)
}

/// SplitMix64's finaliser: every input bit affects every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The shard, among `shards`, that owns whatever hashed to `hash`.
pub fn shard_for(hash: u64, shards: usize) -> usize {
    assert!(shards > 0, "at least one shard");
    // Lemire's multiply-shift: uniform without a division.
    ((u128::from(hash) * shards as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_across_releases() {
        // Pinned values: if these change, every stored conversation moves.
        assert_eq!(
            stable_hash(&[b"acme", b"v-1"]),
            stable_hash(&[b"acme", b"v-1"])
        );
        assert_eq!(stable_hash(&[]), mix(FNV_OFFSET));
        let pinned = stable_hash(&[b"acme", b"visitor-42"]);
        assert_eq!(pinned, 0xb808_c1df_f895_c6e5, "{pinned:#x}");
    }

    #[test]
    fn part_boundaries_matter() {
        assert_ne!(stable_hash(&[b"ab", b"c"]), stable_hash(&[b"a", b"bc"]));
        assert_ne!(stable_hash(&[b"abc"]), stable_hash(&[b"abc", b""]));
    }

    #[test]
    fn placement_is_in_range_and_roughly_uniform() {
        for shards in 1..=8 {
            let mut counts = vec![0usize; shards];
            for i in 0..80_000u32 {
                let s = shard_for(stable_hash(&[b"t", &i.to_le_bytes()]), shards);
                counts[s] += 1;
            }
            let expected = 80_000 / shards;
            for c in counts {
                assert!(
                    c > expected * 9 / 10 && c < expected * 11 / 10,
                    "{shards}: {c}"
                );
            }
        }
    }
}
