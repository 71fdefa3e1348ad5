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
//! Shutdown (SIGTERM or SIGINT): each shard stops accepting, asks every
//! connection to close with 1001 (a client reconnects elsewhere or later),
//! waits for the group commits in flight and queued, and returns; the
//! whole drain is bounded by [`DRAIN_TIMEOUT`], after which the shard
//! returns anyway. Nothing acknowledged can be lost by cutting a drain
//! short: an ack is only ever sent after its entry is on disk.

pub mod admin;
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
use crate::store::{SledStore, Store};

pub use recovery::ShardBoot;

/// How long a drain may take before the shard stops anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
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
    let store: Arc<dyn Store> = Arc::new(
        SledStore::open(&settings.data_dir.join("store"), &settings.store)
            .map_err(|e| format!("opening the store in {}: {e}", settings.data_dir.display()))?,
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
    };

    let signal_fds = signal_sockets(settings.shards)?;
    let boots = Arc::new(Mutex::new(boots.into_iter().map(Some).collect::<Vec<_>>()));
    let signal_fds = Arc::new(Mutex::new(
        signal_fds.into_iter().map(Some).collect::<Vec<_>>(),
    ));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Ready>();
    let shards = settings.shards;
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
        })?;

    let config = RuntimeConfig {
        shards: settings.shards,
        cpus: settings.cpus.clone(),
        name: "kefu-shard".into(),
        ..RuntimeConfig::default()
    };
    // glommio 0.9's MeshBuilder is Send but counts its clones in a plain
    // `Rc`: cloning it on one thread while another drops its clone can lose
    // an increment and free the builder's peer list under a shard still
    // using it (seen as a use-after-free, and a crash at exit). So every
    // clone is made here, before any shard thread exists, and handed out
    // by moving; shard threads only ever drop theirs (inside `join`), and
    // this original outlives them all.
    let mesh_builder = mesh::builder::<Envelope>(settings.shards, RING_SLOTS);
    let mesh_builders = Arc::new(Mutex::new(
        (0..settings.shards)
            .map(|_| Some(mesh_builder.clone()))
            .collect::<Vec<_>>(),
    ));
    let results = shards::runtime::run(&config, move |ctx: ShardContext| {
        let boot = boots.lock().expect("boot list")[ctx.id]
            .take()
            .expect("one boot per shard");
        let signal = signal_fds.lock().expect("signal list")[ctx.id]
            .take()
            .expect("one signal socket per shard");
        let mesh_builder = mesh_builders.lock().expect("mesh builder list")[ctx.id]
            .take()
            .expect("one mesh builder per shard");
        let (shared, ready_tx) = (shared.clone(), ready_tx.clone());
        async move { shard_main(ctx, shared, mesh_builder, boot, signal, ready_tx, listen).await }
    })?;
    drop(mesh_builder);
    for (id, result) in results.into_iter().enumerate() {
        if let Err(e) = result {
            return Err(format!("shard {id}: {e}").into());
        }
    }
    let _ = announcer.join();
    tracing::info!("stopped");
    Ok(())
}

/// One shard, from start to drain.
async fn shard_main(
    ctx: ShardContext,
    shared: Shared,
    mesh_builder: glommio::channels::channel_mesh::MeshBuilder<
        Vec<Envelope>,
        glommio::channels::channel_mesh::Full,
    >,
    boot: ShardBoot,
    signal: OwnedFd,
    ready: std::sync::mpsc::Sender<Ready>,
    listen: SocketAddr,
) -> Result<(), String> {
    tracing::debug!(shard = ctx.id, "joining the mesh");
    let mesh = Mesh::join(mesh_builder).await.map_err(|e| e.to_string())?;
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
                crate::metrics::add(&shard.metrics.panics, 1);
                tracing::error!(shard = shard.id, "panic while handling a shard message");
            }
        })
    };
    let _mesh_tasks = mesh.start(handler);
    glommio::spawn_local(shard.clone().run_lookups()).detach();
    glommio::spawn_local(shard.clone().run_commits()).detach();
    glommio::spawn_local(shard.clone().run_router_ticks()).detach();

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

    // Wait for SIGTERM/SIGINT (a byte on this shard's signal socket).
    // SAFETY: the fd is a connected Unix stream socket we own.
    let mut signal = unsafe { glommio::net::UnixStream::from_raw_fd(signal.into_raw_fd()) };
    let mut byte = [0u8; 1];
    let _ = signal.read(&mut byte).await;
    tracing::info!(shard = ctx.id, "draining");
    drain(&shard).await;
    drop(accepting);
    Ok(())
}

/// Stops accepting, closes connections with 1001, finishes writing.
async fn drain(shard: &Rc<Shard>) {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    shard.phase.set(Phase::Draining);
    shard.ready.store(false, Ordering::Release);
    shard.phase_changed.fire();
    let conns: Vec<_> = shard.conns.borrow().values().cloned().collect();
    for conn in conns {
        conn.request_close(close::GOING_AWAY, "gateway shutting down");
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

/// One socket pair per shard; SIGTERM and SIGINT write a byte to each.
fn signal_sockets(shards: usize) -> Result<Vec<OwnedFd>, Box<dyn Error>> {
    let mut readers = Vec::with_capacity(shards);
    for _ in 0..shards {
        let (reader, writer) = std::os::unix::net::UnixStream::pair()?;
        writer.set_nonblocking(true)?;
        for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::low_level::pipe::register(signal, writer.try_clone()?)?;
        }
        readers.push(OwnedFd::from(reader));
    }
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
