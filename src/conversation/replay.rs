//! Replays, `sync` and `history`: entries a connection missed.
//!
//! The tail answers from memory when it reaches back far enough. Otherwise
//! a catch-up task reads the store on the blocking pool, in chunks, and
//! hands over to live delivery without a gap or a duplicate: while it runs
//! its subscriber is marked `catching_up`, so live fan-out skips it; each
//! chunk is sent as it is read; when the tail finally covers the rest, the
//! remainder is sent from memory and the subscriber turns live, all in one
//! step on the shard's thread, so no entry can slip between the two.
//!
//! Long replays are flow-controlled across shards: after each chunk read
//! from the store, the catch-up waits for a credit from the connection's
//! shard, which grants it once that connection has written most of what it
//! was sent. A reconnecting agent far behind on a long log thus receives it
//! at the pace its socket takes it, instead of the whole log at once (which
//! would overrun the outbound limit and get it dropped, again and again).
//!
//! Reads never go past the conversation's durable seq: an entry of a
//! commit still in flight is visible in sled before it is synced, and must
//! not reach a client until it is durable.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use super::Conversation;
use crate::ids::{ConnRef, ConvId, Participant, Role, TenantId};
use crate::metrics::add;
use crate::model::ConvState;
use crate::protocol::{server, ErrorCode};
use crate::shard::envelope::{Envelope, ReplayTicket};
use crate::shard::Shard;

/// Entries read from the store per chunk of a catch-up.
pub const REPLAY_CHUNK: u64 = 512;
/// How long a replay waits for the connection to take in a chunk before it
/// gives up (the connection is gone, or stalled and about to be dropped).
pub const REPLAY_CREDIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What a replay is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayMode {
    /// Part of a `welcome`: the first chunk travels in a `Snapshot`, and
    /// the connection becomes a subscriber.
    Welcome,
    /// A newly assigned agent's connection: frames, then live delivery.
    Live,
    /// A `sync` request: frames after `after`, then `synced`. No subscription.
    Sync {
        /// Entries with a greater seq.
        after: u64,
    },
}

impl ReplayMode {
    fn subscribes(self) -> bool {
        !matches!(self, ReplayMode::Sync { .. })
    }
}

impl Shard {
    /// Sends `who`'s connection `conn` the entries it lacks, from memory if
    /// the tail has them, else through a catch-up task.
    pub fn start_replay(
        &self,
        conv: &mut Conversation,
        who: Participant,
        conn: ConnRef,
        mode: ReplayMode,
    ) {
        let after = match mode {
            ReplayMode::Sync { after } => after,
            _ => conv.cursor(&who),
        };
        if mode.subscribes() && !conv.subscribe(who.clone(), conn, true) {
            // Already a subscriber: it received the log when it subscribed.
            if mode == ReplayMode::Welcome {
                self.send_replay(conv, conn, mode, Vec::new(), true);
            }
            return;
        }
        let to = conv.durable_seq;
        if after >= to || conv.tail.covers_from(after + 1) {
            let frames = conv.tail.range(after + 1, to).cloned().collect();
            self.send_replay(conv, conn, mode, frames, true);
            self.replay_done(conv, conn, mode);
            return;
        }
        let shard = self.rc();
        let (tenant, id) = (conv.tenant.clone(), conv.id.clone());
        // glommio polls a spawned task right away, and every caller holds
        // `convs` borrowed (`conv` is in it): yield first, so that the
        // catch-up starts after the caller has returned.
        glommio::spawn_local(async move {
            futures_lite::future::yield_now().await;
            shard.catch_up(tenant, id, conn, mode, after).await
        })
        .detach();
    }

    fn send_replay(
        &self,
        conv: &Conversation,
        conn: ConnRef,
        mode: ReplayMode,
        mut frames: Vec<Bytes>,
        first: bool,
    ) {
        add(&self.metrics.frames_out, frames.len() as u64);
        match mode {
            ReplayMode::Welcome if first => self.conn_bound(
                conn.shard,
                Envelope::Snapshot {
                    conn: conn.id,
                    conv: conv.id.clone(),
                    summary: Some(conv.summary()),
                    frames,
                    credit_from: None,
                },
            ),
            ReplayMode::Sync { .. } if first => {
                // `first` here means "last": see replay_done.
                frames.push(server::synced(conv.id.as_str(), conv.durable_seq));
                self.to_conn(conn, frames);
            }
            _ if frames.is_empty() => {}
            _ => self.to_conn(conn, frames),
        }
    }

