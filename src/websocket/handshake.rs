//! The HTTP/1.1 side of a connection: reading a request head, accepting a
//! WebSocket upgrade (RFC 6455 §4.2), and writing plain responses for the few
//! non-WebSocket endpoints (`/health`, `/metrics`, errors).
//!
//! Every connection starts here, so the head is parsed straight from the
//! connection's read buffer with `httparse` (no copy of the head) and only the
//! few values the gateway needs are kept, as a small owned [`RequestHead`].
//! Responses are built as complete byte strings, written with one send.

use std::fmt;

use tungstenite::handshake::derive_accept_key;

/// How many header lines a request may have; more is answered with 431.
pub const MAX_HEADERS: usize = 64;

/// The one WebSocket version RFC 6455 defines.
const WEBSOCKET_VERSION: &str = "13";

/// The part of an HTTP request head the gateway uses, copied out of the read
/// buffer so the buffer can be reused as soon as the head is parsed.
///
/// A header that appears several times is kept as its values joined with
/// `", "` (HTTP's rule for list-valued fields), so a duplicated
/// `Sec-WebSocket-Key` or `Origin` never passes as a single valid value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// The request method (`GET` for an upgrade, `/health` and `/metrics`).
    pub method: String,
    /// The request target up to `?`: what routing looks at (`/v1/ws`).
    pub path: String,
    /// The query string after `?`, without it, if the target had one.
    pub query: Option<String>,
    /// The HTTP minor version: 1 for HTTP/1.1, 0 for HTTP/1.0. An upgrade
    /// needs HTTP/1.1.
    pub http_minor_version: u8,
    /// How many bytes of the buffer the head took, up to and including the
    /// blank line: bytes after it are the client's first WebSocket frames,
    /// sent without waiting for the 101, and go to the frame decoder.
    pub head_len: usize,
    /// The `Origin` header, checked against the tenant's allowed origins
    /// (a browser always sends it on a WebSocket upgrade).
    pub origin: Option<String>,
    /// Whether an `Upgrade` header lists the `websocket` token
    /// (case-insensitive), as an upgrade must.
    pub upgrade_websocket: bool,
    /// Whether a `Connection` header lists the `upgrade` token
    /// (case-insensitive) among its comma-separated options.
    pub connection_upgrade: bool,
    /// The `Sec-WebSocket-Key` header: a nonce whose hash proves to the client
    /// that we understood the upgrade (must be base64 of 16 bytes).
    pub websocket_key: Option<String>,
    /// The `Sec-WebSocket-Version` header: must be `13`.
    pub websocket_version: Option<String>,
}

/// A request the gateway refuses at the HTTP level: the status line and
/// headers to answer with, before closing the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpError {
    /// The HTTP status code (400, 426, 431, ...).
    pub status: u16,
    /// The status line's reason phrase (`Bad Request`, ...).
    pub reason: &'static str,
    /// A one-line explanation sent as the plain-text body, for whoever debugs
    /// a client.
    pub message: &'static str,
    /// Headers the status requires, such as `Sec-WebSocket-Version: 13` with
    /// 426 (RFC 6455 §4.4).
    pub headers: &'static [(&'static str, &'static str)],
}

impl HttpError {
    const fn new(status: u16, reason: &'static str, message: &'static str) -> Self {
        HttpError {
            status,
            reason,
            message,
            headers: &[],
        }
    }

    /// A malformed request, or a WebSocket handshake that does not follow
    /// RFC 6455 §4.2.1.
    pub const fn bad_request(message: &'static str) -> Self {
        Self::new(400, "Bad Request", message)
    }

    /// The complete response (status, headers, body, `Connection: close`).
    pub fn to_response(&self) -> Vec<u8> {
        let mut body = String::with_capacity(self.message.len() + 1);
        body.push_str(self.message);
        body.push('\n');
        response(
            self.status,
            self.reason,
            "text/plain; charset=utf-8",
            body.as_bytes(),
            self.headers,
        )
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.reason, self.message)
    }
}

impl std::error::Error for HttpError {}

