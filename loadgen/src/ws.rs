//! A small WebSocket client codec (RFC 6455), hand-rolled for memory.
//!
//! Why not tungstenite's `WebSocket`: it keeps a read buffer, a write buffer
//! and a message assembly buffer per connection, and zero-fills its read
//! buffer before every read. The load generator holds 100,000 connections
//! on one or two threads, and the gateway it measures is meant to cost at
//! most 8 KiB per connection, so the generator must cost less than that
//! itself. Here, as in the gateway:
//!
//! - reads go into one scratch buffer per thread, and [`Decoder::feed`]
//!   parses server frames where they lie in it, lending each whole message
//!   to a callback without copying; only a frame cut short by the end of a
//!   read is copied into the connection's own [`Decoder`], whose buffer is
//!   freed once that frame is complete, so an idle connection holds no
//!   read buffer at all;
//! - client frames are written into the connection's outgoing `Vec` by a
//!   [`FrameWriter`], which leaves room for the header, lets the caller
//!   serialise the payload in place, then writes the header and masks the
//!   payload in place (clients must mask every frame; servers never do).
//!
//! The HTTP upgrade is written by hand ([`upgrade_request`]) and its answer
//! checked with `httparse` and tungstenite's `derive_accept_key`.

use std::fmt;

/// The opcodes of RFC 6455 §5.2 that protocol v1 and its peers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpCode {
    /// A continuation of a fragmented message.
    Continuation,
    /// A UTF-8 text message (protocol v1 uses only these).
    Text,
    /// A binary message (MQTT over WebSocket uses these).
    Binary,
    /// Close.
    Close,
    /// Ping.
    Ping,
    /// Pong.
    Pong,
}

impl OpCode {
    /// The 4-bit opcode.
    pub fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// The opcode of these 4 bits, if RFC 6455 defines one.
    pub fn from_bits(bits: u8) -> Option<OpCode> {
        Some(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    /// Close, ping and pong.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// The longest client frame header: 2 bytes, a 64-bit length, a 4-byte mask.
pub const MAX_CLIENT_HEADER: usize = 14;

/// XORs `data` with the 4-byte `mask`, starting at mask byte 0.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let wide = u64::from(word) | (u64::from(word) << 32);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes(chunk.try_into().expect("8 bytes")) ^ wide;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    // Whole chunks are multiples of 4, so the tail starts at mask byte 0.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Builds one masked client frame at the end of a `Vec`: the payload is
/// written in place, then [`FrameWriter::finish`] puts the header in front
/// of it and masks it.
pub struct FrameWriter<'a> {
    /// The connection's outgoing bytes.
    out: &'a mut Vec<u8>,
    /// Where this frame starts in `out`.
    start: usize,
    /// The frame's opcode.
    opcode: OpCode,
}

impl<'a> FrameWriter<'a> {
    /// Starts a frame at the end of `out`.
    pub fn begin(out: &'a mut Vec<u8>, opcode: OpCode) -> Self {
        let start = out.len();
        out.extend_from_slice(&[0u8; MAX_CLIENT_HEADER]);
        FrameWriter { out, start, opcode }
    }

    /// Where the payload goes.
    pub fn payload(&mut self) -> &mut Vec<u8> {
        self.out
    }

    /// Writes the header (FIN set), moves the payload up against it and
    /// masks it with `mask`. Returns the frame's length on the wire.
    pub fn finish(self, mask: [u8; 4]) -> usize {
        let payload_start = self.start + MAX_CLIENT_HEADER;
        let len = self.out.len() - payload_start;
        let mut header = [0u8; MAX_CLIENT_HEADER];
        header[0] = 0x80 | self.opcode.bits();
        let mut h = 2;
        if len < 126 {
            header[1] = 0x80 | len as u8;
        } else if len <= usize::from(u16::MAX) {
            header[1] = 0x80 | 126;
            header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            h = 4;
        } else {
            header[1] = 0x80 | 127;
            header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            h = 10;
        }
        header[h..h + 4].copy_from_slice(&mask);
        h += 4;
        let frame_start = payload_start - h;
        self.out[frame_start..payload_start].copy_from_slice(&header[..h]);
        apply_mask(&mut self.out[payload_start..], mask);
        // Close the gap left in front of the header by the short header.
        if frame_start > self.start {
            self.out.copy_within(frame_start.., self.start);
            self.out.truncate(self.start + h + len);
        }
        h + len
    }
}

/// Appends one whole masked frame with `payload`.
pub fn write_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], mask: [u8; 4]) -> usize {
    let mut w = FrameWriter::begin(out, opcode);
    w.payload().extend_from_slice(payload);
    w.finish(mask)
}

