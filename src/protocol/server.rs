//! Server frames: encoded once, as complete WebSocket frames.
//!
//! Every function here returns a `Bytes` that holds a whole unmasked
//! WebSocket text frame (header and JSON payload in one buffer). A log
//! entry's frame is built once, on the conversation's shard, and the same
//! `Bytes` goes to every connection it is delivered to: a reference count,
//! not a copy. [`json_of`] recovers the JSON payload of a built frame, so
//! `history` answers can embed cached entries without re-encoding them.

use std::io::Write;

use bytes::Bytes;
use serde::Serialize;

use super::codes::ErrorCode;
use crate::model::{AuthorRole, ConvState, EntryView, EventView};
use crate::websocket::{payload_offset, TextFrameBuilder};

/// One conversation as `welcome` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvSummary {
    /// The conversation id.
    pub conv: String,
    /// Its state.
    pub state: ConvState,
    /// Its last durable seq.
    pub last_seq: u64,
}

#[derive(Serialize)]
struct Person<'a> {
    role: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

#[derive(Serialize)]
struct AgentJson<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

#[derive(Serialize)]
struct MsgJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    conv: &'a str,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    from: Person<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<AgentJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    by: Option<Person<'a>>,
    ts: u64,
}

fn frame<T: Serialize>(value: &T, capacity: usize) -> Bytes {
    let mut builder = TextFrameBuilder::with_capacity(capacity);
    // Writing to memory cannot fail, and our types always serialise.
    serde_json::to_writer(&mut builder, value).expect("server frames serialise");
    builder.finish()
}

fn msg_json<'a>(conv: &'a str, entry: &EntryView<'a>) -> MsgJson<'a> {
    let (event, agent, by) = match entry.event {
        None => (None, None, None),
        Some(EventView::Queued) => (Some("queued"), None, None),
        Some(EventView::Assigned {
            agent_id,
            agent_name,
        }) => (
            Some("assigned"),
            Some(AgentJson {
                id: agent_id,
                name: agent_name,
            }),
            None,
        ),
        Some(EventView::Closed { by }) => {
            let by = match by {
                Some((role, id)) => Person {
                    role: role.as_str(),
                    id: Some(id),
                    name: None,
                },
                None => Person {
                    role: AuthorRole::System.as_str(),
                    id: None,
                    name: None,
                },
            };
            (Some("closed"), None, Some(by))
        }
    };
    MsgJson {
        kind: "msg",
        conv,
        seq: entry.seq,
        id: entry.client_id,
        from: Person {
            role: entry.author.as_str(),
            id: entry.author_id,
            name: entry.author_name,
        },
        text: entry.text,
        event,
        agent,
        by,
        ts: entry.ts_ms,
    }
}

/// A log entry as a `msg` frame: the frame every participant receives.
pub fn entry_frame(conv: &str, entry: &EntryView<'_>) -> Bytes {
    let capacity = 128 + entry.text.map_or(0, str::len);
    frame(&msg_json(conv, entry), capacity)
}

/// The JSON payload of a frame built by this module.
pub fn json_of(frame: &Bytes) -> Bytes {
    frame.slice(payload_offset(frame)..)
}

/// `welcome`.
pub fn welcome(
    role: &str,
    id: &str,
    tenant: &str,
    token: Option<&str>,
    convs: &[ConvSummary],
) -> Bytes {
    #[derive(Serialize)]
    struct Conv<'a> {
        conv: &'a str,
        state: &'a str,
        last_seq: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        agent: Option<AgentJson<'a>>,
    }
    #[derive(Serialize)]
    struct Welcome<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        role: &'a str,
        id: &'a str,
        tenant: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        token: Option<&'a str>,
        conversations: Vec<Conv<'a>>,
    }
    let conversations = convs
        .iter()
        .map(|c| Conv {
            conv: &c.conv,
            state: c.state.as_str(),
            last_seq: c.last_seq,
            agent: match &c.state {
                ConvState::Assigned(agent) => Some(AgentJson {
                    id: agent.id.as_str(),
                    name: agent.name.as_deref(),
                }),
                _ => None,
            },
        })
        .collect();
    frame(
        &Welcome {
            kind: "welcome",
            role,
            id,
            tenant,
            token,
            conversations,
        },
        256,
    )
}

