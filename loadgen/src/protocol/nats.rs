//! The NATS client protocol over WebSocket, for nats-server: core NATS and
//! JetStream publish-with-ack.
//!
//! NATS is a text protocol of `\r\n`-terminated control lines, some
//! followed by a payload (`PUB`, `MSG`, `HMSG`). Over WebSocket it is a
//! byte stream carried in binary messages: nats-server batches many
//! operations into one message and may cut one across two, so the session
//! keeps the bytes of an operation cut short.
//!
//! Two ways to run a chat on it (see [`super::peer`] for the topics, which
//! are subjects here: `.` between levels, `*` as the wildcard):
//!
//! - **core** (`--system nats`): `SUB` to the conversation subjects, `PUB`
//!   each message. Core NATS has no acknowledgement and stores nothing
//!   (at most once). The "ack" measured is a `PING` sent right after each
//!   `PUB`: its `PONG` says the server has processed the `PUB` (routed it
//!   to the subscribers' outgoing buffers), which is the most a core
//!   publisher can learn.
//! - **JetStream** (`--system jetstream`): every connection makes sure the
//!   stream `KEFU` (subjects `kj.>`, file storage) exists, then creates an
//!   ephemeral push consumer filtered on its conversations, delivering to
//!   its own inbox, with cumulative acks (`ack_policy: all`, like kefu's
//!   `recv` cursor: the client acks the last message it holds after each
//!   read). A chat message is a `PUB` with a reply inbox; the server's
//!   publish ack (`{"stream":"KEFU","seq":N}`) on that inbox, sent once
//!   the message is in the stream, is the ack. Deliveries come from the
//!   stream, after it stored them, as kefu delivers from its log.
//!
//! Reference: the NATS client protocol (`INFO`, `CONNECT`, `PUB`, `SUB`,
//! `MSG`, `HMSG`, `PING`, `PONG`, `+OK`, `-ERR`) and the JetStream API
//! subjects `$JS.API.STREAM.CREATE.<stream>` and
//! `$JS.API.CONSUMER.CREATE.<stream>`.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;

use super::peer::{self, Direction, InFlight, Me};
use super::{Credentials, Inbound, Outbox, Protocol};
use crate::ws::{Frame, OpCode};

/// The JetStream stream every JetStream run writes to.
pub const STREAM: &str = "KEFU";
/// The subjects it captures (core runs use `kn.` so as not to be stored).
pub const STREAM_SUBJECTS: &str = "kj.>";

