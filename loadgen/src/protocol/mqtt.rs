//! MQTT 3.1.1 over WebSocket, for mosquitto: the few packets a chat needs.
//!
//! A client says CONNECT (persistent session: clean session off, so the
//! broker keeps its subscription and queues QoS 1 messages while it is
//! away, as kefu keeps a participant's cursor) and SUBSCRIBEs with QoS 1
//! to its topics (see [`super::peer`]); the SUBACK is its welcome. A chat
//! message is a PUBLISH with QoS 1; the broker's PUBACK is its ack. A
//! delivery is a QoS 1 PUBLISH from the broker, which the client PUBACKs
//! at once. Packets travel in binary WebSocket messages (subprotocol
//! `mqtt`); one message may hold several packets or part of one, so the
//! session keeps the bytes of a packet cut short.
//!
//! Packet layouts: MQTT 3.1.1 (OASIS, 2014), §2 (fixed header, remaining
//! length) and §3 (CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK,
//! PINGREQ, PINGRESP, DISCONNECT).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;

use super::peer::{self, Direction, InFlight, Me};
use super::{Credentials, Inbound, Outbox, Protocol};
use crate::ws::{Frame, OpCode};

/// Packet type nibbles (§2.2.1).
mod kind {
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const PINGREQ: u8 = 12;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
}

/// A packet from the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// CONNACK: session present, return code (0: accepted).
    ConnAck {
        /// The broker had a session for this client id.
        session_present: bool,
        /// 0 accepted; 1..=5 refused (§3.2.2.3).
        code: u8,
    },
    /// PUBLISH.
    Publish {
        /// The topic.
        topic: &'a str,
        /// QoS 0, 1 or 2.
        qos: u8,
        /// A redelivery.
        dup: bool,
        /// The packet id (QoS 1 and 2).
        packet_id: Option<u16>,
        /// The payload.
        payload: &'a [u8],
    },
    /// PUBACK.
    PubAck {
        /// The acknowledged packet id.
        packet_id: u16,
    },
    /// SUBACK: one return code per filter (0x80: refused).
    SubAck {
        /// The SUBSCRIBE's packet id.
        packet_id: u16,
        /// Granted QoS or 0x80 per filter.
        codes: &'a [u8],
    },
    /// PINGRESP.
    PingResp,
    /// A packet type a client does not expect (its type nibble).
    Unexpected(u8),
}

/// The broker broke MQTT 3.1.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed MQTT packet: {}", self.0)
    }
}

/// Appends the remaining length `len` (§2.2.3: 7 bits a byte, high bit
/// "more").
pub fn write_remaining_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

/// Reads a remaining length at the start of `buf`: `(length, bytes used)`,
/// `None` if more bytes are needed.
pub fn read_remaining_length(buf: &[u8]) -> Result<Option<(usize, usize)>, Malformed> {
    let mut len = 0usize;
    for (i, &b) in buf.iter().enumerate() {
        if i == 4 {
            return Err(Malformed("remaining length longer than 4 bytes"));
        }
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((len, i + 1)));
        }
    }
    if buf.len() >= 4 {
        return Err(Malformed("remaining length longer than 4 bytes"));
    }
    Ok(None)
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// CONNECT (§3.1) with protocol level 4, no will, no credentials.
pub fn encode_connect(out: &mut Vec<u8>, client_id: &str, clean_session: bool, keep_alive: u16) {
    out.push(kind::CONNECT << 4);
    write_remaining_length(out, 10 + 2 + client_id.len());
    write_str(out, "MQTT");
    out.push(4);
    out.push(if clean_session { 0x02 } else { 0 });
    out.extend_from_slice(&keep_alive.to_be_bytes());
    write_str(out, client_id);
}

/// SUBSCRIBE (§3.8) to one filter.
pub fn encode_subscribe(out: &mut Vec<u8>, packet_id: u16, filter: &str, qos: u8) {
    out.push((kind::SUBSCRIBE << 4) | 0x02);
    write_remaining_length(out, 2 + 2 + filter.len() + 1);
    out.extend_from_slice(&packet_id.to_be_bytes());
    write_str(out, filter);
    out.push(qos);
}

/// PUBLISH (§3.3) with QoS 1 and `packet_id`; `fill` writes exactly
/// `payload_len` bytes of payload.
pub fn encode_publish_qos1(
    out: &mut Vec<u8>,
    topic: &str,
    packet_id: u16,
    payload_len: usize,
    fill: impl FnOnce(&mut Vec<u8>),
) {
    out.push((kind::PUBLISH << 4) | (1 << 1));
    write_remaining_length(out, 2 + topic.len() + 2 + payload_len);
    write_str(out, topic);
    out.extend_from_slice(&packet_id.to_be_bytes());
    let start = out.len();
    fill(out);
    debug_assert_eq!(out.len() - start, payload_len, "payload length");
}

