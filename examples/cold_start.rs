//! Times the gateway's cold start: from spawning the process to the first
//! `200` from `/health`, several times over, with the two start-up phases
//! the gateway logs (the dedupe filter filled from the dedupe index, the
//! open conversations recovered).
//!
//! ```sh
//! cargo build --release --examples
//! target/release/examples/cold_start --kefu target/release/kefu --data-dir /tmp/kefu-1m
//! ```
//!
//! Each run starts `kefu serve` on free loopback ports with `--log-format
//! json`, polls `/health` every millisecond, then stops it with SIGTERM and
//! waits for it to exit before the next run. The data directory is reused
//! as it is (an empty one stays empty: nothing is sent to the gateway).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Time kefu's start, from process start to /health 200")]
struct Args {
    /// The kefu binary.
    #[arg(long, default_value = "target/release/kefu")]
    kefu: PathBuf,
    /// The data directory to start on.
    #[arg(long)]
    data_dir: PathBuf,
    /// Runs (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Shards (`--shards`).
    #[arg(long, default_value_t = 2)]
    shards: usize,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Before each run, drop the store's files from the page cache
    /// (`posix_fadvise(DONTNEED)`), so the start reads from the disk.
    #[arg(long)]
    drop_cache: bool,
}

/// Asks the kernel to drop every file under `dir` from the page cache.
fn drop_cache(dir: &std::path::Path) {
    use std::os::fd::AsRawFd;
    for entry in std::fs::read_dir(dir).expect("read the data directory") {
        let path = entry.unwrap().path();
        if path.is_dir() {
            drop_cache(&path);
        } else if let Ok(file) = std::fs::File::open(&path) {
            // SAFETY: posix_fadvise on an open descriptor; advice only.
            unsafe {
                libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
            }
        }
    }
}

/// A loopback address with a port that was free a moment ago.
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// `true` once `GET /health` answers 200.
fn healthy(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

/// One start: ms to /health 200; when, in ms from the start of the
/// store's opening, the gateway logged the store open, the dedupe filter
/// filled and the recovery done; ids in the filter, conversations recovered.
struct Run {
    health_ms: f64,
    cpu_ms: f64,
    open_ms: u64,
    filter_ms: u64,
    recovered_ms: u64,
    ids: u64,
    convs: u64,
}

fn run(args: &Args) -> Run {
    if args.drop_cache {
        drop_cache(&args.data_dir);
    }
    let (listen, admin) = (free_addr(), free_addr());
    let started = Instant::now();
    let mut child = Command::new(&args.kefu)
        .arg("serve")
        .arg("--data-dir")
        .arg(&args.data_dir)
        .args(["--listen", &listen.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .args(["--shards", &args.shards.to_string()])
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kefu");
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let deadline = started + Duration::from_secs(args.timeout);
    while !healthy(listen) {
        assert!(Instant::now() < deadline, "no /health 200 in time");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("kefu exited during start: {status}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let health_ms = started.elapsed().as_secs_f64() * 1e3;
    let cpu_ms = cpu_ms(child.id());
    // SAFETY: kill(2) on our child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "kefu exited with {status}");
    let mut run = Run {
        health_ms,
        cpu_ms,
        open_ms: 0,
        filter_ms: 0,
        recovered_ms: 0,
        ids: 0,
        convs: 0,
    };
    for line in log.join().unwrap() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let f = &v["fields"];
        match f["message"].as_str() {
            Some("store opened") => run.open_ms = f["elapsed_ms"].as_u64().unwrap_or(0),
            Some("dedupe filter filled") => {
                run.filter_ms = f["elapsed_ms"].as_u64().unwrap_or(0);
                run.ids = f["ids"].as_u64().unwrap_or(0);
            }
            Some("store recovered") => {
                run.recovered_ms = f["elapsed_ms"].as_u64().unwrap_or(0);
                run.convs = f["conversations"].as_u64().unwrap_or(0);
            }
            _ => {}
        }
    }
    run
}

/// CPU time (user + system, all threads) the process has used so far, from
/// `/proc/PID/stat`: on a busy machine this says what the start costs
/// better than the wall clock does.
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which is in parentheses).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: f64 = [11, 12] // utime, stime (fields 14 and 15 of the whole line)
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks * 1e3 / hz
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args = Args::parse();
    let mut runs = Vec::new();
    for i in 0..args.runs {
        let r = run(&args);
        println!(
            "run {}: /health 200 after {:.1} ms ({:.0} ms of CPU); store opened at {} ms, dedupe filter filled \
             ({} ids) at {} ms, store recovered ({} open conversations) at {} ms \
             (gateway's times, from the start of the store's opening)",
            i + 1,
            r.health_ms,
            r.cpu_ms,
            r.open_ms,
            r.ids,
            r.filter_ms,
            r.convs,
            r.recovered_ms
        );
        runs.push(r);
    }
    let med = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
    println!(
        "median of {}: /health 200 after {:.1} ms (fastest {:.1} ms), {:.0} ms of CPU; phases: store open {:.0} ms, dedupe filter \
         {:.0} ms, recovery {:.0} ms, from recovered to /health 200 (process start before the \
         store opens, shards, mesh, listeners) {:.0} ms",
        runs.len(),
        med(|r| r.health_ms),
        runs.iter().map(|r| r.health_ms).fold(f64::INFINITY, f64::min),
        med(|r| r.cpu_ms),
        med(|r| r.open_ms as f64),
        med(|r| (r.filter_ms - r.open_ms) as f64),
        med(|r| (r.recovered_ms - r.filter_ms) as f64),
        med(|r| r.health_ms - r.recovered_ms as f64),
    );
}
