//! [`TenantRouter`]: the state and decisions of one tenant's routing.

use std::cmp::Ordering;
use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};

use crate::ids::{ConnRef, ConvId, TenantId, UserId};
use crate::model::AgentRef;

use super::queue::{Class, Queue, QueueKey, Skill};
use super::{AgentProfile, AgentStatus, ConvInfo, RouterAction, RouterStats, TransferError};

/// Everything routing keeps about one agent.
#[derive(Debug)]
pub(super) struct Agent {
    /// From the newest connection's token.
    pub(super) profile: AgentProfile,
    /// Live connections, oldest first. Empty: in its grace period.
    pub(super) conns: Vec<ConnRef>,
    /// Online or away.
    pub(super) status: AgentStatus,
    /// The conversations assigned to it.
    pub(super) open: BTreeSet<ConvId>,
    /// When it last got a new assignment: `(unix ms, router assignment
    /// counter)`, `None` if never. Smaller is "longer without an assignment".
    pub(super) last_assign: Option<(u64, u64)>,
    /// When its grace period ends, while it has no connection.
    pub(super) grace_deadline: Option<u64>,
}

impl Agent {
    fn new(profile: AgentProfile) -> Self {
        Agent {
            profile,
            conns: Vec::new(),
            status: AgentStatus::Online,
            open: BTreeSet::new(),
            last_assign: None,
            grace_deadline: None,
        }
    }

    pub(super) fn connected(&self) -> bool {
        !self.conns.is_empty()
    }

    /// Connected, online and below `max_chats`: routing may give it one more.
    pub(super) fn has_room(&self) -> bool {
        self.connected()
            && self.status == AgentStatus::Online
            && (self.open.len() as u64) < u64::from(self.profile.max_chats)
    }

    pub(super) fn serves(&self, skill: Option<&str>) -> bool {
        skill.is_none_or(|skill| self.profile.skills.iter().any(|s| &**s == skill))
    }

    fn speaks(&self, lang: &str) -> bool {
        self.profile.langs.iter().any(|l| &**l == lang)
    }

    fn agent_ref(&self) -> AgentRef {
        AgentRef {
            id: self.profile.id.clone(),
            name: self.profile.name.clone(),
        }
    }

    /// Compares the loads `open / max_chats` exactly. Both agents have
    /// `max_chats > 0` (they have room).
    fn cmp_load(&self, other: &Agent) -> Ordering {
        let mine = self.open.len() as u128 * u128::from(other.profile.max_chats);
        let theirs = other.open.len() as u128 * u128::from(self.profile.max_chats);
        mine.cmp(&theirs)
    }
}

/// Where a conversation the router holds stands.
#[derive(Debug)]
pub(super) enum ConvState {
    /// In the queue at `key`; `excluded` may not take it by routing.
    Queued {
        /// Its place in the queue.
        key: QueueKey,
        /// The agent who handed it back, while it waits.
        excluded: Option<UserId>,
    },
    /// Assigned to `agent`.
    Assigned {
        /// The agent serving it.
        agent: UserId,
    },
}

/// A conversation the router holds (queued or assigned).
#[derive(Debug)]
pub(super) struct Conv {
    /// What routing knows about it.
    pub(super) info: ConvInfo,
    /// Queued or assigned.
    pub(super) state: ConvState,
}

