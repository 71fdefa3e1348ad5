//! Routing end to end (PROTOCOL.md, "Routing"): capacity, skills, language,
//! load, the tie-break, the sticky agent, VIP first and queue positions.
//!
//! Every scenario is built so that the rule under test is the only one that
//! can explain the outcome: the agent the other rules (or the id order)
//! would pick is a different one.

mod common;
#[path = "routing_support/mod.rs"]
mod support;

use common::{Client, Gateway, Options};
use serde_json::json;
use support::*;

/// An anonymous visitor: (client, its id).
fn anon(gw: &Gateway) -> (Client, String) {
    let (c, welcome) = gw.anonymous("demo");
    let id = welcome["id"].as_str().expect("visitor id").to_string();
    (c, id)
}

/// Opens a conversation for a new anonymous visitor that `agent_id` takes
/// at once; checks the visitor's and the agent's view. Returns (visitor, conv).
fn served_by(gw: &Gateway, a: &mut Client, agent_id: &str, text: &str) -> (Client, String) {
    let (mut v, vid) = anon(gw);
    let conv = open(&mut v, "m-1", text);
    expect_assigned_at_once(&mut v, &conv, agent(agent_id));
    expect_new_assignment(a, &conv, &vid, ("m-1", text), agent(agent_id));
    (v, conv)
}

#[test]
fn capacity_an_agent_gets_max_chats_and_the_next_waits_for_a_free_slot() {
    let gw = Gateway::start(Options::default());
    let mut alice = agent_login(&gw, "alice", &["--name", "Alice", "--max-chats", "2"]);
    let alice_ref = json!({"id": "alice", "name": "Alice"});

    let mut convs = Vec::new();
    for i in 1..=2 {
        let (mut v, vid) = anon(&gw);
        let text = format!("question {i}");
        let conv = open(&mut v, "m-1", &text);
        expect_assigned_at_once(&mut v, &conv, alice_ref.clone());
        expect_new_assignment(&mut alice, &conv, &vid, ("m-1", &text), alice_ref.clone());
        convs.push((v, conv));
    }

    // The third waits: queued, position 1, and alice hears nothing of it.
    let (mut v3, v3_id) = anon(&gw);
    let c3 = open(&mut v3, "m-1", "question 3");
    expect_queued_at(&mut v3, &c3, 1);
    expect_quiet(&mut alice, "a full agent");
    expect_quiet(&mut v3, "a visitor waiting for a full agent");

    // Alice closes her first conversation: the third is hers at once.
    let (v1, c1) = &mut convs[0];
    close(&mut alice, c1);
    assert_eq!(next_entry(v1), closed(c1, 4, "agent", "alice"));
    let got = entries_by_conv(&mut alice, 4);
    assert_eq!(got[c1.as_str()], [closed(c1, 4, "agent", "alice")]);
    assert_eq!(
        got[&c3],
        [
            chat(
                &c3,
                1,
                "m-1",
                json!({"role": "visitor", "id": v3_id}),
                "question 3"
            ),
            queued(&c3, 2),
            assigned(&c3, 3, alice_ref.clone()),
        ]
    );
    assert_eq!(next_entry(&mut v3), assigned(&c3, 3, alice_ref));

    // And she serves it.
    let ack = alice.say("a-1", Some(&c3), "how can I help?");
    assert_eq!(ack["seq"], 4);
    assert_eq!(
        next_entry(&mut v3),
        chat(
            &c3,
            4,
            "a-1",
            json!({"role": "agent", "id": "alice", "name": "Alice"}),
            "how can I help?"
        )
    );
}

