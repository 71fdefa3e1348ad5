//! Durability: what an `ack` promises survives `kill -9` and a drain.
//!
//! PROTOCOL.md, "Guarantees": an acknowledged entry is on disk, so killing
//! the gateway at any moment loses none; one `(sender, id)` is stored once,
//! forever (a resend after a restart returns the original ack); seqs run
//! without gaps; delivery resumes from the receipt cursor. These tests kill
//! a real gateway process in the middle of a pipelined stream of messages,
//! restart it on the same data directory, resend, and read the whole log
//! back.

mod common;
mod logcheck;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Gateway, Incoming, Options};
use logcheck::{sync_all, Entry, Log, View};
use serde_json::{json, Value};

/// Messages a streaming client keeps in flight (sent, not yet answered).
const WINDOW: usize = 50;
/// The visitor of the load tests (token-based, so it reconnects as itself).
const VISITOR: &str = "shopper-1";
/// The agent of the load tests.
const AGENT: &str = "alice";
/// How long the test waits for the stream to reach its kill threshold.
const STREAM_TIMEOUT: Duration = Duration::from_secs(60);

fn msg_id(i: u64) -> String {
    format!("m-{i}")
}

fn msg_text(i: u64) -> String {
    format!("message number {i} from the shopper")
}

fn index_of(id: &str) -> u64 {
    id.strip_prefix("m-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not one of ours: {id}"))
}

/// The log entry of the visitor's message `i` at `seq`.
fn visitor_entry(i: u64, seq: u64) -> Entry {
    Entry {
        seq,
        role: "visitor".into(),
        from: Some(VISITOR.into()),
        id: Some(msg_id(i)),
        text: Some(msg_text(i)),
        event: None,
    }
}

/// The server's close frame with `code` has arrived (and our reply gone
/// out): the server must send nothing after it (RFC 6455, 5.5.1) and then
/// close the TCP connection. Returns "close CODE", followed by what came
/// next if that was anything else.
fn closed_with(client: &mut Client, code: u16) -> String {
    match client.read() {
        Incoming::Gone(why) if why == "Connection closed normally" => format!("close {code}"),
        Incoming::Json(v) => format!("close {code}, then a frame after it: {v}"),
        Incoming::Close(again) => format!("close {code}, then a second close {again}"),
        Incoming::Gone(why) => format!("close {code}, then {why}"),
        Incoming::Timeout => format!("close {code}, then the connection stayed open"),
    }
}

/// What a pipelined stream of messages got back.
#[derive(Default)]
struct Stream {
    /// Message indexes sent, in order.
    sent: Vec<u64>,
    /// `(index, seq)` of every ack, in arrival order.
    acks: Vec<(u64, u64)>,
    /// `error` frames.
    errors: Vec<Value>,
    /// What this device received, acks included, checked as it came.
    view: View,
    /// How the stream ended: "done", or why the connection ended.
    ended: String,
}

