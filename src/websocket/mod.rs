//! The WebSocket layer, sans IO: the HTTP upgrade and the frame codec, as
//! plain functions over byte buffers. The connection task owns the socket and
//! the timers; this module only turns bytes into events and events into bytes.
//!
//! # Why not tungstenite's `WebSocket`
//!
//! The gateway's targets are at most 8 KiB of memory per idle connection with
//! 100k connections per server, and 100k+ messages per second. tungstenite's
//! message layer (and async-tungstenite over it) keeps a read buffer and a
//! write buffer in every connection, zero-fills its read buffer before every
//! read, copies each payload into an owned `Message`, and encodes every
//! outgoing message separately for every connection. All of that is paid per
//! connection or per message. So we keep from tungstenite only what carries no
//! state: the frame header parser and formatter, the opcode and close code
//! types, and the `Sec-WebSocket-Accept` derivation; `httparse` reads the
//! request head.
//!
//! # Where bytes live, and where they are copied
//!
//! - The connection task reads from the socket into a scratch buffer owned by
//!   its shard, shared by every connection of that shard.
//! - [`Decoder::feed`] parses frames in that buffer, unmasks them in place and
//!   lends each complete text message to a callback as `&str`. A frame that is
//!   whole in one read is never copied.
//! - Copied into the decoder: the tail a read cuts (up to 14 header bytes and
//!   125 control-frame bytes, inline; the text of a split or fragmented
//!   message, in a `Vec` reserved from the frame header and freed when the
//!   message is delivered), and the unread input when the callback pauses
//!   decoding with [`Flow::Stop`].
//! - Limits are checked on headers, before any payload is stored: the decoder
//!   never allocates what a header merely claims beyond the configured limit.
//! - An idle connection's decoder holds no heap memory at all (its buffers are
//!   freed as they empty), only its inline state (256 bytes on a 64-bit target).
//! - Outgoing: [`TextFrameBuilder`] writes one frame's JSON payload after room
//!   for the header, then puts the header in front of it, and gives a
//!   [`bytes::Bytes`] that every recipient's connection shares: a frame fanned
//!   out to many connections is encoded once and never copied.
//!
//! Protocol v1 carries text only: binary messages are reported, never
//! buffered, and the caller closes with 1003. No extension or subprotocol is
//! negotiated.

pub mod codec;
pub mod handshake;

pub use codec::{
    close_code_allowed, close_frame, frame_payload, payload_offset, ping_frame, pong_frame,
    text_frame, unmask, Decoder, Event, Flow, TextFrameBuilder, Violation, MAX_CONTROL_PAYLOAD,
};
pub use handshake::{accept_upgrade, parse_request, response, HttpError, RequestHead, MAX_HEADERS};
