//! A shard: one core's share of the gateway.
//!
//! A [`Shard`] owns, as plain single-threaded data: the connections it
//! accepted, the conversations and visitors placed on it, the routers of
//! the tenants placed on it, and its half of the append pipeline. Other
//! shards reach any of it only through [`envelope::Envelope`]s on the mesh.
//!
//! Handlers never hold a `RefCell` borrow across an `.await`, and a handler
//! never calls another shard-state handler directly: work for this same
//! shard goes through the mesh's local queue. The one exception is
//! delivery to a local connection, which touches only that connection's
//! outbound queue and so cannot re-enter anything.

pub mod dispatch;
pub mod envelope;
pub mod routers;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use shards::event::Event;
use shards::mesh::Mesh;
use shards::pool::BufferPool;

use crate::config::Settings;
use crate::conversation::append::Appender;
use crate::conversation::{tenant_placement, visitor_placement, Conversations};
use crate::ids::{ConnRef, ConvId, TenantId, UserId};
use crate::metrics::ShardMetrics;
use crate::protocol::{server, ErrorCode};
use crate::routing::TenantRouter;
use crate::session::Conn;
use crate::store::Store;
use crate::tenants::Tenants;

use envelope::Envelope;

/// Messages waiting in a shard's outboxes beyond which its connections
/// stop reading (a peer shard is not keeping up).
pub const MAX_MESH_BACKLOG: usize = 32 * 1024;
/// Entries accepted and not yet durable beyond which a shard's connections
/// stop reading (the disk is not keeping up). About a fifth of a second of
/// work at the store's measured cost (~20 µs per message here): beyond
/// that, queueing inside the gateway only adds latency, while leaving the
/// bytes in the clients' TCP windows pushes back on the senders.
pub const MAX_APPEND_PENDING: usize = 8 * 1024;

/// Read buffer shared by every connection of a shard: sockets are read
/// into it only while a read is ready, so idle connections hold none.
pub const SCRATCH_BYTES: usize = 64 * 1024;

/// The process-wide facts every shard starts with.
#[derive(Clone)]
pub struct Shared {
    /// The effective settings.
    pub settings: Arc<Settings>,
    /// The durable log.
    pub store: Arc<dyn Store>,
    /// Set once every shard accepts connections (`/health`).
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// Set when a drain starts (`/ready` turns 503).
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// Every stored `(sender, id)`, approximately (shared, lock-free).
    pub dedupe_filter: Arc<crate::conversation::filter::DedupeFilter>,
    /// The newest tenants read by a reload (SIGHUP), for shards to take.
    pub reloaded: Arc<std::sync::Mutex<Arc<Tenants>>>,
    /// The store's fault switch, with `--fault-injection` only (a testing
    /// aid: see `crate::debug`).
    pub faults: Option<crate::store::FaultSwitch>,
}

/// Where a shard is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Accepting and serving.
    Serving,
    /// Shutting down: not accepting, closing connections, finishing flushes.
    Draining,
}