/// Sends the messages of `plan` (visitor messages without `conv`: they go
/// to the visitor's open conversation) keeping [`WINDOW`] of them
/// unanswered, until the plan is done and answered or the connection ends.
/// Signals `notify` once `threshold` acks have arrived.
fn pipeline(
    client: &mut Client,
    conv: &str,
    plan: impl IntoIterator<Item = u64>,
    mut view: View,
    notify: Option<(usize, mpsc::Sender<()>)>,
) -> Stream {
    let mut plan = plan.into_iter();
    let mut out = Stream::default();
    let mut in_flight = 0usize;
    let mut exhausted = false;
    loop {
        while in_flight < WINDOW && !exhausted {
            match plan.next() {
                Some(i) => {
                    if !client
                        .try_send(json!({"type": "msg", "id": msg_id(i), "text": msg_text(i)}))
                    {
                        out.ended = "send failed".into();
                        out.view = view;
                        return out;
                    }
                    out.sent.push(i);
                    in_flight += 1;
                }
                None => exhausted = true,
            }
        }
        if in_flight == 0 {
            out.ended = "done".into();
            out.view = view;
            return out;
        }
        match client.read() {
            Incoming::Json(v) => match v["type"].as_str() {
                Some("ack") => {
                    assert_eq!(v["conv"], conv, "ack for another conversation: {v}");
                    let i = index_of(v["id"].as_str().expect("ack id"));
                    let seq = v["seq"].as_u64().expect("ack seq");
                    view.take(visitor_entry(i, seq));
                    out.acks.push((i, seq));
                    in_flight -= 1;
                    if let Some((threshold, tx)) = &notify {
                        if out.acks.len() == *threshold {
                            let _ = tx.send(());
                        }
                    }
                }
                Some("error") => {
                    out.errors.push(v);
                    in_flight -= 1;
                }
                Some("msg") if v["conv"] == conv => view.take(Entry::of(&v)),
                Some("queue") => {}
                _ => panic!("unexpected frame while streaming: {v}"),
            },
            Incoming::Close(code) => {
                out.ended = closed_with(client, code);
                out.view = view;
                return out;
            }
            Incoming::Gone(why) => {
                out.ended = format!("gone: {why}");
                out.view = view;
                return out;
            }
            Incoming::Timeout => panic!("no answer for {:?} while streaming", common::READ_TIMEOUT),
        }
    }
}

/// The agent's side while the visitor streams: reads every frame of `conv`
/// into `view`, acknowledges receipt every 64 entries (as a console does,
/// so a reconnection replays little), until the connection ends. Returns
/// the view and how it ended.
fn follow(mut agent: Client, conv: String, mut view: View) -> (View, String) {
    let mut receipted = view.held;
    loop {
        match agent.read() {
            Incoming::Json(v) if v["type"] == "msg" && v["conv"] == conv => {
                view.take(Entry::of(&v));
                if view.held >= receipted + 64 {
                    receipted = view.held;
                    if !agent.try_send(json!({"type": "recv", "conv": conv, "seq": receipted})) {
                        return (view, "send failed".into());
                    }
                }
            }
            Incoming::Json(v) if v["type"] == "error" => {
                view.violations.push(format!("agent got an error: {v}"))
            }
            Incoming::Json(_) => {}
            Incoming::Close(code) => return (view, closed_with(&mut agent, code)),
            Incoming::Gone(why) => return (view, format!("gone: {why}")),
            Incoming::Timeout => {
                view.violations
                    .push("the agent received nothing for 10 s".into());
                return (view, "timeout".into());
            }
        }
    }
}

/// Reads frames of `conv` into `view` until it holds `1..=upto`.
fn read_until(client: &mut Client, conv: &str, view: &mut View, upto: u64) {
    while view.held < upto {
        let v = client.recv();
        match v["type"].as_str() {
            Some("msg") if v["conv"] == conv => view.take(Entry::of(&v)),
            Some("queue") | Some("status") => {}
            _ => panic!("unexpected frame while catching up to seq {upto}: {v}"),
        }
    }
}

/// The one conversation a welcome lists: (conv, last_seq). Checks it is the
/// expected conversation, assigned to the agent.
fn listed(welcome: &Value, conv: &str) -> u64 {
    let convs = welcome["conversations"].as_array().expect("conversations");
    assert_eq!(convs.len(), 1, "one open conversation: {welcome}");
    assert_eq!(convs[0]["conv"], conv, "the same conversation: {welcome}");
    assert_eq!(convs[0]["state"], "assigned", "{welcome}");
    assert_eq!(convs[0]["agent"]["id"], AGENT, "{welcome}");
    convs[0]["last_seq"].as_u64().expect("last_seq")
}

/// Every message acknowledged so far: index -> seq.
type Acked = BTreeMap<u64, u64>;

/// Folds a stream's acks into `acked`: a message acknowledged before must be
/// acknowledged again with its original seq. Returns how many acks were
/// such resends.
fn merge(acked: &mut Acked, stream: &Stream) -> usize {
    let mut again = 0;
    for &(i, seq) in &stream.acks {
        match acked.get(&i) {
            Some(&first) => {
                assert_eq!(
                    first, seq,
                    "the resend of acknowledged message {} got seq {seq}, the original ack said {first}",
                    msg_id(i)
                );
                again += 1;
            }
            None => {
                acked.insert(i, seq);
            }
        }
    }
    again
}