/// Appends a masked close frame with `code` (and no reason).
pub fn write_close(out: &mut Vec<u8>, code: u16, mask: [u8; 4]) -> usize {
    write_frame(out, OpCode::Close, &code.to_be_bytes(), mask)
}

/// One complete message or control frame from the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A text message (reassembled if it was fragmented). Not yet checked
    /// to be UTF-8: the JSON parser that reads it does that.
    Text(&'a [u8]),
    /// A binary message.
    Binary(&'a [u8]),
    /// A ping with its payload: answer with a pong carrying it.
    Ping(&'a [u8]),
    /// A pong.
    Pong,
    /// A close frame, with its status code if it had one.
    Close(Option<u16>),
}

/// The server broke RFC 6455: the connection is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A masked frame: servers must not mask (§5.1).
    Masked,
    /// RSV bits set without an extension (§5.2).
    ReservedBits,
    /// An opcode RFC 6455 leaves undefined.
    ReservedOpcode(u8),
    /// A control frame longer than 125 bytes or fragmented (§5.5).
    BadControl,
    /// A continuation without a message in progress, or a new message
    /// inside one (§5.4).
    BadFragment,
    /// A message larger than the decoder's limit.
    TooBig,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Masked => f.write_str("masked frame from the server"),
            FrameError::ReservedBits => f.write_str("reserved bits set"),
            FrameError::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            FrameError::BadControl => f.write_str("control frame too long or fragmented"),
            FrameError::BadFragment => f.write_str("bad fragmentation"),
            FrameError::TooBig => f.write_str("message too big"),
        }
    }
}

impl std::error::Error for FrameError {}

/// What the first bytes of a frame say, once enough of them are there.
enum Head {
    /// More bytes are needed: at least this many in total.
    Need(usize),
    /// A complete header: its length, the payload's length, FIN, opcode bits.
    Full {
        /// Header bytes.
        header: usize,
        /// Payload bytes.
        payload: usize,
        /// FIN bit.
        fin: bool,
        /// Raw opcode bits.
        op: u8,
    },
}

/// Parses the header at the start of `buf` (a server frame: no mask).
fn parse_head(buf: &[u8], max: usize) -> Result<Head, FrameError> {
    if buf.len() < 2 {
        return Ok(Head::Need(2));
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    if b1 & 0x80 != 0 {
        return Err(FrameError::Masked);
    }
    let (header, payload) = match b1 & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(Head::Need(4));
            }
            (4, usize::from(u16::from_be_bytes([buf[2], buf[3]])))
        }
        127 => {
            if buf.len() < 10 {
                return Ok(Head::Need(10));
            }
            let len = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
            (10, usize::try_from(len).unwrap_or(usize::MAX))
        }
        n => (2, usize::from(n)),
    };
    if payload > max {
        return Err(FrameError::TooBig);
    }
    Ok(Head::Full {
        header,
        payload,
        fin: b0 & 0x80 != 0,
        op: b0 & 0x0f,
    })
}

/// Decodes server frames from successive reads.
///
/// It owns memory only while a frame is split across reads (`partial`) or
/// a message across frames (`message`); both are released when complete.
#[derive(Debug)]
pub struct Decoder {
    /// The start of a frame that the last read cut short.
    partial: Vec<u8>,
    /// A fragmented message in progress: its opcode and payload so far.
    message: Option<(OpCode, Vec<u8>)>,
    /// The largest message accepted.
    max_message: usize,
}

