//! Running the gateway: start-up, the shards' lives, shutdown.
//!
//! Start-up, on the main thread, before any shard runs:
//! 1. open the store and read back every open conversation, every queue
//!    position and assignment, and the sticky agents, then split them by
//!    owning shard under the *current* shard count (placement is recomputed
//!    from stable hashes, so the count may change between restarts);
//! 2. resolve the listen address (port 0 picks one) and hold it with a bound,
//!    non-listening socket, so that every shard binds the same port with
//!    `SO_REUSEPORT` and the kernel spreads connections across them;
//! 3. start one pinned executor per shard ([`shards::runtime`]).
//!
//! When every shard accepts, the process prints one line on stdout,
//! `kefu ready listen=ADDR admin=ADDR shards=N`, and `/health` turns 200.
//!
//! Signals go to one control thread, which tells each shard through its
//! control socket (a byte per command), so no shard ever blocks on them:
//!
//! - **SIGTERM or SIGINT** starts a drain. `/ready` turns 503, each shard
//!   stops accepting and asks its connections to close with 1001 in waves
//!   over the first third of `--drain-timeout` (so a fleet's reconnects
//!   spread out), waits for the group commits in flight and queued, and
//!   returns; at `--drain-timeout` it returns anyway. Cutting a drain short
//!   cannot lose anything acknowledged: an ack is only ever sent after its
//!   entry is on disk.
//! - **SIGHUP** reloads the tenants from the config file: a new tenant is
//!   accepted at once, a rotated secret is used for new tokens (connections
//!   already open stay), and a removed tenant's connections are closed with
//!   4401. A file that does not load is logged and changes nothing.

pub mod admin;
pub mod assets;
pub mod connection;
pub mod http;
pub mod listener;
mod recovery;

use std::error::Error;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::AsyncReadExt;
use shards::mesh::{self, Mesh};
use shards::{RuntimeConfig, ShardContext};

use crate::config::Settings;
use crate::protocol::close;
use crate::shard::envelope::Envelope;
use crate::shard::{Phase, Shard, Shared};
use crate::store::{FaultSwitch, FaultyStore, SledStore, Store};

pub use recovery::ShardBoot;

/// Connections are asked to close in this many waves during a drain.
pub const DRAIN_WAVES: u32 = 10;
/// Control byte: drain and exit.
const CONTROL_DRAIN: u8 = b'T';
/// Control byte: take the reloaded tenants.
const CONTROL_RELOAD: u8 = b'H';
/// Slots in each cross-shard ring (each slot carries a batch of envelopes).
pub const RING_SLOTS: usize = 1024;

/// What a shard reports once it accepts connections.
struct Ready {
    /// The admin listener's address (shard 0 only).
    admin: Option<SocketAddr>,
}

