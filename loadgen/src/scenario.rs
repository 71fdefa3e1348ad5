//! The scenarios: what each thread does, and what the coordinator does.
//!
//! Threads are glommio executors started with `shards::runtime::run` (the
//! gateway's own thread-per-core substrate), pinned to `--cpus`. Client
//! `i` of a role lives on thread `i % threads` for the whole run. The
//! coordinator (the main thread) moves the run through its [`Phase`]s:
//!
//! - **chat, soak**: agents connect (`Setup`), then visitors (`Visitors`);
//!   then visitors send on schedule (`Run`): warmup first, and the
//!   measurement window starts once the warmup is over *and* every visitor's
//!   conversation is assigned; after `--duration` sending stops (`Drain`)
//!   until every sent message is acked and every acked message delivered,
//!   or `--drain` runs out; then everything closes (`Done`) and the
//!   per-conversation records are merged into the verdict.
//! - **flood**: connections are opened at `--rate` (each thread its
//!   share, on schedule), held for `--hold`, then closed.
//!
//! **Open loop.** A thread's scheduler sends visitor `i`'s `k`-th message
//! at `t0 + (i / V + k) · V / R`: every visitor sends at `R / V` per
//! second and together they send at `R`, evenly spread. The schedule does
//! not wait for acks, so a stalled gateway faces the same offered load
//! after the stall, and latencies count from the scheduled time, so the
//! stall shows in them (no coordinated omission). If the scheduler itself
//! wakes late, the messages due are sent together, late, and that lateness
//! counts too.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shards::RuntimeConfig;

use crate::cli::{ChatArgs, Common, FloodArgs};
use crate::client::{life, Client, ThreadCtx};
use crate::control::{Churn, Control, Kind, Phase, RunConfig};
use crate::gateway::{self, CommitBatches};
use crate::protocol::Protocol;
use crate::report::Outcome;
use crate::stats::{record, Latencies, Percentiles, Totals};
use crate::token::{self, Role, Signer};
use crate::util::{init_clock, now_ns, rand_below, sleep_until};
use crate::verify::{ConvExport, Verdict};

/// What a thread hands back at the end.
pub struct ThreadResult {
    /// Its histograms.
    pub lat: Latencies,
    /// Its clients' conversation records.
    pub exports: Vec<ConvExport>,
    /// Its error kinds.
    pub error_kinds: BTreeMap<String, u64>,
}

/// What the chat threads need to know besides [`RunConfig`].
#[derive(Debug)]
struct ChatPlan {
    /// Visitors in all.
    visitors: u32,
    /// Agents in all.
    agents: u32,
    /// Visitor messages per second in all.
    rate: f64,
    /// Threads.
    threads: usize,
    /// Connections per second while setting up, in all.
    connect_rate: f64,
    /// Signs tokens (else visitors are anonymous, and there are no agents).
    signer: Option<Signer>,
    /// Visitors come without tokens.
    anonymous: bool,
    /// Prefix of client ids.
    run_id: String,
    /// `max_chats` for agents.
    max_chats: u32,
    /// Disconnections per second in all (soak).
    churn: f64,
}

/// What the flood threads need to know besides [`RunConfig`].
#[derive(Debug)]
struct FloodPlan {
    /// Connections in all.
    connections: u64,
    /// Connections per second in all.
    rate: f64,
    /// Threads.
    threads: usize,
    /// Who connects.
    role: Role,
    /// Signs tokens (else anonymous visitors).
    signer: Option<Signer>,
    /// Prefix of client ids.
    run_id: String,
}

/// Resolves the tenant secret from the options, if any was given.
fn signer(common: &Common) -> Result<Option<Signer>, String> {
    let secret = if let Some(s) = &common.secret {
        Some(s.clone().into_bytes())
    } else if let Some(path) = &common.secret_file {
        Some(token::secret_from_file(path)?)
    } else if let Some(path) = &common.config {
        Some(token::secret_from_config(path, &common.tenant)?)
    } else {
        None
    };
    Ok(secret.map(|s| Signer::new(&common.tenant, &s)))
}

