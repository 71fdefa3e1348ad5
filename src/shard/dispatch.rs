//! Routing each arriving envelope to its handler, and metrics scrapes.

use std::rc::Rc;
use std::time::Duration;

use shards::notify::Notify;

use super::envelope::Envelope;
use super::Shard;
use crate::metrics::{ShardSnapshot, TenantSnapshot};

/// A scrape in progress on shard 0.
pub struct Scrape {
    /// Snapshots received so far, by shard.
    pub snapshots: Vec<Option<ShardSnapshot>>,
    /// Woken when a snapshot arrives.
    pub arrived: Rc<Notify>,
}

/// How long a scrape waits for every shard before rendering what it has.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

impl Shard {
    /// Handles one envelope that arrived for this shard.
    pub fn handle(&self, envelope: Envelope) {
        use Envelope as E;
        match envelope {
            E::VisitorAttach {
                tenant,
                visitor,
                profile,
                conn,
            } => self.on_visitor_attach(tenant, visitor, profile, conn),
            E::VisitorDetach {
                tenant,
                visitor,
                conn,
            } => self.on_visitor_detach(tenant, visitor, conn),
            E::Submit(submit) => self.on_submit(submit),
            E::Recv {
                tenant,
                who,
                conv,
                seq,
                conn,
                reference,
            } => self.on_recv(tenant, who, conv, seq, conn, reference),
            E::Sync {
                tenant,
                who,
                conn,
                conv,
                after,
                reference,
            } => self.on_sync(tenant, who, conn, conv, after, reference),
            E::History {
                tenant,
                who,
                conn,
                conv,
                before,
                limit,
                reference,
            } => self.on_history(tenant, who, conn, conv, before, limit, reference),
            E::Signal {
                tenant,
                who,
                conn,
                conv,
                signal,
                reference,
            } => self.on_signal(tenant, who, conn, conv, signal, reference),
            E::Close {
                tenant,
                who,
                conn,
                conv,
                reference,
            } => self.on_close(tenant, who, conn, conv, reference),
            E::TransferRequest {
                tenant,
                agent,
                conn,
                conv,
                to,
                reference,
            } => self.on_transfer_request(tenant, agent, conn, conv, to, reference),
            E::Assign {
                tenant,
                conv,
                agent,
                conns,
                previous,
            } => self.on_assign(tenant, conv, agent, conns, previous),
            E::Requeue {
                tenant,
                conv,
                previous,
                excluded,
            } => self.on_requeue(tenant, conv, previous, excluded),
            E::QueuePosition {
                tenant,
                conv,
                position,
            } => self.on_queue_position(tenant, conv, position),
            E::AgentSubscribe {
                tenant,
                conv,
                agent,
                conn,
            } => self.on_agent_subscribe(tenant, conv, agent, conn),
            E::AgentUnsubscribe { tenant, conv, conn } => {
                self.on_agent_unsubscribe(tenant, conv, conn)
            }
            E::AgentAttach {
                tenant,
                profile,
                conn,
            } => self.on_agent_attach(tenant, profile, conn),
            E::AgentDetach {
                tenant,
                agent,
                conn,
            } => self.on_agent_detach(tenant, agent, conn),
            E::AgentStatus {
                tenant,
                agent,
                status,
            } => self.on_agent_status(tenant, agent, status),
            E::Enqueue { tenant, info } => self.on_enqueue(tenant, info),
            E::ConvClosed { tenant, conv } => self.on_conv_closed(tenant, conv),
            E::AssignRejected { tenant, conv } => self.on_assign_rejected(tenant, conv),
            E::Transfer {
                tenant,
                conv,
                from,
                to,
                conn,
                reference,
            } => self.on_transfer(tenant, conv, from, to, conn, reference),
            e @ (E::ToConn { .. }
            | E::Deliver { .. }
            | E::WelcomeList { .. }
            | E::Snapshot { .. }
            | E::ReplayChunk { .. }
            | E::CloseConn { .. }) => self.on_conn_envelope(e),
            E::ReplayCredit { replay } => self.on_replay_credit(replay),
            E::MetricsRequest { from, id } => {
                let snapshot = Box::new(self.snapshot());
                self.send(
                    from,
                    E::MetricsReply {
                        id,
                        shard: self.id,
                        snapshot,
                    },
                );
            }
            E::MetricsReply {
                id,
                shard,
                snapshot,
            } => {
                if let Some(scrape) = self.scrapes.borrow_mut().get_mut(&id) {
                    scrape.snapshots[shard] = Some(*snapshot);
                    scrape.arrived.notify();
                }
            }
            E::DebugPanic => panic!("a __panic_shard frame asked for a panic (--fault-injection)"),
        }
    }

    /// This shard's numbers, for a scrape.
    pub fn snapshot(&self) -> ShardSnapshot {
        let mut s = self.metrics.snapshot(self.id);
        let mesh = self.mesh.stats();
        s.mesh_sent = mesh.sent.get();
        s.mesh_batches = mesh.batches.get();
        s.mesh_ring_full = mesh.ring_full.get();
        s.mesh_backlog = self.mesh.backlog() as u64;
        s.conversations = self.convs.borrow().convs.len() as u64;
        s.append_pending = self.appender.pending_entries() as u64;
        s.store_writable = self.store.is_writable();
        let tenant_metrics = self.tenant_metrics.borrow();
        s.tenants = self
            .routers
            .borrow()
            .iter()
            .map(|(tenant, router)| {
                let r = router.stats();
                let m = tenant_metrics.get(tenant);
                TenantSnapshot {
                    assignments: m.map_or(0, |m| m.assignments.get()),
                    queue_wait_seconds: m.map_or_else(
                        || crate::metrics::Histogram::new(crate::metrics::WAIT_SECONDS).snapshot(),
                        |m| m.queue_wait_seconds.snapshot(),
                    ),
                    tenant: tenant.to_string(),
                    queue_len: r.queued as u64,
                    agents_online: r.agents_online as u64,
                    agents_away: r.agents_away as u64,
                    agents_in_grace: r.agents_in_grace as u64,
                    assigned: r.assigned as u64,
                }
            })
            .collect();
        s
    }

    /// Gathers every shard's snapshot (this one included), waiting at most
    /// [`SCRAPE_TIMEOUT`]; a shard that does not answer in time is missing
    /// from the result.
    pub async fn gather_snapshots(self: &Rc<Self>) -> Vec<ShardSnapshot> {
        let id = self.next_scrape.get();
        self.next_scrape.set(id + 1);
        let arrived = Rc::new(Notify::new());
        self.scrapes.borrow_mut().insert(
            id,
            Scrape {
                snapshots: vec![None; self.count],
                arrived: arrived.clone(),
            },
        );
        for shard in 0..self.count {
            self.send(shard, Envelope::MetricsRequest { from: self.id, id });
        }
        let deadline = std::time::Instant::now() + SCRAPE_TIMEOUT;
        loop {
            let complete = self.scrapes.borrow()[&id]
                .snapshots
                .iter()
                .all(Option::is_some);
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if complete || left.is_zero() {
                break;
            }
            let timer = glommio::timer::sleep(left);
            futures_lite::future::or(arrived.notified(), timer).await;
        }
        let scrape = self
            .scrapes
            .borrow_mut()
            .remove(&id)
            .expect("inserted above");
        scrape.snapshots.into_iter().flatten().collect()
    }
}
