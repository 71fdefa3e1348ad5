//! The JSON codec, server side: every `protocol::server` encoder with
//! arbitrary strings and numbers.
//!
//! Checked: each result is one final, unmasked text frame whose header
//! (shortest length form) matches its payload; the payload is UTF-8 JSON
//! that reads back to exactly the values given, in the shapes PROTOCOL.md
//! shows (written out here independently with `serde_json::json!`); a
//! `history` frame embeds the entries' cached JSON unchanged.

#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use kefu::model::{AgentRef, AuthorRole, ConvState, EntryView, EventView};
use kefu::protocol::server::{self, ConvSummary};
use kefu::protocol::ErrorCode;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

#[derive(Arbitrary, Debug)]
enum Event {
    Queued,
    Assigned {
        agent_id: String,
        agent_name: Option<String>,
    },
    Closed {
        by: Option<(u8, String)>,
    },
}

#[derive(Arbitrary, Debug)]
struct Entry {
    seq: u64,
    ts_ms: u64,
    author: u8,
    author_id: Option<String>,
    author_name: Option<String>,
    client_id: Option<String>,
    text: Option<String>,
    event: Option<Event>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    conv: String,
    entries: Vec<Entry>,
    reference: Option<String>,
    more: bool,
    code: u8,
    message: String,
    strings: [String; 4],
    numbers: [u64; 2],
    position: u32,
    flag: bool,
    convs: Vec<(String, u8, u64, String, Option<String>)>,
}

fn role(n: u8) -> AuthorRole {
    match n % 4 {
        0 => AuthorRole::Visitor,
        1 => AuthorRole::Agent,
        2 => AuthorRole::System,
        _ => AuthorRole::Bot,
    }
}

fn view(entry: &Entry) -> EntryView<'_> {
    EntryView {
        seq: entry.seq,
        ts_ms: entry.ts_ms,
        author: role(entry.author),
        author_id: entry.author_id.as_deref(),
        author_name: entry.author_name.as_deref(),
        client_id: entry.client_id.as_deref(),
        text: entry.text.as_deref(),
        event: entry.event.as_ref().map(|event| match event {
            Event::Queued => EventView::Queued,
            Event::Assigned {
                agent_id,
                agent_name,
            } => EventView::Assigned {
                agent_id,
                agent_name: agent_name.as_deref(),
            },
            Event::Closed { by } => EventView::Closed {
                by: by.as_ref().map(|(r, id)| (role(*r), id.as_str())),
            },
        }),
    }
}

/// An object with the given members, leaving out the `None` ones.
fn object(members: Vec<(&str, Option<Value>)>) -> Value {
    let mut map = Map::new();
    for (key, value) in members {
        if let Some(value) = value {
            map.insert(key.to_owned(), value);
        }
    }
    Value::Object(map)
}

/// The `msg` frame of an entry, as PROTOCOL.md shows it.
fn expected_msg(conv: &str, entry: &Entry) -> Value {
    let (event, agent, by) = match &entry.event {
        None => (None, None, None),
        Some(Event::Queued) => (Some(json!("queued")), None, None),
        Some(Event::Assigned {
            agent_id,
            agent_name,
        }) => (
            Some(json!("assigned")),
            Some(object(vec![
                ("id", Some(json!(agent_id))),
                ("name", agent_name.as_ref().map(|n| json!(n))),
            ])),
            None,
        ),
        Some(Event::Closed { by }) => (
            Some(json!("closed")),
            None,
            Some(match by {
                Some((r, id)) => json!({"role": role(*r).as_str(), "id": id}),
                None => json!({"role": "system"}),
            }),
        ),
    };
    object(vec![
        ("type", Some(json!("msg"))),
        ("conv", Some(json!(conv))),
        ("seq", Some(json!(entry.seq))),
        ("id", entry.client_id.as_ref().map(|id| json!(id))),
        (
            "from",
            Some(object(vec![
                ("role", Some(json!(role(entry.author).as_str()))),
                ("id", entry.author_id.as_ref().map(|id| json!(id))),
                ("name", entry.author_name.as_ref().map(|n| json!(n))),
            ])),
        ),
        ("text", entry.text.as_ref().map(|t| json!(t))),
        ("event", event),
        ("agent", agent),
        ("by", by),
        ("ts", Some(json!(entry.ts_ms))),
    ])
}

