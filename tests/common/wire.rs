//! Lower-level tools for protocol tests: a raw-TCP WebSocket client that
//! sends hand-built frames (unmasked, reserved opcodes, invalid UTF-8),
//! raw HTTP requests, hand-made JWTs, and a few frame helpers for
//! [`Client`]. Everything waits by reading, with the harness's timeouts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tungstenite::Message;

use super::{Client, Gateway, READ_TIMEOUT};

/// WebSocket opcodes.
pub mod op {
    /// Continuation.
    pub const CONT: u8 = 0x0;
    /// Text.
    pub const TEXT: u8 = 0x1;
    /// Binary.
    pub const BINARY: u8 = 0x2;
    /// Close.
    pub const CLOSE: u8 = 0x8;
    /// Ping.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xA;
}

/// One frame as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// FIN bit.
    pub fin: bool,
    /// Opcode.
    pub opcode: u8,
    /// Payload (the server never masks).
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// A close frame's status code (1005 if it has none).
    pub fn close_code(&self) -> u16 {
        assert_eq!(self.opcode, op::CLOSE, "not a close frame: {self:?}");
        match self.payload.as_slice() {
            [a, b, ..] => u16::from_be_bytes([*a, *b]),
            _ => 1005,
        }
    }

    /// A text frame's JSON.
    pub fn json(&self) -> Value {
        assert_eq!(self.opcode, op::TEXT, "not a text frame: {self:?}");
        serde_json::from_slice(&self.payload).expect("server sent JSON")
    }
}

/// A WebSocket client over a plain `TcpStream` that writes frames byte by
/// byte as the test builds them, and reads the server's frames without any
/// protocol logic of its own (no automatic pong or close reply).
pub struct RawWs {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read and not yet parsed.
    buf: Vec<u8>,
}

/// A fixed, valid `Sec-WebSocket-Key` (base64 of 16 bytes).
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

impl RawWs {
    /// Connects to `/v1/ws` and upgrades; panics unless the answer is 101.
    pub fn connect(addr: SocketAddr) -> RawWs {
        RawWs::connect_with(addr, &[])
    }

    /// Connects with extra request header lines (e.g. `"Origin: https://x"`).
    pub fn connect_with(addr: SocketAddr, extra: &[&str]) -> RawWs {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut raw = RawWs {
            stream,
            buf: Vec::new(),
        };
        let mut request = format!(
            "GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n"
        );
        for line in extra {
            request.push_str(line);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        raw.stream.write_all(request.as_bytes()).expect("write");
        let head = loop {
            if let Some(end) = find(&raw.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw.buf[..end]).to_string();
                raw.buf.drain(..end + 4);
                break head;
            }
            raw.fill();
        };
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        raw
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).expect("read");
        assert!(n > 0, "the server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// Writes one frame: `first` is the first header byte (FIN, RSV bits,
    /// opcode), `masked` whether to mask the payload as a client must.
    pub fn send_raw(&mut self, first: u8, payload: &[u8], masked: bool) {
        let frame = if masked {
            masked_frame(first, payload)
        } else {
            unmasked_frame(first, payload)
        };
        self.stream.write_all(&frame).expect("write frame");
    }

    /// Several final, masked text frames in one write (one TCP segment as
    /// far as the test can make it), so the gateway reads them together.
    pub fn send_texts(&mut self, texts: &[String]) {
        let mut all = Vec::new();
        for text in texts {
            all.extend_from_slice(&masked_frame(0x80 | op::TEXT, text.as_bytes()));
        }
        self.stream.write_all(&all).expect("write frames");
    }

    /// A final, masked frame of `opcode`.
    pub fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        self.send_raw(0x80 | opcode, payload, true);
    }

    /// A final, masked text frame.
    pub fn send_text(&mut self, text: &str) {
        self.send_frame(op::TEXT, text.as_bytes());
    }

    /// A JSON text frame.
    pub fn send(&mut self, value: Value) {
        self.send_text(&value.to_string());
    }

    /// The next frame from the server; panics on timeout or EOF.
    pub fn read_frame(&mut self) -> RawFrame {
        self.try_read_frame()
            .expect("the server closed the connection instead of sending a frame")
    }

