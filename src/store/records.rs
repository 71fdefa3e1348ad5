//! The on-disk records, encoded with rkyv.
//!
//! These types are the storage schema, kept apart from the domain model
//! ([`crate::model`]) so that the model can change shape without silently
//! changing the bytes on disk: changing a record here is a schema change and
//! needs a new [`SCHEMA_VERSION`](super::SCHEMA_VERSION).
//!
//! Records are written with [`encode`] and read back with [`access`], which
//! validates the bytes (rkyv's `bytecheck`) and hands out a reference into
//! them: no copy, no deserialisation. The crate enables rkyv's `unaligned`
//! feature, so archived types have alignment 1 and any byte slice sled hands
//! back (an `IVec` may start anywhere) can be accessed in place. Log entries
//! become an [`EntryView`] borrowed straight from those bytes
//! ([`entry_view`]); the rarely read records (conversation, visitor, dedupe)
//! are converted to owned model types.
//!
//! Integers are little endian inside records (rkyv's `little_endian`
//! feature) and big endian in keys (sort order, see `keys`).

use std::sync::Arc;

use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Portable, Serialize};

use super::keys::hex;
use super::StoreError;
use crate::ids::{ConvId, UserId};
use crate::model::{
    AgentRef, AuthorRole, ConvMeta, ConvState, DedupeHit, Entry, EntryView, Event, EventView,
    VisitorMeta,
};

/// Who wrote an entry (mirrors [`AuthorRole`]).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub(crate) enum AuthorRecord {
    /// See [`AuthorRole::Visitor`].
    Visitor,
    /// See [`AuthorRole::Agent`].
    Agent,
    /// See [`AuthorRole::System`].
    System,
    /// See [`AuthorRole::Bot`].
    Bot,
}

impl From<AuthorRole> for AuthorRecord {
    fn from(role: AuthorRole) -> Self {
        match role {
            AuthorRole::Visitor => AuthorRecord::Visitor,
            AuthorRole::Agent => AuthorRecord::Agent,
            AuthorRole::System => AuthorRecord::System,
            AuthorRole::Bot => AuthorRecord::Bot,
        }
    }
}

impl ArchivedAuthorRecord {
    fn role(&self) -> AuthorRole {
        match self {
            ArchivedAuthorRecord::Visitor => AuthorRole::Visitor,
            ArchivedAuthorRecord::Agent => AuthorRole::Agent,
            ArchivedAuthorRecord::System => AuthorRole::System,
            ArchivedAuthorRecord::Bot => AuthorRole::Bot,
        }
    }
}

/// Who closed a conversation (in a `closed` system entry).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub(crate) struct ClosedByRecord {
    /// The closer's role.
    pub role: AuthorRecord,
    /// The closer's id.
    pub id: String,
}

/// A system entry's event (mirrors [`Event`]).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub(crate) enum EventRecord {
    /// See [`Event::Queued`].
    Queued,
    /// See [`Event::Assigned`].
    Assigned {
        /// The agent's id.
        agent_id: String,
        /// The agent's display name.
        agent_name: Option<String>,
    },
    /// See [`Event::Closed`].
    Closed {
        /// Who closed it; `None`: the gateway.
        by: Option<ClosedByRecord>,
    },
}

/// One log entry (mirrors [`Entry`]). Stored under its `E` key.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub(crate) struct EntryRecord {
    /// Also in the key; kept here so a record is self-describing, and checked
    /// against the key on every read.
    pub seq: u64,
    /// See [`Entry::ts_ms`].
    pub ts_ms: u64,
    /// See [`Entry::author`].
    pub author: AuthorRecord,
    /// See [`Entry::author_id`].
    pub author_id: Option<String>,
    /// See [`Entry::author_name`].
    pub author_name: Option<String>,
    /// See [`Entry::client_id`].
    pub client_id: Option<String>,
    /// See [`Entry::text`].
    pub text: Option<String>,
    /// See [`Entry::event`].
    pub event: Option<EventRecord>,
}

impl From<&Entry> for EntryRecord {
    fn from(e: &Entry) -> Self {
        EntryRecord {
            seq: e.seq,
            ts_ms: e.ts_ms,
            author: e.author.into(),
            author_id: e.author_id.as_ref().map(|id| id.as_str().to_owned()),
            author_name: e.author_name.as_deref().map(str::to_owned),
            client_id: e.client_id.as_deref().map(str::to_owned),
            text: e.text.as_deref().map(str::to_owned),
            event: e.event.as_ref().map(|event| match event {
                Event::Queued => EventRecord::Queued,
                Event::Assigned(agent) => EventRecord::Assigned {
                    agent_id: agent.id.as_str().to_owned(),
                    agent_name: agent.name.as_deref().map(str::to_owned),
                },
                Event::Closed(by) => EventRecord::Closed {
                    by: by.as_ref().map(|(role, id)| ClosedByRecord {
                        role: (*role).into(),
                        id: id.as_str().to_owned(),
                    }),
                },
            }),
        }
    }
}