/// Parses an HTTP/1.x request head at the start of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete (read more and call again
/// with the whole buffer), or an error: 431 when no complete head fits in
/// `max_head_bytes` or it has more than [`MAX_HEADERS`] headers, 400 when it is
/// malformed or a header the gateway keeps is not UTF-8.
pub fn parse_request(buf: &[u8], max_head_bytes: usize) -> Result<Option<RequestHead>, HttpError> {
    const TOO_LARGE: HttpError = HttpError::new(
        431,
        "Request Header Fields Too Large",
        "request head too large",
    );
    let window = &buf[..buf.len().min(max_head_bytes)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(window) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if window.len() < max_head_bytes => return Ok(None),
        Ok(httparse::Status::Partial) => return Err(TOO_LARGE),
        Err(httparse::Error::TooManyHeaders) => return Err(TOO_LARGE),
        Err(_) => return Err(HttpError::bad_request("malformed request")),
    };
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return Err(HttpError::bad_request("malformed request"));
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (target, None),
    };

    let mut head = RequestHead {
        method: method.to_owned(),
        path: path.to_owned(),
        query,
        http_minor_version: version,
        head_len,
        origin: None,
        upgrade_websocket: false,
        connection_upgrade: false,
        websocket_key: None,
        websocket_version: None,
    };
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("upgrade") {
            head.upgrade_websocket |= has_token(header.value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            head.connection_upgrade |= has_token(header.value, "upgrade");
        } else if name.eq_ignore_ascii_case("origin") {
            keep(&mut head.origin, header.value)?;
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            keep(&mut head.websocket_key, header.value)?;
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            keep(&mut head.websocket_version, header.value)?;
        }
    }
    Ok(Some(head))
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&byte| byte == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Stores a header value, joining repeated headers with `", "`.
fn keep(slot: &mut Option<String>, value: &[u8]) -> Result<(), HttpError> {
    let value = std::str::from_utf8(value.trim_ascii())
        .map_err(|_| HttpError::bad_request("header value is not UTF-8"))?;
    match slot {
        Some(existing) => {
            existing.push_str(", ");
            existing.push_str(value);
        }
        None => *slot = Some(value.to_owned()),
    }
    Ok(())
}

/// Checks that `head` is a WebSocket opening handshake (RFC 6455 §4.2.1) and
/// returns the complete `101 Switching Protocols` response to send.
///
/// No subprotocol and no extension is ever agreed (in particular not
/// permessage-deflate: compression would cost memory per connection and copies
/// per message). Errors: 405 for a method other than GET, 400 for HTTP/1.0,
/// missing `Upgrade: websocket` or `Connection: upgrade` tokens, a missing
/// version or a key that is not base64 of 16 bytes; 426 with
/// `Sec-WebSocket-Version: 13` for any other version (§4.4).
pub fn accept_upgrade(head: &RequestHead) -> Result<Vec<u8>, HttpError> {
    if head.method != "GET" {
        return Err(HttpError {
            headers: &[("Allow", "GET")],
            ..HttpError::new(
                405,
                "Method Not Allowed",
                "a WebSocket upgrade is a GET request",
            )
        });
    }
    if head.http_minor_version < 1 {
        return Err(HttpError::bad_request("a WebSocket upgrade needs HTTP/1.1"));
    }
    if !head.upgrade_websocket {
        return Err(HttpError::bad_request("missing Upgrade: websocket"));
    }
    if !head.connection_upgrade {
        return Err(HttpError::bad_request("missing Connection: upgrade"));
    }
    match head.websocket_version.as_deref() {
        None => return Err(HttpError::bad_request("missing Sec-WebSocket-Version")),
        Some(WEBSOCKET_VERSION) => {}
        Some(_) => {
            return Err(HttpError {
                headers: &[("Sec-WebSocket-Version", WEBSOCKET_VERSION)],
                ..HttpError::new(
                    426,
                    "Upgrade Required",
                    "unsupported WebSocket version: use 13",
                )
            })
        }
    }
    let key = head
        .websocket_key
        .as_deref()
        .ok_or(HttpError::bad_request("missing Sec-WebSocket-Key"))?;
    if !is_base64_of_16_bytes(key) {
        return Err(HttpError::bad_request(
            "Sec-WebSocket-Key is not base64 of 16 bytes",
        ));
    }
    let accept = derive_accept_key(key.as_bytes());
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\n\
          Upgrade: websocket\r\n\
          Connection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    Ok(out)
}