/// One tenant's routing: agents, their load and status, the queue, and the
/// visitors' last agents. See the [module docs](super) for the rules.
#[derive(Debug)]
pub struct TenantRouter {
    /// The tenant this router decides for.
    tenant: TenantId,
    /// How long a disconnected agent keeps its conversations.
    grace_ms: u64,
    /// How long a visitor's last agent is preferred for it.
    sticky_window_ms: u64,
    /// Every agent connected or in grace.
    pub(super) agents: HashMap<UserId, Agent>,
    /// The agents with room (connected, online, below `max_chats`), by id.
    pub(super) ready: BTreeSet<UserId>,
    /// Every open conversation: queued or assigned.
    pub(super) convs: HashMap<ConvId, Conv>,
    /// The queued ones, in order.
    pub(super) queue: Queue,
    /// Agents in grace, by deadline then id.
    pub(super) grace: BTreeSet<(u64, UserId)>,
    /// visitor -> (its last agent, when that assignment was made).
    pub(super) sticky: HashMap<UserId, (UserId, u64)>,
    /// The same records by time, for pruning.
    pub(super) sticky_by_time: BTreeSet<(u64, UserId)>,
    /// Counts assignments, to order those made in the same millisecond.
    assign_seq: u64,
    /// Tests: run every pass as a plain walk of the whole queue, the
    /// reference the optimised passes are checked against.
    #[cfg(test)]
    pub(super) naive: bool,
}

impl TenantRouter {
    /// A router for `tenant` with the agent grace period and the sticky
    /// window (24 h in the gateway), both in milliseconds.
    pub fn new(tenant: TenantId, grace_ms: u64, sticky_window_ms: u64) -> Self {
        TenantRouter {
            tenant,
            grace_ms,
            sticky_window_ms,
            agents: HashMap::new(),
            ready: BTreeSet::new(),
            convs: HashMap::new(),
            queue: Queue::default(),
            grace: BTreeSet::new(),
            sticky: HashMap::new(),
            sticky_by_time: BTreeSet::new(),
            assign_seq: 0,
            #[cfg(test)]
            naive: false,
        }
    }

    /// The tenant this router decides for.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// A connection of an agent was accepted. The agent becomes online, its
    /// profile is refreshed from this token, a pending grace is cancelled; the
    /// new connection gets its `welcome` list and a subscription to each
    /// assigned conversation; then a routing pass.
    pub fn agent_connected(
        &mut self,
        profile: AgentProfile,
        conn: ConnRef,
        now_ms: u64,
    ) -> Vec<RouterAction> {
        let mut out = Vec::new();
        let id = profile.id.clone();
        let agent = match self.agents.entry(id.clone()) {
            Entry::Occupied(known) => {
                let agent = known.into_mut();
                agent.profile = profile;
                agent
            }
            Entry::Vacant(new) => new.insert(Agent::new(profile)),
        };
        let others: Vec<ConnRef> = agent.conns.iter().copied().filter(|c| *c != conn).collect();
        let echo = agent.status == AgentStatus::Away && !others.is_empty();
        if !agent.conns.contains(&conn) {
            agent.conns.push(conn);
        }
        agent.status = AgentStatus::Online;
        if let Some(deadline) = agent.grace_deadline.take() {
            self.grace.remove(&(deadline, id.clone()));
        }
        out.push(RouterAction::AgentWelcome {
            conn,
            convs: agent.open.iter().cloned().collect(),
        });
        for conv in &agent.open {
            out.push(RouterAction::Subscribe {
                conv: conv.clone(),
                agent: id.clone(),
                conn,
            });
        }
        if echo {
            out.push(RouterAction::StatusEcho {
                conns: others,
                status: AgentStatus::Online,
            });
        }
        self.touch(&id);
        self.pass(now_ms, &mut out);
        out
    }

    /// A connection of an agent closed. When it was the last one, the grace
    /// period starts: the agent's conversations stay assigned until
    /// `now_ms + grace_ms`. Never returns actions (capacity only shrinks); the
    /// `Vec` keeps every event alike.
    pub fn agent_disconnected(
        &mut self,
        agent: &UserId,
        conn: ConnRef,
        now_ms: u64,
    ) -> Vec<RouterAction> {
        let Some(a) = self.agents.get_mut(agent) else {
            return Vec::new();
        };
        let Some(i) = a.conns.iter().position(|c| *c == conn) else {
            return Vec::new();
        };
        a.conns.remove(i);
        if a.conns.is_empty() {
            let deadline = now_ms.saturating_add(self.grace_ms);
            a.grace_deadline = Some(deadline);
            self.grace.insert((deadline, agent.clone()));
        }
        self.touch(agent);
        Vec::new()
    }

