//! Hand-overs under concurrency: two shards, conversations transferred
//! from agent to agent and back to the queue while visitors keep writing,
//! and an agent that leaves for good (its conversations requeued after the
//! grace period). Afterwards every client's transcript is checked: one log
//! per conversation, one owner at a time, and an agent that lost a
//! conversation receives nothing more of it.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{Client, Gateway, Options};
use serde_json::{json, Value};

const VISITORS: usize = 24;
/// Agents 0..STAYING stay; agent STAYING leaves after its first assignments.
const STAYING: usize = 3;
const MAX_CHATS: usize = 3;
const ROUNDS: usize = 3;
const RUN_LIMIT: Duration = Duration::from_secs(25);

struct Transcript {
    who: String,
    frames: Vec<Value>,
}

fn hello(url: &str, hello: Value) -> (Client, Value) {
    let mut c = Client::connect(url);
    c.send(hello);
    let welcome = c.recv();
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (c, welcome)
}

/// A visitor: in each round opens a conversation, greets every agent it is
/// assigned to, and closes when an agent says "done".
fn visitor(url: String, start: Arc<Barrier>, deadline: Instant) -> Transcript {
    start.wait();
    let (mut c, welcome) = hello(&url, json!({"type": "hello", "tenant": "demo"}));
    let me = welcome["id"].as_str().unwrap().to_string();
    let mut frames = Vec::new();
    let mut sent = 0;
    for round in 0..ROUNDS {
        c.send(json!({"type": "msg", "id": format!("open-{round}"), "text": "hello"}));
        loop {
            let Some(v) = c.try_recv(Duration::from_millis(100)) else {
                assert!(
                    Instant::now() < deadline,
                    "visitor {me}: run too long; its last frames: {:#?}",
                    &frames[frames.len().saturating_sub(12)..]
                );
                continue;
            };
            frames.push(v.clone());
            match (v["type"].as_str().unwrap(), v["event"].as_str()) {
                ("msg", Some("assigned")) => {
                    sent += 1;
                    c.send(json!({"type": "msg", "id": format!("m-{sent}"),
                                  "text": format!("hi {}", v["agent"]["id"])}));
                }
                ("msg", Some("closed")) => break,
                ("msg", None) if v["text"] == "done" => {
                    c.send(json!({"type": "close", "conv": v["conv"]}));
                }
                ("msg" | "ack" | "queue", _) => {}
                _ => panic!("visitor {me}: unexpected {v}"),
            }
        }
    }
    c.close();
    Transcript { who: me, frames }
}

/// An agent. On each assignment it counts the `assigned` entries of the
/// log: the first owner transfers to the next staying agent, the second
/// hands it back to the queue, later ones answer "done". The leaving agent
/// answers nothing and drops its connection after its second assignment,
/// or a little after its first.
fn agent(
    url: String,
    n: usize,
    token: String,
    start: Arc<Barrier>,
    stop: Arc<AtomicBool>,
    deadline: Instant,
) -> Transcript {
    let me = format!("agent{n}");
    let leaves = n == STAYING;
    // Every agent is connected before the first visitor comes, so that a
    // transfer never names an agent that is not there yet.
    let (mut c, _) = hello(&url, json!({"type": "hello", "token": token}));
    start.wait();
    let mut frames: Vec<Value> = Vec::new();
    // Per conversation: `assigned` entries seen in the current copy of its
    // log; the highest seq seen in any copy; that seq when the current copy
    // began. A new copy (after a new assignment) replays history from seq 1:
    // only entries past what an earlier copy showed are news to act on.
    let mut hops: HashMap<String, usize> = HashMap::new();
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut floor: HashMap<String, u64> = HashMap::new();
    let mut owned: BTreeSet<String> = BTreeSet::new();
    let mut assignments = 0;
    let mut first_assignment: Option<Instant> = None;
    loop {
        if Instant::now() > deadline {
            for conv in &owned {
                for f in frames.iter().filter(|f| f["conv"] == conv.as_str()) {
                    eprintln!("{me} OWNED {conv}: {f}");
                }
            }
            panic!("{me}: run too long");
        }
        if leaves
            && (assignments >= 2
                || first_assignment.is_some_and(|t| t.elapsed() > Duration::from_millis(300)))
        {
            // Gone without a close frame, never to come back.
            drop(c);
            return Transcript { who: me, frames };
        }
        if !leaves && stop.load(Ordering::Relaxed) && owned.is_empty() {
            break;
        }
        let Some(v) = c.try_recv(Duration::from_millis(50)) else {
            continue;
        };
        frames.push(v.clone());
        match v["type"].as_str().unwrap() {
            "msg" => {
                let conv = v["conv"].as_str().unwrap().to_string();
                let seq = v["seq"].as_u64().unwrap();
                let seen = seen.entry(conv.clone()).or_insert(0);
                if seq == 1 {
                    hops.insert(conv.clone(), 0);
                    floor.insert(conv.clone(), *seen);
                }
                *seen = (*seen).max(seq);
                if v["event"] == "assigned" {
                    *hops.get_mut(&conv).expect("a log copy starts at seq 1") += 1;
                }
                if seq <= floor[&conv] {
                    continue;
                }
                match v["event"].as_str() {
                    Some("assigned") => {
                        if v["agent"]["id"] != me.as_str() {
                            owned.remove(&conv);
                            continue;
                        }
                        owned.insert(conv.clone());
                        assignments += 1;
                        first_assignment.get_or_insert_with(Instant::now);
                        if leaves {
                            continue;
                        }
                        let frame = match hops[&conv] {
                            1 => json!({"type": "transfer", "conv": conv,
                                        "to": format!("agent{}", (n + 1) % STAYING)}),
                            2 => json!({"type": "transfer", "conv": conv}),
                            _ => json!({"type": "msg", "id": format!("done-{conv}"),
                                        "conv": conv, "text": "done"}),
                        };
                        c.send(frame);
                    }
                    Some("queued") | Some("closed") => {
                        owned.remove(&conv);
                    }
                    _ => {}
                }
            }
            "ack" => {}
            _ => panic!("{me}: unexpected {v}"),
        }
    }
    c.close();
    Transcript { who: me, frames }
}