/// Borrows an archived entry as the model's view: no copy.
pub(crate) fn entry_view(a: &ArchivedEntryRecord) -> EntryView<'_> {
    EntryView {
        seq: a.seq.to_native(),
        ts_ms: a.ts_ms.to_native(),
        author: a.author.role(),
        author_id: a.author_id.as_ref().map(|s| s.as_str()),
        author_name: a.author_name.as_ref().map(|s| s.as_str()),
        client_id: a.client_id.as_ref().map(|s| s.as_str()),
        text: a.text.as_ref().map(|s| s.as_str()),
        event: a.event.as_ref().map(|event| match event {
            ArchivedEventRecord::Queued => EventView::Queued,
            ArchivedEventRecord::Assigned {
                agent_id,
                agent_name,
            } => EventView::Assigned {
                agent_id: agent_id.as_str(),
                agent_name: agent_name.as_ref().map(|s| s.as_str()),
            },
            ArchivedEventRecord::Closed { by } => EventView::Closed {
                by: by.as_ref().map(|b| (b.role.role(), b.id.as_str())),
            },
        }),
    }
}

/// A conversation's state (mirrors [`ConvState`]).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub(crate) enum ConvStateRecord {
    /// See [`ConvState::Queued`].
    Queued,
    /// See [`ConvState::Assigned`].
    Assigned {
        /// The agent's id.
        agent_id: String,
        /// The agent's display name.
        agent_name: Option<String>,
    },
    /// See [`ConvState::Closed`].
    Closed,
}

/// A conversation's routing state (mirrors [`ConvMeta`]). Stored under its `C` key.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub(crate) struct ConvRecord {
    /// See [`ConvMeta::visitor`].
    pub visitor: String,
    /// See [`ConvMeta::visitor_name`].
    pub visitor_name: Option<String>,
    /// See [`ConvMeta::state`].
    pub state: ConvStateRecord,
    /// See [`ConvMeta::skill`].
    pub skill: Option<String>,
    /// See [`ConvMeta::lang`].
    pub lang: Option<String>,
    /// See [`ConvMeta::vip`].
    pub vip: bool,
    /// See [`ConvMeta::created_ms`].
    pub created_ms: u64,
    /// See [`ConvMeta::queued_ms`].
    pub queued_ms: u64,
    /// See [`ConvMeta::queue_front`].
    pub queue_front: bool,
    /// See [`ConvMeta::excluded_agent`].
    pub excluded_agent: Option<String>,
    /// See [`ConvMeta::assigned_ms`].
    pub assigned_ms: u64,
    /// See [`ConvMeta::served_by`].
    pub served_by: Option<String>,
}

fn owned(s: &Option<Arc<str>>) -> Option<String> {
    s.as_deref().map(str::to_owned)
}

fn shared(s: &rkyv::option::ArchivedOption<rkyv::string::ArchivedString>) -> Option<Arc<str>> {
    s.as_ref().map(|s| Arc::from(s.as_str()))
}

impl From<&ConvMeta> for ConvRecord {
    fn from(m: &ConvMeta) -> Self {
        ConvRecord {
            visitor: m.visitor.as_str().to_owned(),
            visitor_name: owned(&m.visitor_name),
            state: match &m.state {
                ConvState::Queued => ConvStateRecord::Queued,
                ConvState::Assigned(agent) => ConvStateRecord::Assigned {
                    agent_id: agent.id.as_str().to_owned(),
                    agent_name: owned(&agent.name),
                },
                ConvState::Closed => ConvStateRecord::Closed,
            },
            skill: owned(&m.skill),
            lang: owned(&m.lang),
            vip: m.vip,
            created_ms: m.created_ms,
            queued_ms: m.queued_ms,
            queue_front: m.queue_front,
            excluded_agent: m.excluded_agent.as_ref().map(|a| a.as_str().to_owned()),
            assigned_ms: m.assigned_ms,
            served_by: m.served_by.as_ref().map(|a| a.as_str().to_owned()),
        }
    }
}

/// Copies an archived conversation record into the model.
pub(crate) fn conv_meta(a: &ArchivedConvRecord) -> ConvMeta {
    ConvMeta {
        visitor: UserId::from(a.visitor.as_str()),
        visitor_name: shared(&a.visitor_name),
        state: match &a.state {
            ArchivedConvStateRecord::Queued => ConvState::Queued,
            ArchivedConvStateRecord::Assigned {
                agent_id,
                agent_name,
            } => ConvState::Assigned(AgentRef {
                id: UserId::from(agent_id.as_str()),
                name: shared(agent_name),
            }),
            ArchivedConvStateRecord::Closed => ConvState::Closed,
        },
        skill: shared(&a.skill),
        lang: shared(&a.lang),
        vip: a.vip,
        created_ms: a.created_ms.to_native(),
        queued_ms: a.queued_ms.to_native(),
        queue_front: a.queue_front,
        excluded_agent: a.excluded_agent.as_ref().map(|s| UserId::from(s.as_str())),
        assigned_ms: a.assigned_ms.to_native(),
        served_by: a.served_by.as_ref().map(|s| UserId::from(s.as_str())),
    }
}