/// How many of the `unacked` messages resent in `stream` turned out to be
/// stored already (before the kill that cut their ack off): they were
/// answered with a seq the log held when the round started.
fn unacked_found_stored(acked: &Acked, stream: &Stream, unacked: &[u64], durable: u64) -> usize {
    stream
        .acks
        .iter()
        .filter(|(i, seq)| !acked.contains_key(i) && unacked.contains(i) && *seq <= durable)
        .count()
}

/// Acknowledged messages worth resending: the newest (acknowledged just
/// before the kill), and a spread of older ones.
fn resend_sample(acked: &Acked) -> Vec<u64> {
    let mut pick: BTreeSet<u64> = acked.keys().rev().take(20).copied().collect();
    pick.extend(acked.keys().step_by(97).copied());
    pick.into_iter().collect()
}

/// After a restart: the visitor reconnects with its token, finds its
/// conversation in the welcome and receives the whole log again (its
/// receipt cursor is 0), which must agree with every ack so far.
fn reconnect_visitor(gw: &Gateway, token: &str, conv: &str, acked: &Acked) -> (Client, View) {
    let (mut visitor, welcome) = gw.login(token);
    let last = listed(&welcome, conv);
    let mut view = View::default();
    read_until(&mut visitor, conv, &mut view, last);
    view.assert_ok("visitor replay after restart");
    for (&i, &seq) in acked {
        let got = view.entries.get(&seq);
        assert_eq!(
            got,
            Some(&visitor_entry(i, seq)),
            "acknowledged message {} (seq {seq}) is not where its ack said after the restart",
            msg_id(i)
        );
    }
    (visitor, view)
}