#[test]
fn transfers_requeues_and_a_departure_under_concurrency_keep_one_owner() {
    let gw = Gateway::start(Options::shards(2).arg("--agent-grace").arg("300ms"));
    let url = gw.url();
    let tokens: Vec<String> = (0..=STAYING)
        .map(|n| {
            gw.agent_token(
                &format!("agent{n}"),
                &["--max-chats", &MAX_CHATS.to_string()],
            )
        })
        .collect();
    let started = Instant::now();
    let deadline = started + RUN_LIMIT;
    let agents_in = Arc::new(Barrier::new(tokens.len() + 1));
    let start = Arc::new(Barrier::new(VISITORS));
    let stop = Arc::new(AtomicBool::new(false));
    let agents: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(n, token)| {
            let (url, start, stop) = (url.clone(), agents_in.clone(), stop.clone());
            std::thread::spawn(move || agent(url, n, token, start, stop, deadline))
        })
        .collect();
    agents_in.wait();
    let visitors: Vec<_> = (0..VISITORS)
        .map(|_| {
            let (url, start) = (url.clone(), start.clone());
            std::thread::spawn(move || visitor(url, start, deadline))
        })
        .collect();
    let mut transcripts: Vec<Transcript> = visitors
        .into_iter()
        .map(|t| t.join().expect("visitor thread"))
        .collect();
    stop.store(true, Ordering::Relaxed);
    transcripts.extend(agents.into_iter().map(|t| t.join().expect("agent thread")));
    eprintln!(
        "{} conversations in {:?}",
        VISITORS * ROUNDS,
        started.elapsed()
    );
    check(&transcripts);
}

/// Who owns a conversation after an entry: `Some(agent)` after `assigned`,
/// `None` after `queued` or `closed`; unchanged by anything else.
fn owner_after(e: &Value, before: Option<String>) -> Option<String> {
    match e["event"].as_str() {
        Some("assigned") => Some(e["agent"]["id"].as_str().unwrap().to_string()),
        Some("queued") | Some("closed") => None,
        _ => before,
    }
}