impl Decoder {
    /// A decoder that refuses messages over `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Decoder {
            partial: Vec::new(),
            message: None,
            max_message,
        }
    }

    /// Bytes held between reads (0 for an idle connection).
    pub fn buffered(&self) -> usize {
        self.partial.capacity() + self.message.as_ref().map_or(0, |(_, m)| m.capacity())
    }

    /// Decodes `input`, calling `on_frame` for every complete message and
    /// control frame, in order.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        on_frame: &mut dyn FnMut(Frame<'_>),
    ) -> Result<(), FrameError> {
        // First complete the frame a previous read cut short, taking from
        // `input` only the bytes that belong to it.
        if !self.partial.is_empty() {
            loop {
                let need = match parse_head(&self.partial, self.max_message)? {
                    Head::Need(n) => n,
                    Head::Full {
                        header, payload, ..
                    } => header + payload,
                };
                let missing = need - self.partial.len();
                let take = missing.min(input.len());
                self.partial.extend_from_slice(&input[..take]);
                input = &input[take..];
                if take < missing {
                    return Ok(());
                }
                if let Head::Full {
                    header,
                    payload,
                    fin,
                    op,
                } = parse_head(&self.partial, self.max_message)?
                {
                    if self.partial.len() == header + payload {
                        let frame = std::mem::take(&mut self.partial);
                        self.frame(fin, op, &frame[header..], on_frame)?;
                        break;
                    }
                }
            }
        }
        // Then whole frames straight from `input`.
        loop {
            match parse_head(input, self.max_message)? {
                Head::Full {
                    header,
                    payload,
                    fin,
                    op,
                } if input.len() >= header + payload => {
                    self.frame(fin, op, &input[header..header + payload], on_frame)?;
                    input = &input[header + payload..];
                }
                _ => {
                    if !input.is_empty() {
                        self.partial.extend_from_slice(input);
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Handles one whole frame.
    fn frame(
        &mut self,
        fin: bool,
        op: u8,
        payload: &[u8],
        on_frame: &mut dyn FnMut(Frame<'_>),
    ) -> Result<(), FrameError> {
        let opcode = OpCode::from_bits(op).ok_or(FrameError::ReservedOpcode(op))?;
        if opcode.is_control() {
            if !fin || payload.len() > 125 {
                return Err(FrameError::BadControl);
            }
            on_frame(match opcode {
                OpCode::Ping => Frame::Ping(payload),
                OpCode::Pong => Frame::Pong,
                _ => Frame::Close(
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])),
                ),
            });
            return Ok(());
        }
        match (opcode, self.message.as_mut()) {
            (OpCode::Continuation, None) => Err(FrameError::BadFragment),
            (OpCode::Continuation, Some((kind, body))) => {
                if body.len() + payload.len() > self.max_message {
                    return Err(FrameError::TooBig);
                }
                body.extend_from_slice(payload);
                if fin {
                    let kind = *kind;
                    let (_, body) = self.message.take().expect("in progress");
                    on_frame(data_frame(kind, &body));
                }
                Ok(())
            }
            (_, Some(_)) => Err(FrameError::BadFragment),
            (kind, None) => {
                if fin {
                    on_frame(data_frame(kind, payload));
                } else {
                    self.message = Some((kind, payload.to_vec()));
                }
                Ok(())
            }
        }
    }
}

fn data_frame(kind: OpCode, payload: &[u8]) -> Frame<'_> {
    if kind == OpCode::Binary {
        Frame::Binary(payload)
    } else {
        Frame::Text(payload)
    }
}

/// A `ws://host:port/path` target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `host:port`, as written (the `Host` header).
    pub authority: String,
    /// The address to connect to.
    pub addr: std::net::SocketAddr,
    /// The request path, e.g. `/v1/ws`.
    pub path: String,
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        use std::net::ToSocketAddrs;
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("{url}: only ws:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let with_port = if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("{url}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: no address"))?;
        Ok(Target {
            authority: authority.to_string(),
            addr,
            path: path.to_string(),
        })
    }
}

/// The HTTP/1.1 upgrade request for `target`, with `key` as
/// `Sec-WebSocket-Key` and an optional `Sec-WebSocket-Protocol`.
pub fn upgrade_request(target: &Target, key: &str, subprotocol: Option<&str>) -> Vec<u8> {
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
        target.path, target.authority
    );
    if let Some(p) = subprotocol {
        req.push_str("Sec-WebSocket-Protocol: ");
        req.push_str(p);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// Why an upgrade failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpgradeError {
    /// Not HTTP, or a malformed head.
    Malformed,
    /// The server answered with this status instead of 101.
    Status(u16),
    /// 101 without the right `Sec-WebSocket-Accept`.
    BadAccept,
}