/// `ack`: the entry is durable.
pub fn ack(id: &str, conv: &str, seq: u64) -> Bytes {
    #[derive(Serialize)]
    struct Ack<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        id: &'a str,
        conv: &'a str,
        seq: u64,
    }
    frame(
        &Ack {
            kind: "ack",
            id,
            conv,
            seq,
        },
        96,
    )
}

/// `error`.
pub fn error(code: ErrorCode, message: &str, reference: Option<&str>) -> Bytes {
    #[derive(Serialize)]
    struct Error<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        code: &'a str,
        message: &'a str,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    }
    frame(
        &Error {
            kind: "error",
            code: code.as_str(),
            message,
            reference,
        },
        128,
    )
}

/// `synced`: the end of a `sync` answer.
pub fn synced(conv: &str, last_seq: u64) -> Bytes {
    #[derive(Serialize)]
    struct Synced<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        conv: &'a str,
        last_seq: u64,
    }
    frame(
        &Synced {
            kind: "synced",
            conv,
            last_seq,
        },
        96,
    )
}

/// `history`: `entries` are JSON `msg` objects (see [`json_of`]), oldest first.
pub fn history(conv: &str, reference: Option<&str>, entries: &[Bytes], more: bool) -> Bytes {
    let capacity = 96 + entries.iter().map(|e| e.len() + 1).sum::<usize>();
    let mut builder = TextFrameBuilder::with_capacity(capacity);
    let head = serde_json::json!({ "type": "history", "conv": conv });
    // Hand-assembled around the cached entries, which are already JSON.
    let write = |b: &mut TextFrameBuilder| -> std::io::Result<()> {
        let head = serde_json::to_string(&head)?;
        b.write_all(&head.as_bytes()[..head.len() - 1])?;
        if let Some(reference) = reference {
            b.write_all(b",\"ref\":")?;
            serde_json::to_writer(&mut *b, reference)?;
        }
        b.write_all(b",\"messages\":[")?;
        for (i, entry) in entries.iter().enumerate() {
            if i > 0 {
                b.write_all(b",")?;
            }
            b.write_all(entry)?;
        }
        write!(b, "],\"more\":{more}}}")
    };
    write(&mut builder).expect("writing to memory cannot fail");
    builder.finish()
}

/// `typing`, forwarded with who is typing.
pub fn typing(conv: &str, on: bool, by_role: &str, by_id: &str) -> Bytes {
    #[derive(Serialize)]
    struct Typing<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        conv: &'a str,
        on: bool,
        by: Person<'a>,
    }
    frame(
        &Typing {
            kind: "typing",
            conv,
            on,
            by: Person {
                role: by_role,
                id: Some(by_id),
                name: None,
            },
        },
        128,
    )
}

/// `read`, forwarded with who read.
pub fn read(conv: &str, seq: u64, by_role: &str, by_id: &str) -> Bytes {
    #[derive(Serialize)]
    struct Read<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        conv: &'a str,
        seq: u64,
        by: Person<'a>,
    }
    frame(
        &Read {
            kind: "read",
            conv,
            seq,
            by: Person {
                role: by_role,
                id: Some(by_id),
                name: None,
            },
        },
        128,
    )
}

/// `queue`: a queued visitor's position (1 = next).
pub fn queue(conv: &str, position: u32) -> Bytes {
    #[derive(Serialize)]
    struct Queue<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        conv: &'a str,
        position: u32,
    }
    frame(
        &Queue {
            kind: "queue",
            conv,
            position,
        },
        96,
    )
}