/// PUBACK (§3.4).
pub fn encode_puback(out: &mut Vec<u8>, packet_id: u16) {
    out.push(kind::PUBACK << 4);
    out.push(2);
    out.extend_from_slice(&packet_id.to_be_bytes());
}

/// PINGREQ (§3.12).
pub fn encode_pingreq(out: &mut Vec<u8>) {
    out.extend_from_slice(&[kind::PINGREQ << 4, 0]);
}

/// DISCONNECT (§3.14).
pub fn encode_disconnect(out: &mut Vec<u8>) {
    out.extend_from_slice(&[kind::DISCONNECT << 4, 0]);
}

fn u16_at(b: &[u8], i: usize) -> Result<u16, Malformed> {
    b.get(i..i + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or(Malformed("packet too short"))
}

/// Decodes the packet at the start of `buf`: the packet and its length,
/// or `None` if `buf` holds only part of it.
pub fn decode_packet(buf: &[u8]) -> Result<Option<(Packet<'_>, usize)>, Malformed> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let Some((len, used)) = read_remaining_length(&buf[1..])? else {
        return Ok(None);
    };
    let start = 1 + used;
    if buf.len() < start + len {
        return Ok(None);
    }
    let body = &buf[start..start + len];
    let flags = first & 0x0f;
    let packet = match first >> 4 {
        kind::CONNACK => {
            if body.len() != 2 {
                return Err(Malformed("CONNACK length"));
            }
            Packet::ConnAck {
                session_present: body[0] & 1 != 0,
                code: body[1],
            }
        }
        kind::PUBLISH => {
            let qos = (flags >> 1) & 3;
            if qos == 3 {
                return Err(Malformed("PUBLISH QoS 3"));
            }
            let topic_len = usize::from(u16_at(body, 0)?);
            let topic = body
                .get(2..2 + topic_len)
                .ok_or(Malformed("PUBLISH topic past the end"))?;
            let topic =
                std::str::from_utf8(topic).map_err(|_| Malformed("PUBLISH topic not UTF-8"))?;
            let mut at = 2 + topic_len;
            let packet_id = if qos > 0 {
                at += 2;
                Some(u16_at(body, at - 2)?)
            } else {
                None
            };
            Packet::Publish {
                topic,
                qos,
                dup: flags & 0x08 != 0,
                packet_id,
                payload: &body[at..],
            }
        }
        kind::PUBACK => {
            if body.len() != 2 {
                return Err(Malformed("PUBACK length"));
            }
            Packet::PubAck {
                packet_id: u16_at(body, 0)?,
            }
        }
        kind::SUBACK => {
            if body.len() < 3 {
                return Err(Malformed("SUBACK length"));
            }
            Packet::SubAck {
                packet_id: u16_at(body, 0)?,
                codes: &body[2..],
            }
        }
        kind::PINGRESP => Packet::PingResp,
        other => Packet::Unexpected(other),
    };
    Ok(Some((packet, start + len)))
}

/// MQTT 3.1.1 QoS 1 over WebSocket (mosquitto).
#[derive(Clone, Debug)]
pub struct Mqtt {
    /// Topic root: `kefu/<run id>`.
    pub root: Arc<str>,
    /// Agents in the run (visitor `i` talks to agent `i % agents`).
    pub agents: u32,
}

impl Mqtt {
    /// A driver for run `run_id` with `agents` agents.
    pub fn new(run_id: &str, agents: u32) -> Self {
        Mqtt {
            root: format!("kefu/{run_id}").into(),
            agents: agents.max(1),
        }
    }
}

/// One MQTT connection's state.
#[derive(Debug, Default)]
pub struct MqttSession {
    /// Who we are.
    me: Me,
    /// Our client id.
    id: String,
    /// The last packet id used.
    last_packet: u16,
    /// Publishes awaiting their PUBACK.
    in_flight: VecDeque<InFlight>,
    /// The start of a packet the last WebSocket message cut short.
    partial: Vec<u8>,
    /// The SUBACK came.
    welcomed: bool,
}

impl MqttSession {
    fn next_packet_id(&mut self) -> u16 {
        self.last_packet = self.last_packet.checked_add(1).unwrap_or(1);
        self.last_packet
    }
}