/// The sticky agent of a visitor.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub(crate) struct LastAgentRecord {
    /// The agent's id.
    pub id: String,
    /// When it was assigned, unix milliseconds.
    pub at_ms: u64,
}

/// Per-visitor state (mirrors [`VisitorMeta`]). Stored under its `V` key.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub(crate) struct VisitorRecord {
    /// See [`VisitorMeta::last_agent`].
    pub last_agent: Option<LastAgentRecord>,
}

impl From<&VisitorMeta> for VisitorRecord {
    fn from(m: &VisitorMeta) -> Self {
        VisitorRecord {
            last_agent: m.last_agent.as_ref().map(|(id, at_ms)| LastAgentRecord {
                id: id.as_str().to_owned(),
                at_ms: *at_ms,
            }),
        }
    }
}

/// Copies an archived visitor record into the model.
pub(crate) fn visitor_meta(a: &ArchivedVisitorRecord) -> VisitorMeta {
    VisitorMeta {
        last_agent: a
            .last_agent
            .as_ref()
            .map(|l| (UserId::from(l.id.as_str()), l.at_ms.to_native())),
    }
}

/// Where a `(sender, client id)` was stored. Stored under its `D` key.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub(crate) struct DedupeRecord {
    /// See [`DedupeHit::conv`].
    pub conv: String,
    /// See [`DedupeHit::seq`].
    pub seq: u64,
}

impl From<&DedupeHit> for DedupeRecord {
    fn from(h: &DedupeHit) -> Self {
        DedupeRecord {
            conv: h.conv.as_str().to_owned(),
            seq: h.seq,
        }
    }
}

/// Copies an archived dedupe record into the model.
pub(crate) fn dedupe_hit(a: &ArchivedDedupeRecord) -> DedupeHit {
    DedupeHit {
        conv: ConvId::from(a.conv.as_str()),
        seq: a.seq.to_native(),
    }
}

/// Serialises a record.
pub(crate) fn encode<T>(value: &T) -> Result<AlignedVec, StoreError>
where
    T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    rkyv::to_bytes::<rancor::Error>(value).map_err(|e| StoreError::Encode {
        reason: e.to_string(),
    })
}

/// Validates `bytes` (the value stored under `key`) as an archived `T` and
/// borrows it in place.
pub(crate) fn access<'b, T>(key: &[u8], bytes: &'b [u8]) -> Result<&'b T, StoreError>
where
    T: Portable + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    rkyv::access::<T, rancor::Error>(bytes).map_err(|e| StoreError::Corrupt {
        key_hex: hex(key),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip_entry(entry: &Entry) {
        let bytes = encode(&EntryRecord::from(entry)).unwrap();
        // Accessed at an odd offset: the `unaligned` feature makes any alignment fine.
        let mut shifted = vec![0u8; 1];
        shifted.extend_from_slice(&bytes);
        let archived = access::<ArchivedEntryRecord>(b"k", &shifted[1..]).unwrap();
        assert_eq!(entry_view(archived).to_entry(), *entry);
        let owned: EntryRecord = rkyv::deserialize::<_, rancor::Error>(archived).unwrap();
        assert_eq!(owned, EntryRecord::from(entry));
    }

    #[test]
    fn entries_round_trip() {
        let chat = Entry {
            seq: 7,
            ts_ms: 1_732_280_000_123,
            author: AuthorRole::Visitor,
            author_id: Some(UserId::from("v-1")),
            author_name: Some("Ann".into()),
            client_id: Some("m-42".into()),
            text: Some("where is my order? \u{1f4e6}".into()),
            event: None,
        };
        round_trip_entry(&chat);
        for event in [
            Event::Queued,
            Event::Assigned(AgentRef {
                id: UserId::from("alice"),
                name: Some("Alice".into()),
            }),
            Event::Assigned(AgentRef {
                id: UserId::from("bob"),
                name: None,
            }),
            Event::Closed(None),
            Event::Closed(Some((AuthorRole::Agent, UserId::from("alice")))),
        ] {
            round_trip_entry(&Entry {
                seq: 3,
                ts_ms: 9,
                author: AuthorRole::System,
                author_id: None,
                author_name: None,
                client_id: None,
                text: None,
                event: Some(event),
            });
        }
    }

    #[test]
    fn garbage_is_reported_as_corrupt_with_its_key() {
        let err = access::<ArchivedEntryRecord>(b"E\x01", &[0xff; 3]).unwrap_err();
        match err {
            StoreError::Corrupt { key_hex, .. } => assert_eq!(key_hex, "4501"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
