//! Routing under concurrency: two shards, many visitors and agents on their
//! own threads, conversations opening and closing all the time. Every frame
//! every client receives is kept; afterwards the logs they saw are checked
//! against the routing invariants: one agent per conversation, never more
//! than `max_chats` open conversations per agent, one log per conversation.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{Client, Gateway, Options};
use serde_json::{json, Value};

const VISITORS: usize = 40;
const AGENTS: usize = 6;
const MAX_CHATS: usize = 3;
/// Conversations each visitor opens, one after the other.
const ROUNDS: usize = 5;
/// The whole run must end by then.
const RUN_LIMIT: Duration = Duration::from_secs(25);

/// Everything one client received, in order.
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

/// A visitor: opens `ROUNDS` conversations one after another; in each it
/// waits for its agent's answer, then closes it itself or waits for the
/// agent to close it (the first message says which).
fn visitor(url: String, n: usize, start: Arc<Barrier>, deadline: Instant) -> Transcript {
    start.wait();
    let (mut c, welcome) = hello(&url, json!({"type": "hello", "tenant": "demo"}));
    let me = welcome["id"].as_str().unwrap().to_string();
    let mut frames = Vec::new();
    for round in 0..ROUNDS {
        let by_agent = (n + round) % 2 == 0;
        let msg_id = format!("open-{round}");
        let text = if by_agent {
            "close-by-agent"
        } else {
            "close-by-visitor"
        };
        c.send(json!({"type": "msg", "id": msg_id, "text": text}));
        let mut conv: Option<String> = None;
        let mut agent: Option<String> = None;
        loop {
            assert!(Instant::now() < deadline, "visitor {me}: run too long");
            let v = c.recv();
            frames.push(v.clone());
            match v["type"].as_str().unwrap() {
                "ack" if v["id"] == msg_id.as_str() => {
                    assert_eq!(v["seq"], 1, "{v}");
                    assert!(conv.is_none(), "second ack: {v}");
                    conv = Some(v["conv"].as_str().unwrap().to_string());
                }
                "queue" => {
                    assert_eq!(Some(&v["conv"]), conv.as_ref().map(|c| json!(c)).as_ref());
                    assert!(agent.is_none(), "position after the assignment: {v}");
                }
                "msg" => {
                    let conv = conv.as_deref().expect("an entry before the ack");
                    assert_eq!(
                        v["conv"], conv,
                        "visitor {me}: entry of another conversation"
                    );
                    match (v["event"].as_str(), v["from"]["role"].as_str()) {
                        (Some("assigned"), _) => {
                            assert!(agent.is_none(), "visitor {me}: assigned twice: {v}");
                            agent = Some(v["agent"]["id"].as_str().unwrap().to_string());
                        }
                        (Some("closed"), _) => break,
                        (None, Some("agent")) => {
                            assert_eq!(v["from"]["id"].as_str(), agent.as_deref(), "{v}");
                            if !by_agent {
                                c.send(json!({"type": "close", "conv": conv}));
                            }
                        }
                        _ => {}
                    }
                }
                _ => panic!("visitor {me}: unexpected {v}"),
            }
        }
    }
    c.close();
    Transcript { who: me, frames }
}

/// An agent: answers every conversation it gets, and closes those whose
/// first message asks for it. Agent 0 goes away after each new assignment
/// and comes back when one of its conversations closes; agent 1 drops its
/// connection once and reconnects (well within the grace period).
fn agent(
    url: String,
    n: usize,
    token: String,
    start: Arc<Barrier>,
    stop: Arc<AtomicBool>,
    deadline: Instant,
) -> Transcript {
    let me = format!("agent{n}");
    start.wait();
    let login = json!({"type": "hello", "token": token});
    let (mut c, welcome) = hello(&url, login.clone());
    assert_eq!(welcome["conversations"], json!([]));
    let mut frames = Vec::new();
    let mut first_text: HashMap<String, String> = HashMap::new();
    let mut open: BTreeSet<String> = BTreeSet::new();
    let mut answered = 0;
    let mut reconnected = false;
    let mut away = false;
    loop {
        assert!(Instant::now() < deadline, "{me}: run too long");
        if stop.load(Ordering::Relaxed) && open.is_empty() {
            break;
        }
        let Some(v) = c.try_recv(Duration::from_millis(50)) else {
            continue;
        };
        frames.push(v.clone());
        match v["type"].as_str().unwrap() {
            "msg" => {
                let conv = v["conv"].as_str().unwrap().to_string();
                if v["seq"] == 1 {
                    first_text.insert(conv.clone(), v["text"].as_str().unwrap().to_string());
                }
                match v["event"].as_str() {
                    Some("assigned") if v["agent"]["id"] == me.as_str() => {
                        open.insert(conv.clone());
                        c.send(
                            json!({"type": "msg", "id": format!("r-{conv}"), "conv": conv,
                                      "text": "how can I help?"}),
                        );
                        if n == 0 && !away {
                            c.send(json!({"type": "status", "status": "away"}));
                            away = true;
                        }
                    }
                    Some("closed") => {
                        open.remove(&conv);
                        if n == 0 && away {
                            c.send(json!({"type": "status", "status": "online"}));
                            away = false;
                        }
                    }
                    _ => {}
                }
            }
            "ack" => {
                let conv = v["conv"].as_str().unwrap().to_string();
                assert_eq!(v["id"], format!("r-{conv}"), "{v}");
                if first_text.get(&conv).map(String::as_str) == Some("close-by-agent") {
                    c.send(json!({"type": "close", "conv": conv}));
                }
                answered += 1;
                if n == 1 && answered == 2 && !reconnected {
                    reconnected = true;
                    c.close();
                    let (again, welcome) = hello(&url, login.clone());
                    c = again;
                    // Every conversation still open is listed, and replayed
                    // from the start (no receipts were sent): the assigned
                    // entries come again and are answered again, which the
                    // reply ids make idempotent. What closed meanwhile is
                    // not listed, and its `closed` entry may have been lost
                    // with the old connection.
                    open = welcome["conversations"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|c| c["conv"].as_str().unwrap().to_string())
                        .collect();
                    frames.push(welcome);
                }
            }
            // A close sent twice after the reconnection.
            "error" if n == 1 && reconnected && v["code"] == "closed" => {}
            "status" => {}
            _ => panic!("{me}: unexpected {v}"),
        }
    }
    c.close();
    Transcript { who: me, frames }
}

