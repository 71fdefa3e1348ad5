//! Routing: one tenant's queue and assignment decisions, as pure single-threaded logic.
//!
//! Each tenant's routing state lives on exactly one shard. That shard feeds
//! events into a [`TenantRouter`] and carries out the [`RouterAction`]s it
//! returns (by messaging the shards that own the conversations and the
//! connections). Because this is the single place where assignments are
//! decided, a conversation can never be taken by two agents and routing never
//! pushes an agent above its `max_chats`. The router does no I/O, keeps no
//! clock and starts no timers: every call takes `now_ms` (unix milliseconds)
//! and [`TenantRouter::tick`] is to be called a few times a second.
//!
//! # Rules (PROTOCOL.md, "Routing" and "Agent commands")
//!
//! - **One queue per tenant**, ordered: conversations requeued at the front
//!   (grace expired, or handed back by their agent) first, then VIP
//!   conversations, then the rest. Within each of these three classes, by the
//!   time they entered the queue ([`ConvInfo::queued_ms`]), ties broken by
//!   arrival order in the router.
//! - **Routing pass.** Whenever capacity may have appeared (an agent connects
//!   or comes back online, a conversation closes, is transferred, is rejected,
//!   is queued, or a grace period expires), queued conversations are walked in
//!   queue order and each one that has an eligible agent is assigned. One that
//!   has none is skipped, so a conversation needing a skill nobody free has
//!   never blocks the ones behind it. The pass stops as soon as no agent has
//!   free capacity.
//! - **Eligible agent**: connected (at least one connection), `online`, fewer
//!   open conversations than its `max_chats`, has the conversation's skill (if
//!   it names one), and is not the agent excluded from it (see transfer).
//! - **Preference among eligible agents**, in order:
//!   1. the agent who last served this visitor, if that assignment is within
//!      the sticky window (24 h in the gateway) and the agent is eligible;
//!   2. agents speaking the conversation's `lang`, if it names one and any
//!      eligible agent speaks it;
//!   3. the lowest load, `open / max_chats`, compared exactly by
//!      cross-multiplication (no floating point);
//!   4. the one longest without a new assignment (never assigned counts as
//!      longest);
//!   5. the smallest agent id, so that every decision is deterministic.
//! - **Grace.** When an agent's last connection drops, its conversations stay
//!   assigned for `grace_ms`. If it reconnects in time nothing moves. Otherwise
//!   the first [`TenantRouter::tick`] at or after the deadline requeues each
//!   of them at the front ([`RouterAction::Requeue`]), runs a pass (which may
//!   [`RouterAction::Assign`] them to someone else at once), and forgets the
//!   agent until it connects again.
//! - **Transfer** to a named agent: the conversation must be assigned to the
//!   agent asking, the target must be connected and must not be the asker.
//!   Transfer back to the queue: the conversation is requeued at the front and
//!   the agent who handed it back is excluded from taking it again while it
//!   waits (otherwise the sticky rule would hand it straight back).
//! - **Queue positions** ([`RouterAction::QueuePosition`], 1 = next) are sent
//!   for a conversation in the same call that puts it in the queue (unless
//!   that call also assigns it), and from `tick` for every queued conversation
//!   whose position differs from the last one sent for it. (A visitor
//!   connection that attaches later is told the last position by the
//!   conversation's shard, which remembers it.) Positions are never sent for a conversation that is no longer queued.
//!
//! # Choices where the protocol is silent
//!
//! - Skills and languages match as exact, case-sensitive strings; the token
//!   issuer decides the spelling.
//! - The sticky window is inclusive: an assignment exactly `sticky_window_ms`
//!   old still counts; `tick` prunes records strictly older than that. Every
//!   assignment, explicit transfers included, records the visitor's last
//!   agent.
//! - A conversation requeued at the front enters the queue again at `now_ms`:
//!   its [`ConvInfo::queued_ms`] is reset, so the front class is FIFO in the
//!   order of requeueing and a later `waited_ms` counts the new wait only.
//!   When a grace period expires, that agent's conversations are requeued in
//!   the order they originally entered the queue (then by conversation id);
//!   several agents expiring in the same tick go in deadline order, then by
//!   agent id.
//! - An agent is `online` whenever one of its connections connects, even if it
//!   had set `away` from another device (the protocol says an agent is online
//!   when it connects); its other connections are then told by a
//!   [`RouterAction::StatusEcho`]. `status` from an agent that is not connected
//!   is ignored. A `status` is echoed even when it does not change anything.
//! - The profile (name, skills, languages, `max_chats`) is replaced by the one
//!   of the newest connection's token. Lowering `max_chats` below the current
//!   number of open conversations takes nothing away: the agent just gets no
//!   new ones until it is below the new limit. `max_chats = 0` means never
//!   routed to (explicit transfers still reach it).
//! - An explicit transfer ignores the target's status and `max_chats`: a
//!   person chose that agent, and may push it above its limit. It is reported
//!   with `previous: Some(from)` and `waited_ms: 0`. Every routed assignment,
//!   including one that follows a requeue, has `previous: None` (the
//!   preceding [`RouterAction::Requeue`] already named the previous agent).
//! - A transfer naming a conversation this router does not know (closed, never
//!   existed, or another tenant's) is [`TransferError::UnknownConversation`],
//!   which answers `not_found` like any other unknown conversation
//!   (PROTOCOL.md, "Errors"); one that exists but is queued or assigned to
//!   someone else is [`TransferError::Forbidden`].
//! - The exclusion of the agent who handed a conversation back lasts while the
//!   conversation waits and ends when it is assigned. It also applies to the
//!   routing pass only: that agent can still receive it by explicit transfer
//!   after someone else took it.
//! - A disconnected agent with no conversations still goes through the grace
//!   period (it keeps its place in "longest without an assignment" if it comes
//!   back in time); a forgotten agent that reconnects starts afresh (never
//!   assigned).
//! - Duplicate events are no-ops: enqueueing or restoring a conversation the
//!   router already holds, closing or rejecting one it does not hold,
//!   disconnecting a connection it does not know.
//! - Calls that cannot make anyone eligible run no pass: a disconnect, going
//!   `away`, a queued conversation closing. The queue is settled after every
//!   call (see Complexity), so such a pass could only find nothing.
//! - [`TenantRouter::assign_rejected`] is treated exactly like a close: the
//!   conversation's shard only refuses an assignment when the conversation was
//!   closed meanwhile, and closed is final.
//!
//! # Complexity
//!
//! With `Q` queued conversations, `A` agents, `S` distinct skills among queued
//! conversations (a handful) and `k` assignments made by a call:
//!
//! - The queue is a `BTreeMap` keyed by `(class, time, arrival counter)`, with
//!   a per-skill index of the same keys: enqueue and removal are `O(log Q)`.
//! - The agents with free capacity (connected, online, below `max_chats`) are
//!   kept in a set, so "no capacity left" is known in `O(1)` and a flood of
//!   enqueues while every agent is busy costs `O(log Q)` each.
//! - After every call the queue is *settled*: no queued conversation has an
//!   eligible agent. So `enqueue` only tries the new conversation (`O(A)`),
//!   and its position is computed in `O(log Q)` when it lands at the end of
//!   its class (the usual case).
//! - A full pass merges the per-skill queues that some free agent can serve,
//!   in global queue order, and drops a skill as soon as one of its
//!   conversations finds nobody: `O(S·A + (k + x)·(S + A + log Q))`, where
//!   `x` counts conversations skipped only because of their excluded agent.
//!   It never walks the whole queue.
//! - `tick` is `O(1)` when nothing changed; when the queue changed it walks the
//!   queue once, `O(Q)`, to send coalesced positions. Grace expiries and
//!   sticky pruning are `O(log n)` per expired item.