#[test]
fn skills_only_matching_agents_and_an_unservable_conversation_blocks_nobody() {
    let gw = Gateway::start(Options::default());
    // Queued before any agent: a skill nobody has, billing, and no skill.
    let mut legal = visitor(&gw, "v-legal", &["--skill", "legal"]);
    let c_legal = open(&mut legal, "m-1", "a contract question");
    expect_queued_at(&mut legal, &c_legal, 1);
    let mut bill = visitor(&gw, "v-bill", &["--skill", "billing"]);
    let c_bill = open(&mut bill, "m-1", "an invoice question");
    expect_queued_at(&mut bill, &c_bill, 2);
    let (mut plain, plain_id) = anon(&gw);
    let c_plain = open(&mut plain, "m-1", "a plain question");
    expect_queued_at(&mut plain, &c_plain, 3);

    // amy serves no skill: she gets the third conversation, past the two
    // she may not take.
    let mut amy = agent_login(&gw, "amy", &[]);
    expect_new_assignment(
        &mut amy,
        &c_plain,
        &plain_id,
        ("m-1", "a plain question"),
        agent("amy"),
    );
    assert_eq!(next_entry(&mut plain), assigned(&c_plain, 3, agent("amy")));
    expect_quiet(&mut amy, "an agent without the skill");
    // Nothing moved ahead of them: their positions stand.
    expect_quiet(&mut legal, "the legal visitor");
    expect_quiet(&mut bill, "the billing visitor");

    // zoe serves billing: the billing conversation is hers, legal still waits.
    let mut zoe = agent_login(&gw, "zoe", &["--skills", "billing,returns"]);
    expect_new_assignment(
        &mut zoe,
        &c_bill,
        "v-bill",
        ("m-1", "an invoice question"),
        agent("zoe"),
    );
    assert_eq!(next_entry(&mut bill), assigned(&c_bill, 3, agent("zoe")));
    // It was and stays first in the queue: no position changes.
    expect_quiet(&mut legal, "the legal visitor");

    // Both connected, amy less loaded (1/5 vs 2/5 after this), and first by
    // id: a billing visitor still goes to zoe.
    let mut bill2 = visitor(&gw, "v-bill2", &["--skill", "billing"]);
    let c_bill2 = open(&mut bill2, "m-1", "another invoice");
    expect_assigned_at_once(&mut bill2, &c_bill2, agent("zoe"));
    expect_new_assignment(
        &mut zoe,
        &c_bill2,
        "v-bill2",
        ("m-1", "another invoice"),
        agent("zoe"),
    );
    expect_quiet(&mut amy, "an agent without the skill");

    // An agent with the missing skill arrives: the legal conversation is served.
    let mut lex = agent_login(&gw, "lex", &["--skills", "legal"]);
    expect_new_assignment(
        &mut lex,
        &c_legal,
        "v-legal",
        ("m-1", "a contract question"),
        agent("lex"),
    );
    assert_eq!(next_entry(&mut legal), assigned(&c_legal, 3, agent("lex")));
}

#[test]
fn language_preference_beats_load_and_falls_back_to_load() {
    let gw = Gateway::start(Options::default());
    let mut zoe = agent_login(&gw, "zoe", &["--langs", "zh"]);
    // zoe has one conversation before amy arrives: zoe 1/5, amy 0/5.
    let (_v0, _c0) = served_by(&gw, &mut zoe, "zoe", "hi");
    let mut amy = agent_login(&gw, "amy", &["--langs", "en,fr"]);

    // A Chinese-speaking visitor goes to zoe though amy is less loaded.
    let mut zh = visitor(&gw, "v-zh", &["--lang", "zh"]);
    let c_zh = open(&mut zh, "m-1", "ni hao");
    expect_assigned_at_once(&mut zh, &c_zh, agent("zoe"));
    expect_new_assignment(&mut zoe, &c_zh, "v-zh", ("m-1", "ni hao"), agent("zoe"));

    // A language nobody speaks: lowest load, amy (0/5 vs 2/5).
    let mut de = visitor(&gw, "v-de", &["--lang", "de"]);
    let c_de = open(&mut de, "m-1", "hallo");
    expect_assigned_at_once(&mut de, &c_de, agent("amy"));
    expect_new_assignment(&mut amy, &c_de, "v-de", ("m-1", "hallo"), agent("amy"));

    // Another Chinese speaker: zoe again (3/5 against amy's 1/5).
    let mut zh2 = visitor(&gw, "v-zh2", &["--lang", "zh"]);
    let c_zh2 = open(&mut zh2, "m-1", "ni hao ma");
    expect_assigned_at_once(&mut zh2, &c_zh2, agent("zoe"));
    expect_new_assignment(
        &mut zoe,
        &c_zh2,
        "v-zh2",
        ("m-1", "ni hao ma"),
        agent("zoe"),
    );
    expect_quiet(&mut amy, "the agent who does not speak zh");
}