/// One server operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op<'a> {
    /// `INFO {json}`.
    Info(&'a str),
    /// `MSG` or `HMSG`.
    Msg {
        /// The subject it was published on.
        subject: &'a str,
        /// The subscription it matched.
        sid: u64,
        /// The reply subject, if any.
        reply: Option<&'a str>,
        /// Headers (`HMSG`), including the `NATS/1.0` status line.
        headers: Option<&'a [u8]>,
        /// The payload.
        payload: &'a [u8],
    },
    /// `PING`.
    Ping,
    /// `PONG`.
    Pong,
    /// `+OK`.
    Ok,
    /// `-ERR 'message'`.
    Err(&'a str),
}

/// The server broke the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtoError(pub String);

impl std::fmt::Display for ProtoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NATS protocol error: {}", self.0)
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// Parses the operation at the start of `buf`: the operation and its
/// length, or `None` if `buf` holds only part of it.
pub fn parse_op(buf: &[u8]) -> Result<Option<(Op<'_>, usize)>, ProtoError> {
    let Some(eol) = find_crlf(buf) else {
        if buf.len() > 64 * 1024 {
            return Err(ProtoError("control line longer than 64 KiB".into()));
        }
        return Ok(None);
    };
    let line = std::str::from_utf8(&buf[..eol])
        .map_err(|_| ProtoError("control line not UTF-8".into()))?;
    let (word, rest) = line.split_once([' ', '\t']).unwrap_or((line, ""));
    let rest = rest.trim();
    let after = eol + 2;
    let simple = |op| Ok(Some((op, after)));
    if word.eq_ignore_ascii_case("PING") {
        return simple(Op::Ping);
    }
    if word.eq_ignore_ascii_case("PONG") {
        return simple(Op::Pong);
    }
    if word.eq_ignore_ascii_case("+OK") {
        return simple(Op::Ok);
    }
    if word.eq_ignore_ascii_case("-ERR") {
        return simple(Op::Err(rest.trim_matches('\'')));
    }
    if word.eq_ignore_ascii_case("INFO") {
        return simple(Op::Info(rest));
    }
    let hmsg = word.eq_ignore_ascii_case("HMSG");
    if !hmsg && !word.eq_ignore_ascii_case("MSG") {
        return Err(ProtoError(format!("unknown operation {word:?}")));
    }
    let args: Vec<&str> = rest.split_ascii_whitespace().collect();
    let bad = || ProtoError(format!("bad {word} line {line:?}"));
    let num = |s: &str| s.parse::<usize>().map_err(|_| bad());
    let (subject, sid, reply, header_len, total) = match (hmsg, args.as_slice()) {
        (false, [s, sid, n]) => (*s, *sid, None, 0, num(n)?),
        (false, [s, sid, r, n]) => (*s, *sid, Some(*r), 0, num(n)?),
        (true, [s, sid, h, n]) => (*s, *sid, None, num(h)?, num(n)?),
        (true, [s, sid, r, h, n]) => (*s, *sid, Some(*r), num(h)?, num(n)?),
        _ => return Err(bad()),
    };
    let sid = sid.parse().map_err(|_| bad())?;
    if header_len > total {
        return Err(bad());
    }
    if buf.len() < after + total + 2 {
        return Ok(None);
    }
    if &buf[after + total..after + total + 2] != b"\r\n" {
        return Err(ProtoError(format!("{word} payload not followed by CRLF")));
    }
    let body = &buf[after..after + total];
    Ok(Some((
        Op::Msg {
            subject,
            sid,
            reply,
            headers: hmsg.then(|| &body[..header_len]),
            payload: &body[header_len..],
        },
        after + total + 2,
    )))
}

/// `CONNECT {json}`: no echo of our own messages, headers on (JetStream
/// errors come as header statuses), no `+OK` for every operation.
pub fn encode_connect(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"echo\":false,\"headers\":true,\"no_responders\":true,\"lang\":\"kefu-loadgen\",\"version\":\"0.1\",\"name\":\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\"}\r\n");
}

/// `SUB <subject> <sid>`.
pub fn encode_sub(out: &mut Vec<u8>, subject: &str, sid: u64) {
    use std::io::Write as _;
    let _ = write!(out, "SUB {subject} {sid}\r\n");
}

/// `PUB <subject> [reply] <len>` and the payload that `fill` writes
/// (exactly `len` bytes).
pub fn encode_pub(
    out: &mut Vec<u8>,
    subject: &str,
    reply: Option<&str>,
    len: usize,
    fill: impl FnOnce(&mut Vec<u8>),
) {
    use std::io::Write as _;
    let _ = match reply {
        Some(r) => write!(out, "PUB {subject} {r} {len}\r\n"),
        None => write!(out, "PUB {subject} {len}\r\n"),
    };
    let start = out.len();
    fill(out);
    debug_assert_eq!(out.len() - start, len, "payload length");
    out.extend_from_slice(b"\r\n");
}

/// `PING`.
pub fn encode_ping(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PING\r\n");
}

/// `PONG`.
pub fn encode_pong(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PONG\r\n");
}

/// The JetStream stream's configuration, as `$JS.API.STREAM.CREATE` takes
/// it: file storage, one replica, limits retention, at most 4 GiB (old
/// messages are discarded first), so that repeated runs do not fill the
/// disk.
pub fn stream_config() -> String {
    format!(
        "{{\"name\":\"{STREAM}\",\"subjects\":[\"{STREAM_SUBJECTS}\"],\"storage\":\"file\",\"retention\":\"limits\",\"discard\":\"old\",\"max_bytes\":4294967296,\"num_replicas\":1}}"
    )
}

/// An ephemeral push consumer for `filter`, delivering new messages to
/// `deliver` with cumulative acks.
pub fn consumer_config(filter: &str, deliver: &str) -> String {
    format!(
        "{{\"stream_name\":\"{STREAM}\",\"config\":{{\"deliver_subject\":\"{deliver}\",\"filter_subject\":\"{filter}\",\"deliver_policy\":\"new\",\"ack_policy\":\"all\",\"max_ack_pending\":1000000,\"replay_policy\":\"instant\"}}}}"
    )
}

