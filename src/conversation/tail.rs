//! The recent entries of a conversation, kept as encoded frames.
//!
//! Replays after a reconnection, `sync` and `history` mostly ask for the
//! last few entries; keeping them as ready frames answers those from memory
//! with no store read and no re-encoding. The tail is bounded in entries
//! and bytes, so a long conversation costs no more than a short one.

use std::collections::VecDeque;

use bytes::Bytes;

/// Entries kept per conversation, at most.
pub const TAIL_ENTRIES: usize = 32;
/// Bytes of frames kept per conversation, at most (the newest entry is always kept).
pub const TAIL_BYTES: usize = 16 * 1024;

/// The newest durable entries of one conversation, by seq, contiguous.
#[derive(Default)]
pub struct Tail {
    /// Frames for seqs `first ..= first + len - 1`.
    frames: VecDeque<Bytes>,
    /// The seq of `frames[0]`.
    first: u64,
    /// Sum of the frames' lengths.
    bytes: usize,
}

impl Tail {
    /// Adds the frame of the next durable entry. Seqs must come in order
    /// without gaps; a gap (never expected) restarts the tail there.
    pub fn push(&mut self, seq: u64, frame: Bytes) {
        if self.frames.is_empty() || seq != self.first + self.frames.len() as u64 {
            self.frames.clear();
            self.bytes = 0;
            self.first = seq;
        }
        self.bytes += frame.len();
        self.frames.push_back(frame);
        while self.frames.len() > TAIL_ENTRIES || (self.bytes > TAIL_BYTES && self.frames.len() > 1)
        {
            if let Some(old) = self.frames.pop_front() {
                self.bytes -= old.len();
                self.first += 1;
            }
        }
    }

    /// The oldest seq held, or `None` when empty.
    pub fn first_seq(&self) -> Option<u64> {
        (!self.frames.is_empty()).then_some(self.first)
    }

    /// Does the tail hold every seq from `from` up to the newest?
    pub fn covers_from(&self, from: u64) -> bool {
        match self.first_seq() {
            Some(first) => from >= first,
            None => false,
        }
    }

    /// Frames for `from ..= to`, clipped to what the tail holds.
    pub fn range(&self, from: u64, to: u64) -> impl Iterator<Item = &Bytes> {
        let start = from.saturating_sub(self.first) as usize;
        let end = (to + 1)
            .saturating_sub(self.first)
            .min(self.frames.len() as u64) as usize;
        self.frames.range(start.min(end)..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_entries_within_bounds() {
        let mut tail = Tail::default();
        assert!(!tail.covers_from(1));
        for seq in 1..=100u64 {
            tail.push(seq, Bytes::from(vec![b'x'; 10]));
        }
        assert_eq!(tail.first_seq(), Some(100 - TAIL_ENTRIES as u64 + 1));
        assert!(tail.covers_from(90) && !tail.covers_from(60));
        let got: Vec<_> = tail.range(95, 97).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(tail.range(99, 500).count(), 2);
        assert_eq!(tail.range(101, 500).count(), 0);
    }

    #[test]
    fn bytes_bound_keeps_at_least_the_newest() {
        let mut tail = Tail::default();
        tail.push(1, Bytes::from(vec![0; TAIL_BYTES]));
        tail.push(2, Bytes::from(vec![0; TAIL_BYTES * 2]));
        assert_eq!(tail.first_seq(), Some(2));
        assert_eq!(tail.range(1, 2).count(), 1);
    }
}
