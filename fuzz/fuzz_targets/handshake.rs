//! The HTTP upgrade: `websocket::parse_request` over arbitrary bytes and
//! head limits, `accept_upgrade` on whatever it parses, and `response`
//! with arbitrary header values.
//!
//! Checked: no panic; a complete head lies within the limit and the
//! bytes, and parses the same from just its own bytes and from any longer
//! buffer; the gateway reads the head incrementally, so every prefix of a
//! buffer that parses (complete or not) must not be refused, and a prefix
//! that is complete gives the same head; "incomplete" only while the
//! window is under the limit; an accepted upgrade meets RFC 6455 §4.2.1
//! (checked here independently, base64 key included); a refused one is
//! 400, 405 or 426 with a well-formed response; `response` never lets a
//! CR or LF from a value start a new header line.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use kefu::websocket::{accept_upgrade, parse_request, response};
use libfuzzer_sys::fuzz_target;

/// Inputs of `response`, read from the same bytes.
#[derive(Arbitrary, Debug)]
struct ResponseInput {
    reason: String,
    content_type: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Standard base64 (padded) of exactly 16 bytes, canonical: decoding it
/// and encoding the bytes again gives the same text.
fn is_canonical_base64_of_16(key: &str) -> bool {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if key.len() != 24 || !key.ends_with("==") {
        return false;
    }
    // Decode 22 symbols (132 bits) into 16 bytes, dropping the last 4 bits.
    let mut bytes = Vec::new();
    let (mut acc, mut n) = (0u32, 0);
    for &c in &key.as_bytes()[..22] {
        let Some(v) = ABC.iter().position(|&a| a == c) else {
            return false;
        };
        acc = (acc << 6) | v as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            bytes.push((acc >> n) as u8);
            acc &= (1 << n) - 1;
        }
    }
    assert_eq!(bytes.len(), 16);
    // Encode them again.
    let mut again = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            again.push(ABC[(v >> (18 - 6 * i)) as usize & 63] as char);
        }
    }
    again.push_str("==");
    again == key
}

fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fuzz_target!(|data: &[u8]| {
    // Four bytes of parameters (the head limit, a cut point), then the
    // request bytes: seeds are plain requests behind a 4-byte prefix.
    if data.len() < 4 {
        return;
    }
    let (params, bytes) = data.split_at(4);
    let max = usize::from(u16::from_be_bytes([params[0], params[1]]));
    let cut = usize::from(u16::from_be_bytes([params[2], params[3]]));
    let full = parse_request(bytes, max);
    match &full {
        Ok(Some(head)) => {
            assert!(head.head_len <= bytes.len().min(max));
            assert_eq!(bytes[head.head_len - 1], b'\n');
            assert_eq!(parse_request(&bytes[..head.head_len], max), full);
            let mut longer = bytes.to_vec();
            longer.extend_from_slice(b"\x00\r\n\r\nGET / HTTP/1.1\r\n");
            assert_eq!(parse_request(&longer, max), full);
        }
        Ok(None) => assert!(bytes.len() < max, "incomplete only under the limit"),
        Err(e) => assert!(e.status == 400 || e.status == 431, "{e}"),
    }
    // Incremental reading: a prefix of a buffer that parses is not refused.
    if full.is_ok() && !bytes.is_empty() {
        let cut = cut % bytes.len();
        match parse_request(&bytes[..cut], max) {
            Ok(None) => {}
            Ok(Some(head)) => assert_eq!(Ok(Some(head)), full),
            Err(e) => panic!("prefix of {cut} bytes refused ({e}) but the whole is {full:?}"),
        }
    }

    if let Ok(Some(head)) = &full {
        match accept_upgrade(head) {
            Ok(answer) => {
                assert_eq!(head.method, "GET");
                assert_eq!(head.http_minor_version, 1);
                assert!(head.upgrade_websocket && head.connection_upgrade);
                assert_eq!(head.websocket_version.as_deref(), Some("13"));
                let key = head.websocket_key.as_deref().expect("a key");
                assert!(is_canonical_base64_of_16(key), "key {key:?}");
                let answer = String::from_utf8(answer).expect("ASCII");
                assert!(answer.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
                assert!(answer.ends_with("\r\n\r\n"));
                assert_eq!(answer.matches("\r\n").count(), 5);
            }
            Err(e) => {
                assert!(matches!(e.status, 400 | 405 | 426), "{e}");
                if let Some(key) = head.websocket_key.as_deref() {
                    if head.method == "GET"
                        && head.http_minor_version == 1
                        && head.upgrade_websocket
                        && head.connection_upgrade
                        && head.websocket_version.as_deref() == Some("13")
                    {
                        assert!(!is_canonical_base64_of_16(key), "good key {key:?} refused");
                    }
                }
                let answer = e.to_response();
                let text = String::from_utf8_lossy(&answer);
                assert!(text.starts_with(&format!("HTTP/1.1 {} ", e.status)));
            }
        }
        if let Some(origin) = &head.origin {
            assert!(!origin.contains(['\r', '\n']));
        }
        assert!(!has_token("", "x"));
    }

    // Responses: a value with CR or LF never starts a header line of its own.
    if let Ok(input) = ResponseInput::arbitrary(&mut Unstructured::new(data)) {
        check_response(&input);
    }
});

fn check_response(input: &ResponseInput) {
    let extra: Vec<(&str, &str)> = input
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let answer = response(200, &input.reason, &input.content_type, &input.body, &extra);
    let head_end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a blank line");
    let head = std::str::from_utf8(&answer[..head_end]).expect("UTF-8 head");
    let clean = |s: &str| !s.contains(['\r', '\n']);
    let kept = extra
        .iter()
        .filter(|(n, v)| !n.is_empty() && clean(n) && clean(v))
        .count();
    let content_type = usize::from(!input.content_type.is_empty() && clean(&input.content_type));
    // Status line, Content-Type, Content-Length, Connection, extra headers.
    assert_eq!(head.split("\r\n").count(), 1 + content_type + 2 + kept);
    assert!(head.split("\r\n").all(|line| !line.contains(['\r', '\n'])));
    assert_eq!(&answer[head_end + 4..], &input.body[..]);
    assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", input.body.len())));
}
