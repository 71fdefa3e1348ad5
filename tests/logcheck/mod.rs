//! Reading a conversation's whole log and checking the guarantees on it, and
//! following what one connection receives (shared by the durability,
//! restart and cross-shard tests).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use crate::common::Client;

/// One log entry, as a `msg` frame shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its seq.
    pub seq: u64,
    /// `from.role`: visitor, agent, system, bot.
    pub role: String,
    /// `from.id` (system entries have none).
    pub from: Option<String>,
    /// The client's message id (chat messages only).
    pub id: Option<String>,
    /// The text (chat messages only).
    pub text: Option<String>,
    /// The event (system entries only).
    pub event: Option<String>,
}

impl Entry {
    /// The entry a `msg` frame carries.
    pub fn of(frame: &Value) -> Entry {
        let s = |v: &Value| v.as_str().map(str::to_string);
        Entry {
            seq: frame["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("msg without seq: {frame}")),
            role: s(&frame["from"]["role"]).unwrap_or_default(),
            from: s(&frame["from"]["id"]),
            id: s(&frame["id"]),
            text: s(&frame["text"]),
            event: s(&frame["event"]),
        }
    }
}

/// Reads the whole log of `conv` with `sync after 0`. Frames of other
/// conversations, acks and queue positions that arrive meanwhile are
/// returned in the second vector.
pub fn sync_all(client: &mut Client, conv: &str) -> (Vec<Entry>, Vec<Value>) {
    client.send(json!({"type": "sync", "conv": conv, "after": 0}));
    let mut entries = Vec::new();
    let mut other = Vec::new();
    loop {
        let v = client.recv();
        match v["type"].as_str() {
            Some("msg") if v["conv"] == conv => entries.push(Entry::of(&v)),
            Some("synced") if v["conv"] == conv => {
                let last = v["last_seq"].as_u64().expect("last_seq");
                assert_eq!(
                    entries.last().map_or(0, |e: &Entry| e.seq),
                    last,
                    "synced.last_seq is the last entry sent"
                );
                return (entries, other);
            }
            _ => other.push(v),
        }
    }
}

/// A log checked for the invariants every log must hold: seqs `1..=last`
/// without gaps or repeats, and each `(sender, id)` stored once.
pub struct Log {
    /// Entries by seq.
    pub entries: BTreeMap<u64, Entry>,
    /// `(sender id, message id)` to seq.
    pub by_id: HashMap<(String, String), u64>,
}

impl Log {
    /// Checks `entries` (as read, in order) and indexes them. Panics with
    /// the offending entries on any violation.
    pub fn check(conv: &str, entries: Vec<Entry>) -> Log {
        let mut by_seq = BTreeMap::new();
        let mut by_id: HashMap<(String, String), u64> = HashMap::new();
        for (i, e) in entries.into_iter().enumerate() {
            assert_eq!(
                e.seq,
                i as u64 + 1,
                "{conv}: seqs must run 1, 2, 3, ... in order without gaps; found {e:?} at position {i}"
            );
            if let Some(id) = &e.id {
                let sender = e.from.clone().expect("a chat message names its sender");
                if let Some(first) = by_id.insert((sender.clone(), id.clone()), e.seq) {
                    panic!(
                        "{conv}: message {id} of {sender} stored twice, at seq {first} and {}",
                        e.seq
                    );
                }
            }
            by_seq.insert(e.seq, e);
        }
        Log {
            entries: by_seq,
            by_id,
        }
    }

    /// The last seq (0 when empty).
    pub fn last(&self) -> u64 {
        self.entries.keys().next_back().copied().unwrap_or(0)
    }

    /// Where `sender`'s message `id` is stored.
    pub fn seq_of(&self, sender: &str, id: &str) -> Option<u64> {
        self.by_id
            .get(&(sender.to_string(), id.to_string()))
            .copied()
    }
}

/// What one connection (one device) has received of one conversation,
/// checked as it arrives: the first delivery of every seq comes in order
/// with no gap; a seq delivered again (a replay after a reconnection) must
/// be the same entry.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Every seq up to this one has been received.
    pub held: u64,
    /// Entries received, by seq.
    pub entries: BTreeMap<u64, Entry>,
    /// Deliveries of a seq already held.
    pub repeats: u64,
    /// What went wrong (empty when all is well).
    pub violations: Vec<String>,
}

impl View {
    /// A view that starts out holding `1..=held` (e.g. from an earlier run).
    pub fn holding(held: u64, entries: BTreeMap<u64, Entry>) -> View {
        View {
            held,
            entries,
            ..View::default()
        }
    }

    /// Takes one delivered entry.
    pub fn take(&mut self, e: Entry) {
        if e.seq <= self.held {
            self.repeats += 1;
            if let Some(known) = self.entries.get(&e.seq) {
                if *known != e {
                    self.violations.push(format!(
                        "seq {} delivered as {e:?}, earlier as {known:?}",
                        e.seq
                    ));
                }
            }
            return;
        }
        if e.seq != self.held + 1 {
            self.violations.push(format!(
                "gap: holding 1..={}, then seq {} arrived",
                self.held, e.seq
            ));
        }
        self.held = e.seq;
        self.entries.insert(e.seq, e);
    }

    /// Panics with the violations, if any.
    pub fn assert_ok(&self, who: &str) {
        assert!(
            self.violations.is_empty(),
            "{who}: delivery violations:\n{}",
            self.violations.join("\n")
        );
    }
}
