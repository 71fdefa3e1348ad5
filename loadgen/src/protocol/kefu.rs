//! kefu protocol v1 (PROTOCOL.md): JSON objects in text frames.
//!
//! Server frames are parsed with serde_json into borrowed fields, so a
//! frame costs no allocation unless a string needed unescaping (ids and
//! texts the load generator makes never do).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::{ConvSummary, Credentials, Entry, Inbound, Outbox, Protocol};
use crate::ws::{Frame, OpCode};

/// Protocol v1 of the kefu gateway.
#[derive(Clone, Copy, Debug, Default)]
pub struct KefuV1;

/// `hello`.
#[derive(Serialize)]
struct Hello<'a> {
    /// `"hello"`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// The token.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    /// The tenant, for anonymous visitors.
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
}

/// `msg`.
#[derive(Serialize)]
struct Msg<'a> {
    /// `"msg"`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// Our id.
    id: &'a str,
    /// The conversation, unless the visitor's open one.
    #[serde(skip_serializing_if = "Option::is_none")]
    conv: Option<&'a str>,
    /// The text.
    text: &'a str,
}

/// `recv`.
#[derive(Serialize)]
struct Recv<'a> {
    /// `"recv"`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// The conversation.
    conv: &'a str,
    /// The cursor.
    seq: u64,
}

/// A JSON string that borrows from the frame when it can (no escapes) and
/// is copied only when it must be unescaped. (serde borrows a bare
/// `Cow<str>` field, but not one inside an `Option`.)
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(Visit)
    }
}

/// Every server frame's fields that the load generator reads.
#[derive(Deserialize)]
struct ServerFrame<'a> {
    /// The frame type.
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    /// `welcome`: our id; `ack`, `msg`: the message id.
    #[serde(borrow, default)]
    id: Option<Text<'a>>,
    /// The conversation.
    #[serde(borrow, default)]
    conv: Option<Text<'a>>,
    /// `ack`, `msg`: the seq.
    #[serde(default)]
    seq: Option<u64>,
    /// `msg`: the author.
    #[serde(borrow, default)]
    from: Option<Person<'a>>,
    /// `msg`: the text.
    #[serde(borrow, default)]
    text: Option<Text<'a>>,
    /// `msg`: the system event.
    #[serde(borrow, default)]
    event: Option<Text<'a>>,
    /// `error`: the code.
    #[serde(borrow, default)]
    code: Option<Text<'a>>,
    /// `error`: the failed frame's id.
    #[serde(rename = "ref", borrow, default)]
    reference: Option<Text<'a>>,
    /// `welcome`: a token the gateway issued.
    #[serde(borrow, default)]
    token: Option<Text<'a>>,
    /// `welcome`: open conversations.
    #[serde(borrow, default)]
    conversations: Option<Vec<WelcomeConv<'a>>>,
}

/// `from` of a `msg`.
#[derive(Deserialize)]
struct Person<'a> {
    /// The author's role.
    #[serde(borrow)]
    role: Text<'a>,
    /// The author's id.
    #[serde(borrow, default)]
    id: Option<Text<'a>>,
}

/// One conversation of a `welcome`.
#[derive(Deserialize)]
struct WelcomeConv<'a> {
    /// The conversation.
    #[serde(borrow)]
    conv: Text<'a>,
    /// Its state.
    #[serde(borrow, default)]
    state: Option<Text<'a>>,
    /// Its last seq.
    #[serde(default)]
    last_seq: u64,
}

fn text_frame<T: Serialize>(out: &mut Outbox<'_>, value: &T) {
    out.frame(OpCode::Text, |buf| {
        serde_json::to_writer(buf, value).expect("serialising to memory cannot fail")
    });
}

impl Protocol for KefuV1 {
    type Session = ();

