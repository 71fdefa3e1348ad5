//! Tenant routers on their shard: events in, actions carried out.
//!
//! [`crate::routing::TenantRouter`] decides; this module feeds it the events
//! that reach this shard and turns its actions into messages to the
//! conversations' and connections' shards. A tenant's router lives on one
//! shard only, so every assignment of that tenant is decided in one place.

use std::cell::RefMut;
use std::rc::Rc;
use std::time::Duration;

use crate::ids::{ConnRef, ConvId, TenantId, UserId};
use crate::metrics::add;
use crate::model::now_ms;
use crate::protocol::server;
use crate::routing::{
    AgentProfile, AgentStatus, ConvInfo, RouterAction, TenantRouter, TransferError,
};
use crate::shard::envelope::Envelope;
use crate::shard::Shard;

/// How long "the agent who last served this visitor" stays preferred.
pub const STICKY_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// How often routers check grace deadlines and send queue positions.
pub const ROUTER_TICK: Duration = Duration::from_millis(250);

impl Shard {
    /// The router of `tenant` (created on first use).
    pub fn router(&self, tenant: &TenantId) -> RefMut<'_, TenantRouter> {
        RefMut::map(self.routers.borrow_mut(), |routers| {
            routers.entry(tenant.clone()).or_insert_with(|| {
                TenantRouter::new(
                    tenant.clone(),
                    self.settings.agent_grace.as_millis() as u64,
                    STICKY_WINDOW.as_millis() as u64,
                )
            })
        })
    }

    /// Carries out a router's decisions.
    pub fn execute(&self, tenant: &TenantId, actions: Vec<RouterAction>) {
        for action in actions {
            match action {
                RouterAction::Assign {
                    conv,
                    agent,
                    conns,
                    previous,
                    waited_ms,
                } => {
                    if previous.is_none() {
                        let mut metrics = self.tenant_metrics.borrow_mut();
                        let m = metrics.entry(tenant.clone()).or_default();
                        add(&m.assignments, 1);
                        m.queue_wait_seconds.observe(waited_ms as f64 / 1000.0);
                    }
                    self.to_conv(
                        &conv,
                        Envelope::Assign {
                            tenant: tenant.clone(),
                            conv: conv.clone(),
                            agent,
                            conns,
                            previous,
                        },
                    );
                }
                RouterAction::Requeue { conv, previous } => {
                    let excluded = self.router(tenant).excluded_agent(&conv);
                    self.to_conv(
                        &conv,
                        Envelope::Requeue {
                            tenant: tenant.clone(),
                            conv: conv.clone(),
                            previous,
                            excluded,
                        },
                    );
                }
                RouterAction::QueuePosition { conv, position } => {
                    self.to_conv(
                        &conv,
                        Envelope::QueuePosition {
                            tenant: tenant.clone(),
                            conv: conv.clone(),
                            position,
                        },
                    );
                }
                RouterAction::Subscribe { conv, agent, conn } => {
                    self.to_conv(
                        &conv,
                        Envelope::AgentSubscribe {
                            tenant: tenant.clone(),
                            conv: conv.clone(),
                            agent,
                            conn,
                        },
                    );
                }
                RouterAction::AgentWelcome { conn, convs } => {
                    self.conn_bound(
                        conn.shard,
                        Envelope::WelcomeList {
                            conn: conn.id,
                            convs,
                        },
                    );
                }
                RouterAction::StatusEcho { conns, status } => {
                    let frame = server::status(match status {
                        AgentStatus::Online => "online",
                        AgentStatus::Away => "away",
                    });
                    self.fan_out(conns, &frame);
                }
            }
        }
    }

    fn to_conv(&self, conv: &ConvId, envelope: Envelope) {
        match self.conv_shard(conv) {
            Some(shard) => self.send(shard, envelope),
            None => tracing::error!(%conv, "router named a malformed conversation id"),
        }
    }

    /// An agent connection said hello.
    pub fn on_agent_attach(&self, tenant: TenantId, profile: AgentProfile, conn: ConnRef) {
        let actions = self
            .router(&tenant)
            .agent_connected(profile, conn, now_ms());
        self.execute(&tenant, actions);
    }

    /// An agent connection closed: its conversations stop going to it.
    pub fn on_agent_detach(&self, tenant: TenantId, agent: UserId, conn: ConnRef) {
        let (convs, actions) = {
            let mut router = self.router(&tenant);
            let convs = router.agent_convs(&agent);
            (convs, router.agent_disconnected(&agent, conn, now_ms()))
        };
        for conv in convs {
            self.to_conv(
                &conv,
                Envelope::AgentUnsubscribe {
                    tenant: tenant.clone(),
                    conv: conv.clone(),
                    conn,
                },
            );
        }
        self.execute(&tenant, actions);
    }

    /// `status`.
    pub fn on_agent_status(&self, tenant: TenantId, agent: UserId, status: AgentStatus) {
        let actions = self.router(&tenant).set_status(&agent, status, now_ms());
        self.execute(&tenant, actions);
    }

    /// A new conversation waits for an agent.
    pub fn on_enqueue(&self, tenant: TenantId, info: ConvInfo) {
        let actions = self.router(&tenant).enqueue(info, now_ms());
        self.execute(&tenant, actions);
    }

    /// A conversation closed.
    pub fn on_conv_closed(&self, tenant: TenantId, conv: ConvId) {
        let actions = self.router(&tenant).conv_closed(&conv, now_ms());
        self.execute(&tenant, actions);
    }

    /// An assignment was refused (the conversation had closed).
    pub fn on_assign_rejected(&self, tenant: TenantId, conv: ConvId) {
        let actions = self.router(&tenant).assign_rejected(&conv, now_ms());
        self.execute(&tenant, actions);
    }

    /// A transfer, already checked by the conversation's shard.
    pub fn on_transfer(
        &self,
        tenant: TenantId,
        conv: ConvId,
        from: UserId,
        to: Option<UserId>,
        conn: ConnRef,
        reference: Option<std::sync::Arc<str>>,
    ) {
        let result = self
            .router(&tenant)
            .transfer(&conv, &from, to.as_ref(), now_ms());
        match result {
            Ok(actions) => self.execute(&tenant, actions),
            Err(e) => {
                let message = match e {
                    TransferError::UnknownConversation => "no such conversation",
                    TransferError::Forbidden => "the conversation is not assigned to you",
                    TransferError::NotFound => "no such agent is connected",
                    TransferError::ToSelf => "cannot transfer a conversation to yourself",
                };
                self.error_to(conn, e.code(), message, reference.as_deref())
            }
        }
    }

    /// Grace deadlines and coalesced queue positions, a few times a second.
    pub async fn run_router_ticks(self: Rc<Self>) {
        loop {
            glommio::timer::sleep(ROUTER_TICK).await;
            let tenants: Vec<TenantId> = self.routers.borrow().keys().cloned().collect();
            for tenant in tenants {
                let actions = self.router(&tenant).tick(now_ms());
                self.execute(&tenant, actions);
            }
        }
    }
}
