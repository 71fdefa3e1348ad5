//! The effective settings the gateway runs with, after every source
//! (command line, environment, config file, defaults) has been merged.
//!
//! Every field says its default and why. `validate` in the parent module
//! checks the whole before anything starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::tenants::Tenants;

/// Everything `kefu serve` needs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Main listener: WebSocket at `/v1/ws`, `/health`, `/ready` and the
    /// web pages (widget, console, demo). Default `127.0.0.1:8080`:
    /// loopback until the operator chooses to expose it.
    pub listen: SocketAddr,
    /// Admin listener: `/metrics`, and `/health` and `/ready` again.
    /// Default `127.0.0.1:9090`, apart from the main port so that metrics
    /// are never exposed with the chat.
    pub admin_listen: SocketAddr,
    /// Number of shards (executors, one per core). Default: every core
    /// the process may run on.
    pub shards: usize,
    /// Cores to pin the shards to, in order. Default: the first `shards`
    /// cores the process may run on.
    pub cpus: Option<Vec<usize>>,
    /// Where the log (sled) and the demo secret live. Default `./kefu-data`.
    pub data_dir: PathBuf,
    /// How long an agent's conversations stay assigned after its last
    /// connection drops. Default 30 s: long enough for a page reload or a
    /// network blip, short enough that a shopper is not left waiting.
    pub agent_grace: Duration,
    /// Longest a shutdown may take: connections are closed with 1001 in
    /// waves over the first third of it (so reconnects spread out), the
    /// commits in flight finish, and the process exits at the latest when
    /// it runs out. Default 30 s, within systemd's default stop timeout
    /// (90 s) with room to spare.
    pub drain_timeout: Duration,
    /// Protocol and abuse limits.
    pub limits: Limits,
    /// Storage tuning.
    pub store: StoreSettings,
    /// The tenants this gateway serves.
    pub tenants: Arc<Tenants>,
    /// Where the tenants came from, for reloads: `None` is the zero-config demo tenant.
    pub config_file: Option<PathBuf>,
    /// Log output format.
    pub log_format: LogFormat,
    /// Testing aid (`--fault-injection`, hidden): storage faults and panics
    /// on request, see `crate::debug`. Default off, and never set by a
    /// config file or the environment.
    pub fault_injection: bool,
}

/// Protocol and abuse limits (all configurable).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest WebSocket message (after reassembly) and frame. Default 64 KiB
    /// (protocol v1); larger closes with 1009.
    pub max_message_bytes: usize,
    /// Largest chat `text`, in bytes of UTF-8. Default 4096 (protocol v1);
    /// larger answers `too_large` and keeps the connection.
    pub max_text_bytes: usize,
    /// Largest HTTP request head for the upgrade. Default 8 KiB, what common
    /// proxies accept; larger answers 431.
    pub max_handshake_bytes: usize,
    /// Time allowed for the HTTP upgrade request to arrive whole. Default
    /// 10 s; slower (slowloris) is dropped.
    pub handshake_timeout: Duration,
    /// Time allowed between the upgrade and the first frame. Default 10 s
    /// (protocol v1); later closes with 4408.
    pub hello_timeout: Duration,
    /// Bytes queued for one connection that it has not read yet before the
    /// gateway drops it (it is replayed from its cursor when it comes back).
    /// Default 1 MiB: room for a burst, not for a client that stopped reading.
    pub outbound_limit_bytes: usize,
    /// Accepted clock skew on token expiry. Default 5 s.
    pub token_leeway: Duration,
    /// Chat messages per second per connection (bursts up to twice this).
    /// Default 50, far above a human typist; `0` disables the limit. Other
    /// frames share a budget of four times this (at least 100 a second), and
    /// frames refused as malformed cost ten each: past the budget come
    /// `rate_limited` warnings, then close 4429.
    pub msg_rate_limit: u32,
    /// Silence (nothing received) after which a connection gets a ping;
    /// after twice this it is dropped as dead. Default 30 s: well inside the
    /// 60 s idle cut of common proxies and load balancers, so pings also keep
    /// those paths open.
    pub idle_timeout: Duration,
    /// Connections one shard holds at most; beyond, new ones get HTTP 503.
    /// Default 250,000: a shard's share of a flash sale with room to spare,
    /// while bounding the memory one core can be asked to hold. 0: no limit.
    pub max_connections_per_shard: usize,
    /// Connections from one source address at most; beyond, HTTP 503.
    /// Default 0 (no limit): shoppers behind carrier-grade NAT share
    /// addresses, so a default cap would refuse real customers. Enforced per
    /// shard as `ceil(limit / shards)`, since the kernel spreads one
    /// address's connections over the shards.
    pub max_connections_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 64 * 1024,
            max_text_bytes: 4096,
            max_handshake_bytes: 8 * 1024,
            handshake_timeout: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(10),
            outbound_limit_bytes: 1024 * 1024,
            token_leeway: Duration::from_secs(5),
            msg_rate_limit: 50,
            idle_timeout: Duration::from_secs(30),
            max_connections_per_shard: 250_000,
            max_connections_per_ip: 0,
        }
    }
}

/// Storage tuning.
#[derive(Clone, Debug)]
pub struct StoreSettings {
    /// sled's page cache. Default 256 MiB: the working set of open
    /// conversations and the dedupe index, without taking the box.
    pub cache_bytes: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            cache_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines. The default.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}
