//! Tools for the bad-input suites: a normal chat kept going beside the
//! hostile connections (proof that the gateway still serves everyone
//! else), health checks, raw sessions, and the gateway's memory.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::wire::{op, RawFrame, RawWs};

/// The mask key of the frames built here (any key will do; the gateway
/// must unmask with whatever the client chose).
pub const KEY: [u8; 4] = [0x9c, 0x01, 0x5e, 0xf3];

/// How a frame header writes its payload length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LenForm {
    /// The shortest form: 7 bits, else 16, else 64.
    Minimal,
    /// The 16-bit extended length (lengths up to 65535).
    Sixteen,
    /// The 64-bit extended length.
    SixtyFour,
}

/// A masked client frame header: `first` (FIN, RSV bits, opcode), the
/// payload length `len` in `form`, and the mask key [`KEY`].
pub fn header(first: u8, len: u64, form: LenForm) -> Vec<u8> {
    let mut out = vec![first];
    match form {
        LenForm::Minimal if len < 126 => out.push(0x80 | len as u8),
        LenForm::Minimal | LenForm::Sixteen if len <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    out.extend_from_slice(&KEY);
    out
}

/// `payload` masked with [`KEY`], `offset` being its position in the frame.
pub fn mask(payload: &[u8], offset: usize) -> Vec<u8> {
    payload
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ KEY[(offset + i) % 4])
        .collect()
}

/// A whole masked frame with its length in `form`.
pub fn frame(first: u8, payload: &[u8], form: LenForm) -> Vec<u8> {
    let mut out = header(first, payload.len() as u64, form);
    out.extend(mask(payload, 0));
    out
}

/// A `msg` frame's JSON of exactly `len` bytes (the text pads it).
pub fn msg_of_len(id: &str, len: usize) -> String {
    let skeleton = json!({"type": "msg", "id": id, "text": ""}).to_string();
    assert!(len >= skeleton.len(), "{len} is too short for a msg");
    let text = "x".repeat(len - skeleton.len());
    let msg = json!({"type": "msg", "id": id, "text": text}).to_string();
    assert_eq!(msg.len(), len);
    msg
}

/// Reads up to the server's close frame, then answers it as a client
/// would (echoing the code), half-closes, and checks that nothing follows
/// the close frame. Returns the frames before it and its code.
pub fn close_after(raw: &mut RawWs) -> (Vec<RawFrame>, u16) {
    let (before, code) = frames_until_close(raw);
    let mut reply = code.to_be_bytes().to_vec();
    if !(1000..=4999).contains(&code) || matches!(code, 1005 | 1006 | 1015) {
        reply.clear();
    }
    let mut close = header(0x88, reply.len() as u64, LenForm::Minimal);
    close.extend(mask(&reply, 0));
    let _ = raw.stream.write_all(&close);
    let _ = raw.stream.shutdown(std::net::Shutdown::Write);
    if let Some(after) = raw.try_read_frame() {
        panic!("the server sent a frame after its close frame: {after:?}");
    }
    (before, code)
}
use super::{Client, Gateway, READ_TIMEOUT};

/// A visitor and an agent in one assigned conversation, on their own
/// connections: the "normal chat" that hostile input must not disturb.
pub struct Chat {
    /// The visitor's connection.
    pub visitor: Client,
    /// The agent's connection.
    pub agent: Client,
    /// The conversation.
    pub conv: String,
    /// Messages exchanged so far (for unique ids and the expected seq).
    sent: u64,
    /// The conversation's last seq as both sides have seen it.
    last_seq: u64,
}

impl Chat {
    /// Logs in agent `healthy-agent` and visitor `healthy-visitor` of the
    /// demo tenant and opens a conversation between them.
    pub fn open(gw: &Gateway) -> Chat {
        let (mut agent, _) = gw.login(&gw.agent_token("healthy-agent", &[]));
        let (mut visitor, _) = gw.login(&gw.visitor_token("healthy-visitor", &[]));
        let ack = visitor.say("h-0", None, "hello, anyone?");
        let conv = ack["conv"].as_str().expect("conv").to_string();
        let (assigned, _) = visitor.recv_until(|v| v["event"] == "assigned");
        let (same, _) = agent.recv_until(|v| v["event"] == "assigned");
        assert_eq!(assigned, same);
        let last_seq = assigned["seq"].as_u64().expect("seq");
        let mut chat = Chat {
            visitor,
            agent,
            conv,
            sent: 0,
            last_seq,
        };
        chat.exchange();
        chat
    }

    /// One message each way, each acknowledged in order and delivered to the
    /// other side with the next seq and the same text. Panics (with the
    /// harness's read timeout) if the gateway stopped serving them.
    pub fn exchange(&mut self) {
        self.sent += 1;
        let n = self.sent;
        let conv = self.conv.clone();
        let text = format!("visitor line {n}");
        let ack = self.visitor.say(&format!("hv-{n}"), Some(&conv), &text);
        self.expect_next(&ack, "agent", &text);
        let text = format!("agent line {n}");
        let ack = self.agent.say(&format!("ha-{n}"), Some(&conv), &text);
        self.expect_next(&ack, "visitor", &text);
    }

