//! The channel mesh: every shard can send to every shard, without locks.
//!
//! Built on glommio's full channel mesh: one bounded, lock-free
//! single-producer single-consumer ring per ordered pair of shards, which
//! wakes the receiving executor through its eventfd only when it sleeps.
//!
//! Three design points:
//!
//! - **Sending never blocks the caller.** `send` appends to a per-peer
//!   outbox on the sending shard and returns. A flusher task per peer moves
//!   the outbox into the ring as one batch (`Vec<T>`), so a burst of
//!   messages costs one ring slot and at most one wake-up, not one each.
//!   Only the flusher ever waits for ring space. This rules out the classic
//!   deadlock of two shards each blocked sending to the other while neither
//!   drains its inbox.
//! - **Bounded by whoever produces.** The rings are bounded; the outboxes
//!   are not, so producers that can pause (connection readers) must check
//!   [`Mesh::backlog`] and wait on [`Mesh::drained`] when it is high. Messages
//!   produced while handling other messages (acks, deliveries) are bounded
//!   by the inflow that caused them.
//! - **Messages to self go through a local queue** handled by its own task,
//!   never inline, so a handler never runs inside another handler's borrow
//!   of shard state.
//!
//! Per destination, messages arrive in the order they were sent.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
use glommio::task::JoinHandle;

use crate::event::Event;
use crate::notify::Notify;

/// How often a joining shard wakes to look at its channels (see [`Mesh::join`]).
pub const JOIN_TICK: std::time::Duration = std::time::Duration::from_millis(10);

/// One shard's ticket into the mesh: hand it to the shard, which passes it
/// to [`Mesh::join`].
pub type Ticket<T> = MeshBuilder<Vec<T>, Full>;

/// Creates the mesh for `shards` shards, before they start: one ticket per
/// shard, to be *moved* into each shard's thread and never cloned there.
///
/// Why not clone a builder inside each shard: glommio's `MeshBuilder` keeps
/// its list of peers in an `Rc` and is only made `Send` by an `unsafe impl`.
/// Cloning or dropping it on several threads at once races on that `Rc`'s
/// non-atomic count, which can free the list while peers still use it; the
/// symptom was a mesh join that never completed in about 1 start in 100
/// under CPU load. All clones are made here, on one thread; each thread
/// then drops only its own, and one reference is kept forever, so a racing
/// drop can at worst leak that small list, never free it under a user.
pub fn tickets<T: Send + 'static>(shards: usize, ring_slots: usize) -> Vec<Ticket<T>> {
    let builder = MeshBuilder::full(shards, ring_slots);
    let tickets: Vec<Ticket<T>> = (0..shards).map(|_| builder.clone()).collect();
    // One reference is never dropped, so the shards' concurrent drops can
    // never bring the count to zero: the peer list is leaked once per
    // process instead of ever being freed by a racing drop.
    std::mem::forget(builder);
    tickets
}

/// One shard's end of the mesh.
pub struct Mesh<T: Send + 'static> {
    /// This shard's index.
    id: usize,
    /// How many shards there are.
    shards: usize,
    /// glommio's senders, one ring per peer.
    senders: Senders<Vec<T>>,
    /// Messages waiting to be moved into each peer's ring (index = peer;
    /// this shard's own index is the local queue).
    outboxes: Vec<Outbox<T>>,
    /// Fired whenever an outbox was flushed, for producers waiting on backlog.
    drained: Event,
    /// Counters for metrics.
    stats: MeshStats,
    /// Receivers, until `start` takes them.
    receivers: RefCell<
        Vec<(
            usize,
            glommio::channels::shared_channel::ConnectedReceiver<Vec<T>>,
        )>,
    >,
}

/// Counters about the mesh, per shard (plain cells: one thread writes them).
#[derive(Default)]
pub struct MeshStats {
    /// Messages handed to `send`.
    pub sent: Cell<u64>,
    /// Batches moved into rings.
    pub batches: Cell<u64>,
    /// Times a ring was full and a flusher had to wait.
    pub ring_full: Cell<u64>,
    /// Messages received from peers and from self.
    pub received: Cell<u64>,
}

struct Outbox<T> {
    queue: RefCell<Vec<T>>,
    notify: Notify,
}

