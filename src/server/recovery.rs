//! Splitting recovered state among shards, and loading it into each.

use std::collections::HashMap;

use crate::conversation::{tenant_placement, Conversation};
use crate::ids::{ConvId, Participant, Role, TenantId, UserId};
use crate::model::{now_ms, AgentRef, ConvState, VisitorMeta};
use crate::routing::ConvInfo;
use crate::shard::Shard;
use crate::store::{Recovered, RecoveredConv};

/// What one shard loads at start-up.
#[derive(Default)]
pub struct ShardBoot {
    /// Open conversations placed on this shard.
    pub convs: Vec<RecoveredConv>,
    /// Routing state of the tenants routed by this shard.
    pub routing: Vec<(TenantId, RouterRestore)>,
}

/// One piece of a router's state.
pub enum RouterRestore {
    /// A conversation waiting in the queue.
    Queued {
        /// What routing needs.
        info: ConvInfo,
        /// It was requeued at the front.
        front: bool,
        /// An agent that handed it back.
        excluded: Option<UserId>,
    },
    /// A conversation assigned to an agent.
    Assigned {
        /// What routing needs.
        info: ConvInfo,
        /// The agent.
        agent: AgentRef,
        /// When it was assigned.
        assigned_ms: u64,
    },
    /// The agent who last served a visitor.
    LastAgent {
        /// The visitor.
        visitor: UserId,
        /// The agent.
        agent: UserId,
        /// When.
        assigned_ms: u64,
    },
}

/// Splits what the store recovered by owning shard, for `shards` shards.
pub fn partition(recovered: Recovered, shards: usize) -> Vec<ShardBoot> {
    let mut boots: Vec<ShardBoot> = (0..shards).map(|_| ShardBoot::default()).collect();
    let router_of = |tenant: &TenantId| shards::shard_for(tenant_placement(tenant), shards);
    for conv in recovered.convs {
        let info = ConvInfo {
            conv: conv.conv.clone(),
            visitor: conv.meta.visitor.clone(),
            skill: conv.meta.skill.clone(),
            lang: conv.meta.lang.clone(),
            vip: conv.meta.vip,
            queued_ms: conv.meta.queued_ms,
        };
        let restore = match &conv.meta.state {
            ConvState::Queued => Some(RouterRestore::Queued {
                info,
                front: conv.meta.queue_front,
                excluded: conv.meta.excluded_agent.clone(),
            }),
            ConvState::Assigned(agent) => Some(RouterRestore::Assigned {
                info,
                agent: agent.clone(),
                assigned_ms: conv.meta.assigned_ms,
            }),
            ConvState::Closed => None,
        };
        if let Some(restore) = restore {
            boots[router_of(&conv.tenant)]
                .routing
                .push((conv.tenant.clone(), restore));
        }
        let Some(placement) = conv.conv.placement() else {
            tracing::error!(conv = %conv.conv, "stored conversation with a malformed id skipped");
            continue;
        };
        boots[shards::shard_for(placement, shards)].convs.push(conv);
    }
    let sticky_since =
        now_ms().saturating_sub(crate::shard::routers::STICKY_WINDOW.as_millis() as u64);
    for (tenant, visitor, VisitorMeta { last_agent }) in recovered.visitors {
        if let Some((agent, assigned_ms)) = last_agent.filter(|(_, at)| *at >= sticky_since) {
            boots[router_of(&tenant)].routing.push((
                tenant,
                RouterRestore::LastAgent {
                    visitor,
                    agent,
                    assigned_ms,
                },
            ));
        }
    }
    boots
}

impl Shard {
    /// Loads this shard's share of the recovered state.
    pub fn restore(&self, boot: ShardBoot) {
        let mut convs = self.convs.borrow_mut();
        for rc in boot.convs {
            let mut conv =
                Conversation::new(rc.tenant.clone(), rc.conv.clone(), rc.meta, rc.last_seq);
            conv.cursors = rc
                .cursors
                .into_iter()
                .collect::<HashMap<Participant, u64>>();
            let visitor = convs
                .visitors
                .entry((rc.tenant.clone(), conv.meta.visitor.clone()))
                .or_default();
            visitor.open_conv = Some(rc.conv.clone());
            convs.convs.insert((rc.tenant, rc.conv), conv);
        }
        drop(convs);
        let now = now_ms();
        for (tenant, restore) in boot.routing {
            let mut router = self.router(&tenant);
            match restore {
                RouterRestore::Queued {
                    info,
                    front,
                    excluded,
                } => router.restore_queued(info, front, excluded),
                RouterRestore::Assigned {
                    info,
                    agent,
                    assigned_ms,
                } => router.restore_assigned(info, agent, assigned_ms, now),
                RouterRestore::LastAgent {
                    visitor,
                    agent,
                    assigned_ms,
                } => router.restore_last_agent(visitor, agent, assigned_ms),
            }
        }
    }
}

/// Silences unused-import lints for types used only in docs.
#[allow(dead_code)]
fn _types(_: ConvId, _: Role) {}
