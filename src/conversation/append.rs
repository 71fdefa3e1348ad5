//! The append pipeline: from a client's `msg` to a durable, acknowledged,
//! delivered log entry.
//!
//! ```text
//!  Submit ──► dedupe cache ──hit──► original ack
//!                 │ miss
//!                 ▼
//!           store lookup (blocking pool, batched) ──found──► original ack
//!                 │ new
//!                 ▼
//!            accept: checks, conversation resolved or opened,
//!            entry queued (no seq yet)
//!                 │
//!                 ▼
//!   group commit (one in flight per shard; whatever queued meanwhile
//!   forms the next batch): seqs assigned in queue order, one sled batch,
//!   flush, fdatasync, all on the blocking pool
//!                 │ durable
//!                 ▼
//!       ack to the sender, the frame (encoded once) to every subscriber
//! ```
//!
//! Seqs are assigned when a batch is built, not when an entry is accepted,
//! so a failed commit only has to roll back the one batch in flight: its
//! chat messages get `unavailable` (the client retries with the same id),
//! its system entries go back to the front of the queue, and the
//! conversations' next seq returns to their last durable seq. No gap, and
//! never two entries with one seq.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shards::event::Event;
use shards::notify::Notify;

use super::dedupe::DedupeState;
use super::{visitor_placement, Conversation, Conversations};
use crate::ids::{ConnRef, ConvId, Participant, Role, TenantId, UserId};
use crate::metrics::add;
use crate::model::{
    now_ms, AuthorRole, ConvMeta, ConvState, DedupeHit, DedupeKey, Entry, Event as LogEvent,
    VisitorMeta,
};
use crate::protocol::{server, ErrorCode};
use crate::routing::ConvInfo;
use crate::shard::envelope::{Envelope, Submit};
use crate::shard::Shard;
use crate::store::{CommitBatch, Op};

/// What happens after a system entry becomes durable.
#[derive(Debug)]
pub enum FollowUp {
    /// Nothing more.
    Nothing,
    /// The conversation went to `agent`: deliver it to these connections
    /// from seq 1, and stop delivering to `previous`.
    Assigned {
        /// The new agent.
        agent: UserId,
        /// The new agent's connections.
        conns: Vec<ConnRef>,
        /// The agent it was taken from.
        previous: Option<UserId>,
    },
    /// The conversation went back to the queue: stop delivering to `previous`.
    Requeued {
        /// The agent it was taken from.
        previous: UserId,
    },
    /// The conversation closed: stop delivering to anyone.
    Closed,
    /// A new conversation's `queued` entry is durable: routing may start.
    Route(ConvInfo),
}

/// Where an entry came from.
#[derive(Debug)]
pub enum Origin {
    /// A client's `msg`: ack the sender's connection.
    Client {
        /// The sending connection.
        conn: ConnRef,
        /// The dedupe key.
        key: DedupeKey,
    },
    /// The gateway's own entry.
    System(FollowUp),
}

/// An accepted entry waiting for its group commit.
#[derive(Debug)]
pub struct PendingEntry {
    /// Tenant.
    pub tenant: TenantId,
    /// Conversation.
    pub conv: ConvId,
    /// The entry (its seq is set when the batch is built).
    pub entry: Entry,
    /// Who to tell when it is durable.
    pub origin: Origin,
}

/// A batch on its way to disk: what to do when it lands.
struct InFlight {
    /// The entries' conversations, seqs and origins, in log order.
    entries: Vec<(TenantId, ConvId, u64, Origin)>,
    /// Conversation states written by this batch.
    convs: Vec<(TenantId, ConvId)>,
    /// Cursors written by this batch.
    cursors: Vec<((TenantId, ConvId, Participant), u64)>,
    /// Visitor records written by this batch.
    visitors: Vec<((TenantId, UserId), VisitorMeta)>,
}

