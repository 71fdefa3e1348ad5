//! The frame-handling path: `websocket::Decoder::feed` over arbitrary byte
//! streams (hand-shaped frames mixed with raw bytes), cut into arbitrary
//! reads, with the callback pausing decoding (`Flow::Stop`) at arbitrary
//! events.
//!
//! Oracle: a straightforward reference decoder written here from RFC 6455
//! and PROTOCOL.md (whole stream at once, no buffering tricks) must produce
//! the same events and the same violation. Invariants checked on every
//! `feed`: no panic; events well formed (pings at most 125 bytes, allowed
//! close codes, texts within the limit, nothing after a close); after a
//! violation the same violation forever, no events, no heap; heap bounded
//! by the message limit (plus the caller's unread input after a pause);
//! an idle decoder holds no heap; every pause resumes with progress.

#![no_main]

use arbitrary::Arbitrary;
use kefu::websocket::{
    close_code_allowed, close_frame, pong_frame, Decoder, Event, Flow, Violation,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum LenForm {
    /// The shortest form, as RFC 6455 wants.
    Minimal,
    /// 16-bit extended length.
    Sixteen,
    /// 64-bit extended length.
    SixtyFour,
    /// A 64-bit length that lies about the payload that follows.
    Lie(u64),
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Bytes(Vec<u8>),
    Text(String),
    Close { code: u16, reason: String },
    Zeros(u16),
}

#[derive(Arbitrary, Debug)]
enum Piece {
    Raw(Vec<u8>),
    Frame {
        /// FIN, RSV1-3 and the opcode, as on the wire.
        first: u8,
        mask: Option<[u8; 4]>,
        form: LenForm,
        payload: Payload,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    limit: u32,
    pieces: Vec<Piece>,
    /// Read sizes, cycled; a size with its top bit set also feeds an empty
    /// slice first (a resume without new bytes).
    cuts: Vec<u16>,
    /// Bit `i % 64`: pause after the `i`th event.
    stops: u64,
    /// Fed after the stream, to check a spent decoder stays spent.
    extra: Vec<u8>,
}

/// An owned event, to compare runs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Got {
    Text(String),
    Binary,
    Ping(Vec<u8>),
    Pong,
    Close(Option<(u16, String)>),
}

fn own(event: Event<'_>) -> Got {
    match event {
        Event::Text(text) => Got::Text(text.to_owned()),
        Event::Binary => Got::Binary,
        Event::Ping(payload) => Got::Ping(payload.to_vec()),
        Event::Pong => Got::Pong,
        Event::Close(close) => Got::Close(close.map(|(code, reason)| (code, reason.to_owned()))),
    }
}

fn build(pieces: &[Piece]) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Raw(bytes) => out.extend_from_slice(bytes),
            Piece::Frame {
                first,
                mask,
                form,
                payload,
            } => {
                let payload: Vec<u8> = match payload {
                    Payload::Bytes(bytes) => bytes.clone(),
                    Payload::Text(text) => text.as_bytes().to_vec(),
                    Payload::Close { code, reason } => {
                        let mut p = code.to_be_bytes().to_vec();
                        p.extend_from_slice(reason.as_bytes());
                        p
                    }
                    Payload::Zeros(n) => vec![0; usize::from(*n)],
                };
                out.push(*first);
                let mask_bit = if mask.is_some() { 0x80 } else { 0 };
                let len = payload.len() as u64;
                match form {
                    LenForm::Minimal if len < 126 => out.push(mask_bit | len as u8),
                    LenForm::Minimal | LenForm::Sixteen if len <= 0xFFFF => {
                        out.push(mask_bit | 126);
                        out.extend_from_slice(&(len as u16).to_be_bytes());
                    }
                    LenForm::Minimal | LenForm::Sixteen | LenForm::SixtyFour => {
                        out.push(mask_bit | 127);
                        out.extend_from_slice(&len.to_be_bytes());
                    }
                    LenForm::Lie(claimed) => {
                        out.push(mask_bit | 127);
                        out.extend_from_slice(&claimed.to_be_bytes());
                    }
                }
                match mask {
                    Some(key) => {
                        out.extend_from_slice(key);
                        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
                    }
                    None => out.extend_from_slice(&payload),
                }
            }
        }
    }
    out
}