mod queue;
mod router;

#[cfg(test)]
mod random_tests;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use crate::ids::{ConnRef, ConvId, UserId};
use crate::model::AgentRef;
use crate::protocol::ErrorCode;

pub use router::TenantRouter;

/// What routing needs to know about an agent, taken from its newest
/// connection's token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentProfile {
    /// The agent's id (the token's `sub`): the key of everything routing keeps about it.
    pub id: UserId,
    /// Display name, carried into `assigned` entries.
    pub name: Option<Arc<str>>,
    /// Skills it serves: it is eligible for a conversation needing one of these.
    pub skills: Vec<Arc<str>>,
    /// Languages it speaks: preferred for visitors asking for one of these.
    pub langs: Vec<Arc<str>>,
    /// How many open conversations routing may give it at once (the token's
    /// `max_chats`, else the tenant's default, resolved by the caller).
    pub max_chats: u32,
}

/// Whether an agent accepts new assignments (the `status` command).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AgentStatus {
    /// Accepts new assignments; every agent is online when it connects.
    Online,
    /// Keeps its conversations but gets no new ones.
    Away,
}

impl AgentStatus {
    /// The status as the protocol writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Online => "online",
            AgentStatus::Away => "away",
        }
    }

    /// Parses the protocol's spelling.
    pub fn parse(s: &str) -> Option<AgentStatus> {
        match s {
            "online" => Some(AgentStatus::Online),
            "away" => Some(AgentStatus::Away),
            _ => None,
        }
    }
}

