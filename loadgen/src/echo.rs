//! The raw loopback ceiling: a minimal TCP echo server and its client.
//!
//! PERF.md compares kefu with what the same machine does when a server
//! does nothing but send bytes back: no WebSocket framing, no JSON, no
//! log, no routing. Both ends are glommio executors on one core each (the
//! runtime kefu uses), so the gap to kefu is kefu's own work.
//!
//! - `echo-server`: accepts connections and writes back every byte it
//!   reads, one task per connection.
//! - `echo`: opens `--connections` connections and sends `--msg-bytes`
//!   messages, each starting with its scheduled send time. With `--rate
//!   R` it sends in open loop, `R` per second in all, evenly spread, and
//!   measures each round trip from the scheduled time (as `chat` does);
//!   with `--rate 0` it saturates: each connection keeps `--window`
//!   messages in flight and sends a new one for every one that returns.
//!   The round trip is reported as both `ack_*` and `deliver_*` in the
//!   `--json` object (an echo's delivery is its return).

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

use crate::cli::{EchoArgs, EchoServerArgs};
use crate::report::Outcome;
use crate::stats::{record, Percentiles};
use crate::util::{init_clock, now_ns, sleep_until};
use crate::verify::Verdict;

/// The smallest message: the 8-byte send time.
const MIN_MSG: usize = 8;

fn placement(cpu: Option<usize>) -> Placement {
    cpu.map_or(Placement::Unbound, Placement::Fixed)
}

/// Runs the echo server until the process is killed (or `--duration`).
pub fn serve(args: &EchoServerArgs) -> std::io::Result<()> {
    let listen = args.listen;
    let limit = args.duration;
    let handle = LocalExecutorBuilder::new(placement(args.cpu))
        .name("echo-server")
        .spawn(move || async move {
            let listener = TcpListener::bind(listen)?;
            println!("echo-server listening on {}", listener.local_addr()?);
            let accept = async {
                loop {
                    let Ok(stream) = listener.accept().await else {
                        continue;
                    };
                    glommio::spawn_local(echo_back(stream)).detach();
                }
            };
            futures_lite::future::or(accept, async {
                glommio::timer::sleep(limit).await;
                Ok(())
            })
            .await
        })?;
    handle
        .join()
        .map_err(|e| std::io::Error::other(format!("{e:?}")))?
}

async fn echo_back(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// What the client's connections share (one thread).
struct Shared {
    /// Message size.
    size: usize,
    /// Measurement window `[start, end)` in [`now_ns`] time.
    window: (u64, u64),
    /// Stop sending after this.
    stop: u64,
    /// Round trips of messages scheduled in the window.
    rtt: RefCell<Histogram<u64>>,
    /// Messages sent.
    sent: Cell<u64>,
    /// Messages returned.
    received: Cell<u64>,
    /// Messages returned inside the window.
    received_in_window: Cell<u64>,
    /// Connections that failed.
    errors: Cell<u64>,
}

impl Shared {
    fn message(&self, out: &mut Vec<u8>, sched: u64) {
        out.extend_from_slice(&sched.to_le_bytes());
        out.resize(out.len() + self.size - MIN_MSG, b'x');
        self.sent.set(self.sent.get() + 1);
    }

    /// Counts the whole messages at the front of `buf`; returns how many.
    fn returned(&self, buf: &mut Vec<u8>) -> usize {
        let now = now_ns();
        let whole = buf.len() / self.size;
        for m in 0..whole {
            let at = m * self.size;
            let sched = u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
            if sched >= self.window.0 && sched < self.window.1 {
                record(&mut self.rtt.borrow_mut(), now.saturating_sub(sched));
            }
        }
        buf.drain(..whole * self.size);
        self.received.set(self.received.get() + whole as u64);
        if now >= self.window.0 && now < self.window.1 {
            self.received_in_window
                .set(self.received_in_window.get() + whole as u64);
        }
        whole
    }
}

/// Saturation: `window` in flight, a new message for every one back.
async fn closed_loop(mut stream: TcpStream, sh: Rc<Shared>, window: usize) {
    let mut out = Vec::new();
    for _ in 0..window {
        sh.message(&mut out, now_ns());
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = Vec::new();
    let mut in_flight = window;
    while in_flight > 0 {
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                sh.errors.set(sh.errors.get() + 1);
                return;
            }
            out.clear();
        }
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => {
                sh.errors.set(sh.errors.get() + 1);
                return;
            }
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let back = sh.returned(&mut pending);
        in_flight -= back;
        if now_ns() < sh.stop {
            for _ in 0..back {
                sh.message(&mut out, now_ns());
            }
            in_flight += back;
        }
    }
}

