//! The WebSocket frame codec, server side (RFC 6455 §5).
//!
//! [`Decoder`] turns bytes read from a client socket into [`Event`]s. It parses
//! frames where they lie in the caller's read buffer, unmasks them there and
//! lends complete text messages to a callback as `&str`, so a frame that is
//! whole in one read costs no copy and no allocation. Only what a read leaves
//! incomplete is kept: up to 14 header bytes and up to 125 control payload
//! bytes inline, and the text of a message that is split across reads or
//! fragmented across frames in a `Vec` that is freed as soon as it empties.
//!
//! The encoding side builds unmasked server frames as [`Bytes`], so one frame
//! can be encoded once and queued on every connection it goes to.

use std::fmt;
use std::io::{self, Cursor};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use crate::protocol::close;

/// The largest payload a control frame may carry (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The longest frame header: 2 bytes, a 64-bit length and a 4-byte mask.
const MAX_HEADER: usize = 14;

/// The longest header of an unmasked (server) frame: room reserved in front of
/// a [`TextFrameBuilder`]'s payload.
const MAX_SERVER_HEADER: usize = 10;

/// What the decoder found in the client's byte stream: one complete message or
/// control frame.
///
/// Borrowed data lives in the caller's input (a frame that was whole in it) or
/// in the decoder (a frame or message assembled across reads); either way it is
/// valid only for the duration of the callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A whole text message, single-frame or reassembled from fragments,
    /// already checked to be UTF-8. This is the only thing protocol v1 carries.
    Text(&'a str),
    /// The start of a binary message. Protocol v1 is text only, so the caller
    /// closes with 1003; the payload is never buffered, and this is reported as
    /// soon as the header of the message's first frame is read (after the size
    /// check), so the caller need not wait for the payload to arrive.
    Binary,
    /// A ping: the caller answers with a pong carrying the same payload
    /// (at most 125 bytes).
    Ping(&'a [u8]),
    /// A pong (an answer to our ping, or unsolicited): proof the client is alive.
    /// Its payload is not needed.
    Pong,
    /// A close frame: `None` when it carried no status code, else the code
    /// (already checked to be allowed on the wire) and the UTF-8 reason. After
    /// it the decoder ignores every further byte, since a client sends nothing
    /// after its close frame.
    Close(Option<(u16, &'a str)>),
}

/// The callback's answer: keep decoding, or stop right after this event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Decode the next frame.
    Continue,
    /// Stop now and keep the rest of the input inside the decoder, so the
    /// caller can pause (backpressure, rate limiting) without losing bytes.
    /// A later [`Decoder::feed`], with new bytes or none, resumes from there.
    Stop,
}

/// A breach of RFC 6455 by the client. Each one ends the connection with the
/// close code of [`Violation::close_code`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A frame without a mask: clients must mask every frame (§5.1).
    Unmasked,
    /// RSV1, RSV2 or RSV3 set: no extension was negotiated (§5.2).
    ReservedBits,
    /// Opcode 3-7 or 0xB-0xF, which RFC 6455 leaves undefined (§5.2).
    ReservedOpcode,
    /// A control frame with more than 125 bytes of payload (§5.5).
    ControlTooLong,
    /// A control frame without FIN: control frames are never fragmented (§5.5).
    FragmentedControl,
    /// A continuation frame while no fragmented message is in progress (§5.4).
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is in progress
    /// (§5.4: fragments of different messages must not interleave).
    InterleavedMessage,
    /// A 64-bit payload length with its most significant bit set (§5.2).
    LengthOverflow,
    /// A frame, or a message reassembled from fragments, over the configured
    /// limit; detected from the header, before any payload is buffered.
    TooBig,
    /// A text message that is not UTF-8 (§8.1), detected as soon as the bytes
    /// received so far cannot begin any valid UTF-8 string.
    InvalidUtf8,
    /// A close frame with a 1-byte payload: a status code takes 2 bytes (§5.5.1).
    CloseTruncated,
    /// A close frame whose status code may not be sent on the wire (§7.4).
    InvalidCloseCode(u16),
    /// A close frame whose reason is not UTF-8 (§5.5.1).
    InvalidCloseReason,
}

impl Violation {
    /// The close code to send before closing the connection.
    pub fn close_code(self) -> u16 {
        match self {
            Violation::TooBig => close::TOO_BIG,
            Violation::InvalidUtf8 | Violation::InvalidCloseReason => close::INVALID_PAYLOAD,
            Violation::Unmasked
            | Violation::ReservedBits
            | Violation::ReservedOpcode
            | Violation::ControlTooLong
            | Violation::FragmentedControl
            | Violation::UnexpectedContinuation
            | Violation::InterleavedMessage
            | Violation::LengthOverflow
            | Violation::CloseTruncated
            | Violation::InvalidCloseCode(_) => close::PROTOCOL_ERROR,
        }
    }

    /// A short reason, safe to put in the close frame we send back.
    pub fn reason(self) -> &'static str {
        match self {
            Violation::Unmasked => "unmasked frame",
            Violation::ReservedBits => "reserved bits set",
            Violation::ReservedOpcode => "reserved opcode",
            Violation::ControlTooLong => "control frame too long",
            Violation::FragmentedControl => "fragmented control frame",
            Violation::UnexpectedContinuation => "unexpected continuation frame",
            Violation::InterleavedMessage => "new message inside a fragmented message",
            Violation::LengthOverflow => "invalid payload length",
            Violation::TooBig => "message too big",
            Violation::InvalidUtf8 => "invalid UTF-8 in text message",
            Violation::CloseTruncated => "close frame with a 1-byte payload",
            Violation::InvalidCloseCode(_) => "invalid close code",
            Violation::InvalidCloseReason => "invalid UTF-8 in close reason",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::InvalidCloseCode(code) => write!(f, "invalid close code {code}"),
            other => f.write_str(other.reason()),
        }
    }
}

impl std::error::Error for Violation {}

/// Whether a client may send this status code in a close frame.
///
/// Allowed: 1000-1003 and 1007-1011 (RFC 6455 §7.4.1); 1012 (Service Restart),
/// 1013 (Try Again Later) and 1014 (Bad Gateway), which the IANA WebSocket
/// close code registry assigned after the RFC, so a peer using them follows a
/// published specification; 3000-3999 (registered for libraries, frameworks
/// and applications) and 4000-4999 (private use), §7.4.2.
///
/// Refused: 0-999 (never used, §7.4.2); 1004 (reserved, no meaning); 1005,
/// 1006 and 1015 (the RFC and the registry say they must not be set in a close
/// frame: they only report locally that no code was received, that the
/// connection dropped, or that TLS failed); 1016-2999 (unassigned: only a
/// future standard may give them a meaning); 5000 and above (outside every
/// range RFC 6455 defines).
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// What kind of payload the frame being received carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Bytes of a text message (its first frame or a continuation).
    Text,
    /// Bytes of a binary message: skipped, never stored.
    Binary,
    /// A control frame; its payload goes to the inline control buffer.
    Control(Control),
}

/// The frame whose header has been read and whose payload is still arriving.
#[derive(Clone, Copy, Debug)]
struct Partial {
    kind: Kind,
    fin: bool,
    mask: [u8; 4],
    /// Payload length from the header (checked against the limit).
    len: usize,
    /// Payload bytes received so far; also the mask offset of the next byte.
    done: usize,
}

