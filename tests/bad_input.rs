//! The bad-input suite, WebSocket layer, over raw TCP: hand-built frames
//! that break RFC 6455 in every way the Autobahn testsuite's fuzzingclient
//! tries (its cases need Python 2, which no registry here has, so its
//! categories are covered here instead), each answered with the close code
//! PROTOCOL.md documents, while a normal visitor↔agent chat on other
//! connections goes on unaffected: every test runs an exchange before and
//! after its bursts of bad input and checks the gateway's health.

mod common;

use std::time::Duration;

use common::hostile::{assert_healthy, raw_visitor, rss_kib, write_lossy, Chat};
use common::wire::{masked_frame, op};
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