/// The pipeline's queues on one shard.
#[derive(Default)]
pub struct Appender {
    /// Submissions whose id missed the cache, waiting for a store lookup.
    lookups: RefCell<Vec<(Box<Submit>, DedupeKey)>>,
    /// Wakes the lookup task.
    lookup_wake: Notify,
    /// When receipt cursors were last written (`None`: never).
    cursors_written: Cell<Option<Instant>>,
    /// Submissions handed to the lookup task so far.
    lookups_queued: Cell<u64>,
    /// Of those, how many it has accepted or answered.
    lookups_done: Cell<u64>,
    /// Fired after each lookup batch.
    lookups_progress: Event,
    /// Accepted entries waiting for the next group commit, in log order.
    pending: RefCell<VecDeque<PendingEntry>>,
    /// Conversation states to write with the next commit.
    dirty_convs: RefCell<HashSet<(TenantId, ConvId)>>,
    /// Receipt cursors to write with the next commit.
    dirty_cursors: RefCell<HashMap<(TenantId, ConvId, Participant), u64>>,
    /// Visitor records to write with the next commit.
    dirty_visitors: RefCell<HashMap<(TenantId, UserId), VisitorMeta>>,
    /// Wakes the commit task.
    commit_wake: Notify,
    /// Entries in the commit in flight.
    in_flight: Cell<usize>,
    /// Fired after every commit (for drains waiting for the pipeline to empty).
    pub committed: Event,
}

impl Appender {
    /// Is there anything left to write?
    pub fn is_idle(&self) -> bool {
        self.in_flight.get() == 0
            && self.pending.borrow().is_empty()
            && self.lookups.borrow().is_empty()
            && self.dirty_convs.borrow().is_empty()
            && self.dirty_cursors.borrow().is_empty()
            && self.dirty_visitors.borrow().is_empty()
    }

    /// If submissions wait for (or are in) a lookup: the count to wait for
    /// with [`Appender::lookups_reach`], so that a command comes after the
    /// messages its connection sent before it.
    pub fn lookups_target(&self) -> Option<u64> {
        let queued = self.lookups_queued.get();
        (queued > self.lookups_done.get()).then_some(queued)
    }

    /// Completes once `target` submissions have been accepted or answered.
    pub async fn lookups_reach(&self, target: u64) {
        while self.lookups_done.get() < target {
            self.lookups_progress.listen().await;
        }
    }

    /// Entries accepted and not yet durable.
    pub fn pending_entries(&self) -> usize {
        self.pending.borrow().len() + self.in_flight.get()
    }

    /// Wakes the commit task (a drain makes waiting cursors due at once).
    pub fn nudge(&self) {
        self.commit_wake.notify();
    }

    /// Queues an accepted entry.
    pub fn push(&self, entry: PendingEntry) {
        self.pending.borrow_mut().push_back(entry);
        self.commit_wake.notify();
    }

    /// Marks a conversation's state for writing.
    pub fn conv_changed(&self, tenant: &TenantId, conv: &ConvId) {
        self.dirty_convs
            .borrow_mut()
            .insert((tenant.clone(), conv.clone()));
        self.commit_wake.notify();
    }

    /// Records a receipt cursor for writing (the newest wins).
    pub fn cursor_changed(&self, tenant: &TenantId, conv: &ConvId, who: &Participant, seq: u64) {
        self.dirty_cursors
            .borrow_mut()
            .insert((tenant.clone(), conv.clone(), who.clone()), seq);
        self.commit_wake.notify();
    }

    /// Records a visitor record for writing.
    pub fn visitor_changed(&self, tenant: &TenantId, visitor: &UserId, meta: VisitorMeta) {
        self.dirty_visitors
            .borrow_mut()
            .insert((tenant.clone(), visitor.clone()), meta);
        self.commit_wake.notify();
    }
}

/// Entries per group commit, at most: a commit is one sled batch, and a
/// bounded batch keeps each commit's latency (and the acks waiting on it)
/// bounded when the shard falls behind; the rest waits for the next commit.
pub const MAX_BATCH_ENTRIES: usize = 2048;

