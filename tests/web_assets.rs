//! The web front ends over real HTTP: the widget, the console and the demo
//! page are served from the binary, with caching, gzip, and a demo agent
//! token only where it is safe (zero-config demo tenant, loopback browser).
//! What they do in a browser is tested by scripts/web-test.sh.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::{Gateway, Options, READ_TIMEOUT};
use serde_json::json;

/// A raw request; returns the response head (lower-cased header names) and body bytes.
fn request(addr: SocketAddr, method: &str, path: &str, headers: &[&str]) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head ends");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let head = head
        .lines()
        .enumerate()
        .map(|(i, l)| match l.split_once(':') {
            Some((k, v)) if i > 0 => format!("{}:{}", k.to_ascii_lowercase(), v),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    (head, raw[split + 4..].to_vec())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::trim)
}

#[test]
fn widget_and_console_are_served_with_caching_and_gzip() {
    let gw = Gateway::start(Options::default());
    let (head, plain) = request(gw.addr, "GET", "/widget.js", &[]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        header(&head, "content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(header(&head, "cache-control"), Some("public, max-age=300"));
    assert_eq!(header(&head, "content-encoding"), None);
    let text = String::from_utf8(plain.clone()).unwrap();
    assert!(text.contains("KefuWidget"), "the widget");

    let (zhead, zipped) = request(
        gw.addr,
        "GET",
        "/widget.js",
        &["Accept-Encoding: gzip, deflate, br"],
    );
    assert_eq!(header(&zhead, "content-encoding"), Some("gzip"));
    assert_eq!(header(&zhead, "vary"), Some("Accept-Encoding"));
    assert!(
        zipped.len() < plain.len() / 2,
        "{} vs {}",
        zipped.len(),
        plain.len()
    );
    assert_eq!(&zipped[..2], &[0x1f, 0x8b]);
    assert_eq!(
        header(&zhead, "content-length"),
        Some(zipped.len().to_string().as_str())
    );

    // Revalidation: the same ETag answers 304 with no body.
    let etag = header(&head, "etag").expect("etag").to_string();
    assert_eq!(header(&zhead, "etag"), Some(etag.as_str()));
    let (head304, body) = request(
        gw.addr,
        "GET",
        "/widget.js",
        &[&format!("If-None-Match: {etag}")],
    );
    assert!(head304.starts_with("HTTP/1.1 304"), "{head304}");
    assert!(body.is_empty());

    // HEAD: the headers only.
    let (hhead, body) = request(gw.addr, "HEAD", "/console.js", &[]);
    assert!(hhead.starts_with("HTTP/1.1 200"), "{hhead}");
    assert!(body.is_empty());
    assert!(header(&hhead, "content-length").unwrap() != "0");

    // The console page, with its policy; a POST is refused.
    let (chead, body) = request(gw.addr, "GET", "/console", &[]);
    assert_eq!(
        header(&chead, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(header(&chead, "content-security-policy")
        .unwrap()
        .contains("default-src 'self'"));
    assert!(String::from_utf8(body).unwrap().contains("/console.js"));
    let (phead, _) = request(gw.addr, "POST", "/console", &["Content-Length: 0"]);
    assert!(phead.starts_with("HTTP/1.1 405"), "{phead}");
    // Unknown paths are still 404; the WebSocket and health are untouched.
    assert_eq!(Gateway::http_get(gw.addr, "/nope").0, 404);
    assert_eq!(Gateway::http_get(gw.addr, "/health").0, 200);
    let (mut v, _) = gw.anonymous("demo");
    v.send(json!({"type": "msg", "id": "m-1", "text": "hi"}));
    v.recv_type("ack");
}

#[test]
fn the_demo_page_logs_its_console_in_as_a_demo_agent() {
    let gw = Gateway::start(Options::default());
    let (head, body) = request(gw.addr, "GET", "/", &[]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(header(&head, "cache-control"), Some("no-store"));
    let page = String::from_utf8(body).unwrap();
    assert!(page.contains(r#"src="/demo/shop""#), "{page}");
    let token = page
        .split("/console#token=")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a token in the console's fragment");
    // A real agent token of the demo tenant.
    let (mut agent, welcome) = gw.login(token);
    assert_eq!(welcome["role"], "agent");
    assert_eq!(welcome["id"], "demo-agent");
    let (mut visitor, _) = gw.anonymous("demo");
    visitor.send(json!({"type": "msg", "id": "m-1", "text": "hello"}));
    visitor.recv_type("ack");
    let m = agent.recv_type("msg");
    assert_eq!(m["text"], "hello");
    assert_eq!(Gateway::http_get(gw.addr, "/demo/shop").0, 200);
}

#[test]
fn with_a_config_file_there_is_no_demo_page_and_no_token() {
    let gw = Gateway::start(Options::default().config(
        "[[tenants]]\nid = \"acme\"\nsecret = \"0123456789abcdef0123456789abcdef\"\nanonymous_visitors = true\n",
    ));
    let (head, body) = request(gw.addr, "GET", "/", &[]);
    assert!(head.starts_with("HTTP/1.1 302"), "{head}");
    assert_eq!(header(&head, "location"), Some("/console"));
    assert!(!String::from_utf8(body).unwrap().contains("token"));
    assert_eq!(Gateway::http_get(gw.addr, "/demo/shop").0, 404);
    assert_eq!(Gateway::http_get(gw.addr, "/widget.js").0, 200);
    assert_eq!(Gateway::http_get(gw.addr, "/console").0, 200);
}
