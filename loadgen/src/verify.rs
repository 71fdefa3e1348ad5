//! End-to-end verification: every acked message delivered exactly once, in
//! `seq` order.
//!
//! Each client keeps, per conversation, a [`ConvView`]: the set of `seq`s
//! it holds (its own acked messages and every entry delivered to it), its
//! cumulative receipt cursor, and what the current connection delivered.
//! Each delivery is classified on the spot by [`ConvView::deliver`]:
//!
//! - **new**: a `seq` above everything this connection delivered, not held
//!   before: the normal case;
//! - **redelivered**: above everything this connection delivered, but held
//!   from an earlier connection. The gateway resends everything past the
//!   stored receipt cursor on every reconnection, and the cursor may lag
//!   what the client held, so this is expected after a reconnect, and the
//!   client drops it (the `seq` dedupe of PROTOCOL.md);
//! - **duplicated**: a `seq` this same connection already delivered;
//! - **reordered**: a `seq` below one this connection already delivered,
//!   and not delivered on it before (it arrived late, or a reconnection
//!   replayed it after newer entries).
//!
//! A connection must deliver each conversation's entries in increasing
//! `seq` order, so the last two are violations. Whether a message was
//! **lost** can only be decided at the end, across threads: each client
//! exports, per conversation, the `seq`s of its own acked messages and the
//! `seq`s it holds ([`ConvExport`]), and [`Verdict::merge`] counts, for
//! each conversation, the acked messages of one side that the other side
//! never held. A conversation that moved between agents counts as
//! delivered to the agent side if any agent held it.
//!
//! With `ids` on (soak), a conversation also records which `seq` each of
//! the other side's message ids arrived with: the same id under two `seq`s
//! means a resent message was stored twice, which counts as duplicated.

use std::collections::HashMap;

/// A set of `seq`s (which start at 1), as a growable bitmap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeqSet {
    /// Bit `s` of the concatenated words is set when `s` is in the set.
    words: Vec<u64>,
}

impl SeqSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `seq`; `true` if it was not in the set.
    pub fn insert(&mut self, seq: u64) -> bool {
        let (w, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if w >= self.words.len() {
            let grow = (w + 1).max(self.words.len() * 2).max(4);
            self.words.resize(grow, 0);
        }
        let fresh = self.words[w] & bit == 0;
        self.words[w] |= bit;
        fresh
    }

    /// Is `seq` in the set?
    pub fn contains(&self, seq: u64) -> bool {
        self.words
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1u64 << (seq % 64)) != 0)
    }

    /// How many `seq`s.
    pub fn len(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// No `seq`s at all?
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// Adds every `seq` of `other`.
    pub fn union_with(&mut self, other: &SeqSet) {
        if other.words.len() > self.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    /// How many `seq`s of `self` are not in `other`.
    pub fn count_missing_from(&self, other: &SeqSet) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, &w)| u64::from((w & !other.words.get(i).copied().unwrap_or(0)).count_ones()))
            .sum()
    }

    /// The `seq`s of `self` not in `other`, at most `limit` of them.
    pub fn missing_from(&self, other: &SeqSet, limit: usize) -> Vec<u64> {
        let mut out = Vec::new();
        for (i, &w) in self.words.iter().enumerate() {
            let mut m = w & !other.words.get(i).copied().unwrap_or(0);
            while m != 0 && out.len() < limit {
                out.push(i as u64 * 64 + u64::from(m.trailing_zeros()));
                m &= m - 1;
            }
        }
        out
    }

    /// Heap bytes.
    pub fn heap_bytes(&self) -> usize {
        self.words.capacity() * 8
    }
}

/// How one delivery was classified (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// First time held, in order.
    New,
    /// Held from an earlier connection, in order: dropped, not an error.
    Redelivered,
    /// Delivered twice on this connection.
    Duplicated,
    /// Out of `seq` order on this connection.
    Reordered {
        /// The entry was not held before (it still counts as delivered).
        fresh: bool,
    },
}

/// What one client knows of one conversation.
#[derive(Clone, Debug, Default)]
pub struct ConvView {
    /// Every `seq` held: own acked messages and every delivered entry.
    pub held: SeqSet,
    /// The `seq`s of this client's own acked messages.
    pub own: SeqSet,
    /// The receipt cursor: every `seq` in `1..=contiguous` is held.
    pub contiguous: u64,
    /// The last cursor sent in a `recv`.
    pub receipt_sent: u64,
    /// The first `seq` the current connection delivered (0: none yet).
    pub conn_first: u64,
    /// The highest `seq` the current connection delivered.
    pub conn_max: u64,
    /// Other side's message id (hashed) → the `seq` it came with (soak).
    pub ids: Option<HashMap<u64, u64>>,
}

impl ConvView {
    /// A view; `track_ids` turns on the stored-twice check.
    pub fn new(track_ids: bool) -> Self {
        ConvView {
            ids: track_ids.then(HashMap::new),
            ..ConvView::default()
        }
    }