/// The threads and where they run.
fn runtime(common: &Common) -> RuntimeConfig {
    let cpus = common
        .cpus
        .clone()
        .map_or_else(shards::runtime::available_cpus, |c| c.0);
    RuntimeConfig {
        shards: common.threads.unwrap_or(cpus.len()).max(1),
        cpus: Some(cpus),
        pin: !common.no_pin,
        name: "loadgen".into(),
        io_memory: 128 * 1024,
        blocking_threads: 1,
    }
}

fn run_id(common: &Common) -> String {
    common
        .run_id
        .clone()
        .unwrap_or_else(|| format!("{:06x}", rand_below(1 << 24)))
}

/// Prints the progress line once a second.
struct Progress {
    /// Off with `--quiet`.
    enabled: bool,
    /// The run's start.
    start: Instant,
    /// When the last line was printed, and the totals then.
    last: (Instant, Totals),
}

impl Progress {
    fn new(enabled: bool) -> Self {
        let now = Instant::now();
        Progress {
            enabled,
            start: now,
            last: (now, Totals::default()),
        }
    }

    fn tick(&mut self, control: &Control, phase: &str, clients: u64) {
        let now = Instant::now();
        let dt = now.duration_since(self.last.0).as_secs_f64();
        if !self.enabled || dt < 1.0 {
            return;
        }
        let t = Totals::sum(&control.tallies);
        let prev = self.last.1;
        let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / dt;
        eprintln!(
            "[{:6.1}s] {phase:<8} open {}/{} connects/s {:.0} | sent/s {:.0} acked/s {:.0} delivered/s {:.0} unacked {} | assigned {} dup {} reord {} | errors {} drops {}",
            now.duration_since(self.start).as_secs_f64(),
            t.open,
            clients,
            rate(t.connected, prev.connected),
            rate(t.sent, prev.sent),
            rate(t.acked, prev.acked),
            rate(t.delivered, prev.delivered),
            t.unacked,
            t.assigned,
            t.duplicated,
            t.reordered,
            t.errors,
            t.dropped,
        );
        self.last = (now, t);
    }
}

