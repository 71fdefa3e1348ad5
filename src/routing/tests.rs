//! One test (or a few) per routing rule.

use std::sync::Arc;

use super::*;
use crate::ids::TenantId;

const GRACE: u64 = 30_000;
const DAY: u64 = 24 * 3600 * 1000;
const T0: u64 = 1_700_000_000_000;

fn router() -> TenantRouter {
    TenantRouter::new(TenantId::from("acme"), GRACE, DAY)
}

fn profile(id: &str, max_chats: u32, skills: &[&str], langs: &[&str]) -> AgentProfile {
    AgentProfile {
        id: UserId::from(id),
        name: Some(Arc::from(id.to_uppercase())),
        skills: skills.iter().map(|s| Arc::from(*s)).collect(),
        langs: langs.iter().map(|s| Arc::from(*s)).collect(),
        max_chats,
    }
}

fn agent(id: &str, max_chats: u32) -> AgentProfile {
    profile(id, max_chats, &[], &[])
}

fn conn(id: u64) -> ConnRef {
    ConnRef { shard: 0, id }
}

fn uid(s: &str) -> UserId {
    UserId::from(s)
}

fn cid(s: &str) -> ConvId {
    ConvId::from(s)
}

fn info(conv: &str, visitor: &str, queued_ms: u64) -> ConvInfo {
    ConvInfo {
        conv: cid(conv),
        visitor: uid(visitor),
        skill: None,
        lang: None,
        vip: false,
        queued_ms,
    }
}

fn with_skill(mut i: ConvInfo, skill: &str) -> ConvInfo {
    i.skill = Some(Arc::from(skill));
    i
}

fn with_lang(mut i: ConvInfo, lang: &str) -> ConvInfo {
    i.lang = Some(Arc::from(lang));
    i
}

fn vip(mut i: ConvInfo) -> ConvInfo {
    i.vip = true;
    i
}

/// `(conv, agent)` of every `Assign`, in order.
fn assigns(actions: &[RouterAction]) -> Vec<(String, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            RouterAction::Assign { conv, agent, .. } => {
                Some((conv.to_string(), agent.id.to_string()))
            }
            _ => None,
        })
        .collect()
}