/// Whether `key` is the canonical base64 (standard alphabet, padded) of
/// exactly 16 bytes: 22 symbols, the last one carrying 2 bits (so its low 4
/// bits are zero), then `==`.
fn is_base64_of_16_bytes(key: &str) -> bool {
    fn value(symbol: u8) -> Option<u8> {
        match symbol {
            b'A'..=b'Z' => Some(symbol - b'A'),
            b'a'..=b'z' => Some(symbol - b'a' + 26),
            b'0'..=b'9' => Some(symbol - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let bytes = key.as_bytes();
    let [symbols @ .., last, b'=', b'='] = bytes else {
        return false;
    };
    symbols.len() == 21
        && symbols.iter().all(|&symbol| value(symbol).is_some())
        && value(*last).is_some_and(|bits| bits & 0x0F == 0)
}

/// A complete HTTP/1.1 response: status line, `Content-Type` (left out when
/// `content_type` is empty), `Content-Length`, `Connection: close`, the extra
/// headers, then the body. For `/health`, `/metrics` and error answers, after
/// which the connection is closed.
///
/// An extra header whose name or value contains CR or LF is left out, so a
/// value built from request data can never inject headers.
pub fn response(
    status: u16,
    reason: &str,
    content_type: &str,
    body: &[u8],
    extra_headers: &[(&str, &str)],
) -> Vec<u8> {
    fn clean(text: &str) -> bool {
        !text.bytes().any(|byte| byte == b'\r' || byte == b'\n')
    }
    let mut out = Vec::with_capacity(128 + body.len());
    let mut line = |parts: &[&str]| {
        for part in parts {
            out.extend_from_slice(part.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    };
    let status = status.to_string();
    let reason = if clean(reason) { reason } else { "" };
    line(&["HTTP/1.1 ", &status, " ", reason]);
    if !content_type.is_empty() && clean(content_type) {
        line(&["Content-Type: ", content_type]);
    }
    line(&["Content-Length: ", &body.len().to_string()]);
    line(&["Connection: close"]);
    for (name, value) in extra_headers {
        if !name.is_empty() && clean(name) && clean(value) {
            line(&[name, ": ", value]);
        }
    }
    line(&[]);
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &str = "GET /v1/ws?lang=en HTTP/1.1\r\n\
        Host: chat.acme.example\r\n\
        Upgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\
        Origin: https://shop.acme.example\r\n\
        \r\n";

    fn head(request: &str) -> RequestHead {
        parse_request(request.as_bytes(), 8192)
            .expect("valid head")
            .expect("complete head")
    }

    fn upgrade_with(from: &str, to: &str) -> Result<Vec<u8>, HttpError> {
        let request = UPGRADE.replace(from, to);
        assert_ne!(request, UPGRADE, "replacement applied");
        accept_upgrade(&head(&request))
    }

    #[test]
    fn parses_the_head() {
        let head = head(UPGRADE);
        assert_eq!(head.method, "GET");
        assert_eq!(head.path, "/v1/ws");
        assert_eq!(head.query.as_deref(), Some("lang=en"));
        assert_eq!(head.http_minor_version, 1);
        assert_eq!(head.head_len, UPGRADE.len());
        assert_eq!(head.origin.as_deref(), Some("https://shop.acme.example"));
        assert!(head.upgrade_websocket && head.connection_upgrade);
        assert_eq!(
            head.websocket_key.as_deref(),
            Some("dGhlIHNhbXBsZSBub25jZQ==")
        );
        assert_eq!(head.websocket_version.as_deref(), Some("13"));
    }

    #[test]
    fn valid_upgrade_and_accept_key() {
        let response = accept_upgrade(&head(UPGRADE)).unwrap();
        let response = String::from_utf8(response).unwrap();
        assert_eq!(
            response,
            "HTTP/1.1 101 Switching Protocols\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
        // Never an extension or subprotocol, even when asked for.
        let response = upgrade_with(
            "Origin:",
            "Sec-WebSocket-Extensions: permessage-deflate\r\n\
             Sec-WebSocket-Protocol: chat\r\nOrigin:",
        )
        .unwrap();
        let response = String::from_utf8(response).unwrap();
        assert!(!response.contains("Extensions") && !response.contains("Protocol:"));
    }

    #[test]
    fn tokens_are_case_insensitive_and_listed() {
        let ok = |from: &str, to: &str| upgrade_with(from, to).is_ok();
        assert!(ok("Upgrade: websocket", "upgrade: WebSocket"));
        assert!(ok("Upgrade: websocket", "Upgrade: h2c, WEBSOCKET"));
        assert!(ok("Connection: keep-alive, Upgrade", "connection: UPGRADE"));
        assert!(ok(
            "Connection: keep-alive, Upgrade",
            "Connection:upgrade,keep-alive"
        ));
        assert!(ok(
            "Connection: keep-alive, Upgrade",
            "Connection: keep-alive\r\nConnection: Upgrade"
        ));
        assert!(!ok(
            "Connection: keep-alive, Upgrade",
            "Connection: keep-alive"
        ));
        assert!(!ok(
            "Connection: keep-alive, Upgrade",
            "Connection: upgraded"
        ));
        assert!(!ok("Upgrade: websocket", "Upgrade: websockets"));
    }

    #[test]
    fn refusals() {
        let status = |from: &str, to: &str| upgrade_with(from, to).unwrap_err().status;
        assert_eq!(
            status("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
            400
        );
        assert_eq!(status("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZQ=="), 400);
        assert_eq!(
            status("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZR=="),
            400
        );
        assert_eq!(
            status("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ"),
            400
        );
        assert_eq!(
            status("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25j*Q=="),
            400
        );
        assert_eq!(
            status(
                "Origin:",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin:"
            ),
            400,
            "two keys"
        );
        assert_eq!(status("Upgrade: websocket\r\n", ""), 400);
        assert_eq!(status("Connection: keep-alive, Upgrade\r\n", ""), 400);
        assert_eq!(status("Sec-WebSocket-Version: 13\r\n", ""), 400);
        assert_eq!(status("GET /v1/ws", "POST /v1/ws"), 405);
        assert_eq!(status("HTTP/1.1", "HTTP/1.0"), 400);
    }

    #[test]
    fn bad_version_is_426_with_the_supported_version() {
        let error =
            upgrade_with("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8").unwrap_err();
        assert_eq!(error.status, 426);
        let response = String::from_utf8(error.to_response()).unwrap();
        assert!(response.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(response.contains("\r\nSec-WebSocket-Version: 13\r\n"));
    }

    #[test]
    fn partial_head_needs_more_bytes() {
        let bytes = UPGRADE.as_bytes();
        for cut in 0..bytes.len() {
            assert_eq!(parse_request(&bytes[..cut], 8192), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn oversize_head_is_431() {
        let mut request = String::from("GET / HTTP/1.1\r\n");
        while request.len() < 9000 {
            request.push_str("X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        // Still incomplete, but already over the limit.
        let error = parse_request(request.as_bytes(), 8192).unwrap_err();
        assert_eq!(error.status, 431);
        // Complete, but longer than the limit.
        request.push_str("\r\n");
        assert_eq!(
            parse_request(request.as_bytes(), 8192).unwrap_err().status,
            431
        );
        // Too many headers.
        let mut request = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            request.push_str(&format!("X-{i}: y\r\n"));
        }
        request.push_str("\r\n");
        assert_eq!(
            parse_request(request.as_bytes(), 8192).unwrap_err().status,
            431
        );
        assert!(String::from_utf8(
            parse_request(request.as_bytes(), 8192)
                .unwrap_err()
                .to_response()
        )
        .unwrap()
        .starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
    }

    #[test]
    fn malformed_head_is_400() {
        for request in [
            "GET /\x01 HTTP/1.1\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
            "\x16\x03\x01\x02\x00\x01\x00\x01\x03\x03",
        ] {
            let error = parse_request(request.as_bytes(), 8192).unwrap_err();
            assert_eq!(error.status, 400, "{request:?}");
        }
        let error = parse_request(b"GET / HTTP/1.1\r\nOrigin: \xff\r\n\r\n", 8192).unwrap_err();
        assert_eq!(error.status, 400);
    }

    #[test]
    fn leftover_bytes_after_the_head() {
        let mut bytes = UPGRADE.as_bytes().to_vec();
        let frame = [0x81, 0x80, 1, 2, 3, 4];
        bytes.extend_from_slice(&frame);
        let head = parse_request(&bytes, 8192).unwrap().unwrap();
        assert_eq!(&bytes[head.head_len..], &frame);
    }

    #[test]
    fn plain_responses() {
        let health = response(200, "OK", "application/json", br#"{"status":"ok"}"#, &[]);
        assert_eq!(
            String::from_utf8(health).unwrap(),
            "HTTP/1.1 200 OK\r\n\
             Content-Type: application/json\r\n\
             Content-Length: 15\r\n\
             Connection: close\r\n\
             \r\n\
             {\"status\":\"ok\"}"
        );
        let not_found = response(
            404,
            "Not Found",
            "",
            b"",
            &[("X-Good", "yes"), ("X-Evil", "a\r\nSet-Cookie: x")],
        );
        assert_eq!(
            String::from_utf8(not_found).unwrap(),
            "HTTP/1.1 404 Not Found\r\n\
             Content-Length: 0\r\n\
             Connection: close\r\n\
             X-Good: yes\r\n\
             \r\n"
        );
    }
}