/// A fragmented message in progress (first frame without FIN seen, final
/// continuation not yet read).
#[derive(Clone, Copy, Debug)]
struct Fragmented {
    /// Text or binary: what the continuation frames carry.
    binary: bool,
    /// Payload bytes of the message announced by headers so far, for the limit.
    len: usize,
}

/// The server-side frame decoder of one connection.
///
/// It holds only what one read can leave unfinished, and frees its heap buffers
/// whenever they empty, so an idle connection's decoder owns no heap memory
/// (see [`Decoder::heap_bytes`]): 256 bytes inline on a 64-bit target,
/// nothing else.
///
/// After a [`Violation`] the decoder is spent: every later `feed` returns the
/// same violation, since the connection must be closed.
#[derive(Debug)]
pub struct Decoder {
    /// The limit on one frame's payload and on one reassembled message.
    max_message_bytes: usize,
    /// Bytes of a frame header split across reads (at most 14).
    header: [u8; MAX_HEADER],
    /// How many bytes of `header` are filled; 0 when no header is pending.
    header_len: u8,
    /// The frame whose payload is still arriving, if any.
    partial: Option<Partial>,
    /// The payload of a control frame split across reads (at most 125 bytes),
    /// kept inline so a ping cut by a read boundary never allocates.
    control: [u8; MAX_CONTROL_PAYLOAD],
    /// The fragmented message in progress, if any.
    fragmented: Option<Fragmented>,
    /// The unmasked bytes of a text message that could not be lent straight
    /// from the input: a frame split across reads, or a fragmented message.
    /// Capacity 0 whenever no such message is in progress.
    text: Vec<u8>,
    /// How many leading bytes of `text` are known to be complete, valid UTF-8;
    /// validation resumes from there (re-reading at most 3 bytes of a
    /// character split across frames or reads).
    text_valid: usize,
    /// Raw input left over after the callback asked to stop, to be decoded by
    /// the next `feed`. Capacity 0 whenever empty.
    pending: Vec<u8>,
    /// Set once a close frame has been delivered: later bytes are ignored.
    closed: bool,
    /// Set once a violation has been found: the decoder refuses further input.
    failed: Option<Violation>,
}

impl Decoder {
    /// A decoder for a new connection. `max_message_bytes` bounds both a single
    /// frame's payload and a reassembled message (protocol v1: 64 KiB); larger
    /// ones are refused with 1009 as soon as a header announces them.
    pub fn new(max_message_bytes: usize) -> Self {
        Decoder {
            max_message_bytes,
            header: [0; MAX_HEADER],
            header_len: 0,
            partial: None,
            control: [0; MAX_CONTROL_PAYLOAD],
            fragmented: None,
            text: Vec::new(),
            text_valid: 0,
            pending: Vec::new(),
            closed: false,
            failed: None,
        }
    }

