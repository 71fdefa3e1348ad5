//! Randomized test: thousands of random events, fixed seeds.
//!
//! Every event goes to two routers: the real one, and a reference one whose
//! passes walk the whole queue with a brute-force choice over every agent
//! (`naive`). Their actions must be identical, which checks the optimised
//! pass (per-skill lanes, the set of agents with room, the enqueue shortcut)
//! against the rules written out literally. After every step the real router's
//! state and the actions of the call are checked against the invariants.

use std::collections::HashMap;
use std::sync::Arc;

use super::router::ConvState;
use super::*;
use crate::ids::TenantId;

const GRACE: u64 = 10_000;
const WINDOW: u64 = 60_000;
const AGENTS: u64 = 8;
const VISITORS: u64 = 20;

/// splitmix64: small, deterministic, good enough to shuffle events.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            Some(&items[self.below(items.len() as u64) as usize])
        }
    }
}

/// What the harness remembers about a conversation before a call.
#[derive(Clone, Debug)]
enum Before {
    Queued { excluded: Option<UserId> },
    Assigned { agent: UserId },
}

struct Harness {
    rng: Rng,
    real: TenantRouter,
    reference: TenantRouter,
    now: u64,
    next_conn: u64,
    next_conv: u64,
    /// Latest position sent per conversation (dropped once not queued).
    latest_pos: HashMap<ConvId, u32>,
    /// Number of calls of each kind, to see that the test exercised them.
    seen: HashMap<&'static str, usize>,
    /// The longest the queue got.
    max_queue: usize,
}

fn agent_id(n: u64) -> UserId {
    UserId::new(format!("a{n}"))
}

fn some_of(rng: &mut Rng, items: &[&str]) -> Vec<Arc<str>> {
    items
        .iter()
        .filter(|_| rng.chance(50))
        .map(|s| Arc::from(*s))
        .collect()
}

impl Harness {
    fn new(seed: u64) -> Self {
        let mut reference = TenantRouter::new(TenantId::from("t"), GRACE, WINDOW);
        reference.naive = true;
        Harness {
            rng: Rng(seed),
            real: TenantRouter::new(TenantId::from("t"), GRACE, WINDOW),
            reference,
            now: 1_700_000_000_000,
            next_conn: 0,
            next_conv: 0,
            latest_pos: HashMap::new(),
            seen: HashMap::new(),
            max_queue: 0,
        }
    }

    fn random_info(&mut self) -> ConvInfo {
        self.next_conv += 1;
        let skill = match self.rng.below(10) {
            0 | 1 => Some(Arc::from("billing")),
            2 | 3 => Some(Arc::from("sales")),
            4 => Some(Arc::from("rare")),
            _ => None,
        };
        let lang = match self.rng.below(4) {
            0 => Some(Arc::from("en")),
            1 => Some(Arc::from("zh")),
            2 => Some(Arc::from("fr")),
            _ => None,
        };
        ConvInfo {
            conv: ConvId::new(format!("c{}", self.next_conv)),
            visitor: UserId::new(format!("v{}", self.rng.below(VISITORS))),
            skill,
            lang,
            vip: self.rng.chance(20),
            queued_ms: self.now - self.rng.below(200),
        }
    }

    /// Recovery state, applied to both routers alike.
    fn restore(&mut self) {
        for _ in 0..self.rng.below(12) {
            let info = self.random_info();
            match self.rng.below(3) {
                0 => {
                    let front = self.rng.chance(50);
                    let excluded = self
                        .rng
                        .chance(30)
                        .then(|| agent_id(self.rng.below(AGENTS)));
                    self.real
                        .restore_queued(info.clone(), front, excluded.clone());
                    self.reference.restore_queued(info, front, excluded);
                }
                1 => {
                    let agent = AgentRef {
                        id: agent_id(self.rng.below(AGENTS)),
                        name: None,
                    };
                    let at = self.now - self.rng.below(2 * WINDOW);
                    self.real
                        .restore_assigned(info.clone(), agent.clone(), at, self.now);
                    self.reference.restore_assigned(info, agent, at, self.now);
                }
                _ => {
                    let visitor = UserId::new(format!("v{}", self.rng.below(VISITORS)));
                    let agent = agent_id(self.rng.below(AGENTS));
                    let at = self.now - self.rng.below(2 * WINDOW);
                    self.real
                        .restore_last_agent(visitor.clone(), agent.clone(), at);
                    self.reference.restore_last_agent(visitor, agent, at);
                }
            }
        }
        check_state(&self.real);
    }