impl<T: Send + 'static> Mesh<T> {
    /// Joins the mesh with this shard's ticket (every shard must, before any
    /// can send).
    ///
    /// While it waits for its peers, a ticker wakes this executor every
    /// [`JOIN_TICK`]. glommio 0.9 very rarely misses the wake-up that should
    /// end a sleep during the join (seen about once in a few hundred starts,
    /// mostly with more shards than cores, under load), and then the shard
    /// never joins. A bounded sleep makes the executor look at its channels
    /// again. After start-up, kefu's shards wake several times a second on
    /// their own timers, which bounds any such miss to a short delay.
    pub async fn join(builder: Ticket<T>) -> std::io::Result<Rc<Self>> {
        let shards = builder.nr_peers();
        let joined = Rc::new(Cell::new(false));
        let ticker = {
            let joined = joined.clone();
            glommio::spawn_local(async move {
                while !joined.get() {
                    glommio::timer::sleep(JOIN_TICK).await;
                }
            })
            .detach()
        };
        let result = builder.join().await;
        joined.set(true);
        drop(ticker);
        let (senders, mut receivers) =
            result.map_err(|e| std::io::Error::other(format!("joining the channel mesh: {e}")))?;
        let id = senders.peer_id();
        let outboxes = (0..shards)
            .map(|_| Outbox {
                queue: RefCell::new(Vec::new()),
                notify: Notify::new(),
            })
            .collect();
        Ok(Rc::new(Mesh {
            id,
            shards,
            senders,
            outboxes,
            drained: Event::new(),
            stats: MeshStats::default(),
            receivers: RefCell::new(receivers.streams()),
        }))
    }

    /// This shard's index.
    pub fn id(&self) -> usize {
        self.id
    }

    /// How many shards there are.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Queues `msg` for shard `to` (possibly this one). Never waits.
    pub fn send(&self, to: usize, msg: T) {
        let outbox = &self.outboxes[to];
        let mut queue = outbox.queue.borrow_mut();
        queue.push(msg);
        if queue.len() == 1 {
            outbox.notify.notify();
        }
        self.stats.sent.set(self.stats.sent.get() + 1);
    }

    /// Messages queued in outboxes and not yet moved into a ring (or, for
    /// the local queue, not yet handled).
    pub fn backlog(&self) -> usize {
        self.outboxes.iter().map(|o| o.queue.borrow().len()).sum()
    }

    /// Messages queued for one destination.
    pub fn backlog_to(&self, to: usize) -> usize {
        self.outboxes[to].queue.borrow().len()
    }

    /// Fired each time an outbox is flushed: wait on it while [`Mesh::backlog`] is high.
    pub fn drained(&self) -> &Event {
        &self.drained
    }

    /// Counters.
    pub fn stats(&self) -> &MeshStats {
        &self.stats
    }

    /// Starts the tasks that move messages: a flusher per peer, a receiver
    /// per peer, and the local queue. Every received message is passed to
    /// `handle`, in order per sender. The tasks end when the mesh closes.
    pub fn start(self: &Rc<Self>, handle: Rc<dyn Fn(T)>) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        for peer in 0..self.shards {
            let mesh = self.clone();
            if peer == self.id {
                let handle = handle.clone();
                tasks.push(
                    glommio::spawn_local(async move { mesh.run_local(handle).await }).detach(),
                );
            } else {
                tasks.push(
                    glommio::spawn_local(async move { mesh.run_flusher(peer).await }).detach(),
                );
            }
        }
        let receivers = std::mem::take(&mut *self.receivers.borrow_mut());
        for (peer, receiver) in receivers {
            let mesh = self.clone();
            let handle = handle.clone();
            tasks.push(
                glommio::spawn_local(async move {
                    while let Some(batch) = receiver.recv().await {
                        mesh.stats
                            .received
                            .set(mesh.stats.received.get() + batch.len() as u64);
                        for msg in batch {
                            handle(msg);
                        }
                        glommio::yield_if_needed().await;
                    }
                    let _ = peer;
                })
                .detach(),
            );
        }
        tasks
    }

    /// Closes this shard's sending side: peers' receivers end once drained.
    pub fn close(&self) {
        self.senders.close();
    }

    async fn run_local(&self, handle: Rc<dyn Fn(T)>) {
        let outbox = &self.outboxes[self.id];
        loop {
            outbox.notify.notified().await;
            loop {
                let batch = std::mem::take(&mut *outbox.queue.borrow_mut());
                if batch.is_empty() {
                    break;
                }
                self.stats
                    .received
                    .set(self.stats.received.get() + batch.len() as u64);
                for msg in batch {
                    handle(msg);
                }
                self.drained.fire();
                glommio::yield_if_needed().await;
            }
        }
    }

    async fn run_flusher(&self, peer: usize) {
        let outbox = &self.outboxes[peer];
        loop {
            outbox.notify.notified().await;
            loop {
                let batch = std::mem::take(&mut *outbox.queue.borrow_mut());
                if batch.is_empty() {
                    break;
                }
                self.stats.batches.set(self.stats.batches.get() + 1);
                let batch = match self.senders.try_send_to(peer, batch) {
                    Ok(()) => None,
                    Err(glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(
                        batch,
                    ))) => Some(batch),
                    Err(_) => return, // closed: shutting down
                };
                if let Some(batch) = batch {
                    self.stats.ring_full.set(self.stats.ring_full.get() + 1);
                    if self.senders.send_to(peer, batch).await.is_err() {
                        return;
                    }
                }
                self.drained.fire();
            }
        }
    }
}