    /// The agent's `status` command: echoed to all its connections; `Online`
    /// runs a routing pass. Ignored for an agent that is not connected.
    pub fn set_status(
        &mut self,
        agent: &UserId,
        status: AgentStatus,
        now_ms: u64,
    ) -> Vec<RouterAction> {
        let mut out = Vec::new();
        let Some(a) = self.agents.get_mut(agent).filter(|a| a.connected()) else {
            return out;
        };
        a.status = status;
        out.push(RouterAction::StatusEcho {
            conns: a.conns.clone(),
            status,
        });
        self.touch(agent);
        if status == AgentStatus::Online {
            self.pass(now_ms, &mut out);
        }
        out
    }

    /// A new conversation enters the queue (VIP or not, at `info.queued_ms`).
    /// It is assigned at once if an agent is eligible; otherwise its position
    /// is sent. Ignored if the router already holds this conversation.
    pub fn enqueue(&mut self, info: ConvInfo, now_ms: u64) -> Vec<RouterAction> {
        let mut out = Vec::new();
        if self.convs.contains_key(&info.conv) {
            return out;
        }
        let class = if info.vip { Class::Vip } else { Class::Normal };
        let conv = info.conv.clone();
        let key = self
            .queue
            .insert(class, info.queued_ms, conv.clone(), &info.skill);
        self.convs.insert(
            conv.clone(),
            Conv {
                info,
                state: ConvState::Queued {
                    key,
                    excluded: None,
                },
            },
        );
        // The queue was settled before this call and no capacity appeared,
        // so only the new conversation can have an eligible agent.
        #[cfg(test)]
        if self.naive {
            self.pass(now_ms, &mut out);
            self.send_position(&conv, &mut out);
            return out;
        }
        if let Some(agent) = self.choose(&conv, now_ms) {
            self.assign_queued(&conv, agent, now_ms, &mut out);
        }
        self.send_position(&conv, &mut out);
        out
    }

    /// A conversation closed: it leaves the queue, or frees its agent's
    /// capacity (then a routing pass). Ignored if unknown.
    pub fn conv_closed(&mut self, conv: &ConvId, now_ms: u64) -> Vec<RouterAction> {
        let mut out = Vec::new();
        let Some(c) = self.convs.remove(conv) else {
            return out;
        };
        match c.state {
            // Leaving the queue frees no capacity: the pass would find nothing.
            ConvState::Queued { key, .. } => self.queue.remove(key, &c.info.skill),
            ConvState::Assigned { agent } => {
                if let Some(a) = self.agents.get_mut(&agent) {
                    a.open.remove(conv);
                }
                self.touch(&agent);
                self.pass(now_ms, &mut out);
            }
        }
        out
    }

    /// The conversation's shard refused an `Assign` because the conversation
    /// closed meanwhile: handled exactly like [`TenantRouter::conv_closed`].
    pub fn assign_rejected(&mut self, conv: &ConvId, now_ms: u64) -> Vec<RouterAction> {
        self.conv_closed(conv, now_ms)
    }

    /// The `transfer` command of agent `from`: to agent `to` (which must be
    /// connected; its status and `max_chats` are not checked), or back to the
    /// queue (`None`: at the front, `from` excluded from getting it back while
    /// it waits). Either way `from`'s capacity frees and a pass runs.
    pub fn transfer(
        &mut self,
        conv: &ConvId,
        from: &UserId,
        to: Option<&UserId>,
        now_ms: u64,
    ) -> Result<Vec<RouterAction>, TransferError> {
        let c = self
            .convs
            .get(conv)
            .ok_or(TransferError::UnknownConversation)?;
        match &c.state {
            ConvState::Assigned { agent } if agent == from => {}
            _ => return Err(TransferError::Forbidden),
        }
        let mut out = Vec::new();
        match to {
            Some(to) => {
                if to == from {
                    return Err(TransferError::ToSelf);
                }
                if !self.agents.get(to).is_some_and(Agent::connected) {
                    return Err(TransferError::NotFound);
                }
                self.unassign(conv, from);
                self.assign(conv, to.clone(), now_ms, Some(from.clone()), 0, &mut out);
                self.pass(now_ms, &mut out);
            }
            None => {
                self.unassign(conv, from);
                self.requeue_front(conv, from.clone(), true, now_ms, &mut out);
                self.pass(now_ms, &mut out);
                self.send_position(conv, &mut out);
            }
        }
        Ok(out)
    }