    fn step(&mut self) {
        self.now += match self.rng.below(20) {
            0 => self.rng.below(3 * GRACE),
            1 => self.rng.below(2 * WINDOW),
            _ => self.rng.below(400),
        };
        let now = self.now;
        let before = snapshot(&self.real);
        let mut transfer_to = None;
        let mut entered = None;
        let kind;
        let (real, reference) = match self.rng.below(100) {
            0..=11 => {
                kind = "connect";
                let n = self.rng.below(AGENTS);
                let profile = AgentProfile {
                    id: agent_id(n),
                    name: self.rng.chance(50).then(|| Arc::from(format!("A{n}"))),
                    skills: some_of(&mut self.rng, &["billing", "sales"]),
                    langs: some_of(&mut self.rng, &["en", "zh"]),
                    max_chats: self.rng.below(5) as u32,
                };
                self.next_conn += 1;
                let conn = ConnRef {
                    shard: (self.next_conn % 4) as usize,
                    id: self.next_conn,
                };
                (
                    self.real.agent_connected(profile.clone(), conn, now),
                    self.reference.agent_connected(profile, conn, now),
                )
            }
            12..=21 => {
                kind = "disconnect";
                let mut live = live_conns(&self.real);
                if self.rng.chance(5) {
                    live.push((agent_id(0), ConnRef { shard: 9, id: 0 }));
                }
                let Some((agent, conn)) = self.rng.pick(&live).cloned() else {
                    return;
                };
                (
                    self.real.agent_disconnected(&agent, conn, now),
                    self.reference.agent_disconnected(&agent, conn, now),
                )
            }
            22..=31 => {
                kind = "status";
                let agent = agent_id(self.rng.below(AGENTS));
                let status = if self.rng.chance(50) {
                    AgentStatus::Online
                } else {
                    AgentStatus::Away
                };
                (
                    self.real.set_status(&agent, status, now),
                    self.reference.set_status(&agent, status, now),
                )
            }
            32..=53 => {
                kind = "enqueue";
                let info = self.random_info();
                entered = Some(info.conv.clone());
                (
                    self.real.enqueue(info.clone(), now),
                    self.reference.enqueue(info, now),
                )
            }
            54..=74 => {
                let conv = self.some_conv();
                if self.rng.chance(20) {
                    kind = "reject";
                    (
                        self.real.assign_rejected(&conv, now),
                        self.reference.assign_rejected(&conv, now),
                    )
                } else {
                    kind = "close";
                    (
                        self.real.conv_closed(&conv, now),
                        self.reference.conv_closed(&conv, now),
                    )
                }
            }
            75..=86 => {
                kind = "transfer";
                let conv = self.some_conv();
                let from = match before.get(&conv) {
                    Some(Before::Assigned { agent }) if self.rng.chance(90) => agent.clone(),
                    _ => agent_id(self.rng.below(AGENTS)),
                };
                let to = match self.rng.below(3) {
                    0 => None,
                    1 => Some(from.clone()),
                    _ => Some(agent_id(self.rng.below(AGENTS))),
                };
                let expected = expected_refusal(&before, &self.real, &conv, &from, to.as_ref());
                let (a, b) = (
                    self.real.transfer(&conv, &from, to.as_ref(), now),
                    self.reference.transfer(&conv, &from, to.as_ref(), now),
                );
                assert_eq!(a, b, "transfer results differ");
                assert_eq!(a.as_ref().err().copied(), expected, "transfer refusal");
                match a {
                    Ok(a) => {
                        transfer_to = Some((conv, from, to));
                        (a, b.unwrap())
                    }
                    Err(_) => {
                        *self.seen.entry("transfer refused").or_default() += 1;
                        (Vec::new(), Vec::new())
                    }
                }
            }
            _ => {
                kind = "tick";
                (self.real.tick(now), self.reference.tick(now))
            }
        };
        *self.seen.entry(kind).or_default() += 1;
        assert_eq!(
            real, reference,
            "{kind} at {now}: optimised and reference differ"
        );
        check_state(&self.real);
        check_state(&self.reference);
        self.check_actions(&before, &real, entered, transfer_to);
        if kind == "tick" {
            self.check_positions_current();
        }
        self.max_queue = self.max_queue.max(self.real.queue.len());
    }

    /// A conversation to act on: usually one the router holds.
    fn some_conv(&mut self) -> ConvId {
        let mut convs: Vec<ConvId> = self.real.convs.keys().cloned().collect();
        convs.sort();
        match self.rng.pick(&convs) {
            Some(conv) if self.rng.chance(95) => conv.clone(),
            _ => ConvId::new(format!("c{}", self.rng.below(self.next_conv + 2))),
        }
    }