#[test]
fn lowest_load_is_open_over_max_chats_then_longest_without_assignment() {
    let gw = Gateway::start(Options::default());
    let mut amy = agent_login(&gw, "amy", &["--max-chats", "6"]);
    let mut bob = agent_login(&gw, "bob", &["--max-chats", "2"]);
    // Expected winner of each new visitor, with the loads before it:
    let plan = [
        ("amy", "0/6 = 0/2, neither assigned yet: id order"),
        ("bob", "0/2 < 1/6"),
        ("amy", "1/6 < 1/2"),
        ("amy", "2/6 < 1/2 although 2 open > 1 open"),
        ("bob", "3/6 = 1/2: bob is longer without an assignment"),
        ("amy", "3/6 < 2/2 (bob full)"),
    ];
    let mut keep = Vec::new();
    for (i, (winner, why)) in plan.iter().enumerate() {
        let (mut v, vid) = anon(&gw);
        let text = format!("visitor {i}");
        let conv = open(&mut v, "m-1", &text);
        assert_eq!(without_ts(v.recv()), queued(&conv, 2));
        assert_eq!(
            without_ts(v.recv()),
            assigned(&conv, 3, agent(winner)),
            "visitor {i}: {why}"
        );
        let a = if *winner == "amy" { &mut amy } else { &mut bob };
        expect_new_assignment(a, &conv, &vid, ("m-1", &text), agent(winner));
        keep.push(v);
    }
    expect_quiet(&mut amy, "amy");
    expect_quiet(&mut bob, "bob");
}

#[test]
fn equal_loads_go_to_the_agent_longest_without_a_new_assignment() {
    let gw = Gateway::start(Options::default());
    let mut agents: Vec<(&str, Client)> = ["amy", "bob", "cy"]
        .into_iter()
        .map(|id| (id, agent_login(&gw, id, &[])))
        .collect();
    // Each conversation is closed before the next visitor comes, so every
    // agent is always at load 0: only the time of the last assignment
    // (never assigned = longest) decides. The id order would say amy every time.
    for (i, winner) in ["amy", "bob", "cy", "amy", "bob", "cy", "amy"]
        .iter()
        .enumerate()
    {
        let (mut v, vid) = anon(&gw);
        let text = format!("visitor {i}");
        let conv = open(&mut v, "m-1", &text);
        assert_eq!(without_ts(v.recv()), queued(&conv, 2));
        assert_eq!(
            without_ts(v.recv()),
            assigned(&conv, 3, agent(winner)),
            "visitor {i}"
        );
        let a = &mut agents.iter_mut().find(|(id, _)| id == winner).unwrap().1;
        expect_new_assignment(a, &conv, &vid, ("m-1", &text), agent(winner));
        close(&mut v, &conv);
        assert_eq!(next_entry(&mut v), closed(&conv, 4, "visitor", &vid));
        assert_eq!(next_entry(a), closed(&conv, 4, "visitor", &vid));
    }
    for (id, a) in &mut agents {
        expect_quiet(a, id);
    }
}

