//! The in-memory front of the dedupe index.
//!
//! `(sender, id)` must be stored once, forever; the store's dedupe index is
//! the authority. This cache answers resends of recent messages without a
//! store read and, more importantly, tracks ids whose first copy is still
//! on its way (being looked up, or waiting for its group commit), so that a
//! second copy arriving meanwhile waits for the first one's ack instead of
//! being appended again. Completed entries are evicted oldest first beyond
//! a bound; ids in flight are never evicted.

use std::collections::{HashMap, VecDeque};

use crate::ids::{ConnRef, ConvId};
use crate::model::DedupeKey;

/// Completed entries kept per shard.
pub const DEDUPE_CACHE: usize = 200_000;

/// What is known about one `(sender, id)`.
pub enum DedupeState {
    /// Its first copy is in flight; these connections also sent it and
    /// wait for the same ack (or error).
    InFlight(Vec<ConnRef>),
    /// Stored at `(conv, seq)`.
    Stored(ConvId, u64),
}

/// Recent and in-flight message ids of the senders this shard serves.
#[derive(Default)]
pub struct DedupeCache {
    /// Everything known.
    map: HashMap<DedupeKey, DedupeState>,
    /// Stored keys in the order they completed, for eviction.
    order: VecDeque<DedupeKey>,
}

impl DedupeCache {
    /// What is known about `key`.
    pub fn get_mut(&mut self, key: &DedupeKey) -> Option<&mut DedupeState> {
        self.map.get_mut(key)
    }

    /// Marks `key` as in flight (its first copy is being handled).
    pub fn begin(&mut self, key: DedupeKey) {
        self.map.insert(key, DedupeState::InFlight(Vec::new()));
    }

    /// The first copy was stored: returns the connections that sent copies meanwhile.
    pub fn complete(&mut self, key: &DedupeKey, conv: ConvId, seq: u64) -> Vec<ConnRef> {
        let waiters = match self.map.insert(key.clone(), DedupeState::Stored(conv, seq)) {
            Some(DedupeState::InFlight(waiters)) => waiters,
            _ => Vec::new(),
        };
        self.order.push_back(key.clone());
        while self.order.len() > DEDUPE_CACHE {
            if let Some(old) = self.order.pop_front() {
                if matches!(self.map.get(&old), Some(DedupeState::Stored(..))) {
                    self.map.remove(&old);
                }
            }
        }
        waiters
    }

    /// The first copy failed (or was found stored elsewhere): forget it and
    /// return the connections waiting on it.
    pub fn abandon(&mut self, key: &DedupeKey) -> Vec<ConnRef> {
        match self.map.remove(key) {
            Some(DedupeState::InFlight(waiters)) => waiters,
            Some(stored @ DedupeState::Stored(..)) => {
                self.map.insert(key.clone(), stored);
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    /// Records that `key` was found stored (by a store lookup).
    pub fn remember(&mut self, key: DedupeKey, conv: ConvId, seq: u64) -> Vec<ConnRef> {
        self.complete(&key, conv, seq)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Is the cache empty?
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