    fn name(&self) -> &'static str {
        "kefu"
    }

    fn hello(&self, _: &mut (), who: &Credentials<'_>, out: &mut Outbox<'_>) {
        text_frame(
            out,
            &Hello {
                kind: "hello",
                token: who.token,
                tenant: who.token.is_none().then_some(who.tenant),
            },
        );
    }

    fn message(&self, _: &mut (), conv: Option<&str>, id: &str, text: &str, out: &mut Outbox<'_>) {
        text_frame(
            out,
            &Msg {
                kind: "msg",
                id,
                conv,
                text,
            },
        );
    }

    fn receipt(&self, _: &mut (), conv: &str, seq: u64, out: &mut Outbox<'_>) {
        text_frame(
            out,
            &Recv {
                kind: "recv",
                conv,
                seq,
            },
        );
    }

    fn decode<'a>(&self, _: &mut (), frame: Frame<'a>, _: &mut Outbox<'_>) -> Inbound<'a> {
        let bytes = match frame {
            Frame::Text(bytes) => bytes,
            Frame::Binary(_) => return Inbound::Malformed("binary frame".into()),
            _ => return Inbound::Other,
        };
        let f: ServerFrame<'a> = match serde_json::from_slice(bytes) {
            Ok(f) => f,
            Err(e) => return Inbound::Malformed(format!("bad JSON: {e}")),
        };
        let missing = |what: &str| Inbound::Malformed(format!("`{}` without `{what}`", f.kind));
        match &*f.kind {
            "msg" => {
                let (Some(conv), Some(seq), Some(from)) = (f.conv, f.seq, f.from) else {
                    return Inbound::Malformed("`msg` without conv, seq or from".into());
                };
                Inbound::Entry(Entry {
                    conv: conv.0,
                    seq,
                    id: f.id.map(|t| t.0),
                    from_role: from.role.0,
                    from_id: from.id.map(|t| t.0),
                    text: f.text.map(|t| t.0),
                    event: f.event.map(|t| t.0),
                })
            }
            "ack" => match (f.id, f.conv, f.seq) {
                (Some(id), Some(conv), Some(seq)) => Inbound::Ack {
                    id: id.0,
                    conv: conv.0,
                    seq,
                },
                _ => missing("id, conv or seq"),
            },
            "welcome" => {
                let Some(id) = f.id else {
                    return missing("id");
                };
                Inbound::Welcome {
                    id: id.0.into_owned(),
                    token: f.token.map(|t| t.0.into_owned()),
                    conversations: f
                        .conversations
                        .unwrap_or_default()
                        .into_iter()
                        .map(|c| ConvSummary {
                            conv: c.conv.0.into_owned(),
                            last_seq: c.last_seq,
                            state: c.state.map(|t| t.0.into_owned()).unwrap_or_default(),
                        })
                        .collect(),
                }
            }
            "error" => Inbound::Error {
                code: f.code.map_or(Cow::Borrowed("unknown"), |t| t.0),
                reference: f.reference.map(|t| t.0),
            },
            _ => Inbound::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Role;
    use crate::ws::{apply_mask, Frame};

    fn payload_of(frame: &[u8]) -> String {
        let len = (frame[1] & 0x7f) as usize;
        assert!(len < 126);
        let mask: [u8; 4] = frame[2..6].try_into().unwrap();
        let mut p = frame[6..6 + len].to_vec();
        apply_mask(&mut p, mask);
        String::from_utf8(p).unwrap()
    }

    #[test]
    fn client_frames_are_protocol_v1_json() {
        let p = KefuV1;
        let mut buf = Vec::new();
        let who = Credentials {
            role: Role::Visitor,
            tenant: "demo",
            token: None,
            id: "",
            index: 0,
        };
        p.hello(&mut (), &who, &mut Outbox { buf: &mut buf });
        assert_eq!(payload_of(&buf), r#"{"type":"hello","tenant":"demo"}"#);
        buf.clear();
        let who = Credentials {
            role: Role::Agent,
            tenant: "demo",
            token: Some("t.o.k"),
            id: "a",
            index: 0,
        };
        p.hello(&mut (), &who, &mut Outbox { buf: &mut buf });
        assert_eq!(payload_of(&buf), r#"{"type":"hello","token":"t.o.k"}"#);
        buf.clear();
        p.message(&mut (), None, "m1", "hi", &mut Outbox { buf: &mut buf });
        assert_eq!(payload_of(&buf), r#"{"type":"msg","id":"m1","text":"hi"}"#);
        buf.clear();
        p.message(
            &mut (),
            Some("c-9"),
            "x/1",
            "yo",
            &mut Outbox { buf: &mut buf },
        );
        assert_eq!(
            payload_of(&buf),
            r#"{"type":"msg","id":"x/1","conv":"c-9","text":"yo"}"#
        );
        buf.clear();
        p.receipt(&mut (), "c-9", 13, &mut Outbox { buf: &mut buf });
        assert_eq!(payload_of(&buf), r#"{"type":"recv","conv":"c-9","seq":13}"#);
    }

    #[test]
    fn server_frames_decode_into_events() {
        let p = KefuV1;
        let mut out = Vec::new();
        let mut d = |s: &'static str| {
            p.decode(
                &mut (),
                Frame::Text(s.as_bytes()),
                &mut Outbox { buf: &mut out },
            )
        };
        assert_eq!(
            d(r#"{"type":"ack","id":"m-42","conv":"c-9","seq":13}"#),
            Inbound::Ack {
                id: "m-42".into(),
                conv: "c-9".into(),
                seq: 13
            }
        );
        let Inbound::Entry(e) = d(
            r#"{"type":"msg","conv":"c-9","seq":13,"id":"m-42","from":{"role":"visitor","id":"v-1","name":"Ann"},"text":"hi","ts":1}"#,
        ) else {
            panic!("not an entry")
        };
        assert_eq!(
            (e.seq, e.id.as_deref(), &*e.from_role, e.from_id.as_deref()),
            (13, Some("m-42"), "visitor", Some("v-1"))
        );
        assert!(matches!(e.conv, Cow::Borrowed(_)), "no copy");
        let Inbound::Entry(e) = d(
            r#"{"type":"msg","conv":"c-9","seq":3,"from":{"role":"system"},"event":"assigned","agent":{"id":"a"},"ts":1}"#,
        ) else {
            panic!("not an entry")
        };
        assert_eq!(e.event.as_deref(), Some("assigned"));
        assert_eq!(
            d(
                r#"{"type":"welcome","role":"visitor","id":"v-1","tenant":"demo","token":"t","conversations":[{"conv":"c-9","state":"assigned","last_seq":12,"agent":{"id":"alice"}}]}"#
            ),
            Inbound::Welcome {
                id: "v-1".into(),
                token: Some("t".into()),
                conversations: vec![ConvSummary {
                    conv: "c-9".into(),
                    last_seq: 12,
                    state: "assigned".into()
                }]
            }
        );
        assert_eq!(
            d(r#"{"type":"error","code":"rate_limited","message":"slow down","ref":"m-1"}"#),
            Inbound::Error {
                code: "rate_limited".into(),
                reference: Some("m-1".into())
            }
        );
        assert_eq!(
            d(r#"{"type":"queue","conv":"c","position":3}"#),
            Inbound::Other
        );
        // Escaped strings are unescaped (and then owned).
        let Inbound::Ack { id, .. } = d(r#"{"type":"ack","id":"m\"1\u00e9","conv":"c","seq":1}"#)
        else {
            panic!("not an ack")
        };
        assert_eq!(id, "m\"1é");
        assert!(matches!(id, Cow::Owned(_)));
        assert!(matches!(d("nope"), Inbound::Malformed(_)));
        assert!(matches!(
            d(r#"{"type":"ack","id":"x"}"#),
            Inbound::Malformed(_)
        ));
    }
}