    fn replay_done(&self, conv: &mut Conversation, conn: ConnRef, mode: ReplayMode) {
        if mode.subscribes() {
            if let Some(sub) = conv.subs.iter_mut().find(|s| s.conn == conn) {
                sub.catching_up = false;
            }
        }
    }

    /// Reads what the tail lacks from the store, chunk by chunk, then hands
    /// over to live delivery.
    async fn catch_up(
        self: Rc<Self>,
        tenant: TenantId,
        conv_id: ConvId,
        conn: ConnRef,
        mode: ReplayMode,
        mut after: u64,
    ) {
        // glommio's spawn_local runs a new task at once, up to its first
        // await, and every caller of start_replay still holds `self.convs`:
        // step back first, so the borrow below cannot find it taken.
        futures_lite::future::yield_now().await;
        let mut first = true;
        loop {
            let need = {
                let mut convs = self.convs.borrow_mut();
                let Some(conv) = convs.get_mut(&tenant, &conv_id) else {
                    drop(convs);
                    return self.replay_abandoned(&conv_id, conn, mode, first);
                };
                if mode.subscribes() && !conv.subs.iter().any(|s| s.conn == conn) {
                    drop(convs);
                    return self.replay_abandoned(&conv_id, conn, mode, first);
                }
                let to = conv.durable_seq;
                if after >= to || conv.tail.covers_from(after + 1) {
                    let frames: Vec<Bytes> = conv.tail.range(after + 1, to).cloned().collect();
                    match mode {
                        ReplayMode::Sync { .. } => self.send_replay(conv, conn, mode, frames, true),
                        _ => self.send_replay(conv, conn, mode, frames, first),
                    }
                    self.replay_done(conv, conn, mode);
                    return;
                }
                let upto = conv.tail.first_seq().map_or(to, |first| first - 1).min(to);
                (upto - after).min(REPLAY_CHUNK)
            };
            match self.read_chunk(&tenant, &conv_id, after, need).await {
                Ok(frames) if !frames.is_empty() => {
                    after += frames.len() as u64;
                    // The first chunk of a welcome carries the summary.
                    let summary = if mode == ReplayMode::Welcome && first {
                        let convs = self.convs.borrow();
                        let Some(conv) = convs.convs.get(&(tenant.clone(), conv_id.clone())) else {
                            continue;
                        };
                        Some(conv.summary())
                    } else {
                        None
                    };
                    add(&self.metrics.frames_out, frames.len() as u64);
                    let envelope = |ticket| match summary {
                        Some(summary) => Envelope::Snapshot {
                            conn: conn.id,
                            conv: conv_id.clone(),
                            summary: Some(summary),
                            frames,
                            credit_from: Some(ticket),
                        },
                        None => Envelope::ReplayChunk {
                            conn: conn.id,
                            conv: conv_id.clone(),
                            frames,
                            credit_from: ticket,
                        },
                    };
                    first = false;
                    if !self.send_paced(conn, envelope).await {
                        tracing::info!(conv = %conv_id, conn = ?conn, "replay abandoned: the connection took nothing in");
                        if let Some(conv) = self.convs.borrow_mut().get_mut(&tenant, &conv_id) {
                            conv.unsubscribe_conn(conn);
                        }
                        return;
                    }
                }
                Ok(_) => {
                    // The store has none of these (never expected: entries are
                    // written before they become durable in memory). Skip to the
                    // tail rather than loop.
                    tracing::error!(conv = %conv_id, after, "store lacks entries the tail does not hold");
                    let convs = self.convs.borrow();
                    if let Some(conv) = convs.convs.get(&(tenant.clone(), conv_id.clone())) {
                        after = conv.tail.first_seq().map_or(conv.durable_seq, |f| f - 1);
                    }
                }
                Err(message) => {
                    self.error_to(conn, ErrorCode::Unavailable, &message, None);
                    if let Some(conv) = self.convs.borrow_mut().get_mut(&tenant, &conv_id) {
                        conv.unsubscribe_conn(conn);
                    }
                    return self.replay_abandoned(&conv_id, conn, mode, first);
                }
            }
        }
    }

