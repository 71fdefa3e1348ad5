//! What the peer drivers (MQTT, NATS, JetStream) share: how a chat maps
//! onto topics, and how a message carries what kefu's frames carry.
//!
//! # The mapping
//!
//! A kefu conversation is one visitor talking with one agent through the
//! gateway's log. On a broker it is a pair of topics (subjects):
//!
//! - `<root>/<agent>/<visitor>/v`: visitor → agent; the visitor publishes,
//!   the agent is subscribed to `<root>/<agent>/+/v` (one subscription for
//!   all its conversations);
//! - `<root>/<agent>/<visitor>/a`: agent → visitor; the agent publishes,
//!   the visitor is subscribed to exactly this topic.
//!
//! `<root>` is a per-system prefix with the run id in it (NATS uses `.`
//! where MQTT uses `/`, `*` where MQTT uses `+`), `<visitor>` is the
//! visitor's index `i` and `<agent>` is `i % agents`: visitors are spread
//! evenly over agents, as kefu's routing spreads them by load. The
//! conversation's name in reports is `<visitor>`.
//!
//! # The payload
//!
//! A broker gives no per-conversation sequence number, so the sender puts
//! one in the payload: `<seq> <from> <id> <text>`, ASCII, one space
//! apart, where `text` is the scenario's text (the scheduled send time,
//! then padding up to `--text-bytes`). The `seq` is derived from the
//! message id so that it is the same on every resend: visitor message
//! `m<n>` has `seq` `2n − 1`, an agent's reply to it (`<visitor>/<n>`)
//! has `2n`. Each direction's `seq`s therefore increase with every
//! message, and the two directions never share one, so the scenario's
//! verification (lost, duplicated, reordered per conversation) works
//! unchanged. The payload is about as long as kefu's `msg` frame for the
//! same text (kefu's frame carries JSON keys; the broker's packet carries
//! the topic).

use std::borrow::Cow;

use super::{ConvSummary, Entry, Inbound};
use crate::client::message_number;
use crate::token::Role;

/// The largest WebSocket message a peer may send: nats-server writes all
/// it has pending for a connection as one message, which under load is
/// far beyond kefu's 64 KiB.
pub const MAX_PEER_MESSAGE: usize = 64 << 20;

/// Who a peer connection is, in topic terms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Me {
    /// Not said hello yet.
    #[default]
    Nobody,
    /// Visitor `index`, served by agent `agent`.
    Visitor {
        /// The visitor's index.
        index: u32,
        /// The agent's index.
        agent: u32,
    },
    /// Agent `index`.
    Agent {
        /// The agent's index.
        index: u32,
    },
}

impl Me {
    /// Visitor `index` or agent `index` of a run with `agents` agents.
    pub fn new(role: Role, index: u32, agents: u32) -> Me {
        match role {
            Role::Visitor => Me::Visitor {
                index,
                agent: index % agents.max(1),
            },
            Role::Agent => Me::Agent { index },
        }
    }

    /// The agent's index (the topic level of every conversation of ours).
    pub fn agent(&self) -> u32 {
        match *self {
            Me::Visitor { agent, .. } => agent,
            Me::Agent { index } => index,
            Me::Nobody => 0,
        }
    }
}

/// Which way a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Visitor → agent (`v`).
    ToAgent,
    /// Agent → visitor (`a`).
    ToVisitor,
}

impl Direction {
    /// The last topic level.
    pub fn suffix(self) -> &'static str {
        match self {
            Direction::ToAgent => "v",
            Direction::ToVisitor => "a",
        }
    }

    /// The direction a topic's last level names.
    pub fn of_suffix(s: &str) -> Option<Direction> {
        match s {
            "v" => Some(Direction::ToAgent),
            "a" => Some(Direction::ToVisitor),
            _ => None,
        }
    }

    /// The sender's role.
    pub fn sender(self) -> &'static str {
        match self {
            Direction::ToAgent => "visitor",
            Direction::ToVisitor => "agent",
        }
    }
}

/// The topic of conversation `conv` (a visitor index, as text) of agent
/// `agent`, in direction `dir`, with levels joined by `sep`.
pub fn topic(root: &str, sep: char, agent: u32, conv: &str, dir: Direction) -> String {
    format!("{root}{sep}{agent}{sep}{conv}{sep}{}", dir.suffix())
}