/// NATS over WebSocket, core or JetStream.
#[derive(Clone, Debug)]
pub struct Nats {
    /// Subject root: `kn.<run>` (core) or `kj.<run>` (JetStream).
    pub root: Arc<str>,
    /// Agents in the run.
    pub agents: u32,
    /// Publish with acks into a stream, deliver from consumers.
    pub jetstream: bool,
}

impl Nats {
    /// A driver for run `run_id` with `agents` agents.
    pub fn new(run_id: &str, agents: u32, jetstream: bool) -> Self {
        let prefix = if jetstream { "kj" } else { "kn" };
        Nats {
            root: format!("{prefix}.{run_id}").into(),
            agents: agents.max(1),
            jetstream,
        }
    }
}

/// Where a connection is in its setup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Stage {
    /// Waiting for the PONG to our first PING (core), or for the
    /// stream's creation (JetStream).
    #[default]
    Connecting,
    /// JetStream: waiting for the consumer's creation.
    Consumer,
    /// Welcomed.
    Ready,
}

/// One NATS connection's state.
#[derive(Debug, Default)]
pub struct NatsSession {
    /// Who we are.
    me: Me,
    /// Our id (the connection name, the `from` of our messages).
    id: String,
    /// JetStream: our inbox prefix, `_INBOX.<id>`.
    inbox: String,
    /// Setup progress.
    stage: Stage,
    /// The last key handed out (JetStream reply number).
    last_key: u64,
    /// Publishes awaiting their ack: core in PING order, JetStream by key.
    in_flight: VecDeque<InFlight>,
    /// JetStream: the ack subject of the last delivery, and whether it is
    /// still to be acked.
    last_delivery: String,
    /// `last_delivery` is not acked yet.
    ack_due: bool,
    /// The start of an operation the last WebSocket message cut short.
    partial: Vec<u8>,
}

/// Subscription ids.
const SID_CONVERSATIONS: u64 = 1;
const SID_REPLIES: u64 = 2;

impl Nats {
    /// The subject filter of `me`'s conversations.
    fn filter(&self, me: &Me) -> String {
        match me {
            Me::Visitor { index, agent } => peer::topic(
                &self.root,
                '.',
                *agent,
                &index.to_string(),
                Direction::ToVisitor,
            ),
            _ => peer::topic(&self.root, '.', me.agent(), "*", Direction::ToAgent),
        }
    }

    /// A JetStream API request with our reply subject `<inbox>.r.<tag>`.
    fn api(&self, s: &NatsSession, subject: &str, tag: &str, body: &str, out: &mut Outbox<'_>) {
        let reply = format!("{}.r.{tag}", s.inbox);
        out.frame(OpCode::Binary, |b| {
            encode_pub(b, subject, Some(&reply), body.len(), |b| {
                b.extend_from_slice(body.as_bytes())
            })
        });
    }

