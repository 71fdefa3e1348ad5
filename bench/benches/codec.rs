//! The frame and JSON codec against serde_json into owned Strings.
//!
//! - Inbound, the JSON alone: the text of a client `msg` parsed into a
//!   borrowed, checked command (kefu), against parsing the same text into a
//!   struct of owned `String`s (the baseline).
//! - Inbound, the whole frame: a masked client `msg` frame decoded, unmasked
//!   in place, UTF-8 checked and parsed (kefu), against the same steps done
//!   the plain way: unmask into a fresh `Vec`, `String::from_utf8`, and
//!   serde_json into owned `String`s (the baseline). Both do the same work,
//!   so the ratio is the codec's, not a comparison of more work with less.
//! - Outbound: one log entry is encoded once as a WebSocket frame and
//!   shared by `FANOUT` recipients (kefu), against serialising it to a
//!   `String` per recipient (the baseline).

use std::hint::black_box;

use kefu::model::{AuthorRole, EntryView};
use kefu::protocol::client::{parse, Parsed};
use kefu::protocol::server::entry_frame;
use kefu::websocket::{Decoder, Event, Flow};
use kefu_bench::{measure, report};
use serde::{Deserialize, Serialize};

const FANOUT: usize = 4;

fn masked_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct OwnedFrame {
    #[serde(rename = "type")]
    kind: String,
    id: Option<String>,
    conv: Option<String>,
    text: Option<String>,
}

#[derive(Serialize)]
struct OwnedFrom {
    role: String,
    id: String,
    name: String,
}

#[derive(Serialize)]
struct OwnedMsg {
    #[serde(rename = "type")]
    kind: String,
    conv: String,
    seq: u64,
    id: String,
    from: OwnedFrom,
    text: String,
    ts: u64,
}

fn main() {
    const OPS: u64 = 500_000;
    let json = br#"{"type":"msg","id":"m-42","conv":"c-0123456789abcdef-01234567","text":"where is my order? it was due yesterday"}"#;
    let frame = masked_frame(json);

    let text = std::str::from_utf8(json).unwrap().to_string();
    let ours = measure("parse to a borrowed, checked command", OPS, |ops| {
        for _ in 0..ops {
            if let Parsed::Command(cmd, _) = parse(black_box(&text)) {
                black_box(cmd);
            }
        }
    });
    let baseline = measure("serde_json into owned Strings", OPS, |ops| {
        for _ in 0..ops {
            let f: OwnedFrame = serde_json::from_str(black_box(&text)).unwrap();
            black_box(f);
        }
    });
    report("parse", &ours, &baseline);

    let mut decoder = Decoder::new(64 * 1024);
    let mut buf = frame.clone();
    let ours = measure("frame: unmask in place, check, borrow", OPS, |ops| {
        for _ in 0..ops {
            buf.copy_from_slice(&frame);
            decoder
                .feed(&mut buf, &mut |event| {
                    if let Event::Text(text) = event {
                        if let Parsed::Command(cmd, _) = parse(text) {
                            black_box(cmd);
                        }
                    }
                    Flow::Continue
                })
                .expect("valid frame");
        }
    });
    let baseline = measure("frame: unmask to Vec, from_utf8, owned", OPS, |ops| {
        for _ in 0..ops {
            buf.copy_from_slice(&frame);
            let wire = black_box(&buf);
            let len = usize::from(wire[1] & 0x7f);
            let mask = [wire[2], wire[3], wire[4], wire[5]];
            let payload: Vec<u8> = wire[6..6 + len]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            let text = String::from_utf8(payload).unwrap();
            let f: OwnedFrame = serde_json::from_str(&text).unwrap();
            black_box(f);
        }
    });
    report("decode", &ours, &baseline);

    let view = EntryView {
        seq: 13,
        ts_ms: 1_732_280_000_123,
        author: AuthorRole::Visitor,
        author_id: Some("v-123"),
        author_name: Some("Ann"),
        client_id: Some("m-42"),
        text: Some("where is my order? it was due yesterday"),
        event: None,
    };
    let ours = measure(&format!("encode once, share with {FANOUT}"), OPS, |ops| {
        for _ in 0..ops {
            let frame = entry_frame("c-0123456789abcdef-01234567", &view);
            for _ in 0..FANOUT {
                black_box(frame.clone());
            }
        }
    });
    let baseline = measure(&format!("to_string per recipient x{FANOUT}"), OPS, |ops| {
        for _ in 0..ops {
            for _ in 0..FANOUT {
                let msg = OwnedMsg {
                    kind: "msg".into(),
                    conv: "c-0123456789abcdef-01234567".into(),
                    seq: 13,
                    id: "m-42".into(),
                    from: OwnedFrom {
                        role: "visitor".into(),
                        id: "v-123".into(),
                        name: "Ann".into(),
                    },
                    text: "where is my order? it was due yesterday".into(),
                    ts: 1_732_280_000_123,
                };
                black_box(serde_json::to_string(&msg).unwrap());
            }
        }
    });
    report("encode", &ours, &baseline);
}