    fn check_actions(
        &mut self,
        before: &HashMap<ConvId, Before>,
        actions: &[RouterAction],
        entered: Option<ConvId>,
        transfer: Option<(ConvId, UserId, Option<UserId>)>,
    ) {
        let r = &self.real;
        // Conversations that (re)entered the queue in this call.
        let mut requeued: Vec<ConvId> = entered.into_iter().collect();
        for action in actions {
            match action {
                RouterAction::Assign {
                    conv,
                    agent,
                    conns,
                    previous,
                    waited_ms,
                } => {
                    *self.seen.entry("assign").or_default() += 1;
                    let c = &r.convs[conv];
                    let ConvState::Assigned { agent: owner } = &c.state else {
                        panic!("{conv:?} assigned but not held as assigned");
                    };
                    assert_eq!(owner, &agent.id);
                    let a = &r.agents[&agent.id];
                    assert_eq!(conns, &a.conns);
                    assert_eq!(agent.name, a.profile.name);
                    match previous {
                        Some(from) => {
                            let (t_conv, t_from, t_to) =
                                transfer.as_ref().expect("previous outside a transfer");
                            assert_eq!((conv, from), (t_conv, t_from));
                            assert_eq!(Some(&agent.id), t_to.as_ref());
                            assert!(a.connected(), "transfer target connected");
                            assert_eq!(*waited_ms, 0);
                        }
                        None => {
                            // Routed: the agent was eligible.
                            let was_queued = match before.get(conv) {
                                Some(Before::Queued { excluded }) => {
                                    assert_ne!(excluded.as_ref(), Some(&agent.id), "excluded");
                                    true
                                }
                                _ => false,
                            };
                            assert!(
                                was_queued || requeued.contains(conv),
                                "{conv:?} routed without being queued"
                            );
                            assert!(a.connected(), "routed to a disconnected agent");
                            assert_eq!(a.status, AgentStatus::Online, "routed to away");
                            assert!(
                                a.open.len() <= a.profile.max_chats as usize,
                                "routing went over max_chats"
                            );
                            assert!(a.serves(c.info.skill.as_deref()), "skill");
                            assert_eq!(*waited_ms, self.now - c.info.queued_ms.min(self.now));
                        }
                    }
                    self.latest_pos.remove(conv);
                }
                RouterAction::Requeue { conv, previous } => {
                    *self.seen.entry("requeue").or_default() += 1;
                    match before.get(conv) {
                        Some(Before::Assigned { agent }) => assert_eq!(agent, previous),
                        other => panic!("requeue of {conv:?}, which was {other:?}"),
                    }
                    requeued.push(conv.clone());
                }
                RouterAction::QueuePosition { conv, position } => {
                    *self.seen.entry("position").or_default() += 1;
                    let Some(ConvState::Queued { key, .. }) = r.convs.get(conv).map(|c| &c.state)
                    else {
                        panic!("position for {conv:?}, which is not queued");
                    };
                    assert_eq!(*position, r.queue.rank(*key), "position is current");
                    assert_eq!(r.queue.last_sent(*key), Some(*position));
                    self.latest_pos.insert(conv.clone(), *position);
                }
                RouterAction::Subscribe { conv, agent, .. } => {
                    assert!(r.agents[agent].open.contains(conv));
                }
                RouterAction::AgentWelcome { .. } | RouterAction::StatusEcho { .. } => {}
            }
        }
        // Handed back to the queue: its agent may not take it back by routing.
        if let Some((conv, from, None)) = &transfer {
            match &r.convs[conv].state {
                ConvState::Queued { excluded, .. } => assert_eq!(excluded.as_ref(), Some(from)),
                ConvState::Assigned { agent } => assert_ne!(agent, from, "handed straight back"),
            }
        }
        self.latest_pos.retain(|conv, _| {
            matches!(
                r.convs.get(conv).map(|c| &c.state),
                Some(ConvState::Queued { .. })
            )
        });
    }

    /// Right after a tick, the latest position sent for every queued
    /// conversation is its position: 1..=len, each once.
    fn check_positions_current(&self) {
        let r = &self.real;
        for (i, key) in r.queue.keys().enumerate() {
            let conv = r.queue.conv(key);
            let sent = self.latest_pos.get(conv).copied();
            assert_eq!(sent, Some(i as u32 + 1), "{conv:?} position after tick");
        }
        // Nothing else holds a position, so they are 1..=len, each once.
        assert_eq!(self.latest_pos.len(), r.queue.len());
    }
}

