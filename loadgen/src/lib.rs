//! `kefu-loadgen`: the load generator bundled with the kefu gateway.
//!
//! It speaks protocol v1 (PROTOCOL.md) the way real clients do: it signs
//! its own HS256 tokens (or comes as anonymous visitors), says hello, sends
//! messages with ids of its own, answers as agents, sends cumulative
//! receipts, and on reconnection resends what is unacked with the same ids
//! and drops redelivered entries by `seq`.
//!
//! # Design
//!
//! - **Thread per core** ([`scenario`]): the gateway's own substrate
//!   (`shards::runtime::run`) starts one glommio executor per `--cpus`
//!   entry. Each thread owns its clients, its counters and its
//!   HdrHistograms outright; no lock is taken on the hot path. Histograms
//!   and verification records are merged once, at the end. A coordinator
//!   (the main thread) only reads counters and moves the run's phase.
//! - **Open loop** ([`scenario`]): visitors' send times are scheduled in
//!   advance at the total `--rate`, never held back by missing acks, and
//!   every latency counts from the scheduled time. A stalled gateway
//!   therefore shows its stall in the percentiles instead of hiding it by
//!   slowing the generator down (coordinated omission). The scheduled time
//!   travels in the message text, so the receiving thread can measure
//!   delivery against the same clock origin ([`util::now_ns`]).
//! - **Hand-rolled WebSocket client framing** ([`ws`]): 100,000 held
//!   connections must cost the generator less than the ≤ 8 KiB each that
//!   the gateway is allowed. Reads go to one scratch buffer per thread and
//!   frames are parsed in place; an idle connection owns no buffer. Client
//!   frames are masked in place in the connection's outgoing buffer.
//! - **Verification** ([`verify`]): every client records, per
//!   conversation, the `seq`s of its acked messages and of what it
//!   received; duplicates and reordering are caught as they arrive, losses
//!   at the end by merging every thread's records.
//! - **Protocols** ([`protocol`]): scenarios speak in chat terms through a
//!   [`protocol::Protocol`] trait; kefu v1 is one implementation, the
//!   peers of the benchmark are others (`--system`): MQTT 3.1.1 for
//!   mosquitto ([`protocol::mqtt`]), core NATS and JetStream for
//!   nats-server ([`protocol::nats`]), mapped onto chat terms the same way
//!   ([`protocol::peer`]).
//! - **The loopback ceiling** ([`echo`]): a minimal TCP echo server and
//!   client on the same runtime, for the ratio PERF.md gives.
#![warn(missing_docs)]

pub mod cli;
pub mod client;
pub mod control;
pub mod echo;
pub mod gateway;
pub mod net;
pub mod protocol;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod token;
pub mod util;
pub mod verify;
pub mod ws;

use std::process::ExitCode;

use cli::{ChatArgs, Cli, Command, Common, FloodArgs, System};
use protocol::kefu::KefuV1;
use protocol::mqtt::Mqtt;
use protocol::nats::Nats;
use report::Outcome;

/// Runs the command line; returns the exit status (see [`cli::Cli`]).
pub fn run(cli: Cli) -> ExitCode {
    let (outcome, json) = match &cli.command {
        Command::Flood(args) => (flood(args), args.common.json),
        Command::Chat(args) => (chat(args, None), args.common.json),
        Command::Soak(args) => (
            chat(
                &args.chat,
                Some(control::Churn {
                    per_sec: args.churn,
                    downtime: args.downtime,
                    backoff_max: args.backoff_max,
                }),
            ),
            args.chat.common.json,
        ),
        Command::EchoServer(args) => {
            return match echo::serve(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("kefu-loadgen echo-server: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Echo(args) => (echo::run(args), args.json),
    };
    if json {
        if let Some(why) = &outcome.aborted {
            eprintln!("kefu-loadgen: {why}");
        }
        for note in &outcome.notes {
            eprintln!("kefu-loadgen: note: {note}");
        }
        for (kind, n) in &outcome.error_kinds {
            eprintln!("kefu-loadgen: error: {n} × {kind}");
        }
        for line in outcome.batch_lines() {
            eprintln!("kefu-loadgen: {line}");
        }
        println!(
            "{}",
            serde_json::to_string(&outcome.json()).expect("the report serialises")
        );
    } else {
        print!("{}", outcome.human());
    }
    ExitCode::from(outcome.exit_code())
}

/// A peer run needs a run id known up front (its topics carry it) and
/// signed clients (so that every client's id is known before its hello;
/// the peers ignore the tokens themselves).
fn peer_common(common: &Common) -> Common {
    let mut c = common.clone();
    if c.run_id.is_none() {
        c.run_id = Some(format!("{:06x}", util::rand_below(1 << 24)));
    }
    if c.secret.is_none() && c.secret_file.is_none() && c.config.is_none() {
        c.secret = Some("peer-runs-sign-nothing-that-is-checked".into());
    }
    c
}

fn flood(args: &FloodArgs) -> Outcome {
    let system = args.common.system;
    if system == System::Kefu {
        return scenario::run_flood(KefuV1, args);
    }
    let mut args = args.clone();
    args.common = peer_common(&args.common);
    let run = args.common.run_id.clone().expect("set");
    match system {
        System::Mosquitto => scenario::run_flood(Mqtt::new(&run, 1), &args),
        System::Nats | System::Jetstream => {
            scenario::run_flood(Nats::new(&run, 1, system == System::Jetstream), &args)
        }
        System::Kefu => unreachable!(),
    }
}

fn chat(args: &ChatArgs, churn: Option<control::Churn>) -> Outcome {
    let system = args.common.system;
    if system == System::Kefu {
        return scenario::run_chat(KefuV1, args, churn);
    }
    if churn.is_some() {
        return Outcome {
            scenario: "soak".into(),
            aborted: Some(
                "soak drives kefu only: the peers have no resume-from-cursor to compare".into(),
            ),
            ..Outcome::default()
        };
    }
    let mut args = args.clone();
    args.common = peer_common(&args.common);
    let run = args.common.run_id.clone().expect("set");
    let agents = args.agents;
    match system {
        System::Mosquitto => scenario::run_chat(Mqtt::new(&run, agents), &args, None),
        System::Nats | System::Jetstream => scenario::run_chat(
            Nats::new(&run, agents, system == System::Jetstream),
            &args,
            None,
        ),
        System::Kefu => unreachable!(),
    }
}
