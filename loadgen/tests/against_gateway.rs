//! `kefu-loadgen` against a real gateway on port 0: a short chat and a
//! small flood, checked through the `--json` contract and the exit status.
//!
//! The gateway binary is another package's, so Cargo does not hand its path
//! to this test (`CARGO_BIN_EXE_*` is per package). It is found, in order:
//! at `$KEFU_BIN`; else built with `cargo build -p kefu --bin kefu` (same
//! profile as this test) and taken from the target directory this test
//! binary lives in (`target/<profile>/deps/..` → `target/<profile>/kefu`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// The gateway binary (see the module docs).
fn kefu_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("KEFU_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(&workspace)
        .args(["build", "--quiet", "-p", "kefu", "--bin", "kefu"])
        .env(
            "CARGO_TARGET_DIR",
            profile_dir.parent().expect("target dir"),
        );
    if release {
        build.arg("--release");
    }
    let status = build.status().expect("running cargo build -p kefu");
    assert!(status.success(), "cargo build -p kefu failed");
    profile_dir.join("kefu")
}

/// A gateway process on port 0 with a temporary data directory.
struct Gateway {
    /// The process.
    child: Child,
    /// `host:port` of the WebSocket listener.
    listen: String,
    /// The data directory (holds `demo.secret`).
    dir: tempfile::TempDir,
}

impl Gateway {
    fn start() -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(kefu_binary())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--shards", "1", "--msg-rate-limit", "0"])
            .env("RUST_LOG", "warn")
            .env_remove("KEFU_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting kefu");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line.starts_with("kefu ready ") => break line,
                Ok(_) => continue,
                Err(_) => {
                    let _ = child.kill();
                    panic!("the gateway did not print its ready line");
                }
            }
        };
        let listen = ready
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("listen="))
            .expect("listen= in the ready line")
            .to_string();
        Gateway { child, listen, dir }
    }

    fn target(&self) -> String {
        format!("ws://{}/v1/ws", self.listen)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the load generator; returns its exit code and the JSON object on
/// the last line of its stdout.
fn loadgen(args: &[&str]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_kefu-loadgen"))
        .args(args)
        .args(["--json", "--quiet", "--threads", "1", "--no-pin"])
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

const KEYS: [&str; 18] = [
    "scenario",
    "connections",
    "sent",
    "acked",
    "delivered",
    "lost",
    "duplicated",
    "reordered",
    "errors",
    "msgs_per_sec",
    "connect_per_sec",
    "ack_p50_us",
    "ack_p99_us",
    "ack_p999_us",
    "deliver_p50_us",
    "deliver_p99_us",
    "deliver_p999_us",
    "gateway_rss_per_conn_bytes",
];

fn assert_contract_keys(v: &Value) {
    let obj = v.as_object().expect("a JSON object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort();
    let mut want = KEYS.to_vec();
    want.sort();
    assert_eq!(keys, want, "{v}");
}

#[test]
fn chat_then_flood_against_a_real_gateway() {
    let gw = Gateway::start();
    let secret = gw.dir.path().join("demo.secret");
    let target = gw.target();

    let (code, chat) = loadgen(&[
        "chat",
        "--target",
        &target,
        "--secret-file",
        secret.to_str().unwrap(),
        "--visitors",
        "10",
        "--agents",
        "2",
        "--rate",
        "200",
        "--reply-fraction",
        "0.5",
        "--duration",
        "2s",
        "--warmup",
        "500ms",
    ]);
    assert_contract_keys(&chat);
    assert_eq!(chat["scenario"], "chat");
    assert_eq!(chat["connections"], 12);
    assert_eq!(chat["lost"], 0, "{chat}");
    assert_eq!(chat["duplicated"], 0, "{chat}");
    assert_eq!(chat["reordered"], 0, "{chat}");
    assert_eq!(chat["errors"], 0, "{chat}");
    let (sent, acked, delivered) = (
        chat["sent"].as_u64().unwrap(),
        chat["acked"].as_u64().unwrap(),
        chat["delivered"].as_u64().unwrap(),
    );
    // 200/s for 2.5 s, plus half as many replies.
    assert!(sent > 400, "{chat}");
    assert_eq!((acked, delivered), (sent, sent), "{chat}");
    assert!(chat["msgs_per_sec"].as_f64().unwrap() > 100.0, "{chat}");
    assert!(chat["ack_p99_us"].as_u64().unwrap() > 0, "{chat}");
    assert!(chat["deliver_p50_us"].as_u64().unwrap() > 0, "{chat}");
    assert_eq!(code, 0, "{chat}");

    let pid = gw.child.id().to_string();
    let (code, flood) = loadgen(&[
        "flood",
        "--target",
        &target,
        "--connections",
        "200",
        "--rate",
        "2000",
        "--duration",
        "1s",
        "--gateway-pid",
        &pid,
    ]);
    assert_contract_keys(&flood);
    assert_eq!(flood["scenario"], "flood");
    assert_eq!(flood["connections"], 200, "{flood}");
    assert_eq!(flood["errors"], 0, "{flood}");
    assert_eq!(flood["lost"], 0);
    assert!(flood["connect_per_sec"].as_f64().unwrap() > 0.0, "{flood}");
    assert!(flood["gateway_rss_per_conn_bytes"].is_number(), "{flood}");
    assert!(flood["ack_p50_us"].is_null(), "no messages in a flood");
    assert_eq!(code, 0, "{flood}");
}

#[test]
fn an_unreachable_gateway_is_a_setup_failure() {
    // Port 1 on loopback: nothing listens there.
    let (code, v) = loadgen(&[
        "chat",
        "--target",
        "ws://127.0.0.1:1/v1/ws",
        "--secret",
        "x",
        "--visitors",
        "1",
        "--agents",
        "1",
        "--connect-timeout",
        "200ms",
        "--duration",
        "1s",
    ]);
    assert_contract_keys(&v);
    assert_eq!(code, 2, "{v}");
}