impl fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpgradeError::Malformed => f.write_str("malformed HTTP response"),
            UpgradeError::Status(s) => write!(f, "HTTP {s} instead of 101"),
            UpgradeError::BadAccept => f.write_str("wrong Sec-WebSocket-Accept"),
        }
    }
}

/// Parses the server's answer to the upgrade. `Ok(None)`: the head is not
/// complete yet. `Ok(Some(n))`: upgraded, the head was `n` bytes (what
/// follows is WebSocket frames).
pub fn parse_upgrade_response(buf: &[u8], key: &str) -> Result<Option<usize>, UpgradeError> {
    let mut headers = [httparse::EMPTY_HEADER; 24];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(UpgradeError::Malformed),
    };
    let status = resp.code.ok_or(UpgradeError::Malformed)?;
    if status != 101 {
        return Err(UpgradeError::Status(status));
    }
    let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let accept = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|h| h.value);
    if accept != Some(expected.as_bytes()) {
        return Err(UpgradeError::BadAccept);
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unmasks a client frame the way a server would: (opcode, fin, payload).
    fn server_read(frame: &[u8]) -> (u8, bool, Vec<u8>, usize) {
        let fin = frame[0] & 0x80 != 0;
        let op = frame[0] & 0x0f;
        assert!(frame[1] & 0x80 != 0, "client frames are masked");
        let (len, mut at) = match frame[1] & 0x7f {
            126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        let mask: [u8; 4] = frame[at..at + 4].try_into().unwrap();
        at += 4;
        let mut payload = frame[at..at + len].to_vec();
        apply_mask(&mut payload, mask);
        (op, fin, payload, at + len)
    }

    /// An unmasked server frame.
    fn server_frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![(if fin { 0x80 } else { 0 }) | op];
        if payload.len() < 126 {
            f.push(payload.len() as u8);
        } else if payload.len() <= 65535 {
            f.push(126);
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        } else {
            f.push(127);
            f.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
        f.extend_from_slice(payload);
        f
    }

    fn decode_all(dec: &mut Decoder, input: &[u8]) -> Result<Vec<String>, FrameError> {
        let mut got = Vec::new();
        dec.feed(input, &mut |f| got.push(describe(f)))?;
        Ok(got)
    }

    fn describe(f: Frame<'_>) -> String {
        match f {
            Frame::Text(t) => format!("text:{}", String::from_utf8_lossy(t)),
            Frame::Binary(b) => format!("binary:{}", b.len()),
            Frame::Ping(p) => format!("ping:{}", String::from_utf8_lossy(p)),
            Frame::Pong => "pong".into(),
            Frame::Close(c) => format!("close:{c:?}"),
        }
    }

    #[test]
    fn masking_round_trips_at_every_length_and_alignment() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in 0..40 {
            let orig: Vec<u8> = (0..len as u8).collect();
            let mut data = orig.clone();
            apply_mask(&mut data, mask);
            for (i, (a, b)) in data.iter().zip(&orig).enumerate() {
                assert_eq!(*a, b ^ mask[i % 4], "len {len} byte {i}");
            }
            apply_mask(&mut data, mask);
            assert_eq!(data, orig);
        }
    }

    #[test]
    fn client_frames_have_the_three_length_forms_and_are_masked() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut out = b"prefix".to_vec();
            let n = write_frame(&mut out, OpCode::Text, &payload, [1, 2, 3, 4]);
            assert_eq!(out.len(), 6 + n, "len {len}");
            assert_eq!(&out[..6], b"prefix");
            let (op, fin, got, used) = server_read(&out[6..]);
            assert_eq!((op, fin, used), (1, true, n));
            assert_eq!(got, payload, "len {len}");
            let header = match len {
                0..=125 => 6,
                126..=65535 => 8,
                _ => 14,
            };
            assert_eq!(n, header + len);
        }
    }

    #[test]
    fn frames_built_in_place_match_frames_from_a_slice() {
        let mut a = Vec::new();
        let mut w = FrameWriter::begin(&mut a, OpCode::Text);
        w.payload().extend_from_slice(br#"{"type":"recv"}"#);
        w.finish([9, 8, 7, 6]);
        let mut b = Vec::new();
        write_frame(&mut b, OpCode::Text, br#"{"type":"recv"}"#, [9, 8, 7, 6]);
        assert_eq!(a, b);
        let mut c = Vec::new();
        write_close(&mut c, 1000, [0, 0, 0, 0]);
        assert_eq!(c, [0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]);
    }

    #[test]
    fn decodes_frames_split_at_every_byte() {
        let mut stream = Vec::new();
        stream.extend(server_frame(true, 1, b"hello"));
        stream.extend(server_frame(true, 9, b"p"));
        stream.extend(server_frame(true, 1, &vec![b'x'; 300]));
        stream.extend(server_frame(false, 1, b"frag"));
        stream.extend(server_frame(true, 10, b""));
        stream.extend(server_frame(true, 0, b"ment"));
        stream.extend(server_frame(true, 2, &[0u8; 70000]));
        stream.extend(server_frame(true, 8, &1001u16.to_be_bytes()));
        let want = vec![
            "text:hello".to_string(),
            "ping:p".into(),
            format!("text:{}", "x".repeat(300)),
            "pong".into(),
            "text:fragment".into(),
            "binary:70000".into(),
            "close:Some(1001)".into(),
        ];
        let mut whole = Decoder::new(1 << 20);
        assert_eq!(decode_all(&mut whole, &stream).unwrap(), want);
        assert_eq!(whole.buffered(), 0);
        for cut in [1, 2, 3, 5, 7, 11, 64, 1000] {
            let mut dec = Decoder::new(1 << 20);
            let mut got = Vec::new();
            for piece in stream.chunks(cut) {
                got.extend(decode_all(&mut dec, piece).unwrap());
            }
            assert_eq!(got, want, "pieces of {cut}");
            assert_eq!(dec.partial.len(), 0);
            assert!(dec.message.is_none());
        }
    }

    #[test]
    fn rejects_what_a_server_must_not_send() {
        let mut masked = server_frame(true, 1, b"x");
        masked[1] |= 0x80;
        assert_eq!(
            decode_all(&mut Decoder::new(100), &masked),
            Err(FrameError::Masked)
        );
        let mut rsv = server_frame(true, 1, b"x");
        rsv[0] |= 0x40;
        assert_eq!(
            decode_all(&mut Decoder::new(100), &rsv),
            Err(FrameError::ReservedBits)
        );
        assert_eq!(
            decode_all(&mut Decoder::new(100), &server_frame(true, 3, b"")),
            Err(FrameError::ReservedOpcode(3))
        );
        assert_eq!(
            decode_all(&mut Decoder::new(100), &server_frame(true, 0, b"x")),
            Err(FrameError::BadFragment)
        );
        assert_eq!(
            decode_all(&mut Decoder::new(100), &server_frame(false, 9, b"")),
            Err(FrameError::BadControl)
        );
        assert_eq!(
            decode_all(&mut Decoder::new(10), &server_frame(true, 1, &[b'a'; 11])),
            Err(FrameError::TooBig)
        );
        let mut two = server_frame(false, 1, b"a");
        two.extend(server_frame(true, 1, b"b"));
        assert_eq!(
            decode_all(&mut Decoder::new(100), &two),
            Err(FrameError::BadFragment)
        );
    }

    #[test]
    fn upgrade_request_and_response() {
        let target: Target = "ws://127.0.0.1:9000/v1/ws".parse().unwrap();
        assert_eq!(target.path, "/v1/ws");
        assert_eq!(target.addr.port(), 9000);
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let req = String::from_utf8(upgrade_request(&target, key, None)).unwrap();
        assert!(req.starts_with("GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n"));
        assert!(req.ends_with("Sec-WebSocket-Version: 13\r\n\r\n"));
        // RFC 6455 §1.3's example key and accept value.
        let ok =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x00";
        assert_eq!(
            parse_upgrade_response(ok, key),
            Ok(Some(ok.len() - 2)),
            "the head ends before the first frame"
        );
        assert_eq!(parse_upgrade_response(&ok[..20], key), Ok(None));
        assert_eq!(
            parse_upgrade_response(b"HTTP/1.1 403 Forbidden\r\n\r\n", key),
            Err(UpgradeError::Status(403))
        );
        let bad = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: nope\r\n\r\n";
        assert_eq!(
            parse_upgrade_response(bad, key),
            Err(UpgradeError::BadAccept)
        );
        assert!("http://x/".parse::<Target>().is_err());
    }
}
