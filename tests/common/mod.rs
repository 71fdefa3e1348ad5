//! Shared test harness: real gateways on port 0, real WebSocket clients.
//!
//! A [`Gateway`] is the `kefu` binary started with `--listen 127.0.0.1:0`,
//! `--admin-listen 127.0.0.1:0` and a temporary data directory; the test
//! learns the chosen ports from the ready line the binary prints. A
//! [`Client`] is a plain blocking tungstenite client over a real socket,
//! with a read timeout so that a missing frame fails the test instead of
//! hanging it. Nothing here sleeps to wait for the gateway: every wait is a
//! read that ends when the awaited frame (or the timeout) arrives.
#![allow(dead_code)]

pub mod hostile;
pub mod wire;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// How long a client waits for a frame before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a gateway may take to print its ready line.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start a gateway.
#[derive(Clone, Debug)]
pub struct Options {
    /// `--shards`.
    pub shards: usize,
    /// `--config` file contents (TOML), if any; written into the data dir.
    pub config: Option<String>,
    /// Extra arguments after `serve`.
    pub args: Vec<String>,
    /// Extra environment variables (set after the harness's own `RUST_LOG`).
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            shards: 1,
            config: None,
            args: Vec::new(),
            env: Vec::new(),
        }
    }
}

impl Options {
    /// Default options with `shards` shards.
    pub fn shards(shards: usize) -> Self {
        Options {
            shards,
            ..Options::default()
        }
    }

    /// Adds extra `serve` arguments.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Uses this TOML config file.
    pub fn config(mut self, toml: &str) -> Self {
        self.config = Some(toml.to_string());
        self
    }

    /// Sets an environment variable for the gateway process.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }
}

/// A running gateway process.
pub struct Gateway {
    /// The process.
    child: Option<Child>,
    /// The WebSocket/health address.
    pub addr: SocketAddr,
    /// The admin (metrics) address.
    pub admin: SocketAddr,
    /// The data directory (kept across restarts).
    pub dir: PathBuf,
    /// Owns the temporary directory.
    _temp: Option<tempfile::TempDir>,
    /// How it was started (for restarts).
    pub options: Options,
    /// stderr of the process, collected by a thread (for failure messages).
    stderr: mpsc::Receiver<String>,
    /// stderr lines taken from `stderr` so far, and how many of them
    /// [`Gateway::wait_for_log`] has looked at.
    log: std::cell::RefCell<(Vec<String>, usize)>,
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_kefu")
}

impl Gateway {
    /// Starts a gateway with a fresh data directory.
    pub fn start(options: Options) -> Gateway {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().to_path_buf();
        let mut gw = Gateway::start_in(&dir, options);
        gw._temp = Some(temp);
        gw
    }