    /// A new connection begins: what it delivers is judged afresh.
    pub fn reconnected(&mut self) {
        self.conn_first = 0;
        self.conn_max = 0;
        // The gateway resends from its stored cursor: say it again.
        self.receipt_sent = 0;
    }

    /// Moves the receipt cursor over everything held after it.
    fn advance(&mut self) {
        while self.held.contains(self.contiguous + 1) {
            self.contiguous += 1;
        }
    }

    /// Our own message was acked with `seq`.
    pub fn acked(&mut self, seq: u64) {
        self.own.insert(seq);
        self.held.insert(seq);
        self.advance();
    }

    /// An entry was delivered on the current connection.
    pub fn deliver(&mut self, seq: u64) -> Delivery {
        let fresh = self.held.insert(seq);
        let verdict = if seq > self.conn_max {
            if self.conn_first == 0 {
                self.conn_first = seq;
            }
            self.conn_max = seq;
            if fresh {
                Delivery::New
            } else {
                Delivery::Redelivered
            }
        } else if !fresh && seq >= self.conn_first {
            Delivery::Duplicated
        } else {
            Delivery::Reordered { fresh }
        };
        if fresh {
            self.advance();
        }
        verdict
    }

    /// One of our own messages came back as an entry (a reconnection
    /// replays everything past the cursor, own messages included).
    pub fn own_entry(&mut self, seq: u64) {
        self.held.insert(seq);
        self.conn_max = self.conn_max.max(seq);
        if self.conn_first == 0 {
            self.conn_first = seq;
        }
        self.advance();
    }

    /// Records that the other side's message `id_hash` came with `seq`;
    /// `false` if it came before with another `seq` (stored twice).
    pub fn check_id(&mut self, id_hash: u64, seq: u64) -> bool {
        match self.ids.as_mut() {
            None => true,
            Some(ids) => *ids.entry(id_hash).or_insert(seq) == seq,
        }
    }

    /// A new cursor to send, if it moved since the last `recv`.
    pub fn receipt_due(&mut self) -> Option<u64> {
        (self.contiguous > self.receipt_sent).then(|| {
            self.receipt_sent = self.contiguous;
            self.contiguous
        })
    }
}

/// A stable 64-bit hash of a message id and its sender (FNV-1a).
pub fn id_hash(sender: &str, id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sender.bytes().chain([0u8]).chain(id.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Which side of a conversation a client is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The visitor who opened it.
    Visitor,
    /// An agent it is (or was) assigned to.
    Agent,
}

/// One client's record of one conversation, sent to the final merge.
#[derive(Clone, Debug)]
pub struct ConvExport {
    /// The conversation id.
    pub conv: Box<str>,
    /// The client's side.
    pub side: Side,
    /// `seq`s of the client's own acked messages.
    pub own: SeqSet,
    /// `seq`s the client held.
    pub held: SeqSet,
}

/// The merged result of the end-to-end check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Acked messages that the other side never held.
    pub lost: u64,
    /// Conversations with at least one lost message.
    pub conversations_with_loss: u64,
    /// Conversations seen.
    pub conversations: u64,
    /// A few examples of lost messages: (conversation, seq).
    pub examples: Vec<(String, u64)>,
}

