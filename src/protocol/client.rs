//! Client frames: JSON text in, typed commands out.
//!
//! One flat struct receives every field any frame type may carry; strings
//! are `Cow` so that they borrow from the (already unmasked) read buffer
//! unless JSON escapes force a copy. The frame's `type` then picks the
//! command and checks the fields it needs. Unknown fields are ignored, so
//! clients may send extra fields (forward compatibility); unknown types
//! are `bad_request`.

use std::borrow::Cow;

use serde::Deserialize;

use super::codes::ErrorCode;
use crate::ids::is_valid_client_id;

/// History answers at most this many entries, whatever the client asks.
pub const HISTORY_MAX: u32 = 100;
/// History answers this many entries when the client names no limit.
pub const HISTORY_DEFAULT: u32 = 50;

/// An agent's availability for new assignments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Availability {
    /// Takes new conversations.
    Online,
    /// Keeps its conversations, takes no new ones.
    Away,
}

impl Availability {
    /// As the protocol writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Online => "online",
            Availability::Away => "away",
        }
    }
}

/// A client frame, checked and typed. Strings borrow from the input when they can.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// `hello`: the first frame of a session.
    Hello {
        /// A signed token.
        token: Option<Cow<'a, str>>,
        /// The tenant, for an anonymous visitor.
        tenant: Option<Cow<'a, str>>,
    },
    /// `msg`: a chat message.
    Msg {
        /// The client's id, which makes the send idempotent.
        id: Cow<'a, str>,
        /// The conversation; a visitor may omit it.
        conv: Option<Cow<'a, str>>,
        /// The text.
        text: Cow<'a, str>,
    },
    /// `recv`: "I hold every entry up to `seq`".
    Recv {
        /// The conversation.
        conv: Cow<'a, str>,
        /// The receipt cursor.
        seq: u64,
    },
    /// `sync`: send every entry after `after`.
    Sync {
        /// The conversation.
        conv: Cow<'a, str>,
        /// Send entries with a greater seq (default 0: all).
        after: u64,
    },
    /// `history`: a page of older entries.
    History {
        /// The conversation.
        conv: Cow<'a, str>,
        /// Entries with a smaller seq (`None`: all).
        before: Option<u64>,
        /// How many, at most (clamped to 1..=100, default 50).
        limit: u32,
        /// Echoed in the answer so the client can match it.
        reference: Option<Cow<'a, str>>,
    },
    /// `typing`: an ephemeral typing signal.
    Typing {
        /// The conversation.
        conv: Cow<'a, str>,
        /// Typing or stopped.
        on: bool,
    },
    /// `read`: an ephemeral read receipt, for the other side's ticks.
    Read {
        /// The conversation.
        conv: Cow<'a, str>,
        /// Read up to this seq.
        seq: u64,
    },
    /// `status`: an agent's availability.
    Status {
        /// Online or away.
        status: Availability,
    },
    /// `transfer`: to another agent, or back to the queue.
    Transfer {
        /// The conversation.
        conv: Cow<'a, str>,
        /// The agent to transfer to; `None`: back to the queue.
        to: Option<Cow<'a, str>>,
    },
    /// `close`: end the conversation.
    Close {
        /// The conversation; a visitor may omit it (its open conversation).
        conv: Option<Cow<'a, str>>,
    },
}

/// Why a frame was refused, with what the `error` frame needs.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The error code.
    pub code: ErrorCode,
    /// A human-readable reason.
    pub message: String,
    /// The frame's `id` or `ref`, when it had one.
    pub reference: Option<String>,
    /// The frame said `"type":"hello"` (a malformed hello closes with 4400,
    /// any other bad first frame with 4401).
    pub hello: bool,
}

/// The outcome of parsing one text frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A well-formed command. The `reference` is its `id` or `ref`, for errors found later.
    Command(Command<'a>, Option<Cow<'a, str>>),
    /// Not a JSON object at all (matters for the first frame: close 4400).
    NotAnObject,
    /// A JSON object that is not a valid command.
    Refused(Refusal),
}

/// A JSON string that borrows from the input unless escapes force a copy
/// (serde's own `Cow` support does not borrow through `Option`).
#[derive(Default, Clone)]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(Visit(std::marker::PhantomData))
    }
}

