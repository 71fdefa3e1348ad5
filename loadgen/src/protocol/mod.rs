//! The boundary between the scenarios and a system's wire protocol.
//!
//! Scenarios think in chat terms: a client says hello, sends messages with
//! ids of its own into conversations, gets acks (the message is durable,
//! with its sequence number), receives entries of conversations (with
//! their sequence numbers), and confirms receipt with a cumulative cursor.
//! A [`Protocol`] turns those commands into WebSocket frames and frames
//! back into [`Inbound`] events. [`kefu::KefuV1`] is protocol v1; a peer
//! (MQTT over WebSocket for mosquitto, NATS/JetStream for nats-server) is
//! another implementation, mapping "conversation" to a topic or subject,
//! "ack" to PUBACK or a JetStream publish ack, and synthesising `seq` from
//! its own counters (the [`Protocol::Session`] holds such per-connection
//! state, like MQTT packet ids).
//!
//! The scenarios are generic over the protocol (`scenario::run_chat`,
//! `scenario::run_flood` take one), so a peer needs only this trait and a
//! subcommand flag to pick it ([`crate::cli::System`]). What the chat scenario relies on, which a
//! peer driver must provide or synthesise: a [`Inbound::Welcome`] per
//! connection; for each visitor, an [`Entry`] with event `assigned` once
//! its counterpart (the agent, or the subscriber of its topic) is in
//! place, since measuring waits for it; acks carrying the `seq` the
//! message got, and entries carrying the same `seq` on the other side, in
//! increasing order per conversation; message ids echoed back unchanged.

pub mod kefu;
pub mod mqtt;
pub mod nats;
pub mod peer;

use std::borrow::Cow;

use crate::token::Role;
use crate::ws::{Frame, FrameWriter, OpCode};

/// Where a protocol writes its frames: the connection's outgoing bytes.
pub struct Outbox<'a> {
    /// Bytes not yet written to the socket.
    pub buf: &'a mut Vec<u8>,
}

impl Outbox<'_> {
    /// Appends one masked frame whose payload `fill` writes.
    pub fn frame(&mut self, opcode: OpCode, fill: impl FnOnce(&mut Vec<u8>)) {
        let mut w = FrameWriter::begin(self.buf, opcode);
        fill(w.payload());
        w.finish(crate::util::rand_mask());
    }
}

/// Who a connection speaks for.
#[derive(Clone, Debug)]
pub struct Credentials<'a> {
    /// Visitor or agent.
    pub role: Role,
    /// The tenant.
    pub tenant: &'a str,
    /// A token, or `None` for an anonymous visitor.
    pub token: Option<&'a str>,
    /// The client's id (`sub`; empty for an anonymous visitor before its
    /// first welcome).
    pub id: &'a str,
    /// The client's index among the clients of its role (peers map
    /// visitor `i` to agent `i % agents`).
    pub index: u32,
}

/// An entry of a conversation's log, as delivered to a participant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The conversation.
    pub conv: Cow<'a, str>,
    /// Its position in the conversation's log.
    pub seq: u64,
    /// The sender's message id (chat messages only).
    pub id: Option<Cow<'a, str>>,
    /// `visitor`, `agent`, `system` or `bot`.
    pub from_role: Cow<'a, str>,
    /// The sender's id (visitors and agents).
    pub from_id: Option<Cow<'a, str>>,
    /// The message text (chat messages only).
    pub text: Option<Cow<'a, str>>,
    /// `queued`, `assigned` or `closed` (system entries only).
    pub event: Option<Cow<'a, str>>,
}

/// A conversation listed in a welcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvSummary {
    /// The conversation.
    pub conv: String,
    /// Its last durable seq.
    pub last_seq: u64,
    /// `queued`, `assigned`.
    pub state: String,
}