    fn expect_next(&mut self, ack: &Value, to: &str, text: &str) {
        let seq = ack["seq"].as_u64().expect("seq");
        assert_eq!(seq, self.last_seq + 1, "gap or reorder: {ack}");
        self.last_seq = seq;
        let other = if to == "agent" {
            &mut self.agent
        } else {
            &mut self.visitor
        };
        // The agent may also be assigned conversations the tests' hostile
        // visitors open: only this conversation's frames matter here.
        let conv = json!(self.conv);
        let (got, _) = other.recv_until(|v| v["type"] != "queue" && v["conv"] == conv);
        assert_eq!(
            (&got["type"], &got["seq"], &got["text"]),
            (&json!("msg"), &json!(seq), &json!(text)),
            "the other side got the message: {got}"
        );
    }

    /// Exchanges messages until `stop` is set (and at least once), at most
    /// one round per 50 ms (a chat, not a flood: the gateway's message rate
    /// limit is 50 a second per connection); returns how many rounds and
    /// the slowest round. For a thread beside a burst of bad input.
    pub fn talk_until(&mut self, stop: &AtomicBool) -> (u32, Duration) {
        const PACE: Duration = Duration::from_millis(50);
        let mut rounds = 0;
        let mut slowest = Duration::ZERO;
        while rounds == 0 || !stop.load(Ordering::SeqCst) {
            let round = Instant::now();
            self.exchange();
            let took = round.elapsed();
            slowest = slowest.max(took);
            rounds += 1;
            // Pacing the load, not waiting for anything.
            if let Some(rest) = PACE.checked_sub(took) {
                std::thread::sleep(rest);
            }
        }
        (rounds, slowest)
    }
}

/// Sets its flag when dropped, so that a thread talking until the flag is
/// set also stops when the test panics (a scoped thread would otherwise
/// keep the test waiting forever).
pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The gateway answers `/health` with 200 and no connection task has
/// panicked.
#[track_caller]
pub fn assert_healthy(gw: &Gateway) {
    let (status, body) = Gateway::http_get(gw.addr, "/health");
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"status":"ok"}"#),
        "health; stderr:\n{}",
        gw.stderr()
    );
    assert_eq!(
        gw.metric_sum("kefu_connection_panics_total"),
        0.0,
        "no connection panicked; stderr:\n{}",
        gw.stderr()
    );
}

/// A raw connection that said hello as an anonymous demo visitor.
pub fn raw_visitor(gw: &Gateway) -> RawWs {
    raw_visitor_welcome(gw).0
}

/// [`raw_visitor`], with its welcome (which carries the visitor's token).
pub fn raw_visitor_welcome(gw: &Gateway) -> (RawWs, Value) {
    let mut raw = RawWs::connect(gw.addr);
    raw.send(json!({"type": "hello", "tenant": "demo"}));
    let welcome = raw.recv();
    assert_eq!(welcome["type"], "welcome");
    (raw, welcome)
}

/// Reads up to the server's close frame: (frames before it, close code).
/// Panics on timeout or EOF without a close frame.
pub fn frames_until_close(raw: &mut RawWs) -> (Vec<RawFrame>, u16) {
    let mut before = Vec::new();
    loop {
        let frame = raw.read_frame();
        if frame.opcode == op::CLOSE {
            return (before, frame.close_code());
        }
        before.push(frame);
    }
}

/// The text frames among `frames`, as JSON.
pub fn texts(frames: &[RawFrame]) -> Vec<Value> {
    frames
        .iter()
        .filter(|f| f.opcode == op::TEXT)
        .map(RawFrame::json)
        .collect()
}

/// The gateway's resident memory, from `/proc` (KiB).
pub fn rss_kib(gw: &Gateway) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", gw.pid())).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS")
}

/// Connects a plain TCP socket (no upgrade) with the harness's read timeout.
pub fn tcp(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Reads until EOF, a reset or the read timeout; returns what arrived and
/// whether the connection ended (EOF or reset) rather than timing out.
pub fn read_to_end_or_reset(stream: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (got, false)
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

/// The status code of an HTTP response's first line, if it has one.
pub fn http_status(response: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(response);
    let line = text.lines().next()?;
    let mut parts = line.split_whitespace();
    (parts.next()? == "HTTP/1.1")
        .then(|| parts.next()?.parse().ok())
        .flatten()
}

/// Writes `bytes`, ignoring a peer that already closed (the gateway may
/// drop a hostile connection before reading all of it).
pub fn write_lossy(stream: &mut TcpStream, bytes: &[u8]) -> bool {
    stream.write_all(bytes).is_ok()
}

/// A tiny deterministic generator (xorshift64*), so a failing run can be
/// repeated: the seed is in the assertion messages.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}
