//! The JSON codec, client side: arbitrary text to
//! `protocol::client::parse`.
//!
//! Checked: no panic (deep nesting included); `NotAnObject` exactly when
//! the text does not start with `{`; a command's borrowed strings point
//! into the input; a command agrees with what `serde_json::Value` reads
//! from the same text (type, every field, the reference; `Value` refuses
//! lone surrogates and out-of-range numbers that an ignored field may
//! carry, and then the text must still be JSON); a command
//! written back as JSON parses to the same command; a refusal is a
//! `bad_request` with a message.

#![no_main]

use std::borrow::Cow;

use kefu::protocol::client::{parse, Availability, Command, Parsed, HISTORY_DEFAULT, HISTORY_MAX};
use kefu::protocol::ErrorCode;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

// The `Cow` itself is the point: borrowed or owned.
#[allow(clippy::ptr_arg)]
fn borrowed_from_input(input: &str, field: &Cow<'_, str>) {
    if let Cow::Borrowed(s) = field {
        let start = input.as_ptr() as usize;
        let end = start + input.len();
        let at = s.as_ptr() as usize;
        assert!(
            at >= start && at + s.len() <= end,
            "a borrowed string outside the input"
        );
    }
}

fn strings<'a, 'b>(command: &'b Command<'a>) -> Vec<&'b Cow<'a, str>> {
    match command {
        Command::Hello { token, tenant } => token.iter().chain(tenant.iter()).collect(),
        Command::Msg { id, conv, text } => [id, text].into_iter().chain(conv.iter()).collect(),
        Command::Recv { conv, .. }
        | Command::Sync { conv, .. }
        | Command::Typing { conv, .. }
        | Command::Read { conv, .. } => vec![conv],
        Command::History {
            conv, reference, ..
        } => [conv].into_iter().chain(reference.iter()).collect(),
        Command::Status { .. } => vec![],
        Command::Transfer { conv, to } => [conv].into_iter().chain(to.iter()).collect(),
        Command::Close { conv } => conv.iter().collect(),
    }
}

/// The command as a client would write it (with the frame's id/ref).
fn to_json(command: &Command<'_>, reference: Option<&str>) -> Value {
    let mut v = match command {
        Command::Hello { token, tenant } => {
            json!({"type": "hello", "token": token, "tenant": tenant})
        }
        Command::Msg { id, conv, text } => {
            json!({"type": "msg", "id": id, "conv": conv, "text": text})
        }
        Command::Recv { conv, seq } => json!({"type": "recv", "conv": conv, "seq": seq}),
        Command::Sync { conv, after } => json!({"type": "sync", "conv": conv, "after": after}),
        Command::History {
            conv,
            before,
            limit,
            reference,
        } => {
            json!({"type": "history", "conv": conv, "before": before, "limit": limit, "ref": reference})
        }
        Command::Typing { conv, on } => json!({"type": "typing", "conv": conv, "on": on}),
        Command::Read { conv, seq } => json!({"type": "read", "conv": conv, "seq": seq}),
        Command::Status { status } => json!({"type": "status", "status": status.as_str()}),
        Command::Transfer { conv, to } => json!({"type": "transfer", "conv": conv, "to": to}),
        Command::Close { conv } => json!({"type": "close", "conv": conv}),
    };
    let object = v.as_object_mut().unwrap();
    match (command, reference) {
        // A msg's reference is its id.
        (Command::Msg { .. }, _) | (_, None) => {}
        // History's own `ref` field is echoed; an `id` beside it is the
        // frame's reference.
        (Command::History { reference: own, .. }, Some(reference)) => {
            if own.as_deref() != Some(reference) {
                object.insert("id".into(), json!(reference));
            }
        }
        (_, Some(reference)) => {
            object.insert("ref".into(), json!(reference));
        }
    }
    v
}

/// A string field as serde_json reads it: absent and null are `None`.
fn field<'v>(v: &'v Map<String, Value>, key: &str) -> Option<&'v str> {
    match v.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => panic!("a command with a non-string `{key}`: {other}"),
    }
}

fn number(v: &Map<String, Value>, key: &str) -> Option<u64> {
    match v.get(key) {
        None | Some(Value::Null) => None,
        Some(n) => Some(n.as_u64().expect("an accepted number is a u64")),
    }
}