#[test]
fn sticky_agent_again_when_eligible_not_when_full_or_away() {
    let gw = Gateway::start(Options::default());
    let alice_ref = json!({"id": "alice", "name": "Alice"});
    let mut alice = agent_login(&gw, "alice", &["--name", "Alice", "--max-chats", "2"]);

    // With alice alone: one conversation she keeps, and two visitors she
    // serves once each (closed at once).
    let (_vx, _cx) = {
        let (mut v, vid) = anon(&gw);
        let c = open(&mut v, "m-1", "keep me");
        expect_assigned_at_once(&mut v, &c, alice_ref.clone());
        expect_new_assignment(&mut alice, &c, &vid, ("m-1", "keep me"), alice_ref.clone());
        (v, c)
    };
    let mut vs = visitor(&gw, "v-sticky", &["--lang", "zh"]);
    let mut vf = visitor(&gw, "v-full", &[]);
    for (v, vid) in [(&mut vs, "v-sticky"), (&mut vf, "v-full")] {
        let c = open(v, "m-1", "first visit");
        expect_assigned_at_once(v, &c, alice_ref.clone());
        expect_new_assignment(
            &mut alice,
            &c,
            vid,
            ("m-1", "first visit"),
            alice_ref.clone(),
        );
        close(v, &c);
        assert_eq!(next_entry(v), closed(&c, 4, "visitor", vid));
        assert_eq!(next_entry(&mut alice), closed(&c, 4, "visitor", vid));
    }

    // bob speaks the visitor's language and is idle (0/5 against alice's
    // 1/2): lang and load both say bob; the sticky rule says alice.
    let mut bob = agent_login(&gw, "bob", &["--langs", "zh"]);
    let s2 = open(&mut vs, "m-2", "second visit");
    expect_assigned_at_once(&mut vs, &s2, alice_ref.clone());
    expect_new_assignment(
        &mut alice,
        &s2,
        "v-sticky",
        ("m-2", "second visit"),
        alice_ref.clone(),
    );
    expect_quiet(&mut bob, "bob");

    // alice is full now (2/2): her other former visitor goes to bob.
    let f2 = open(&mut vf, "m-2", "second visit");
    expect_assigned_at_once(&mut vf, &f2, agent("bob"));
    expect_new_assignment(
        &mut bob,
        &f2,
        "v-full",
        ("m-2", "second visit"),
        agent("bob"),
    );

    // alice frees a slot but is away: her sticky visitor goes to bob.
    close(&mut vs, &s2);
    assert_eq!(next_entry(&mut vs), closed(&s2, 4, "visitor", "v-sticky"));
    assert_eq!(
        next_entry(&mut alice),
        closed(&s2, 4, "visitor", "v-sticky")
    );
    set_status(&mut alice, "away");
    let s3 = open(&mut vs, "m-3", "third visit");
    expect_assigned_at_once(&mut vs, &s3, agent("bob"));
    expect_new_assignment(
        &mut bob,
        &s3,
        "v-sticky",
        ("m-3", "third visit"),
        agent("bob"),
    );
    expect_quiet(&mut alice, "an away agent");
}

#[test]
fn vip_first_and_queue_positions_follow_the_queue() {
    let gw = Gateway::start(Options::default());
    let mut n1 = visitor(&gw, "n1", &[]);
    let c1 = open(&mut n1, "m-1", "one");
    expect_queued_at(&mut n1, &c1, 1);
    let mut n2 = visitor(&gw, "n2", &[]);
    let c2 = open(&mut n2, "m-1", "two");
    expect_queued_at(&mut n2, &c2, 2);
    let mut n3 = visitor(&gw, "n3", &[]);
    let c3 = open(&mut n3, "m-1", "three");
    expect_queued_at(&mut n3, &c3, 3);

    // A VIP arrives last and enters at the head; everyone else moves back.
    let mut vip = visitor(&gw, "vip", &["--vip"]);
    let cv = open(&mut vip, "m-1", "vip");
    expect_queued_at(&mut vip, &cv, 1);
    expect_position(&mut n1, &c1, 2);
    expect_position(&mut n2, &c2, 3);
    expect_position(&mut n3, &c3, 4);

    // One slot: the VIP is served first, the others move up.
    let mut alice = agent_login(&gw, "alice", &["--max-chats", "1"]);
    expect_new_assignment(&mut alice, &cv, "vip", ("m-1", "vip"), agent("alice"));
    assert_eq!(next_entry(&mut vip), assigned(&cv, 3, agent("alice")));
    expect_position(&mut n1, &c1, 1);
    expect_position(&mut n2, &c2, 2);
    expect_position(&mut n3, &c3, 3);

    // n2 gives up: n3 moves up, n1 stays first.
    close(&mut n2, &c2);
    assert_eq!(next_entry(&mut n2), closed(&c2, 3, "visitor", "n2"));
    expect_position(&mut n3, &c3, 2);
    expect_quiet(&mut n1, "the head of the queue");

    // The slot frees: the oldest non-VIP is next.
    close(&mut alice, &cv);
    let got = entries_by_conv(&mut alice, 4);
    assert_eq!(got[&cv], [closed(&cv, 4, "agent", "alice")]);
    assert_eq!(
        got[&c1],
        [
            chat(&c1, 1, "m-1", json!({"role": "visitor", "id": "n1"}), "one"),
            queued(&c1, 2),
            assigned(&c1, 3, agent("alice")),
        ]
    );
    assert_eq!(next_entry(&mut n1), assigned(&c1, 3, agent("alice")));
    expect_position(&mut n3, &c3, 1);
    expect_quiet(&mut n3, "the last visitor");
}

