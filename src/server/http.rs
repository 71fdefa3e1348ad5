//! The HTTP side of the main listener: the upgrade request, `/health`, and
//! the web front ends ([`super::assets`]).

use std::time::{Duration, Instant};

use glommio::net::TcpStream;

use super::connection::{read_some, write_all};
use crate::metrics::HandshakeFailure;
use crate::shard::Shard;
use crate::websocket::{self, HttpError, RequestHead};

/// The WebSocket endpoint of protocol v1.
pub const WS_PATH: &str = "/v1/ws";

/// Reads the request and answers it. Returns the upgrade request and the
/// bytes that followed it when the connection became a WebSocket; `None`
/// when the request was answered (or refused) over plain HTTP.
pub async fn handshake(shard: &Shard, stream: &mut TcpStream) -> Option<(RequestHead, Vec<u8>)> {
    let limits = &shard.settings.limits;
    let deadline = Instant::now() + limits.handshake_timeout;
    let mut buf = shard.pool.take();
    buf.resize(limits.max_handshake_bytes + 1, 0);
    let mut filled = 0;
    let head = loop {
        match websocket::parse_request(&buf[..filled], limits.max_handshake_bytes) {
            Ok(Some(head)) => break head,
            Ok(None) => {}
            Err(e) => {
                let why = if e.status == 431 {
                    HandshakeFailure::TooLarge
                } else {
                    HandshakeFailure::BadRequest
                };
                shard.metrics.handshake_failed(why);
                respond(stream, &e.to_response()).await;
                shard.pool.give(buf);
                return None;
            }
        }
        if filled == buf.len() {
            shard.metrics.handshake_failed(HandshakeFailure::TooLarge);
            respond(
                stream,
                &HttpError {
                    status: 431,
                    reason: "Request Header Fields Too Large",
                    message: "request head too large",
                    headers: &[],
                }
                .to_response(),
            )
            .await;
            shard.pool.give(buf);
            return None;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let read = futures_lite::future::or(
            async { Some(read_some(stream, &mut buf[filled..]).await) },
            async {
                glommio::timer::sleep(left.max(Duration::from_millis(1))).await;
                None
            },
        )
        .await;
        match read {
            Some(Ok(0)) | Some(Err(_)) => {
                shard.pool.give(buf);
                return None;
            }
            Some(Ok(n)) => filled += n,
            None => {
                shard.metrics.handshake_failed(HandshakeFailure::Timeout);
                respond(
                    stream,
                    &websocket::response(408, "Request Timeout", "text/plain", b"", &[]),
                )
                .await;
                shard.pool.give(buf);
                return None;
            }
        }
    };
    let leftover = buf[head.head_len..filled].to_vec();
    let asset = (head.path != WS_PATH)
        .then(|| super::assets::respond(shard, stream, &head, &buf[..head.head_len]))
        .flatten();
    shard.pool.give(buf);
    match (head.method.as_str(), head.path.as_str()) {
        (_, WS_PATH) => match websocket::accept_upgrade(&head) {
            Ok(response) => {
                if write_all(stream, &response).await.is_err() {
                    return None;
                }
                Some((head, leftover))
            }
            Err(e) => {
                shard.metrics.handshake_failed(HandshakeFailure::BadRequest);
                respond(stream, &e.to_response()).await;
                None
            }
        },
        ("GET", "/health") => {
            respond(stream, &health_response(shard)).await;
            None
        }
        ("GET", "/ready") => {
            respond(stream, &ready_response(shard)).await;
            None
        }
        _ => {
            respond(stream, &asset.unwrap_or_else(not_found)).await;
            None
        }
    }
}

/// Answers a plain HTTP request and closes the connection without losing
/// the answer: a close with unread input makes the kernel reset the
/// connection, which can destroy the response on the client's side (see
/// `connection::lingering_close`).
async fn respond(stream: &mut TcpStream, response: &[u8]) {
    if write_all(stream, response).await.is_ok() {
        super::connection::lingering_close(stream).await;
    }
}

/// `/health`: 200 once every shard accepts connections and the store is open.
pub fn health_response(shard: &Shard) -> Vec<u8> {
    if shard.ready.load(std::sync::atomic::Ordering::Acquire) {
        websocket::response(200, "OK", "application/json", br#"{"status":"ok"}"#, &[])
    } else {
        websocket::response(
            503,
            "Service Unavailable",
            "application/json",
            br#"{"status":"starting"}"#,
            &[],
        )
    }
}

/// `/ready`: 200 once every shard is up and recovery has finished, 503
/// before that and while draining (load balancers stop sending new
/// connections; those open are closed in waves).
pub fn ready_response(shard: &Shard) -> Vec<u8> {
    use std::sync::atomic::Ordering;
    if shard.draining.load(Ordering::Acquire) {
        websocket::response(
            503,
            "Service Unavailable",
            "application/json",
            br#"{"status":"draining"}"#,
            &[],
        )
    } else if shard.ready.load(Ordering::Acquire) {
        websocket::response(200, "OK", "application/json", br#"{"status":"ready"}"#, &[])
    } else {
        websocket::response(
            503,
            "Service Unavailable",
            "application/json",
            br#"{"status":"starting"}"#,
            &[],
        )
    }
}

/// 404 for anything else.
pub fn not_found() -> Vec<u8> {
    websocket::response(404, "Not Found", "text/plain", b"not found\n", &[])
}