/// One core's share of the gateway.
pub struct Shard {
    /// This shard's index.
    pub id: usize,
    /// How many shards run.
    pub count: usize,
    /// The channel mesh to every shard (this one included).
    pub mesh: Rc<Mesh<Envelope>>,
    /// The effective settings.
    pub settings: Arc<Settings>,
    /// The tenants (replaced whole on reload).
    pub tenants: RefCell<Arc<Tenants>>,
    /// The durable log, used from blocking threads only.
    pub store: Arc<dyn Store>,
    /// Counters.
    pub metrics: ShardMetrics,
    /// Connections accepted by this shard, by id.
    pub conns: RefCell<HashMap<u64, Rc<Conn>>>,
    /// The next connection id.
    next_conn: Cell<u64>,
    /// Sockets accepted and not yet closed (any phase), for the shard's cap.
    pub open_sockets: Cell<usize>,
    /// Open sockets per source address, kept only when there is a per-address cap.
    pub sockets_by_ip: RefCell<HashMap<std::net::IpAddr, usize>>,
    /// Conversations and visitors placed here.
    pub convs: RefCell<Conversations>,
    /// The append pipeline's queues.
    pub appender: Appender,
    /// Routers of the tenants placed here.
    pub routers: RefCell<HashMap<TenantId, TenantRouter>>,
    /// Replays waiting for a connection's credit before their next chunk,
    /// by replay number (see [`envelope::ReplayTicket`]).
    pub replay_waits: RefCell<HashMap<u64, Rc<shards::notify::Notify>>>,
    /// The number the next paced replay chunk gets.
    pub next_replay: Cell<u64>,
    /// Routing counters of the tenants placed here.
    pub tenant_metrics: RefCell<HashMap<TenantId, crate::metrics::TenantMetrics>>,
    /// Socket read buffer, see [`SCRATCH_BYTES`].
    pub scratch: RefCell<Vec<u8>>,
    /// Buffers for partial frames and handshakes.
    pub pool: BufferPool,
    /// Serving or draining.
    pub phase: Cell<Phase>,
    /// Fired when the phase changes.
    pub phase_changed: Event,
    /// Scrapes in progress (shard 0 only): id -> snapshots gathered so far.
    pub scrapes: RefCell<HashMap<u64, dispatch::Scrape>>,
    /// The next scrape id.
    pub next_scrape: Cell<u64>,
    /// Ready flag shared by all shards (`/health`).
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// Drain flag shared by all shards (`/ready`).
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// Every stored `(sender, id)`, approximately: see `conversation::filter`.
    pub dedupe_filter: Arc<crate::conversation::filter::DedupeFilter>,
    /// The store's fault switch, with `--fault-injection` only.
    pub faults: Option<crate::store::FaultSwitch>,
    /// This shard's own `Rc`, for spawning tasks from `&self` methods.
    this: RefCell<std::rc::Weak<Shard>>,
}

impl Shard {
    /// A shard with nothing in it yet.
    pub fn new(id: usize, count: usize, mesh: Rc<Mesh<Envelope>>, shared: &Shared) -> Self {
        Shard {
            id,
            count,
            mesh,
            settings: shared.settings.clone(),
            tenants: RefCell::new(shared.settings.tenants.clone()),
            store: shared.store.clone(),
            metrics: ShardMetrics::default(),
            conns: RefCell::new(HashMap::new()),
            next_conn: Cell::new(1),
            open_sockets: Cell::new(0),
            sockets_by_ip: RefCell::new(HashMap::new()),
            convs: RefCell::new(Conversations::default()),
            appender: Appender::default(),
            routers: RefCell::new(HashMap::new()),
            tenant_metrics: RefCell::new(HashMap::new()),
            replay_waits: RefCell::new(HashMap::new()),
            next_replay: Cell::new(0),
            scratch: RefCell::new(vec![0; SCRATCH_BYTES]),
            pool: BufferPool::new(4096, 64 * 1024, 256),
            phase: Cell::new(Phase::Serving),
            phase_changed: Event::new(),
            scrapes: RefCell::new(HashMap::new()),
            next_scrape: Cell::new(1),
            ready: shared.ready.clone(),
            draining: shared.draining.clone(),
            dedupe_filter: shared.dedupe_filter.clone(),
            faults: shared.faults.clone(),
            this: RefCell::new(std::rc::Weak::new()),
        }
    }

    /// Records the shard's own `Rc` (call once, right after `Rc::new`).
    pub fn set_self(self: &Rc<Self>) {
        *self.this.borrow_mut() = Rc::downgrade(self);
    }

    /// The shard's own `Rc`.
    pub fn rc(&self) -> Rc<Shard> {
        self.this
            .borrow()
            .upgrade()
            .expect("set_self was called at start-up")
    }

    /// Admits a new socket from `ip` under the connection caps, or says no.
    /// An admitted socket must be released with [`Shard::release`].
    pub fn admit(&self, ip: std::net::IpAddr) -> bool {
        let limits = &self.settings.limits;
        if limits.max_connections_per_shard > 0
            && self.open_sockets.get() >= limits.max_connections_per_shard
        {
            return false;
        }
        if limits.max_connections_per_ip > 0 {
            let cap = limits.max_connections_per_ip.div_ceil(self.count);
            let mut by_ip = self.sockets_by_ip.borrow_mut();
            let n = by_ip.entry(ip).or_insert(0);
            if *n >= cap {
                return false;
            }
            *n += 1;
        }
        self.open_sockets.set(self.open_sockets.get() + 1);
        true
    }