#[test]
fn a_queued_visitor_that_reconnects_is_told_its_position_again() {
    let gw = Gateway::start(Options::default());
    let (mut n1, n1_id) = anon(&gw);
    let c1 = open(&mut n1, "m-1", "first");
    expect_queued_at(&mut n1, &c1, 1);
    let token = gw.visitor_token("v2", &[]);
    let (mut v2, _) = gw.login(&token);
    let c2 = open(&mut v2, "m-1", "second");
    expect_queued_at(&mut v2, &c2, 2);

    // A page reload: the position it was told went to the old connection.
    v2.close();
    let (mut v2, welcome) = gw.login(&token);
    assert_eq!(
        welcome["conversations"],
        json!([{"conv": c2, "state": "queued", "last_seq": 2}])
    );
    // The replay and the position, in whichever order.
    let mut got = [v2.recv(), v2.recv(), v2.recv()];
    got.sort_by_key(|v| {
        (
            v["type"].as_str().unwrap_or_default().to_string(),
            v["seq"].as_u64(),
        )
    });
    let [m1, m2, queue] = got;
    assert_eq!(
        without_ts(m1),
        chat(
            &c2,
            1,
            "m-1",
            json!({"role": "visitor", "id": "v2"}),
            "second"
        )
    );
    assert_eq!(without_ts(m2), queued(&c2, 2));
    assert_eq!(queue, position(&c2, 2));

    // It still follows the queue on the new connection.
    close(&mut n1, &c1);
    assert_eq!(next_entry(&mut n1), closed(&c1, 3, "visitor", &n1_id));
    expect_position(&mut v2, &c2, 1);
}

#[test]
fn tenants_are_routed_apart() {
    let config = r#"
[[tenants]]
id = "acme"
secret = "acme-secret-acme-secret-acme-secret"
anonymous_visitors = true
max_chats = 1

[[tenants]]
id = "globex"
secret = "globex-secret-globex-secret-globex"
anonymous_visitors = true
"#;
    let gw = Gateway::start(Options::default().config(config));
    let login = |tenant: &str, role: &str, id: &str| {
        let token = gw.token(&["--tenant", tenant, "--role", role, "--sub", id]);
        let (c, welcome) = gw.login(&token);
        assert_eq!(welcome["tenant"], tenant);
        c
    };
    // The same agent id in both tenants: two different agents.
    let mut acme_alice = login("acme", "agent", "alice");
    let (mut gv, welcome) = gw.anonymous("globex");
    let gv_id = welcome["id"].as_str().unwrap().to_string();
    let c_g = open(&mut gv, "m-1", "globex question");
    expect_queued_at(&mut gv, &c_g, 1);
    expect_quiet(&mut acme_alice, "an agent of another tenant");

    // acme's queue is its own: position 1 there too, and alice takes it.
    let (mut av, welcome) = gw.anonymous("acme");
    let av_id = welcome["id"].as_str().unwrap().to_string();
    let c_a = open(&mut av, "m-1", "acme question");
    expect_assigned_at_once(&mut av, &c_a, agent("alice"));
    expect_new_assignment(
        &mut acme_alice,
        &c_a,
        &av_id,
        ("m-1", "acme question"),
        agent("alice"),
    );

    // No transfer across tenants, even to an agent with the same id.
    let mut globex_bob = login("globex", "agent", "bob");
    expect_new_assignment(
        &mut globex_bob,
        &c_g,
        &gv_id,
        ("m-1", "globex question"),
        agent("bob"),
    );
    acme_alice.send(json!({"type": "transfer", "conv": c_a, "to": "bob"}));
    expect_error(&mut acme_alice, "not_found", None);
    globex_bob.send(json!({"type": "transfer", "conv": c_a, "to": "bob"}));
    expect_error(&mut globex_bob, "not_found", None);
    expect_quiet(&mut globex_bob, "an agent of another tenant");

    // acme's tenant default max_chats (1) applies to alice, not to globex.
    let (mut av2, _) = gw.anonymous("acme");
    let c_a2 = open(&mut av2, "m-1", "another acme question");
    expect_queued_at(&mut av2, &c_a2, 1);
    let (mut gv2, welcome) = gw.anonymous("globex");
    let gv2_id = welcome["id"].as_str().unwrap().to_string();
    let c_g2 = open(&mut gv2, "m-1", "another globex question");
    expect_assigned_at_once(&mut gv2, &c_g2, agent("bob"));
    expect_new_assignment(
        &mut globex_bob,
        &c_g2,
        &gv2_id,
        ("m-1", "another globex question"),
        agent("bob"),
    );
}
