//! Conversations, on the shard that owns them.
//!
//! A conversation is placed by the hash of its tenant and visitor, so one
//! shard holds a visitor's state and all of that visitor's conversations.
//! That shard alone assigns seqs, appends to the log and fans entries out:
//! per conversation there is one writer and one order.
//!
//! The pieces:
//! - [`Conversations`]: the open conversations and the visitors of this shard;
//! - [`append`]: the append pipeline: dedupe, accept, group commit, ack and fan-out;
//! - [`handlers`]: what the shard does with each conversation-bound message;
//! - [`replay`]: replays, `sync` and `history`, from the tail or the store;
//! - [`tail`] and [`dedupe`]: the in-memory caches that keep the store off the hot path.

pub mod append;
pub mod dedupe;
pub mod filter;
pub mod handlers;
pub mod replay;
pub mod tail;

use std::collections::HashMap;
use std::sync::Arc;

use crate::ids::{ConnRef, ConvId, Participant, Role, TenantId, UserId};
use crate::model::{ConvMeta, ConvState};
use crate::protocol::server::ConvSummary;
use crate::protocol::ErrorCode;
use crate::shard::envelope::VisitorProfile;

use dedupe::DedupeCache;
use tail::Tail;

/// A connection that receives a conversation's entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscriber {
    /// The participant the connection belongs to.
    pub who: Participant,
    /// The connection.
    pub conn: ConnRef,
    /// It is being brought up to date from the store: live entries are not
    /// sent to it until the catch-up hands over.
    pub catching_up: bool,
}

/// One open conversation (or one that closed and still has entries in flight).
pub struct Conversation {
    /// Its tenant.
    pub tenant: TenantId,
    /// Its id.
    pub id: ConvId,
    /// Routing and lifecycle state, as accepted (ahead of the durable log by
    /// whatever waits for the next group commit).
    pub meta: ConvMeta,
    /// The seq the next entry will get when its group commit is built.
    pub next_seq: u64,
    /// The last seq on disk.
    pub durable_seq: u64,
    /// Entries accepted and not yet durable; a closed conversation stays in
    /// memory until this is zero.
    pub unflushed: u32,
    /// Connections that receive its entries.
    pub subs: Vec<Subscriber>,
    /// Receipt cursors of its participants.
    pub cursors: HashMap<Participant, u64>,
    /// The newest entries, as frames.
    pub tail: Tail,
    /// The last queue position sent to its visitor while it is queued, for
    /// the visitor's new connections.
    pub queue_position: Option<u32>,
}

impl Conversation {
    /// A conversation with `last_seq` durable entries.
    pub fn new(tenant: TenantId, id: ConvId, meta: ConvMeta, last_seq: u64) -> Self {
        Conversation {
            tenant,
            id,
            meta,
            next_seq: last_seq + 1,
            durable_seq: last_seq,
            unflushed: 0,
            subs: Vec::new(),
            cursors: HashMap::new(),
            tail: Tail::default(),
            queue_position: None,
        }
    }

    /// The agent it is assigned to.
    pub fn agent(&self) -> Option<&UserId> {
        match &self.meta.state {
            ConvState::Assigned(agent) => Some(&agent.id),
            _ => None,
        }
    }

    /// Is `who` a participant now: its visitor, or its assigned agent?
    pub fn is_participant(&self, who: &Participant) -> bool {
        match who.role {
            Role::Visitor => self.meta.visitor == who.id,
            Role::Agent => self.agent() == Some(&who.id),
        }
    }

    /// May `who` act on this conversation? Errors say why not.
    pub fn check_access(&self, who: &Participant) -> Result<(), ErrorCode> {
        if self.is_participant(who) {
            Ok(())
        } else {
            Err(ErrorCode::Forbidden)
        }
    }