impl Mqtt {
    /// Turns one packet into an event, writing the PUBACK a QoS 1
    /// delivery needs.
    fn on_packet<'a>(
        &self,
        s: &mut MqttSession,
        p: Packet<'a>,
        owned: bool,
        out: &mut Outbox<'_>,
    ) -> Inbound<'a> {
        match p {
            Packet::Publish {
                topic,
                qos,
                packet_id,
                payload,
                ..
            } => {
                if let (1, Some(pid)) = (qos, packet_id) {
                    out.frame(OpCode::Binary, |b| encode_puback(b, pid));
                }
                let Some((conv, dir)) = peer::parse_topic(topic, '/') else {
                    return Inbound::Malformed(format!("PUBLISH on an unknown topic {topic}"));
                };
                if owned {
                    peer::entry_of(
                        Cow::Owned(conv.to_owned()),
                        dir,
                        Cow::Owned(payload.to_vec()),
                    )
                } else {
                    peer::entry_of(Cow::Borrowed(conv), dir, Cow::Borrowed(payload))
                }
            }
            Packet::PubAck { packet_id } => peer::take_ack(&mut s.in_flight, u64::from(packet_id)),
            Packet::ConnAck { code: 0, .. } => Inbound::Other,
            Packet::ConnAck { code, .. } => Inbound::Error {
                code: Cow::Owned(format!("CONNACK refused ({code})")),
                reference: None,
            },
            Packet::SubAck { codes, .. } if codes.contains(&0x80) => Inbound::Error {
                code: Cow::Borrowed("SUBACK refused"),
                reference: None,
            },
            Packet::SubAck { .. } if !s.welcomed => {
                s.welcomed = true;
                peer::welcome(&s.id, &s.me)
            }
            Packet::SubAck { .. } | Packet::PingResp => Inbound::Other,
            Packet::Unexpected(k) => Inbound::Malformed(format!("unexpected MQTT packet type {k}")),
        }
    }
}

impl Protocol for Mqtt {
    type Session = MqttSession;

