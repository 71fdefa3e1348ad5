//! The web front ends, built into the binary: the visitor widget
//! (`/widget.js`), the agent console (`/console`), and the demo page (`/`).
//!
//! The files live in `web/` and are compiled in with `include_bytes!`, so
//! nothing needs Node at run time. Each is served with its content type, a
//! strong `ETag` (revalidated with `If-None-Match`: 304), a
//! `Cache-Control` suited to it, and gzip when the client accepts it (each
//! file is compressed once per process, on first request).
//!
//! The demo page exists only on the zero-config demo tenant (no config
//! file). It shows a demo shop with the widget next to the console, logged
//! in with an agent token minted for that page load: agent `demo-agent`,
//! valid for [`DEMO_TOKEN_TTL`]. The token is minted only for a browser on
//! the gateway's own machine (a loopback peer); anyone else gets the page
//! with a console that asks for a token. With a config file, `/` redirects
//! to the console and mints nothing.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use glommio::net::TcpStream;

use crate::auth::{self, Claims};
use crate::config::DEMO_TENANT;
use crate::ids::Role;
use crate::shard::Shard;
use crate::websocket::RequestHead;

/// Where the agent console is served.
pub const CONSOLE_PATH: &str = "/console";

/// How long the demo page's agent token lives.
pub const DEMO_TOKEN_TTL: Duration = Duration::from_secs(2 * 3600);

/// The agent id of the demo page's console.
pub const DEMO_AGENT: &str = "demo-agent";

/// Content security policy of our own pages: scripts, styles and the
/// WebSocket from this origin only; frames from this origin only.
const CSP: &str = "default-src 'self'; img-src 'self' data:; \
    frame-ancestors 'self'; base-uri 'none'; form-action 'none'";

