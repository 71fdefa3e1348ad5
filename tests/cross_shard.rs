//! Two shards, many participants: connections and conversations on both
//! shards, every entry delivered to every participant's every device in seq
//! order, without gaps or duplicates, the same entry at the same seq
//! everywhere; the sender's other devices receive its messages as frames.

mod common;
mod logcheck;

use std::collections::{BTreeMap, HashMap};
use std::thread;
use std::time::Instant;

use common::{Client, Gateway, Options};
use logcheck::{sync_all, Entry, Log, View};
use serde_json::{json, Value};

const VISITORS: usize = 16;
const AGENTS: usize = 4;
/// Messages each device sends to each of its conversations.
const PER_DEVICE: usize = 25;
/// Entries a conversation starts with: the first message, queued, assigned.
const OPENING: u64 = 3;

/// One connection of a participant, and everything it received.
struct Device {
    /// For messages: "v-03/2".
    name: String,
    /// The participant's role and id.
    role: &'static str,
    who: String,
    client: Client,
    /// What it received per conversation, checked as it arrived.
    views: BTreeMap<String, View>,
    /// Texts of the messages it sent, by id (to rebuild the entry of an ack).
    texts: HashMap<String, String>,
    /// Acks received.
    acks: u64,
    /// Entries of its own participant received as frames (sent by a sibling device).
    from_siblings: u64,
}

impl Device {
    fn login(
        gw: &Gateway,
        token: &str,
        name: String,
        role: &'static str,
        who: &str,
    ) -> (Device, Value) {
        let (client, welcome) = gw.login(token);
        let device = Device {
            name,
            role,
            who: who.to_string(),
            client,
            views: BTreeMap::new(),
            texts: HashMap::new(),
            acks: 0,
            from_siblings: 0,
        };
        (device, welcome)
    }

    fn send(&mut self, id: String, conv: Option<&str>) {
        let text = format!("{id} says hello from {}", self.name);
        let mut frame = json!({"type": "msg", "id": id, "text": text});
        if let Some(conv) = conv {
            frame["conv"] = json!(conv);
        }
        self.texts.insert(id, text);
        self.client.send(frame);
    }

    /// Reads one frame into the views.
    fn pump(&mut self) {
        let v = self.client.recv();
        match v["type"].as_str() {
            Some("msg") => {
                let e = Entry::of(&v);
                if e.from.as_deref() == Some(&self.who) && e.role == self.role {
                    self.from_siblings += 1;
                }
                let conv = v["conv"].as_str().expect("conv").to_string();
                self.views.entry(conv).or_default().take(e);
            }
            Some("ack") => {
                let id = v["id"].as_str().expect("id").to_string();
                let e = Entry {
                    seq: v["seq"].as_u64().expect("seq"),
                    role: self.role.to_string(),
                    from: Some(self.who.clone()),
                    text: Some(self.texts[&id].clone()),
                    id: Some(id),
                    event: None,
                };
                self.acks += 1;
                let conv = v["conv"].as_str().expect("conv").to_string();
                self.views.entry(conv).or_default().take(e);
            }
            Some("queue") | Some("status") => {}
            _ => panic!("{}: unexpected frame {v}", self.name),
        }
    }

    /// Reads until it holds `1..=upto` of every conversation in `convs`.
    fn pump_until(&mut self, convs: &[String], upto: u64) {
        while convs
            .iter()
            .any(|c| self.views.get(c).is_none_or(|v| v.held < upto))
        {
            self.pump();
        }
    }
}

fn welcome_convs(welcome: &Value) -> Vec<String> {
    let mut convs: Vec<String> = welcome["conversations"]
        .as_array()
        .expect("conversations")
        .iter()
        .map(|c| c["conv"].as_str().expect("conv").to_string())
        .collect();
    convs.sort();
    convs
}

