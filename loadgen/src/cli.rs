//! The command line.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::token::Role;
use crate::util::{parse_cpus, parse_duration};
use crate::ws::Target;

/// Load generator for the kefu gateway: connection floods, open-loop chat
/// and soak runs over protocol v1, with end-to-end delivery verification.
///
/// Exit status: 0 all good; 1 a message was lost, duplicated or reordered;
/// 2 the run could not be carried out (setup failed); 3 no message problem,
/// but errors happened (failed connections, error frames).
#[derive(Debug, Parser)]
#[command(name = "kefu-loadgen", version)]
pub struct Cli {
    /// The scenario.
    #[command(subcommand)]
    pub command: Command,
}

/// The scenarios.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open N connections at a target rate and hold them: connect rate,
    /// upgrade+hello→welcome latency, the gateway's RSS per connection.
    Flood(FloodArgs),
    /// Visitors send at a fixed total rate (open loop), agents answer a
    /// share and send receipts; measures send→ack and send→delivered and
    /// checks every acked message was delivered once, in order.
    Chat(ChatArgs),
    /// Chat plus churn: clients drop and reconnect at random, resend what
    /// is unacked, resume from their cursors; survives gateway restarts.
    Soak(SoakArgs),
    /// A minimal TCP echo server (the raw loopback ceiling PERF.md
    /// compares kefu with): writes back every byte it reads.
    EchoServer(EchoServerArgs),
    /// Drives an echo server: fixed-size messages over plain TCP, open loop
    /// at --rate or saturating (--rate 0); reports round trips in the
    /// --json contract.
    Echo(EchoArgs),
}

/// The system a scenario drives (`--system`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum System {
    /// The kefu gateway, protocol v1.
    Kefu,
    /// mosquitto: MQTT 3.1.1 over WebSocket, QoS 1, persistent sessions.
    Mosquitto,
    /// nats-server, core NATS over WebSocket (no ack: PING/PONG flush).
    Nats,
    /// nats-server, JetStream over WebSocket: publish with ack into a
    /// file-backed stream, delivery from push consumers.
    Jetstream,
}

/// A CPU list (`--cpus`), as one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

/// Source addresses (`--source-ips`), as one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIps(pub Vec<IpAddr>);

/// Options every scenario has.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// The gateway's WebSocket endpoint (a peer's: its WebSocket listener,
    /// e.g. `ws://127.0.0.1:18083/mqtt` or `ws://127.0.0.1:18084/`).
    #[arg(long, default_value = "ws://127.0.0.1:8080/v1/ws")]
    pub target: Target,

    /// The system to drive: kefu, or a peer of the comparison, spoken to
    /// over its own WebSocket protocol with the same conversations, sizes
    /// and rates (see `protocol::peer`). Peers run flood and chat.
    #[arg(long, value_enum, default_value = "kefu")]
    pub system: System,

    /// How long to measure (flood: how long to hold the connections).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Traffic before measuring (chat, soak). Measuring also waits until
    /// every visitor's conversation is assigned. Flood ignores it.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Threads (glommio executors), each owning its share of the clients.
    /// Default: one per CPU in --cpus, else per CPU this process may use.
    #[arg(long)]
    pub threads: Option<usize>,

    /// CPUs to pin the threads to, e.g. `1` or `2-3` (keep them apart from
    /// the gateway's). Default: the CPUs this process may use (see taskset).
    #[arg(long, value_parser = |s: &str| parse_cpus(s).map(CpuList))]
    pub cpus: Option<CpuList>,

    /// Do not pin threads to CPUs.
    #[arg(long)]
    pub no_pin: bool,

    /// Source addresses to spread connections over, so that more than
    /// ~28k fit per gateway address: a count (`8`: 127.0.0.1-127.0.0.8),
    /// a range (`127.0.0.1-127.0.0.20`) or a comma list. Default on a
    /// loopback target: one 127.0.0.x per 1000 connections (the kernel's
    /// port search slows down as a source address fills up); elsewhere
    /// the kernel's choice.
    #[arg(long, value_parser = |s: &str| crate::net::parse_source_ips(s).map(SourceIps))]
    pub source_ips: Option<SourceIps>,

    /// The tenant.
    #[arg(long, default_value = "demo")]
    pub tenant: String,

    /// The tenant's HS256 secret, to sign tokens with.
    #[arg(long, conflicts_with_all = ["secret_file", "config"])]
    pub secret: Option<String>,

    /// A file whose text is the tenant's secret (e.g. DATA_DIR/demo.secret).
    #[arg(long, conflicts_with = "config")]
    pub secret_file: Option<PathBuf>,

    /// The gateway's TOML config: the secret of --tenant is read from it.
    #[arg(long)]
    pub config: Option<PathBuf>,

    /// Print one JSON object on the last line of stdout instead of the
    /// human-readable summary.
    #[arg(long)]
    pub json: bool,

    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,

    /// Limit for a TCP connect plus the upgrade and the welcome.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Prefix of the ids the load generator gives its visitors and agents
    /// (default: random, so runs do not meet each other's conversations).
    #[arg(long)]
    pub run_id: Option<String>,

    /// The gateway's process id: report its RSS per connection.
    #[arg(long)]
    pub gateway_pid: Option<u32>,

    /// The gateway's admin address (HOST:PORT): report its group-commit
    /// batch sizes during the measurement, from /metrics.
    #[arg(long)]
    pub admin: Option<SocketAddr>,
}