/// Checks the frame's header and returns its payload as JSON.
fn payload(frame: &Bytes) -> Value {
    assert_eq!(frame[0], 0x81, "a final text frame");
    assert_eq!(frame[1] & 0x80, 0, "server frames are not masked");
    let (len, at) = match frame[1] {
        126 => (usize::from(u16::from_be_bytes([frame[2], frame[3]])), 4),
        127 => (
            u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
            10,
        ),
        n => (usize::from(n), 2),
    };
    assert_eq!(
        frame.len(),
        at + len,
        "the header's length is the payload's"
    );
    let shortest = if len < 126 {
        2
    } else if len <= 0xFFFF {
        4
    } else {
        10
    };
    assert_eq!(at, shortest, "the shortest length form");
    assert_eq!(&server::json_of(frame)[..], &frame[at..]);
    let text = std::str::from_utf8(&frame[at..]).expect("a UTF-8 payload");
    serde_json::from_str(text).expect("a JSON payload")
}

fuzz_target!(|input: Input| {
    let conv = input.conv.as_str();
    let reference = input.reference.as_deref();

    let mut cached = Vec::new();
    let mut expected = Vec::new();
    for entry in &input.entries {
        let frame = server::entry_frame(conv, &view(entry));
        let want = expected_msg(conv, entry);
        assert_eq!(payload(&frame), want);
        cached.push(server::json_of(&frame));
        expected.push(want);
    }
    let frame = server::history(conv, reference, &cached, input.more);
    assert_eq!(
        payload(&frame),
        object(vec![
            ("type", Some(json!("history"))),
            ("conv", Some(json!(conv))),
            ("ref", reference.map(|r| json!(r))),
            ("messages", Some(Value::Array(expected))),
            ("more", Some(json!(input.more))),
        ])
    );

    let code = ErrorCode::ALL[usize::from(input.code) % ErrorCode::ALL.len()];
    assert_eq!(
        payload(&server::error(code, &input.message, reference)),
        object(vec![
            ("type", Some(json!("error"))),
            ("code", Some(json!(code.as_str()))),
            ("message", Some(json!(input.message))),
            ("ref", reference.map(|r| json!(r))),
        ])
    );

    let [a, b, c, d] = &input.strings;
    let [n, m] = input.numbers;
    assert_eq!(
        payload(&server::ack(a, conv, n)),
        json!({"type": "ack", "id": a, "conv": conv, "seq": n})
    );
    assert_eq!(
        payload(&server::synced(conv, m)),
        json!({"type": "synced", "conv": conv, "last_seq": m})
    );
    assert_eq!(
        payload(&server::typing(conv, input.flag, b, c)),
        json!({"type": "typing", "conv": conv, "on": input.flag, "by": {"role": b, "id": c}})
    );
    assert_eq!(
        payload(&server::read(conv, n, b, c)),
        json!({"type": "read", "conv": conv, "seq": n, "by": {"role": b, "id": c}})
    );
    assert_eq!(
        payload(&server::queue(conv, input.position)),
        json!({"type": "queue", "conv": conv, "position": input.position})
    );
    assert_eq!(
        payload(&server::status(d)),
        json!({"type": "status", "status": d})
    );

    let summaries: Vec<ConvSummary> = input
        .convs
        .iter()
        .map(|(conv, state, last_seq, agent, name)| ConvSummary {
            conv: conv.clone(),
            state: match state % 3 {
                0 => ConvState::Queued,
                1 => ConvState::Closed,
                _ => ConvState::Assigned(AgentRef {
                    id: agent.as_str().into(),
                    name: name.as_deref().map(Into::into),
                }),
            },
            last_seq: *last_seq,
        })
        .collect();
    let listed: Vec<Value> = input
        .convs
        .iter()
        .map(|(conv, state, last_seq, agent, name)| {
            let (state, agent) = match state % 3 {
                0 => ("queued", None),
                1 => ("closed", None),
                _ => (
                    "assigned",
                    Some(object(vec![
                        ("id", Some(json!(agent))),
                        ("name", name.as_ref().map(|n| json!(n))),
                    ])),
                ),
            };
            object(vec![
                ("conv", Some(json!(conv))),
                ("state", Some(json!(state))),
                ("last_seq", Some(json!(last_seq))),
                ("agent", agent),
            ])
        })
        .collect();
    assert_eq!(
        payload(&server::welcome(a, b, c, reference, &summaries)),
        object(vec![
            ("type", Some(json!("welcome"))),
            ("role", Some(json!(a))),
            ("id", Some(json!(b))),
            ("tenant", Some(json!(c))),
            ("token", reference.map(|r| json!(r))),
            ("conversations", Some(Value::Array(listed))),
        ])
    );
});