/// What the server said, as scenarios understand it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// The session is open.
    Welcome {
        /// The caller's id (the gateway makes one up for anonymous visitors).
        id: String,
        /// A token the gateway issued (anonymous visitors).
        token: Option<String>,
        /// Open conversations.
        conversations: Vec<ConvSummary>,
    },
    /// A message of ours is durable.
    Ack {
        /// Our message id.
        id: Cow<'a, str>,
        /// Its conversation.
        conv: Cow<'a, str>,
        /// Its seq.
        seq: u64,
    },
    /// A log entry.
    Entry(Entry<'a>),
    /// An error answer.
    Error {
        /// The error code (`rate_limited`, `unavailable`...).
        code: Cow<'a, str>,
        /// The id of the frame that failed, if any.
        reference: Option<Cow<'a, str>>,
    },
    /// Anything the scenarios do not act on (queue positions, typing...).
    Other,
    /// A frame that does not parse.
    Malformed(String),
    /// Several events from one frame: the peers' protocols are byte
    /// streams carried in WebSocket messages, so one message may hold
    /// several of their packets (NATS batches its writes).
    Batch(Vec<Inbound<'a>>),
}

impl Inbound<'_> {
    /// The same event, owning its strings.
    pub fn into_owned(self) -> Inbound<'static> {
        let own = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        match self {
            Inbound::Welcome {
                id,
                token,
                conversations,
            } => Inbound::Welcome {
                id,
                token,
                conversations,
            },
            Inbound::Ack { id, conv, seq } => Inbound::Ack {
                id: own(id),
                conv: own(conv),
                seq,
            },
            Inbound::Entry(e) => Inbound::Entry(Entry {
                conv: own(e.conv),
                seq: e.seq,
                id: e.id.map(own),
                from_role: own(e.from_role),
                from_id: e.from_id.map(own),
                text: e.text.map(own),
                event: e.event.map(own),
            }),
            Inbound::Error { code, reference } => Inbound::Error {
                code: own(code),
                reference: reference.map(own),
            },
            Inbound::Other => Inbound::Other,
            Inbound::Malformed(why) => Inbound::Malformed(why),
            Inbound::Batch(all) => {
                Inbound::Batch(all.into_iter().map(Inbound::into_owned).collect())
            }
        }
    }
}

/// One system's wire protocol, client side.
pub trait Protocol: 'static {
    /// Per-connection protocol state (for example packet ids in flight).
    type Session: Default;

    /// A short name for reports (`kefu`, `mosquitto`...).
    fn name(&self) -> &'static str;

    /// The largest WebSocket message accepted from the server (kefu's own
    /// limit by default; brokers batch many packets into one message).
    fn max_message(&self) -> usize {
        crate::client::MAX_MESSAGE
    }

    /// `Sec-WebSocket-Protocol` to ask for, if any.
    fn subprotocol(&self) -> Option<&'static str> {
        None
    }

    /// The first frames of a session.
    fn hello(&self, session: &mut Self::Session, who: &Credentials<'_>, out: &mut Outbox<'_>);

    /// A chat message with our `id`, into `conv` (`None`: the visitor's open
    /// conversation, or a new one).
    fn message(
        &self,
        session: &mut Self::Session,
        conv: Option<&str>,
        id: &str,
        text: &str,
        out: &mut Outbox<'_>,
    );

    /// A cumulative receipt: every entry of `conv` up to `seq` is held.
    fn receipt(&self, session: &mut Self::Session, conv: &str, seq: u64, out: &mut Outbox<'_>);

    /// Decodes a data frame ([`Frame::Text`] or [`Frame::Binary`]). What
    /// the protocol must answer at once (an MQTT PUBACK for a QoS 1
    /// delivery, a NATS PONG, the next step of a JetStream setup) goes to
    /// `out`.
    fn decode<'a>(
        &self,
        session: &mut Self::Session,
        frame: Frame<'a>,
        out: &mut Outbox<'_>,
    ) -> Inbound<'a>;
}