fn agrees_with_value(command: &Command<'_>, reference: Option<&str>, v: &Map<String, Value>) {
    let kind = field(v, "type").expect("a command has a type");
    let s = |c: &Option<Cow<'_, str>>| c.as_deref().map(str::to_owned);
    let f = |key| field(v, key).map(str::to_owned);
    assert_eq!(reference.map(str::to_owned), f("id").or_else(|| f("ref")));
    match command {
        Command::Hello { token, tenant } => {
            assert_eq!(kind, "hello");
            assert_eq!((s(token), s(tenant)), (f("token"), f("tenant")));
        }
        Command::Msg { id, conv, text } => {
            assert_eq!(kind, "msg");
            assert_eq!(
                (Some(id.to_string()), s(conv), Some(text.to_string())),
                (f("id"), f("conv"), f("text"))
            );
            let n = id.chars().count();
            assert!((1..=64).contains(&n) && !id.chars().any(char::is_control));
        }
        Command::Recv { conv, seq } | Command::Read { conv, seq } => {
            assert!(kind == "recv" || kind == "read");
            assert_eq!(
                (Some(conv.to_string()), Some(*seq)),
                (f("conv"), number(v, "seq"))
            );
        }
        Command::Sync { conv, after } => {
            assert_eq!(kind, "sync");
            assert_eq!(Some(conv.to_string()), f("conv"));
            assert_eq!(*after, number(v, "after").unwrap_or(0));
        }
        Command::History {
            conv,
            before,
            limit,
            reference,
        } => {
            assert_eq!(kind, "history");
            assert_eq!(
                (Some(conv.to_string()), s(reference)),
                (f("conv"), f("ref"))
            );
            assert_eq!(*before, number(v, "before"));
            let expected = number(v, "limit")
                .map(|l| l.clamp(1, u64::from(HISTORY_MAX)) as u32)
                .unwrap_or(HISTORY_DEFAULT);
            assert_eq!(*limit, expected);
        }
        Command::Typing { conv, on } => {
            assert_eq!(kind, "typing");
            assert_eq!(Some(conv.to_string()), f("conv"));
            assert_eq!(Some(*on), v.get("on").and_then(Value::as_bool));
        }
        Command::Status { status } => {
            assert_eq!(kind, "status");
            let expected = match field(v, "status") {
                Some("online") => Availability::Online,
                Some("away") => Availability::Away,
                other => panic!("status {other:?} accepted"),
            };
            assert_eq!(*status, expected);
        }
        Command::Transfer { conv, to } => {
            assert_eq!(kind, "transfer");
            assert_eq!((Some(conv.to_string()), s(to)), (f("conv"), f("to")));
        }
        Command::Close { conv } => {
            assert_eq!(kind, "close");
            assert_eq!(s(conv), f("conv"));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text) {
        Parsed::NotAnObject => assert!(!text.trim_start().starts_with('{')),
        Parsed::Refused(refusal) => {
            assert!(text.trim_start().starts_with('{'));
            assert_eq!(refusal.code, ErrorCode::BadRequest);
            assert!(!refusal.message.is_empty());
        }
        Parsed::Command(command, reference) => {
            for s in strings(&command) {
                borrowed_from_input(text, s);
            }
            if let Some(r) = &reference {
                borrowed_from_input(text, r);
            }
            match serde_json::from_str::<Value>(text) {
                Ok(value) => {
                    let object = value.as_object().expect("a command is a JSON object");
                    agrees_with_value(&command, reference.as_deref(), object);
                }
                // Values JSON's grammar allows but `Value` cannot hold
                // (lone-surrogate escapes like `\ud800`, numbers like
                // 1e999) in an ignored field are skipped unread; the text
                // must still be JSON.
                Err(e) => {
                    let skipped = serde_json::from_str::<serde::de::IgnoredAny>(text);
                    assert!(skipped.is_ok(), "{e}");
                }
            }

            // Written back and parsed again: the same command.
            let again = to_json(&command, reference.as_deref()).to_string();
            match parse(&again) {
                Parsed::Command(command2, reference2) => {
                    assert_eq!(command2, command, "round trip of {again}");
                    assert_eq!(reference2, reference);
                }
                other => panic!("{again} no longer parses: {other:?}"),
            }
        }
    }
});