fn snapshot(r: &TenantRouter) -> HashMap<ConvId, Before> {
    r.convs
        .iter()
        .map(|(id, c)| {
            let before = match &c.state {
                ConvState::Queued { excluded, .. } => Before::Queued {
                    excluded: excluded.clone(),
                },
                ConvState::Assigned { agent } => Before::Assigned {
                    agent: agent.clone(),
                },
            };
            (id.clone(), before)
        })
        .collect()
}

fn live_conns(r: &TenantRouter) -> Vec<(UserId, ConnRef)> {
    let mut live: Vec<(UserId, ConnRef)> = r
        .agents
        .values()
        .flat_map(|a| a.conns.iter().map(|c| (a.profile.id.clone(), *c)))
        .collect();
    live.sort();
    live
}

/// The error a transfer must give, if any, from the state before it.
fn expected_refusal(
    before: &HashMap<ConvId, Before>,
    r: &TenantRouter,
    conv: &ConvId,
    from: &UserId,
    to: Option<&UserId>,
) -> Option<TransferError> {
    match before.get(conv) {
        None => return Some(TransferError::UnknownConversation),
        Some(Before::Assigned { agent }) if agent == from => {}
        Some(_) => return Some(TransferError::Forbidden),
    }
    let to = to?;
    if to == from {
        Some(TransferError::ToSelf)
    } else if r.agents.get(to).is_none_or(|a| a.conns.is_empty()) {
        Some(TransferError::NotFound)
    } else {
        None
    }
}

/// The state's own consistency, and "settled": no queued conversation has
/// an eligible agent.
fn check_state(r: &TenantRouter) {
    r.queue.check();
    let mut queued = 0;
    let mut assigned: HashMap<&UserId, usize> = HashMap::new();
    for (id, c) in &r.convs {
        assert_eq!(id, &c.info.conv);
        match &c.state {
            ConvState::Queued { key, .. } => {
                queued += 1;
                assert_eq!(r.queue.conv(*key), id, "queue slot");
                assert!(r.queue.lane_has(&c.info.skill, *key), "skill lane");
            }
            ConvState::Assigned { agent } => {
                let a = r.agents.get(agent).expect("assigned to a known agent");
                assert!(a.open.contains(id), "agent holds its conversation");
                *assigned.entry(agent).or_default() += 1;
            }
        }
    }
    assert_eq!(
        queued,
        r.queue.len(),
        "no conversation both queued and assigned"
    );
    for (id, a) in &r.agents {
        assert_eq!(id, &a.profile.id);
        // Every conversation an agent holds is assigned to it and to no one
        // else: one owner per conversation.
        assert_eq!(a.open.len(), assigned.get(id).copied().unwrap_or(0));
        assert_eq!(r.ready.contains(id), a.has_room(), "ready set");
        assert_eq!(
            a.connected(),
            a.grace_deadline.is_none(),
            "grace iff no connection"
        );
        if let Some(deadline) = a.grace_deadline {
            assert!(r.grace.contains(&(deadline, id.clone())));
        }
    }
    assert_eq!(
        r.grace.len(),
        r.agents.values().filter(|a| !a.connected()).count()
    );
    assert_eq!(r.sticky.len(), r.sticky_by_time.len());
    for (visitor, (_, at)) in &r.sticky {
        assert!(r.sticky_by_time.contains(&(*at, visitor.clone())));
    }
}

/// Settled: no queued conversation has an eligible agent, at `now`.
fn check_settled(r: &TenantRouter, now: u64) {
    for (id, c) in &r.convs {
        if let ConvState::Queued { .. } = c.state {
            assert_eq!(
                r.naive_choose(id, now),
                None,
                "{id:?} waits while an agent is eligible"
            );
        }
    }
}

#[test]
fn random_events_keep_every_invariant() {
    let mut totals: HashMap<&'static str, usize> = HashMap::new();
    let mut max_queue = 0;
    for seed in 0..16u64 {
        let mut h = Harness::new(seed * 0x1234_5678 + 1);
        if seed % 2 == 0 {
            h.restore();
        }
        for _ in 0..2_000 {
            h.step();
            check_settled(&h.real, h.now);
        }
        max_queue = max_queue.max(h.max_queue);
        for (k, v) in h.seen {
            *totals.entry(k).or_default() += v;
        }
    }
    // The test must have exercised every kind of event and outcome.
    for kind in [
        "connect",
        "disconnect",
        "status",
        "enqueue",
        "close",
        "reject",
        "transfer",
        "transfer refused",
        "tick",
        "assign",
        "requeue",
        "position",
    ] {
        assert!(
            totals.get(kind).copied().unwrap_or(0) > 50,
            "{kind} seen {:?} times: {totals:?}",
            totals.get(kind)
        );
    }
    assert!(max_queue >= 20, "the queue never grew: {max_queue}");
}