    /// Decodes `input`, calling `on_event` for every complete message or
    /// control frame, in order.
    ///
    /// All of `input` is consumed: complete frames are unmasked in place (which
    /// is why the buffer is `&mut`) and lent to the callback; an incomplete
    /// tail is kept in the decoder until the next call. If the callback returns
    /// [`Flow::Stop`], decoding stops right after that event and the rest of
    /// `input` is copied into the decoder; call `feed` again (with more bytes,
    /// or with an empty slice) to resume.
    ///
    /// Returns the first protocol violation; the caller then sends a close
    /// frame with [`Violation::close_code`] and closes the connection.
    pub fn feed(
        &mut self,
        input: &mut [u8],
        on_event: &mut dyn FnMut(Event<'_>) -> Flow,
    ) -> Result<(), Violation> {
        if let Some(violation) = self.failed {
            return Err(violation);
        }
        let result = self.feed_inner(input, on_event);
        if let Err(violation) = result {
            self.failed = Some(violation);
            self.text = Vec::new();
            self.pending = Vec::new();
        }
        self.release_empty_buffers();
        result
    }

    /// Whether bytes kept after a [`Flow::Stop`] are waiting to be decoded:
    /// the caller should call `feed(&mut [], ..)` before reading more.
    pub fn has_pending_input(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether a close frame has been received (later bytes are ignored).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether nothing is in progress: no partial header, frame, fragmented
    /// message or pending input. A connection between messages is idle.
    pub fn is_idle(&self) -> bool {
        self.header_len == 0
            && self.partial.is_none()
            && self.fragmented.is_none()
            && self.pending.is_empty()
    }

    /// Heap bytes this decoder holds (buffer capacities), for memory
    /// accounting: 0 for an idle connection.
    pub fn heap_bytes(&self) -> usize {
        self.text.capacity() + self.pending.capacity()
    }

    fn feed_inner(
        &mut self,
        input: &mut [u8],
        on_event: &mut dyn FnMut(Event<'_>) -> Flow,
    ) -> Result<(), Violation> {
        if !self.pending.is_empty() {
            let mut pending = std::mem::take(&mut self.pending);
            if let Some(stopped_at) = self.decode(&mut pending, on_event)? {
                // Stopped again: keep what is left of the old bytes, then the new.
                pending.drain(..stopped_at);
                pending.extend_from_slice(input);
                self.pending = pending;
                return Ok(());
            }
        }
        if let Some(stopped_at) = self.decode(input, on_event)? {
            if let Some(rest) = input.get(stopped_at..) {
                self.pending.extend_from_slice(rest);
            }
        }
        Ok(())
    }

    /// Frees buffers that emptied, so an idle connection holds no heap memory.
    /// Done once per `feed` rather than after every message, so a burst of
    /// split messages in one read reuses one allocation.
    fn release_empty_buffers(&mut self) {
        if self.text.is_empty() && self.text.capacity() != 0 {
            self.text = Vec::new();
        }
        if self.pending.is_empty() && self.pending.capacity() != 0 {
            self.pending = Vec::new();
        }
    }

    /// Decodes `buf` until it is exhausted or the callback stops. Returns the
    /// offset just past the event that stopped, if one did; bytes from there
    /// on are untouched.
    fn decode(
        &mut self,
        buf: &mut [u8],
        on_event: &mut dyn FnMut(Event<'_>) -> Flow,
    ) -> Result<Option<usize>, Violation> {
        let mut pos = 0;
        loop {
            if self.closed {
                return Ok(None);
            }
            if let Some(partial) = self.partial {
                // Payload of a frame whose header is already parsed.
                let n = (partial.len - partial.done).min(buf.len() - pos);
                self.take_payload(partial, &mut buf[pos..pos + n])?;
                pos += n;
                let partial = Partial {
                    done: partial.done + n,
                    ..partial
                };
                if partial.done < partial.len {
                    self.partial = Some(partial);
                    return Ok(None);
                }
                self.partial = None;
                if self.finish_partial(partial, on_event)? == Flow::Stop {
                    return Ok(Some(pos));
                }
                continue;
            }
            if pos == buf.len() {
                return Ok(None);
            }
            let parsed = if self.header_len > 0 {
                // Complete a header carried over from an earlier read.
                let have = usize::from(self.header_len);
                let n = (MAX_HEADER - have).min(buf.len() - pos);
                self.header[have..have + n].copy_from_slice(&buf[pos..pos + n]);
                match parse_header(&self.header[..have + n])? {
                    None => {
                        // Still incomplete, so every byte taken belongs to it.
                        self.header_len = (have + n) as u8;
                        return Ok(None);
                    }
                    Some((header, len, header_size)) => {
                        self.header_len = 0;
                        pos += header_size - have;
                        (header, len)
                    }
                }
            } else {
                match parse_header(&buf[pos..])? {
                    None => {
                        // An incomplete header is shorter than 14 bytes.
                        let rest = &buf[pos..];
                        self.header[..rest.len()].copy_from_slice(rest);
                        self.header_len = rest.len() as u8;
                        return Ok(None);
                    }
                    Some((header, len, header_size)) => {
                        pos += header_size;
                        (header, len)
                    }
                }
            };
            let (header, len) = parsed;
            if self.begin_frame(&header, len, buf, &mut pos, on_event)? == Flow::Stop {
                return Ok(Some(pos));
            }
        }
    }

    /// Checks a frame header against RFC 6455 and the limits, then either
    /// handles the frame at once (its payload is whole in `buf` and needs no
    /// assembly: zero copy) or records it as the partial frame.
    fn begin_frame(
        &mut self,
        header: &FrameHeader,
        len: u64,
        buf: &mut [u8],
        pos: &mut usize,
        on_event: &mut dyn FnMut(Event<'_>) -> Flow,
    ) -> Result<Flow, Violation> {
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(Violation::ReservedBits);
        }
        let mask = header.mask.ok_or(Violation::Unmasked)?;
        if len >> 63 != 0 {
            return Err(Violation::LengthOverflow);
        }
        let fin = header.is_final;
        let (kind, len) = match header.opcode {
            OpCode::Control(control) => {
                if !fin {
                    return Err(Violation::FragmentedControl);
                }
                if len > MAX_CONTROL_PAYLOAD as u64 {
                    return Err(Violation::ControlTooLong);
                }
                (Kind::Control(control), len as usize)
            }
            OpCode::Data(Data::Text) | OpCode::Data(Data::Binary) => {
                if self.fragmented.is_some() {
                    return Err(Violation::InterleavedMessage);
                }
                let len = self.check_size(len, 0)?;
                let binary = header.opcode == OpCode::Data(Data::Binary);
                if !fin {
                    self.fragmented = Some(Fragmented { binary, len });
                }
                (if binary { Kind::Binary } else { Kind::Text }, len)
            }
            OpCode::Data(Data::Continue) => {
                let fragmented = self.fragmented.ok_or(Violation::UnexpectedContinuation)?;
                let len = self.check_size(len, fragmented.len)?;
                self.fragmented = Some(Fragmented {
                    len: fragmented.len + len,
                    ..fragmented
                });
                (
                    if fragmented.binary {
                        Kind::Binary
                    } else {
                        Kind::Text
                    },
                    len,
                )
            }
            OpCode::Data(Data::Reserved(_)) => return Err(Violation::ReservedOpcode),
        };
        let partial = Partial {
            kind,
            fin,
            mask,
            len,
            done: 0,
        };

        if header.opcode == OpCode::Data(Data::Binary) {
            // Report binary at once: the caller closes without reading it.
            self.partial = Some(partial);
            return Ok(on_event(Event::Binary));
        }

        let whole = buf.len() - *pos >= len;
        match kind {
            Kind::Text if whole && fin && self.fragmented.is_none() => {
                // A whole single-frame text message: unmask in place and lend.
                let payload = &mut buf[*pos..*pos + len];
                *pos += len;
                unmask(payload, mask, 0);
                let text = std::str::from_utf8(payload).map_err(|_| Violation::InvalidUtf8)?;
                Ok(on_event(Event::Text(text)))
            }
            Kind::Control(control) if whole => {
                let payload = &mut buf[*pos..*pos + len];
                *pos += len;
                unmask(payload, mask, 0);
                self.control_event(control, payload, on_event)
            }
            Kind::Text => {
                // Assembled in `text`. A message's first frame reserves exactly
                // what its header announces; continuations grow the buffer
                // geometrically, so a flood of tiny fragments stays linear.
                self.reserve_text(len);
                self.partial = Some(partial);
                Ok(Flow::Continue)
            }
            _ => {
                self.partial = Some(partial);
                Ok(Flow::Continue)
            }
        }
    }

    /// Makes room for `additional` more bytes of text: exactly that for a
    /// message's first bytes, geometric growth after, but never past the
    /// message limit (the message's total was checked against it), so a
    /// message in progress holds at most the limit.
    fn reserve_text(&mut self, additional: usize) {
        let needed = self.text.len() + additional;
        if needed > self.text.capacity() {
            let target = (self.text.capacity() * 2)
                .max(needed)
                .min(self.max_message_bytes.max(needed));
            self.text.reserve_exact(target - self.text.len());
        }
    }

    /// Checks a frame's announced length against the limit, for a message that
    /// already has `so_far` bytes, before anything is buffered.
    fn check_size(&self, len: u64, so_far: usize) -> Result<usize, Violation> {
        let max = self.max_message_bytes as u64;
        if len > max || so_far as u64 + len > max {
            return Err(Violation::TooBig);
        }
        Ok(len as usize)
    }

    /// Takes the next chunk of the partial frame's payload.
    fn take_payload(&mut self, partial: Partial, chunk: &mut [u8]) -> Result<(), Violation> {
        match partial.kind {
            Kind::Binary => Ok(()),
            Kind::Text => {
                unmask(chunk, partial.mask, partial.done);
                // The reservation made at the header is gone if the read
                // ended right after it (an empty buffer is freed): grow with
                // what arrives, geometrically but never past the limit, so a
                // header followed by a trickle of bytes holds about what
                // arrived, not the whole frame it announced.
                self.reserve_text(chunk.len());
                self.text.extend_from_slice(chunk);
                self.check_text_prefix()
            }
            Kind::Control(_) => {
                unmask(chunk, partial.mask, partial.done);
                self.control[partial.done..partial.done + chunk.len()].copy_from_slice(chunk);
                Ok(())
            }
        }
    }

    /// Validates the text received since the last check, failing as soon as
    /// the bytes so far cannot start any valid UTF-8 string (fail fast, §8.1),
    /// while a character cut at the end is merely left for the next bytes.
    fn check_text_prefix(&mut self) -> Result<(), Violation> {
        let unchecked = &self.text[self.text_valid..];
        match std::str::from_utf8(unchecked) {
            Ok(_) => self.text_valid = self.text.len(),
            Err(error) => {
                if error.error_len().is_some() {
                    return Err(Violation::InvalidUtf8);
                }
                self.text_valid += error.valid_up_to();
            }
        }
        Ok(())
    }

    /// Handles a frame whose payload has fully arrived across reads.
    fn finish_partial(
        &mut self,
        partial: Partial,
        on_event: &mut dyn FnMut(Event<'_>) -> Flow,
    ) -> Result<Flow, Violation> {
        match partial.kind {
            Kind::Binary => {
                if partial.fin {
                    self.fragmented = None;
                }
                Ok(Flow::Continue)
            }
            Kind::Text => {
                if !partial.fin {
                    return Ok(Flow::Continue);
                }
                self.fragmented = None;
                if self.text_valid != self.text.len() {
                    // The message ends inside a character.
                    return Err(Violation::InvalidUtf8);
                }
                // Already validated piecewise; checked again rather than
                // trusted with `unsafe`: this path only runs for messages that
                // were split or fragmented.
                let flow = match std::str::from_utf8(&self.text) {
                    Ok(text) => on_event(Event::Text(text)),
                    Err(_) => return Err(Violation::InvalidUtf8),
                };
                self.text.clear();
                self.text_valid = 0;
                Ok(flow)
            }
            Kind::Control(control) => {
                let payload = self.control;
                self.control_event(control, &payload[..partial.len], on_event)
            }
        }
    }

    /// Delivers a complete control frame.
    fn control_event(
        &mut self,
        control: Control,
        payload: &[u8],
        on_event: &mut dyn FnMut(Event<'_>) -> Flow,
    ) -> Result<Flow, Violation> {
        match control {
            Control::Ping => Ok(on_event(Event::Ping(payload))),
            Control::Pong => Ok(on_event(Event::Pong)),
            Control::Close => {
                let event = parse_close(payload)?;
                self.closed = true;
                // Nothing after a close frame is decoded, so there is nothing
                // to keep: the callback's answer no longer matters.
                on_event(event);
                Ok(Flow::Continue)
            }
            Control::Reserved(_) => Err(Violation::ReservedOpcode),
        }
    }
}

/// Parses a frame header at the start of `bytes` with tungstenite's parser.
/// Returns the header, the announced payload length and the header's size, or
/// `None` when `bytes` holds only part of a header.
fn parse_header(bytes: &[u8]) -> Result<Option<(FrameHeader, u64, usize)>, Violation> {
    let mut cursor = Cursor::new(bytes);
    match FrameHeader::parse(&mut cursor) {
        Ok(Some((header, len))) => Ok(Some((header, len, cursor.position() as usize))),
        Ok(None) => Ok(None),
        // Reading from a slice cannot fail, so the only error is an opcode
        // RFC 6455 leaves undefined.
        Err(_) => Err(Violation::ReservedOpcode),
    }
}

/// Reads a close frame's payload: nothing, or a 2-byte code and a UTF-8 reason.
fn parse_close(payload: &[u8]) -> Result<Event<'_>, Violation> {
    match payload {
        [] => Ok(Event::Close(None)),
        [_] => Err(Violation::CloseTruncated),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !close_code_allowed(code) {
                return Err(Violation::InvalidCloseCode(code));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| Violation::InvalidCloseReason)?;
            Ok(Event::Close(Some((code, reason))))
        }
    }
}

/// Unmasks (or masks: XOR is its own inverse) `buf` in place, `offset` being
/// the position of `buf[0]` in the frame's payload, so a payload cut across
/// reads is unmasked piece by piece with the right mask bytes.
///
/// Eight bytes at a time with the mask repeated into a `u64`; the loop has no
/// dependency between iterations, so the compiler also vectorizes it.
pub fn unmask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let shift = offset % 4;
    let mask = [
        mask[shift],
        mask[(shift + 1) % 4],
        mask[(shift + 2) % 4],
        mask[(shift + 3) % 4],
    ];
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_ne_bytes(word) ^ wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    // Chunks are a multiple of 4 bytes long, so the tail starts at mask[0].
    for (byte, mask) in chunks.into_remainder().iter_mut().zip(mask.iter().cycle()) {
        *byte ^= mask;
    }
}

// ---------------------------------------------------------------------------
// Encoding (server to client: unmasked)
// ---------------------------------------------------------------------------

/// Writes an unmasked, final frame header for `opcode` and `len` into `out`
/// (which must have room: [`MAX_SERVER_HEADER`] bytes always do) and returns
/// its size.
fn write_header(opcode: OpCode, len: usize, out: &mut [u8]) -> usize {
    let header = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    let size = header.len(len as u64);
    let mut target = &mut out[..size];
    header
        .format(len as u64, &mut target)
        .expect("a buffer of FrameHeader::len bytes holds the header");
    size
}

/// Encodes one complete unmasked frame (header and payload) into a `Bytes`.
fn encode(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut header = [0u8; MAX_SERVER_HEADER];
    let size = write_header(opcode, payload.len(), &mut header);
    let mut frame = BytesMut::with_capacity(size + payload.len());
    frame.put_slice(&header[..size]);
    frame.put_slice(payload);
    frame.freeze()
}

/// Builds one outgoing text frame whose payload is written in place, so the
/// frame is encoded once and its `Bytes` shared by every connection it goes to.
///
/// The builder reserves 10 bytes (the longest unmasked header) in front of the
/// payload; [`TextFrameBuilder::finish`] writes the real header right before
/// the payload and returns a view that starts there, without moving the
/// payload. Write JSON into it through [`std::io::Write`] (for example with
/// `serde_json::to_writer`). The payload must be UTF-8, as for any text frame.
#[derive(Debug)]
pub struct TextFrameBuilder {
    /// Headroom for the header, then the payload written so far.
    buf: BytesMut,
}

impl TextFrameBuilder {
    /// A builder with no room reserved for the payload (it grows as written).
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// A builder with room for a `payload_capacity`-byte payload, to avoid
    /// growing (and copying) while the payload is written.
    pub fn with_capacity(payload_capacity: usize) -> Self {
        let mut buf = BytesMut::with_capacity(MAX_SERVER_HEADER + payload_capacity);
        buf.put_bytes(0, MAX_SERVER_HEADER);
        TextFrameBuilder { buf }
    }

    /// The payload written so far.
    pub fn payload(&self) -> &[u8] {
        &self.buf[MAX_SERVER_HEADER..]
    }

    /// The payload's length so far.
    pub fn payload_len(&self) -> usize {
        self.buf.len() - MAX_SERVER_HEADER
    }

    /// Appends bytes to the payload.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Writes the header in front of the payload and returns the whole frame.
    /// The payload is not copied; use [`frame_payload`] to get it back as a
    /// `Bytes` slice of the same buffer.
    pub fn finish(mut self) -> Bytes {
        let len = self.payload_len();
        let mut header = [0u8; MAX_SERVER_HEADER];
        let size = write_header(OpCode::Data(Data::Text), len, &mut header);
        let start = MAX_SERVER_HEADER - size;
        self.buf[start..MAX_SERVER_HEADER].copy_from_slice(&header[..size]);
        // Moves the view's start, not the bytes.
        self.buf.advance(start);
        self.buf.freeze()
    }
}

impl Default for TextFrameBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl io::Write for TextFrameBuilder {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where the payload starts in a frame built by this module (a server frame),
/// from its header: 2, 4 or 10 bytes (plus 4 if it were masked). A frame too
/// short to hold its header gives its own length, so slicing never panics.
pub fn payload_offset(frame: &[u8]) -> usize {
    let Some(&second) = frame.get(1) else {
        return frame.len();
    };
    let extended = match second & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let masked = if second & 0x80 != 0 { 4 } else { 0 };
    (2 + extended + masked).min(frame.len())
}

/// The payload (the JSON) of a frame built by this module, sharing its buffer:
/// for logging, storing or re-framing what was sent without copying it.
pub fn frame_payload(frame: &Bytes) -> Bytes {
    frame.slice(payload_offset(frame)..)
}

/// A text frame with `payload` (which must be UTF-8), copied once. Use
/// [`TextFrameBuilder`] to write the payload in place instead.
pub fn text_frame(payload: &[u8]) -> Bytes {
    encode(OpCode::Data(Data::Text), payload)
}

/// A close frame with `code` and `reason`. The reason is cut, at a character
/// boundary, to the 123 bytes a control frame leaves after the code.
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    encode(OpCode::Control(Control::Close), &payload[..2 + end])
}

/// A pong answering a ping with `payload` (cut to 125 bytes, the control
/// frame limit; a valid ping never carries more).
pub fn pong_frame(payload: &[u8]) -> Bytes {
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
    encode(OpCode::Control(Control::Pong), payload)
}

/// A ping with `payload` (cut to 125 bytes), for keepalive and liveness checks.
pub fn ping_frame(payload: &[u8]) -> Bytes {
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
    encode(OpCode::Control(Control::Ping), payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A client frame, built by hand (not with the code under test): FIN and
    /// opcode, masked payload with the shortest length form.
    fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        frame_with(opcode | if fin { 0x80 } else { 0 }, Some(MASK), payload)
    }

    /// A frame with an arbitrary first byte and optional mask.
    fn frame_with(first: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        let mask_bit = if mask.is_some() { 0x80 } else { 0 };
        let len = payload.len();
        if len < 126 {
            out.push(mask_bit | len as u8);
        } else if len <= 0xFFFF {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        match mask {
            Some(mask) => {
                out.extend_from_slice(&mask);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
            }
            None => out.extend_from_slice(payload),
        }
        out
    }

    fn text(payload: &str) -> Vec<u8> {
        frame(0x1, true, payload.as_bytes())
    }

    fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        payload
    }

    /// An owned copy of an event, to compare runs.
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
            Event::Close(close) => Got::Close(close.map(|(code, r)| (code, r.to_owned()))),
        }
    }

    /// Feeds `chunks` one after the other, collecting events; stops at the
    /// first violation.
    fn run(decoder: &mut Decoder, chunks: &[&[u8]]) -> (Vec<Got>, Result<(), Violation>) {
        let mut got = Vec::new();
        for chunk in chunks {
            let mut chunk = chunk.to_vec();
            let result = decoder.feed(&mut chunk, &mut |event| {
                got.push(own(event));
                Flow::Continue
            });
            if result.is_err() {
                return (got, result);
            }
        }
        (got, Ok(()))
    }

    fn decode_all(max: usize, bytes: &[u8]) -> (Vec<Got>, Result<(), Violation>) {
        run(&mut Decoder::new(max), &[bytes])
    }

    fn violation(max: usize, bytes: &[u8]) -> Violation {
        match decode_all(max, bytes).1 {
            Err(violation) => violation,
            Ok(()) => panic!("no violation"),
        }
    }

    /// A stream exercising every event kind, fragmentation, interleaved
    /// control frames and all three length forms.
    fn mixed_stream() -> (Vec<u8>, Vec<Got>) {
        let long: String = "ab€d".repeat(100); // 126+ bytes: 16-bit length
        let mut stream = Vec::new();
        stream.extend(text("hello"));
        stream.extend(text(""));
        stream.extend(frame(0x1, false, "frag".as_bytes()));
        stream.extend(frame(0x9, true, b"ping!"));
        stream.extend(frame(0x0, false, &"men\u{e9}".as_bytes()[..4]));
        stream.extend(frame(0x0, false, &"men\u{e9}".as_bytes()[4..]));
        stream.extend(frame(0x0, false, b""));
        stream.extend(frame(0xA, true, b"pong"));
        stream.extend(frame(0x0, true, "ted".as_bytes()));
        stream.extend(text(&long));
        stream.extend(frame(0x9, true, b""));
        stream.extend(frame(0x2, false, b"\x00\x01"));
        stream.extend(frame(0x0, true, b"\x02"));
        stream.extend(text("日本語"));
        stream.extend(frame(0x8, true, &close_payload(1000, b"bye")));
        let expected = vec![
            Got::Text("hello".into()),
            Got::Text(String::new()),
            Got::Ping(b"ping!".to_vec()),
            Got::Pong,
            Got::Text("fragmen\u{e9}ted".into()),
            Got::Text(long),
            Got::Ping(Vec::new()),
            Got::Binary,
            Got::Text("日本語".into()),
            Got::Close(Some((1000, "bye".into()))),
        ];
        (stream, expected)
    }

    #[test]
    fn single_text_frame_is_lent_from_the_input() {
        let mut input = text("{\"type\":\"hello\"}");
        let range = input.as_ptr_range();
        let mut seen = 0;
        let mut decoder = Decoder::new(65536);
        decoder
            .feed(&mut input, &mut |event| {
                let Event::Text(text) = event else {
                    panic!("{event:?}")
                };
                assert_eq!(text, "{\"type\":\"hello\"}");
                // Zero copy: the str points into the input buffer.
                assert!(range.contains(&text.as_ptr()));
                seen += 1;
                Flow::Continue
            })
            .unwrap();
        assert_eq!(seen, 1);
        assert!(decoder.is_idle());
        assert_eq!(decoder.heap_bytes(), 0);
    }

    #[test]
    fn fragmented_text_is_reassembled() {
        let mut stream = frame(0x1, false, b"{\"type\":");
        stream.extend(frame(0x0, false, b"\"msg\","));
        stream.extend(frame(0x0, true, b"\"text\":\"hi\"}"));
        let (got, result) = decode_all(65536, &stream);
        result.unwrap();
        assert_eq!(
            got,
            vec![Got::Text("{\"type\":\"msg\",\"text\":\"hi\"}".into())]
        );
    }

    #[test]
    fn mixed_stream_whole() {
        let (stream, expected) = mixed_stream();
        let (got, result) = decode_all(65536, &stream);
        result.unwrap();
        assert_eq!(got, expected);
    }

    #[test]
    fn one_byte_at_a_time_gives_the_same_events() {
        let (stream, expected) = mixed_stream();
        let chunks: Vec<&[u8]> = stream.chunks(1).collect();
        let mut decoder = Decoder::new(65536);
        let (got, result) = run(&mut decoder, &chunks);
        result.unwrap();
        assert_eq!(got, expected);
        assert!(decoder.is_closed());
        assert_eq!(decoder.heap_bytes(), 0);
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let (stream, expected) = mixed_stream();
        for split in 0..=stream.len() {
            let (a, b) = stream.split_at(split);
            let (got, result) = run(&mut Decoder::new(65536), &[a, b]);
            result.unwrap();
            assert_eq!(got, expected, "split at {split}");
        }
    }

    #[test]
    fn every_pair_of_split_points_gives_the_same_events() {
        // Three pieces: covers a frame cut twice (header and payload, or
        // payload twice) for every frame of the stream.
        let (stream, expected) = mixed_stream();
        let step = 7; // keeps the quadratic loop fast while hitting every frame
        for first in (0..=stream.len()).step_by(step) {
            for second in first..=stream.len() {
                let (got, result) = run(
                    &mut Decoder::new(65536),
                    &[&stream[..first], &stream[first..second], &stream[second..]],
                );
                result.unwrap();
                assert_eq!(got, expected, "split at {first} and {second}");
            }
        }
    }

    #[test]
    fn ping_inside_a_fragmented_message_is_delivered_first() {
        let mut stream = frame(0x1, false, b"a");
        stream.extend(frame(0x9, true, b"p1"));
        stream.extend(frame(0x0, false, b"b"));
        stream.extend(frame(0xA, true, b""));
        stream.extend(frame(0x0, true, b"c"));
        let (got, result) = decode_all(65536, &stream);
        result.unwrap();
        assert_eq!(
            got,
            vec![
                Got::Ping(b"p1".to_vec()),
                Got::Pong,
                Got::Text("abc".into())
            ]
        );
    }

    #[test]
    fn stop_keeps_the_rest_and_resumes() {
        let (stream, expected) = mixed_stream();
        let mut decoder = Decoder::new(65536);
        let mut got = Vec::new();
        let mut input = stream.clone();
        // Stop after every event; resume with empty feeds.
        let mut feeds = 0;
        loop {
            decoder
                .feed(&mut input, &mut |event| {
                    got.push(own(event));
                    Flow::Stop
                })
                .unwrap();
            input.clear();
            feeds += 1;
            if !decoder.has_pending_input() {
                break;
            }
            assert!(feeds < 100);
        }
        assert_eq!(got, expected);
        assert_eq!(decoder.heap_bytes(), 0);
    }

    #[test]
    fn stop_then_more_bytes_keeps_order() {
        let (stream, expected) = mixed_stream();
        // Feed in 5-byte pieces, stopping after each event: pending input and
        // new bytes must be decoded in order.
        let mut decoder = Decoder::new(65536);
        let mut got = Vec::new();
        for chunk in stream.chunks(5) {
            let mut chunk = chunk.to_vec();
            decoder
                .feed(&mut chunk, &mut |event| {
                    got.push(own(event));
                    Flow::Stop
                })
                .unwrap();
        }
        while decoder.has_pending_input() {
            decoder
                .feed(&mut [], &mut |event| {
                    got.push(own(event));
                    Flow::Stop
                })
                .unwrap();
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn stop_on_binary_leaves_the_payload_unread() {
        let mut stream = frame(0x2, true, &[7; 40]);
        stream.extend(text("after"));
        let mut decoder = Decoder::new(65536);
        let mut got = Vec::new();
        decoder
            .feed(&mut stream, &mut |event| {
                got.push(own(event));
                Flow::Stop
            })
            .unwrap();
        assert_eq!(got, vec![Got::Binary]);
        assert!(decoder.has_pending_input());
        decoder
            .feed(&mut [], &mut |event| {
                got.push(own(event));
                Flow::Continue
            })
            .unwrap();
        assert_eq!(got, vec![Got::Binary, Got::Text("after".into())]);
    }

    #[test]
    fn binary_is_reported_once_at_its_first_frame() {
        let mut stream = frame(0x2, false, &[1; 10]);
        let mut decoder = Decoder::new(65536);
        let (got, result) = run(&mut decoder, &[&stream[..2]]);
        result.unwrap();
        assert!(got.is_empty(), "header incomplete: nothing yet");
        let (got, result) = run(&mut decoder, &[&stream[2..6]]);
        result.unwrap();
        assert_eq!(got, vec![Got::Binary], "reported before the payload");
        stream.clear();
        stream.extend(frame(0x0, false, &[2; 10]));
        stream.extend(frame(0x0, true, &[3; 10]));
        let (got, result) = run(&mut decoder, &[&[1; 10], &stream]);
        result.unwrap();
        assert!(got.is_empty());
        assert!(decoder.is_idle());
        assert_eq!(decoder.heap_bytes(), 0, "binary payloads are not buffered");
    }

    #[test]
    fn nothing_is_decoded_after_close() {
        let mut stream = frame(0x8, true, b"");
        stream.extend(text("late"));
        stream.extend(frame_with(0x81, None, b"not even masked"));
        let (got, result) = decode_all(65536, &stream);
        result.unwrap();
        assert_eq!(got, vec![Got::Close(None)]);
    }

    #[test]
    fn violations_and_their_close_codes() {
        let max = 1024;
        let cases: Vec<(&str, Vec<u8>, Violation, u16)> = vec![
            (
                "unmasked",
                frame_with(0x81, None, b"hi"),
                Violation::Unmasked,
                1002,
            ),
            (
                "rsv1",
                frame_with(0x81 | 0x40, Some(MASK), b"hi"),
                Violation::ReservedBits,
                1002,
            ),
            (
                "rsv2",
                frame_with(0x81 | 0x20, Some(MASK), b"hi"),
                Violation::ReservedBits,
                1002,
            ),
            (
                "rsv3",
                frame_with(0x81 | 0x10, Some(MASK), b"hi"),
                Violation::ReservedBits,
                1002,
            ),
            (
                "ping too long",
                frame(0x9, true, &[0; 126]),
                Violation::ControlTooLong,
                1002,
            ),
            (
                "close too long",
                frame(0x8, true, &close_payload(1000, &[b'x'; 124])),
                Violation::ControlTooLong,
                1002,
            ),
            (
                "fragmented ping",
                frame(0x9, false, b""),
                Violation::FragmentedControl,
                1002,
            ),
            (
                "continuation first",
                frame(0x0, true, b"x"),
                Violation::UnexpectedContinuation,
                1002,
            ),
            (
                "continuation after a complete message",
                [text("done"), frame(0x0, false, b"x")].concat(),
                Violation::UnexpectedContinuation,
                1002,
            ),
            (
                "text inside fragmented text",
                [frame(0x1, false, b"a"), text("b")].concat(),
                Violation::InterleavedMessage,
                1002,
            ),
            (
                "binary inside fragmented text",
                [frame(0x1, false, b"a"), frame(0x2, true, b"b")].concat(),
                Violation::InterleavedMessage,
                1002,
            ),
            (
                "text inside fragmented binary",
                [frame(0x2, false, b"a"), text("b")].concat(),
                Violation::InterleavedMessage,
                1002,
            ),
            (
                "frame too big",
                text(&"x".repeat(max + 1)),
                Violation::TooBig,
                1009,
            ),
            (
                "binary too big",
                frame(0x2, true, &vec![0; max + 1]),
                Violation::TooBig,
                1009,
            ),
            (
                "message too big",
                [
                    frame(0x1, false, &vec![b'x'; max / 2]),
                    frame(0x0, false, &vec![b'x'; max / 2]),
                    frame(0x0, true, b"x"),
                ]
                .concat(),
                Violation::TooBig,
                1009,
            ),
            (
                "invalid utf-8",
                frame(0x1, true, b"caf\xe9"),
                Violation::InvalidUtf8,
                1007,
            ),
            (
                "message ends inside a character",
                [frame(0x1, false, b"a"), frame(0x0, true, b"\xe2\x82")].concat(),
                Violation::InvalidUtf8,
                1007,
            ),
            (
                "surrogate",
                frame(0x1, true, b"\xed\xa0\x80"),
                Violation::InvalidUtf8,
                1007,
            ),
            (
                "close with 1 byte",
                frame(0x8, true, b"\x03"),
                Violation::CloseTruncated,
                1002,
            ),
            (
                "close code 1005",
                frame(0x8, true, &close_payload(1005, b"")),
                Violation::InvalidCloseCode(1005),
                1002,
            ),
            (
                "close reason not utf-8",
                frame(0x8, true, &close_payload(1000, b"\xff")),
                Violation::InvalidCloseReason,
                1007,
            ),
        ];
        for (name, bytes, expected, code) in cases {
            let got = violation(max, &bytes);
            assert_eq!(got, expected, "{name}");
            assert_eq!(got.close_code(), code, "{name}");
            // Also when the bytes arrive one at a time.
            let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(
                run(&mut Decoder::new(max), &chunks).1,
                Err(expected),
                "{name}, 1 byte at a time"
            );
        }
    }

    #[test]
    fn reserved_opcodes_are_protocol_errors() {
        for opcode in (3..=7).chain(0xB..=0xF) {
            let bytes = frame(opcode, true, b"x");
            let got = violation(1024, &bytes);
            assert_eq!(got, Violation::ReservedOpcode, "opcode {opcode:#x}");
            assert_eq!(got.close_code(), 1002);
        }
    }

    #[test]
    fn a_spent_decoder_keeps_failing() {
        let mut decoder = Decoder::new(1024);
        let (_, result) = run(&mut decoder, &[&frame_with(0x81, None, b"x")]);
        assert_eq!(result, Err(Violation::Unmasked));
        let (got, result) = run(&mut decoder, &[&text("fine")]);
        assert!(got.is_empty());
        assert_eq!(result, Err(Violation::Unmasked));
        assert_eq!(decoder.heap_bytes(), 0);
    }

    #[test]
    fn invalid_utf8_fails_fast_across_fragments() {
        // "\xf4" is a valid start; "\x90" after it would be above U+10FFFF.
        let mut decoder = Decoder::new(65536);
        let (got, result) = run(&mut decoder, &[&frame(0x1, false, b"ok \xf4")]);
        result.unwrap();
        assert!(got.is_empty());
        let (_, result) = run(&mut decoder, &[&frame(0x0, false, b"\x90\x80\x80")]);
        assert_eq!(
            result,
            Err(Violation::InvalidUtf8),
            "before the final fragment"
        );

        // An invalid byte in a first fragment fails before any continuation.
        let (_, result) = decode_all(65536, &frame(0x1, false, b"\xc0\xaf"));
        assert_eq!(result, Err(Violation::InvalidUtf8));

        // Within one frame split across reads, too: the payload's first half
        // is already invalid, the second half never arrives.
        let bytes = frame(0x1, true, b"abc\xffdefghijklmnop");
        let (_, result) = run(&mut Decoder::new(65536), &[&bytes[..10]]);
        assert_eq!(result, Err(Violation::InvalidUtf8));
    }

    #[test]
    fn valid_characters_split_across_fragments_and_reads() {
        let message = "€𝄞ü日";
        let bytes = message.as_bytes();
        for cut in 0..=bytes.len() {
            let mut stream = frame(0x1, false, &bytes[..cut]);
            stream.extend(frame(0x0, true, &bytes[cut..]));
            let (got, result) = decode_all(65536, &stream);
            result.unwrap();
            assert_eq!(got, vec![Got::Text(message.into())], "cut at {cut}");
        }
    }

    #[test]
    fn sixteen_and_sixty_four_bit_lengths() {
        let medium = "m".repeat(65535);
        let large = "L".repeat(70_000);
        let mut stream = text(&medium);
        assert_eq!(stream[1] & 0x7F, 126);
        let large_frame = text(&large);
        assert_eq!(large_frame[1] & 0x7F, 127);
        stream.extend(large_frame);
        let (got, result) = decode_all(100_000, &stream);
        result.unwrap();
        assert_eq!(
            got,
            vec![Got::Text(medium.clone()), Got::Text(large.clone())]
        );

        // The same split into 4 KiB reads: assembled, then freed.
        let chunks: Vec<&[u8]> = stream.chunks(4096).collect();
        let mut decoder = Decoder::new(100_000);
        let (got, result) = run(&mut decoder, &chunks);
        result.unwrap();
        assert_eq!(got, vec![Got::Text(medium), Got::Text(large)]);
        assert_eq!(decoder.heap_bytes(), 0);
    }

    #[test]
    fn sixty_four_bit_length_with_top_bit_is_refused() {
        let mut bytes = vec![0x81, 0x80 | 127];
        bytes.extend_from_slice(&(1u64 << 63).to_be_bytes());
        bytes.extend_from_slice(&MASK);
        let got = violation(usize::MAX, &bytes);
        assert_eq!(got, Violation::LengthOverflow);
        assert_eq!(got.close_code(), 1002);
        // Top bit clear but huge: too big, not a protocol error.
        let mut bytes = vec![0x81, 0x80 | 127];
        bytes.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
        bytes.extend_from_slice(&MASK);
        assert_eq!(violation(65536, &bytes), Violation::TooBig);
    }

    #[test]
    fn size_limit_is_checked_on_the_header_before_the_payload() {
        // Only the 14-byte header of a 1 MiB frame arrives.
        let mut header = vec![0x81, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 20).to_be_bytes());
        header.extend_from_slice(&MASK);
        let mut decoder = Decoder::new(65536);
        let (_, result) = run(&mut decoder, &[&header]);
        assert_eq!(result, Err(Violation::TooBig));
        assert_eq!(decoder.heap_bytes(), 0, "nothing reserved for the claim");

        // A message whose next fragment would pass the limit: refused on that
        // fragment's header, with only the first fragment buffered.
        let mut decoder = Decoder::new(100);
        let first = frame(0x1, false, &[b'a'; 60]);
        let second = frame(0x0, true, &[b'b'; 60]);
        let (_, result) = run(&mut decoder, &[&first[..30], &first[30..], &second[..8]]);
        assert_eq!(result, Err(Violation::TooBig));

        // Exactly at the limit is fine.
        let (got, result) = decode_all(100, &text(&"x".repeat(100)));
        result.unwrap();
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn close_code_table() {
        for code in 0..=u16::MAX {
            let expected = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            assert_eq!(close_code_allowed(code), expected, "{code}");
        }
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
        ] {
            assert!(close_code_allowed(code), "{code}");
        }
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!close_code_allowed(code), "{code}");
        }
        // Through the decoder: a valid code with a reason, an invalid one.
        let (got, result) = decode_all(
            1024,
            &frame(0x8, true, &close_payload(4999, "é".as_bytes())),
        );
        result.unwrap();
        assert_eq!(got, vec![Got::Close(Some((4999, "é".into())))]);
        for code in [999, 1004, 1006, 1015, 2999, 5000] {
            let got = violation(1024, &frame(0x8, true, &close_payload(code, b"")));
            assert_eq!(got, Violation::InvalidCloseCode(code));
            assert_eq!(got.close_code(), 1002);
        }
    }