    /// Releases a socket admitted by [`Shard::admit`].
    pub fn release(&self, ip: std::net::IpAddr) {
        self.open_sockets
            .set(self.open_sockets.get().saturating_sub(1));
        if self.settings.limits.max_connections_per_ip > 0 {
            let mut by_ip = self.sockets_by_ip.borrow_mut();
            if let Some(n) = by_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    by_ip.remove(&ip);
                }
            }
        }
    }

    /// A fresh connection id (never reused in this process).
    pub fn next_conn_id(&self) -> u64 {
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        id
    }

    /// The shard that is home to a visitor (its state and conversations).
    pub fn home_of(&self, tenant: &TenantId, visitor: &UserId) -> usize {
        shards::shard_for(visitor_placement(tenant, visitor), self.count)
    }

    /// The shard that owns a conversation, or `None` for a malformed id.
    pub fn conv_shard(&self, conv: &ConvId) -> Option<usize> {
        conv.placement().map(|p| shards::shard_for(p, self.count))
    }

    /// The shard that routes a tenant.
    pub fn router_of(&self, tenant: &TenantId) -> usize {
        shards::shard_for(tenant_placement(tenant), self.count)
    }

    /// Sends an envelope to a shard (this one included) through the mesh.
    pub fn send(&self, to: usize, envelope: Envelope) {
        self.mesh.send(to, envelope);
    }

    /// Sends frames to one connection, wherever it is.
    pub fn to_conn(&self, conn: ConnRef, frames: Vec<Bytes>) {
        self.conn_bound(
            conn.shard,
            Envelope::ToConn {
                conn: conn.id,
                frames,
            },
        );
    }

    /// Sends one frame to one connection, wherever it is.
    pub fn frame_to(&self, conn: ConnRef, frame: Bytes) {
        self.to_conn(conn, vec![frame]);
    }

    /// Sends an `error` frame to a connection.
    pub fn error_to(&self, conn: ConnRef, code: ErrorCode, message: &str, reference: Option<&str>) {
        self.metrics.error(code);
        self.frame_to(conn, server::error(code, message, reference));
    }

    /// Hands a connection-bound envelope to its shard: handled at once when
    /// the connection is here (it only touches that connection), otherwise
    /// sent. Both paths keep the order of envelopes per connection.
    pub fn conn_bound(&self, shard: usize, envelope: Envelope) {
        if shard == self.id {
            self.on_conn_envelope(envelope);
        } else {
            self.send(shard, envelope);
        }
    }

    /// Delivers one frame to many connections: one envelope per shard.
    pub fn fan_out(&self, conns: impl IntoIterator<Item = ConnRef>, frame: &Bytes) {
        let mut by_shard: Vec<Vec<u64>> = vec![Vec::new(); self.count];
        for conn in conns {
            by_shard[conn.shard].push(conn.id);
        }
        for (shard, ids) in by_shard.into_iter().enumerate() {
            if !ids.is_empty() {
                self.conn_bound(
                    shard,
                    Envelope::Deliver {
                        conns: ids,
                        frame: frame.clone(),
                    },
                );
            }
        }
    }

    /// Is this shard behind (outboxes or pending entries over their bounds)?
    /// Then connections stop reading until it catches up: the bounds on
    /// memory come from reading less, never from dropping what was read.
    pub fn overloaded(&self) -> bool {
        self.mesh.backlog() > MAX_MESH_BACKLOG
            || self.appender.pending_entries() > MAX_APPEND_PENDING
    }

    /// Wakes `cx`'s task when the shard may have caught up.
    pub fn wait_for_capacity(&self, cx: &std::task::Context<'_>) {
        self.mesh.drained().register(cx);
        self.appender.committed.register(cx);
    }

    /// Takes reloaded tenants: new ones are accepted from now on, rotated
    /// secrets apply to new tokens, and connections of removed tenants close.
    pub fn reload_tenants(&self, tenants: Arc<Tenants>) {
        let gone: Vec<Rc<crate::session::Conn>> = self
            .conns
            .borrow()
            .values()
            .filter(|c| {
                c.who()
                    .is_some_and(|(tenant, _)| tenants.get(tenant.id.as_str()).is_none())
            })
            .cloned()
            .collect();
        for conn in &gone {
            conn.request_close(crate::protocol::close::UNAUTHORIZED, "tenant removed");
        }
        tracing::info!(
            shard = self.id,
            tenants = tenants.len(),
            closed = gone.len(),
            "tenants reloaded"
        );
        *self.tenants.borrow_mut() = tenants;
    }

    /// Is the shard draining?
    pub fn draining(&self) -> bool {
        self.phase.get() == Phase::Draining
    }
}
