//! The domain model: log entries, conversation and visitor state.
//!
//! These are the gateway's own types, independent of how the store encodes
//! them (rkyv, see `store`) and of how the protocol writes them (JSON, see
//! `protocol`). An [`EntryView`] is the borrowed shape both sides meet on: the
//! store hands one out straight from an archived record, a fresh [`Entry`]
//! lends one, and the protocol encoder writes a frame from either without
//! building an owned copy first.

use std::sync::Arc;

use crate::ids::{ConvId, Participant, Role, TenantId, UserId};

/// Who wrote a log entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthorRole {
    /// The shopper.
    Visitor,
    /// A support agent.
    Agent,
    /// The gateway itself: routing and lifecycle events.
    System,
    /// An automatic answer.
    Bot,
}

impl AuthorRole {
    /// The role as the protocol writes it in `from.role` and `by.role`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorRole::Visitor => "visitor",
            AuthorRole::Agent => "agent",
            AuthorRole::System => "system",
            AuthorRole::Bot => "bot",
        }
    }
}

impl From<Role> for AuthorRole {
    fn from(role: Role) -> Self {
        match role {
            Role::Visitor => AuthorRole::Visitor,
            Role::Agent => AuthorRole::Agent,
        }
    }
}

/// An agent as conversations name it: id and display name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentRef {
    /// The agent's id.
    pub id: UserId,
    /// The agent's display name, when its token carried one.
    pub name: Option<Arc<str>>,
}

/// A system entry's event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The conversation entered (or re-entered) the queue.
    Queued,
    /// The conversation was assigned (or transferred) to this agent.
    Assigned(AgentRef),
    /// The conversation was closed, by this participant (or by the gateway: `None`).
    Closed(Option<(AuthorRole, UserId)>),
}

/// One entry of a conversation's log, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Position in the conversation's log: 1, 2, 3, ... without gaps.
    pub seq: u64,
    /// The gateway's time of appending, unix milliseconds.
    pub ts_ms: u64,
    /// Who wrote it.
    pub author: AuthorRole,
    /// The author's id; `None` for system entries.
    pub author_id: Option<UserId>,
    /// The author's display name, when known.
    pub author_name: Option<Arc<str>>,
    /// The client's message id, which makes sends idempotent; `None` for system entries.
    pub client_id: Option<Arc<str>>,
    /// The chat text; `None` for system entries.
    pub text: Option<Arc<str>>,
    /// The system event; `None` for chat messages.
    pub event: Option<Event>,
}

/// A borrowed view of an entry: what the encoder needs, wherever the bytes live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryView<'a> {
    /// See [`Entry::seq`].
    pub seq: u64,
    /// See [`Entry::ts_ms`].
    pub ts_ms: u64,
    /// See [`Entry::author`].
    pub author: AuthorRole,
    /// See [`Entry::author_id`].
    pub author_id: Option<&'a str>,
    /// See [`Entry::author_name`].
    pub author_name: Option<&'a str>,
    /// See [`Entry::client_id`].
    pub client_id: Option<&'a str>,
    /// See [`Entry::text`].
    pub text: Option<&'a str>,
    /// See [`Entry::event`].
    pub event: Option<EventView<'a>>,
}

/// A borrowed view of an [`Event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventView<'a> {
    /// See [`Event::Queued`].
    Queued,
    /// See [`Event::Assigned`]: agent id and optional name.
    Assigned {
        /// The agent's id.
        agent_id: &'a str,
        /// The agent's display name.
        agent_name: Option<&'a str>,
    },
    /// See [`Event::Closed`]: who closed it, if a participant did.
    Closed {
        /// The closer's role and id, `None` when the gateway closed it.
        by: Option<(AuthorRole, &'a str)>,
    },
}

