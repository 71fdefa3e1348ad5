//! Starting the shards: one glommio executor per shard, pinned to a core.
//!
//! Each shard is a thread running a `LocalExecutor` (io_uring) pinned to
//! one CPU, with a small blocking-thread pool of its own for the work that
//! must not run on the executor (disk syncs). A shard's future is made on
//! its own thread, so everything it owns can be `Rc`/`RefCell`: nothing is
//! shared between shards except through the mesh.

use std::future::Future;
use std::io;

use glommio::{LocalExecutorBuilder, Placement, PoolPlacement};

/// Who a shard is, handed to its main future.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardContext {
    /// This shard's index, `0..count`.
    pub id: usize,
    /// How many shards run.
    pub count: usize,
    /// The CPU this shard is pinned to, if pinned.
    pub cpu: Option<usize>,
}

/// How to start the shards.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Number of shards. Must be at least 1.
    pub shards: usize,
    /// CPUs to pin shards to, in order (shard `i` on `cpus[i % len]`).
    /// `None`: the CPUs this process may run on (its affinity mask).
    pub cpus: Option<Vec<usize>>,
    /// Pin shards to CPUs at all. Off, the kernel schedules them freely.
    pub pin: bool,
    /// Thread name prefix (`<name>-<shard>`), visible in `top -H` and `perf`.
    pub name: String,
    /// io_uring registered buffer memory per shard. glommio uses it for DMA
    /// file I/O, which the gateway does not do, so keep it small: it is
    /// locked memory and counts in RSS.
    pub io_memory: usize,
    /// Blocking threads per shard (disk syncs and store reads).
    pub blocking_threads: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            shards: available_cpus().len().max(1),
            cpus: None,
            pin: true,
            name: "shard".into(),
            io_memory: 256 * 1024,
            blocking_threads: 2,
        }
    }
}

/// The CPUs this process may run on (its scheduler affinity), ascending.
pub fn available_cpus() -> Vec<usize> {
    // SAFETY: `set` is a plain bitmask that sched_getaffinity fills in.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            let n = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            return (0..n).collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// Runs `make(ctx)` on every shard and waits for all of them to finish.
/// Returns each shard's result, in shard order.
pub fn run<G, F, R>(config: &RuntimeConfig, make: G) -> io::Result<Vec<R>>
where
    G: Fn(ShardContext) -> F + Clone + Send + 'static,
    F: Future<Output = R> + 'static,
    R: Send + 'static,
{
    if config.shards == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "at least one shard is needed",
        ));
    }
    let cpus = config.cpus.clone().unwrap_or_else(available_cpus);
    if config.pin && cpus.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no CPU to pin shards to",
        ));
    }
    let mut handles = Vec::with_capacity(config.shards);
    for id in 0..config.shards {
        let cpu = config.pin.then(|| cpus[id % cpus.len()]);
        let placement = match cpu {
            Some(cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let ctx = ShardContext {
            id,
            count: config.shards,
            cpu,
        };
        let make = make.clone();
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("{}-{id}", config.name))
            .io_memory(config.io_memory)
            .blocking_thread_pool_placement(PoolPlacement::Unbound(config.blocking_threads.max(1)))
            .spawn(move || make(ctx))
            .map_err(|e| io::Error::other(format!("starting shard {id}: {e}")))?;
        handles.push(handle);
    }
    let mut results = Vec::with_capacity(handles.len());
    for (id, handle) in handles.into_iter().enumerate() {
        results.push(
            handle
                .join()
                .map_err(|e| io::Error::other(format!("shard {id} failed: {e}")))?,
        );
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::{self, Mesh};
    use std::cell::RefCell;
    use std::rc::Rc;

    #[test]
    fn shards_exchange_messages_in_order_over_the_mesh() {
        const N: u64 = 10_000;
        let config = RuntimeConfig {
            shards: 2,
            cpus: None,
            pin: false,
            ..RuntimeConfig::default()
        };
        let tickets = std::sync::Arc::new(std::sync::Mutex::new(
            mesh::tickets::<(usize, u64)>(2, 16)
                .into_iter()
                .map(Some)
                .collect::<Vec<_>>(),
        ));
        let results = run(&config, move |ctx| {
            let ticket = tickets.lock().unwrap()[ctx.id].take().unwrap();
            async move {
                let mesh = Mesh::join(ticket).await.unwrap();
                let got: Rc<RefCell<Vec<(usize, u64)>>> = Rc::default();
                let done = Rc::new(crate::notify::Notify::new());
                let sink = got.clone();
                let done2 = done.clone();
                let _tasks = mesh.start(Rc::new(move |msg| {
                    sink.borrow_mut().push(msg);
                    if sink.borrow().len() as u64 == 2 * N {
                        done2.notify();
                    }
                }));
                for i in 0..N {
                    mesh.send(1 - ctx.id, (ctx.id, i)); // to the peer
                    mesh.send(ctx.id, (ctx.id, i)); // to self
                    if i % 1000 == 0 {
                        glommio::yield_if_needed().await;
                    }
                }
                done.notified().await;
                let got = got.borrow().clone();
                got
            }
        })
        .unwrap();
        for (me, got) in results.iter().enumerate() {
            for from in 0..2 {
                let seqs: Vec<u64> = got
                    .iter()
                    .filter(|(f, _)| *f == from)
                    .map(|(_, i)| *i)
                    .collect();
                assert_eq!(seqs, (0..N).collect::<Vec<_>>(), "shard {me} from {from}");
            }
        }
    }
}
