//! The flags of `kefu serve`: the top layer of the configuration.
//!
//! Every flag is optional here: a flag that is absent leaves the value to
//! the environment (`KEFU_<FLAG>`), then the config file, then the default.
//! The environment is read by [`super::load`], not by clap, so that the
//! loader can be tested with an environment of its own and can name the
//! variable a bad value came from.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::values::{parse_duration, ByteSize, CpuList};
use super::LogFormat;

/// Flags of `kefu serve` (bare `kefu` is `kefu serve` with none of them).
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct ServeArgs {
    /// Main listener: WebSocket `/v1/ws`, `/health`, `/ready`, the web pages [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Admin listener: `/metrics`, `/health`, `/ready` [default: 127.0.0.1:9090]
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,

    /// Number of shards, one executor per core [default: the CPUs this process may run on]
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,

    /// CPUs to pin the shards to, in order, e.g. `0,2-3` [default: the first N allowed CPUs]
    #[arg(long, value_name = "LIST")]
    pub cpus: Option<CpuList>,

    /// Directory of the message log and the demo tenant's secret [default: ./kefu-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// TOML config file: tenants, and any setting below [default: none, demo tenant]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// How long a disconnected agent keeps its conversations [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub agent_grace: Option<Duration>,

    /// Longest a shutdown (SIGTERM) may take before the process exits anyway [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub drain_timeout: Option<Duration>,

    /// Log output on stderr: text or json [default: text]
    #[arg(long, value_name = "text|json")]
    pub log_format: Option<LogFormat>,

    /// Protocol and abuse limits.
    #[command(flatten)]
    pub limits: LimitArgs,

    /// sled's page cache [default: 256MiB]
    #[arg(long, value_name = "BYTES", help_heading = "Storage")]
    pub store_cache_bytes: Option<ByteSize>,

    /// A testing aid, hidden from `--help` and never for production: storage
    /// faults switched on the admin listener and panics on request (see
    /// `crate::debug`). Command line only (no environment variable, no
    /// config file key), so a deployment cannot turn it on by accident.
    #[arg(long, hide = true)]
    pub fault_injection: bool,
}

/// One flag per field of [`super::Limits`]; their defaults are documented there.
#[derive(Args, Clone, Debug, Default, PartialEq)]
#[command(next_help_heading = "Limits")]
pub struct LimitArgs {
    /// Largest WebSocket message; larger closes with 1009 [default: 64KiB]
    #[arg(long, value_name = "BYTES")]
    pub max_message_bytes: Option<ByteSize>,

    /// Largest chat text, at most 64KiB; larger answers `too_large` [default: 4096]
    #[arg(long, value_name = "BYTES")]
    pub max_text_bytes: Option<ByteSize>,

    /// Largest HTTP upgrade request head; larger answers 431 [default: 8KiB]
    #[arg(long, value_name = "BYTES")]
    pub max_handshake_bytes: Option<ByteSize>,

    /// Time allowed for the whole HTTP upgrade request [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub handshake_timeout: Option<Duration>,

    /// Time allowed from the upgrade to `hello`; later closes with 4408 [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub hello_timeout: Option<Duration>,

    /// Unread bytes queued for one connection before it is dropped [default: 1MiB]
    #[arg(long, value_name = "BYTES")]
    pub outbound_limit: Option<ByteSize>,

    /// Accepted clock skew on token expiry [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub token_leeway: Option<Duration>,

    /// Chat messages per second per connection, bursts to twice; 0 disables [default: 50]
    #[arg(long, value_name = "N")]
    pub msg_rate_limit: Option<u32>,

    /// Silence after which a connection is pinged, then dropped at twice this [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,

    /// Connections one shard holds at most; 0: no limit [default: 250000]
    #[arg(long, value_name = "N")]
    pub max_connections_per_shard: Option<usize>,

    /// Connections from one source IP address at most; 0: no limit [default: 0]
    #[arg(long, value_name = "N")]
    pub max_connections_per_ip: Option<usize>,
}

/// The environment variable that stands in for a flag: `--max-text-bytes`
/// is `KEFU_MAX_TEXT_BYTES`.
pub fn env_var_for(flag: &str) -> String {
    let name = flag.trim_start_matches('-');
    format!("KEFU_{}", name.replace('-', "_").to_ascii_uppercase())
}

/// Appends `[env: KEFU_...]` to the help of every flag of `cmd` that the
/// environment can set, so `--help` shows the variable next to the flag.
pub(crate) fn document_env(cmd: clap::Command, flags: &[&str]) -> clap::Command {
    cmd.mut_args(|arg| match arg.get_long() {
        Some(long) if flags.contains(&long) => {
            let var = env_var_for(long);
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            arg.help(format!("{help} [env: {var}]"))
        }
        _ => arg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_follow_the_flags() {
        assert_eq!(env_var_for("--listen"), "KEFU_LISTEN");
        assert_eq!(env_var_for("outbound-limit"), "KEFU_OUTBOUND_LIMIT");
        assert_eq!(env_var_for("--msg-rate-limit"), "KEFU_MSG_RATE_LIMIT");
    }
}