/// What routing knows about a conversation. It is kept while the conversation
/// is queued and while it is assigned, so that it can be requeued without
/// asking anyone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvInfo {
    /// The conversation.
    pub conv: ConvId,
    /// Its visitor: the key of the sticky "last agent" record.
    pub visitor: UserId,
    /// The skill an agent needs to be eligible for it.
    pub skill: Option<Arc<str>>,
    /// The visitor's preferred language: agents speaking it are preferred.
    pub lang: Option<Arc<str>>,
    /// VIP conversations are served before the others.
    pub vip: bool,
    /// When it (last) entered the queue, unix milliseconds: queue order
    /// within a class, and the base of `waited_ms`.
    pub queued_ms: u64,
}

/// What the routing shard must carry out after a call, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouterAction {
    /// The conversation's shard must append an `assigned` entry for `agent`
    /// and deliver the conversation to these connections.
    Assign {
        /// The conversation assigned.
        conv: ConvId,
        /// The agent it now belongs to, as the `assigned` entry names it.
        agent: AgentRef,
        /// The agent's live connections (empty only if an agent with no
        /// connection were chosen, which routing never does).
        conns: Vec<ConnRef>,
        /// The agent who handed it over by an explicit transfer (it must stop
        /// receiving the conversation); `None` for a routed assignment.
        previous: Option<UserId>,
        /// How long it waited in the queue, for metrics (`0` for a transfer).
        waited_ms: u64,
    },
    /// The conversation's shard must append a `queued` entry: the conversation
    /// went back to the queue (grace expired, or handed back by `previous`).
    Requeue {
        /// The conversation requeued.
        conv: ConvId,
        /// The agent it was taken from (it must stop receiving the conversation).
        previous: UserId,
    },
    /// Tell the visitor of `conv` its queue position.
    QueuePosition {
        /// The queued conversation.
        conv: ConvId,
        /// 1 = next to be served.
        position: u32,
    },
    /// A new connection of `agent`: the shard of `conv` must deliver that
    /// conversation to `conn` (subscribe it, then replay past its cursor).
    Subscribe {
        /// One of the agent's assigned conversations.
        conv: ConvId,
        /// The agent that connected.
        agent: UserId,
        /// The new connection.
        conn: ConnRef,
    },
    /// The conversations to list in that agent connection's `welcome`.
    AgentWelcome {
        /// The new connection.
        conn: ConnRef,
        /// Every conversation assigned to the agent, sorted by id.
        convs: Vec<ConvId>,
    },
    /// Send `{"type":"status",...}` to these connections of the agent.
    StatusEcho {
        /// The connections to tell.
        conns: Vec<ConnRef>,
        /// The agent's status now.
        status: AgentStatus,
    },
}

/// Why a transfer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// The router holds no such open conversation (closed, never existed, or
    /// another tenant's).
    #[error("no such conversation")]
    UnknownConversation,
    /// The conversation is queued or assigned to another agent.
    #[error("conversation not assigned to you")]
    Forbidden,
    /// The target agent has no live connection.
    #[error("no such agent connected")]
    NotFound,
    /// The target is the agent asking.
    #[error("cannot transfer to yourself")]
    ToSelf,
}

impl TransferError {
    /// The protocol error code to answer with.
    pub fn code(self) -> ErrorCode {
        match self {
            TransferError::UnknownConversation | TransferError::NotFound => ErrorCode::NotFound,
            TransferError::Forbidden => ErrorCode::Forbidden,
            TransferError::ToSelf => ErrorCode::BadRequest,
        }
    }
}

/// A snapshot of one tenant's routing, for metrics and health.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Conversations waiting in the queue.
    pub queued: usize,
    /// Of those, VIP conversations (not requeued at the front).
    pub queued_vip: usize,
    /// Of those, conversations requeued at the front.
    pub queued_front: usize,
    /// Connected agents that are online.
    pub agents_online: usize,
    /// Connected agents that are away.
    pub agents_away: usize,
    /// Agents with no connection, in their grace period.
    pub agents_in_grace: usize,
    /// Conversations currently assigned to an agent.
    pub assigned: usize,
}
