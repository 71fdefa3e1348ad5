//! Every message one shard sends another.
//!
//! The mesh moves [`Envelope`]s; who receives which follows from ownership:
//!
//! - a **conversation's shard** (placed by the hash of tenant and visitor,
//!   written into the conversation id) owns its log, seqs, subscribers and
//!   receipt cursors, and also that visitor's state;
//! - a **tenant's router shard** (placed by the hash of the tenant) owns
//!   its agents, their load and status, and its queue;
//! - a **connection's shard** (the one that accepted it) owns its socket.
//!
//! Strings that cross are `Arc`s and frames are `Bytes`: moving an
//! envelope copies pointers, never payloads.

use std::sync::Arc;

use bytes::Bytes;

use crate::ids::{ConnRef, ConvId, Participant, TenantId, UserId};
use crate::metrics::ShardSnapshot;
use crate::model::AgentRef;
use crate::protocol::server::ConvSummary;
use crate::routing::{AgentProfile, AgentStatus, ConvInfo};

/// A chat message on its way to its conversation's shard.
#[derive(Debug)]
pub struct Submit {
    /// The sender's tenant.
    pub tenant: TenantId,
    /// The sender.
    pub sender: Participant,
    /// The sender's display name, written into the entry.
    pub sender_name: Option<Arc<str>>,
    /// The connection that sent it: it gets the `ack` (or the error).
    pub conn: ConnRef,
    /// The client's message id.
    pub client_id: Arc<str>,
    /// The conversation named by the client; `None`: the visitor's open one (or a new one).
    pub conv: Option<ConvId>,
    /// The text.
    pub text: Arc<str>,
    /// Routing attributes from a visitor's token, used if this message opens a conversation.
    pub visitor: Option<VisitorProfile>,
}

/// What a visitor's token says about routing it.
#[derive(Clone, Debug, Default)]
pub struct VisitorProfile {
    /// Display name.
    pub name: Option<Arc<str>>,
    /// The skill its conversations need.
    pub skill: Option<Arc<str>>,
    /// Preferred language.
    pub lang: Option<Arc<str>>,
    /// Served before non-VIP visitors.
    pub vip: bool,
}

/// An ephemeral signal, forwarded to the other participants.
#[derive(Clone, Copy, Debug)]
pub enum Signal {
    /// `typing` on or off.
    Typing(bool),
    /// `read` up to a seq.
    Read(u64),
}

/// A message between shards.
#[derive(Debug)]
pub enum Envelope {
    // ----- to a conversation's (visitor's home) shard -----
    /// A visitor connection completed `hello`.
    VisitorAttach {
        /// Tenant.
        tenant: TenantId,
        /// The visitor.
        visitor: UserId,
        /// Its token's routing attributes.
        profile: VisitorProfile,
        /// The new connection.
        conn: ConnRef,
    },
    /// A visitor connection closed.
    VisitorDetach {
        /// Tenant.
        tenant: TenantId,
        /// The visitor.
        visitor: UserId,
        /// The closed connection.
        conn: ConnRef,
    },
    /// A chat message.
    Submit(Box<Submit>),
    /// A receipt cursor.
    Recv {
        /// Tenant.
        tenant: TenantId,
        /// Who holds the entries.
        who: Participant,
        /// The conversation.
        conv: ConvId,
        /// Up to this seq.
        seq: u64,
        /// The connection, for errors.
        conn: ConnRef,
        /// The request's `id` or `ref`, echoed in errors.
        reference: Option<Arc<str>>,
    },
    /// `sync`.
    Sync {
        /// Tenant.
        tenant: TenantId,
        /// Who asks.
        who: Participant,
        /// Where to answer.
        conn: ConnRef,
        /// The conversation.
        conv: ConvId,
        /// Entries after this seq.
        after: u64,
        /// The request's `id` or `ref`, echoed in errors.
        reference: Option<Arc<str>>,
    },
    /// `history`.
    History {
        /// Tenant.
        tenant: TenantId,
        /// Who asks.
        who: Participant,
        /// Where to answer.
        conn: ConnRef,
        /// The conversation.
        conv: ConvId,
        /// Entries before this seq.
        before: Option<u64>,
        /// At most this many.
        limit: u32,
        /// Echoed back.
        reference: Option<Arc<str>>,
    },
    /// `typing` or `read`.
    Signal {
        /// Tenant.
        tenant: TenantId,
        /// Who signals.
        who: Participant,
        /// The connection, for errors.
        conn: ConnRef,
        /// The conversation.
        conv: ConvId,
        /// What.
        signal: Signal,
        /// The request's `id` or `ref`, echoed in errors.
        reference: Option<Arc<str>>,
    },
    /// `close`.
    Close {
        /// Tenant.
        tenant: TenantId,
        /// Who closes.
        who: Participant,
        /// The connection, for errors.
        conn: ConnRef,
        /// The conversation (`None`: the visitor's open one).
        conv: Option<ConvId>,
        /// The request's `id` or `ref`, echoed in errors.
        reference: Option<Arc<str>>,
    },
    /// `transfer`, checked on the conversation's shard before the router decides.
    TransferRequest {
        /// Tenant.
        tenant: TenantId,
        /// The agent handing it over.
        agent: UserId,
        /// The connection, for errors.
        conn: ConnRef,
        /// The conversation.
        conv: ConvId,
        /// To this agent, or back to the queue.
        to: Option<UserId>,
        /// The request's `id` or `ref`, echoed in errors.
        reference: Option<Arc<str>>,
    },
    /// The router assigned (or transferred) a conversation.
    Assign {
        /// Tenant.
        tenant: TenantId,
        /// The conversation.
        conv: ConvId,
        /// The agent.
        agent: AgentRef,
        /// The agent's live connections, to deliver the conversation to.
        conns: Vec<ConnRef>,
        /// The agent it was taken from (a transfer), if any.
        previous: Option<UserId>,
    },
    /// The router put a conversation back in the queue.
    Requeue {
        /// Tenant.
        tenant: TenantId,
        /// The conversation.
        conv: ConvId,
        /// The agent it was taken from.
        previous: UserId,
        /// The agent that may not get it back by routing while it waits.
        excluded: Option<UserId>,
    },
    /// A queued visitor's position.
    QueuePosition {
        /// Tenant.
        tenant: TenantId,
        /// The conversation.
        conv: ConvId,
        /// 1 = next.
        position: u32,
    },
    /// A new connection of an assigned agent must receive this conversation.
    AgentSubscribe {
        /// Tenant.
        tenant: TenantId,
        /// The conversation.
        conv: ConvId,
        /// The agent.
        agent: UserId,
        /// Its new connection.
        conn: ConnRef,
    },
    /// An agent connection closed: stop delivering this conversation to it.
    AgentUnsubscribe {
        /// Tenant.
        tenant: TenantId,
        /// The conversation.
        conv: ConvId,
        /// The closed connection.
        conn: ConnRef,
    },