/// `flood`.
#[derive(Debug, Clone, Args)]
pub struct FloodArgs {
    /// Common options.
    #[command(flatten)]
    pub common: Common,

    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    pub connections: u64,

    /// Connections opened per second (target).
    #[arg(long, default_value_t = 20_000.0)]
    pub rate: f64,

    /// Who connects. Agents need a secret; visitors without one are
    /// anonymous.
    #[arg(long, value_enum, default_value = "visitor")]
    pub role: Role,

    /// How long to hold the connections once open (default: --duration).
    #[arg(long, value_parser = parse_duration)]
    pub hold: Option<Duration>,
}

/// `chat`.
#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    /// Common options.
    #[command(flatten)]
    pub common: Common,

    /// Visitors.
    #[arg(long, default_value_t = 100)]
    pub visitors: u32,

    /// Agents.
    #[arg(long, default_value_t = 10)]
    pub agents: u32,

    /// Visitor messages per second, in total (open loop: each visitor
    /// sends at rate/visitors, evenly spread).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,

    /// Share of visitor messages an agent answers (0..=1).
    #[arg(long, default_value_t = 0.1)]
    pub reply_fraction: f64,

    /// Bytes of text per message (at least the ~20 that carry the send time).
    #[arg(long, default_value_t = 32)]
    pub text_bytes: usize,

    /// `max_chats` in the agents' tokens (default: enough for every visitor).
    #[arg(long)]
    pub max_chats: Option<u32>,

    /// After the measurement, how long to wait for outstanding acks and
    /// deliveries before counting what is missing as lost.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub drain: Duration,

    /// Closed loop instead: each visitor sends its next message when the
    /// agent's reply to the previous one arrives (agents answer every
    /// message; --rate is ignored). Measures the latency-bound rate.
    #[arg(long)]
    pub ping_pong: bool,

    /// Visitors come without tokens (the tenant must allow it).
    #[arg(long)]
    pub anonymous: bool,

    /// Connections per second while setting up the clients.
    #[arg(long, default_value_t = 5000.0)]
    pub connect_rate: f64,
}

/// `soak`.
#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// Chat options.
    #[command(flatten)]
    pub chat: ChatArgs,

    /// Disconnections per second, over all clients, at random (half
    /// polite closes, half plain drops); each client reconnects, resends
    /// what is unacked and resumes from its cursors.
    #[arg(long, default_value_t = 1.0)]
    pub churn: f64,

    /// A churned client stays away for a random time up to this before
    /// reconnecting (long enough, and it comes back to a backlog).
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub downtime: Duration,

    /// Longest wait between reconnection attempts (gateway down).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub backoff_max: Duration,
}

/// `echo-server`.
#[derive(Debug, Clone, Args)]
pub struct EchoServerArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,

    /// Pin the server's one thread to this CPU (default: run it under
    /// `taskset`).
    #[arg(long)]
    pub cpu: Option<usize>,

    /// Exit after this long (a bound for scripts; they stop it sooner).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub duration: Duration,
}

/// `echo`.
#[derive(Debug, Clone, Args)]
pub struct EchoArgs {
    /// The echo server.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub target: SocketAddr,

    /// Connections.
    #[arg(long, default_value_t = 100)]
    pub connections: u32,

    /// Messages per second in all, open loop; 0: saturate (--window in
    /// flight per connection).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,

    /// Messages in flight per connection when saturating.
    #[arg(long, default_value_t = 16)]
    pub window: usize,

    /// Bytes per message (at least 8: the send time).
    #[arg(long, default_value_t = 64)]
    pub msg_bytes: usize,

    /// How long to measure.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Traffic before measuring.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Pin the client's one thread to this CPU.
    #[arg(long)]
    pub cpu: Option<usize>,

    /// Print one JSON object on the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "kefu-loadgen",
            "flood",
            "--cpus",
            "1,3",
            "--source-ips",
            "127.0.0.1-127.0.0.3",
            "--connections",
            "5",
            "--target",
            "ws://127.0.0.1:9/v1/ws",
        ])
        .unwrap();
        let Command::Flood(f) = cli.command else {
            panic!("not a flood")
        };
        assert_eq!(f.common.cpus, Some(CpuList(vec![1, 3])));
        assert_eq!(f.common.source_ips.unwrap().0.len(), 3);
        assert_eq!(f.connections, 5);
        let cli = Cli::try_parse_from(["kefu-loadgen", "soak", "--churn", "3", "--visitors", "7"])
            .unwrap();
        let Command::Soak(s) = cli.command else {
            panic!("not a soak")
        };
        assert_eq!((s.churn, s.chat.visitors), (3.0, 7));
        assert!(
            Cli::try_parse_from(["kefu-loadgen", "chat", "--secret", "a", "--config", "b"])
                .is_err()
        );
    }
}