/// Open loop: connection `k` of `n` sends at `t0 + (k/n + j)·n/rate`.
async fn open_loop(stream: TcpStream, sh: Rc<Shared>, t0: u64, interval: f64, offset: f64) {
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let sh2 = sh.clone();
    let read = glommio::spawn_local(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut pending = Vec::new();
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    pending.extend_from_slice(&buf[..n]);
                    sh2.returned(&mut pending);
                }
            }
        }
    });
    let mut out = Vec::new();
    let mut j = 0u64;
    loop {
        let sched = t0 + (offset + j as f64 * interval) as u64;
        if sched >= sh.stop {
            break;
        }
        sleep_until(sched).await;
        // Everything due now goes in one write.
        let now = now_ns();
        loop {
            let due = t0 + (offset + j as f64 * interval) as u64;
            if due > now || due >= sh.stop {
                break;
            }
            sh.message(&mut out, due);
            j += 1;
        }
        if writer.write_all(&out).await.is_err() {
            sh.errors.set(sh.errors.get() + 1);
            break;
        }
        out.clear();
    }
    // Let the last echoes come back (every connection's, up to 2 s).
    let deadline = now_ns() + 2_000_000_000;
    while sh.received.get() < sh.sent.get() && now_ns() < deadline {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    drop(read);
}

/// What the client thread hands back.
struct Summary {
    /// Round trips of messages scheduled in the window.
    rtt: Histogram<u64>,
    /// Messages sent.
    sent: u64,
    /// Messages returned.
    received: u64,
    /// Messages returned inside the window.
    received_in_window: u64,
    /// Connections that failed.
    errors: u64,
    /// Connections made.
    connected: u64,
}

/// Runs the echo client; the outcome uses the `--json` contract.
pub fn run(args: &EchoArgs) -> Outcome {
    init_clock();
    let mut outcome = Outcome {
        scenario: "echo".into(),
        clients: u64::from(args.connections),
        ..Outcome::default()
    };
    if args.msg_bytes < MIN_MSG {
        outcome.aborted = Some(format!("--msg-bytes must be at least {MIN_MSG}"));
        return outcome;
    }
    let (target, conns, size, rate, window) = (
        args.target,
        args.connections.max(1),
        args.msg_bytes,
        args.rate,
        args.window.max(1),
    );
    let (warmup, duration) = (args.warmup, args.duration);
    let result =
        LocalExecutorBuilder::new(placement(args.cpu))
            .name("echo")
            .spawn(move || async move {
                client(target, conns, size, rate, window, warmup, duration).await
            })
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|h| {
                h.join()
                    .map_err(|e| std::io::Error::other(format!("{e:?}")))
            });
    let sh = match result {
        Ok(Ok(r)) => r,
        Ok(Err(e)) | Err(e) => {
            outcome.aborted = Some(format!("echo: {e}"));
            return outcome;
        }
    };
    outcome.ack = Percentiles::of(&sh.rtt);
    outcome.deliver = Percentiles::of(&sh.rtt);
    outcome.window_secs = duration.as_secs_f64();
    outcome.totals.connected = sh.connected;
    outcome.totals.sent = sh.sent;
    outcome.totals.acked = sh.received;
    outcome.totals.delivered = sh.received;
    outcome.totals.acked_in_window = sh.received_in_window;
    outcome.totals.delivered_in_window = sh.received_in_window;
    outcome.totals.errors = sh.errors;
    outcome.verdict = Some(Verdict {
        lost: sh.sent.saturating_sub(sh.received),
        ..Verdict::default()
    });
    outcome.notes.push(format!(
        "echo: {conns} connections, {size}-byte messages, {}",
        if rate > 0.0 {
            format!("open loop at {rate:.0}/s")
        } else {
            format!("saturating with {window} in flight per connection")
        }
    ));
    outcome
}

async fn client(
    target: SocketAddr,
    conns: u32,
    size: usize,
    rate: f64,
    window: usize,
    warmup: Duration,
    duration: Duration,
) -> std::io::Result<Summary> {
    let mut streams = Vec::new();
    for _ in 0..conns {
        let s = TcpStream::connect(target).await?;
        s.set_nodelay(true)?;
        streams.push(s);
    }
    let t0 = now_ns() + 10_000_000;
    let start = t0 + warmup.as_nanos() as u64;
    let end = start + duration.as_nanos() as u64;
    let sh = Rc::new(Shared {
        size,
        window: (start, end),
        stop: end,
        rtt: RefCell::new(Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds")),
        sent: Cell::new(0),
        received: Cell::new(0),
        received_in_window: Cell::new(0),
        errors: Cell::new(0),
    });
    let connected = streams.len() as u64;
    let interval = f64::from(conns) * 1e9 / rate.max(1e-9);
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(k, s)| {
            let sh = sh.clone();
            if rate > 0.0 {
                let offset = k as f64 / f64::from(conns) * interval;
                glommio::spawn_local(open_loop(s, sh, t0, interval, offset))
            } else {
                glommio::spawn_local(async move {
                    sleep_until(t0).await;
                    closed_loop(s, sh, window).await
                })
            }
        })
        .collect();
    // Bounded: a server that stops answering cannot hold the run.
    futures_lite::future::or(
        async {
            for t in tasks {
                t.await;
            }
        },
        sleep_until(end + 5_000_000_000),
    )
    .await;
    let rtt = sh.rtt.borrow().clone();
    Ok(Summary {
        rtt,
        sent: sh.sent.get(),
        received: sh.received.get(),
        received_in_window: sh.received_in_window.get(),
        errors: sh.errors.get(),
        connected,
    })
}