    /// The periodic step (~4 times a second): grace expiries (each of the
    /// agent's conversations requeued at the front, then a pass), pruning of
    /// sticky records older than the window, and coalesced queue positions.
    pub fn tick(&mut self, now_ms: u64) -> Vec<RouterAction> {
        let mut out = Vec::new();
        let mut requeued = false;
        while let Some((deadline, id)) = self.grace.first().cloned() {
            if deadline > now_ms {
                break;
            }
            self.grace.pop_first();
            let Some(agent) = self.agents.remove(&id) else {
                continue;
            };
            debug_assert!(!agent.connected());
            self.ready.remove(&id);
            let mut convs: Vec<(u64, ConvId)> = agent
                .open
                .into_iter()
                .filter_map(|conv| self.convs.get(&conv).map(|c| (c.info.queued_ms, conv)))
                .collect();
            convs.sort();
            for (_, conv) in convs {
                self.requeue_front(&conv, id.clone(), false, now_ms, &mut out);
                requeued = true;
            }
        }
        if requeued {
            self.pass(now_ms, &mut out);
        }
        while let Some((at, visitor)) = self.sticky_by_time.first().cloned() {
            if now_ms.saturating_sub(at) <= self.sticky_window_ms {
                break;
            }
            self.sticky_by_time.pop_first();
            self.sticky.remove(&visitor);
        }
        self.queue.position_updates(&mut out);
        out
    }

    /// Recovery: a conversation that was queued when the gateway stopped.
    /// `front`: it had been requeued at the front; `excluded`: the agent that
    /// handed it back. Its position is sent by the next `tick`. Call before
    /// agents connect; ignored if the router already holds it.
    pub fn restore_queued(&mut self, info: ConvInfo, front: bool, excluded: Option<UserId>) {
        if self.convs.contains_key(&info.conv) {
            return;
        }
        let class = match (front, info.vip) {
            (true, _) => Class::Front,
            (false, true) => Class::Vip,
            (false, false) => Class::Normal,
        };
        let key = self
            .queue
            .insert(class, info.queued_ms, info.conv.clone(), &info.skill);
        self.convs.insert(
            info.conv.clone(),
            Conv {
                info,
                state: ConvState::Queued { key, excluded },
            },
        );
    }

    /// Recovery: a conversation that was assigned to `agent` (at
    /// `assigned_ms`) when the gateway stopped. The agent counts as
    /// disconnected, its grace starting at `now_ms`; its skills, languages and
    /// `max_chats` are unknown (none, 0) until it connects. Does not touch the
    /// visitor's last agent (see [`TenantRouter::restore_last_agent`]). Call
    /// before agents connect; ignored if the router already holds the
    /// conversation.
    pub fn restore_assigned(
        &mut self,
        info: ConvInfo,
        agent: AgentRef,
        assigned_ms: u64,
        now_ms: u64,
    ) {
        if self.convs.contains_key(&info.conv) {
            return;
        }
        let id = agent.id.clone();
        let a = self.agents.entry(id.clone()).or_insert_with(|| {
            Agent::new(AgentProfile {
                id: agent.id,
                name: agent.name,
                skills: Vec::new(),
                langs: Vec::new(),
                max_chats: 0,
            })
        });
        if !a.connected() && a.grace_deadline.is_none() {
            let deadline = now_ms.saturating_add(self.grace_ms);
            a.grace_deadline = Some(deadline);
            self.grace.insert((deadline, id.clone()));
        }
        a.last_assign = a.last_assign.max(Some((assigned_ms, 0)));
        a.open.insert(info.conv.clone());
        self.convs.insert(
            info.conv.clone(),
            Conv {
                info,
                state: ConvState::Assigned { agent: id.clone() },
            },
        );
        self.touch(&id);
    }