    /// Starts a gateway on an existing data directory.
    pub fn start_in(dir: &Path, options: Options) -> Gateway {
        let mut cmd = Command::new(binary());
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir)
            .args(["--shards", &options.shards.to_string()])
            .env(
                "RUST_LOG",
                std::env::var("KEFU_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env_remove("KEFU_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(config) = &options.config {
            let path = dir.join("kefu-test.toml");
            std::fs::create_dir_all(dir).expect("data dir");
            std::fs::write(&path, config).expect("write config");
            cmd.arg("--config").arg(&path);
        }
        cmd.args(&options.args);
        for (name, value) in &options.env {
            cmd.env(name, value);
        }
        let mut child = cmd.spawn().expect("spawn kefu");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (err_tx, err_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if err_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let ready = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("kefu ready ") => break line,
                Ok(_) => continue,
                Err(_) => {
                    let _ = child.kill();
                    let log: Vec<String> = err_rx.try_iter().collect();
                    panic!("gateway did not become ready; stderr:\n{}", log.join("\n"));
                }
            }
        };
        let field = |name: &str| -> SocketAddr {
            ready
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in {ready}"))
                .parse()
                .expect("address")
        };
        Gateway {
            addr: field("listen"),
            admin: field("admin"),
            child: Some(child),
            dir: dir.to_path_buf(),
            _temp: None,
            options,
            stderr: err_rx,
            log: Default::default(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `ws://` URL of the WebSocket endpoint.
    pub fn url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// Prints a token with `kefu token` for this gateway's data dir (demo
    /// tenant unless `--tenant`/`--config` are among `args`).
    pub fn token(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(binary());
        cmd.arg("token")
            .arg("--data-dir")
            .arg(&self.dir)
            .args(args)
            .env("RUST_LOG", "error");
        if self.options.config.is_some() && !args.contains(&"--config") {
            cmd.arg("--config").arg(self.dir.join("kefu-test.toml"));
        }
        let out = cmd.output().expect("run kefu token");
        assert!(
            out.status.success(),
            "kefu token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_string()
    }

    /// An agent token for the demo tenant (or the configured tenant in `extra`).
    pub fn agent_token(&self, id: &str, extra: &[&str]) -> String {
        let mut args = vec!["--role", "agent", "--sub", id];
        args.extend_from_slice(extra);
        self.token(&args)
    }

    /// A visitor token.
    pub fn visitor_token(&self, id: &str, extra: &[&str]) -> String {
        let mut args = vec!["--role", "visitor", "--sub", id];
        args.extend_from_slice(extra);
        self.token(&args)
    }

    /// A new client connected to `/v1/ws` (no hello sent yet).
    pub fn connect(&self) -> Client {
        Client::connect(&self.url())
    }

    /// A client that said hello with `token`; returns it and its welcome.
    pub fn login(&self, token: &str) -> (Client, Value) {
        let mut c = self.connect();
        c.send(json!({"type": "hello", "token": token}));
        let welcome = c.recv_type("welcome");
        (c, welcome)
    }

    /// An anonymous visitor of `tenant`; returns it and its welcome.
    pub fn anonymous(&self, tenant: &str) -> (Client, Value) {
        let mut c = self.connect();
        c.send(json!({"type": "hello", "tenant": tenant}));
        let welcome = c.recv_type("welcome");
        (c, welcome)
    }

    /// A plain HTTP GET on the main or admin port: (status, body).
    pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
        use std::io::Write;
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).expect("read response");
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad response: {response}"));
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// The Prometheus text from `/metrics`.
    pub fn metrics(&self) -> String {
        let (status, body) = Gateway::http_get(self.admin, "/metrics");
        assert_eq!(status, 200);
        body
    }

    /// The sum of a metric over all its series (shards), e.g. `kefu_acks_total`.
    pub fn metric_sum(&self, name: &str) -> f64 {
        sum_metric(&self.metrics(), name)
    }

    /// SIGKILL: the process dies at once, mid-whatever.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit (at most `limit`). Returns the exit
    /// status, or panics if it did not exit in time.
    pub fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        self.sigterm();
        self.wait_exit(limit).0
    }

    /// Sends a signal (`libc::SIGHUP`, `libc::SIGTERM`, ...) to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) on our child's pid.
        unsafe {
            libc::kill(self.pid() as i32, signal);
        }
    }

    /// Sends SIGTERM without waiting (see [`Gateway::wait_exit`]).
    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Waits for the process to exit (at most `limit`); returns its status
    /// and how long the wait took. Panics if it did not exit in time.
    pub fn wait_exit(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return (status, started.elapsed());
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("gateway did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The config file the harness wrote (`Options::config`), to rewrite
    /// before a SIGHUP.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("kefu-test.toml")
    }

    /// Starts a new process on the same data directory.
    pub fn restart(&mut self, options: Options) {
        assert!(self.child.is_none(), "stop the gateway first");
        let temp = self._temp.take();
        *self = Gateway::start_in(&self.dir.clone(), options);
        self._temp = temp;
    }

    /// Whatever the gateway wrote on stderr so far.
    pub fn stderr(&self) -> String {
        let mut log = self.log.borrow_mut();
        log.0.extend(self.stderr.try_iter());
        log.0.join("\n")
    }

    /// Waits for a stderr line matching `pred` that no earlier call has
    /// returned or passed over, at most `limit`; returns it, or panics with
    /// what was logged. Each line is looked at once, so successive calls
    /// wait for successive events.
    pub fn wait_for_log(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        let mut log = self.log.borrow_mut();
        loop {
            while log.1 < log.0.len() {
                let i = log.1;
                log.1 += 1;
                if pred(&log.0[i]) {
                    return log.0[i].clone();
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => log.0.push(line),
                Err(_) => panic!(
                    "no such log line within {limit:?}; stderr:\n{}",
                    log.0.join("\n")
                ),
            }
        }
    }

    /// Every stderr line, once the process has exited and its stderr is
    /// closed (waits at most `limit` for the end).
    pub fn stderr_to_end(&self, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut log = self.log.borrow_mut();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => log.0.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => return log.0.clone(),
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("stderr still open after {limit:?}"),
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The sum of a metric's samples in Prometheus text.
pub fn sum_metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{') | Some(b' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The sum of a metric's samples per value of `label` (e.g. per `shard`).
pub fn metric_by_label(
    text: &str,
    name: &str,
    label: &str,
) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let key = format!("{label}=\"");
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if !(line.starts_with(name) && line.as_bytes().get(name.len()) == Some(&b'{')) {
            continue;
        }
        let Some(at) = line.find(&key) else { continue };
        let rest = &line[at + key.len()..];
        let Some(end) = rest.find('"') else { continue };
        let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        *out.entry(rest[..end].to_string()).or_insert(0.0) += value;
    }
    out
}

/// What a read from a [`Client`] found, without panicking.
#[derive(Debug)]
pub enum Incoming {
    /// A JSON text frame.
    Json(Value),
    /// The server's close frame, with its code (1005: none).
    Close(u16),
    /// Nothing within the wait.
    Timeout,
    /// The connection ended without a close frame (reset, EOF, error).
    Gone(String),
}

/// A blocking WebSocket client with a read timeout.
pub struct Client {
    /// The socket.
    pub ws: WebSocket<TcpStream>,
}

impl Client {
    /// Connects and upgrades.
    pub fn connect(url: &str) -> Client {
        Client::connect_with(url, &[])
    }

    /// Connects with extra request headers (e.g. Origin).
    pub fn connect_with(url: &str, headers: &[(&str, &str)]) -> Client {
        use tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().expect("request");
        for (k, v) in headers {
            request.headers_mut().insert(
                tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let host = url.trim_start_matches("ws://").split('/').next().unwrap();
        let stream = TcpStream::connect(host).expect("connect");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let (ws, _) = tungstenite::client(request, stream).expect("upgrade");
        Client { ws }
    }

    /// Sends one JSON frame.
    pub fn send(&mut self, value: Value) {
        self.ws
            .send(Message::text(value.to_string()))
            .expect("send");
    }

    /// Sends a raw text frame.
    pub fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_string())).expect("send");
    }

    /// The next JSON frame; panics on timeout, close or a non-text frame.
    pub fn recv(&mut self) -> Value {
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    return serde_json::from_str(&text).expect("server sent JSON")
                }
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
                Ok(other) => panic!("unexpected frame: {other:?}"),
                Err(e) => panic!("no frame: {e}"),
            }
        }
    }