/// Splits a topic into its conversation and direction (the last two
/// levels).
pub fn parse_topic(topic: &str, sep: char) -> Option<(&str, Direction)> {
    let (rest, dir) = topic.rsplit_once(sep)?;
    let (_, conv) = rest.rsplit_once(sep)?;
    Some((conv, Direction::of_suffix(dir)?))
}

/// The `seq` a message id stands for (see the module docs).
pub fn seq_of(id: &str) -> Option<u64> {
    let n = message_number(id)?;
    if id.contains('/') {
        Some(2 * n)
    } else {
        Some((2 * n).checked_sub(1)?)
    }
}

/// Appends the payload `<seq> <from> <id> <text>` to `out`.
pub fn write_payload(out: &mut Vec<u8>, seq: u64, from: &str, id: &str, text: &str) {
    use std::io::Write as _;
    let _ = write!(out, "{seq} {from} {id} {text}");
}

/// The length of the payload [`write_payload`] writes.
pub fn payload_len(seq: u64, from: &str, id: &str, text: &str) -> usize {
    let digits = seq.checked_ilog10().map_or(1, |d| d as usize + 1);
    digits + 1 + from.len() + 1 + id.len() + 1 + text.len()
}

/// The entry a payload received on conversation `conv`'s topic in
/// direction `dir` stands for.
pub fn entry_of<'a>(conv: Cow<'a, str>, dir: Direction, payload: Cow<'a, [u8]>) -> Inbound<'a> {
    fn split(p: &str) -> Option<(u64, &str, &str, &str)> {
        let mut it = p.splitn(4, ' ');
        let seq = it.next()?.parse().ok()?;
        Some((seq, it.next()?, it.next()?, it.next()?))
    }
    let bad = || Inbound::Malformed("payload is not `<seq> <from> <id> <text>`".into());
    match payload {
        Cow::Borrowed(bytes) => {
            let Ok(p) = std::str::from_utf8(bytes) else {
                return bad();
            };
            let Some((seq, from, id, text)) = split(p) else {
                return bad();
            };
            Inbound::Entry(Entry {
                conv,
                seq,
                id: Some(Cow::Borrowed(id)),
                from_role: Cow::Borrowed(dir.sender()),
                from_id: Some(Cow::Borrowed(from)),
                text: Some(Cow::Borrowed(text)),
                event: None,
            })
        }
        Cow::Owned(bytes) => {
            let Ok(p) = std::str::from_utf8(&bytes) else {
                return bad();
            };
            let Some((seq, from, id, text)) = split(p) else {
                return bad();
            };
            Inbound::Entry(Entry {
                conv: Cow::Owned(conv.into_owned()),
                seq,
                id: Some(Cow::Owned(id.to_owned())),
                from_role: Cow::Borrowed(dir.sender()),
                from_id: Some(Cow::Owned(from.to_owned())),
                text: Some(Cow::Owned(text.to_owned())),
                event: None,
            })
        }
    }
}

/// The welcome a peer connection reports once it is subscribed: a
/// visitor's conversation counts as assigned from then on (its agent
/// subscribed before any visitor connected).
pub fn welcome(id: &str, me: &Me) -> Inbound<'static> {
    let conversations = match me {
        Me::Visitor { index, .. } => vec![ConvSummary {
            conv: index.to_string(),
            last_seq: 0,
            state: "assigned".into(),
        }],
        _ => Vec::new(),
    };
    Inbound::Welcome {
        id: id.to_string(),
        token: None,
        conversations,
    }
}

/// An in-flight publish awaiting its broker ack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InFlight {
    /// The broker's handle for it (MQTT packet id, JetStream reply number).
    pub key: u64,
    /// Our message id.
    pub id: Box<str>,
    /// Its conversation.
    pub conv: Box<str>,
    /// Its `seq`.
    pub seq: u64,
}

/// Removes the in-flight publish with `key` (acks come nearly in order, so
/// this looks from the front) and turns it into an ack.
pub fn take_ack(
    in_flight: &mut std::collections::VecDeque<InFlight>,
    key: u64,
) -> Inbound<'static> {
    match in_flight.iter().position(|f| f.key == key) {
        Some(p) => {
            let f = in_flight.remove(p).expect("found");
            Inbound::Ack {
                id: Cow::Owned(f.id.into()),
                conv: Cow::Owned(f.conv.into()),
                seq: f.seq,
            }
        }
        None => Inbound::Malformed(format!("ack {key} for nothing in flight")),
    }
}