#[test]
fn every_entry_reaches_every_device_in_order_across_two_shards() {
    let started = Instant::now();
    let gw = Gateway::start(Options::shards(2).arg("--msg-rate-limit").arg("0"));
    let agent_ids: Vec<String> = (0..AGENTS).map(|i| format!("agent-{i}")).collect();
    let visitor_ids: Vec<String> = (0..VISITORS).map(|i| format!("v-{i:02}")).collect();
    let agent_tokens: Vec<String> = agent_ids
        .iter()
        .map(|a| gw.agent_token(a, &["--max-chats", "5"]))
        .collect();
    let visitor_tokens: Vec<String> = visitor_ids
        .iter()
        .map(|v| gw.visitor_token(v, &[]))
        .collect();

    // Agents' first devices, then each visitor's first message: sixteen
    // conversations, four per agent (lowest load first).
    let mut agents: Vec<Device> = Vec::new();
    for (i, a) in agent_ids.iter().enumerate() {
        let (d, _) = Device::login(&gw, &agent_tokens[i], format!("{a}/1"), "agent", a);
        agents.push(d);
    }
    let mut visitors: Vec<Device> = Vec::new();
    let mut conv_of: Vec<String> = Vec::new();
    let mut convs_of_agent: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, v) in visitor_ids.iter().enumerate() {
        let (mut d, _) = Device::login(&gw, &visitor_tokens[i], format!("{v}/1"), "visitor", v);
        d.send(format!("{v}-first"), None);
        while !d.views.values().any(|view| view.held >= OPENING) {
            d.pump();
        }
        let (conv, view) = d.views.iter().next().expect("one conversation");
        let assigned = &view.entries[&OPENING];
        assert_eq!(assigned.event.as_deref(), Some("assigned"));
        conv_of.push(conv.clone());
        visitors.push(d);
    }
    // Who took which: from the first agent devices' streams.
    for d in agents.iter_mut() {
        while d.views.values().filter(|v| v.held >= OPENING).count() < VISITORS / AGENTS {
            d.pump();
        }
        convs_of_agent.insert(d.who.clone(), d.views.keys().cloned().collect());
    }
    assert_eq!(
        convs_of_agent.values().map(Vec::len).sum::<usize>(),
        VISITORS,
        "every conversation assigned once: {convs_of_agent:?}"
    );
    // Second devices: the welcome lists the conversations, the replay follows.
    for (i, v) in visitor_ids.iter().enumerate() {
        let (mut d, welcome) =
            Device::login(&gw, &visitor_tokens[i], format!("{v}/2"), "visitor", v);
        assert_eq!(welcome_convs(&welcome), vec![conv_of[i].clone()]);
        d.pump_until(&conv_of[i..=i], OPENING);
        visitors.push(d);
    }
    for (i, a) in agent_ids.iter().enumerate() {
        let (mut d, welcome) = Device::login(&gw, &agent_tokens[i], format!("{a}/2"), "agent", a);
        let convs = convs_of_agent[a].clone();
        assert_eq!(welcome_convs(&welcome), convs);
        d.pump_until(&convs, OPENING);
        agents.push(d);
    }

    // Both shards hold connections and conversations.
    let metrics = gw.metrics();
    let conns = common::metric_by_label(&metrics, "kefu_connections", "shard");
    let open = common::metric_by_label(&metrics, "kefu_conversations_open", "shard");
    eprintln!("connections by shard {conns:?}, open conversations by shard {open:?}");
    for shard in ["0", "1"] {
        assert!(
            conns.get(shard).copied().unwrap_or(0.0) > 0.0,
            "connections on shard {shard}: {conns:?}"
        );
        assert!(
            open.get(shard).copied().unwrap_or(0.0) > 0.0,
            "conversations on shard {shard}: {open:?}"
        );
    }
    assert_eq!(
        conns.values().sum::<f64>(),
        (2 * (VISITORS + AGENTS)) as f64
    );
    assert_eq!(open.values().sum::<f64>(), VISITORS as f64);

    // Everyone talks at once: every device sends PER_DEVICE messages to each
    // of its conversations, then reads until it holds every conversation up
    // to its last entry (the opening, then four devices' messages).
    let last = OPENING + 4 * PER_DEVICE as u64;
    let mut threads = Vec::new();
    for mut d in visitors.into_iter().chain(agents) {
        let convs: Vec<String> = d.views.keys().cloned().collect();
        threads.push(thread::spawn(move || {
            for k in 0..PER_DEVICE {
                for (j, conv) in convs.iter().enumerate() {
                    let id = format!("{}-{j}-{k}", d.name.replace('/', "-d"));
                    let conv = (d.role == "agent").then_some(conv.as_str());
                    d.send(id, conv);
                }
            }
            d.pump_until(&convs, last);
            d
        }));
    }
    let devices: Vec<Device> = threads
        .into_iter()
        .map(|t| t.join().expect("device"))
        .collect();

    // Every device: no gap, no repeat, nothing past the end; every
    // conversation reads the same on every device.
    let mut by_conv: BTreeMap<String, Vec<&Device>> = BTreeMap::new();
    let mut frames = 0;
    for d in &devices {
        for (conv, view) in &d.views {
            view.assert_ok(&d.name);
            assert_eq!(
                view.repeats, 0,
                "{}: an entry of {conv} delivered twice",
                d.name
            );
            assert_eq!(view.held, last, "{}: {conv} complete", d.name);
            assert_eq!(
                view.entries.len() as u64,
                last,
                "{}: nothing past the end",
                d.name
            );
            by_conv.entry(conv.clone()).or_default().push(d);
            frames += view.entries.len();
        }
        let sent = d.texts.len() as u64;
        assert_eq!(d.acks, sent, "{}: an ack for each message", d.name);
        // Its sibling device's messages (and, for a visitor, its first one
        // when this is the second device) came as frames.
        let sibling = (d.views.len() * PER_DEVICE) as u64;
        let first = u64::from(d.role == "visitor" && d.name.ends_with("/2"));
        assert_eq!(
            d.from_siblings,
            sibling + first,
            "{}: the sender's other device receives its messages",
            d.name
        );
    }
    assert_eq!(by_conv.len(), VISITORS);
    let mut checked = 0;
    for (i, conv) in conv_of.iter().enumerate() {
        let devices = &by_conv[conv];
        assert_eq!(
            devices.len(),
            4,
            "{conv}: two visitor and two agent devices"
        );
        let reference = &devices[0].views[conv].entries;
        for d in &devices[1..] {
            assert_eq!(
                &d.views[conv].entries, reference,
                "{conv}: {} and {} disagree",
                devices[0].name, d.name
            );
        }
        // And the log on disk says the same.
        let (mut reader, welcome) = gw.login(&visitor_tokens[i]);
        assert_eq!(welcome["conversations"][0]["last_seq"], last);
        // Its replay first (its cursor is 0), then a sync of the whole log.
        let mut replay = View::default();
        while replay.held < last {
            replay.take(Entry::of(&reader.recv_type("msg")));
        }
        replay.assert_ok("a third visitor device");
        let (entries, _) = sync_all(&mut reader, conv);
        let log = Log::check(conv, entries);
        assert_eq!(
            &log.entries, reference,
            "{conv}: the log and the deliveries agree"
        );
        assert_eq!(
            log.by_id.len() as u64,
            1 + 4 * PER_DEVICE as u64,
            "{conv}: every message once"
        );
        checked += log.entries.len();
    }
    eprintln!(
        "{} devices ({VISITORS} visitors and {AGENTS} agents, two devices each) on 2 shards: {VISITORS} conversations of {last} entries, {checked} log entries checked, {frames} deliveries (acks included) all in order, no gap, no duplicate, identical on every device; {:.1?}",
        devices.len(),
        started.elapsed()
    );
}