    fn on_op<'a>(
        &self,
        s: &mut NatsSession,
        op: Op<'a>,
        owned: bool,
        out: &mut Outbox<'_>,
    ) -> Inbound<'a> {
        match op {
            Op::Info(_) | Op::Ok => Inbound::Other,
            Op::Ping => {
                out.frame(OpCode::Binary, encode_pong);
                Inbound::Other
            }
            Op::Err(why) => Inbound::Error {
                code: Cow::Owned(format!("-ERR {why}")),
                reference: None,
            },
            Op::Pong if self.jetstream => Inbound::Other,
            Op::Pong if s.stage == Stage::Connecting => {
                s.stage = Stage::Ready;
                peer::welcome(&s.id, &s.me)
            }
            Op::Pong => match s.in_flight.pop_front() {
                Some(f) => Inbound::Ack {
                    id: Cow::Owned(f.id.into()),
                    conv: Cow::Owned(f.conv.into()),
                    seq: f.seq,
                },
                None => Inbound::Malformed("PONG for no PING".into()),
            },
            Op::Msg {
                subject,
                sid: SID_REPLIES,
                headers,
                payload,
                ..
            } => self.on_reply(s, subject, headers, payload, out),
            Op::Msg {
                subject,
                sid: SID_CONVERSATIONS,
                reply,
                payload,
                ..
            } => {
                if let (true, Some(r)) = (self.jetstream, reply) {
                    s.last_delivery.clear();
                    s.last_delivery.push_str(r);
                    s.ack_due = true;
                }
                let Some((conv, dir)) = peer::parse_topic(subject, '.') else {
                    return Inbound::Malformed(format!("MSG on an unknown subject {subject}"));
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
            Op::Msg { sid, .. } => Inbound::Malformed(format!("MSG for unknown sid {sid}")),
        }
    }

    /// A message on our JetStream reply inbox: an API answer or a publish
    /// ack.
    fn on_reply<'a>(
        &self,
        s: &mut NatsSession,
        subject: &str,
        headers: Option<&[u8]>,
        payload: &[u8],
        out: &mut Outbox<'_>,
    ) -> Inbound<'a> {
        let tag = subject.rsplit('.').next().unwrap_or("");
        let text = String::from_utf8_lossy(payload);
        // A header status (`NATS/1.0 503`: no responders) or an error body.
        let status_error = headers.is_some_and(|h| {
            let line = h.split(|&b| b == b'\r').next().unwrap_or(b"");
            line.len() > 9 && !line[9..].starts_with(b"2")
        });
        let failed = status_error || text.contains("\"error\"");
        match tag {
            "s" => {
                // "already in use" (10058): an earlier run made it with
                // another configuration; it captures the same subjects.
                if failed && !text.contains("10058") {
                    return Inbound::Error {
                        code: Cow::Owned(format!("stream create failed: {text}")),
                        reference: None,
                    };
                }
                s.stage = Stage::Consumer;
                let deliver = format!("{}.d", s.inbox);
                let body = consumer_config(&self.filter(&s.me), &deliver);
                let subject = format!("$JS.API.CONSUMER.CREATE.{STREAM}");
                self.api(s, &subject, "c", &body, out);
                Inbound::Other
            }
            "c" => {
                if failed {
                    return Inbound::Error {
                        code: Cow::Owned(format!("consumer create failed: {text}")),
                        reference: None,
                    };
                }
                s.stage = Stage::Ready;
                peer::welcome(&s.id, &s.me)
            }
            n => {
                let Ok(key) = n.parse::<u64>() else {
                    return Inbound::Malformed(format!("reply on {subject}"));
                };
                if failed {
                    let at = s.in_flight.iter().position(|f| f.key == key);
                    let id = at.and_then(|p| s.in_flight.remove(p)).map(|f| f.id);
                    return Inbound::Error {
                        code: Cow::Owned(format!("publish not stored: {text}")),
                        reference: id.map(|id| Cow::Owned(id.into())),
                    };
                }
                peer::take_ack(&mut s.in_flight, key)
            }
        }
    }
}

impl Protocol for Nats {
    type Session = NatsSession;