    /// The next JSON frame, or `None` if nothing arrives within `wait`.
    pub fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        self.ws.get_ref().set_read_timeout(Some(wait)).unwrap();
        let got = loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => break Some(serde_json::from_str(&text).expect("JSON")),
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
                Ok(other) => panic!("unexpected frame: {other:?}"),
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break None
                }
                Err(e) => panic!("connection failed: {e}"),
            }
        };
        self.ws
            .get_ref()
            .set_read_timeout(Some(READ_TIMEOUT))
            .unwrap();
        got
    }

    /// Reads frames until one of type `kind`; panics if another type comes
    /// first (queue positions excepted, which may come at any time).
    pub fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let v = self.recv();
            if v["type"] == kind {
                return v;
            }
            if v["type"] == "queue" {
                continue;
            }
            panic!("expected a `{kind}` frame, got {v}");
        }
    }

    /// Reads frames until `pred` matches; returns it and what came before.
    pub fn recv_until(&mut self, pred: impl Fn(&Value) -> bool) -> (Value, Vec<Value>) {
        let mut skipped = Vec::new();
        loop {
            let v = self.recv();
            if pred(&v) {
                return (v, skipped);
            }
            skipped.push(v);
        }
    }

    /// Sends a chat message and waits for its ack; returns the ack.
    pub fn say(&mut self, id: &str, conv: Option<&str>, text: &str) -> Value {
        let mut frame = json!({"type": "msg", "id": id, "text": text});
        if let Some(conv) = conv {
            frame["conv"] = json!(conv);
        }
        self.send(frame);
        let (ack, _) = self.recv_until(|v| {
            (v["type"] == "ack" || v["type"] == "error")
                && v.get("id").or(v.get("ref")) == Some(&json!(id))
        });
        assert_eq!(ack["type"], "ack", "no ack for {id}: {ack}");
        ack
    }

    /// Sends one JSON frame; `false` if the connection is gone.
    pub fn try_send(&mut self, value: Value) -> bool {
        self.ws.send(Message::text(value.to_string())).is_ok()
    }

    /// The next frame or what ended the wait, never panicking on a dead
    /// connection (for tests that kill or stop the gateway under a client).
    pub fn read(&mut self) -> Incoming {
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    return Incoming::Json(serde_json::from_str(&text).expect("server sent JSON"))
                }
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) | Ok(Message::Frame(_)) => continue,
                Ok(Message::Binary(_)) => return Incoming::Gone("binary frame".into()),
                Ok(Message::Close(frame)) => {
                    // Send our half of the closing handshake now.
                    let _ = self.ws.flush();
                    return Incoming::Close(frame.map_or(1005, |f| u16::from(f.code)));
                }
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Incoming::Timeout
                }
                Err(e) => return Incoming::Gone(e.to_string()),
            }
        }
    }

    /// Waits for the server to close; returns the close code.
    pub fn expect_close(&mut self) -> u16 {
        loop {
            match self.ws.read() {
                Ok(Message::Close(Some(frame))) => return u16::from(frame.code),
                Ok(Message::Close(None)) => return 1005,
                Ok(_) => continue,
                Err(tungstenite::Error::ConnectionClosed)
                | Err(tungstenite::Error::AlreadyClosed) => {
                    panic!("closed without a close frame")
                }
                Err(e) => panic!("no close frame: {e}"),
            }
        }
    }

    /// Closes politely.
    pub fn close(mut self) {
        let _ = self.ws.close(Some(tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }));
        let _ = self.ws.flush();
    }
}