impl Verdict {
    /// Merges every client's exports.
    pub fn merge(exports: impl IntoIterator<Item = ConvExport>) -> Verdict {
        #[derive(Default)]
        struct Both {
            visitor_own: SeqSet,
            visitor_held: SeqSet,
            agents_own: SeqSet,
            agents_held: SeqSet,
        }
        let mut convs: HashMap<Box<str>, Both> = HashMap::new();
        for e in exports {
            let both = convs.entry(e.conv).or_default();
            match e.side {
                Side::Visitor => {
                    both.visitor_own.union_with(&e.own);
                    both.visitor_held.union_with(&e.held);
                }
                Side::Agent => {
                    both.agents_own.union_with(&e.own);
                    both.agents_held.union_with(&e.held);
                }
            }
        }
        let mut verdict = Verdict {
            conversations: convs.len() as u64,
            ..Verdict::default()
        };
        let mut names: Vec<_> = convs.keys().cloned().collect();
        names.sort();
        for name in names {
            let b = &convs[&name];
            let lost = b.visitor_own.count_missing_from(&b.agents_held)
                + b.agents_own.count_missing_from(&b.visitor_held);
            if lost > 0 {
                verdict.lost += lost;
                verdict.conversations_with_loss += 1;
                for seq in b
                    .visitor_own
                    .missing_from(&b.agents_held, 3)
                    .into_iter()
                    .chain(b.agents_own.missing_from(&b.visitor_held, 3))
                {
                    if verdict.examples.len() < 10 {
                        verdict.examples.push((name.to_string(), seq));
                    }
                }
            }
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_sets() {
        let mut s = SeqSet::new();
        assert!(s.is_empty());
        assert!(s.insert(1));
        assert!(!s.insert(1));
        assert!(s.insert(64));
        assert!(s.insert(1000));
        assert!(s.contains(64) && !s.contains(63));
        assert_eq!(s.len(), 3);
        let mut t = SeqSet::new();
        t.insert(64);
        assert_eq!(s.count_missing_from(&t), 2);
        assert_eq!(s.missing_from(&t, 10), vec![1, 1000]);
        assert_eq!(t.count_missing_from(&s), 0);
        t.union_with(&s);
        assert_eq!(t, s);
    }

    #[test]
    fn in_order_deliveries_are_new_and_move_the_cursor() {
        let mut v = ConvView::new(false);
        v.acked(1); // our message
        for seq in 2..=5 {
            assert_eq!(v.deliver(seq), Delivery::New);
        }
        assert_eq!(v.contiguous, 5);
        assert_eq!(v.receipt_due(), Some(5));
        assert_eq!(v.receipt_due(), None);
        // A gap holds the cursor back until it is filled by our own ack.
        assert_eq!(v.deliver(7), Delivery::New);
        assert_eq!(v.contiguous, 5);
        v.acked(6);
        assert_eq!(v.contiguous, 7);
    }

    #[test]
    fn a_repeated_seq_on_one_connection_is_a_duplicate() {
        let mut v = ConvView::new(false);
        assert_eq!(v.deliver(1), Delivery::New);
        assert_eq!(v.deliver(2), Delivery::New);
        assert_eq!(v.deliver(2), Delivery::Duplicated);
        assert_eq!(v.deliver(1), Delivery::Duplicated);
        assert_eq!(v.deliver(3), Delivery::New);
    }

    #[test]
    fn a_lower_seq_that_was_not_held_is_reordered() {
        let mut v = ConvView::new(false);
        assert_eq!(v.deliver(1), Delivery::New);
        assert_eq!(v.deliver(3), Delivery::New);
        assert_eq!(v.deliver(2), Delivery::Reordered { fresh: true });
        assert_eq!(v.contiguous, 3, "it is still held");
    }

    #[test]
    fn replays_after_a_reconnection_are_redeliveries_not_errors() {
        let mut v = ConvView::new(false);
        for seq in 1..=4 {
            v.deliver(seq);
        }
        v.acked(5);
        v.reconnected();
        assert_eq!(v.receipt_due(), Some(5), "the cursor is sent again");
        // The gateway's stored cursor was 2: it replays 3.. then goes on.
        assert_eq!(v.deliver(3), Delivery::Redelivered);
        assert_eq!(v.deliver(4), Delivery::Redelivered);
        v.own_entry(5);
        assert_eq!(v.deliver(6), Delivery::New);
        // But a replay that goes backwards on the new connection is not in order.
        assert_eq!(v.deliver(4), Delivery::Duplicated);
        assert_eq!(v.deliver(2), Delivery::Reordered { fresh: false });
    }

    #[test]
    fn one_id_under_two_seqs_is_caught() {
        let mut v = ConvView::new(true);
        let h = id_hash("v1", "m1");
        assert!(v.check_id(h, 5));
        assert!(v.check_id(h, 5), "a redelivery is the same entry");
        assert!(!v.check_id(h, 9), "a second copy in the log");
        assert_ne!(id_hash("v1", "m1"), id_hash("v2", "m1"));
        let mut off = ConvView::new(false);
        assert!(off.check_id(h, 5) && off.check_id(h, 9));
    }

    fn export(conv: &str, side: Side, own: &[u64], delivered: &[u64]) -> ConvExport {
        let mut v = ConvView::new(false);
        for &s in own {
            v.acked(s);
        }
        for &s in delivered {
            v.deliver(s);
        }
        ConvExport {
            conv: conv.into(),
            side,
            own: v.own,
            held: v.held,
        }
    }

    #[test]
    fn the_merge_counts_acked_messages_the_other_side_never_held() {
        let verdict = Verdict::merge(vec![
            // c1: visitor's 1 and 4 acked; agent got 1..3 (system 2, 3), not 4.
            export("c1", Side::Visitor, &[1, 4], &[2, 3, 5]),
            export("c1", Side::Agent, &[5], &[1, 2, 3]),
            // c2: all delivered; the conversation moved between two agents.
            export("c2", Side::Visitor, &[1, 4, 5], &[2, 3]),
            export("c2", Side::Agent, &[], &[1, 2, 3, 4]),
            export("c2", Side::Agent, &[], &[1, 2, 3, 5]),
            // c3: never assigned: no agent ever held anything.
            export("c3", Side::Visitor, &[1, 2], &[]),
        ]);
        assert_eq!(verdict.conversations, 3);
        assert_eq!(verdict.lost, 1 + 2);
        assert_eq!(verdict.conversations_with_loss, 2);
        assert_eq!(
            verdict.examples,
            vec![
                ("c1".to_string(), 4),
                ("c3".to_string(), 1),
                ("c3".to_string(), 2)
            ]
        );
        // An agent reply the visitor never got is lost too.
        let verdict = Verdict::merge(vec![
            export("c", Side::Visitor, &[1], &[2, 3]),
            export("c", Side::Agent, &[4], &[1, 2, 3]),
        ]);
        assert_eq!(verdict.lost, 1);
    }
}