/// `(conv, position)` of every `QueuePosition`, in order.
fn positions(actions: &[RouterAction]) -> Vec<(String, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            RouterAction::QueuePosition { conv, position } => Some((conv.to_string(), *position)),
            _ => None,
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn pos_pairs(v: &[(&str, u32)]) -> Vec<(String, u32)> {
    v.iter().map(|(a, b)| (a.to_string(), *b)).collect()
}

fn open_of(r: &TenantRouter, agent: &str) -> Vec<String> {
    r.agents[&uid(agent)]
        .open
        .iter()
        .map(|c| c.to_string())
        .collect()
}

fn is_queued(r: &TenantRouter, conv: &str) -> bool {
    matches!(
        r.convs.get(&cid(conv)).map(|c| &c.state),
        Some(router::ConvState::Queued { .. })
    )
}

#[test]
fn capacity_limits_assignments_and_the_rest_waits() {
    let mut r = router();
    r.agent_connected(agent("alice", 2), conn(1), T0);
    let a1 = r.enqueue(info("c1", "v1", T0), T0);
    let a2 = r.enqueue(info("c2", "v2", T0 + 1), T0 + 1);
    let a3 = r.enqueue(info("c3", "v3", T0 + 2), T0 + 2);
    assert_eq!(assigns(&a1), pairs(&[("c1", "alice")]));
    assert_eq!(assigns(&a2), pairs(&[("c2", "alice")]));
    assert!(positions(&a1).is_empty(), "assigned at once: no position");
    assert!(assigns(&a3).is_empty());
    assert_eq!(positions(&a3), pos_pairs(&[("c3", 1)]));
    // Capacity frees: the waiting one is assigned, with its wait.
    let a = r.conv_closed(&cid("c1"), T0 + 500);
    assert_eq!(
        a,
        vec![RouterAction::Assign {
            conv: cid("c3"),
            agent: AgentRef {
                id: uid("alice"),
                name: Some(Arc::from("ALICE"))
            },
            conns: vec![conn(1)],
            previous: None,
            waited_ms: 498,
        }]
    );
    assert_eq!(r.stats().assigned, 2);
    assert_eq!(r.stats().queued, 0);
}

#[test]
fn zero_max_chats_is_never_routed_to() {
    let mut r = router();
    r.agent_connected(agent("alice", 0), conn(1), T0);
    let a = r.enqueue(info("c1", "v1", T0), T0);
    assert!(assigns(&a).is_empty());
}

#[test]
fn skills_restrict_eligibility_without_blocking_the_queue() {
    let mut r = router();
    r.enqueue(with_skill(info("c1", "v1", T0), "billing"), T0);
    r.enqueue(info("c2", "v2", T0 + 1), T0 + 1);
    r.enqueue(with_skill(info("c3", "v3", T0 + 2), "sales"), T0 + 2);
    // Nobody serves billing: c1 waits, c2 and c3 behind it are served.
    let a = r.agent_connected(profile("alice", 5, &["sales"], &[]), conn(1), T0 + 10);
    assert_eq!(assigns(&a), pairs(&[("c2", "alice"), ("c3", "alice")]));
    assert!(is_queued(&r, "c1"));
    let a = r.agent_connected(profile("bob", 5, &["billing"], &[]), conn(2), T0 + 20);
    assert_eq!(assigns(&a), pairs(&[("c1", "bob")]));
}

#[test]
fn an_agent_without_the_skill_is_skipped_for_one_with_it() {
    let mut r = router();
    r.agent_connected(agent("alice", 5), conn(1), T0);
    r.agent_connected(profile("bob", 5, &["billing"], &[]), conn(2), T0);
    r.enqueue(info("c0", "v0", T0), T0); // alice (tie on everything but id)
    let a = r.enqueue(with_skill(info("c1", "v1", T0), "billing"), T0);
    assert_eq!(assigns(&a), pairs(&[("c1", "bob")]));
}

#[test]
fn speakers_of_the_visitors_language_are_preferred_over_lower_load() {
    let mut r = router();
    r.agent_connected(profile("alice", 5, &[], &["en"]), conn(1), T0);
    r.agent_connected(profile("bob", 5, &[], &["zh", "en"]), conn(2), T0);
    // Load bob with two conversations.
    r.transfer_setup(&["x1", "x2"], "bob", T0);
    assert_eq!(open_of(&r, "bob").len(), 2);
    let a = r.enqueue(with_lang(info("c1", "v1", T0 + 1), "zh"), T0 + 1);
    assert_eq!(assigns(&a), pairs(&[("c1", "bob")]));
    // Nobody speaks fr: the language rule is void, lowest load wins.
    let a = r.enqueue(with_lang(info("c2", "v2", T0 + 2), "fr"), T0 + 2);
    assert_eq!(assigns(&a), pairs(&[("c2", "alice")]));
}

#[test]
fn a_speaker_without_room_does_not_hold_the_conversation_back() {
    let mut r = router();
    r.agent_connected(profile("bob", 1, &[], &["zh"]), conn(2), T0);
    r.enqueue(info("x", "vx", T0), T0); // bob is now full
    r.agent_connected(agent("alice", 5), conn(1), T0);
    let a = r.enqueue(with_lang(info("c1", "v1", T0), "zh"), T0);
    assert_eq!(assigns(&a), pairs(&[("c1", "alice")]));
}

impl TenantRouter {
    /// Test helper: assigns fresh conversations `convs` to `agent` through
    /// routing, by making it the only agent with room for a moment.
    fn transfer_setup(&mut self, convs: &[&str], agent: &str, now_ms: u64) {
        let others: Vec<UserId> = self
            .ready
            .iter()
            .filter(|id| id.as_str() != agent)
            .cloned()
            .collect();
        for id in &others {
            self.set_status(id, AgentStatus::Away, now_ms);
        }
        for (i, c) in convs.iter().enumerate() {
            let a = self.enqueue(info(c, &format!("setup-{c}"), now_ms + i as u64), now_ms);
            assert_eq!(assigns(&a), pairs(&[(c, agent)]));
        }
        for id in &others {
            self.set_status(id, AgentStatus::Online, now_ms);
        }
    }
}

#[test]
fn sticky_agent_within_the_window_beats_lower_load() {
    let mut r = router();
    r.agent_connected(agent("alice", 5), conn(1), T0);
    r.agent_connected(agent("bob", 5), conn(2), T0);
    r.transfer_setup(&["x1"], "alice", T0);
    let a = r.enqueue(info("c1", "ann", T0), T0);
    assert_eq!(assigns(&a), pairs(&[("c1", "bob")]), "lowest load");
    r.conv_closed(&cid("c1"), T0 + 1000);
    r.transfer_setup(&["x2", "x3"], "bob", T0 + 2000);
    // Load says alice (1/5 against 2/5); Ann's last agent is bob, assigned
    // exactly 24 h ago: still within the window.
    let a = r.enqueue(info("c2", "ann", T0 + DAY), T0 + DAY);
    assert_eq!(assigns(&a), pairs(&[("c2", "bob")]));
}

#[test]
fn sticky_agent_beyond_the_window_is_not_preferred() {
    let mut r = router();
    r.agent_connected(agent("alice", 5), conn(1), T0);
    r.agent_connected(agent("bob", 5), conn(2), T0);
    r.transfer_setup(&["x1"], "alice", T0);
    let a = r.enqueue(info("c1", "ann", T0), T0);
    assert_eq!(assigns(&a), pairs(&[("c1", "bob")]));
    r.conv_closed(&cid("c1"), T0 + 1000);
    r.transfer_setup(&["x2", "x3"], "bob", T0 + 2000);
    // One millisecond past the window (no tick has pruned the record yet).
    let a = r.enqueue(info("c2", "ann", T0 + DAY + 1), T0 + DAY + 1);
    assert_eq!(assigns(&a), pairs(&[("c2", "alice")]));
}

#[test]
fn tick_prunes_sticky_records_older_than_the_window() {
    let mut r = router();
    r.restore_last_agent(uid("ann"), uid("bob"), T0);
    r.restore_last_agent(uid("ben"), uid("bob"), T0 + 10);
    r.tick(T0 + DAY);
    assert_eq!(r.sticky.len(), 2, "exactly the window old: kept");
    r.tick(T0 + DAY + 1);
    assert!(!r.sticky.contains_key(&uid("ann")));
    assert!(r.sticky.contains_key(&uid("ben")));
    assert_eq!(r.sticky_by_time.len(), 1);
}

#[test]
fn sticky_agent_not_eligible_falls_back_to_the_others() {
    // Each way bob can be ineligible; ann's last agent is always bob and
    // would win on load and idle time too.
    let setup = || {
        let mut r = router();
        r.agent_connected(profile("alice", 5, &["billing"], &[]), conn(1), T0);
        r.agent_connected(profile("bob", 2, &[], &[]), conn(2), T0);
        r.transfer_setup(&["a1", "a2"], "alice", T0);
        r.restore_last_agent(uid("ann"), uid("bob"), T0);
        r
    };
    let mut r = setup();
    r.set_status(&uid("bob"), AgentStatus::Away, T0 + 1);
    let a = r.enqueue(info("c1", "ann", T0 + 2), T0 + 2);
    assert_eq!(assigns(&a), pairs(&[("c1", "alice")]), "away");

    let mut r = setup();
    r.transfer_setup(&["b1", "b2"], "bob", T0 + 1);
    let a = r.enqueue(info("c1", "ann", T0 + 2), T0 + 2);
    assert_eq!(assigns(&a), pairs(&[("c1", "alice")]), "full");

    let mut r = setup();
    let a = r.enqueue(with_skill(info("c1", "ann", T0 + 2), "billing"), T0 + 2);
    assert_eq!(assigns(&a), pairs(&[("c1", "alice")]), "lacks the skill");

    let mut r = setup();
    r.agent_disconnected(&uid("bob"), conn(2), T0 + 1);
    let a = r.enqueue(info("c1", "ann", T0 + 2), T0 + 2);
    assert_eq!(assigns(&a), pairs(&[("c1", "alice")]), "in grace");

    // And eligible, bob gets it.
    let mut r = setup();
    let a = r.enqueue(info("c1", "ann", T0 + 2), T0 + 2);
    assert_eq!(assigns(&a), pairs(&[("c1", "bob")]));
}

#[test]
fn lowest_load_is_compared_exactly() {
    let mut r = router();
    r.agent_connected(agent("alice", 2), conn(1), T0);
    r.agent_connected(agent("bob", 3), conn(2), T0);
    r.transfer_setup(&["a1"], "alice", T0); // 1/2
    r.transfer_setup(&["b1"], "bob", T0); // 1/3 < 1/2
    let a = r.enqueue(info("c1", "v1", T0 + 1), T0 + 1);
    assert_eq!(assigns(&a), pairs(&[("c1", "bob")]));
    // Now 1/2 against 2/3: alice.
    let a = r.enqueue(info("c2", "v2", T0 + 2), T0 + 2);
    assert_eq!(assigns(&a), pairs(&[("c2", "alice")]));
}

#[test]
fn equal_load_goes_to_the_longest_idle_and_never_assigned_first() {
    let mut r = router();
    r.agent_connected(agent("alice", 4), conn(1), T0);
    r.agent_connected(agent("bob", 4), conn(2), T0);
    r.agent_connected(agent("carl", 4), conn(3), T0);
    r.transfer_setup(&["a1"], "alice", T0 + 10);
    r.transfer_setup(&["b1"], "bob", T0 + 5);
    r.conv_closed(&cid("a1"), T0 + 20);
    r.conv_closed(&cid("b1"), T0 + 20);
    // All at 0 load: carl never had one, then bob (T0+5), then alice (T0+10).
    let a = r.enqueue(info("c1", "v1", T0 + 30), T0 + 30);
    assert_eq!(assigns(&a), pairs(&[("c1", "carl")]));
    r.conv_closed(&cid("c1"), T0 + 31);
    let a = r.enqueue(info("c2", "v2", T0 + 32), T0 + 32);
    assert_eq!(assigns(&a), pairs(&[("c2", "bob")]));
    r.conv_closed(&cid("c2"), T0 + 33);
    let a = r.enqueue(info("c3", "v3", T0 + 34), T0 + 34);
    assert_eq!(assigns(&a), pairs(&[("c3", "alice")]));
}

#[test]
fn assignments_in_the_same_millisecond_still_rotate() {
    // Carl's four conversations are requeued in one tick while alice and
    // bob both have room: one pass, one millisecond.
    let mut r = router();
    r.agent_connected(agent("carl", 4), conn(3), T0);
    for c in ["c1", "c2", "c3", "c4"] {
        r.enqueue(info(c, c, T0), T0);
    }
    r.agent_disconnected(&uid("carl"), conn(3), T0 + 1);
    r.agent_connected(agent("bob", 4), conn(2), T0 + 2);
    r.agent_connected(agent("alice", 4), conn(1), T0 + 2);
    let a = r.tick(T0 + 1 + GRACE);
    // alice (tie: id), bob (lower load), alice (equal load, her assignment
    // came first within the same millisecond), bob.
    assert_eq!(
        assigns(&a),
        pairs(&[
            ("c1", "alice"),
            ("c2", "bob"),
            ("c3", "alice"),
            ("c4", "bob")
        ])
    );
}

#[test]
fn ties_on_everything_go_to_the_smallest_id() {
    let mut r = router();
    r.agent_connected(agent("carl", 3), conn(3), T0);
    r.agent_connected(agent("alice", 3), conn(1), T0);
    r.agent_connected(agent("bob", 3), conn(2), T0);
    let a = r.enqueue(info("c1", "v1", T0), T0);
    assert_eq!(assigns(&a), pairs(&[("c1", "alice")]));
    // Then the two never assigned, smallest id first, then round robin.
    let a = r.enqueue(info("c2", "v2", T0), T0);
    assert_eq!(assigns(&a), pairs(&[("c2", "bob")]));
    let a = r.enqueue(info("c3", "v3", T0), T0);
    assert_eq!(assigns(&a), pairs(&[("c3", "carl")]));
    let a = r.enqueue(info("c4", "v4", T0), T0);
    assert_eq!(assigns(&a), pairs(&[("c4", "alice")]));
}

#[test]
fn vip_conversations_are_served_first_then_by_queue_time() {
    let mut r = router();
    r.enqueue(info("n1", "v1", T0), T0);
    r.enqueue(info("n2", "v2", T0 + 1), T0 + 1);
    r.enqueue(vip(info("p2", "v3", T0 + 3)), T0 + 3);
    // Arrives later but entered the queue earlier (its own queued_ms).
    let a = r.enqueue(vip(info("p1", "v4", T0 + 2)), T0 + 4);
    assert_eq!(positions(&a), pos_pairs(&[("p1", 1)]));
    let a = r.agent_connected(agent("alice", 3), conn(1), T0 + 10);
    assert_eq!(
        assigns(&a),
        pairs(&[("p1", "alice"), ("p2", "alice"), ("n1", "alice")])
    );
}

#[test]
fn queue_time_ties_keep_arrival_order() {
    let mut r = router();
    for c in ["c1", "c2", "c3"] {
        r.enqueue(info(c, c, T0), T0);
    }
    let a = r.agent_connected(agent("alice", 3), conn(1), T0);
    assert_eq!(
        assigns(&a),
        pairs(&[("c1", "alice"), ("c2", "alice"), ("c3", "alice")])
    );
}

#[test]
fn grace_expiry_requeues_at_the_front() {
    let mut r = router();
    r.agent_connected(agent("alice", 2), conn(1), T0);
    r.enqueue(info("a1", "va1", T0), T0);
    r.enqueue(info("a2", "va2", T0 + 1), T0 + 1);
    r.enqueue(vip(info("p1", "vp", T0 + 2)), T0 + 2);
    r.enqueue(info("n1", "vn", T0 + 3), T0 + 3);
    r.tick(T0 + 4);
    assert!(r
        .agent_disconnected(&uid("alice"), conn(1), T0 + 100)
        .is_empty());
    assert!(r.tick(T0 + 100 + GRACE - 1).is_empty(), "still in grace");
    assert_eq!(r.stats().agents_in_grace, 1);
    let a = r.tick(T0 + 100 + GRACE);
    assert_eq!(
        a,
        vec![
            RouterAction::Requeue {
                conv: cid("a1"),
                previous: uid("alice")
            },
            RouterAction::Requeue {
                conv: cid("a2"),
                previous: uid("alice")
            },
            RouterAction::QueuePosition {
                conv: cid("a1"),
                position: 1
            },
            RouterAction::QueuePosition {
                conv: cid("a2"),
                position: 2
            },
            RouterAction::QueuePosition {
                conv: cid("p1"),
                position: 3
            },
            RouterAction::QueuePosition {
                conv: cid("n1"),
                position: 4
            },
        ]
    );
    assert!(!r.agents.contains_key(&uid("alice")), "forgotten");
    let s = r.stats();
    assert_eq!((s.queued, s.queued_front, s.queued_vip), (4, 2, 1));
    let a = r.agent_connected(agent("bob", 3), conn(2), T0 + 200_000);
    assert_eq!(
        assigns(&a),
        pairs(&[("a1", "bob"), ("a2", "bob"), ("p1", "bob")])
    );
}

#[test]
fn grace_expiry_reassigns_in_the_same_tick() {
    let mut r = router();
    r.agent_connected(agent("alice", 1), conn(1), T0);
    r.enqueue(info("a1", "va1", T0), T0);
    r.enqueue(info("n1", "vn", T0 + 1), T0 + 1);
    r.agent_connected(agent("bob", 1), conn(2), T0 + 2);
    r.conv_closed(&cid("n1"), T0 + 3);
    assert_eq!(open_of(&r, "bob"), Vec::<String>::new());
    r.agent_disconnected(&uid("alice"), conn(1), T0 + 10);
    let a = r.tick(T0 + 10 + GRACE);
    assert_eq!(
        a.iter()
            .map(|a| match a {
                RouterAction::Requeue { .. } => "requeue",
                RouterAction::Assign { .. } => "assign",
                _ => "other",
            })
            .collect::<Vec<_>>(),
        vec!["requeue", "assign"],
        "no position for a conversation assigned in the same tick: {a:?}"
    );
    assert_eq!(assigns(&a), pairs(&[("a1", "bob")]));
}

#[test]
fn reconnecting_within_grace_keeps_everything() {
    let mut r = router();
    r.agent_connected(agent("alice", 3), conn(1), T0);
    r.enqueue(info("c2", "v2", T0), T0);
    r.enqueue(info("c1", "v1", T0), T0);
    r.agent_disconnected(&uid("alice"), conn(1), T0 + 10);
    let a = r.agent_connected(agent("alice", 3), conn(7), T0 + 10 + GRACE - 1);
    assert_eq!(
        a,
        vec![
            RouterAction::AgentWelcome {
                conn: conn(7),
                convs: vec![cid("c1"), cid("c2")]
            },
            RouterAction::Subscribe {
                conv: cid("c1"),
                agent: uid("alice"),
                conn: conn(7)
            },
            RouterAction::Subscribe {
                conv: cid("c2"),
                agent: uid("alice"),
                conn: conn(7)
            },
        ]
    );
    assert!(r.tick(T0 + 10 + GRACE + 1000).is_empty());
    assert_eq!(open_of(&r, "alice"), vec!["c1", "c2"]);
    assert!(r.grace.is_empty());
}

#[test]
fn grace_starts_only_when_the_last_connection_drops() {
    let mut r = router();
    r.agent_connected(agent("alice", 3), conn(1), T0);
    let a = r.agent_connected(agent("alice", 3), conn(2), T0);
    assert_eq!(
        a,
        vec![RouterAction::AgentWelcome {
            conn: conn(2),
            convs: vec![]
        }]
    );
    let a = r.enqueue(info("c1", "v1", T0), T0);
    let RouterAction::Assign { conns, .. } = &a[0] else {
        panic!("{a:?}")
    };
    assert_eq!(conns, &vec![conn(1), conn(2)], "every device of the agent");
    r.agent_disconnected(&uid("alice"), conn(1), T0 + 1);
    assert!(r.grace.is_empty());
    assert!(r.tick(T0 + 2 * GRACE).is_empty());
    // Unknown agent or connection: nothing happens.
    assert!(r.agent_disconnected(&uid("alice"), conn(9), T0).is_empty());
    assert!(r.agent_disconnected(&uid("zed"), conn(9), T0).is_empty());
    r.agent_disconnected(&uid("alice"), conn(2), T0 + 2 * GRACE);
    assert_eq!(r.grace.len(), 1);
}

#[test]
fn profile_is_refreshed_from_the_newest_connection() {
    let mut r = router();
    r.agent_connected(profile("alice", 1, &[], &[]), conn(1), T0);
    r.enqueue(info("c1", "v1", T0), T0);
    let a = r.enqueue(with_skill(info("c2", "v2", T0), "billing"), T0);
    assert!(assigns(&a).is_empty());
    // A second device with a newer token: more room and a new skill.
    let mut p = profile("alice", 3, &["billing"], &[]);
    p.name = Some(Arc::from("Alice B."));
    let a = r.agent_connected(p, conn(2), T0 + 1);
    let RouterAction::Assign { conv, agent, .. } = a.last().unwrap() else {
        panic!("{a:?}")
    };
    assert_eq!(conv, &cid("c2"));
    assert_eq!(agent.name.as_deref(), Some("Alice B."));
    // Lowering max_chats takes nothing away.
    r.agent_connected(profile("alice", 1, &[], &[]), conn(3), T0 + 2);
    assert_eq!(open_of(&r, "alice"), vec!["c1", "c2"]);
    let a = r.enqueue(info("c3", "v3", T0 + 3), T0 + 3);
    assert!(assigns(&a).is_empty());
}

#[test]
fn away_agents_get_nothing_until_back_online() {
    let mut r = router();
    r.agent_connected(agent("alice", 3), conn(1), T0);
    r.agent_connected(agent("alice", 3), conn(2), T0);
    let a = r.set_status(&uid("alice"), AgentStatus::Away, T0);
    assert_eq!(
        a,
        vec![RouterAction::StatusEcho {
            conns: vec![conn(1), conn(2)],
            status: AgentStatus::Away
        }]
    );
    let a = r.enqueue(info("c1", "v1", T0 + 1), T0 + 1);
    assert_eq!(positions(&a), pos_pairs(&[("c1", 1)]));
    assert_eq!(r.stats().agents_away, 1);
    let a = r.set_status(&uid("alice"), AgentStatus::Online, T0 + 2);
    assert_eq!(
        a[0],
        RouterAction::StatusEcho {
            conns: vec![conn(1), conn(2)],
            status: AgentStatus::Online
        }
    );
    assert_eq!(assigns(&a), pairs(&[("c1", "alice")]));
    // Status from an agent that is not connected is ignored.
    assert!(r
        .set_status(&uid("zed"), AgentStatus::Online, T0)
        .is_empty());
}

#[test]
fn connecting_makes_an_away_agent_online_and_tells_its_other_devices() {
    let mut r = router();
    r.agent_connected(agent("alice", 3), conn(1), T0);
    r.set_status(&uid("alice"), AgentStatus::Away, T0);
    r.enqueue(info("c1", "v1", T0), T0);
    let a = r.agent_connected(agent("alice", 3), conn(2), T0 + 1);
    assert_eq!(
        a[0],
        RouterAction::AgentWelcome {
            conn: conn(2),
            convs: vec![]
        }
    );
    assert_eq!(
        a[1],
        RouterAction::StatusEcho {
            conns: vec![conn(1)],
            status: AgentStatus::Online
        }
    );
    assert_eq!(assigns(&a), pairs(&[("c1", "alice")]));
}

#[test]
fn transfer_to_a_connected_agent() {
    let mut r = router();
    r.agent_connected(agent("alice", 1), conn(1), T0);
    r.enqueue(info("c1", "ann", T0), T0);
    r.enqueue(info("c2", "ben", T0 + 1), T0 + 1);
    // Bob is away and has max_chats 0: an explicit transfer ignores both.
    r.agent_connected(agent("bob", 0), conn(2), T0 + 2);
    r.set_status(&uid("bob"), AgentStatus::Away, T0 + 2);
    let a = r
        .transfer(&cid("c1"), &uid("alice"), Some(&uid("bob")), T0 + 10)
        .unwrap();
    assert_eq!(
        a[0],
        RouterAction::Assign {
            conv: cid("c1"),
            agent: AgentRef {
                id: uid("bob"),
                name: Some(Arc::from("BOB"))
            },
            conns: vec![conn(2)],
            previous: Some(uid("alice")),
            waited_ms: 0,
        }
    );
    // Alice's capacity freed: c2 is assigned to her in the same call.
    assert_eq!(assigns(&a[1..]), pairs(&[("c2", "alice")]));
    assert_eq!(a.len(), 2);
    assert_eq!(open_of(&r, "bob"), vec!["c1"]);
    assert_eq!(
        r.sticky[&uid("ann")].0,
        uid("bob"),
        "bob is ann's last agent"
    );
}

#[test]
fn transfer_errors() {
    let mut r = router();
    r.agent_connected(agent("alice", 2), conn(1), T0);
    r.agent_connected(agent("bob", 2), conn(2), T0);
    r.transfer_setup(&["c1"], "alice", T0);
    r.set_status(&uid("alice"), AgentStatus::Away, T0);
    r.set_status(&uid("bob"), AgentStatus::Away, T0);
    r.enqueue(info("q1", "vq", T0), T0);
    let (alice, bob, zed) = (uid("alice"), uid("bob"), uid("zed"));
    assert_eq!(
        r.transfer(&cid("nope"), &alice, Some(&bob), T0),
        Err(TransferError::UnknownConversation)
    );
    assert_eq!(
        r.transfer(&cid("c1"), &bob, Some(&alice), T0),
        Err(TransferError::Forbidden),
        "not bob's conversation"
    );
    assert_eq!(
        r.transfer(&cid("q1"), &alice, None, T0),
        Err(TransferError::Forbidden),
        "queued: nobody's"
    );
    assert_eq!(
        r.transfer(&cid("c1"), &alice, Some(&alice), T0),
        Err(TransferError::ToSelf)
    );
    assert_eq!(
        r.transfer(&cid("c1"), &alice, Some(&zed), T0),
        Err(TransferError::NotFound)
    );
    r.agent_disconnected(&bob, conn(2), T0);
    assert_eq!(
        r.transfer(&cid("c1"), &alice, Some(&bob), T0),
        Err(TransferError::NotFound),
        "in grace is not connected"
    );
    assert_eq!(TransferError::Forbidden.code(), ErrorCode::Forbidden);
    assert_eq!(TransferError::NotFound.code(), ErrorCode::NotFound);
    assert_eq!(
        TransferError::UnknownConversation.code(),
        ErrorCode::NotFound
    );
    assert_eq!(TransferError::ToSelf.code(), ErrorCode::BadRequest);
    // Nothing moved.
    assert_eq!(open_of(&r, "alice"), vec!["c1"]);
    assert!(is_queued(&r, "q1"));
}

#[test]
fn transfer_to_the_queue_excludes_the_handing_agent() {
    let mut r = router();
    r.agent_connected(agent("alice", 2), conn(1), T0);
    r.enqueue(info("c1", "ann", T0), T0);
    r.enqueue(info("n1", "vn", T0 + 1), T0 + 1);
    r.set_status(&uid("alice"), AgentStatus::Away, T0 + 2);
    r.enqueue(info("n2", "vn2", T0 + 3), T0 + 3);
    r.set_status(&uid("alice"), AgentStatus::Online, T0 + 4);
    // alice holds c1 and n1, n2 waits.
    assert_eq!(open_of(&r, "alice"), vec!["c1", "n1"]);
    let a = r
        .transfer(&cid("c1"), &uid("alice"), None, T0 + 10)
        .unwrap();
    // c1 goes to the front, but alice (its sticky agent, the only one with
    // room) may not take it back: she gets n2 instead.
    assert_eq!(
        a,
        vec![
            RouterAction::Requeue {
                conv: cid("c1"),
                previous: uid("alice")
            },
            RouterAction::Assign {
                conv: cid("n2"),
                agent: AgentRef {
                    id: uid("alice"),
                    name: Some(Arc::from("ALICE"))
                },
                conns: vec![conn(1)],
                previous: None,
                waited_ms: 7,
            },
            RouterAction::QueuePosition {
                conv: cid("c1"),
                position: 1
            },
        ]
    );
    r.conv_closed(&cid("n1"), T0 + 11);
    assert!(is_queued(&r, "c1"), "still excluded after capacity frees");
    let a = r.agent_connected(agent("bob", 2), conn(2), T0 + 20);
    let got = assigns(&a);
    assert_eq!(got, pairs(&[("c1", "bob")]));
    let RouterAction::Assign { waited_ms, .. } = &a[1] else {
        panic!("{a:?}")
    };
    assert_eq!(*waited_ms, 10, "the wait counts from the requeue");
    // Once assigned, the exclusion is gone: alice can get it by transfer.
    r.transfer(&cid("c1"), &uid("bob"), Some(&uid("alice")), T0 + 30)
        .unwrap();
    assert_eq!(open_of(&r, "alice"), vec!["c1", "n2"]);
}

#[test]
fn positions_on_enqueue_and_coalesced_on_tick() {
    let mut r = router();
    for (i, c) in ["c1", "c2", "c3"].iter().enumerate() {
        let a = r.enqueue(info(c, c, T0 + i as u64), T0 + i as u64);
        assert_eq!(positions(&a), pos_pairs(&[(c, i as u32 + 1)]));
    }
    assert!(r.tick(T0 + 10).is_empty(), "nothing changed since sent");
    // A VIP jumps the queue: it is told 1 at once, the others by the tick.
    let a = r.enqueue(vip(info("p1", "p1", T0 + 11)), T0 + 11);
    assert_eq!(positions(&a), pos_pairs(&[("p1", 1)]));
    // c2 leaves; coalesced: c1 goes 1 -> 2 (VIP) and stays, c3 3 -> 4 -> 3.
    r.conv_closed(&cid("c2"), T0 + 12);
    let a = r.tick(T0 + 13);
    assert_eq!(positions(&a), pos_pairs(&[("c1", 2)]));
    assert!(r.tick(T0 + 14).is_empty(), "not re-sent if unchanged");
    // Assigned conversations get no more positions.
    let a = r.agent_connected(agent("alice", 1), conn(1), T0 + 15);
    assert_eq!(assigns(&a), pairs(&[("p1", "alice")]));
    let a = r.tick(T0 + 16);
    assert_eq!(positions(&a), pos_pairs(&[("c1", 1), ("c3", 2)]));
}

#[test]
fn enqueue_of_a_known_conversation_is_ignored() {
    let mut r = router();
    r.enqueue(info("c1", "v1", T0), T0);
    assert!(r.enqueue(info("c1", "v1", T0), T0).is_empty());
    assert_eq!(r.stats().queued, 1);
}

#[test]
fn closing_a_queued_conversation_and_rejecting_an_assignment() {
    let mut r = router();
    r.enqueue(info("c1", "v1", T0), T0);
    r.enqueue(info("c2", "v2", T0 + 1), T0 + 1);
    assert!(r.conv_closed(&cid("c1"), T0 + 2).is_empty());
    assert!(r.conv_closed(&cid("c1"), T0 + 2).is_empty(), "twice: no-op");
    assert_eq!(r.stats().queued, 1);
    r.agent_connected(agent("alice", 1), conn(1), T0 + 3);
    r.enqueue(info("c3", "v3", T0 + 4), T0 + 4);
    // The shard refused c2 (it closed meanwhile): capacity frees, c3 goes.
    let a = r.assign_rejected(&cid("c2"), T0 + 5);
    assert_eq!(assigns(&a), pairs(&[("c3", "alice")]));
    assert!(r.assign_rejected(&cid("c2"), T0 + 5).is_empty());
}

#[test]
fn restore_queued_keeps_front_class_and_exclusion() {
    let mut r = router();
    r.restore_queued(info("n1", "v1", T0), false, None);
    r.restore_queued(vip(info("p1", "v2", T0 + 5)), false, None);
    r.restore_queued(info("f1", "v3", T0 + 9), true, Some(uid("alice")));
    r.restore_queued(info("n1", "v1", T0), true, None); // duplicate: ignored
    let a = r.tick(T0 + 100);
    assert_eq!(positions(&a), pos_pairs(&[("f1", 1), ("p1", 2), ("n1", 3)]));
    let a = r.agent_connected(agent("alice", 5), conn(1), T0 + 200);
    assert_eq!(assigns(&a), pairs(&[("p1", "alice"), ("n1", "alice")]));
    let a = r.agent_connected(agent("bob", 5), conn(2), T0 + 200);
    assert_eq!(assigns(&a), pairs(&[("f1", "bob")]));
}

#[test]
fn restore_assigned_starts_grace_at_recovery() {
    let mut r = router();
    let alice = AgentRef {
        id: uid("alice"),
        name: Some(Arc::from("Alice")),
    };
    r.restore_assigned(info("c1", "v1", T0), alice.clone(), T0 + 1, T0 + 1000);
    r.restore_assigned(info("c2", "v2", T0), alice.clone(), T0 + 2, T0 + 2000);
    r.restore_last_agent(uid("v1"), uid("alice"), T0 + 1);
    let s = r.stats();
    assert_eq!((s.assigned, s.agents_in_grace, s.agents_online), (2, 1, 0));
    assert_eq!(r.agents[&uid("alice")].last_assign, Some((T0 + 2, 0)));
    // Grace counts from the first restore.
    assert!(r.tick(T0 + 1000 + GRACE - 1).is_empty());
    // Alice reconnects in time: welcome lists both, nothing moves.
    let a = r.agent_connected(agent("alice", 5), conn(1), T0 + 1000 + GRACE - 1);
    assert_eq!(
        a[0],
        RouterAction::AgentWelcome {
            conn: conn(1),
            convs: vec![cid("c1"), cid("c2")]
        }
    );
    assert_eq!(a.len(), 3);
    assert!(r.tick(T0 + 10 * GRACE).is_empty());
}

#[test]
fn restored_assignments_are_requeued_when_grace_expires() {
    let mut r = router();
    let bob = AgentRef {
        id: uid("bob"),
        name: None,
    };
    r.restore_assigned(info("c2", "v2", T0 + 7), bob.clone(), T0 + 8, T0 + 100);
    r.restore_assigned(info("c1", "v1", T0 + 5), bob.clone(), T0 + 9, T0 + 100);
    r.restore_queued(info("q1", "vq", T0), false, None);
    r.restore_last_agent(uid("v2"), uid("bob"), T0 + 8);
    let a = r.tick(T0 + 100 + GRACE);
    // Requeued in the order they first entered the queue, ahead of q1.
    assert_eq!(
        a,
        vec![
            RouterAction::Requeue {
                conv: cid("c1"),
                previous: uid("bob")
            },
            RouterAction::Requeue {
                conv: cid("c2"),
                previous: uid("bob")
            },
            RouterAction::QueuePosition {
                conv: cid("c1"),
                position: 1
            },
            RouterAction::QueuePosition {
                conv: cid("c2"),
                position: 2
            },
            RouterAction::QueuePosition {
                conv: cid("q1"),
                position: 3
            },
        ]
    );
    // Bob comes back later: a fresh agent, but still v2's sticky agent.
    r.agent_connected(agent("carl", 1), conn(3), T0 + 200_000);
    let a = r.agent_connected(agent("bob", 1), conn(2), T0 + 200_000);
    assert_eq!(assigns(&a), pairs(&[("c2", "bob")]));
}

#[test]
fn restore_last_agent_keeps_the_newest() {
    let mut r = router();
    r.restore_last_agent(uid("ann"), uid("bob"), T0 + 10);
    r.restore_last_agent(uid("ann"), uid("alice"), T0 + 5);
    assert_eq!(r.sticky[&uid("ann")], (uid("bob"), T0 + 10));
    r.restore_last_agent(uid("ann"), uid("alice"), T0 + 20);
    assert_eq!(r.sticky[&uid("ann")], (uid("alice"), T0 + 20));
    assert_eq!(r.sticky_by_time.len(), 1);
    r.agent_connected(agent("bob", 3), conn(2), T0 + 30);
    r.agent_connected(agent("alice", 3), conn(1), T0 + 30);
    r.transfer_setup(&["x"], "alice", T0 + 30);
    // alice is busier and was assigned more recently, but she is sticky.
    let a = r.enqueue(info("c1", "ann", T0 + 40), T0 + 40);
    assert_eq!(assigns(&a), pairs(&[("c1", "alice")]));
}

#[test]
fn stats_count_agents_by_state() {
    let mut r = router();
    r.agent_connected(agent("a", 1), conn(1), T0);
    r.agent_connected(agent("b", 1), conn(2), T0);
    r.agent_connected(agent("c", 1), conn(3), T0);
    r.set_status(&uid("b"), AgentStatus::Away, T0);
    r.agent_disconnected(&uid("c"), conn(3), T0);
    r.enqueue(info("c1", "v1", T0), T0);
    r.enqueue(vip(info("c2", "v2", T0)), T0);
    assert_eq!(
        r.stats(),
        RouterStats {
            queued: 1,
            queued_vip: 1,
            queued_front: 0,
            agents_online: 1,
            agents_away: 1,
            agents_in_grace: 1,
            assigned: 1,
        }
    );
    assert_eq!(AgentStatus::parse("away"), Some(AgentStatus::Away));
    assert_eq!(AgentStatus::Online.as_str(), "online");
    assert_eq!(AgentStatus::parse("busy"), None);
}

#[test]
fn a_flash_sale_queue_stays_cheap() {
    // 20,000 queued, 300 busy agents; then capacity trickles in.
    let mut r = router();
    for i in 0..300 {
        r.agent_connected(agent(&format!("agent{i:03}"), 2), conn(i), T0);
    }
    let start = std::time::Instant::now();
    for i in 0..20_600u64 {
        let skill = ["billing", "sales"][(i % 2) as usize];
        let mut c = with_skill(info(&format!("c{i}"), &format!("v{i}"), T0 + i), skill);
        c.skill = if i % 3 == 0 { None } else { c.skill };
        r.enqueue(c, T0 + i);
    }
    assert_eq!(r.stats().queued, 20_000);
    // Close 600 and count: every close is one assignment.
    let open: Vec<ConvId> = r
        .agents
        .values()
        .flat_map(|a| a.open.iter().cloned())
        .collect();
    for (i, c) in open.iter().enumerate() {
        let a = r.conv_closed(c, T0 + 30_000 + i as u64);
        assert_eq!(assigns(&a).len(), 1);
        if i % 100 == 0 {
            r.tick(T0 + 30_000 + i as u64);
        }
    }
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn idle_agents_lacking_the_skill_do_not_make_passes_walk_the_queue() {
    let mut r = router();
    for i in 0..10_000u64 {
        r.enqueue(
            with_skill(info(&format!("c{i}"), &format!("v{i}"), T0 + i), "billing"),
            T0,
        );
    }
    for i in 0..100 {
        r.agent_connected(profile(&format!("s{i}"), 5, &["sales"], &[]), conn(i), T0);
    }
    // Every pass drops the billing lane after one failed conversation.
    let start = std::time::Instant::now();
    for i in 0..2_000 {
        r.set_status(&uid("s0"), AgentStatus::Online, T0 + i);
    }
    assert_eq!(r.stats().queued, 10_000);
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}