#[derive(Deserialize, Default)]
struct RawFrame<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Text<'a>>,
    #[serde(borrow, default)]
    token: Option<Text<'a>>,
    #[serde(borrow, default)]
    tenant: Option<Text<'a>>,
    #[serde(borrow, default)]
    id: Option<Text<'a>>,
    #[serde(borrow, default)]
    conv: Option<Text<'a>>,
    #[serde(borrow, default)]
    text: Option<Text<'a>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    after: Option<u64>,
    #[serde(default)]
    before: Option<u64>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(rename = "ref", borrow, default)]
    reference: Option<Text<'a>>,
    #[serde(default)]
    on: Option<bool>,
    #[serde(borrow, default)]
    status: Option<Text<'a>>,
    #[serde(borrow, default)]
    to: Option<Text<'a>>,
}

/// Parses one client text frame.
pub fn parse(text: &str) -> Parsed<'_> {
    if !text.trim_start().starts_with('{') {
        return Parsed::NotAnObject;
    }
    let raw: RawFrame<'_> = match serde_json::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let (reference, hello) = reference_of_invalid(text);
            let message = if e.is_syntax() || e.is_eof() {
                format!("not valid JSON: {e}")
            } else {
                format!("malformed frame: {e}")
            };
            return Parsed::Refused(Refusal {
                code: ErrorCode::BadRequest,
                message,
                reference,
                hello,
            });
        }
    };
    let reference = raw
        .id
        .clone()
        .or_else(|| raw.reference.clone())
        .map(|t| t.0);
    let hello = raw.kind.as_ref().is_some_and(|k| k.0 == "hello");
    match command(raw) {
        Ok(cmd) => Parsed::Command(cmd, reference),
        Err(message) => Parsed::Refused(Refusal {
            code: ErrorCode::BadRequest,
            message,
            reference: reference.map(Cow::into_owned),
            hello,
        }),
    }
}

/// Best effort: the `id` or `ref` of a frame that failed to parse as a
/// frame (a field of the wrong type, say), so its error can name it, and
/// whether it said `"type":"hello"`.
///
/// Only those three keys are read; every other value is skipped without
/// being built (serde_json skips without recursion), so a deeply nested
/// value elsewhere does not hide them, as it did when the whole frame was
/// read as a `serde_json::Value` (which gives up past 128 levels).
fn reference_of_invalid(text: &str) -> (Option<String>, bool) {
    let Ok(keys) = serde_json::from_str::<KeyStrings>(text) else {
        return (None, false);
    };
    (
        keys.id.or(keys.reference),
        keys.kind.as_deref() == Some("hello"),
    )
}

/// The string values of `type`, `id` and `ref` in a JSON object (the last
/// one of a repeated key counts; a value that is not a string is `None`).
#[derive(Default)]
struct KeyStrings {
    kind: Option<String>,
    id: Option<String>,
    reference: Option<String>,
}