/// Decodes the packets of a byte stream that arrives in WebSocket frames,
/// a packet possibly split across frames: `partial` holds the unfinished
/// tail between calls. `step` decodes one packet at the start of its input
/// (`Ok(None)`: it needs more bytes) and turns it into an event; its flag
/// says the input is `partial`'s buffer, not the frame, so the event must
/// not borrow from it. An error empties `partial` (the stream is broken).
pub fn decode_stream<'a>(
    partial: &mut Vec<u8>,
    bytes: &'a [u8],
    mut step: impl for<'b> FnMut(&'b [u8], bool) -> Result<Option<(Inbound<'b>, usize)>, String>,
) -> Inbound<'a> {
    let mut events = Vec::new();
    if partial.is_empty() {
        let mut at = 0;
        loop {
            match step(&bytes[at..], false) {
                Ok(Some((event, n))) => {
                    at += n;
                    events.push(event);
                }
                Ok(None) => break,
                Err(e) => return Inbound::Malformed(e),
            }
        }
        partial.extend_from_slice(&bytes[at..]);
    } else {
        let mut buf = std::mem::take(partial);
        buf.extend_from_slice(bytes);
        let mut at = 0;
        loop {
            match step(&buf[at..], true) {
                Ok(Some((event, n))) => {
                    at += n;
                    events.push(event.into_owned());
                }
                Ok(None) => break,
                Err(e) => return Inbound::Malformed(e),
            }
        }
        buf.drain(..at);
        *partial = buf;
    }
    one_or_batch(events)
}

/// One event, or a batch of them.
pub fn one_or_batch(mut events: Vec<Inbound<'_>>) -> Inbound<'_> {
    match events.len() {
        0 => Inbound::Other,
        1 => events.pop().expect("one"),
        _ => Inbound::Batch(events),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_seqs() {
        let t = topic("kefu/r1", '/', 3, "17", Direction::ToAgent);
        assert_eq!(t, "kefu/r1/3/17/v");
        assert_eq!(parse_topic(&t, '/'), Some(("17", Direction::ToAgent)));
        assert_eq!(
            parse_topic("kn.r1.0.5.a", '.'),
            Some(("5", Direction::ToVisitor))
        );
        assert_eq!(parse_topic("x.y", '.'), None);
        assert_eq!(seq_of("m1"), Some(1));
        assert_eq!(seq_of("m7"), Some(13));
        assert_eq!(seq_of("lgxv3/7"), Some(14));
        assert_eq!(seq_of("m0"), None);
        assert_eq!(Me::new(Role::Visitor, 7, 3).agent(), 1);
    }

    #[test]
    fn payloads_round_trip() {
        let mut p = Vec::new();
        write_payload(&mut p, 13, "lgv7", "m7", "123 xx");
        assert_eq!(p, b"13 lgv7 m7 123 xx");
        assert_eq!(payload_len(13, "lgv7", "m7", "123 xx"), p.len());
        assert_eq!(payload_len(9, "a", "b", "c"), 7);
        let Inbound::Entry(e) = entry_of("7".into(), Direction::ToAgent, Cow::Borrowed(&p)) else {
            panic!("not an entry")
        };
        assert_eq!(e.seq, 13);
        assert_eq!(e.from_role, "visitor");
        assert_eq!(e.from_id.as_deref(), Some("lgv7"));
        assert_eq!(e.id.as_deref(), Some("m7"));
        assert_eq!(e.text.as_deref(), Some("123 xx"));
        let owned = entry_of("7".into(), Direction::ToVisitor, Cow::Owned(p.clone()));
        assert!(matches!(owned, Inbound::Entry(Entry { seq: 13, .. })));
        assert!(matches!(
            entry_of("7".into(), Direction::ToAgent, Cow::Borrowed(b"x y")),
            Inbound::Malformed(_)
        ));
    }

    #[test]
    fn acks_match_in_flight_publishes() {
        let mut q: std::collections::VecDeque<InFlight> = (1..=3)
            .map(|k| InFlight {
                key: k,
                id: format!("m{k}").into(),
                conv: "0".into(),
                seq: 2 * k - 1,
            })
            .collect();
        assert_eq!(
            take_ack(&mut q, 2),
            Inbound::Ack {
                id: "m2".into(),
                conv: "0".into(),
                seq: 3
            }
        );
        assert!(matches!(take_ack(&mut q, 2), Inbound::Malformed(_)));
        assert_eq!(q.len(), 2);
    }
}