    // ----- to a tenant's router shard -----
    /// An agent connection completed `hello`.
    AgentAttach {
        /// Tenant.
        tenant: TenantId,
        /// From its token.
        profile: AgentProfile,
        /// The new connection.
        conn: ConnRef,
    },
    /// An agent connection closed.
    AgentDetach {
        /// Tenant.
        tenant: TenantId,
        /// The agent.
        agent: UserId,
        /// The closed connection.
        conn: ConnRef,
    },
    /// `status`.
    AgentStatus {
        /// Tenant.
        tenant: TenantId,
        /// The agent.
        agent: UserId,
        /// Online or away.
        status: AgentStatus,
    },
    /// A conversation entered the queue.
    Enqueue {
        /// Tenant.
        tenant: TenantId,
        /// What routing needs.
        info: ConvInfo,
    },
    /// A conversation closed (frees its agent or leaves the queue).
    ConvClosed {
        /// Tenant.
        tenant: TenantId,
        /// The conversation.
        conv: ConvId,
    },
    /// The conversation's shard refused an assignment (it had closed).
    AssignRejected {
        /// Tenant.
        tenant: TenantId,
        /// The conversation.
        conv: ConvId,
    },
    /// A checked transfer request.
    Transfer {
        /// Tenant.
        tenant: TenantId,
        /// The conversation.
        conv: ConvId,
        /// The agent handing it over.
        from: UserId,
        /// To this agent, or back to the queue.
        to: Option<UserId>,
        /// The requesting connection, for errors.
        conn: ConnRef,
        /// The request's `id` or `ref`, echoed in errors.
        reference: Option<Arc<str>>,
    },

    // ----- to a connection's shard -----
    /// Frames for one connection, in order.
    ToConn {
        /// The connection's id on this shard.
        conn: u64,
        /// The frames.
        frames: Vec<Bytes>,
    },
    /// One frame for several connections on this shard (fan-out).
    Deliver {
        /// The connections' ids on this shard.
        conns: Vec<u64>,
        /// The frame, shared.
        frame: Bytes,
    },
    /// The conversations a connection's `welcome` lists.
    WelcomeList {
        /// The connection's id.
        conn: u64,
        /// The conversations; a [`Envelope::Snapshot`] follows for each.
        convs: Vec<ConvId>,
    },
    /// One conversation of a pending `welcome`, with its replay.
    Snapshot {
        /// The connection's id.
        conn: u64,
        /// The conversation.
        conv: ConvId,
        /// Its summary, or `None` if it is no longer the caller's.
        summary: Option<ConvSummary>,
        /// Entries past the caller's cursor, in seq order.
        frames: Vec<Bytes>,
        /// More of the replay follows: credit this replay once the connection
        /// has written most of these (flow control, see `conversation::replay`).
        credit_from: Option<ReplayTicket>,
    },
    /// A chunk of a replay (after the first), for one connection.
    ReplayChunk {
        /// The connection's id.
        conn: u64,
        /// The conversation replayed.
        conv: ConvId,
        /// The entries, in seq order.
        frames: Vec<Bytes>,
        /// The replay to credit once the connection has written most of them.
        credit_from: ReplayTicket,
    },
    /// Close a connection with this code.
    CloseConn {
        /// The connection's id.
        conn: u64,
        /// The close code.
        code: u16,
        /// The reason.
        reason: &'static str,
    },

    /// The connection took in a replay chunk: send the next one.
    ReplayCredit {
        /// The replay credited (its shard is the envelope's destination).
        replay: u64,
    },

    // ----- operations -----
    /// Shard `from` asks for this shard's metrics.
    MetricsRequest {
        /// The asking shard.
        from: usize,
        /// Matches the reply to the request.
        id: u64,
    },
    /// The answer to [`Envelope::MetricsRequest`].
    MetricsReply {
        /// The request.
        id: u64,
        /// The answering shard.
        shard: usize,
        /// Its numbers.
        snapshot: Box<ShardSnapshot>,
    },

    // ----- testing aids (`--fault-injection` only) -----
    /// Panic in the receiving shard's message handler (a `__panic_shard`
    /// frame, see `crate::debug`).
    DebugPanic,
}

/// Names one replay in flight, so that its credit wakes that replay and no
/// other: a connection may take two replays of the same conversation at
/// once (the one of its `welcome` and a `sync`), each paced on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayTicket {
    /// The shard running the replay, which the credit goes back to.
    pub shard: usize,
    /// The replay's number on that shard.
    pub replay: u64,
}