    fn name(&self) -> &'static str {
        if self.jetstream {
            "jetstream"
        } else {
            "nats"
        }
    }

    fn max_message(&self) -> usize {
        peer::MAX_PEER_MESSAGE
    }

    fn hello(&self, s: &mut NatsSession, who: &Credentials<'_>, out: &mut Outbox<'_>) {
        s.me = Me::new(who.role, who.index, self.agents);
        s.id = if who.id.is_empty() {
            format!("v{}", who.index)
        } else {
            who.id.to_string()
        };
        s.inbox = format!("_INBOX.{}", s.id);
        let filter = self.filter(&s.me);
        out.frame(OpCode::Binary, |b| {
            encode_connect(b, &s.id);
            if self.jetstream {
                encode_sub(b, &format!("{}.d", s.inbox), SID_CONVERSATIONS);
                encode_sub(b, &format!("{}.r.*", s.inbox), SID_REPLIES);
            } else {
                encode_sub(b, &filter, SID_CONVERSATIONS);
                encode_ping(b);
            }
        });
        if self.jetstream {
            let subject = format!("$JS.API.STREAM.CREATE.{STREAM}");
            self.api(s, &subject, "s", &stream_config(), out);
        }
    }

    fn message(
        &self,
        s: &mut NatsSession,
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
        let subject = peer::topic(&self.root, '.', s.me.agent(), &conv, dir);
        let len = peer::payload_len(seq, &s.id, id, text);
        s.last_key += 1;
        let key = s.last_key;
        let reply = self.jetstream.then(|| format!("{}.r.{key}", s.inbox));
        let from = s.id.as_str();
        out.frame(OpCode::Binary, |b| {
            encode_pub(b, &subject, reply.as_deref(), len, |b| {
                peer::write_payload(b, seq, from, id, text)
            });
            if !self.jetstream {
                encode_ping(b);
            }
        });
        s.in_flight.push_back(InFlight {
            key,
            id: id.into(),
            conv: conv.into(),
            seq,
        });
    }

    fn receipt(&self, s: &mut NatsSession, _: &str, _: u64, out: &mut Outbox<'_>) {
        // JetStream: one cumulative ack of the last delivery (the consumer
        // serves all of our conversations, so once per read is enough).
        if self.jetstream && s.ack_due {
            s.ack_due = false;
            let subject = &s.last_delivery;
            out.frame(OpCode::Binary, |b| encode_pub(b, subject, None, 0, |_| {}));
        }
    }

    fn decode<'a>(
        &self,
        s: &mut NatsSession,
        frame: Frame<'a>,
        out: &mut Outbox<'_>,
    ) -> Inbound<'a> {
        let bytes = match frame {
            Frame::Binary(b) | Frame::Text(b) => b,
            _ => return Inbound::Other,
        };
        let mut partial = std::mem::take(&mut s.partial);
        let event = peer::decode_stream(&mut partial, bytes, |buf, owned| {
            Ok(parse_op(buf)
                .map_err(|e| e.to_string())?
                .map(|(op, n)| (self.on_op(s, op, owned, out), n)))
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

    /// The concatenated payloads of the masked client frames in `buf`.
    fn unmasked(mut buf: &[u8]) -> String {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let (len, h) = match buf[1] & 0x7f {
                126 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
                n => (usize::from(n), 2),
            };
            let mask: [u8; 4] = buf[h..h + 4].try_into().unwrap();
            let mut p = buf[h + 4..h + 4 + len].to_vec();
            apply_mask(&mut p, mask);
            out.extend(p);
            buf = &buf[h + 4 + len..];
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn server_operations_parse() {
        assert_eq!(parse_op(b"PING\r\n"), Ok(Some((Op::Ping, 6))));
        assert_eq!(parse_op(b"pong\r\nX"), Ok(Some((Op::Pong, 6))));
        assert_eq!(parse_op(b"+OK\r\n"), Ok(Some((Op::Ok, 5))));
        assert_eq!(
            parse_op(b"-ERR 'Slow Consumer'\r\n"),
            Ok(Some((Op::Err("Slow Consumer"), 22)))
        );
        assert_eq!(
            parse_op(b"INFO {\"a\":1}\r\n"),
            Ok(Some((Op::Info("{\"a\":1}"), 14)))
        );
        let msg = b"MSG a.b 1 _INBOX.x.r.3 5\r\nhello\r\n";
        assert_eq!(
            parse_op(msg),
            Ok(Some((
                Op::Msg {
                    subject: "a.b",
                    sid: 1,
                    reply: Some("_INBOX.x.r.3"),
                    headers: None,
                    payload: b"hello"
                },
                msg.len()
            )))
        );
        // nats-server writes two spaces when there is no reply subject.
        let ack = b"MSG _INBOX.t.r.3 2  26\r\n{\"stream\":\"KEFU\", \"seq\":1}\r\n";
        assert!(matches!(
            parse_op(ack),
            Ok(Some((Op::Msg { sid: 2, reply: None, .. }, n))) if n == ack.len()
        ));
        let hmsg = b"HMSG _INBOX.x.r.1 2 16 16\r\nNATS/1.0 503\r\n\r\n\r\n";
        assert_eq!(
            parse_op(hmsg),
            Ok(Some((
                Op::Msg {
                    subject: "_INBOX.x.r.1",
                    sid: 2,
                    reply: None,
                    headers: Some(b"NATS/1.0 503\r\n\r\n"),
                    payload: b""
                },
                hmsg.len()
            )))
        );
        for cut in 0..msg.len() {
            assert_eq!(parse_op(&msg[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(parse_op(b"NOPE\r\n").is_err());
        assert!(parse_op(b"MSG a 1\r\n").is_err());
        assert!(
            parse_op(b"MSG a 1 2\r\nabXY").is_err(),
            "no CRLF after payload"
        );
        assert!(
            parse_op(b"HMSG a 1 9 2\r\nab\r\n").is_err(),
            "headers past the end"
        );
    }

    #[test]
    fn client_operations() {
        let mut b = Vec::new();
        encode_sub(&mut b, "a.*", 1);
        encode_pub(&mut b, "a.b", None, 2, |b| b.extend_from_slice(b"hi"));
        encode_pub(&mut b, "a.b", Some("r"), 0, |_| {});
        encode_ping(&mut b);
        encode_pong(&mut b);
        assert_eq!(
            b,
            b"SUB a.* 1\r\nPUB a.b 2\r\nhi\r\nPUB a.b r 0\r\n\r\nPING\r\nPONG\r\n"
        );
        b.clear();
        encode_connect(&mut b, "lgv1");
        let line = std::str::from_utf8(&b).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(line.strip_prefix("CONNECT ").unwrap().trim_end()).unwrap();
        assert_eq!(json["verbose"], false);
        assert_eq!(json["headers"], true);
        assert_eq!(json["name"], "lgv1");
        let s: serde_json::Value = serde_json::from_str(&stream_config()).unwrap();
        assert_eq!(s["storage"], "file");
        let c: serde_json::Value = serde_json::from_str(&consumer_config("f.*", "d")).unwrap();
        assert_eq!(c["config"]["ack_policy"], "all");
        assert_eq!(c["config"]["filter_subject"], "f.*");
    }

    fn visitor() -> Credentials<'static> {
        Credentials {
            role: Role::Visitor,
            tenant: "demo",
            token: None,
            id: "lgv3",
            index: 3,
        }
    }

    #[test]
    fn core_acks_are_pongs_in_order() {
        let p = Nats::new("r", 2, false);
        let mut s = NatsSession::default();
        let mut out = Vec::new();
        p.hello(&mut s, &visitor(), &mut Outbox { buf: &mut out });
        let hello = unmasked(&out);
        assert!(hello.starts_with("CONNECT {"));
        assert!(
            hello.ends_with("\r\nSUB kn.r.1.3.a 1\r\nPING\r\n"),
            "{hello}"
        );
        out.clear();
        let got = p.decode(
            &mut s,
            Frame::Binary(b"INFO {}\r\nPONG\r\n"),
            &mut Outbox { buf: &mut out },
        );
        let Inbound::Batch(ev) = got else {
            panic!("{got:?}")
        };
        assert!(
            matches!(&ev[1], Inbound::Welcome { conversations, .. } if conversations[0].conv == "3")
        );
        p.message(&mut s, None, "m1", "5 x", &mut Outbox { buf: &mut out });
        p.message(&mut s, None, "m2", "6 x", &mut Outbox { buf: &mut out });
        assert_eq!(
            unmasked(&out),
            "PUB kn.r.1.3.v 13\r\n1 lgv3 m1 5 x\r\nPING\r\nPUB kn.r.1.3.v 13\r\n3 lgv3 m2 6 x\r\nPING\r\n"
        );
        out.clear();
        // A server PING, a PONG cut in two, then a delivery.
        assert_eq!(
            p.decode(
                &mut s,
                Frame::Binary(b"PING\r\nPO"),
                &mut Outbox { buf: &mut out }
            ),
            Inbound::Other
        );
        assert_eq!(unmasked(&out), "PONG\r\n");
        let got = p
            .decode(
                &mut s,
                Frame::Binary(b"NG\r\nMSG kn.r.1.3.a 1 17\r\n2 lga1 lgv3/1 7 y\r\n"),
                &mut Outbox { buf: &mut out },
            )
            .into_owned();
        let Inbound::Batch(ev) = got else {
            panic!("{got:?}")
        };
        assert_eq!(
            ev[0],
            Inbound::Ack {
                id: "m1".into(),
                conv: "3".into(),
                seq: 1
            }
        );
        assert!(
            matches!(&ev[1], Inbound::Entry(Entry { seq: 2, from_role, .. }) if from_role == "agent")
        );
    }

    #[test]
    fn jetstream_sets_up_a_consumer_and_acks_from_the_stream() {
        let p = Nats::new("r", 2, true);
        let mut s = NatsSession::default();
        let mut out = Vec::new();
        let who = Credentials {
            role: Role::Agent,
            tenant: "demo",
            token: None,
            id: "lga1",
            index: 1,
        };
        p.hello(&mut s, &who, &mut Outbox { buf: &mut out });
        let hello = unmasked(&out);
        assert!(hello.contains("SUB _INBOX.lga1.d 1\r\nSUB _INBOX.lga1.r.* 2\r\n"));
        assert!(hello.contains("PUB $JS.API.STREAM.CREATE.KEFU _INBOX.lga1.r.s "));
        out.clear();
        let created = b"MSG _INBOX.lga1.r.s 2 30\r\n{\"type\":\"x\",\"did_create\":true}\r\n";
        assert_eq!(
            p.decode(
                &mut s,
                Frame::Binary(created),
                &mut Outbox { buf: &mut out }
            ),
            Inbound::Other
        );
        let consumer = unmasked(&out);
        assert!(consumer.starts_with("PUB $JS.API.CONSUMER.CREATE.KEFU _INBOX.lga1.r.c "));
        assert!(consumer.contains("\"filter_subject\":\"kj.r.1.*.v\""));
        assert!(consumer.contains("\"deliver_subject\":\"_INBOX.lga1.d\""));
        out.clear();
        let ok = b"MSG _INBOX.lga1.r.c 2 8\r\n{\"ok\":1}\r\n";
        assert!(matches!(
            p.decode(&mut s, Frame::Binary(ok), &mut Outbox { buf: &mut out }),
            Inbound::Welcome { .. }
        ));
        // A delivery, acked cumulatively by the next receipt.
        let d = b"MSG kj.r.1.3.v 1 $JS.ACK.KEFU.c.1.5.5.1.0 13\r\n1 lgv3 m1 5 x\r\n";
        assert!(matches!(
            p.decode(&mut s, Frame::Binary(d), &mut Outbox { buf: &mut out }),
            Inbound::Entry(Entry { seq: 1, .. })
        ));
        p.receipt(&mut s, "3", 1, &mut Outbox { buf: &mut out });
        p.receipt(&mut s, "4", 1, &mut Outbox { buf: &mut out });
        assert_eq!(unmasked(&out), "PUB $JS.ACK.KEFU.c.1.5.5.1.0 0\r\n\r\n");
        out.clear();
        // A reply, published with an ack inbox.
        p.message(
            &mut s,
            Some("3"),
            "lgv3/1",
            "9 z",
            &mut Outbox { buf: &mut out },
        );
        assert_eq!(
            unmasked(&out),
            "PUB kj.r.1.3.a _INBOX.lga1.r.1 17\r\n2 lga1 lgv3/1 9 z\r\n"
        );
        let ack = b"MSG _INBOX.lga1.r.1 2  26\r\n{\"stream\":\"KEFU\", \"seq\":7}\r\n";
        assert_eq!(
            p.decode(&mut s, Frame::Binary(ack), &mut Outbox { buf: &mut out }),
            Inbound::Ack {
                id: "lgv3/1".into(),
                conv: "3".into(),
                seq: 2
            }
        );
        p.message(
            &mut s,
            Some("3"),
            "lgv3/2",
            "9 z",
            &mut Outbox { buf: &mut out },
        );
        let refused = b"HMSG _INBOX.lga1.r.2 2 16 16\r\nNATS/1.0 503\r\n\r\n\r\n";
        assert_eq!(
            p.decode(
                &mut s,
                Frame::Binary(refused),
                &mut Outbox { buf: &mut out }
            ),
            Inbound::Error {
                code: "publish not stored: ".into(),
                reference: Some("lgv3/2".into())
            }
        );
    }
}