/// SIGKILL in the middle of a pipelined stream, several times; then every
/// acknowledged message must be in the log exactly once, at its seq.
fn sigkill_under_load(shards: usize) {
    const KILLS: usize = 5;
    // Varied, so that the kills land at different points of the pipeline.
    const NEW_ACKS_BEFORE_KILL: [usize; KILLS] = [300, 450, 200, 377, 251];
    let started = Instant::now();
    let options = Options::shards(shards).arg("--msg-rate-limit").arg("0");
    let mut gw = Gateway::start(options.clone());
    let visitor_token = gw.visitor_token(VISITOR, &["--name", "Ann"]);
    let agent_token = gw.agent_token(AGENT, &["--name", "Alice"]);

    // The conversation: the visitor's first message, then the agent takes it.
    let (mut visitor, welcome) = gw.login(&visitor_token);
    assert_eq!(welcome["conversations"], json!([]));
    let ack = visitor.say(&msg_id(0), None, &msg_text(0));
    let conv = ack["conv"].as_str().expect("conv").to_string();
    assert_eq!(ack["seq"], 1);
    let mut acked: Acked = BTreeMap::from([(0, 1)]);
    let (mut agent, _) = gw.login(&agent_token);
    let mut agent_view = View::default();
    read_until(&mut agent, &conv, &mut agent_view, 3);
    assert_eq!(agent_view.entries[&3].event.as_deref(), Some("assigned"));
    let mut visitor_view = View::holding(1, BTreeMap::from([(1, visitor_entry(0, 1))]));
    read_until(&mut visitor, &conv, &mut visitor_view, 3);

    let mut next_new = 1u64;
    let mut totals = (0usize, 0usize, 0usize); // (acked before kills, resent unacked, resent acked)
    for (round, new_acks_before_kill) in NEW_ACKS_BEFORE_KILL.into_iter().enumerate() {
        // Resend whatever is unacknowledged, a sample of what is, then new ones.
        let unacked: Vec<u64> = (0..next_new).filter(|i| !acked.contains_key(i)).collect();
        let again = if round == 0 {
            Vec::new()
        } else {
            resend_sample(&acked)
        };
        let durable_at_start = visitor_view.held;
        let threshold = unacked.len() + again.len() + new_acks_before_kill;
        let plan = unacked
            .clone()
            .into_iter()
            .chain(again.clone())
            .chain(next_new..);
        let (tx, rx) = mpsc::channel();
        let stream_conv = conv.clone();
        let view = std::mem::take(&mut visitor_view);
        let streamer = thread::spawn(move || {
            let s = pipeline(
                &mut visitor,
                &stream_conv,
                plan,
                view,
                Some((threshold, tx)),
            );
            drop(visitor);
            s
        });
        let follow_conv = conv.clone();
        let follower = thread::spawn(move || follow(agent, follow_conv, agent_view));
        let reached = rx.recv_timeout(STREAM_TIMEOUT);
        gw.kill9();
        let stream = streamer.join().expect("streamer");
        let (view, agent_end) = follower.join().expect("agent");
        assert!(
            reached.is_ok(),
            "round {round}: the stream never reached {threshold} acks (ended: {}, errors: {:?}); stderr:\n{}",
            stream.ended,
            stream.errors,
            gw.stderr()
        );
        assert!(
            stream.errors.is_empty(),
            "round {round}: errors while streaming: {:?}",
            stream.errors
        );
        assert_ne!(stream.ended, "done", "the kill came mid-stream");
        stream.view.assert_ok(&format!("visitor, round {round}"));
        view.assert_ok(&format!("agent, round {round}"));
        agent_view = view;

        let known_before = acked.len();
        let stored_before = unacked_found_stored(&acked, &stream, &unacked, durable_at_start);
        let resent_acked = merge(&mut acked, &stream);
        next_new = next_new.max(stream.sent.iter().max().map_or(0, |m| m + 1));
        let new_acks = acked.len() - known_before;
        let unacked_now = (0..next_new).filter(|i| !acked.contains_key(i)).count();
        eprintln!(
            "shards={shards} round {round}: sent {}, acked {} new before SIGKILL (resent {} unacknowledged, of which {} had been stored before the last kill; resent {} acknowledged: all answered with their original seq), {} sent and unacknowledged at the kill; agent held 1..={} ({}); visitor stream: {}",
            stream.sent.len(),
            new_acks,
            unacked.len(),
            stored_before,
            resent_acked,
            unacked_now,
            agent_view.held,
            agent_end,
            stream.ended,
        );
        assert_eq!(
            resent_acked,
            again.len(),
            "every resent acked id was answered"
        );
        totals.0 += new_acks;
        totals.1 += unacked.len();
        totals.2 += resent_acked;

        gw.restart(options.clone());
        let (v, view) = reconnect_visitor(&gw, &visitor_token, &conv, &acked);
        visitor = v;
        visitor_view = view;
        let (a, welcome) = gw.login(&agent_token);
        listed(&welcome, &conv);
        agent = a;
    }

    // Final round: resend every unacknowledged id and a sample of the acknowledged.
    let unacked: Vec<u64> = (0..next_new).filter(|i| !acked.contains_key(i)).collect();
    let again = resend_sample(&acked);
    let plan: Vec<u64> = unacked.iter().chain(&again).copied().collect();
    let stream = pipeline(&mut visitor, &conv, plan, visitor_view, None);
    assert_eq!(stream.ended, "done");
    assert!(stream.errors.is_empty(), "errors: {:?}", stream.errors);
    stream.view.assert_ok("visitor, final resend");
    let acked_before_final = acked.len();
    let resent_acked = merge(&mut acked, &stream);
    assert_eq!(resent_acked, again.len());
    totals.1 += unacked.len();
    totals.2 += resent_acked;
    assert_eq!(
        acked.len() as u64,
        next_new,
        "every message sent is acknowledged now"
    );

    // The whole log, read back.
    let (entries, other) = sync_all(&mut visitor, &conv);
    assert!(other.is_empty(), "nothing else arrived: {other:?}");
    let log = Log::check(&conv, entries);
    let mut lost = 0;
    for (&i, &seq) in acked.iter() {
        if log.entries.get(&seq) != Some(&visitor_entry(i, seq)) {
            lost += 1;
            eprintln!(
                "{} acked at seq {seq}, log has {:?}",
                msg_id(i),
                log.entries.get(&seq)
            );
        }
    }
    let chat: Vec<&Entry> = log.entries.values().filter(|e| e.id.is_some()).collect();
    let system: Vec<&Entry> = log.entries.values().filter(|e| e.id.is_none()).collect();
    let duplicated = chat.len() as u64 - log.by_id.len() as u64;
    assert_eq!(lost, 0, "acknowledged messages lost or moved");
    assert_eq!(
        chat.len() as u64,
        next_new,
        "exactly one entry per message id"
    );
    assert_eq!(
        system.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        vec![Some("queued".to_string()), Some("assigned".to_string())],
        "the only system entries are the first queued and assigned"
    );

    // The agent: everything it was ever delivered is what the log holds.
    read_until(&mut agent, &conv, &mut agent_view, log.last());
    agent_view.assert_ok("agent, final");
    for (seq, e) in &agent_view.entries {
        assert_eq!(
            Some(e),
            log.entries.get(seq),
            "the agent was delivered seq {seq} as one entry, the log holds another"
        );
    }
    eprintln!(
        "shards={shards}: {KILLS} SIGKILLs; {} messages, {} acked before a kill, {} unacknowledged resent, {} acknowledged resent (original ack each time), {acked_before_final} acked before the final resend; log 1..={} with no gap; lost = {lost}, duplicated = {duplicated}; agent re-delivered {} entries after reconnections; {:.1?}",
        next_new,
        totals.0,
        totals.1,
        totals.2,
        log.last(),
        agent_view.repeats,
        started.elapsed()
    );
}

