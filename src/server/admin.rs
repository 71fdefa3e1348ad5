//! The admin listener (shard 0): `/metrics`, `/health`, `/ready`, and with
//! the hidden `--fault-injection` flag `/debug/store` (see `crate::debug`).
//!
//! Apart from the chat port so that operators can firewall it separately.

use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::net::{TcpListener, TcpStream};

use super::connection::{read_some, write_all};
use super::http::{health_response, not_found, ready_response};
use crate::shard::Shard;
use crate::websocket;

/// Requests to the admin port must arrive within this time.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the admin listener until the process exits.
pub async fn serve(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(handle(shard.clone(), stream)).detach();
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn handle(shard: Rc<Shard>, mut stream: TcpStream) {
    let deadline = Instant::now() + ADMIN_TIMEOUT;
    let mut buf = vec![0u8; 8192];
    let mut filled = 0;
    let head = loop {
        match websocket::parse_request(&buf[..filled], buf.len()) {
            Ok(Some(head)) => break head,
            Ok(None) if filled < buf.len() => {}
            _ => return,
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let read = futures_lite::future::or(
            async { Some(read_some(&mut stream, &mut buf[filled..]).await) },
            async {
                glommio::timer::sleep(left).await;
                None
            },
        )
        .await;
        match read {
            Some(Ok(n)) if n > 0 => filled += n,
            _ => return,
        }
    };
    let response = match (head.method.as_str(), head.path.as_str()) {
        ("GET", "/metrics") => {
            let snapshots = shard.gather_snapshots().await;
            let body = crate::metrics::render(&snapshots);
            websocket::response(
                200,
                "OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body.as_bytes(),
                &[],
            )
        }
        ("GET", "/health") => health_response(&shard),
        ("GET", "/ready") => ready_response(&shard),
        (method, crate::debug::STORE_PATH) => {
            crate::debug::store_endpoint(shard.faults.as_ref(), method, head.query.as_deref())
        }
        _ => not_found(),
    };
    let _ = write_all(&mut stream, &response).await;
}