    /// Sends one replay chunk (an envelope that asks for a credit for the
    /// ticket it is given) and waits until the connection has taken it in.
    /// `false`: no credit came within [`REPLAY_CREDIT_TIMEOUT`] (the
    /// connection is gone or stalled).
    async fn send_paced(
        &self,
        conn: ConnRef,
        envelope: impl FnOnce(ReplayTicket) -> Envelope,
    ) -> bool {
        let replay = self.next_replay.get();
        self.next_replay.set(replay + 1);
        let credit = Rc::new(shards::notify::Notify::new());
        self.replay_waits
            .borrow_mut()
            .insert(replay, credit.clone());
        let ticket = ReplayTicket {
            shard: self.id,
            replay,
        };
        self.conn_bound(conn.shard, envelope(ticket));
        let granted = futures_lite::future::or(
            async {
                credit.notified().await;
                true
            },
            async {
                glommio::timer::sleep(REPLAY_CREDIT_TIMEOUT).await;
                false
            },
        )
        .await;
        self.replay_waits.borrow_mut().remove(&replay);
        granted
    }

    /// A connection took in a replay chunk: its catch-up may go on.
    pub fn on_replay_credit(&self, replay: u64) {
        if let Some(credit) = self.replay_waits.borrow().get(&replay) {
            credit.notify();
        }
    }

    /// The conversation went away (closed) or the read failed mid-replay.
    fn replay_abandoned(&self, conv: &ConvId, conn: ConnRef, mode: ReplayMode, first: bool) {
        if mode == ReplayMode::Welcome && first {
            self.conn_bound(
                conn.shard,
                Envelope::Snapshot {
                    conn: conn.id,
                    conv: conv.clone(),
                    summary: None,
                    frames: Vec::new(),
                    credit_from: None,
                },
            );
        }
    }