    /// The next frame, or `None` at EOF (or a reset). Panics on timeout.
    pub fn try_read_frame(&mut self) -> Option<RawFrame> {
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    assert!(self.buf.is_empty(), "EOF inside a frame: {:?}", self.buf);
                    return None;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("no frame from the server: {e}"),
            }
        }
    }

    /// The next text frame as JSON (pings skipped).
    pub fn recv(&mut self) -> Value {
        loop {
            let frame = self.read_frame();
            match frame.opcode {
                op::PING | op::PONG => continue,
                _ => return frame.json(),
            }
        }
    }

    /// Reads until the server's close frame; returns its code. Then checks
    /// the server sends nothing after it (RFC 6455 §5.5.1): answers with a
    /// close frame and reads to EOF, panicking if any frame follows.
    pub fn expect_close(&mut self) -> u16 {
        let code = loop {
            let frame = self.read_frame();
            match frame.opcode {
                op::CLOSE => break frame.close_code(),
                op::PING | op::PONG => continue,
                op::TEXT => continue,
                other => panic!("unexpected opcode {other} before the close"),
            }
        };
        let mut reply = code.to_be_bytes().to_vec();
        if !(1000..=4999).contains(&code) || matches!(code, 1005 | 1006 | 1015) {
            reply.clear();
        }
        // The server may already have closed the socket: ignore write errors.
        // Then half-close: a gateway that stopped parsing after a protocol
        // violation still sees the end of the stream at once.
        let _ = self.stream.write_all(&close_frame_bytes(&reply));
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        if let Some(after) = self.try_read_frame() {
            panic!("the server sent a frame after its close frame: {after:?}");
        }
        code
    }
}

fn frame_bytes(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut frame = vec![first];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => frame.push(mask_bit | n as u8),
        n if n <= 0xFFFF => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => frame.extend_from_slice(payload),
    }
    frame
}

/// A client frame as RFC 6455 wants it: masked.
pub fn masked_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    frame_bytes(first, payload, Some([0x37, 0xfa, 0x21, 0x3d]))
}

/// A frame without a mask (a protocol error from a client).
pub fn unmasked_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    frame_bytes(first, payload, None)
}

impl RawWs {
    /// Like [`RawWs::expect_close`], but before answering the close, keeps
    /// reading for `wait` (a bounded negative check, at most a few hundred
    /// ms) as a slow client would: nothing may follow the close frame.
    pub fn expect_close_and_silence(&mut self, wait: Duration) -> u16 {
        let code = loop {
            let frame = self.read_frame();
            match frame.opcode {
                op::CLOSE => break frame.close_code(),
                op::TEXT | op::PING | op::PONG => continue,
                other => panic!("unexpected opcode {other} before the close"),
            }
        };
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(0) => {}
            Ok(n) => panic!(
                "the server sent {n} bytes after its close frame: {:?}",
                parse_frame(&chunk[..n]).map(|(f, _)| f)
            ),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::ConnectionReset
                ) => {}
            Err(e) => panic!("read failed: {e}"),
        }
        self.stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let _ = self
            .stream
            .write_all(&close_frame_bytes(&code.to_be_bytes()));
        code
    }
}