/// Waits (printing progress) until `done` holds or `limit` passes;
/// `false` on timeout.
fn wait_until(
    control: &Control,
    progress: &mut Progress,
    phase: &str,
    clients: u64,
    limit: Duration,
    mut done: impl FnMut(&Totals) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let t = Totals::sum(&control.tallies);
        if done(&t) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        progress.tick(control, phase, clients);
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits on a thread until the phase is at least `phase`.
async fn wait_phase<P: crate::protocol::Protocol>(ctx: &ThreadCtx<P>, phase: Phase) {
    while ctx.phase() < phase {
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
}

/// Starts the life of every client in `clients`, `rate` per second.
async fn connect_all<P: Protocol>(
    ctx: &Rc<ThreadCtx<P>>,
    clients: &[Rc<Client<P>>],
    rate: f64,
    tasks: &mut Vec<glommio::Task<()>>,
) {
    let start = now_ns();
    let gap = 1e9 / rate.max(1e-3);
    for (k, client) in clients.iter().enumerate() {
        if ctx.phase() >= Phase::Done {
            return;
        }
        let sched = start + (k as f64 * gap) as u64;
        if sched > now_ns() + 200_000 {
            sleep_until(sched).await;
        }
        tasks.push(glommio::spawn_local(life(
            ctx.clone(),
            client.clone(),
            sched,
        )));
    }
}

/// Lets every client notice the end, waits a little for them, then
/// cancels the rest.
async fn finish<P: Protocol>(clients: &[Rc<Client<P>>], tasks: Vec<glommio::Task<()>>) {
    for c in clients {
        c.wake.notify();
    }
    futures_lite::future::or(
        async move {
            for t in tasks {
                t.await;
            }
        },
        glommio::timer::sleep(Duration::from_secs(3)),
    )
    .await;
}

/// The open-loop scheduler of one thread's visitors (`(global index,
/// client)`), for `total` visitors sending `rate` messages per second.
async fn open_loop<P: Protocol>(
    ctx: Rc<ThreadCtx<P>>,
    visitors: Vec<(u32, Rc<Client<P>>)>,
    total: u32,
    rate: f64,
) {
    let t0 = ctx.control.send_start_ns.load(Ordering::Acquire);
    let interval = f64::from(total) * 1e9 / rate;
    let base: Vec<f64> = visitors
        .iter()
        .map(|(i, _)| t0 as f64 + f64::from(*i) / f64::from(total) * interval)
        .collect();
    let mut due: BinaryHeap<Reverse<(u64, u64, usize)>> = visitors
        .iter()
        .enumerate()
        .map(|(local, _)| Reverse((base[local] as u64, 0, local)))
        .collect();
    while let Some(&Reverse((next, _, _))) = due.peek() {
        if ctx.phase() >= Phase::Drain {
            return;
        }
        if next > now_ns() {
            sleep_until(next).await;
            continue;
        }
        let now = now_ns();
        let window = ctx.control.window();
        while let Some(&Reverse((when, k, local))) = due.peek() {
            if when > now {
                break;
            }
            due.pop();
            if when >= window.end {
                continue;
            }
            if window.contains(when) {
                record(&mut ctx.lat.borrow_mut().lag, now - when);
            }
            visitors[local].1.send_next(&ctx, when);
            let again = (base[local] + (k + 1) as f64 * interval) as u64;
            due.push(Reverse((again, k + 1, local)));
        }
    }
}

/// The ids of clients: `lg<run>v<i>`, `lg<run>a<j>`.
fn sub_of(run_id: &str, role: Role, i: u32) -> String {
    let r = if role == Role::Agent { 'a' } else { 'v' };
    format!("lg{run_id}{r}{i}")
}

/// One chat (or soak) thread.
async fn chat_thread<P: Protocol>(ctx: Rc<ThreadCtx<P>>, plan: Arc<ChatPlan>) -> ThreadResult {
    let (t, me) = (plan.threads, ctx.id);
    let make = |role: Role, i: u32| {
        let sub = sub_of(&plan.run_id, role, i);
        let anonymous = role == Role::Visitor && (plan.anonymous || plan.signer.is_none());
        let token = match (&plan.signer, anonymous) {
            (Some(s), false) => Some(s.sign(role, &sub, Some(plan.max_chats))),
            _ => None,
        };
        Rc::new(Client::<P>::new(
            role,
            i,
            if anonymous { String::new() } else { sub },
            token,
        ))
    };
    let agents: Vec<_> = (0..plan.agents)
        .filter(|j| *j as usize % t == me)
        .map(|j| make(Role::Agent, j))
        .collect();
    let visitors: Vec<_> = (0..plan.visitors)
        .filter(|i| *i as usize % t == me)
        .map(|i| (i, make(Role::Visitor, i)))
        .collect();
    let visitor_clients: Vec<_> = visitors.iter().map(|(_, c)| c.clone()).collect();
    let all: Vec<_> = agents.iter().chain(&visitor_clients).cloned().collect();
    let per_thread = |x: f64| x / t as f64;
    let mut tasks = Vec::new();
    connect_all(&ctx, &agents, per_thread(plan.connect_rate), &mut tasks).await;
    wait_phase(&ctx, Phase::Visitors).await;
    connect_all(
        &ctx,
        &visitor_clients,
        per_thread(plan.connect_rate),
        &mut tasks,
    )
    .await;
    wait_phase(&ctx, Phase::Run).await;
    let sender = if ctx.cfg.ping_pong {
        for c in &visitor_clients {
            c.send_next(&ctx, now_ns());
        }
        None
    } else if !visitors.is_empty() {
        Some(glommio::spawn_local(open_loop(
            ctx.clone(),
            visitors.clone(),
            plan.visitors,
            plan.rate,
        )))
    } else {
        None
    };
    // Churn (soak) until the end.
    let churn = per_thread(plan.churn);
    let mut budget = 0.0;
    let mut last = now_ns();
    while ctx.phase() < Phase::Done {
        glommio::timer::sleep(Duration::from_millis(10)).await;
        let now = now_ns();
        if churn > 0.0 && ctx.phase() == Phase::Run && !all.is_empty() {
            budget += churn * (now - last) as f64 / 1e9;
            while budget >= 1.0 {
                budget -= 1.0;
                let c = &all[rand_below(all.len() as u64) as usize];
                if c.st.borrow().online {
                    c.kill.set(true);
                    c.wake.notify();
                }
            }
        }
        last = now;
    }
    drop(sender);
    finish(&all, tasks).await;
    ThreadResult {
        lat: ctx.lat.take(),
        exports: all.iter().flat_map(|c| c.export()).collect(),
        error_kinds: ctx.error_kinds.take(),
    }
}

/// One flood thread.
async fn flood_thread<P: Protocol>(ctx: Rc<ThreadCtx<P>>, plan: Arc<FloodPlan>) -> ThreadResult {
    let (t, me) = (plan.threads as u64, ctx.id as u64);
    let t0 = ctx.control.send_start_ns.load(Ordering::Acquire);
    let gap = 1e9 / plan.rate.max(1e-3);
    let mut clients = Vec::new();
    let mut tasks = Vec::new();
    for i in (me..plan.connections).step_by(t as usize) {
        if ctx.phase() >= Phase::Done {
            break;
        }
        let sched = t0 + (i as f64 * gap) as u64;
        if sched > now_ns() + 200_000 {
            sleep_until(sched).await;
        }
        let sub = sub_of(&plan.run_id, plan.role, i as u32);
        let token = plan.signer.as_ref().map(|s| s.sign(plan.role, &sub, None));
        let anonymous = token.is_none();
        let client = Rc::new(Client::<P>::new(
            plan.role,
            i as u32,
            if anonymous { String::new() } else { sub },
            token,
        ));
        tasks.push(glommio::spawn_local(life(
            ctx.clone(),
            client.clone(),
            sched,
        )));
        clients.push(client);
    }
    wait_phase(&ctx, Phase::Done).await;
    finish(&clients, tasks).await;
    ThreadResult {
        lat: ctx.lat.take(),
        exports: Vec::new(),
        error_kinds: ctx.error_kinds.take(),
    }
}

/// Starts the threads on their own OS thread (the caller coordinates).
fn start<F, Fut>(
    rt: RuntimeConfig,
    make: F,
) -> std::thread::JoinHandle<std::io::Result<Vec<ThreadResult>>>
where
    F: Fn(shards::ShardContext) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ThreadResult> + 'static,
{
    std::thread::spawn(move || shards::runtime::run(&rt, make))
}

/// Joins the threads and folds their results into `outcome`.
fn collect(
    handle: std::thread::JoinHandle<std::io::Result<Vec<ThreadResult>>>,
    control: &Control,
    outcome: &mut Outcome,
    verify: bool,
) {
    let results = match handle.join() {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            outcome.aborted = Some(format!("load generator threads failed: {e}"));
            Vec::new()
        }
        Err(_) => {
            outcome.aborted = Some("a load generator thread panicked".into());
            Vec::new()
        }
    };
    outcome.totals = Totals::sum(&control.tallies);
    let mut lats = Vec::new();
    let mut exports = Vec::new();
    for r in results {
        lats.push(r.lat);
        exports.extend(r.exports);
        for (k, n) in r.error_kinds {
            *outcome.error_kinds.entry(k).or_default() += n;
        }
    }
    let lat = Latencies::merge(lats);
    outcome.ack = Percentiles::of(&lat.ack);
    outcome.deliver = Percentiles::of(&lat.deliver);
    outcome.connect = Percentiles::of(&lat.connect);
    outcome.lag = Percentiles::of(&lat.lag);
    if verify {
        outcome.verdict = Some(Verdict::merge(exports));
    }
}

/// `chat` (`churn: None`) or `soak` (`Some(churn)`)
/// against a system speaking `proto`.
pub fn run_chat<P>(proto: P, args: &ChatArgs, churn: Option<Churn>) -> Outcome
where
    P: Protocol + Clone + Send + Sync,
{
    init_clock();
    let common = &args.common;
    let kind = if churn.is_some() {
        Kind::Soak
    } else {
        Kind::Chat
    };
    let mut outcome = Outcome {
        scenario: kind.name().into(),
        clients: u64::from(args.visitors) + u64::from(args.agents),
        ..Outcome::default()
    };
    let fail = |mut o: Outcome, why: String| {
        o.aborted = Some(why);
        o
    };
    let signer = match signer(common) {
        Ok(s) => s,
        Err(e) => return fail(outcome, e),
    };
    if args.agents > 0 && signer.is_none() {
        return fail(
            outcome,
            "agents need tokens: give --secret, --secret-file or --config".into(),
        );
    }
    if args.visitors == 0 || args.agents == 0 {
        return fail(
            outcome,
            "chat needs at least one visitor and one agent".into(),
        );
    }
    if !(0.0..=1.0).contains(&args.reply_fraction) {
        return fail(outcome, "--reply-fraction must be within 0..=1".into());
    }
    if !args.ping_pong && args.rate <= 0.0 {
        return fail(outcome, "--rate must be positive".into());
    }
    let max_chats = args.max_chats.unwrap_or_else(|| {
        args.visitors
            .div_ceil(args.agents)
            .saturating_mul(2)
            .max(16)
    });
    if u64::from(max_chats) * u64::from(args.agents) < u64::from(args.visitors) {
        return fail(
            outcome,
            format!(
                "{} agents × max_chats {max_chats} cannot serve {} visitors",
                args.agents, args.visitors
            ),
        );
    }
    let rt = runtime(common);
    let threads = rt.shards;
    if let Err(e) = crate::net::raise_fd_limit(outcome.clients + 1024) {
        outcome
            .notes
            .push(format!("could not raise RLIMIT_NOFILE: {e}"));
    }
    let churn = churn.unwrap_or(Churn {
        per_sec: 0.0,
        downtime: Duration::ZERO,
        backoff_max: Duration::from_secs(2),
    });
    let cfg = Arc::new(RunConfig {
        kind,
        target: common.target.clone(),
        tenant: common.tenant.clone(),
        source_ips: common.source_ips.clone().map_or_else(
            || crate::net::auto_source_ips(common.target.addr, outcome.clients),
            |s| s.0,
        ),
        connect_timeout: common.connect_timeout,
        text_bytes: args.text_bytes,
        reply_fraction: if args.ping_pong {
            1.0
        } else {
            args.reply_fraction
        },
        ping_pong: args.ping_pong,
        track_ids: kind == Kind::Soak,
        reconnect: true,
        expect_drops: kind == Kind::Soak,
        backoff_max: churn.backoff_max,
        downtime: churn.downtime,
    });
    let plan = Arc::new(ChatPlan {
        visitors: args.visitors,
        agents: args.agents,
        rate: args.rate,
        threads,
        connect_rate: args.connect_rate,
        signer,
        anonymous: args.anonymous,
        run_id: run_id(common),
        max_chats,
        churn: churn.per_sec,
    });
    let control = Arc::new(Control::new(threads));
    let rss_before = common.gateway_pid.map(gateway::rss_bytes);
    let handle = {
        let (cfg, control, plan, proto) = (cfg.clone(), control.clone(), plan.clone(), proto);
        start(rt, move |shard| {
            let ctx = Rc::new(ThreadCtx::new(
                shard.id,
                proto.clone(),
                cfg.clone(),
                control.clone(),
            ));
            chat_thread(ctx, plan.clone())
        })
    };
    let mut progress = Progress::new(!common.quiet);
    let clients = outcome.clients;
    let (a, v) = (u64::from(args.agents), u64::from(args.visitors));
    let setup_limit = |n: u64| {
        common.connect_timeout * 2
            + Duration::from_secs_f64(1.5 * n as f64 / args.connect_rate)
            + Duration::from_secs(1)
    };
    let t_setup = now_ns();
    let aborted = 'run: {
        if !wait_until(
            &control,
            &mut progress,
            "agents",
            clients,
            setup_limit(a),
            |t| t.connected >= a,
        ) {
            let t = Totals::sum(&control.tallies);
            break 'run Some(format!("only {} of {a} agents connected", t.connected));
        }
        control.set_phase(Phase::Visitors);
        if !wait_until(
            &control,
            &mut progress,
            "visitors",
            clients,
            setup_limit(v),
            |t| t.connected >= a + v,
        ) {
            let t = Totals::sum(&control.tallies);
            break 'run Some(format!(
                "only {} of {v} visitors connected",
                t.connected.saturating_sub(a)
            ));
        }
        let setup_secs = (now_ns() - t_setup) as f64 / 1e9;
        outcome.connect_per_sec = (a + v) as f64 / setup_secs.max(1e-9);
        let send_start = now_ns() + 20_000_000;
        control.send_start_ns.store(send_start, Ordering::Release);
        control.set_phase(Phase::Run);
        let warm_until = Instant::now() + Duration::from_millis(20) + common.warmup;
        let assign_limit = Duration::from_millis(20) + common.warmup + Duration::from_secs(30);
        if !wait_until(
            &control,
            &mut progress,
            "warmup",
            clients,
            assign_limit,
            |t| Instant::now() >= warm_until && t.assigned >= v,
        ) {
            let t = Totals::sum(&control.tallies);
            break 'run Some(format!(
                "only {} of {v} conversations were assigned an agent within 30 s of the warmup",
                t.assigned
            ));
        }
        let metrics_before = common.admin.map(gateway::scrape);
        let start = now_ns();
        let end = start + common.duration.as_nanos() as u64;
        control.set_window(start, end);
        wait_until(
            &control,
            &mut progress,
            "measure",
            clients,
            common.duration,
            |_| now_ns() >= end,
        );
        outcome.window_secs = common.duration.as_secs_f64();
        outcome.held = Totals::sum(&control.tallies).open;
        if let (Some(Ok(before)), Some(addr)) = (&metrics_before, common.admin) {
            match gateway::scrape(addr) {
                Ok(after) => outcome.batches = Some(CommitBatches::between(before, &after)),
                Err(e) => outcome.notes.push(format!("metrics: {e}")),
            }
        } else if let Some(Err(e)) = &metrics_before {
            outcome.notes.push(format!("metrics: {e}"));
        }
        if let Some(pid) = common.gateway_pid {
            match (&rss_before, gateway::rss_bytes(pid)) {
                (Some(Ok(before)), Ok(after)) => {
                    outcome.rss = Some((*before, after));
                    outcome.rss_connections = clients;
                }
                (Some(Err(e)), _) => outcome.notes.push(format!("RSS: {e}")),
                (_, Err(e)) => outcome.notes.push(format!("RSS: {e}")),
                _ => {}
            }
        }
        control.set_phase(Phase::Drain);
        let drained = wait_until(&control, &mut progress, "drain", clients, args.drain, |t| {
            t.unacked == 0 && t.delivered >= t.acked
        });
        if !drained {
            let t = Totals::sum(&control.tallies);
            outcome.notes.push(format!(
                "drain ran out after {:?}: {} messages unacked, {} acked but not delivered",
                args.drain,
                t.unacked,
                t.acked.saturating_sub(t.delivered)
            ));
        }
        None
    };
    control.set_phase(Phase::Done);
    collect(handle, &control, &mut outcome, aborted.is_none());
    if aborted.is_some() {
        outcome.aborted = aborted;
    }
    if args.ping_pong {
        outcome.notes.push(
            "ping-pong: one message in flight per visitor; agents answer every message".into(),
        );
    }
    outcome
}