    /// Reads entries from `after+1`, at most `need` of them and about a
    /// quarter of the outbound limit in bytes (at least one), as frames, on
    /// the blocking pool: a chunk must fit in the connection's queue.
    async fn read_chunk(
        &self,
        tenant: &TenantId,
        conv: &ConvId,
        after: u64,
        need: u64,
    ) -> Result<Vec<Bytes>, String> {
        let store = self.store.clone();
        let (tenant, conv) = (tenant.clone(), conv.clone());
        let budget = self.settings.limits.outbound_limit_bytes / 4;
        glommio::executor()
            .spawn_blocking(move || {
                let mut frames = Vec::new();
                let mut bytes = 0;
                store
                    .read_entries(&tenant, &conv, after, need as usize, &mut |view| {
                        if frames.is_empty() || bytes < budget {
                            let frame = server::entry_frame(conv.as_str(), &view);
                            bytes += frame.len();
                            frames.push(frame);
                        }
                    })
                    .map(|_| frames)
            })
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "reading entries failed");
                "could not read the conversation, retry later".to_string()
            })
    }

    // ----- sync and history -----

    /// `sync`: every entry after `after`, then `synced`.
    pub fn on_sync(
        &self,
        tenant: TenantId,
        who: Participant,
        conn: ConnRef,
        conv_id: ConvId,
        after: u64,
        reference: Option<Arc<str>>,
    ) {
        let mut convs = self.convs.borrow_mut();
        match convs.get_mut(&tenant, &conv_id) {
            Some(conv) if conv.may_read(&who) => {
                self.start_replay(conv, who, conn, ReplayMode::Sync { after })
            }
            Some(_) => {
                drop(convs);
                self.error_to(
                    conn,
                    ErrorCode::Forbidden,
                    "not a participant of this conversation",
                    reference.as_deref(),
                );
            }
            None => {
                drop(convs);
                let shard = self.rc();
                glommio::spawn_local(async move {
                    shard
                        .stored_sync(tenant, who, conn, conv_id, after, reference)
                        .await
                })
                .detach();
            }
        }
    }

    /// `sync` of a conversation no longer in memory (closed): read-only from the store.
    async fn stored_sync(
        self: Rc<Self>,
        tenant: TenantId,
        who: Participant,
        conn: ConnRef,
        conv: ConvId,
        mut after: u64,
        reference: Option<Arc<str>>,
    ) {
        let Some(last) = self
            .check_stored_access(&tenant, &who, conn, &conv, reference.as_deref())
            .await
        else {
            return;
        };
        while after < last {
            match self
                .read_chunk(&tenant, &conv, after, (last - after).min(REPLAY_CHUNK))
                .await
            {
                Ok(frames) if !frames.is_empty() => {
                    after += frames.len() as u64;
                    add(&self.metrics.frames_out, frames.len() as u64);
                    let chunk = |ticket| Envelope::ReplayChunk {
                        conn: conn.id,
                        conv: conv.clone(),
                        frames,
                        credit_from: ticket,
                    };
                    if !self.send_paced(conn, chunk).await {
                        return;
                    }
                }
                Ok(_) => break,
                Err(message) => {
                    return self.error_to(
                        conn,
                        ErrorCode::Unavailable,
                        &message,
                        reference.as_deref(),
                    )
                }
            }
        }
        self.frame_to(conn, server::synced(conv.as_str(), last));
    }

    /// For a conversation not in memory: may `who` read it? Returns its last
    /// seq if so; otherwise sends the error and returns `None`.
    async fn check_stored_access(
        &self,
        tenant: &TenantId,
        who: &Participant,
        conn: ConnRef,
        conv: &ConvId,
        reference: Option<&str>,
    ) -> Option<u64> {
        let store = self.store.clone();
        let (t, c) = (tenant.clone(), conv.clone());
        let found = glommio::executor()
            .spawn_blocking(move || -> Result<_, crate::store::StoreError> {
                let Some(meta) = store.conv(&t, &c)? else {
                    return Ok(None);
                };
                let mut last = 0;
                store.read_entries_before(&t, &c, u64::MAX, 1, &mut |v| last = v.seq)?;
                Ok(Some((meta, last)))
            })
            .await;
        match found {
            Ok(Some((meta, last))) => {
                let allowed = match who.role {
                    Role::Visitor => meta.visitor == who.id,
                    Role::Agent => {
                        meta.served_by.as_ref() == Some(&who.id)
                            || matches!(&meta.state, ConvState::Assigned(a) if a.id == who.id)
                    }
                };
                if allowed {
                    Some(last)
                } else {
                    self.error_to(
                        conn,
                        ErrorCode::Forbidden,
                        "not a participant of this conversation",
                        reference,
                    );
                    None
                }
            }
            Ok(None) => {
                self.error_to(conn, ErrorCode::NotFound, "no such conversation", reference);
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "reading a conversation failed");
                self.error_to(
                    conn,
                    ErrorCode::Unavailable,
                    "could not read the conversation, retry later",
                    reference,
                );
                None
            }
        }
    }

    /// `history`: up to `limit` entries before `before`, oldest first.
    #[allow(clippy::too_many_arguments)]
    pub fn on_history(
        &self,
        tenant: TenantId,
        who: Participant,
        conn: ConnRef,
        conv_id: ConvId,
        before: Option<u64>,
        limit: u32,
        reference: Option<Arc<str>>,
    ) {
        let mut convs = self.convs.borrow_mut();
        let (before, in_memory) = match convs.get_mut(&tenant, &conv_id) {
            Some(conv) if !conv.may_read(&who) => {
                drop(convs);
                return self.error_to(
                    conn,
                    ErrorCode::Forbidden,
                    "not a participant of this conversation",
                    reference.as_deref(),
                );
            }
            Some(conv) => {
                let before = before.unwrap_or(u64::MAX).min(conv.durable_seq + 1);
                let from = before.saturating_sub(u64::from(limit)).max(1);
                if before <= 1 || conv.tail.covers_from(from) {
                    let entries: Vec<Bytes> = if before <= 1 {
                        Vec::new()
                    } else {
                        conv.tail
                            .range(from, before - 1)
                            .map(server::json_of)
                            .collect()
                    };
                    let frame =
                        server::history(conv_id.as_str(), reference.as_deref(), &entries, from > 1);
                    drop(convs);
                    add(&self.metrics.frames_out, 1);
                    return self.frame_to(conn, frame);
                }
                (before, true)
            }
            None => (before.unwrap_or(u64::MAX), false),
        };
        drop(convs);
        let shard = self.rc();
        glommio::spawn_local(async move {
            if !in_memory {
                let Some(last) = shard
                    .check_stored_access(&tenant, &who, conn, &conv_id, reference.as_deref())
                    .await
                else {
                    return;
                };
                let _ = last;
            }
            let store = shard.store.clone();
            let (t, c) = (tenant.clone(), conv_id.clone());
            let read = glommio::executor()
                .spawn_blocking(move || {
                    let mut entries = Vec::new();
                    store
                        .read_entries_before(&t, &c, before, limit as usize, &mut |view| {
                            entries.push(server::json_of(&server::entry_frame(c.as_str(), &view)));
                        })
                        .map(|more| (entries, more))
                })
                .await;
            match read {
                Ok((entries, more)) => {
                    add(&shard.metrics.frames_out, 1);
                    shard.frame_to(
                        conn,
                        server::history(conv_id.as_str(), reference.as_deref(), &entries, more),
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading history failed");
                    shard.error_to(
                        conn,
                        ErrorCode::Unavailable,
                        "could not read history, retry later",
                        reference.as_deref(),
                    );
                }
            }
        })
        .detach();
    }
}