    /// Recovery: the visitor's last agent and when it was assigned. Kept if
    /// newer than what the router has; pruned by `tick` once out of the window.
    pub fn restore_last_agent(&mut self, visitor: UserId, agent: UserId, assigned_ms: u64) {
        if self
            .sticky
            .get(&visitor)
            .is_some_and(|(_, at)| *at > assigned_ms)
        {
            return;
        }
        self.set_last_agent(visitor, agent, assigned_ms);
    }

    /// The agent that queued `conv` may not get back by routing (it handed
    /// it back), if `conv` is queued with one: what the conversation's state
    /// must remember across a restart.
    pub fn excluded_agent(&self, conv: &ConvId) -> Option<UserId> {
        match &self.convs.get(conv)?.state {
            ConvState::Queued { excluded, .. } => excluded.clone(),
            ConvState::Assigned { .. } => None,
        }
    }

    /// The conversations assigned to `agent` (empty for an unknown agent):
    /// where its connections receive from.
    pub fn agent_convs(&self, agent: &UserId) -> Vec<ConvId> {
        self.agents
            .get(agent)
            .map(|a| a.open.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Queue length, agents by state, open assignments.
    pub fn stats(&self) -> RouterStats {
        let mut stats = RouterStats {
            queued: self.queue.len(),
            queued_vip: self.queue.count(Class::Vip),
            queued_front: self.queue.count(Class::Front),
            ..RouterStats::default()
        };
        for agent in self.agents.values() {
            match (agent.connected(), agent.status) {
                (false, _) => stats.agents_in_grace += 1,
                (true, AgentStatus::Online) => stats.agents_online += 1,
                (true, AgentStatus::Away) => stats.agents_away += 1,
            }
            stats.assigned += agent.open.len();
        }
        stats
    }

    // ----- internals -----

    /// Brings `agent`'s membership of `ready` up to date after a change.
    fn touch(&mut self, agent: &UserId) {
        if self.agents.get(agent).is_some_and(Agent::has_room) {
            self.ready.insert(agent.clone());
        } else {
            self.ready.remove(agent);
        }
    }

    /// Records `agent` as `visitor`'s last agent at `at_ms`.
    fn set_last_agent(&mut self, visitor: UserId, agent: UserId, at_ms: u64) {
        if let Some((_, old)) = self.sticky.insert(visitor.clone(), (agent, at_ms)) {
            self.sticky_by_time.remove(&(old, visitor.clone()));
        }
        self.sticky_by_time.insert((at_ms, visitor));
    }

    /// The best eligible agent for queued conversation `conv`, if any.
    fn choose(&self, conv: &ConvId, now_ms: u64) -> Option<UserId> {
        let c = &self.convs[conv];
        let ConvState::Queued { excluded, .. } = &c.state else {
            return None;
        };
        let info = &c.info;
        let skill = info.skill.as_deref();
        // Every agent in `ready` has room: eligibility is skill and exclusion.
        let eligible = |a: &Agent| a.serves(skill) && excluded.as_ref() != Some(&a.profile.id);
        if let Some((last, at)) = self.sticky.get(&info.visitor) {
            if now_ms.saturating_sub(*at) <= self.sticky_window_ms
                && self.ready.contains(last)
                && eligible(&self.agents[last])
            {
                return Some(last.clone());
            }
        }
        let lang = info.lang.as_deref();
        let mut best: Option<(&Agent, bool)> = None;
        for id in &self.ready {
            let a = &self.agents[id];
            if !eligible(a) {
                continue;
            }
            let speaks = lang.is_some_and(|l| a.speaks(l));
            let better = match best {
                None => true,
                Some((b, b_speaks)) => b_speaks
                    .cmp(&speaks)
                    .then_with(|| a.cmp_load(b))
                    .then_with(|| a.last_assign.cmp(&b.last_assign))
                    .then_with(|| a.profile.id.cmp(&b.profile.id))
                    .is_lt(),
            };
            if better {
                best = Some((a, speaks));
            }
        }
        best.map(|(a, _)| a.profile.id.clone())
    }

    /// The routing pass: assigns queued conversations in queue order while
    /// some agent has room. It merges the per-skill queues that some agent
    /// with room serves, dropping a skill as soon as one of its conversations
    /// (with no excluded agent) finds nobody: the rest of that skill's queue
    /// would find nobody either, since room only shrinks during a pass.
    fn pass(&mut self, now_ms: u64, out: &mut Vec<RouterAction>) {
        #[cfg(test)]
        if self.naive {
            return self.naive_pass(now_ms, out);
        }
        if self.ready.is_empty() || self.queue.is_empty() {
            return;
        }
        struct Lane {
            skill: Skill,
            head: Option<QueueKey>,
        }
        let mut lanes: Vec<Lane> = self
            .queue
            .skills()
            .filter(|skill| {
                self.ready
                    .iter()
                    .any(|id| self.agents[id].serves(skill.as_deref()))
            })
            .map(|skill| Lane {
                skill: skill.clone(),
                head: self.queue.lane_next(skill, None),
            })
            .collect();
        while !self.ready.is_empty() {
            let Some((key, i)) = lanes
                .iter()
                .enumerate()
                .filter_map(|(i, lane)| lane.head.map(|key| (key, i)))
                .min()
            else {
                break;
            };
            let conv = self.queue.conv(key).clone();
            match self.choose(&conv, now_ms) {
                Some(agent) => {
                    self.assign_queued(&conv, agent, now_ms, out);
                    lanes[i].head = self.queue.lane_next(&lanes[i].skill, Some(key));
                }
                None if self.is_excluding(&conv) => {
                    lanes[i].head = self.queue.lane_next(&lanes[i].skill, Some(key));
                }
                None => lanes[i].head = None,
            }
        }
    }

    /// The reference pass (tests): a plain walk of the whole queue with a
    /// brute-force choice, sharing nothing with the optimised pass but the
    /// bookkeeping of an assignment.
    #[cfg(test)]
    fn naive_pass(&mut self, now_ms: u64, out: &mut Vec<RouterAction>) {
        let keys: Vec<QueueKey> = self.queue.keys().collect();
        for key in keys {
            let conv = self.queue.conv(key).clone();
            if let Some(agent) = self.naive_choose(&conv, now_ms) {
                self.assign_queued(&conv, agent, now_ms, out);
            }
        }
    }

    /// The rules of the module docs, written out literally over every agent
    /// (tests).
    #[cfg(test)]
    pub(super) fn naive_choose(&self, conv: &ConvId, now_ms: u64) -> Option<UserId> {
        let c = &self.convs[conv];
        let ConvState::Queued { excluded, .. } = &c.state else {
            return None;
        };
        let mut eligible: Vec<&Agent> = self
            .agents
            .values()
            .filter(|a| {
                !a.conns.is_empty()
                    && a.status == AgentStatus::Online
                    && a.open.len() < a.profile.max_chats as usize
                    && match &c.info.skill {
                        None => true,
                        Some(skill) => a.profile.skills.contains(skill),
                    }
                    && excluded.as_ref() != Some(&a.profile.id)
            })
            .collect();
        if let Some((last, at)) = self.sticky.get(&c.info.visitor) {
            if now_ms <= at + self.sticky_window_ms {
                if let Some(a) = eligible.iter().find(|a| &a.profile.id == last) {
                    return Some(a.profile.id.clone());
                }
            }
        }
        if let Some(lang) = &c.info.lang {
            if eligible.iter().any(|a| a.profile.langs.contains(lang)) {
                eligible.retain(|a| a.profile.langs.contains(lang));
            }
        }
        eligible.sort_by(|a, b| {
            let load_a = a.open.len() as u64 * u64::from(b.profile.max_chats);
            let load_b = b.open.len() as u64 * u64::from(a.profile.max_chats);
            load_a
                .cmp(&load_b)
                .then(a.last_assign.cmp(&b.last_assign))
                .then(a.profile.id.cmp(&b.profile.id))
        });
        eligible.first().map(|a| a.profile.id.clone())
    }

    /// Does queued `conv` exclude an agent?
    fn is_excluding(&self, conv: &ConvId) -> bool {
        matches!(
            self.convs[conv].state,
            ConvState::Queued {
                excluded: Some(_),
                ..
            }
        )
    }

    /// Takes queued `conv` out of the queue and assigns it to `agent`.
    fn assign_queued(
        &mut self,
        conv: &ConvId,
        agent: UserId,
        now_ms: u64,
        out: &mut Vec<RouterAction>,
    ) {
        let c = &self.convs[conv];
        let ConvState::Queued { key, .. } = c.state else {
            unreachable!("assign_queued on a conversation that is not queued");
        };
        let waited_ms = now_ms.saturating_sub(c.info.queued_ms);
        self.queue.remove(key, &c.info.skill);
        self.assign(conv, agent, now_ms, None, waited_ms, out);
    }

    /// Makes `agent` the owner of `conv` (already out of the queue and off its
    /// previous agent) and emits the `Assign`.
    fn assign(
        &mut self,
        conv: &ConvId,
        agent: UserId,
        now_ms: u64,
        previous: Option<UserId>,
        waited_ms: u64,
        out: &mut Vec<RouterAction>,
    ) {
        self.assign_seq += 1;
        let a = self
            .agents
            .get_mut(&agent)
            .expect("assigning to an unknown agent");
        a.open.insert(conv.clone());
        a.last_assign = Some((now_ms, self.assign_seq));
        out.push(RouterAction::Assign {
            conv: conv.clone(),
            agent: a.agent_ref(),
            conns: a.conns.clone(),
            previous,
            waited_ms,
        });
        let c = self
            .convs
            .get_mut(conv)
            .expect("assigning an unknown conversation");
        c.state = ConvState::Assigned {
            agent: agent.clone(),
        };
        let visitor = c.info.visitor.clone();
        self.set_last_agent(visitor, agent.clone(), now_ms);
        self.touch(&agent);
    }

    /// Takes assigned `conv` off `agent` (the caller gives it a new state).
    fn unassign(&mut self, conv: &ConvId, agent: &UserId) {
        if let Some(a) = self.agents.get_mut(agent) {
            a.open.remove(conv);
        }
        self.touch(agent);
    }

    /// Puts `conv` (off its agent) at the front of the queue at `now_ms` and
    /// emits the `Requeue`; `exclude`: `previous` may not get it back by
    /// routing while it waits.
    fn requeue_front(
        &mut self,
        conv: &ConvId,
        previous: UserId,
        exclude: bool,
        now_ms: u64,
        out: &mut Vec<RouterAction>,
    ) {
        let c = self
            .convs
            .get_mut(conv)
            .expect("requeueing an unknown conversation");
        c.info.queued_ms = now_ms;
        let key = self
            .queue
            .insert(Class::Front, now_ms, conv.clone(), &c.info.skill);
        c.state = ConvState::Queued {
            key,
            excluded: exclude.then(|| previous.clone()),
        };
        out.push(RouterAction::Requeue {
            conv: conv.clone(),
            previous,
        });
    }

    /// Sends `conv`'s position if it is (still) queued.
    fn send_position(&mut self, conv: &ConvId, out: &mut Vec<RouterAction>) {
        if let Some(Conv {
            state: ConvState::Queued { key, .. },
            ..
        }) = self.convs.get(conv)
        {
            let position = self.queue.position_now(*key);
            out.push(RouterAction::QueuePosition {
                conv: conv.clone(),
                position,
            });
        }
    }
}