impl<'de> Deserialize<'de> for KeyStrings {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = KeyStrings;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<KeyStrings, A::Error> {
                let mut keys = KeyStrings::default();
                while let Some(key) = map.next_key::<String>()? {
                    let slot = match key.as_str() {
                        "type" => &mut keys.kind,
                        "id" => &mut keys.id,
                        "ref" => &mut keys.reference,
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = map.next_value::<StringOrNot>()?.0;
                }
                Ok(keys)
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// Any JSON value: `Some` of a string, `None` of anything else (skipped
/// without being built).
struct StringOrNot(Option<String>);

impl<'de> Deserialize<'de> for StringOrNot {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = StringOrNot;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StringOrNot, E> {
                Ok(StringOrNot(Some(v.to_owned())))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<StringOrNot, E> {
                Ok(StringOrNot(None))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<StringOrNot, E> {
                Ok(StringOrNot(None))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<StringOrNot, E> {
                Ok(StringOrNot(None))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<StringOrNot, E> {
                Ok(StringOrNot(None))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<StringOrNot, E> {
                Ok(StringOrNot(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<StringOrNot, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(StringOrNot(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<StringOrNot, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(StringOrNot(None))
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

/// The fields of a [`RawFrame`], unwrapped.
struct Fields<'a> {
    kind: Option<Cow<'a, str>>,
    token: Option<Cow<'a, str>>,
    tenant: Option<Cow<'a, str>>,
    id: Option<Cow<'a, str>>,
    conv: Option<Cow<'a, str>>,
    text: Option<Cow<'a, str>>,
    seq: Option<u64>,
    after: Option<u64>,
    before: Option<u64>,
    limit: Option<u64>,
    reference: Option<Cow<'a, str>>,
    on: Option<bool>,
    status: Option<Cow<'a, str>>,
    to: Option<Cow<'a, str>>,
}

fn required<'a>(
    field: Option<Cow<'a, str>>,
    name: &str,
    kind: &str,
) -> Result<Cow<'a, str>, String> {
    field.ok_or_else(|| format!("`{kind}` needs `{name}`"))
}

fn required_u64(field: Option<u64>, name: &str, kind: &str) -> Result<u64, String> {
    field.ok_or_else(|| format!("`{kind}` needs `{name}` (a non-negative integer)"))
}

fn command(raw: RawFrame<'_>) -> Result<Command<'_>, String> {
    let raw = Fields {
        kind: raw.kind.map(|t| t.0),
        token: raw.token.map(|t| t.0),
        tenant: raw.tenant.map(|t| t.0),
        id: raw.id.map(|t| t.0),
        conv: raw.conv.map(|t| t.0),
        text: raw.text.map(|t| t.0),
        seq: raw.seq,
        after: raw.after,
        before: raw.before,
        limit: raw.limit,
        reference: raw.reference.map(|t| t.0),
        on: raw.on,
        status: raw.status.map(|t| t.0),
        to: raw.to.map(|t| t.0),
    };
    let kind = raw.kind.ok_or("a frame needs a `type`")?;
    let cmd = match &*kind {
        "hello" => Command::Hello {
            token: raw.token,
            tenant: raw.tenant,
        },
        "msg" => {
            let id = required(raw.id, "id", "msg")?;
            if !is_valid_client_id(&id) {
                return Err("`id` must be 1 to 64 characters, no control characters".into());
            }
            Command::Msg {
                id,
                conv: raw.conv,
                text: required(raw.text, "text", "msg")?,
            }
        }
        "recv" => Command::Recv {
            conv: required(raw.conv, "conv", "recv")?,
            seq: required_u64(raw.seq, "seq", "recv")?,
        },
        "sync" => Command::Sync {
            conv: required(raw.conv, "conv", "sync")?,
            after: raw.after.unwrap_or(0),
        },
        "history" => Command::History {
            conv: required(raw.conv, "conv", "history")?,
            before: raw.before,
            limit: raw
                .limit
                .map(|l| l.clamp(1, u64::from(HISTORY_MAX)) as u32)
                .unwrap_or(HISTORY_DEFAULT),
            reference: raw.reference,
        },
        "typing" => Command::Typing {
            conv: required(raw.conv, "conv", "typing")?,
            on: raw.on.ok_or("`typing` needs `on` (true or false)")?,
        },
        "read" => Command::Read {
            conv: required(raw.conv, "conv", "read")?,
            seq: required_u64(raw.seq, "seq", "read")?,
        },
        "status" => Command::Status {
            status: match raw.status.as_deref() {
                Some("online") => Availability::Online,
                Some("away") => Availability::Away,
                _ => return Err("`status` must be \"online\" or \"away\"".into()),
            },
        },
        "transfer" => Command::Transfer {
            conv: required(raw.conv, "conv", "transfer")?,
            to: raw.to,
        },
        "close" => Command::Close { conv: raw.conv },
        other => return Err(format!("unknown frame type `{}`", truncate(other, 32))),
    };
    Ok(cmd)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(text: &str) -> Command<'_> {
        match parse(text) {
            Parsed::Command(c, _) => c,
            other => panic!("{text}: {other:?}"),
        }
    }

    fn refused(text: &str) -> Refusal {
        match parse(text) {
            Parsed::Refused(r) => r,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn every_frame_type_parses() {
        assert_eq!(
            cmd(r#"{"type":"hello","token":"abc"}"#),
            Command::Hello {
                token: Some("abc".into()),
                tenant: None
            }
        );
        assert_eq!(
            cmd(r#"{"type":"msg","id":"m-1","text":"hi"}"#),
            Command::Msg {
                id: "m-1".into(),
                conv: None,
                text: "hi".into()
            }
        );
        assert_eq!(
            cmd(r#"{"type":"recv","conv":"c","seq":3}"#),
            Command::Recv {
                conv: "c".into(),
                seq: 3
            }
        );
        assert_eq!(
            cmd(r#"{"type":"sync","conv":"c"}"#),
            Command::Sync {
                conv: "c".into(),
                after: 0
            }
        );
        assert_eq!(
            cmd(r#"{"type":"history","conv":"c","before":31,"limit":500,"ref":"h1"}"#),
            Command::History {
                conv: "c".into(),
                before: Some(31),
                limit: 100,
                reference: Some("h1".into())
            }
        );
        assert_eq!(
            cmd(r#"{"type":"history","conv":"c"}"#),
            Command::History {
                conv: "c".into(),
                before: None,
                limit: 50,
                reference: None
            }
        );
        assert_eq!(
            cmd(r#"{"type":"typing","conv":"c","on":true}"#),
            Command::Typing {
                conv: "c".into(),
                on: true
            }
        );
        assert_eq!(
            cmd(r#"{"type":"read","conv":"c","seq":13}"#),
            Command::Read {
                conv: "c".into(),
                seq: 13
            }
        );
        assert_eq!(
            cmd(r#"{"type":"status","status":"away"}"#),
            Command::Status {
                status: Availability::Away
            }
        );
        assert_eq!(
            cmd(r#"{"type":"transfer","conv":"c","to":"bob"}"#),
            Command::Transfer {
                conv: "c".into(),
                to: Some("bob".into())
            }
        );
        assert_eq!(cmd(r#"{"type":"close"}"#), Command::Close { conv: None });
    }

    #[test]
    fn text_borrows_unless_escaped() {
        match cmd(r#"{"type":"msg","id":"m","text":"plain"}"#) {
            Command::Msg {
                text: Cow::Borrowed(_),
                ..
            } => {}
            other => panic!("{other:?}"),
        }
        match cmd(r#"{"type":"msg","id":"m","text":"line\nbreak \u00e9"}"#) {
            Command::Msg { text, .. } => assert_eq!(text, "line\nbreak é"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_frames_are_refused_with_their_reference() {
        assert_eq!(parse("[1,2]"), Parsed::NotAnObject);
        assert_eq!(parse("hello"), Parsed::NotAnObject);
        let r = refused(r#"{"type":"msg","id":"m-9"}"#);
        assert_eq!(
            (r.code, r.reference.as_deref()),
            (ErrorCode::BadRequest, Some("m-9"))
        );
        let r = refused(r#"{"type":"msg","id":"m-9","text":42}"#);
        assert_eq!(r.reference.as_deref(), Some("m-9"));
        let r = refused(r#"{"type":"launch","ref":"x"}"#);
        assert!(r.message.contains("unknown frame type"), "{}", r.message);
        assert_eq!(r.reference.as_deref(), Some("x"));
        assert!(refused(r#"{"id":"m"}"#).message.contains("type"));
        assert!(refused(r#"{"type":"msg","id":"","text":"x"}"#)
            .message
            .contains("1 to 64"));
        assert!(refused(r#"{"type":"recv","conv":"c","seq":-1}"#).code == ErrorCode::BadRequest);
        assert!(refused(r#"{"type":"status","status":"busy"}"#)
            .message
            .contains("online"));
        assert!(refused("{\"type\":").message.contains("JSON"));
    }

    /// Regression: the `id`/`ref` and the hello-ness of a refused frame
    /// were read by parsing it again as a `serde_json::Value`, which gives
    /// up past 128 levels: a deeply nested field hid them, so such an error
    /// carried no `ref`, and such a hello closed 4401 instead of 4400.
    #[test]
    fn a_deep_field_does_not_hide_the_frames_reference_or_type() {
        let deep = format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
        let r = refused(&format!(r#"{{"type":"msg","id":"m-1","text":{deep}}}"#));
        assert_eq!((r.reference.as_deref(), r.hello), (Some("m-1"), false));
        let r = refused(&format!(r#"{{"type":"hello","tenant":{deep}}}"#));
        assert!(r.hello);
        let r = refused(&format!(r#"{{"x":{deep},"type":"sync","ref":"s-1"}}"#));
        assert_eq!(r.reference.as_deref(), Some("s-1"));
        // As before: the last of a repeated key counts, non-strings are no
        // reference, and what is not JSON has none.
        let r = refused(r#"{"type":"msg","id":"a","id":"b","text":1}"#);
        assert_eq!(r.reference.as_deref(), Some("b"));
        let r = refused(r#"{"type":"msg","id":5,"ref":"r","text":1}"#);
        assert_eq!(r.reference.as_deref(), Some("r"));
        let r = refused(r#"{"type":"msg","id":"m-2","text":"#);
        assert_eq!((r.reference, r.hello), (None, false));
    }

    #[test]
    fn deeply_nested_json_is_refused_not_a_crash() {
        let deep = format!(
            "{{\"type\":\"msg\",\"x\":{}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert_eq!(refused(&deep).code, ErrorCode::BadRequest);
    }
}