/// Runs the gateway until SIGTERM or SIGINT.
pub fn run(settings: Settings) -> Result<(), Box<dyn Error>> {
    raise_limits();
    let settings = Arc::new(settings);
    std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
        format!(
            "creating the data directory {}: {e}",
            settings.data_dir.display()
        )
    })?;
    let started = Instant::now();
    let sled = SledStore::open(&settings.data_dir.join("store"), &settings.store)
        .map_err(|e| format!("opening the store in {}: {e}", settings.data_dir.display()))?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "store opened"
    );
    let (store, faults): (Arc<dyn Store>, _) = if settings.fault_injection {
        tracing::warn!(
            "--fault-injection: storage faults and panics on request; a testing aid, never for production"
        );
        let switch = FaultSwitch::default();
        (
            Arc::new(FaultyStore::new(sled, switch.clone())),
            Some(switch),
        )
    } else {
        (Arc::new(sled), None)
    };
    let dedupe_filter = Arc::new(crate::conversation::filter::DedupeFilter::new(
        crate::conversation::filter::DEFAULT_BITS,
    ));
    let ids = store
        .dedupe_fingerprints(&mut |fingerprint| dedupe_filter.insert(fingerprint))
        .map_err(|e| format!("reading the dedupe index: {e}"))?;
    tracing::info!(
        ids,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "dedupe filter filled"
    );
    let recovered = store
        .recover()
        .map_err(|e| format!("recovering the store: {e}"))?;
    let boots = recovery::partition(recovered, settings.shards);
    tracing::info!(
        shards = settings.shards,
        conversations = boots.iter().map(|b| b.convs.len()).sum::<usize>(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "store recovered"
    );

    let (reservation, listen) = listener::reserve(settings.listen)?;
    let ready_flag = Arc::new(AtomicBool::new(false));
    let shared = Shared {
        settings: settings.clone(),
        store: store.clone(),
        ready: ready_flag.clone(),
        draining: Arc::new(AtomicBool::new(false)),
        dedupe_filter,
        reloaded: Arc::new(Mutex::new(settings.tenants.clone())),
        faults,
    };

    let signal_fds = control_thread(&settings, shared.reloaded.clone())?;
    // What each shard starts with, taken (moved, never cloned) by that
    // shard alone: see `shards::mesh::tickets` for why that matters.
    let starts: Vec<Option<ShardStart>> = boots
        .into_iter()
        .zip(signal_fds)
        .zip(mesh::tickets::<Envelope>(settings.shards, RING_SLOTS))
        .map(|((boot, signal), ticket)| {
            Some(ShardStart {
                boot,
                signal,
                ticket,
            })
        })
        .collect();
    let starts = Arc::new(Mutex::new(starts));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Ready>();
    let shards = settings.shards;
    let demo = settings.config_file.is_none();
    let announcer = std::thread::Builder::new()
        .name("kefu-ready".into())
        .spawn(move || {
            let mut admin = None;
            for _ in 0..shards {
                match ready_rx.recv() {
                    Ok(ready) => admin = admin.or(ready.admin),
                    Err(_) => return,
                }
            }
            drop(reservation);
            ready_flag.store(true, Ordering::Release);
            let admin = admin.map_or_else(|| "-".to_string(), |a| a.to_string());
            println!("kefu ready listen={listen} admin={admin} shards={shards}");
            tracing::info!(%listen, %admin, shards, "accepting connections");
        if demo {
            tracing::info!("demo tenant: open http://{listen}/ for the chat widget and the agent console side by side");
        }
        })?;

    let config = RuntimeConfig {
        shards: settings.shards,
        cpus: settings.cpus.clone(),
        name: "kefu-shard".into(),
        ..RuntimeConfig::default()
    };
    let results = shards::runtime::run(&config, move |ctx: ShardContext| {
        let start = starts.lock().expect("start list")[ctx.id]
            .take()
            .expect("one start per shard");
        let (shared, ready_tx) = (shared.clone(), ready_tx.clone());
        async move { shard_main(ctx, shared, start, ready_tx, listen).await }
    })?;
    for (id, result) in results.into_iter().enumerate() {
        if let Err(e) = result {
            return Err(format!("shard {id}: {e}").into());
        }
    }
    let _ = announcer.join();
    tracing::info!("stopped");
    Ok(())
}

/// What one shard starts with.
struct ShardStart {
    /// Its share of the recovered state.
    boot: ShardBoot,
    /// Its end of the control socket.
    signal: OwnedFd,
    /// Its ticket into the channel mesh.
    ticket: mesh::Ticket<Envelope>,
}

/// One shard, from start to drain.
async fn shard_main(
    ctx: ShardContext,
    shared: Shared,
    start: ShardStart,
    ready: std::sync::mpsc::Sender<Ready>,
    listen: SocketAddr,
) -> Result<(), String> {
    tracing::debug!(shard = ctx.id, "joining the mesh");
    let ShardStart {
        boot,
        signal,
        ticket,
    } = start;
    let mesh = Mesh::join(ticket).await.map_err(|e| e.to_string())?;
    tracing::debug!(shard = ctx.id, "joined the mesh");
    let shard = Rc::new(Shard::new(ctx.id, ctx.count, mesh.clone(), &shared));
    shard.set_self();
    shard.restore(boot);
    let handler = {
        let shard = shard.clone();
        Rc::new(move |envelope: Envelope| {
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| shard.handle(envelope)));
            if result.is_err() {
                crate::metrics::add(&shard.metrics.shard_panics, 1);
                tracing::error!(shard = shard.id, "panic while handling a shard message");
            }
        })
    };
    let _mesh_tasks = mesh.start(handler);
    glommio::spawn_local(shard.clone().run_lookups()).detach();
    glommio::spawn_local(shard.clone().run_commits()).detach();
    glommio::spawn_local(shard.clone().run_router_ticks()).detach();
    glommio::spawn_local(connection::sweep_idle(shard.clone())).detach();

    let main = listener::bind(listen).map_err(|e| format!("binding {listen}: {e}"))?;
    let admin = if ctx.id == 0 {
        let admin = listener::bind(shared.settings.admin_listen).map_err(|e| {
            format!(
                "binding the admin listener {}: {e}",
                shared.settings.admin_listen
            )
        })?;
        let addr = admin.local_addr().map_err(|e| e.to_string())?;
        glommio::spawn_local(admin::serve(shard.clone(), admin)).detach();
        Some(addr)
    } else {
        None
    };
    let accepting = glommio::spawn_local(listener::accept_loop(shard.clone(), main)).detach();
    let _ = ready.send(Ready { admin });

    // Commands from the control thread, a byte each on this shard's socket.
    // SAFETY: the fd is a connected Unix stream socket we own.
    let mut control = unsafe { glommio::net::UnixStream::from_raw_fd(signal.into_raw_fd()) };
    let mut byte = [0u8; 1];
    loop {
        match control.read(&mut byte).await {
            Ok(1) if byte[0] == CONTROL_RELOAD => {
                let tenants = shared
                    .reloaded
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                shard.reload_tenants(tenants);
            }
            _ => break,
        }
    }
    tracing::info!(shard = ctx.id, "draining");
    drain(&shard, shared.settings.drain_timeout).await;
    drop(accepting);
    Ok(())
}