/// `status`: the echo of an agent's availability.
pub fn status(status: &str) -> Bytes {
    #[derive(Serialize)]
    struct Status<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        status: &'a str,
    }
    frame(
        &Status {
            kind: "status",
            status,
        },
        64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse(frame: &Bytes) -> Value {
        assert_eq!(frame[0], 0x81, "a final text frame");
        serde_json::from_slice(&json_of(frame)).unwrap()
    }

    fn view<'a>(text: Option<&'a str>, event: Option<EventView<'a>>) -> EntryView<'a> {
        EntryView {
            seq: 13,
            ts_ms: 1_732_280_000_123,
            author: if event.is_some() {
                AuthorRole::System
            } else {
                AuthorRole::Visitor
            },
            author_id: event.is_none().then_some("v-123"),
            author_name: event.is_none().then_some("Ann"),
            client_id: event.is_none().then_some("m-42"),
            text,
            event,
        }
    }

    #[test]
    fn entries_are_written_as_the_protocol_shows() {
        assert_eq!(
            parse(&entry_frame("c-9", &view(Some("where is my order?"), None))),
            json!({"type":"msg","conv":"c-9","seq":13,"id":"m-42",
                   "from":{"role":"visitor","id":"v-123","name":"Ann"},
                   "text":"where is my order?","ts":1_732_280_000_123u64})
        );
        assert_eq!(
            parse(&entry_frame("c-9", &view(None, Some(EventView::Queued)))),
            json!({"type":"msg","conv":"c-9","seq":13,"from":{"role":"system"},"event":"queued","ts":1_732_280_000_123u64})
        );
        let assigned = EventView::Assigned {
            agent_id: "alice",
            agent_name: Some("Alice"),
        };
        assert_eq!(
            parse(&entry_frame("c-9", &view(None, Some(assigned))))["agent"],
            json!({"id":"alice","name":"Alice"})
        );
        let closed = EventView::Closed {
            by: Some((AuthorRole::Agent, "alice")),
        };
        let v = parse(&entry_frame("c-9", &view(None, Some(closed))));
        assert_eq!(
            (v["event"].clone(), v["by"].clone()),
            (json!("closed"), json!({"role":"agent","id":"alice"}))
        );
    }

    #[test]
    fn long_texts_get_extended_lengths() {
        let text = "x".repeat(70_000);
        let frame = entry_frame("c", &view(Some(&text), None));
        assert_eq!(frame[1], 127);
        assert_eq!(parse(&frame)["text"].as_str().unwrap().len(), 70_000);
        let frame = entry_frame("c", &view(Some(&text[..300]), None));
        assert_eq!(frame[1], 126);
    }

    #[test]
    fn history_embeds_cached_entries() {
        let a = json_of(&entry_frame("c-9", &view(Some("one"), None)));
        let b = json_of(&entry_frame("c-9", &view(Some("two \"quoted\""), None)));
        let v = parse(&history("c-9", Some("h1"), &[a, b], true));
        assert_eq!(v["type"], "history");
        assert_eq!(v["ref"], "h1");
        assert_eq!(v["more"], true);
        assert_eq!(v["messages"][1]["text"], "two \"quoted\"");
        let v = parse(&history("c-9", None, &[], false));
        assert_eq!(
            v,
            json!({"type":"history","conv":"c-9","messages":[],"more":false})
        );
    }

    #[test]
    fn small_frames() {
        assert_eq!(
            parse(&ack("m-42", "c-9", 13)),
            json!({"type":"ack","id":"m-42","conv":"c-9","seq":13})
        );
        assert_eq!(
            parse(&error(
                ErrorCode::NotFound,
                "no such conversation",
                Some("m-42")
            )),
            json!({"type":"error","code":"not_found","message":"no such conversation","ref":"m-42"})
        );
        assert_eq!(
            parse(&synced("c", 30)),
            json!({"type":"synced","conv":"c","last_seq":30})
        );
        assert_eq!(
            parse(&typing("c", true, "agent", "alice")),
            json!({"type":"typing","conv":"c","on":true,"by":{"role":"agent","id":"alice"}})
        );
        assert_eq!(
            parse(&queue("c", 3)),
            json!({"type":"queue","conv":"c","position":3})
        );
        assert_eq!(
            parse(&status("away")),
            json!({"type":"status","status":"away"})
        );
        let summary = ConvSummary {
            conv: "c-9".into(),
            state: ConvState::Assigned(crate::model::AgentRef {
                id: "alice".into(),
                name: Some("Alice".into()),
            }),
            last_seq: 12,
        };
        assert_eq!(
            parse(&welcome("visitor", "v-1", "acme", Some("tok"), &[summary])),
            json!({"type":"welcome","role":"visitor","id":"v-1","tenant":"acme","token":"tok",
                   "conversations":[{"conv":"c-9","state":"assigned","last_seq":12,"agent":{"id":"alice","name":"Alice"}}]})
        );
    }
}
