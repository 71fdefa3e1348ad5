//! The ordered queue of one tenant, with a per-skill index and coalesced
//! position bookkeeping.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound::{Excluded, Included, Unbounded};
use std::sync::Arc;

use crate::ids::ConvId;

use super::RouterAction;

/// The three classes of the queue, in the order they are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Class {
    /// Requeued because its agent left or handed it back.
    Front = 0,
    /// VIP visitors.
    Vip = 1,
    /// Everyone else.
    Normal = 2,
}

/// A conversation's place in the queue: total order, unique per insertion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct QueueKey {
    /// Served class first.
    class: Class,
    /// Then the time it entered the queue.
    time_ms: u64,
    /// Then arrival order in the router (also makes keys unique).
    seq: u64,
}

impl QueueKey {
    /// The last possible key of `class`.
    fn class_end(class: Class) -> QueueKey {
        QueueKey {
            class,
            time_ms: u64::MAX,
            seq: u64::MAX,
        }
    }
}

/// One queued conversation.
#[derive(Debug)]
struct Slot {
    /// The conversation.
    conv: ConvId,
    /// The last position sent for it, if any.
    last_sent: Option<u32>,
}

/// The skill a conversation needs (`None`: any agent).
pub(super) type Skill = Option<Arc<str>>;

/// The queue: global order, per-skill order, class sizes.
#[derive(Debug, Default)]
pub(super) struct Queue {
    /// Every queued conversation in service order.
    order: BTreeMap<QueueKey, Slot>,
    /// The same keys, split by the skill they need (no empty sets kept).
    lanes: HashMap<Skill, BTreeSet<QueueKey>>,
    /// How many conversations each class holds, indexed by `Class as usize`.
    counts: [usize; 3],
    /// Arrival counter for keys.
    next_seq: u64,
    /// Something was inserted or removed since positions were last walked.
    dirty: bool,
}

/// Converts a position to the wire type (a queue of 4 billion is not a thing).
fn pos(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Queue {
    /// Number of queued conversations.
    pub(super) fn len(&self) -> usize {
        self.order.len()
    }

    /// Is nothing queued?
    pub(super) fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Number of queued conversations in `class`.
    pub(super) fn count(&self, class: Class) -> usize {
        self.counts[class as usize]
    }

    /// Queues `conv` (needing `skill`) in `class` at `time_ms`; returns its key.
    pub(super) fn insert(
        &mut self,
        class: Class,
        time_ms: u64,
        conv: ConvId,
        skill: &Skill,
    ) -> QueueKey {
        let key = QueueKey {
            class,
            time_ms,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        self.order.insert(
            key,
            Slot {
                conv,
                last_sent: None,
            },
        );
        self.lanes.entry(skill.clone()).or_default().insert(key);
        self.counts[class as usize] += 1;
        self.dirty = true;
        key
    }

    /// Removes the conversation at `key` (which needs `skill`).
    pub(super) fn remove(&mut self, key: QueueKey, skill: &Skill) {
        let removed = self.order.remove(&key);
        debug_assert!(removed.is_some(), "removing a key not in the queue");
        if removed.is_none() {
            return;
        }
        if let Some(lane) = self.lanes.get_mut(skill) {
            lane.remove(&key);
            if lane.is_empty() {
                self.lanes.remove(skill);
            }
        }
        self.counts[key.class as usize] -= 1;
        self.dirty = true;
    }

    /// The conversation at `key`.
    pub(super) fn conv(&self, key: QueueKey) -> &ConvId {
        &self.order[&key].conv
    }

    /// The 1-based position of `key`, which must be queued: `O(log Q)` plus
    /// the number of conversations after it in its class.
    pub(super) fn rank(&self, key: QueueKey) -> u32 {
        let before_class: usize = self.counts[..key.class as usize].iter().sum();
        let after_in_class = self
            .order
            .range((Excluded(key), Included(QueueKey::class_end(key.class))))
            .count();
        pos(before_class + self.counts[key.class as usize] - after_in_class)
    }

    /// Computes the position of `key` now and records it as sent.
    pub(super) fn position_now(&mut self, key: QueueKey) -> u32 {
        let position = self.rank(key);
        if let Some(slot) = self.order.get_mut(&key) {
            slot.last_sent = Some(position);
        }
        position
    }

    /// Pushes a `QueuePosition` for every queued conversation whose position
    /// is not the last one sent for it. `O(1)` if nothing changed since the
    /// last walk, else `O(Q)`.
    pub(super) fn position_updates(&mut self, out: &mut Vec<RouterAction>) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        for (i, slot) in self.order.values_mut().enumerate() {
            let position = pos(i + 1);
            if slot.last_sent != Some(position) {
                slot.last_sent = Some(position);
                out.push(RouterAction::QueuePosition {
                    conv: slot.conv.clone(),
                    position,
                });
            }
        }
    }

    /// The skills some queued conversation needs.
    pub(super) fn skills(&self) -> impl Iterator<Item = &Skill> {
        self.lanes.keys()
    }

    /// The first key needing `skill` after `after` (from the start: `None`).
    pub(super) fn lane_next(&self, skill: &Skill, after: Option<QueueKey>) -> Option<QueueKey> {
        let lane = self.lanes.get(skill)?;
        match after {
            None => lane.first().copied(),
            Some(after) => lane.range((Excluded(after), Unbounded)).next().copied(),
        }
    }

    /// Every key in service order (the reference pass of the tests).
    #[cfg(test)]
    pub(super) fn keys(&self) -> impl Iterator<Item = QueueKey> + '_ {
        self.order.keys().copied()
    }

    /// Checks the internal bookkeeping (tests).
    #[cfg(test)]
    pub(super) fn check(&self) {
        let mut counts = [0usize; 3];
        for key in self.order.keys() {
            counts[key.class as usize] += 1;
        }
        assert_eq!(counts, self.counts, "class counts");
        let lane_total: usize = self.lanes.values().map(BTreeSet::len).sum();
        assert_eq!(lane_total, self.order.len(), "lanes hold every key once");
        for lane in self.lanes.values() {
            assert!(!lane.is_empty(), "no empty lane kept");
            for key in lane {
                assert!(self.order.contains_key(key), "lane key not queued");
            }
        }
    }

    /// Does the lane of `skill` hold `key` (tests)?
    #[cfg(test)]
    pub(super) fn lane_has(&self, skill: &Skill, key: QueueKey) -> bool {
        self.lanes
            .get(skill)
            .is_some_and(|lane| lane.contains(&key))
    }

    /// The last position sent for `key` (tests).
    #[cfg(test)]
    pub(super) fn last_sent(&self, key: QueueKey) -> Option<u32> {
        self.order.get(&key).and_then(|slot| slot.last_sent)
    }
}