    fn name(&self) -> &'static str {
        "mosquitto"
    }

    fn subprotocol(&self) -> Option<&'static str> {
        Some("mqtt")
    }

    fn max_message(&self) -> usize {
        peer::MAX_PEER_MESSAGE
    }

    fn hello(&self, s: &mut MqttSession, who: &Credentials<'_>, out: &mut Outbox<'_>) {
        s.me = Me::new(who.role, who.index, self.agents);
        s.id = if who.id.is_empty() {
            format!("v{}", who.index)
        } else {
            who.id.to_string()
        };
        let filter = match &s.me {
            Me::Visitor { index, agent } => peer::topic(
                &self.root,
                '/',
                *agent,
                &index.to_string(),
                Direction::ToVisitor,
            ),
            _ => peer::topic(&self.root, '/', s.me.agent(), "+", Direction::ToAgent),
        };
        out.frame(OpCode::Binary, |b| encode_connect(b, &s.id, false, 0));
        let pid = s.next_packet_id();
        out.frame(OpCode::Binary, |b| encode_subscribe(b, pid, &filter, 1));
    }

    fn message(
        &self,
        s: &mut MqttSession,
        conv: Option<&str>,
        id: &str,
        text: &str,
        out: &mut Outbox<'_>,
    ) {
        let conv = match (conv, &s.me) {
            (Some(c), _) => c.to_string(),
            (None, Me::Visitor { index, .. }) => index.to_string(),
            (None, _) => return,
        };
        let dir = if matches!(s.me, Me::Agent { .. }) {
            Direction::ToVisitor
        } else {
            Direction::ToAgent
        };
        let seq = peer::seq_of(id).unwrap_or(0);
        let topic = peer::topic(&self.root, '/', s.me.agent(), &conv, dir);
        let pid = s.next_packet_id();
        let len = peer::payload_len(seq, &s.id, id, text);
        let from = s.id.as_str();
        out.frame(OpCode::Binary, |b| {
            encode_publish_qos1(b, &topic, pid, len, |b| {
                peer::write_payload(b, seq, from, id, text)
            })
        });
        s.in_flight.push_back(InFlight {
            key: u64::from(pid),
            id: id.into(),
            conv: conv.into(),
            seq,
        });
    }

    fn receipt(&self, _: &mut MqttSession, _: &str, _: u64, _: &mut Outbox<'_>) {
        // Each delivery was PUBACKed on arrival: that is MQTT's receipt.
    }

    fn decode<'a>(
        &self,
        s: &mut MqttSession,
        frame: Frame<'a>,
        out: &mut Outbox<'_>,
    ) -> Inbound<'a> {
        let Frame::Binary(bytes) = frame else {
            return match frame {
                Frame::Text(_) => Inbound::Malformed("text frame on an MQTT connection".into()),
                _ => Inbound::Other,
            };
        };
        let mut partial = std::mem::take(&mut s.partial);
        let event = peer::decode_stream(&mut partial, bytes, |buf, owned| {
            Ok(decode_packet(buf)
                .map_err(|e| e.to_string())?
                .map(|(p, n)| (self.on_packet(s, p, owned, out), n)))
        });
        s.partial = partial;
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Entry;
    use crate::token::Role;
    use crate::ws::apply_mask;

    /// The payloads of the masked client frames in `buf`.
    fn frames(mut buf: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let (len, h) = match buf[1] & 0x7f {
                126 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
                n => (usize::from(n), 2),
            };
            let mask: [u8; 4] = buf[h..h + 4].try_into().unwrap();
            let mut p = buf[h + 4..h + 4 + len].to_vec();
            apply_mask(&mut p, mask);
            out.push(p);
            buf = &buf[h + 4 + len..];
        }
        out
    }

    #[test]
    fn remaining_length_round_trips() {
        for len in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            268_435_455,
        ] {
            let mut b = Vec::new();
            write_remaining_length(&mut b, len);
            assert_eq!(read_remaining_length(&b), Ok(Some((len, b.len()))), "{len}");
            assert_eq!(read_remaining_length(&b[..b.len() - 1]), Ok(None));
        }
        // §2.2.3's examples.
        let mut b = Vec::new();
        write_remaining_length(&mut b, 321);
        assert_eq!(b, [0xC1, 0x02]);
        assert!(read_remaining_length(&[0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
    }

    #[test]
    fn client_packets_have_the_3_1_1_layout() {
        let mut b = Vec::new();
        encode_connect(&mut b, "ab", false, 60);
        assert_eq!(
            b,
            [0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0, 0, 60, 0, 2, b'a', b'b']
        );
        b.clear();
        encode_subscribe(&mut b, 1, "a/+", 1);
        assert_eq!(b, [0x82, 8, 0, 1, 0, 3, b'a', b'/', b'+', 1]);
        b.clear();
        encode_publish_qos1(&mut b, "t", 0x0102, 2, |b| b.extend_from_slice(b"hi"));
        assert_eq!(b, [0x32, 7, 0, 1, b't', 1, 2, b'h', b'i']);
        b.clear();
        encode_puback(&mut b, 7);
        assert_eq!(b, [0x40, 2, 0, 7]);
        b.clear();
        encode_pingreq(&mut b);
        encode_disconnect(&mut b);
        assert_eq!(b, [0xC0, 0, 0xE0, 0]);
    }

    #[test]
    fn broker_packets_decode() {
        assert_eq!(
            decode_packet(&[0x20, 2, 1, 0]),
            Ok(Some((
                Packet::ConnAck {
                    session_present: true,
                    code: 0
                },
                4
            )))
        );
        assert_eq!(
            decode_packet(&[0x90, 3, 0, 1, 0x80]),
            Ok(Some((
                Packet::SubAck {
                    packet_id: 1,
                    codes: &[0x80]
                },
                5
            )))
        );
        assert_eq!(
            decode_packet(&[0x40, 2, 1, 2]),
            Ok(Some((Packet::PubAck { packet_id: 0x102 }, 4)))
        );
        assert_eq!(decode_packet(&[0xD0, 0]), Ok(Some((Packet::PingResp, 2))));
        let publish = [0x3A, 7, 0, 1, b't', 0, 9, b'h', b'i'];
        assert_eq!(
            decode_packet(&publish),
            Ok(Some((
                Packet::Publish {
                    topic: "t",
                    qos: 1,
                    dup: true,
                    packet_id: Some(9),
                    payload: b"hi"
                },
                9
            )))
        );
        let qos0 = [0x30, 5, 0, 1, b't', b'h', b'i'];
        assert!(matches!(
            decode_packet(&qos0),
            Ok(Some((
                Packet::Publish {
                    packet_id: None,
                    payload: b"hi",
                    ..
                },
                7
            )))
        ));
        for cut in 0..publish.len() {
            assert_eq!(decode_packet(&publish[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(decode_packet(&[0x20, 3, 0, 0, 0]).is_err());
        assert!(decode_packet(&[0x36, 2, 0, 0]).is_err(), "QoS 3");
        assert!(
            decode_packet(&[0x32, 2, 0, 9]).is_err(),
            "topic past the end"
        );
    }

    #[test]
    fn a_chat_maps_onto_topics() {
        let p = Mqtt::new("r1", 2);
        let mut s = MqttSession::default();
        let mut out = Vec::new();
        let who = Credentials {
            role: Role::Visitor,
            tenant: "demo",
            token: None,
            id: "lgr1v3",
            index: 3,
        };
        p.hello(&mut s, &who, &mut Outbox { buf: &mut out });
        let f = frames(&out);
        assert_eq!(f.len(), 2);
        assert_eq!(&f[0][..2], [0x10, 18]);
        assert_eq!(decode_packet(&f[0]).unwrap().unwrap().1, f[0].len());
        let mut want = Vec::new();
        encode_subscribe(&mut want, 1, "kefu/r1/1/3/a", 1);
        assert_eq!(f[1], want);
        out.clear();
        p.message(&mut s, None, "m2", "55 x", &mut Outbox { buf: &mut out });
        let f = frames(&out);
        let (pk, _) = decode_packet(&f[0]).unwrap().unwrap();
        assert_eq!(
            pk,
            Packet::Publish {
                topic: "kefu/r1/1/3/v",
                qos: 1,
                dup: false,
                packet_id: Some(2),
                payload: b"3 lgr1v3 m2 55 x"
            }
        );
        // The broker's answers, all in one WebSocket message, the last
        // one cut short and finished by the next message.
        let mut broker = vec![0x20, 2, 0, 0, 0x90, 3, 0, 1, 1, 0x40, 2, 0, 2];
        let mut delivery = Vec::new();
        let body = b"4 lgr1a1 lgr1v3/2 77 y";
        delivery.extend_from_slice(&[0x32, (2 + 13 + 2 + body.len()) as u8]);
        write_str(&mut delivery, "kefu/r1/1/3/a");
        delivery.extend_from_slice(&[0, 5]);
        delivery.extend_from_slice(body);
        broker.extend_from_slice(&delivery[..10]);
        out.clear();
        let got = p
            .decode(
                &mut s,
                Frame::Binary(&broker),
                &mut Outbox { buf: &mut out },
            )
            .into_owned();
        let Inbound::Batch(events) = got else {
            panic!("not a batch: {got:?}")
        };
        assert!(matches!(events[0], Inbound::Other), "CONNACK");
        assert!(
            matches!(&events[1], Inbound::Welcome { id, conversations, .. }
                if id == "lgr1v3" && conversations[0].conv == "3" && conversations[0].state == "assigned")
        );
        assert_eq!(
            events[2],
            Inbound::Ack {
                id: "m2".into(),
                conv: "3".into(),
                seq: 3
            }
        );
        assert!(out.is_empty());
        let got = p.decode(
            &mut s,
            Frame::Binary(&delivery[10..]),
            &mut Outbox { buf: &mut out },
        );
        let Inbound::Entry(Entry {
            conv,
            seq,
            id,
            from_role,
            from_id,
            ..
        }) = got
        else {
            panic!("not an entry: {got:?}")
        };
        assert_eq!(
            (&*conv, seq, id.as_deref(), &*from_role, from_id.as_deref()),
            ("3", 4, Some("lgr1v3/2"), "agent", Some("lgr1a1"))
        );
        assert_eq!(frames(&out), vec![vec![0x40, 2, 0, 5]], "PUBACKed");
        assert!(s.partial.is_empty());
    }

    #[test]
    fn an_agent_subscribes_to_all_its_conversations_and_replies_into_one() {
        let p = Mqtt::new("r1", 2);
        let mut s = MqttSession::default();
        let mut out = Vec::new();
        let who = Credentials {
            role: Role::Agent,
            tenant: "demo",
            token: Some("t"),
            id: "lgr1a1",
            index: 1,
        };
        p.hello(&mut s, &who, &mut Outbox { buf: &mut out });
        let mut want = Vec::new();
        encode_subscribe(&mut want, 1, "kefu/r1/1/+/v", 1);
        assert_eq!(frames(&out)[1], want);
        out.clear();
        p.message(
            &mut s,
            Some("3"),
            "lgr1v3/2",
            "9 z",
            &mut Outbox { buf: &mut out },
        );
        let f = frames(&out);
        let (pk, _) = decode_packet(&f[0]).unwrap().unwrap();
        assert!(matches!(
            pk,
            Packet::Publish {
                topic: "kefu/r1/1/3/a",
                payload: b"4 lgr1a1 lgr1v3/2 9 z",
                ..
            }
        ));
    }
}