    #[test]
    fn unmask_matches_a_naive_reference_at_every_offset() {
        let mask = [0xde, 0xad, 0xbe, 0xef];
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in [0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 63, 64, 65, 300] {
            for offset in 0..12 {
                let mut fast = data[..len].to_vec();
                unmask(&mut fast, mask, offset);
                let naive: Vec<u8> = data[..len]
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ mask[(i + offset) % 4])
                    .collect();
                assert_eq!(fast, naive, "len {len} offset {offset}");
            }
        }
        // Piecewise unmasking at every cut equals unmasking at once.
        for cut in 0..=data.len() {
            let mut whole = data.clone();
            unmask(&mut whole, mask, 0);
            let mut pieces = data.clone();
            let (a, b) = pieces.split_at_mut(cut);
            unmask(a, mask, 0);
            unmask(b, mask, cut);
            assert_eq!(pieces, whole, "cut {cut}");
        }
    }

    #[test]
    fn idle_decoder_holds_no_heap_memory() {
        let mut decoder = Decoder::new(65536);
        assert_eq!(decoder.heap_bytes(), 0);
        // A split text message, a fragmented one, a split ping, a stop/resume.
        let big = text(&"z".repeat(5000));
        let mut fragmented = frame(0x1, false, b"part one, ");
        fragmented.extend(frame(0x0, true, b"part two"));
        let ping = frame(0x9, true, b"are you there");
        let (got, result) = run(
            &mut decoder,
            &[
                &big[..1000],
                &big[1000..],
                &fragmented,
                &ping[..5],
                &ping[5..],
            ],
        );
        result.unwrap();
        assert_eq!(got.len(), 3);
        let mut input = [text("one"), text("two")].concat();
        decoder.feed(&mut input, &mut |_| Flow::Stop).unwrap();
        assert!(decoder.has_pending_input());
        assert!(decoder.heap_bytes() > 0, "paused input is kept");
        decoder.feed(&mut [], &mut |_| Flow::Continue).unwrap();

        assert!(decoder.is_idle());
        assert_eq!(decoder.text.capacity(), 0);
        assert_eq!(decoder.pending.capacity(), 0);
        assert_eq!(decoder.heap_bytes(), 0);
        assert!(
            std::mem::size_of::<Decoder>() <= 256,
            "{}",
            std::mem::size_of::<Decoder>()
        );
    }

    /// Regression (found by the `ws_decoder` fuzz target): a text frame
    /// whose header ended a read lost its reservation (the empty buffer was
    /// freed) and its payload, arriving in pieces, doubled the buffer up to
    /// the next power of two; continuations grew it geometrically too. Both
    /// went past the message limit, up to twice it.
    #[test]
    fn a_message_in_progress_never_holds_more_than_the_limit() {
        let limit = 61_997;
        // The header alone, then the payload a byte at a time.
        let whole = frame(0x1, true, &vec![b'a'; 55_867]);
        let mut decoder = Decoder::new(limit);
        let header = 4 + 4;
        let mut pieces: Vec<&[u8]> = vec![&whole[..header]];
        pieces.extend(whole[header..].chunks(1));
        let mut most = 0;
        let mut got = 0;
        for piece in pieces {
            let mut piece = piece.to_vec();
            decoder
                .feed(&mut piece, &mut |_| {
                    got += 1;
                    Flow::Continue
                })
                .unwrap();
            most = most.max(decoder.heap_bytes());
        }
        assert_eq!(got, 1);
        assert!(most <= limit, "held {most} bytes, limit {limit}");

        // A header, then a trickle: what is held follows what arrived.
        let mut decoder = Decoder::new(limit);
        let mut trickle = whole[..header + 3].to_vec();
        let (head, bytes) = trickle.split_at_mut(header);
        decoder.feed(head, &mut |_| Flow::Continue).unwrap();
        assert_eq!(decoder.heap_bytes(), 0, "a header alone holds nothing");
        for byte in bytes.chunks_mut(1) {
            decoder.feed(byte, &mut |_| Flow::Continue).unwrap();
        }
        assert!(decoder.heap_bytes() <= 16, "{}", decoder.heap_bytes());

        // Fragments: 40000 bytes, then 20000 in a continuation.
        let mut decoder = Decoder::new(limit);
        let mut most = 0;
        for piece in [
            frame(0x1, false, &vec![b'b'; 40_000]),
            frame(0x0, true, &vec![b'c'; 20_000]),
        ] {
            for chunk in piece.chunks(7_000) {
                let mut chunk = chunk.to_vec();
                decoder.feed(&mut chunk, &mut |_| Flow::Continue).unwrap();
                most = most.max(decoder.heap_bytes());
            }
        }
        assert!(most <= limit, "held {most} bytes, limit {limit}");
    }

    /// A small deterministic generator, so the randomized tests need no crate
    /// and fail the same way every run.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Feeds `stream` in random pieces, answering Stop at random, and resumes
    /// until all input is decoded.
    fn run_random(stream: &[u8], rng: &mut XorShift) -> (Vec<Got>, Result<(), Violation>) {
        let mut decoder = Decoder::new(65536);
        let mut got = Vec::new();
        let mut rest = stream;
        loop {
            let take = rng.below(40).min(rest.len());
            let mut chunk = rest[..take].to_vec();
            rest = &rest[take..];
            let stop_odds = rng.below(3);
            let mut coin = rng.next();
            let result = decoder.feed(&mut chunk, &mut |event| {
                got.push(own(event));
                coin = coin.rotate_left(1);
                if stop_odds > 0 && coin % 3 == 0 {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            });
            if result.is_err() {
                return (got, result);
            }
            if rest.is_empty() && !decoder.has_pending_input() {
                return (got, Ok(()));
            }
        }
    }

    #[test]
    fn random_pieces_and_pauses_give_the_same_events() {
        let (stream, expected) = mixed_stream();
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for round in 0..2000 {
            let (got, result) = run_random(&stream, &mut rng);
            result.unwrap();
            assert_eq!(got, expected, "round {round}");
        }
    }

    #[test]
    fn corrupted_streams_never_panic() {
        // Flip random bytes of a valid stream (headers included) and decode in
        // random pieces: any outcome but a panic is fine, and a violation is
        // sticky.
        let (stream, _) = mixed_stream();
        let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
        for _ in 0..5000 {
            let mut corrupted = stream.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(corrupted.len());
                corrupted[at] = rng.next() as u8;
            }
            let cut = rng.below(corrupted.len());
            corrupted.truncate(corrupted.len() - cut / 8);
            let _ = run_random(&corrupted, &mut rng);
        }
    }

    // -- encoding ---------------------------------------------------------

    /// Parses a server frame back with tungstenite's parser.
    fn parse_server_frame(frame: &[u8]) -> (FrameHeader, u64, usize) {
        let mut cursor = Cursor::new(frame);
        let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        (header, len, cursor.position() as usize)
    }

    #[test]
    fn text_frame_builder_all_length_forms_without_copy() {
        for (len, header_size) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let payload = "j".repeat(len);
            let mut builder = TextFrameBuilder::with_capacity(len);
            io::Write::write_all(&mut builder, payload.as_bytes()).unwrap();
            let before = builder.payload().as_ptr();
            let frame = builder.finish();
            let (header, parsed_len, size) = parse_server_frame(&frame);
            assert_eq!(header.opcode, OpCode::Data(Data::Text));
            assert!(header.is_final && header.mask.is_none());
            assert_eq!(parsed_len, len as u64);
            assert_eq!(size, header_size);
            assert_eq!(frame.len(), header_size + len);
            assert_eq!(payload_offset(&frame), header_size);
            let body = frame_payload(&frame);
            assert_eq!(&body[..], payload.as_bytes());
            assert_eq!(body.as_ptr(), before, "payload not moved");
            assert_eq!(frame, text_frame(payload.as_bytes()));
        }
    }

    #[test]
    fn text_frame_builder_with_serde_json() {
        let mut builder = TextFrameBuilder::new();
        serde_json::to_writer(&mut builder, &serde_json::json!({"type": "ack", "seq": 13}))
            .unwrap();
        let frame = builder.finish();
        let json = br#"{"seq":13,"type":"ack"}"#;
        assert_eq!(&frame[..2], &[0x81, json.len() as u8]);
        assert_eq!(&frame[2..], json);
    }

    #[test]
    fn control_frames() {
        let close = close_frame(1009, "too big");
        assert_eq!(&close[..], b"\x88\x09\x03\xf1too big");
        let long = "é".repeat(100); // 200 bytes: cut to 123 at a char boundary
        let close = close_frame(1000, &long);
        let (header, len, size) = parse_server_frame(&close);
        assert_eq!(header.opcode, OpCode::Control(Control::Close));
        assert!(len <= 125);
        assert_eq!(len, 2 + 122);
        assert!(std::str::from_utf8(&close[size + 2..]).is_ok());

        assert_eq!(&pong_frame(b"abc")[..], b"\x8a\x03abc");
        assert_eq!(&ping_frame(b"")[..], b"\x89\x00");
        assert_eq!(pong_frame(&[1; 200]).len(), 2 + 125);
        assert_eq!(payload_offset(b""), 0);
        assert_eq!(payload_offset(b"\x81"), 1);
        assert_eq!(payload_offset(b"\x81\x7e\x00"), 3);
    }
}