/// One file built into the binary.
struct Asset {
    path: &'static str,
    body: &'static [u8],
    content_type: &'static str,
    cache: &'static str,
    /// Our own pages get [`CSP`]; the widget runs on shops' pages and has none.
    page: bool,
    /// Served only with the zero-config demo tenant.
    demo_only: bool,
    gzip: OnceLock<Option<Vec<u8>>>,
    etag: OnceLock<String>,
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";
/// Our pages: always revalidate (cheap with the ETag), so an upgrade
/// reaches agents at their next load.
const REVALIDATE: &str = "no-cache";
/// The widget is embedded by shops at a fixed URL: a short cache, then
/// revalidation.
const WIDGET_CACHE: &str = "public, max-age=300";

macro_rules! asset {
    ($path:expr, $file:expr, $type:expr, $cache:expr, $page:expr, $demo:expr) => {
        Asset {
            path: $path,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/", $file)),
            content_type: $type,
            cache: $cache,
            page: $page,
            demo_only: $demo,
            gzip: OnceLock::new(),
            etag: OnceLock::new(),
        }
    };
}

static ASSETS: [Asset; 8] = [
    asset!("/widget.js", "widget.js", JS, WIDGET_CACHE, false, false),
    asset!(CONSOLE_PATH, "console.html", HTML, REVALIDATE, true, false),
    asset!("/console.js", "console.js", JS, REVALIDATE, false, false),
    asset!("/console.css", "console.css", CSS, REVALIDATE, false, false),
    asset!(
        "/favicon.svg",
        "favicon.svg",
        "image/svg+xml",
        REVALIDATE,
        false,
        false
    ),
    asset!("/demo.css", "demo.css", CSS, REVALIDATE, false, true),
    asset!("/demo/shop", "shop.html", HTML, REVALIDATE, true, true),
    asset!("/shop.css", "shop.css", CSS, REVALIDATE, false, true),
];

/// The demo page's template; `{{CONSOLE}}` becomes the console's URL.
const DEMO_PAGE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/demo.html"));

/// The console link `kefu token --url` prints: the token goes in the
/// fragment, which the browser never sends to the server.
pub fn console_url(base: &str, token: &str) -> String {
    format!("{}{CONSOLE_PATH}#token={token}", base.trim_end_matches('/'))
}

/// The response to a request for a web asset, or `None` when `head` is not
/// one (the caller answers 404). `raw` is the request head's bytes, read
/// again here only for asset paths (`Accept-Encoding`, `If-None-Match`).
pub fn respond(
    shard: &Shard,
    stream: &TcpStream,
    head: &RequestHead,
    raw: &[u8],
) -> Option<Vec<u8>> {
    let demo = shard.settings.config_file.is_none();
    let path = head.path.as_str();
    if path == "/" {
        if !matches!(head.method.as_str(), "GET" | "HEAD") {
            return Some(method_not_allowed());
        }
        if !demo {
            return Some(build(
                302,
                "Found",
                &[("Location", CONSOLE_PATH)],
                b"",
                true,
            ));
        }
        let token = stream
            .peer_addr()
            .ok()
            .filter(is_local)
            .and_then(|_| demo_token(shard));
        let console = match token {
            Some(token) => console_url("", &token),
            None => CONSOLE_PATH.to_string(),
        };
        let page = DEMO_PAGE.replace("{{CONSOLE}}", &console);
        let headers = [
            ("Content-Type", HTML),
            ("Cache-Control", "no-store"),
            ("Content-Security-Policy", CSP),
            ("Referrer-Policy", "no-referrer"),
            ("X-Content-Type-Options", "nosniff"),
        ];
        return Some(build(
            200,
            "OK",
            &headers,
            page.as_bytes(),
            head.method == "HEAD",
        ));
    }
    let asset = ASSETS
        .iter()
        .find(|a| a.path == path && (demo || !a.demo_only))?;
    if !matches!(head.method.as_str(), "GET" | "HEAD") {
        return Some(method_not_allowed());
    }
    let wants = Wants::parse(raw);
    let etag = asset
        .etag
        .get_or_init(|| format!("\"{:016x}\"", fnv1a(asset.body)));
    let mut headers = vec![
        ("Content-Type", asset.content_type),
        ("Cache-Control", asset.cache),
        ("ETag", etag.as_str()),
        ("Vary", "Accept-Encoding"),
        ("X-Content-Type-Options", "nosniff"),
    ];
    if asset.page {
        headers.push(("Content-Security-Policy", CSP));
        headers.push(("Referrer-Policy", "no-referrer"));
    } else {
        // Shops that isolate their pages (COEP) may still load the widget.
        headers.push(("Cross-Origin-Resource-Policy", "cross-origin"));
    }
    if wants.etag_matches(etag) {
        return Some(build(304, "Not Modified", &headers, b"", true));
    }
    let gzip = asset
        .gzip
        .get_or_init(|| Some(gzip(asset.body)).filter(|z| z.len() < asset.body.len()));
    let body = match gzip {
        Some(z) if wants.gzip => {
            headers.push(("Content-Encoding", "gzip"));
            z.as_slice()
        }
        _ => asset.body,
    };
    Some(build(200, "OK", &headers, body, head.method == "HEAD"))
}

/// A browser on this machine: loopback, IPv4 or IPv6 (mapped too).
fn is_local(peer: &SocketAddr) -> bool {
    peer.ip().to_canonical().is_loopback()
}

/// An agent token for the demo page's console.
fn demo_token(shard: &Shard) -> Option<String> {
    let tenants = shard.tenants.borrow().clone();
    let tenant = tenants.get(DEMO_TENANT)?;
    let mut claims = Claims::new(
        DEMO_TENANT,
        DEMO_AGENT,
        Role::Agent,
        auth::expiry_after(DEMO_TOKEN_TTL),
    );
    claims.name = Some("Demo Agent".into());
    match auth::issue(&tenant.secret, &claims) {
        Ok(token) => Some(token),
        Err(e) => {
            tracing::warn!(error = %e, "cannot mint the demo page's agent token");
            None
        }
    }
}

fn method_not_allowed() -> Vec<u8> {
    let headers = [("Content-Type", "text/plain"), ("Allow", "GET, HEAD")];
    build(
        405,
        "Method Not Allowed",
        &headers,
        b"method not allowed\n",
        false,
    )
}

/// What the request head says about caching and compression.
#[derive(Debug, Default, PartialEq)]
struct Wants {
    gzip: bool,
    if_none_match: Option<String>,
}

impl Wants {
    fn parse(raw: &[u8]) -> Wants {
        let mut headers = [httparse::EMPTY_HEADER; crate::websocket::MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let mut wants = Wants::default();
        if request.parse(raw).is_err() {
            return wants;
        }
        for header in request.headers.iter() {
            let Ok(value) = std::str::from_utf8(header.value) else {
                continue;
            };
            if header.name.eq_ignore_ascii_case("accept-encoding") {
                wants.gzip |= value.split(',').any(|item| {
                    let mut parts = item.split(';').map(str::trim);
                    let coding = parts.next().unwrap_or("");
                    let refused = parts.any(|p| {
                        p.strip_prefix("q=")
                            .is_some_and(|q| q.parse::<f32>().is_ok_and(|q| q <= 0.0))
                    });
                    (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
                });
            } else if header.name.eq_ignore_ascii_case("if-none-match") {
                wants.if_none_match = Some(value.to_string());
            }
        }
        wants
    }

    fn etag_matches(&self, etag: &str) -> bool {
        self.if_none_match.as_deref().is_some_and(|list| {
            list.split(',')
                .map(|tag| tag.trim().trim_start_matches("W/"))
                .any(|tag| tag == etag || tag == "*")
        })
    }
}

/// A complete response; `Connection: close` like every plain HTTP answer
/// of the main listener. Without `body_too` (HEAD, 304) the headers still
/// say the body's length.
fn build(
    status: u16,
    reason: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    head_only: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512 + body.len());
    out.extend_from_slice(format!("HTTP/1.1 {status} {reason}\r\n").as_bytes());
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if status != 304 {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// 64-bit FNV-1a: a stable content hash for the `ETag`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A gzip member (RFC 1952) holding `data`, deflated at the best level.
fn gzip(data: &[u8]) -> Vec<u8> {
    let deflated = miniz_oxide::deflate::compress_to_vec(data, 10);
    let mut out = Vec::with_capacity(deflated.len() + 18);
    // Magic, deflate, no flags, no mtime, max compression, unknown OS.
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255]);
    out.extend_from_slice(&deflated);
    out.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_there_and_gzips() {
        for asset in &ASSETS {
            assert!(!asset.body.is_empty(), "{}", asset.path);
            let z = gzip(asset.body);
            assert_eq!(&z[..2], &[0x1f, 0x8b]);
            let inflated = miniz_oxide::inflate::decompress_to_vec(&z[10..z.len() - 8]).unwrap();
            assert_eq!(inflated, asset.body, "{}", asset.path);
            assert_eq!(
                u32::from_le_bytes(z[z.len() - 8..z.len() - 4].try_into().unwrap()),
                crc32fast::hash(asset.body)
            );
        }
        assert!(DEMO_PAGE.contains("{{CONSOLE}}"));
    }

    #[test]
    fn accept_encoding_and_etags() {
        let head =
            |h: &str| Wants::parse(format!("GET /widget.js HTTP/1.1\r\n{h}\r\n\r\n").as_bytes());
        assert!(head("Accept-Encoding: gzip, deflate, br").gzip);
        assert!(head("accept-encoding: br;q=1.0, GZIP;q=0.5").gzip);
        assert!(head("Accept-Encoding: *").gzip);
        assert!(!head("Accept-Encoding: gzip;q=0").gzip);
        assert!(!head("Accept-Encoding: br").gzip);
        assert!(!head("X-A: b").gzip);
        let w = head("If-None-Match: W/\"abc\", \"0123\"");
        assert!(w.etag_matches("\"0123\"") && w.etag_matches("\"abc\""));
        assert!(!w.etag_matches("\"x\""));
        assert!(!head("X-A: b").etag_matches("\"0123\""));
    }

    #[test]
    fn responses() {
        let r =
            String::from_utf8(build(200, "OK", &[("Content-Type", JS)], b"abc", false)).unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(r.contains("Content-Length: 3\r\n") && r.ends_with("\r\n\r\nabc"));
        let r = String::from_utf8(build(200, "OK", &[], b"abc", true)).unwrap();
        assert!(r.contains("Content-Length: 3\r\n") && r.ends_with("\r\n\r\n"));
        let r = String::from_utf8(build(304, "Not Modified", &[], b"", true)).unwrap();
        assert!(!r.contains("Content-Length"));
        assert_eq!(
            console_url("http://127.0.0.1:8080/", "a.b.c"),
            "http://127.0.0.1:8080/console#token=a.b.c"
        );
        assert!(is_local(&"127.0.0.1:1".parse().unwrap()));
        assert!(is_local(&"[::1]:1".parse().unwrap()));
        assert!(is_local(&"[::ffff:127.0.0.1]:1".parse().unwrap()));
        assert!(!is_local(&"10.0.0.1:1".parse().unwrap()));
    }
}