fn check(transcripts: &[Transcript]) {
    // One log: the same (conv, seq) is the same entry for everyone.
    let mut log: BTreeMap<String, BTreeMap<u64, Value>> = BTreeMap::new();
    for t in transcripts {
        for v in t.frames.iter().filter(|v| v["type"] == "msg") {
            let conv = v["conv"].as_str().unwrap().to_string();
            let seq = v["seq"].as_u64().unwrap();
            let known = log.entry(conv).or_default().entry(seq).or_insert(v.clone());
            assert_eq!(known, v, "{} saw another entry under the same seq", t.who);
        }
    }
    assert_eq!(log.len(), VISITORS * ROUNDS, "every conversation was seen");

    // Each log reads as a valid life: a message, `queued`, then owners one
    // at a time (a transfer names a new owner; `queued` means none), only
    // the owner writes, `closed` last. `owners[conv][seq]`: the owner once
    // entry `seq` is in.
    let mut owners: HashMap<String, Vec<Option<String>>> = HashMap::new();
    let mut requeued_by_grace = 0;
    for (conv, entries) in &log {
        let seqs: Vec<u64> = entries.keys().copied().collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "{conv}: gaps"
        );
        assert_eq!(entries[&2]["event"], "queued", "{conv}");
        let mut owner: Option<String> = None;
        let mut by_seq = vec![None];
        let mut last_owner: Option<String> = None;
        for (seq, e) in entries {
            match (e["event"].as_str(), &owner) {
                (Some("assigned"), Some(o)) => {
                    assert_ne!(e["agent"]["id"], o.as_str(), "{conv}: transfer to self")
                }
                (Some("queued"), Some(o)) if *o == format!("agent{STAYING}") => {
                    requeued_by_grace += 1
                }
                (Some("queued"), None) => assert_eq!(*seq, 2, "{conv}: queued twice"),
                (Some("closed"), _) => {
                    assert_eq!(*seq, seqs.len() as u64, "{conv}: closed is final")
                }
                (None, _) if e["from"]["role"] == "agent" => assert_eq!(
                    Some(&e["from"]["id"]),
                    owner.as_ref().map(|o| json!(o)).as_ref(),
                    "{conv}: written by an agent that does not own it: {e}"
                ),
                _ => {}
            }
            owner = owner_after(e, owner);
            if owner.is_some() {
                last_owner = owner.clone();
            }
            by_seq.push(owner.clone());
        }
        assert_eq!(
            entries.values().last().unwrap()["event"],
            "closed",
            "{conv}"
        );
        assert!(
            last_owner
                .as_deref()
                .is_some_and(|o| o != format!("agent{STAYING}")),
            "{conv}: closed while the agent that left owned it"
        );
        owners.insert(conv.clone(), by_seq);
    }
    eprintln!("conversations requeued by a grace expiry: {requeued_by_grace}");

    // Every client's copy of a conversation: consecutive seqs (its own
    // messages count through their acks), and for an agent, one copy per
    // assignment: it starts at seq 1, and after the entry that takes the
    // conversation from it, nothing more until a new copy. (In a new copy,
    // entries up to the highest seq of the previous copies are history: a
    // past loss there is not news.)
    for t in transcripts {
        let is_agent = t.who.starts_with("agent");
        // conv -> (next expected seq, the agent lost it, highest seq of the
        // previous copies)
        let mut state: HashMap<String, (u64, bool, u64)> = HashMap::new();
        for v in &t.frames {
            let (Some(conv), Some(seq)) = (v["conv"].as_str(), v["seq"].as_u64()) else {
                continue;
            };
            if v["type"] == "error" {
                panic!("{}: {v}", t.who);
            }
            let s = state.entry(conv.to_string()).or_insert((1, false, 0));
            if is_agent && seq == 1 {
                assert!(
                    s.0 == 1 || s.1,
                    "{}: a new copy of {conv} while it still owned it",
                    t.who
                );
                *s = (1, false, s.0 - 1);
            }
            assert!(!s.1, "{} received {v} after losing {conv}", t.who);
            assert_eq!(seq, s.0, "{}: {conv} out of order: {v}", t.who);
            s.0 += 1;
            if is_agent && v["type"] == "msg" {
                let before = &owners[conv][seq as usize - 1];
                let after = &owners[conv][seq as usize];
                if seq > s.2
                    && before.as_deref() == Some(t.who.as_str())
                    && after.as_deref() != Some(&t.who)
                {
                    s.1 = true;
                }
            }
        }
    }

    // Nobody received a conversation it never owned.
    for t in transcripts.iter().filter(|t| t.who.starts_with("agent")) {
        for v in t.frames.iter().filter(|v| v["type"] == "msg") {
            let conv = v["conv"].as_str().unwrap();
            assert!(
                owners[conv]
                    .iter()
                    .any(|o| o.as_deref() == Some(t.who.as_str())),
                "{} received {v}",
                t.who
            );
        }
    }
}