#[test]
fn sigkill_under_load_loses_nothing_one_shard() {
    sigkill_under_load(1);
}

#[test]
fn sigkill_under_load_loses_nothing_two_shards() {
    sigkill_under_load(2);
}

/// An idle client's side of a drain: waits for the server's close,
/// skipping entries (a second device of the agent receives the chat).
fn await_close(mut client: Client) -> String {
    loop {
        match client.read() {
            Incoming::Close(code) => return closed_with(&mut client, code),
            Incoming::Json(v) if v["type"] == "msg" => continue,
            Incoming::Json(v) => return format!("unexpected frame {v}"),
            Incoming::Gone(why) => return format!("gone: {why}"),
            Incoming::Timeout => return "no close frame".into(),
        }
    }
}

#[test]
fn sigterm_under_load_closes_with_1001_and_keeps_every_ack() {
    const DRAIN_BOUND: Duration = Duration::from_secs(15);
    let options = Options::shards(2).arg("--msg-rate-limit").arg("0");
    let mut gw = Gateway::start(options.clone());
    let visitor_token = gw.visitor_token(VISITOR, &["--name", "Ann"]);
    let agent_token = gw.agent_token(AGENT, &["--name", "Alice"]);
    let (mut visitor, _) = gw.login(&visitor_token);
    let ack = visitor.say(&msg_id(0), None, &msg_text(0));
    let conv = ack["conv"].as_str().expect("conv").to_string();
    let mut acked: Acked = BTreeMap::from([(0, 1)]);
    let (mut agent, _) = gw.login(&agent_token);
    let mut agent_view = View::default();
    read_until(&mut agent, &conv, &mut agent_view, 3);
    let mut visitor_view = View::holding(1, BTreeMap::from([(1, visitor_entry(0, 1))]));
    read_until(&mut visitor, &conv, &mut visitor_view, 3);
    // Idle connections of every kind: anonymous visitors, a second device
    // of the agent, another agent.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(gw.anonymous("demo").0);
    }
    idle.push(gw.login(&agent_token).0);
    idle.push(gw.login(&gw.agent_token("bob", &[])).0);
    let idle: Vec<_> = idle
        .into_iter()
        .map(|c| thread::spawn(move || await_close(c)))
        .collect();

    let (tx, rx) = mpsc::channel();
    let stream_conv = conv.clone();
    let streamer = thread::spawn(move || {
        pipeline(
            &mut visitor,
            &stream_conv,
            1..,
            visitor_view,
            Some((300, tx)),
        )
    });
    let follow_conv = conv.clone();
    let follower = thread::spawn(move || follow(agent, follow_conv, agent_view));
    rx.recv_timeout(STREAM_TIMEOUT)
        .expect("the stream reached 300 acks");
    gw.sigterm();
    let (status, took) = gw.wait_exit(DRAIN_BOUND);
    let stream = streamer.join().expect("streamer");
    let (agent_view, agent_end) = follower.join().expect("agent");
    let idle_ends: Vec<String> = idle.into_iter().map(|t| t.join().expect("idle")).collect();
    eprintln!(
        "SIGTERM with {} messages sent, {} acked: exited {status} after {took:.1?}; visitor: {}; agent: {agent_end}; idle clients: {idle_ends:?}",
        stream.sent.len(),
        stream.acks.len() + 1,
        stream.ended,
    );
    assert!(status.success(), "a drain exits cleanly: {status}");
    assert_eq!(stream.ended, "close 1001", "the streaming visitor");
    assert_eq!(agent_end, "close 1001", "the agent");
    for end in &idle_ends {
        assert_eq!(end, "close 1001", "every idle client");
    }
    assert!(stream.errors.is_empty(), "errors: {:?}", stream.errors);
    stream.view.assert_ok("visitor");
    agent_view.assert_ok("agent");
    merge(&mut acked, &stream);

    gw.restart(options);
    let (mut visitor, view) = reconnect_visitor(&gw, &visitor_token, &conv, &acked);
    let next_new = stream.sent.iter().max().map_or(1, |m| m + 1);
    let unacked: Vec<u64> = (0..next_new).filter(|i| !acked.contains_key(i)).collect();
    let durable = view.held;
    let resend = pipeline(&mut visitor, &conv, unacked.clone(), view, None);
    assert_eq!(resend.ended, "done");
    let stored_before = unacked_found_stored(&acked, &resend, &unacked, durable);
    merge(&mut acked, &resend);
    let (entries, _) = sync_all(&mut visitor, &conv);
    let log = Log::check(&conv, entries);
    for (&i, &seq) in &acked {
        assert_eq!(
            log.entries.get(&seq),
            Some(&visitor_entry(i, seq)),
            "{} where its ack said",
            msg_id(i)
        );
    }
    assert_eq!(log.by_id.len() as u64, next_new, "each message once");
    for (seq, e) in &agent_view.entries {
        assert_eq!(Some(e), log.entries.get(seq), "the agent saw seq {seq}");
    }
    eprintln!(
        "after the drain: {} acked before SIGTERM all present once at their seqs; {} unacknowledged resent ({stored_before} of them stored during the drain); log 1..={} with no gap",
        stream.acks.len() + 1,
        unacked.len(),
        log.last()
    );
}

#[test]
fn sigterm_of_an_idle_gateway_exits_at_once() {
    let mut gw = Gateway::start(Options::shards(2));
    gw.sigterm();
    let (status, took) = gw.wait_exit(Duration::from_secs(2));
    eprintln!("idle, no connection: exited {status} after {took:.1?}");
    assert!(status.success());

    // The same with an idle visitor connected: it is closed with 1001.
    gw.restart(Options::shards(2));
    let (visitor, _) = gw.anonymous("demo");
    let waiter = thread::spawn(move || await_close(visitor));
    gw.sigterm();
    let (status, took) = gw.wait_exit(Duration::from_secs(2));
    let end = waiter.join().expect("visitor");
    eprintln!("idle, one connection: exited {status} after {took:.1?}; the visitor saw {end}");
    assert!(status.success());
    assert_eq!(end, "close 1001");
}