/// Stops accepting, closes connections with 1001 in waves, finishes writing.
async fn drain(shard: &Rc<Shard>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    shard.phase.set(Phase::Draining);
    shard.draining.store(true, Ordering::Release);
    shard.phase_changed.fire();
    shard.appender.nudge();
    let conns: Vec<_> = shard.conns.borrow().values().cloned().collect();
    let per_wave = conns.len().div_ceil(DRAIN_WAVES as usize).max(1);
    let pause = (timeout / 3) / DRAIN_WAVES;
    for (i, wave) in conns.chunks(per_wave).enumerate() {
        if i > 0 {
            glommio::timer::sleep(pause).await;
        }
        for conn in wave {
            conn.request_close(close::GOING_AWAY, "gateway shutting down");
        }
    }
    while Instant::now() < deadline
        && (!shard.conns.borrow().is_empty() || !shard.appender.is_idle())
    {
        let left = deadline.saturating_duration_since(Instant::now());
        futures_lite::future::or(shard.appender.committed.listen(), async {
            glommio::timer::sleep(left.min(Duration::from_millis(20))).await;
        })
        .await;
    }
    if !shard.appender.is_idle() {
        tracing::warn!(
            shard = shard.id,
            "drain timed out with entries not yet durable; none of them was acknowledged"
        );
    }
}

/// Starts the thread that turns signals into shard commands; returns each
/// shard's end of its control socket.
fn control_thread(
    settings: &Settings,
    reloaded: Arc<Mutex<Arc<crate::tenants::Tenants>>>,
) -> Result<Vec<OwnedFd>, Box<dyn Error>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    use std::io::Write;
    let mut readers = Vec::with_capacity(settings.shards);
    let mut writers = Vec::with_capacity(settings.shards);
    for _ in 0..settings.shards {
        let (reader, writer) = std::os::unix::net::UnixStream::pair()?;
        readers.push(OwnedFd::from(reader));
        writers.push(writer);
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let config_file = settings.config_file.clone();
    std::thread::Builder::new().name("kefu-signals".into()).spawn(move || {
        for signal in signals.forever() {
            let command = match (signal, &config_file) {
                (SIGHUP, None) => {
                    tracing::info!("SIGHUP: no config file to reload (demo tenant)");
                    continue;
                }
                (SIGHUP, Some(path)) => match crate::config::reload_tenants(path) {
                    Ok(tenants) => {
                        crate::metrics::RELOADS_OK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::info!(tenants = tenants.len(), file = %path.display(), "SIGHUP: tenants reloaded");
                        *reloaded.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(tenants);
                        CONTROL_RELOAD
                    }
                    Err(e) => {
                        crate::metrics::RELOADS_FAILED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::error!(error = %e, "SIGHUP: the config file does not load; nothing changed");
                        continue;
                    }
                },
                _ => CONTROL_DRAIN,
            };
            for writer in &mut writers {
                let _ = writer.write_all(&[command]);
            }
        }
    })?;
    Ok(readers)
}

/// Raises the open-files limit to its hard limit, and the locked-memory
/// limit (io_uring) where allowed. Best effort: failures are logged.
fn raise_limits() {
    for (resource, name) in [
        (libc::RLIMIT_NOFILE, "RLIMIT_NOFILE"),
        (libc::RLIMIT_MEMLOCK, "RLIMIT_MEMLOCK"),
    ] {
        // SAFETY: plain getrlimit/setrlimit on a local struct.
        unsafe {
            let mut limit: libc::rlimit = std::mem::zeroed();
            if libc::getrlimit(resource, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
                limit.rlim_cur = limit.rlim_max;
                if libc::setrlimit(resource, &limit) != 0 {
                    tracing::warn!(limit = name, "could not raise the limit");
                }
            }
        }
    }
}