/// `flood` against a system speaking `proto`.
pub fn run_flood<P>(proto: P, args: &FloodArgs) -> Outcome
where
    P: Protocol + Clone + Send + Sync,
{
    init_clock();
    let common = &args.common;
    let mut outcome = Outcome {
        scenario: Kind::Flood.name().into(),
        clients: args.connections,
        ..Outcome::default()
    };
    let signer = match signer(common) {
        Ok(s) => s,
        Err(e) => {
            outcome.aborted = Some(e);
            return outcome;
        }
    };
    if args.role == Role::Agent && signer.is_none() {
        outcome.aborted =
            Some("agents need tokens: give --secret, --secret-file or --config".into());
        return outcome;
    }
    if args.rate <= 0.0 {
        outcome.aborted = Some("--rate must be positive".into());
        return outcome;
    }
    let rt = runtime(common);
    let threads = rt.shards;
    match crate::net::raise_fd_limit(args.connections + 1024) {
        Ok(limit) if limit < args.connections + 64 => outcome.notes.push(format!(
            "RLIMIT_NOFILE is {limit}: not enough for {} connections",
            args.connections
        )),
        Ok(_) => {}
        Err(e) => outcome
            .notes
            .push(format!("could not raise RLIMIT_NOFILE: {e}")),
    }
    let cfg = Arc::new(RunConfig {
        kind: Kind::Flood,
        target: common.target.clone(),
        tenant: common.tenant.clone(),
        source_ips: common.source_ips.clone().map_or_else(
            || crate::net::auto_source_ips(common.target.addr, outcome.clients),
            |s| s.0,
        ),
        connect_timeout: common.connect_timeout,
        text_bytes: 0,
        reply_fraction: 0.0,
        ping_pong: false,
        track_ids: false,
        reconnect: false,
        expect_drops: false,
        backoff_max: Duration::from_secs(1),
        downtime: Duration::ZERO,
    });
    let plan = Arc::new(FloodPlan {
        connections: args.connections,
        rate: args.rate,
        threads,
        role: args.role,
        signer,
        run_id: run_id(common),
    });
    let control = Arc::new(Control::new(threads));
    let rss_before = common.gateway_pid.map(gateway::rss_bytes);
    let own_before = gateway::rss_bytes(std::process::id()).ok();
    let t0 = now_ns() + 50_000_000;
    control.send_start_ns.store(t0, Ordering::Release);
    control.set_phase(Phase::Run);
    let handle = {
        let (cfg, control, plan, proto) = (cfg.clone(), control.clone(), plan.clone(), proto);
        start(rt, move |shard| {
            let ctx = Rc::new(ThreadCtx::new(
                shard.id,
                proto.clone(),
                cfg.clone(),
                control.clone(),
            ));
            flood_thread(ctx, plan.clone())
        })
    };
    let mut progress = Progress::new(!common.quiet);
    let n = args.connections;
    let limit = Duration::from_secs_f64(n as f64 / args.rate)
        + common.connect_timeout
        + Duration::from_secs(10);
    let all_tried = wait_until(&control, &mut progress, "connect", n, limit, |t| {
        t.connected + t.connect_failed >= n
    });
    let t = Totals::sum(&control.tallies);
    if !all_tried {
        outcome.notes.push(format!(
            "gave up waiting after {limit:?}: {} of {n} connections welcomed, {} failed",
            t.connected, t.connect_failed
        ));
    }
    let last = control.last_welcome_ns.load(Ordering::Acquire);
    if t.connected > 0 && last > t0 {
        outcome.connect_per_sec = t.connected as f64 / ((last - t0) as f64 / 1e9);
    }
    let hold = args.hold.unwrap_or(common.duration);
    let hold_end = Instant::now() + hold;
    wait_until(&control, &mut progress, "hold", n, hold, |_| {
        Instant::now() >= hold_end
    });
    outcome.held = Totals::sum(&control.tallies).open;
    if let (Some(before), Ok(after)) = (own_before, gateway::rss_bytes(std::process::id())) {
        outcome.own_rss = Some((before, after));
    }
    if let Some(pid) = common.gateway_pid {
        match (&rss_before, gateway::rss_bytes(pid)) {
            (Some(Ok(before)), Ok(after)) => {
                outcome.rss = Some((*before, after));
                outcome.rss_connections = outcome.held;
            }
            (Some(Err(e)), _) => outcome.notes.push(format!("RSS: {e}")),
            (_, Err(e)) => outcome.notes.push(format!("RSS: {e}")),
            _ => {}
        }
    }
    control.set_phase(Phase::Done);
    collect(handle, &control, &mut outcome, false);
    outcome
}
