//! `kefu-loadgen --system mosquitto|nats|jetstream` against the real peers,
//! started on free loopback ports with the recorded configurations of
//! `scripts/peers/`: a short chat each, checked through the `--json`
//! contract (nothing lost, duplicated or reordered) and the exit status,
//! and an echo run against `kefu-loadgen echo-server`.
//!
//! The peers are Debian packages (`scripts/peers.sh install`). A peer that
//! is not installed is skipped with a message on stderr, so `cargo test
//! --workspace` passes without them.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The first of `candidates` that exists.
fn find_binary(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Waits up to 10 s for something to listen on `port`.
fn wait_port(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A server process, killed when dropped.
struct Server {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The recorded configuration `name` with its placeholders filled in.
fn config(name: &str, dir: &Path, ports: &[(&str, u16)]) -> PathBuf {
    let recorded = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/peers")
        .join(name);
    let mut text = std::fs::read_to_string(&recorded).expect("recorded config");
    text = text.replace("@DATA@", dir.join("data").to_str().expect("UTF-8 path"));
    for (key, port) in ports {
        text = text.replace(&format!("@{key}@"), &port.to_string());
    }
    std::fs::create_dir_all(dir.join("data")).expect("data dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing the config");
    path
}

fn start(bin: &Path, conf: &Path, ws_port: u16, dir: tempfile::TempDir) -> Server {
    let child = Command::new(bin)
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the peer");
    let server = Server { child, _dir: dir };
    assert!(wait_port(ws_port), "{} did not listen", bin.display());
    server
}

/// mosquitto on free ports, or `None` (with a message) if not installed.
fn mosquitto() -> Option<(Server, String)> {
    let Some(bin) = find_binary(&["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]) else {
        eprintln!("skipping: mosquitto is not installed (scripts/peers.sh install)");
        return None;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (ws, mqtt) = (free_port(), free_port());
    let conf = config(
        "mosquitto.conf",
        dir.path(),
        &[("WS_PORT", ws), ("MQTT_PORT", mqtt)],
    );
    Some((
        start(&bin, &conf, ws, dir),
        format!("ws://127.0.0.1:{ws}/mqtt"),
    ))
}

/// nats-server on free ports, or `None` (with a message) if not installed.
fn nats() -> Option<(Server, String)> {
    let Some(bin) = find_binary(&["/usr/sbin/nats-server", "/usr/bin/nats-server"]) else {
        eprintln!("skipping: nats-server is not installed (scripts/peers.sh install)");
        return None;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (ws, client, http) = (free_port(), free_port(), free_port());
    let conf = config(
        "nats-server.conf",
        dir.path(),
        &[
            ("WS_PORT", ws),
            ("CLIENT_PORT", client),
            ("HTTP_PORT", http),
        ],
    );
    Some((start(&bin, &conf, ws, dir), format!("ws://127.0.0.1:{ws}/")))
}

/// Runs the load generator; returns its exit code and its `--json` object.
fn loadgen(args: &[&str]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_kefu-loadgen"))
        .args(args)
        .arg("--json")
        .output()
        .expect("running kefu-loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let json: Value = serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "last stdout line is not JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

fn short_chat(system: &str, target: &str) {
    let (code, v) = loadgen(&[
        "chat",
        "--system",
        system,
        "--target",
        target,
        "--visitors",
        "10",
        "--agents",
        "2",
        "--rate",
        "200",
        "--reply-fraction",
        "0.5",
        "--duration",
        "1s",
        "--warmup",
        "300ms",
        "--quiet",
        "--threads",
        "1",
        "--no-pin",
    ]);
    assert_eq!(code, 0, "{system}: {v}");
    assert_eq!(v["scenario"], "chat");
    for key in ["lost", "duplicated", "reordered", "errors"] {
        assert_eq!(v[key], 0, "{system} {key}: {v}");
    }
    let (sent, acked, delivered) = (
        v["sent"].as_u64().unwrap(),
        v["acked"].as_u64().unwrap(),
        v["delivered"].as_u64().unwrap(),
    );
    assert!(sent >= 200, "{system}: {v}");
    assert_eq!((acked, delivered), (sent, sent), "{system}: {v}");
    assert!(v["ack_p99_us"].as_u64().is_some(), "{system}: {v}");
    assert!(v["deliver_p99_us"].as_u64().is_some(), "{system}: {v}");
}

#[test]
fn chat_over_mqtt_against_mosquitto() {
    let Some((_server, target)) = mosquitto() else {
        return;
    };
    short_chat("mosquitto", &target);
}

#[test]
fn chat_over_core_nats_and_jetstream_against_nats_server() {
    let Some((_server, target)) = nats() else {
        return;
    };
    short_chat("nats", &target);
    short_chat("jetstream", &target);
    // A flood holds subscribed connections.
    let (code, v) = loadgen(&[
        "flood",
        "--system",
        "nats",
        "--target",
        &target,
        "--connections",
        "50",
        "--rate",
        "1000",
        "--duration",
        "300ms",
        "--quiet",
        "--threads",
        "1",
        "--no-pin",
    ]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["connections"], 50, "{v}");
}

#[test]
fn soak_refuses_peers() {
    let (code, v) = loadgen(&[
        "soak",
        "--system",
        "nats",
        "--target",
        "ws://127.0.0.1:9/",
        "--quiet",
    ]);
    assert_eq!(code, 2, "{v}");
}

#[test]
fn echo_against_the_echo_server() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_kefu-loadgen"))
        .args(["echo-server", "--listen", &listen, "--duration", "60s"])
        .stdout(Stdio::null())
        .spawn()
        .expect("starting the echo server");
    let _server = Server {
        child,
        _dir: tempfile::tempdir().expect("temp dir"),
    };
    assert!(wait_port(port));
    for rate in ["0", "2000"] {
        let (code, v) = loadgen(&[
            "echo",
            "--target",
            &listen,
            "--connections",
            "4",
            "--rate",
            rate,
            "--duration",
            "500ms",
            "--warmup",
            "200ms",
        ]);
        assert_eq!(code, 0, "{v}");
        assert_eq!(v["scenario"], "echo");
        assert_eq!(v["lost"], 0, "{v}");
        assert!(v["msgs_per_sec"].as_f64().unwrap() > 100.0, "{v}");
        assert!(v["ack_p99_us"].as_u64().is_some(), "{v}");
    }
}