impl Entry {
    /// Borrows this entry as a view.
    pub fn view(&self) -> EntryView<'_> {
        EntryView {
            seq: self.seq,
            ts_ms: self.ts_ms,
            author: self.author,
            author_id: self.author_id.as_ref().map(|id| id.as_str()),
            author_name: self.author_name.as_deref(),
            client_id: self.client_id.as_deref(),
            text: self.text.as_deref(),
            event: self.event.as_ref().map(|event| match event {
                Event::Queued => EventView::Queued,
                Event::Assigned(agent) => EventView::Assigned {
                    agent_id: agent.id.as_str(),
                    agent_name: agent.name.as_deref(),
                },
                Event::Closed(by) => EventView::Closed {
                    by: by.as_ref().map(|(role, id)| (*role, id.as_str())),
                },
            }),
        }
    }
}

impl EntryView<'_> {
    /// Copies the view into an owned entry.
    pub fn to_entry(&self) -> Entry {
        Entry {
            seq: self.seq,
            ts_ms: self.ts_ms,
            author: self.author,
            author_id: self.author_id.map(UserId::from),
            author_name: self.author_name.map(Arc::from),
            client_id: self.client_id.map(Arc::from),
            text: self.text.map(Arc::from),
            event: self.event.map(|event| match event {
                EventView::Queued => Event::Queued,
                EventView::Assigned {
                    agent_id,
                    agent_name,
                } => Event::Assigned(AgentRef {
                    id: UserId::from(agent_id),
                    name: agent_name.map(Arc::from),
                }),
                EventView::Closed { by } => {
                    Event::Closed(by.map(|(role, id)| (role, UserId::from(id))))
                }
            }),
        }
    }
}

/// The states a conversation can be in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConvState {
    /// Waiting in its tenant's queue for an agent.
    Queued,
    /// Served by this agent.
    Assigned(AgentRef),
    /// Final: the visitor's next message opens a new conversation.
    Closed,
}

impl ConvState {
    /// The state as the protocol writes it in `welcome`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ConvState::Queued => "queued",
            ConvState::Assigned(_) => "assigned",
            ConvState::Closed => "closed",
        }
    }
}

/// What routing needs to know about a conversation, and what survives restarts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvMeta {
    /// The visitor whose conversation this is.
    pub visitor: UserId,
    /// The visitor's display name, when its token carried one.
    pub visitor_name: Option<Arc<str>>,
    /// Queued, assigned or closed.
    pub state: ConvState,
    /// The skill an agent needs to serve it (the visitor token's `skill`).
    pub skill: Option<Arc<str>>,
    /// The visitor's preferred language.
    pub lang: Option<Arc<str>>,
    /// VIP conversations are served before the others.
    pub vip: bool,
    /// When the conversation was opened, unix milliseconds.
    pub created_ms: u64,
    /// When it last entered the queue, unix milliseconds (queue order).
    pub queued_ms: u64,
    /// It was requeued because its agent left or handed it back: it goes to the front.
    pub queue_front: bool,
    /// An agent that must not be offered this conversation again while it
    /// waits: the one who just handed it back to the queue.
    pub excluded_agent: Option<UserId>,
    /// When it was last assigned, unix milliseconds (0: never).
    pub assigned_ms: u64,
    /// The agent who served it last (kept after it closes, so that agent may
    /// still read its history).
    pub served_by: Option<UserId>,
}

/// Per-visitor state that outlives conversations: the sticky agent.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct VisitorMeta {
    /// The agent who last served this visitor, and when it was assigned (unix ms).
    pub last_agent: Option<(UserId, u64)>,
}

/// The key that makes a send idempotent: one `(sender, id)` is stored once, forever.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DedupeKey {
    /// The sender's tenant.
    pub tenant: TenantId,
    /// The sender.
    pub sender: Participant,
    /// The client's message id.
    pub client_id: Arc<str>,
}

/// Where a `(sender, id)` was stored: the original `ack`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DedupeHit {
    /// The conversation the message went to.
    pub conv: ConvId,
    /// The seq it was stored at.
    pub seq: u64,
}

/// Unix time now, in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