/// Whether the bytes so far can still begin a valid UTF-8 string.
fn utf8_prefix_ok(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

/// The reference decoder: the whole stream at once, the end of the stream
/// being "more may come". Returns the events and the violation, if any.
fn reference(stream: &[u8], limit: usize) -> (Vec<Got>, Option<Violation>) {
    let mut events = Vec::new();
    let mut pos = 0usize;
    // A fragmented message in progress: (binary, bytes announced so far).
    let mut fragmented: Option<(bool, u64)> = None;
    let mut text: Vec<u8> = Vec::new();
    loop {
        let rest = &stream[pos..];
        if rest.len() < 2 {
            return (events, None);
        }
        let (b0, b1) = (rest[0], rest[1]);
        let masked = b1 & 0x80 != 0;
        let (len, mut header) = match b1 & 0x7F {
            126 => {
                if rest.len() < 4 {
                    return (events, None);
                }
                (u64::from(u16::from_be_bytes([rest[2], rest[3]])), 4)
            }
            127 => {
                if rest.len() < 10 {
                    return (events, None);
                }
                (u64::from_be_bytes(rest[2..10].try_into().unwrap()), 10)
            }
            n => (u64::from(n), 2),
        };
        if masked {
            header += 4;
        }
        if rest.len() < header {
            return (events, None);
        }
        let opcode = b0 & 0x0F;
        if matches!(opcode, 3..=7 | 0xB..=0xF) {
            return (events, Some(Violation::ReservedOpcode));
        }
        if b0 & 0x70 != 0 {
            return (events, Some(Violation::ReservedBits));
        }
        if !masked {
            return (events, Some(Violation::Unmasked));
        }
        if len >> 63 != 0 {
            return (events, Some(Violation::LengthOverflow));
        }
        let fin = b0 & 0x80 != 0;
        let key = &rest[header - 4..header];
        let body = &rest[header..];
        let available = (len.min(body.len() as u64)) as usize;
        let payload: Vec<u8> = body[..available]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        let complete = available as u64 == len;
        match opcode {
            0x8..=0xA => {
                if !fin {
                    return (events, Some(Violation::FragmentedControl));
                }
                if len > 125 {
                    return (events, Some(Violation::ControlTooLong));
                }
                if !complete {
                    return (events, None);
                }
                match opcode {
                    0x9 => events.push(Got::Ping(payload)),
                    0xA => events.push(Got::Pong),
                    _ => {
                        match payload.as_slice() {
                            [] => events.push(Got::Close(None)),
                            [_] => return (events, Some(Violation::CloseTruncated)),
                            [high, low, reason @ ..] => {
                                let code = u16::from_be_bytes([*high, *low]);
                                if !close_code_allowed(code) {
                                    return (events, Some(Violation::InvalidCloseCode(code)));
                                }
                                let Ok(reason) = std::str::from_utf8(reason) else {
                                    return (events, Some(Violation::InvalidCloseReason));
                                };
                                events.push(Got::Close(Some((code, reason.to_owned()))));
                            }
                        }
                        // Nothing after a close frame is decoded.
                        return (events, None);
                    }
                }
            }
            0x1 | 0x2 => {
                if fragmented.is_some() {
                    return (events, Some(Violation::InterleavedMessage));
                }
                if len > limit as u64 {
                    return (events, Some(Violation::TooBig));
                }
                let binary = opcode == 0x2;
                if !fin {
                    fragmented = Some((binary, len));
                }
                if binary {
                    events.push(Got::Binary);
                } else {
                    text.clear();
                    text.extend_from_slice(&payload);
                    if !utf8_prefix_ok(&text) {
                        return (events, Some(Violation::InvalidUtf8));
                    }
                }
                if !complete {
                    return (events, None);
                }
                if fin && !binary {
                    match String::from_utf8(std::mem::take(&mut text)) {
                        Ok(t) => events.push(Got::Text(t)),
                        Err(_) => return (events, Some(Violation::InvalidUtf8)),
                    }
                }
            }
            _ => {
                let Some((binary, so_far)) = fragmented else {
                    return (events, Some(Violation::UnexpectedContinuation));
                };
                if len > limit as u64 || so_far + len > limit as u64 {
                    return (events, Some(Violation::TooBig));
                }
                fragmented = Some((binary, so_far + len));
                if !binary {
                    text.extend_from_slice(&payload);
                    if !utf8_prefix_ok(&text) {
                        return (events, Some(Violation::InvalidUtf8));
                    }
                }
                if !complete {
                    return (events, None);
                }
                if fin {
                    fragmented = None;
                    if !binary {
                        match String::from_utf8(std::mem::take(&mut text)) {
                            Ok(t) => events.push(Got::Text(t)),
                            Err(_) => return (events, Some(Violation::InvalidUtf8)),
                        }
                    }
                }
            }
        }
        pos += header + len as usize;
    }
}

struct Run {
    decoder: Decoder,
    limit: usize,
    events: Vec<Got>,
    stops: u64,
    failed: Option<Violation>,
    fed: usize,
}

impl Run {
    fn feed(&mut self, bytes: &[u8]) {
        let mut buf = bytes.to_vec();
        self.fed += buf.len();
        let before = self.events.len();
        let stops = self.stops;
        let closed_before = self.decoder.is_closed();
        let events = &mut self.events;
        let result = self.decoder.feed(&mut buf, &mut |event| {
            let n = events.len();
            events.push(own(event));
            if (stops >> (n % 64)) & 1 == 1 {
                Flow::Stop
            } else {
                Flow::Continue
            }
        });
        let new = &self.events[before..];
        if closed_before {
            assert!(new.is_empty(), "events after a close: {new:?}");
        }
        for (i, event) in new.iter().enumerate() {
            match event {
                Got::Text(text) => assert!(text.len() <= self.limit, "text over the limit"),
                Got::Ping(payload) => assert!(payload.len() <= 125),
                Got::Close(close) => {
                    if let Some((code, reason)) = close {
                        assert!(close_code_allowed(*code));
                        assert!(reason.len() <= 123);
                    }
                    assert_eq!(i, new.len() - 1, "events after a close");
                    assert!(self.decoder.is_closed());
                }
                Got::Binary | Got::Pong => {}
            }
        }
        match (self.failed, result) {
            (Some(old), result) => {
                assert_eq!(result, Err(old), "a spent decoder keeps its violation");
                assert!(new.is_empty(), "a spent decoder delivers nothing");
            }
            (None, Err(violation)) => self.failed = Some(violation),
            (None, Ok(())) => {}
        }
        let heap = self.decoder.heap_bytes();
        if self.failed.is_some() {
            assert_eq!(heap, 0, "a spent decoder holds no heap");
        } else if self.decoder.has_pending_input() {
            assert!(
                heap <= self.limit + 2 * self.fed + 64,
                "heap {heap} with {} bytes fed, limit {}",
                self.fed,
                self.limit
            );
        } else {
            assert!(
                heap <= self.limit,
                "heap {heap} over the message limit {}",
                self.limit
            );
        }
        if self.decoder.is_idle() {
            assert_eq!(heap, 0, "an idle decoder holds no heap");
        }
    }
}

fn check_encoders(pieces: &[Piece]) {
    for piece in pieces {
        if let Piece::Frame {
            payload: Payload::Close { code, reason },
            ..
        } = piece
        {
            let frame = close_frame(*code, reason);
            assert_eq!(frame[0], 0x88);
            let len = usize::from(frame[1]);
            assert!(len <= 125 && frame.len() == 2 + len);
            assert_eq!(&frame[2..4], &code.to_be_bytes());
            let sent = std::str::from_utf8(&frame[4..]).expect("a UTF-8 reason");
            assert!(reason.starts_with(sent));
            // The longest prefix that fits, cut at a character boundary.
            let next = reason[sent.len()..].chars().next();
            assert!(next.is_none_or(|c| sent.len() + c.len_utf8() > 123));
        }
        if let Piece::Frame {
            payload: Payload::Bytes(bytes),
            ..
        } = piece
        {
            let frame = pong_frame(bytes);
            let n = bytes.len().min(125);
            assert_eq!(
                &frame[..],
                &[&[0x8A, n as u8][..], &bytes[..n]].concat()[..]
            );
        }
    }
}

fuzz_target!(|input: Input| {
    let limit = (input.limit % 70_000) as usize;
    let stream = build(&input.pieces);
    check_encoders(&input.pieces);

    let mut run = Run {
        decoder: Decoder::new(limit),
        limit,
        events: Vec::new(),
        stops: input.stops,
        failed: None,
        fed: 0,
    };
    let mut pos = 0;
    let mut cuts = input.cuts.iter().cycle();
    // At most about 512 reads per input, so a long stream cut into bytes
    // does not slow the fuzzer to a crawl (short streams still get cut
    // anywhere).
    let smallest = (stream.len() / 512).max(1);
    while pos < stream.len() {
        let (size, resume) = match cuts.next() {
            Some(&cut) => (usize::from(cut & 0x7FFF).max(smallest), cut & 0x8000 != 0),
            None => (stream.len(), false),
        };
        if resume {
            run.feed(&[]);
        }
        let end = (pos + size).min(stream.len());
        run.feed(&stream[pos..end]);
        pos = end;
    }
    // Resume until nothing paused is left; each resume makes progress.
    let mut rounds = 0;
    while run.failed.is_none() && run.decoder.has_pending_input() {
        rounds += 1;
        assert!(rounds <= stream.len() + 1, "a resume made no progress");
        run.feed(&[]);
    }

    let (expected, violation) = reference(&stream, limit);
    assert_eq!(run.failed, violation, "violation");
    assert_eq!(run.events, expected, "events");

    if run.failed.is_some() {
        run.feed(&input.extra);
        run.feed(&[]);
    }
});