/// Receipt cursors are written at most this often (see `cursors_due`).
pub const CURSOR_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Longest wait between retries of a failing commit.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl Shard {
    // ----- intake -----

    /// A chat message arrived at its conversation's shard.
    pub fn on_submit(&self, submit: Box<Submit>) {
        let key = DedupeKey {
            tenant: submit.tenant.clone(),
            sender: submit.sender.clone(),
            client_id: submit.client_id.clone(),
        };
        let mut convs = self.convs.borrow_mut();
        match convs.dedupe.get_mut(&key) {
            Some(DedupeState::Stored(conv, seq)) => {
                let frame = server::ack(&submit.client_id, conv.as_str(), *seq);
                drop(convs);
                add(&self.metrics.duplicates, 1);
                add(&self.metrics.acks, 1);
                self.frame_to(submit.conn, frame);
            }
            Some(DedupeState::InFlight(waiters)) => waiters.push(submit.conn),
            None => {
                convs.dedupe.begin(key.clone());
                // Fast path: the filter says this id was certainly never
                // stored, the conversation (if named) is in memory, and no
                // earlier message waits for a lookup (it must not be
                // overtaken). Nearly every new message takes it.
                let named_in_memory = submit.conv.as_ref().is_none_or(|c| {
                    convs
                        .convs
                        .contains_key(&(submit.tenant.clone(), c.clone()))
                });
                drop(convs);
                if named_in_memory
                    && self.appender.lookups_target().is_none()
                    && !self
                        .dedupe_filter
                        .may_contain(crate::store::dedupe_fingerprint(&key))
                {
                    add(&self.metrics.dedupe_filter_skips, 1);
                    return self.accept_message(submit, key, &HashMap::new());
                }
                self.appender.lookups.borrow_mut().push((submit, key));
                let queued = &self.appender.lookups_queued;
                queued.set(queued.get() + 1);
                self.appender.lookup_wake.notify();
            }
        }
    }

    /// The lookup task: batches store lookups for ids the cache did not
    /// know, then accepts the new ones in arrival order.
    pub async fn run_lookups(self: Rc<Self>) {
        loop {
            if self.appender.lookups.borrow().is_empty() {
                self.appender.lookup_wake.notified().await;
                continue;
            }
            let batch = std::mem::take(&mut *self.appender.lookups.borrow_mut());
            let batch_len = batch.len() as u64;
            let keys: Vec<DedupeKey> = batch.iter().map(|(_, key)| key.clone()).collect();
            // Conversations named but not in memory: closed, or unknown.
            let missing: Vec<(TenantId, ConvId)> = {
                let convs = self.convs.borrow();
                batch
                    .iter()
                    .filter_map(|(s, _)| s.conv.as_ref().map(|c| (s.tenant.clone(), c.clone())))
                    .filter(|key| !convs.convs.contains_key(key))
                    .collect()
            };
            let store = self.store.clone();
            let answer = glommio::executor()
                .spawn_blocking(move || {
                    let hits = store.lookup_dedupe(&keys)?;
                    let mut metas = HashMap::new();
                    for (tenant, conv) in missing {
                        let meta = store.conv(&tenant, &conv)?;
                        metas.insert((tenant, conv), meta);
                    }
                    Ok::<_, crate::store::StoreError>((hits, metas))
                })
                .await;
            match answer {
                Ok((hits, metas)) => {
                    for ((submit, key), hit) in batch.into_iter().zip(hits) {
                        match hit {
                            Some(hit) => self.answer_stored(&submit, key, hit),
                            None => self.accept_message(submit, key, &metas),
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(shard = self.id, error = %e, "dedupe lookup failed");
                    for (submit, key) in batch {
                        self.refuse(
                            &submit,
                            key,
                            ErrorCode::Unavailable,
                            "the message was not stored, retry later",
                        );
                    }
                }
            }
            let done = &self.appender.lookups_done;
            done.set(done.get() + batch_len);
            self.appender.lookups_progress.fire();
        }
    }

    /// The id was already stored: answer with the original ack.
    fn answer_stored(&self, submit: &Submit, key: DedupeKey, hit: DedupeHit) {
        let waiters = self
            .convs
            .borrow_mut()
            .dedupe
            .remember(key, hit.conv.clone(), hit.seq);
        let frame = server::ack(&submit.client_id, hit.conv.as_str(), hit.seq);
        add(&self.metrics.duplicates, 1 + waiters.len() as u64);
        add(&self.metrics.acks, 1 + waiters.len() as u64);
        for conn in std::iter::once(submit.conn).chain(waiters) {
            self.frame_to(conn, frame.clone());
        }
    }

    /// Refuses a message (and its copies that arrived meanwhile).
    fn refuse(&self, submit: &Submit, key: DedupeKey, code: ErrorCode, message: &str) {
        let waiters = self.convs.borrow_mut().dedupe.abandon(&key);
        for conn in std::iter::once(submit.conn).chain(waiters) {
            self.error_to(conn, code, message, Some(&submit.client_id));
        }
    }

    /// A new message: find or open its conversation, check the sender may
    /// write there, and queue the entry.
    fn accept_message(
        &self,
        submit: Box<Submit>,
        key: DedupeKey,
        stored: &HashMap<(TenantId, ConvId), Option<ConvMeta>>,
    ) {
        let mut guard = self.convs.borrow_mut();
        let convs = &mut *guard;
        let (conv_id, opened) = match &submit.conv {
            Some(conv) => {
                let lookup = (submit.tenant.clone(), conv.clone());
                match convs.convs.get(&lookup) {
                    Some(c) if !c.is_participant(&submit.sender) => {
                        drop(guard);
                        return self.refuse(
                            &submit,
                            key,
                            ErrorCode::Forbidden,
                            "not a participant of this conversation",
                        );
                    }
                    Some(c) if c.meta.state == ConvState::Closed => {
                        drop(guard);
                        return self.refuse(
                            &submit,
                            key,
                            ErrorCode::Closed,
                            "the conversation is closed",
                        );
                    }
                    Some(_) => (conv.clone(), false),
                    None => {
                        drop(guard);
                        let (code, message) = match stored.get(&lookup) {
                            Some(Some(meta)) if meta.state == ConvState::Closed => {
                                (ErrorCode::Closed, "the conversation is closed")
                            }
                            _ => (ErrorCode::NotFound, "no such conversation"),
                        };
                        return self.refuse(&submit, key, code, message);
                    }
                }
            }
            None if submit.sender.role == Role::Agent => {
                drop(guard);
                return self.refuse(
                    &submit,
                    key,
                    ErrorCode::BadRequest,
                    "an agent must name a `conv`",
                );
            }
            None => {
                let open = convs
                    .visitors
                    .get(&(submit.tenant.clone(), submit.sender.id.clone()))
                    .and_then(|v| v.open_conv.clone())
                    .filter(|id| {
                        convs
                            .convs
                            .get(&(submit.tenant.clone(), id.clone()))
                            .is_some_and(|c| c.meta.state != ConvState::Closed)
                    });
                match open {
                    Some(id) => (id, false),
                    None => (self.open_conversation(convs, &submit), true),
                }
            }
        };
        let entry = Entry {
            seq: 0,
            ts_ms: now_ms(),
            author: AuthorRole::from(submit.sender.role),
            author_id: Some(submit.sender.id.clone()),
            author_name: submit.sender_name.clone(),
            client_id: Some(submit.client_id.clone()),
            text: Some(submit.text.clone()),
            event: None,
        };
        let conv = convs
            .convs
            .get_mut(&(submit.tenant.clone(), conv_id.clone()))
            .expect("resolved above");
        conv.unflushed += 1;
        self.appender.push(PendingEntry {
            tenant: submit.tenant.clone(),
            conv: conv_id,
            entry,
            origin: Origin::Client {
                conn: submit.conn,
                key,
            },
        });
        if opened {
            // The log of a new conversation reads: the message, then
            // `queued`; routing starts once both are durable.
            let info = ConvInfo {
                conv: conv.id.clone(),
                visitor: conv.meta.visitor.clone(),
                skill: conv.meta.skill.clone(),
                lang: conv.meta.lang.clone(),
                vip: conv.meta.vip,
                queued_ms: conv.meta.queued_ms,
            };
            self.push_system(conv, LogEvent::Queued, FollowUp::Route(info));
        }
    }

    /// Opens a new conversation for a visitor's first message: its log gets
    /// the message, then a `queued` entry, and routing hears of it.
    fn open_conversation(&self, convs: &mut Conversations, submit: &Submit) -> ConvId {
        let tenant = submit.tenant.clone();
        let visitor_id = submit.sender.id.clone();
        let placement = visitor_placement(&tenant, &visitor_id);
        let id = loop {
            let id = ConvId::generate(placement);
            if !convs.convs.contains_key(&(tenant.clone(), id.clone())) {
                break id;
            }
        };
        let profile = submit.visitor.clone().unwrap_or_default();
        let now = now_ms();
        let meta = ConvMeta {
            visitor: visitor_id.clone(),
            visitor_name: profile.name.clone(),
            state: ConvState::Queued,
            skill: profile.skill.clone(),
            lang: profile.lang.clone(),
            vip: profile.vip,
            created_ms: now,
            queued_ms: now,
            queue_front: false,
            excluded_agent: None,
            assigned_ms: 0,
            served_by: None,
        };
        let mut conv = Conversation::new(tenant.clone(), id.clone(), meta, 0);
        let visitor = convs
            .visitors
            .entry((tenant.clone(), visitor_id.clone()))
            .or_default();
        for conn in &visitor.conns {
            conv.subscribe(submit.sender.clone(), *conn, false);
        }
        visitor.open_conv = Some(id.clone());
        convs.convs.insert((tenant.clone(), id.clone()), conv);
        self.appender.conv_changed(&tenant, &id);
        id
    }

    /// Queues a system entry.
    pub fn push_system(&self, conv: &mut Conversation, event: LogEvent, follow: FollowUp) {
        conv.unflushed += 1;
        self.appender.push(PendingEntry {
            tenant: conv.tenant.clone(),
            conv: conv.id.clone(),
            entry: Entry {
                seq: 0,
                ts_ms: now_ms(),
                author: AuthorRole::System,
                author_id: None,
                author_name: None,
                client_id: None,
                text: None,
                event: Some(event),
            },
            origin: Origin::System(follow),
        });
    }

    // ----- group commit -----

    /// The commit task: one group commit in flight at a time; everything
    /// accepted meanwhile forms the next one.
    pub async fn run_commits(self: Rc<Self>) {
        let mut backoff = Duration::ZERO;
        loop {
            if !self.has_commit_work() {
                if self.appender.dirty_cursors.borrow().is_empty() {
                    self.appender.commit_wake.notified().await;
                } else {
                    // Only cursors wait: write them when they are due.
                    let since = self
                        .appender
                        .cursors_written
                        .get()
                        .map_or(CURSOR_FLUSH_INTERVAL, |at| at.elapsed());
                    let due = CURSOR_FLUSH_INTERVAL.saturating_sub(since);
                    futures_lite::future::or(
                        self.appender.commit_wake.notified(),
                        glommio::timer::sleep(due),
                    )
                    .await;
                }
                continue;
            }
            let (batch, in_flight) = self.build_batch();
            let entries = in_flight.entries.len();
            self.appender.in_flight.set(entries);
            let store = self.store.clone();
            let started = Instant::now();
            let (result, batch) = glommio::executor()
                .spawn_blocking(move || {
                    let result = store.commit(&batch).map(|stats| {
                        // Encode each entry's frame here, off the executor:
                        // once, for every recipient.
                        let frames: Vec<Bytes> = batch
                            .ops
                            .iter()
                            .filter_map(|op| match op {
                                Op::Entry { conv, entry, .. } => {
                                    Some(server::entry_frame(conv.as_str(), &entry.view()))
                                }
                                _ => None,
                            })
                            .collect();
                        (stats, frames)
                    });
                    (result, batch)
                })
                .await;
            self.appender.in_flight.set(0);
            match result {
                Ok((stats, frames)) => {
                    backoff = Duration::ZERO;
                    for (cell, phase) in self.metrics.commit_phase_micros.iter().zip([
                        stats.apply,
                        stats.flush,
                        stats.sync,
                    ]) {
                        add(cell, phase.as_micros() as u64);
                    }
                    self.metrics
                        .commit_seconds
                        .observe(started.elapsed().as_secs_f64());
                    if entries > 0 {
                        self.metrics.commit_entries.observe(entries as f64);
                    }
                    add(&self.metrics.entries_appended, entries as u64);
                    self.complete(in_flight, frames);
                }
                Err(e) => {
                    add(&self.metrics.commit_failures, 1);
                    tracing::error!(shard = self.id, entries, error = %e, "group commit failed");
                    let retry_system = self.fail(in_flight, batch);
                    if retry_system {
                        backoff = (backoff * 2).clamp(Duration::from_millis(50), MAX_BACKOFF);
                        glommio::timer::sleep(backoff).await;
                    }
                }
            }
            self.appender.committed.fire();
            glommio::yield_if_needed().await;
        }
    }

    fn has_commit_work(&self) -> bool {
        let a = &self.appender;
        !a.pending.borrow().is_empty()
            || !a.dirty_convs.borrow().is_empty()
            || !a.dirty_visitors.borrow().is_empty()
            || (!a.dirty_cursors.borrow().is_empty() && self.cursors_due())
    }

    /// Receipt cursors only decide what is replayed after a reconnection:
    /// losing the newest second of them to a crash means some entries are
    /// delivered again (and dropped by the client by seq), never lost. So
    /// they are written at most once per [`CURSOR_FLUSH_INTERVAL`], not with
    /// every commit, which saves a store write per receipt under load. A
    /// drain writes them at once.
    fn cursors_due(&self) -> bool {
        self.draining()
            || self
                .appender
                .cursors_written
                .get()
                .is_none_or(|at| at.elapsed() >= CURSOR_FLUSH_INTERVAL)
    }

    /// Takes everything queued, assigns seqs in order, and builds one batch.
    fn build_batch(&self) -> (CommitBatch, InFlight) {
        let pending: Vec<PendingEntry> = {
            let mut queue = self.appender.pending.borrow_mut();
            let take = queue.len().min(MAX_BATCH_ENTRIES);
            queue.drain(..take).collect()
        };
        let mut convs = self.convs.borrow_mut();
        let mut ops = Vec::with_capacity(pending.len() * 2 + 4);
        let mut entries = Vec::with_capacity(pending.len());
        for mut p in pending {
            let Some(conv) = convs.convs.get_mut(&(p.tenant.clone(), p.conv.clone())) else {
                tracing::error!(conv = %p.conv, "entry for a conversation no longer in memory dropped");
                continue;
            };
            let seq = conv.next_seq;
            conv.next_seq += 1;
            p.entry.seq = seq;
            if let Origin::Client { key, .. } = &p.origin {
                ops.push(Op::Dedupe {
                    key: key.clone(),
                    hit: DedupeHit {
                        conv: p.conv.clone(),
                        seq,
                    },
                });
            }
            ops.push(Op::Entry {
                tenant: p.tenant.clone(),
                conv: p.conv.clone(),
                entry: p.entry,
            });
            entries.push((p.tenant, p.conv, seq, p.origin));
        }
        let dirty: Vec<(TenantId, ConvId)> =
            self.appender.dirty_convs.borrow_mut().drain().collect();
        for (tenant, conv) in &dirty {
            if let Some(c) = convs.convs.get(&(tenant.clone(), conv.clone())) {
                ops.push(Op::Conv {
                    tenant: tenant.clone(),
                    conv: conv.clone(),
                    meta: c.meta.clone(),
                });
            }
        }
        let cursors: Vec<_> = if self.cursors_due() {
            self.appender.cursors_written.set(Some(Instant::now()));
            self.appender.dirty_cursors.borrow_mut().drain().collect()
        } else {
            Vec::new()
        };
        for ((tenant, conv, who), seq) in &cursors {
            ops.push(Op::Cursor {
                tenant: tenant.clone(),
                conv: conv.clone(),
                who: who.clone(),
                seq: *seq,
            });
        }
        let visitors: Vec<_> = self.appender.dirty_visitors.borrow_mut().drain().collect();
        for ((tenant, visitor), meta) in &visitors {
            ops.push(Op::Visitor {
                tenant: tenant.clone(),
                visitor: visitor.clone(),
                meta: meta.clone(),
            });
        }
        (
            CommitBatch { ops },
            InFlight {
                entries,
                convs: dirty,
                cursors,
                visitors,
            },
        )
    }

    /// The batch is durable: acks, fan-out, follow-ups.
    fn complete(&self, in_flight: InFlight, frames: Vec<Bytes>) {
        let mut guard = self.convs.borrow_mut();
        let convs = &mut *guard;
        let mut finished: Vec<(TenantId, ConvId)> = Vec::new();
        for ((tenant, conv_id, seq, origin), frame) in in_flight.entries.into_iter().zip(frames) {
            let Some(conv) = convs.convs.get_mut(&(tenant.clone(), conv_id.clone())) else {
                continue;
            };
            conv.durable_seq = seq;
            conv.unflushed = conv.unflushed.saturating_sub(1);
            conv.tail.push(seq, frame.clone());
            match origin {
                Origin::Client { conn, key } => {
                    let client_id = key.client_id.clone();
                    let ack = server::ack(&client_id, conv_id.as_str(), seq);
                    let recipients: Vec<ConnRef> = conv
                        .subs
                        .iter()
                        .filter(|s| !s.catching_up && s.conn != conn)
                        .map(|s| s.conn)
                        .collect();
                    self.dedupe_filter
                        .insert(crate::store::dedupe_fingerprint(&key));
                    let waiters = convs.dedupe.complete(&key, conv_id.clone(), seq);
                    add(&self.metrics.acks, 1 + waiters.len() as u64);
                    for c in std::iter::once(conn).chain(waiters) {
                        self.frame_to(c, ack.clone());
                    }
                    add(&self.metrics.frames_out, recipients.len() as u64);
                    self.fan_out(recipients, &frame);
                }
                Origin::System(follow) => {
                    let recipients: Vec<ConnRef> = conv
                        .subs
                        .iter()
                        .filter(|s| !s.catching_up)
                        .map(|s| s.conn)
                        .collect();
                    add(&self.metrics.frames_out, recipients.len() as u64);
                    self.fan_out(recipients, &frame);
                    self.follow_up(conv, follow);
                }
            }
            if conv.meta.state == ConvState::Closed && conv.unflushed == 0 {
                finished.push((tenant, conv_id));
            }
        }
        for key in finished {
            convs.convs.remove(&key);
        }
    }

    /// What a durable system entry changes in who receives the conversation.
    fn follow_up(&self, conv: &mut Conversation, follow: FollowUp) {
        match follow {
            FollowUp::Nothing => {}
            FollowUp::Assigned {
                agent,
                conns,
                previous,
            } => {
                if let Some(previous) = previous.filter(|p| *p != agent) {
                    conv.unsubscribe(&Participant {
                        role: Role::Agent,
                        id: previous,
                    });
                }
                let who = Participant {
                    role: Role::Agent,
                    id: agent,
                };
                for conn in conns {
                    self.start_replay(conv, who.clone(), conn, super::replay::ReplayMode::Live);
                }
            }
            FollowUp::Requeued { previous } => {
                conv.unsubscribe(&Participant {
                    role: Role::Agent,
                    id: previous,
                });
            }
            FollowUp::Closed => conv.subs.clear(),
            FollowUp::Route(info) => {
                let tenant = conv.tenant.clone();
                self.send(self.router_of(&tenant), Envelope::Enqueue { tenant, info });
            }
        }
    }

    /// The batch failed: nothing of it is on disk. Chat messages get
    /// `unavailable`; system entries and state writes go back in the queue.
    /// Returns whether anything waits for a retry.
    fn fail(&self, in_flight: InFlight, batch: CommitBatch) -> bool {
        let mut retry: Vec<PendingEntry> = Vec::new();
        let mut entries = batch.ops.into_iter().filter_map(|op| match op {
            Op::Entry { entry, .. } => Some(entry),
            _ => None,
        });
        let mut refused: Vec<(ConnRef, Arc<str>, Vec<ConnRef>)> = Vec::new();
        {
            let mut guard = self.convs.borrow_mut();
            let convs = &mut *guard;
            for (tenant, conv_id, _seq, origin) in in_flight.entries {
                let entry = entries.next().expect("one entry op per in-flight entry");
                if let Some(conv) = convs.convs.get_mut(&(tenant.clone(), conv_id.clone())) {
                    conv.next_seq = conv.durable_seq + 1;
                    match origin {
                        Origin::Client { conn, key } => {
                            conv.unflushed = conv.unflushed.saturating_sub(1);
                            let waiters = convs.dedupe.abandon(&key);
                            refused.push((conn, key.client_id.clone(), waiters));
                        }
                        Origin::System(follow) => {
                            let mut entry = entry;
                            entry.seq = 0;
                            retry.push(PendingEntry {
                                tenant,
                                conv: conv_id,
                                entry,
                                origin: Origin::System(follow),
                            });
                        }
                    }
                } else if let Origin::Client { conn, key } = origin {
                    let waiters = convs.dedupe.abandon(&key);
                    refused.push((conn, key.client_id.clone(), waiters));
                }
            }
        }
        for (conn, client_id, waiters) in refused {
            for c in std::iter::once(conn).chain(waiters) {
                self.error_to(
                    c,
                    ErrorCode::Unavailable,
                    "the message was not stored, retry later",
                    Some(&client_id),
                );
            }
        }
        let mut pending = self.appender.pending.borrow_mut();
        for entry in retry.into_iter().rev() {
            pending.push_front(entry);
        }
        let waiting = !pending.is_empty();
        drop(pending);
        self.appender
            .dirty_convs
            .borrow_mut()
            .extend(in_flight.convs);
        let mut cursors = self.appender.dirty_cursors.borrow_mut();
        for (key, seq) in in_flight.cursors {
            let newest = cursors.entry(key).or_insert(seq);
            *newest = (*newest).max(seq);
        }
        drop(cursors);
        let mut visitors = self.appender.dirty_visitors.borrow_mut();
        for (key, meta) in in_flight.visitors {
            visitors.entry(key).or_insert(meta);
        }
        waiting
    }
}