    /// May `who` write to it (close it, signal in it)? It must be open and
    /// `who` a participant; the error says which check failed.
    pub fn check_writable(&self, who: &Participant) -> Result<(), (ErrorCode, &'static str)> {
        if self.meta.state == ConvState::Closed {
            return Err((ErrorCode::Closed, "the conversation is closed"));
        }
        self.check_access(who)
            .map_err(|code| (code, "not a participant of this conversation"))
    }

    /// May `who` read this conversation's log (sync, history)? Its visitor
    /// always; an agent while assigned, or if it was the last to serve it.
    pub fn may_read(&self, who: &Participant) -> bool {
        self.is_participant(who)
            || (who.role == Role::Agent && self.meta.served_by.as_ref() == Some(&who.id))
    }

    /// The `welcome` summary.
    pub fn summary(&self) -> ConvSummary {
        ConvSummary {
            conv: self.id.to_string(),
            state: self.meta.state.clone(),
            last_seq: self.durable_seq,
        }
    }

    /// The receipt cursor of `who` (0 if it has none).
    pub fn cursor(&self, who: &Participant) -> u64 {
        self.cursors.get(who).copied().unwrap_or(0)
    }

    /// Adds a subscriber unless that connection already is one.
    pub fn subscribe(&mut self, who: Participant, conn: ConnRef, catching_up: bool) -> bool {
        if self.subs.iter().any(|s| s.conn == conn) {
            return false;
        }
        self.subs.push(Subscriber {
            who,
            conn,
            catching_up,
        });
        true
    }

    /// Removes every subscription of this connection.
    pub fn unsubscribe_conn(&mut self, conn: ConnRef) {
        self.subs.retain(|s| s.conn != conn);
    }

    /// Removes every subscription of this participant.
    pub fn unsubscribe(&mut self, who: &Participant) {
        self.subs.retain(|s| &s.who != who);
    }
}

/// A visitor whose home is this shard.
#[derive(Default)]
pub struct VisitorState {
    /// Its live connections.
    pub conns: Vec<ConnRef>,
    /// Its open conversation, if any (at most one).
    pub open_conv: Option<ConvId>,
    /// The newest token's routing attributes.
    pub profile: VisitorProfile,
}

/// Everything conversation-related a shard owns.
#[derive(Default)]
pub struct Conversations {
    /// Open conversations (and closed ones with entries in flight).
    pub convs: HashMap<(TenantId, ConvId), Conversation>,
    /// Visitors whose home is this shard and who are connected or have an
    /// open conversation.
    pub visitors: HashMap<(TenantId, UserId), VisitorState>,
    /// Recent and in-flight message ids.
    pub dedupe: DedupeCache,
}

impl Conversations {
    /// The conversation, if this shard holds it in memory.
    pub fn get_mut(&mut self, tenant: &TenantId, conv: &ConvId) -> Option<&mut Conversation> {
        // Keys are (TenantId, ConvId); build a borrowed lookup key cheaply.
        self.convs.get_mut(&(tenant.clone(), conv.clone()))
    }

    /// Drops a visitor's state when nothing needs it any more.
    pub fn forget_visitor_if_idle(&mut self, tenant: &TenantId, visitor: &UserId) {
        let key = (tenant.clone(), visitor.clone());
        if let Some(v) = self.visitors.get(&key) {
            if v.conns.is_empty() && v.open_conv.is_none() {
                self.visitors.remove(&key);
            }
        }
    }
}

/// A visitor's placement hash: its home shard and its conversations' ids.
pub fn visitor_placement(tenant: &TenantId, visitor: &UserId) -> u64 {
    shards::stable_hash(&[
        b"visitor",
        tenant.as_str().as_bytes(),
        visitor.as_str().as_bytes(),
    ])
}

/// A tenant's placement hash: the shard that routes it.
pub fn tenant_placement(tenant: &TenantId) -> u64 {
    shards::stable_hash(&[b"tenant", tenant.as_str().as_bytes()])
}

/// Shared display name type.
pub type Name = Option<Arc<str>>;
