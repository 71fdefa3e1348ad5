//! Testing aids behind the hidden `kefu serve --fault-injection` flag.
//!
//! They exist so that tests (and operators rehearsing an incident on a
//! staging box) can make the gateway meet the failures it must survive,
//! without a broken disk or a bug at hand. Without the flag none of this is
//! reachable: the endpoint answers 404, the frames are unknown types
//! (`bad_request`). Never run production with the flag.
//!
//! - **Storage faults.** The store is wrapped in a
//!   [`FaultyStore`](crate::store::FaultyStore) whose
//!   [`FaultSwitch`] is flipped on the admin listener:
//!   `POST /debug/store?mode=fail_commits` (every commit fails, writing
//!   nothing; reads work), `mode=fail_all` (every store call fails) and
//!   `mode=healthy`. `GET /debug/store` shows the mode. The answer is
//!   `{"mode":"..."}`. Chat messages then get `unavailable` and system
//!   entries wait, exactly as on a real disk failure caught before the write.
//! - **A panic while handling one connection's frame:** the text frame
//!   `{"type":"__panic"}` panics inside the session's frame handler; the
//!   connection closes with 1011, the panic is counted
//!   (`kefu_connection_panics_total`), and the shard goes on.
//! - **A panic in a shard's message handler:**
//!   `{"type":"__panic_shard","conv":"c-..."}` sends a message to the
//!   shard that owns that conversation, whose handler panics; it is caught
//!   and counted (`kefu_shard_panics_total`), and the shard goes on.
//!   Nothing is answered.

use std::rc::Rc;

use crate::ids::{ConnRef, ConvId};
use crate::protocol::ErrorCode;
use crate::session::Conn;
use crate::shard::envelope::Envelope;
use crate::shard::Shard;
use crate::store::{FaultMode, FaultSwitch};
use crate::websocket;

/// The admin path of the storage fault switch.
pub const STORE_PATH: &str = "/debug/store";

/// The wire name of a fault mode.
pub fn mode_name(mode: FaultMode) -> &'static str {
    match mode {
        FaultMode::Healthy => "healthy",
        FaultMode::FailCommits => "fail_commits",
        FaultMode::FailAll => "fail_all",
    }
}

/// The fault mode a query string (`mode=...`) names.
pub fn parse_mode(query: Option<&str>) -> Option<FaultMode> {
    let value = query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("mode="))?;
    [
        FaultMode::Healthy,
        FaultMode::FailCommits,
        FaultMode::FailAll,
    ]
    .into_iter()
    .find(|m| mode_name(*m) == value)
}

/// The admin listener's answer to a request for [`STORE_PATH`]: 404
/// without `--fault-injection`.
pub fn store_endpoint(switch: Option<&FaultSwitch>, method: &str, query: Option<&str>) -> Vec<u8> {
    let Some(switch) = switch else {
        return crate::server::http::not_found();
    };
    let answer = |switch: &FaultSwitch| {
        let body = format!("{{\"mode\":\"{}\"}}\n", mode_name(switch.get()));
        websocket::response(200, "OK", "application/json", body.as_bytes(), &[])
    };
    match method {
        "GET" => answer(switch),
        "POST" => match parse_mode(query) {
            Some(mode) => {
                tracing::warn!(mode = mode_name(mode), "storage fault mode set");
                switch.set(mode);
                answer(switch)
            }
            None => websocket::response(
                400,
                "Bad Request",
                "text/plain",
                b"mode must be healthy, fail_commits or fail_all\n",
                &[],
            ),
        },
        _ => websocket::response(
            405,
            "Method Not Allowed",
            "text/plain",
            b"GET or POST\n",
            &[("Allow", "GET, POST")],
        ),
    }
}

/// A debug frame's fields.
#[derive(serde::Deserialize)]
struct DebugFrame {
    #[serde(rename = "type")]
    kind: String,
    conv: Option<String>,
}

impl Shard {
    /// With `--fault-injection`: carries out a debug frame; returns whether
    /// `text` was one (otherwise it is handled as usual).
    pub fn debug_frame(&self, conn: &Rc<Conn>, text: &str) -> bool {
        // Ordinary frames pay for one substring search, and only with the flag.
        if !text.contains("__panic") {
            return false;
        }
        let Ok(frame) = serde_json::from_str::<DebugFrame>(text) else {
            return false;
        };
        match frame.kind.as_str() {
            "__panic" => panic!("a __panic frame asked for a panic (--fault-injection)"),
            "__panic_shard" => {
                match frame
                    .conv
                    .and_then(|conv| self.conv_shard(&ConvId::from(conv.as_str())))
                {
                    Some(shard) => self.send(shard, Envelope::DebugPanic),
                    None => self.error_to(
                        ConnRef {
                            shard: self.id,
                            id: conn.id,
                        },
                        ErrorCode::BadRequest,
                        "__panic_shard needs the `conv` of a conversation",
                        None,
                    ),
                }
                true
            }
            _ => false,
        }
    }
}