#[test]
fn concurrent_visitors_and_agents_never_break_the_routing_invariants() {
    let gw = Gateway::start(Options::shards(2));
    let url = gw.url();
    let tokens: Vec<String> = (0..AGENTS)
        .map(|n| {
            gw.agent_token(
                &format!("agent{n}"),
                &["--max-chats", &MAX_CHATS.to_string()],
            )
        })
        .collect();
    let started = Instant::now();
    let deadline = started + RUN_LIMIT;
    let start = Arc::new(Barrier::new(VISITORS + AGENTS));
    let stop = Arc::new(AtomicBool::new(false));
    let agents: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(n, token)| {
            let (url, start, stop) = (url.clone(), start.clone(), stop.clone());
            std::thread::spawn(move || agent(url, n, token, start, stop, deadline))
        })
        .collect();
    let visitors: Vec<_> = (0..VISITORS)
        .map(|n| {
            let (url, start) = (url.clone(), start.clone());
            std::thread::spawn(move || visitor(url, n, start, deadline))
        })
        .collect();
    let mut transcripts: Vec<Transcript> = visitors
        .into_iter()
        .map(|t| t.join().expect("visitor thread"))
        .collect();
    stop.store(true, Ordering::Relaxed);
    let agent_transcripts: Vec<Transcript> = agents
        .into_iter()
        .map(|t| t.join().expect("agent thread"))
        .collect();
    let elapsed = started.elapsed();
    transcripts.extend(agent_transcripts);
    check(&transcripts);
    eprintln!("{} conversations in {elapsed:?}", VISITORS * ROUNDS);
}

/// The invariants, from what everyone saw.
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

    // Each conversation: seq 1.. without gaps, one `queued`, one `assigned`,
    // `closed` last; only the assigned agent speaks in it.
    let mut owner: HashMap<&str, &str> = HashMap::new();
    // Per agent: (ts, +1 assigned / -1 closed).
    let mut events: HashMap<&str, Vec<(u64, i32)>> = HashMap::new();
    for (conv, entries) in &log {
        let seqs: Vec<u64> = entries.keys().copied().collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "{conv}: gaps"
        );
        let of = |event: &str| -> Vec<&Value> {
            entries.values().filter(|e| e["event"] == event).collect()
        };
        assert_eq!(of("queued").len(), 1, "{conv}: {entries:?}");
        let assigned = of("assigned");
        assert_eq!(
            assigned.len(),
            1,
            "{conv} assigned more than once: {assigned:?}"
        );
        let closed = of("closed");
        assert_eq!(closed.len(), 1, "{conv}: {entries:?}");
        assert_eq!(
            entries.values().last(),
            Some(closed[0]),
            "{conv}: closed is final"
        );
        let agent = assigned[0]["agent"]["id"].as_str().unwrap();
        for e in entries.values().filter(|e| e["from"]["role"] == "agent") {
            assert_eq!(e["from"]["id"], agent, "{conv}: another agent wrote");
            assert!(e["seq"].as_u64() > assigned[0]["seq"].as_u64());
        }
        owner.insert(conv, agent);
        let ev = events.entry(agent).or_default();
        ev.push((assigned[0]["ts"].as_u64().unwrap(), 1));
        ev.push((closed[0]["ts"].as_u64().unwrap(), -1));
    }

    // Nobody but a conversation's agent and visitor receives it.
    for t in transcripts.iter().filter(|t| t.who.starts_with("agent")) {
        for v in t.frames.iter().filter(|v| v["type"] == "msg") {
            let conv = v["conv"].as_str().unwrap();
            assert_eq!(owner[conv], t.who, "{} received {v}", t.who);
        }
    }

    // Never more than max_chats open at once per agent. An `assigned`
    // entry is stamped after routing decided it and a `closed` one before
    // routing hears of the close, so each observed interval lies inside the
    // one routing held: an overlap here is an overlap there.
    let mut peak_all = 0;
    for (agent, ev) in &mut events {
        ev.sort();
        let (mut open, mut peak) = (0i32, 0i32);
        for (ts, delta) in ev.iter() {
            open += delta;
            peak = peak.max(open);
            assert!(
                open as usize <= MAX_CHATS,
                "{agent} held {open} conversations at {ts}"
            );
        }
        peak_all = peak_all.max(peak);
    }
    eprintln!("peak open conversations of one agent: {peak_all}");

    // The disruptions happened: agent1 came back, agent0 went away.
    let agent = |who: &str| transcripts.iter().find(|t| t.who == who).unwrap();
    assert!(agent("agent1")
        .frames
        .iter()
        .any(|v| v["type"] == "welcome"));
    assert!(agent("agent0").frames.iter().any(|v| v["status"] == "away"));

    // The queue was exercised.
    let positions = transcripts
        .iter()
        .flat_map(|t| &t.frames)
        .filter(|v| v["type"] == "queue")
        .count();
    assert!(
        positions > 0,
        "no visitor ever waited: the test did not load routing"
    );
}
