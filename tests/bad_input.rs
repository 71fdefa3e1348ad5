//! The bad-input suite, WebSocket layer, over raw TCP: hand-built frames
//! that break RFC 6455 in every way the Autobahn testsuite's fuzzingclient
//! tries (its cases need Python 2, which no registry here has, so its
//! categories are covered here instead), each answered with the close code
//! PROTOCOL.md documents, while a normal visitor↔agent chat on other
//! connections goes on unaffected: every test runs an exchange before and
//! after its bursts of bad input and checks the gateway's health.

mod common;

use std::time::Duration;

use common::hostile::{
    assert_healthy, frames_until_close, raw_visitor, rss_kib, write_lossy, Chat,
};
use common::wire::{masked_frame, op, RawWs};
use common::{Gateway, Options};

// ----- Autobahn 1.2: binary messages (protocol v1 is text only: 1003) -----

/// Regression: the connection asked its decoder to stop after each binary
/// frame, so while it lingered after its 1003 close, every read was copied
/// into the decoder's pending input and only one frame of it decoded: a
/// client sending empty binary frames grew the gateway by what it sent
/// (about 150 MB in two seconds on loopback) and made every read copy all
/// of it again.
#[test]
fn binary_frames_after_the_1003_close_are_skipped_without_buffering() {
    let gw = Gateway::start(Options::default());
    let mut chat = Chat::open(&gw);
    let mut raw = raw_visitor(&gw);
    raw.send_frame(op::BINARY, b"\x01");
    let before = rss_kib(&gw);
    // Empty binary frames, 6 bytes each, without reading the close.
    let burst = masked_frame(0x80 | op::BINARY, b"").repeat(16 * 1024);
    raw.stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut sent = 0usize;
    while sent < 24 << 20 && write_lossy(&mut raw.stream, &burst) {
        sent += burst.len();
    }
    let grown = rss_kib(&gw).saturating_sub(before) * 1024;
    assert!(
        sent >= 4 << 20,
        "the flood was refused too early to tell ({sent} bytes)"
    );
    assert!(
        grown < (sent as u64) / 4,
        "the gateway grew by {grown} bytes while {sent} bytes of binary frames arrived"
    );
    drop(raw);
    chat.exchange();
    assert_healthy(&gw);
}

// ----- Autobahn 7.1: nothing after the close frame -----

/// Regression: a ping that arrived after the gateway had decided to close
/// (here: a malformed hello, 4400) was answered with a pong after the
/// close frame; RFC 6455 §5.5.1 allows nothing after it.
#[test]
fn no_pong_follows_the_gateways_close_frame() {
    let gw = Gateway::start(Options::default());
    let mut chat = Chat::open(&gw);
    let mut raw = RawWs::connect(gw.addr);
    raw.send_text("not a hello");
    let (_, code) = frames_until_close(&mut raw);
    assert_eq!(code, 4400);
    // The close frame is out; the client had not read it yet and pings.
    raw.send_frame(op::PING, b"still there?");
    raw.send_frame(op::CLOSE, &4400u16.to_be_bytes());
    raw.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(raw.try_read_frame(), None, "nothing after the close frame");
    chat.exchange();
    assert_healthy(&gw);
}

/// Regression: the idle sweeper pinged connections that lingered after
/// the gateway's close frame (the peer never answered it), so a ping
/// followed the close frame. (No chat beside it: with a 300 ms idle
/// timeout, the harness's clients, which answer pings only while reading,
/// would be dropped too.)
#[test]
fn no_idle_ping_follows_the_gateways_close_frame() {
    let gw = Gateway::start(Options::default().arg("--idle-timeout").arg("300ms"));
    let mut raw = raw_visitor(&gw);
    raw.send_frame(op::BINARY, b"");
    // Silent past the idle timeout without answering the close: dropped
    // (EOF), never pinged.
    assert_eq!(
        raw.expect_close_and_silence(Duration::from_millis(1000)),
        1003
    );
    assert_healthy(&gw);
}