fn close_frame_bytes(payload: &[u8]) -> Vec<u8> {
    let key = [1u8, 2, 3, 4];
    let mut frame = vec![0x88, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses one server frame from the front of `buf`: (frame, bytes used).
fn parse_frame(buf: &[u8]) -> Option<(RawFrame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let fin = buf[0] & 0x80 != 0;
    let opcode = buf[0] & 0x0F;
    assert_eq!(buf[1] & 0x80, 0, "the server masked a frame");
    let (len, mut at) = match buf[1] & 0x7F {
        126 => {
            if buf.len() < 4 {
                return None;
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => {
            if buf.len() < 10 {
                return None;
            }
            (
                u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                10,
            )
        }
        n => (n as usize, 2),
    };
    if buf.len() < at + len {
        return None;
    }
    let payload = buf[at..at + len].to_vec();
    at += len;
    Some((
        RawFrame {
            fin,
            opcode,
            payload,
        },
        at,
    ))
}

/// Sends `request` verbatim to `addr` and reads the whole response:
/// (status, head, body).
pub fn http_request(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).expect("read response");
    let response = String::from_utf8_lossy(&response).to_string();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {response:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad response: {response}"));
    (status, head.to_string(), body.to_string())
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// base64url without padding, as JWTs use it.
pub fn b64url(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let symbols = chunk.len() + 1;
        for i in 0..symbols {
            out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A JWT signed with `secret` using `alg` (an HMAC algorithm of jsonwebtoken).
pub fn jwt(alg: jsonwebtoken::Algorithm, secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("sign")
}

/// A JWT with `"alg":"none"` and an empty signature.
pub fn jwt_none(claims: &Value) -> String {
    let header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64url(claims.to_string().as_bytes());
    format!("{header}.{payload}.")
}

/// Claims for `sub` in `tenant` with `role`, valid for an hour.
pub fn claims(tenant: &str, sub: &str, role: &str) -> Value {
    json!({"tenant": tenant, "sub": sub, "role": role, "exp": now_secs() + 3600})
}

impl Gateway {
    /// The demo tenant's HS256 key (the text of `<data dir>/demo.secret`).
    pub fn demo_secret(&self) -> Vec<u8> {
        std::fs::read_to_string(self.dir.join("demo.secret"))
            .expect("demo.secret")
            .trim()
            .as_bytes()
            .to_vec()
    }
}

impl Client {
    /// Reads frames up to and including the server's close frame; returns
    /// the text frames before it and the close code.
    pub fn recv_until_close(&mut self) -> (Vec<Value>, u16) {
        let mut frames = Vec::new();
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    frames.push(serde_json::from_str(&text).expect("server sent JSON"))
                }
                Ok(Message::Close(Some(frame))) => return (frames, u16::from(frame.code)),
                Ok(Message::Close(None)) => return (frames, 1005),
                Ok(_) => continue,
                Err(e) => panic!("no close frame: {e}"),
            }
        }
    }

    /// Closes politely and waits until the gateway has closed the socket.
    pub fn close_and_wait(mut self) {
        let _ = self.ws.close(None);
        loop {
            match self.ws.read() {
                Ok(_) => continue,
                Err(tungstenite::Error::ConnectionClosed)
                | Err(tungstenite::Error::AlreadyClosed) => return,
                Err(tungstenite::Error::Io(e))
                    if e.kind() == std::io::ErrorKind::ConnectionReset =>
                {
                    return
                }
                Err(e) => panic!("the gateway did not close: {e}"),
            }
        }
    }

    /// Asserts nothing but queue positions arrives within `wait`
    /// (a bounded negative check).
    pub fn expect_silence(&mut self, wait: Duration) {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            if let Some(v) = self.try_recv(left) {
                assert_eq!(v["type"], "queue", "expected nothing, got {v}");
            } else {
                return;
            }
        }
    }

    /// Asserts nothing at all arrives within `wait`.
    pub fn expect_nothing(&mut self, wait: Duration) {
        if let Some(v) = self.try_recv(wait) {
            panic!("expected nothing, got {v}");
        }
    }

    /// The next frame that is not a queue position.
    pub fn recv_skip_queue(&mut self) -> Value {
        loop {
            let v = self.recv();
            if v["type"] != "queue" {
                return v;
            }
        }
    }
}

/// Asserts `v` is an `error` frame with exactly `code` and `reference`
/// (`None`: no `ref` key), and a non-empty human-readable message.
#[track_caller]
pub fn assert_error(v: &Value, code: &str, reference: Option<&str>) {
    let mut expected = json!({"type": "error", "code": code, "message": v["message"].clone()});
    if let Some(r) = reference {
        expected["ref"] = json!(r);
    }
    assert_eq!(v, &expected, "error frame");
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "an error has a message: {v}"
    );
}

/// `v` without its `ts`, after checking `ts` is a plausible unix-ms time
/// (within the last 10 minutes, not in the future beyond a second).
#[track_caller]
pub fn no_ts(v: &Value) -> Value {
    let ts = v["ts"]
        .as_u64()
        .unwrap_or_else(|| panic!("no integer ts in {v}"));
    let now = now_ms();
    assert!(
        ts <= now + 1000 && ts + 600_000 >= now,
        "ts {ts} is not around now ({now}): {v}"
    );
    let mut v = v.clone();
    v.as_object_mut().unwrap().remove("ts");
    v
}
