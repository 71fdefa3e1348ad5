//! One simulated client (a visitor or an agent) and its connection.
//!
//! A [`Client`] outlives its connections: its conversations, its receipt
//! cursors and its unacked messages survive a disconnection, so that a
//! reconnection (soak churn, a gateway restart) resends the unacked
//! messages with the same ids and resumes from the cursors, as a real
//! client does.
//!
//! [`life`] is the client's task: connect, upgrade, hello, then drive the
//! `Session` until the connection ends, then reconnect with backoff if
//! the scenario wants that. `Session` is a hand-written future that,
//! each time it is woken, writes what is queued (one `send` for everything
//! queued), reads while the socket has data into the thread's scratch
//! buffer, decodes the frames in place and hands them to the client, then
//! queues the receipts that the reads made due. It is woken by the socket
//! (readable, writable) and by the client's [`Notify`] (the thread's
//! scheduler queued a message, the run is ending, churn wants it dead).
//!
//! Where time is taken: a message's **scheduled** send time is decided by
//! the thread's scheduler before anything is written, and travels inside
//! the message text; the ack latency is the ack's arrival minus that time
//! (at the sender), the delivery latency is the entry's arrival minus that
//! time (at the receiver, possibly on another thread: all threads share one
//! monotonic clock origin). A message that waited in the client because the
//! socket was full, or because the connection was down, carries that wait
//! in its latency.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::future::Future;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::timer::Timer;
use shards::notify::Notify;

use crate::control::{Control, Kind, Phase, RunConfig};
use crate::net;
use crate::protocol::{Credentials, Entry, Inbound, Outbox, Protocol};
use crate::stats::{record, Latencies, Tally};
use crate::token::Role;
use crate::util::{now_ns, rand_below, rand_mask, unit_hash};
use crate::verify::{id_hash, ConvExport, ConvView, Delivery, Side};
use crate::ws::{self, Decoder, Frame};

/// The largest server message accepted (the gateway's default limit).
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Reads per wake-up before letting other connections run.
const READ_BUDGET: usize = 8;
/// The thread's read buffer.
pub const SCRATCH_BYTES: usize = 64 * 1024;
/// Outgoing buffers larger than this are freed once written.
const KEEP_OUT_BYTES: usize = 16 * 1024;

/// What one thread shares between its clients: configuration, counters,
/// histograms and the read buffer. Single-threaded (`Rc`, `RefCell`).
pub struct ThreadCtx<P: Protocol> {
    /// This thread's index.
    pub id: usize,
    /// The protocol.
    pub proto: P,
    /// The run's configuration.
    pub cfg: Arc<RunConfig>,
    /// Phases and the counters of every thread.
    pub control: Arc<Control>,
    /// Latency histograms of this thread.
    pub lat: RefCell<Latencies>,
    /// Every read goes here first.
    pub scratch: RefCell<Vec<u8>>,
    /// Error kinds and their counts (cold path).
    pub error_kinds: RefCell<BTreeMap<String, u64>>,
    /// Round-robin position in the source addresses.
    next_source: Cell<usize>,
    /// A reusable buffer for message texts.
    text: RefCell<String>,
}

impl<P: Protocol> ThreadCtx<P> {
    /// The context of thread `id`.
    pub fn new(id: usize, proto: P, cfg: Arc<RunConfig>, control: Arc<Control>) -> Self {
        ThreadCtx {
            id,
            proto,
            cfg,
            control,
            lat: RefCell::new(Latencies::default()),
            scratch: RefCell::new(vec![0u8; SCRATCH_BYTES]),
            error_kinds: RefCell::new(BTreeMap::new()),
            next_source: Cell::new(id),
            text: RefCell::new(String::new()),
        }
    }

    /// This thread's counters.
    pub fn tally(&self) -> &Tally {
        &self.control.tallies[self.id]
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.control.phase()
    }

    /// Counts an error of kind `kind`.
    pub fn error(&self, kind: &str) {
        self.tally().errors.add(1);
        *self
            .error_kinds
            .borrow_mut()
            .entry(kind.to_string())
            .or_default() += 1;
    }

    /// The source address for the next connection.
    fn source(&self) -> Option<IpAddr> {
        let ips = &self.cfg.source_ips;
        if ips.is_empty() {
            return None;
        }
        let i = self.next_source.get();
        self.next_source.set(i.wrapping_add(1));
        Some(ips[i % ips.len()])
    }
}

/// A message of ours not acked yet.
#[derive(Debug)]
pub struct Pending {
    /// Visitors: the message number (id `m<n>`). Agents: the number of the
    /// visitor message this replies to.
    pub n: u64,
    /// Agents: the reply's id and conversation (index in `convs`).
    pub reply: Option<(Box<str>, u32)>,
    /// When it was scheduled ([`now_ns`] time).
    pub sched_ns: u64,
    /// Written at least once.
    pub sent: bool,
}

/// A client's state that survives reconnections.
pub struct ClientState<S> {
    /// The current connection got its welcome.
    pub online: bool,
    /// Bytes to write on the current connection.
    pub out: Vec<u8>,
    /// Conversation id → index in `convs`.
    pub conv_index: HashMap<Box<str>, u32>,
    /// Every conversation seen, with what this client knows of it.
    pub convs: Vec<(Box<str>, ConvView)>,
    /// Conversations whose cursor may have moved since the last `recv`.
    pub dirty: Vec<u32>,
    /// Unacked messages, oldest first.
    pub pending: VecDeque<Pending>,
    /// Visitors: the next message number.
    pub next_msg: u64,
    /// Visitors: an `assigned` entry arrived.
    pub assigned: bool,
    /// Ping-pong visitors: the number of the message whose reply is awaited.
    pub awaiting_reply: Option<u64>,
    /// When the current connection attempt was scheduled.
    pub connect_sched_ns: u64,
    /// The protocol's per-connection state.
    pub session: S,
}

/// A simulated visitor or agent.
pub struct Client<P: Protocol> {
    /// Visitor or agent.
    pub role: Role,
    /// Index among the clients of its role (all threads).
    pub index: u32,
    /// Our id (`sub`): known up front with a signed token, else from the
    /// welcome.
    pub sub: RefCell<String>,
    /// The token to say hello with (anonymous visitors get one from the
    /// gateway in their first welcome and keep it).
    pub token: RefCell<Option<String>>,
    /// Everything else.
    pub st: RefCell<ClientState<P::Session>>,
    /// Wakes the connection's task.
    pub wake: Notify,
    /// Churn: end the connection now.
    pub kill: Cell<bool>,
}

/// How a connection ended.
#[derive(Debug)]
pub enum End {
    /// The run is over.
    Stopped,
    /// Churn asked for it.
    Killed,
    /// The server sent a close frame (with this code).
    Closed(Option<u16>),
    /// EOF without a close frame.
    Eof,
    /// A socket error.
    Io(std::io::Error),
    /// The server broke RFC 6455.
    Frame(ws::FrameError),
    /// No welcome within the connect timeout after the upgrade.
    NoWelcome,
}

impl<P: Protocol> Client<P> {
    /// A client; `token` and `sub` are known up front unless anonymous.
    pub fn new(role: Role, index: u32, sub: String, token: Option<String>) -> Self {
        Client {
            role,
            index,
            sub: RefCell::new(sub),
            token: RefCell::new(token),
            st: RefCell::new(ClientState {
                online: false,
                out: Vec::new(),
                conv_index: HashMap::new(),
                convs: Vec::new(),
                dirty: Vec::new(),
                pending: VecDeque::new(),
                next_msg: 1,
                assigned: false,
                awaiting_reply: None,
                connect_sched_ns: 0,
                session: P::Session::default(),
            }),
            wake: Notify::new(),
            kill: Cell::new(false),
        }
    }

    fn side(&self) -> Side {
        match self.role {
            Role::Visitor => Side::Visitor,
            Role::Agent => Side::Agent,
        }
    }

    /// Index of conversation `conv`, added if new.
    fn conv(st: &mut ClientState<P::Session>, conv: &str, track_ids: bool) -> u32 {
        if let Some(&i) = st.conv_index.get(conv) {
            return i;
        }
        let i = st.convs.len() as u32;
        st.convs.push((conv.into(), ConvView::new(track_ids)));
        st.conv_index.insert(conv.into(), i);
        i
    }

    /// Writes message `p` into the outgoing bytes.
    fn write_message(&self, ctx: &ThreadCtx<P>, st: &mut ClientState<P::Session>, p: usize) {
        let mut text = ctx.text.borrow_mut();
        make_text(&mut text, st.pending[p].sched_ns, ctx.cfg.text_bytes);
        let ClientState {
            out,
            pending,
            convs,
            session,
            ..
        } = st;
        let msg = &mut pending[p];
        let mut outbox = Outbox { buf: out };
        match &msg.reply {
            None => {
                let mut id = itoa_buf();
                let _ = write!(id, "m{}", msg.n);
                ctx.proto.message(session, None, &id, &text, &mut outbox);
            }
            Some((id, conv)) => {
                let conv = &convs[*conv as usize].0;
                ctx.proto
                    .message(session, Some(conv), id, &text, &mut outbox);
            }
        }
        if msg.sent {
            ctx.tally().resent.add(1);
        } else {
            msg.sent = true;
            ctx.tally().sent.add(1);
        }
    }

    /// Queues a new message scheduled at `sched_ns` (visitors), written at
    /// once if connected, else at the next welcome.
    pub fn send_next(&self, ctx: &ThreadCtx<P>, sched_ns: u64) {
        let mut st = self.st.borrow_mut();
        let n = st.next_msg;
        st.next_msg += 1;
        st.pending.push_back(Pending {
            n,
            reply: None,
            sched_ns,
            sent: false,
        });
        ctx.tally().unacked.add(1);
        if ctx.cfg.ping_pong {
            st.awaiting_reply = Some(n);
        }
        if st.online {
            let p = st.pending.len() - 1;
            self.write_message(ctx, &mut st, p);
            drop(st);
            self.wake.notify();
        }
    }

    /// A new connection is up (not yet welcomed): say hello.
    fn begin(&self, ctx: &ThreadCtx<P>, sched_ns: u64) {
        let mut st = self.st.borrow_mut();
        st.online = false;
        st.out.clear();
        st.connect_sched_ns = sched_ns;
        let token = self.token.borrow();
        let sub = self.sub.borrow();
        let who = Credentials {
            role: self.role,
            tenant: &ctx.cfg.tenant,
            token: token.as_deref(),
            id: &sub,
            index: self.index,
        };
        let ClientState { out, session, .. } = &mut *st;
        *session = P::Session::default();
        ctx.proto.hello(session, &who, &mut Outbox { buf: out });
    }

    /// The connection ended.
    fn finish(&self, ctx: &ThreadCtx<P>) {
        let mut st = self.st.borrow_mut();
        if st.online {
            ctx.tally().open.sub(1);
        }
        st.online = false;
        st.out = Vec::new();
        st.dirty.clear();
    }

    /// Handles one frame; returns `Some(code)` for a close frame.
    fn on_frame(&self, ctx: &ThreadCtx<P>, frame: Frame<'_>) -> Option<Option<u16>> {
        match frame {
            Frame::Ping(payload) => {
                let mut st = self.st.borrow_mut();
                ws::write_frame(&mut st.out, ws::OpCode::Pong, payload, rand_mask());
                None
            }
            Frame::Pong => None,
            Frame::Close(code) => Some(code),
            Frame::Text(_) | Frame::Binary(_) => {
                let inbound = {
                    let mut st = self.st.borrow_mut();
                    let ClientState { session, out, .. } = &mut *st;
                    ctx.proto.decode(session, frame, &mut Outbox { buf: out })
                };
                self.on_inbound(ctx, inbound);
                None
            }
        }
    }

    fn on_inbound(&self, ctx: &ThreadCtx<P>, inbound: Inbound<'_>) {
        let now = now_ns();
        let tally = ctx.tally();
        match inbound {
            Inbound::Welcome {
                id,
                token,
                conversations,
            } => {
                if let Some(token) = token {
                    *self.token.borrow_mut() = Some(token);
                }
                if *self.sub.borrow() != id {
                    *self.sub.borrow_mut() = id;
                }
                let mut st = self.st.borrow_mut();
                for c in &conversations {
                    Self::conv(&mut st, &c.conv, ctx.cfg.track_ids);
                    if self.role == Role::Visitor && c.state == "assigned" && !st.assigned {
                        st.assigned = true;
                        tally.assigned.add(1);
                    }
                }
                for (_, view) in st.convs.iter_mut() {
                    view.reconnected();
                }
                st.dirty = (0..st.convs.len() as u32).collect();
                st.online = true;
                tally.open.add(1);
                tally.connected.add(1);
                let sched = st.connect_sched_ns;
                if sched > 0 {
                    record(&mut ctx.lat.borrow_mut().connect, now.saturating_sub(sched));
                    st.connect_sched_ns = 0;
                }
                ctx.control
                    .last_welcome_ns
                    .fetch_max(now, Ordering::Relaxed);
                for p in 0..st.pending.len() {
                    self.write_message(ctx, &mut st, p);
                }
            }
            Inbound::Ack { id, conv, seq } => {
                let mut st = self.st.borrow_mut();
                let found = find_pending(self.role, &st.pending, &id);
                let Some(p) = found else {
                    drop(st);
                    ctx.error("ack for no message in flight");
                    return;
                };
                let msg = st.pending.remove(p).expect("found");
                tally.unacked.sub(1);
                tally.acked.add(1);
                let window = ctx.control.window();
                if window.contains(msg.sched_ns) {
                    record(
                        &mut ctx.lat.borrow_mut().ack,
                        now.saturating_sub(msg.sched_ns),
                    );
                }
                if window.contains(now) {
                    tally.acked_in_window.add(1);
                }
                let i = Self::conv(&mut st, &conv, ctx.cfg.track_ids);
                st.convs[i as usize].1.acked(seq);
                st.dirty.push(i);
            }
            Inbound::Entry(entry) => self.on_entry(ctx, entry, now),
            Inbound::Error { code, reference } => {
                ctx.error(&format!("error frame: {code}"));
                if let Some(r) = reference {
                    let mut st = self.st.borrow_mut();
                    let p = find_pending(self.role, &st.pending, &r);
                    if let Some(p) = p {
                        // The message failed for good: it is not acked, so
                        // not owed to anyone; forget it.
                        st.pending.remove(p);
                        tally.unacked.sub(1);
                        if ctx.cfg.ping_pong {
                            st.awaiting_reply = None;
                        }
                    }
                }
            }
            Inbound::Other => {}
            Inbound::Malformed(why) => ctx.error(&format!("malformed frame: {why}")),
            Inbound::Batch(all) => {
                for one in all {
                    self.on_inbound(ctx, one);
                }
            }
        }
    }

    fn on_entry(&self, ctx: &ThreadCtx<P>, e: Entry<'_>, now: u64) {
        let tally = ctx.tally();
        let mut st = self.st.borrow_mut();
        let i = Self::conv(&mut st, &e.conv, ctx.cfg.track_ids);
        let own = e.from_role == self.role.as_str()
            && e.from_id.as_deref() == Some(self.sub.borrow().as_str());
        let view = &mut st.convs[i as usize].1;
        if own {
            view.own_entry(e.seq);
            st.dirty.push(i);
            return;
        }
        let chat = e.text.is_some() && matches!(&*e.from_role, "visitor" | "agent");
        let verdict = view.deliver(e.seq);
        let same_id = match (&e.id, &e.from_id) {
            (Some(id), Some(from)) if chat => view.check_id(id_hash(from, id), e.seq),
            _ => true,
        };
        st.dirty.push(i);
        if !same_id {
            tally.duplicated.add(1);
        }
        let fresh = match verdict {
            Delivery::New => true,
            Delivery::Redelivered => {
                tally.redelivered.add(1);
                false
            }
            Delivery::Duplicated => {
                tally.duplicated.add(1);
                false
            }
            Delivery::Reordered { fresh } => {
                tally.reordered.add(1);
                fresh
            }
        };
        if !fresh {
            return;
        }
        if !chat {
            if self.role == Role::Visitor && e.event.as_deref() == Some("assigned") && !st.assigned
            {
                st.assigned = true;
                tally.assigned.add(1);
            }
            return;
        }
        tally.delivered.add(1);
        let window = ctx.control.window();
        if let Some(sched) = e.text.as_deref().and_then(parse_sched) {
            if window.contains(sched) {
                record(&mut ctx.lat.borrow_mut().deliver, now.saturating_sub(sched));
            }
        }
        if window.contains(now) {
            tally.delivered_in_window.add(1);
        }
        let number = e.id.as_deref().and_then(message_number);
        match self.role {
            Role::Agent => {
                // A visitor message: answer a share of them.
                let (Some(n), Some(from)) = (number, e.from_id.as_deref()) else {
                    return;
                };
                if ctx.phase() != Phase::Run {
                    return;
                }
                let answer = ctx.cfg.ping_pong
                    || (ctx.cfg.reply_fraction > 0.0
                        && unit_hash(u64::from(self.index) ^ id_hash(from, ""), n)
                            < ctx.cfg.reply_fraction);
                if !answer {
                    return;
                }
                let id: Box<str> = format!("{from}/{n}").into();
                st.pending.push_back(Pending {
                    n,
                    reply: Some((id, i)),
                    sched_ns: now_ns(),
                    sent: false,
                });
                tally.unacked.add(1);
                if st.online {
                    let p = st.pending.len() - 1;
                    self.write_message(ctx, &mut st, p);
                }
            }
            Role::Visitor => {
                // An agent's reply: in ping-pong, the cue for the next message.
                if ctx.cfg.ping_pong && number.is_some() && number == st.awaiting_reply {
                    st.awaiting_reply = None;
                    drop(st);
                    if ctx.phase() == Phase::Run {
                        self.send_next(ctx, now_ns());
                    }
                }
            }
        }
    }

    /// Queues a `recv` for every conversation whose cursor moved.
    fn flush_receipts(&self, ctx: &ThreadCtx<P>) {
        let mut st = self.st.borrow_mut();
        if st.dirty.is_empty() || !st.online {
            return;
        }
        let mut dirty = std::mem::take(&mut st.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        let ClientState {
            out,
            convs,
            session,
            ..
        } = &mut *st;
        for &i in &dirty {
            let (conv, view) = &mut convs[i as usize];
            if let Some(seq) = view.receipt_due() {
                ctx.proto
                    .receipt(session, conv, seq, &mut Outbox { buf: out });
                ctx.tally().receipts.add(1);
            }
        }
        dirty.clear();
        st.dirty = dirty;
    }

    /// This client's record of its conversations, for the final merge.
    pub fn export(&self) -> Vec<ConvExport> {
        let mut st = self.st.borrow_mut();
        let side = self.side();
        st.convs
            .drain(..)
            .map(|(conv, view)| ConvExport {
                conv,
                side,
                own: view.own,
                held: view.held,
            })
            .collect()
    }
}

/// The position of the message with id `id` among `pending`. A visitor's
/// pending messages are in increasing number order (binary search); an
/// agent's replies are looked for from the oldest, which is where acks
/// usually point.
fn find_pending(role: Role, pending: &VecDeque<Pending>, id: &str) -> Option<usize> {
    match role {
        Role::Visitor => {
            let n: u64 = id.strip_prefix('m')?.parse().ok()?;
            pending.binary_search_by_key(&n, |p| p.n).ok()
        }
        Role::Agent => pending
            .iter()
            .position(|p| p.reply.as_ref().is_some_and(|(rid, _)| **rid == *id)),
    }
}

/// A `String` with room for a short id.
fn itoa_buf() -> String {
    String::with_capacity(24)
}

/// The text of a message scheduled at `sched_ns`: the time in decimal, a
/// space, then `x` up to `bytes` bytes.
pub fn make_text(buf: &mut String, sched_ns: u64, bytes: usize) {
    buf.clear();
    let _ = write!(buf, "{sched_ns} ");
    while buf.len() < bytes {
        buf.push('x');
    }
}

/// The scheduled time a message text carries.
pub fn parse_sched(text: &str) -> Option<u64> {
    text.split(' ').next()?.parse().ok()
}

/// The number in a message id: `m17` (visitor) or `<visitor>/17` (reply).
pub fn message_number(id: &str) -> Option<u64> {
    match id.rsplit_once('/') {
        Some((_, n)) => n.parse().ok(),
        None => id.strip_prefix('m')?.parse().ok(),
    }
}

/// Drives one open connection until it ends.
struct Session<'a, P: Protocol> {
    /// The thread.
    ctx: &'a ThreadCtx<P>,
    /// The client.
    client: &'a Client<P>,
    /// The socket.
    stream: &'a mut TcpStream,
    /// The frame decoder.
    decoder: &'a mut Decoder,
    /// Bytes of `client.st.out` already written.
    written: usize,
    /// The last write found the socket full (glommio will wake us).
    write_blocked: bool,
    /// Fires if the welcome does not come in time.
    welcome_deadline: Option<Timer>,
}

impl<P: Protocol> Session<'_, P> {
    /// Writes queued bytes until done or the socket is full.
    fn write(&mut self, cx: &mut Context<'_>) -> Result<(), std::io::Error> {
        self.write_blocked = false;
        let mut st = self.client.st.borrow_mut();
        while self.written < st.out.len() {
            match Pin::new(&mut *self.stream).poll_write(cx, &st.out[self.written..]) {
                Poll::Ready(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => self.written += n,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {
                    self.write_blocked = true;
                    return Ok(());
                }
            }
        }
        self.written = 0;
        if st.out.capacity() > KEEP_OUT_BYTES {
            st.out = Vec::new();
        } else {
            st.out.clear();
        }
        Ok(())
    }

    /// Feeds bytes to the decoder and the client.
    fn feed(
        &mut self,
        bytes: &[u8],
        close: &mut Option<Option<u16>>,
    ) -> Result<(), ws::FrameError> {
        let (client, ctx) = (self.client, self.ctx);
        self.decoder.feed(bytes, &mut |frame| {
            if close.is_none() {
                if let Some(code) = client.on_frame(ctx, frame) {
                    *close = Some(code);
                }
            }
        })
    }
}

impl<P: Protocol> Future for Session<'_, P> {
    type Output = End;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<End> {
        let this = self.get_mut();
        loop {
            if this.client.kill.get() {
                return Poll::Ready(End::Killed);
            }
            if this.ctx.phase() >= Phase::Done {
                return Poll::Ready(End::Stopped);
            }
            if let Some(deadline) = this.welcome_deadline.as_mut() {
                if this.client.st.borrow().online {
                    this.welcome_deadline = None;
                } else if Pin::new(deadline).poll(cx).is_ready() {
                    return Poll::Ready(End::NoWelcome);
                }
            }
            if let Err(e) = this.write(cx) {
                return Poll::Ready(End::Io(e));
            }
            let mut close = None;
            let mut more = false;
            for round in 0..=READ_BUDGET {
                if round == READ_BUDGET {
                    more = true;
                    break;
                }
                let ctx = this.ctx;
                let mut scratch = ctx.scratch.borrow_mut();
                match Pin::new(&mut *this.stream).poll_read(cx, &mut scratch[..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(End::Eof),
                    Poll::Ready(Ok(n)) => {
                        if let Err(e) = this.feed(&scratch[..n], &mut close) {
                            return Poll::Ready(End::Frame(e));
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(End::Io(e)),
                    Poll::Pending => break,
                }
                if close.is_some() {
                    break;
                }
            }
            if let Some(code) = close {
                return Poll::Ready(End::Closed(code));
            }
            this.client.flush_receipts(this.ctx);
            let queued = this.client.st.borrow().out.len() > this.written;
            if queued && !this.write_blocked {
                continue;
            }
            if this.client.wake.poll_notified(cx).is_ready() {
                continue;
            }
            if more {
                cx.waker().wake_by_ref();
            }
            return Poll::Pending;
        }
    }
}

/// Makes closing the socket send a reset (`SO_LINGER` 0): no TIME_WAIT.
fn abort_on_close(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on our own socket with a properly sized struct.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Backoff before reconnection attempt `attempt` (0-based): 50 ms doubling
/// up to `max`, with jitter.
fn backoff(attempt: u32, max: Duration) -> Duration {
    let base = Duration::from_millis(50).saturating_mul(1 << attempt.min(10));
    let d = base.min(max);
    d / 2 + Duration::from_nanos(rand_below(d.as_nanos() as u64 / 2 + 1))
}

/// The client's task: connect, say hello, run the session, reconnect.
/// `sched_ns` is when the first connection is scheduled.
pub async fn life<P: Protocol>(ctx: Rc<ThreadCtx<P>>, client: Rc<Client<P>>, sched_ns: u64) {
    let cfg = ctx.cfg.clone();
    let mut attempt: u32 = 0;
    let mut sched = sched_ns;
    loop {
        if ctx.phase() >= Phase::Done {
            return;
        }
        record(
            &mut ctx.lat.borrow_mut().lag,
            now_ns().saturating_sub(sched),
        );
        let opened = net::open(
            &cfg.target,
            ctx.source(),
            ctx.proto.subprotocol(),
            cfg.connect_timeout,
        )
        .await;
        let opened = match opened {
            Ok(o) => o,
            Err(e) => {
                ctx.tally().connect_failed.add(1);
                // A refused connection is what a gateway restart looks
                // like: part of a soak, an error anywhere else.
                let restarting = matches!(&e, net::ConnectError::Io(io)
                    if io.raw_os_error() == Some(libc::ECONNREFUSED));
                if ctx.phase() < Phase::Done && !(cfg.expect_drops && restarting) {
                    ctx.error(&e.kind());
                }
                if !cfg.reconnect {
                    return;
                }
                glommio::timer::sleep(backoff(attempt, cfg.backoff_max)).await;
                attempt = attempt.saturating_add(1);
                sched = now_ns();
                continue;
            }
        };
        let mut stream = opened.stream;
        let mut decoder = Decoder::new(ctx.proto.max_message());
        client.begin(&ctx, sched);
        let mut session = Session {
            ctx: &ctx,
            client: &client,
            stream: &mut stream,
            decoder: &mut decoder,
            written: 0,
            write_blocked: false,
            welcome_deadline: Some(Timer::new(cfg.connect_timeout)),
        };
        let mut early_close = None;
        let end = if !opened.leftover.is_empty() {
            match session.feed(&opened.leftover, &mut early_close) {
                Err(e) => End::Frame(e),
                Ok(()) => match early_close {
                    Some(code) => End::Closed(code),
                    None => session.await,
                },
            }
        } else {
            session.await
        };
        let was_online = client.st.borrow().online;
        client.finish(&ctx);
        if was_online {
            attempt = 0;
        }
        let tally = ctx.tally();
        match end {
            End::Stopped if cfg.kind == Kind::Flood => {
                // Thousands of connections end at once: reset them rather
                // than leave each port in TIME_WAIT for a minute, which
                // would starve the next run of ephemeral ports.
                abort_on_close(&stream);
                return;
            }
            End::Stopped => {
                let mut bye = Vec::new();
                ws::write_close(&mut bye, 1000, rand_mask());
                let _ = futures_lite::future::or(
                    async {
                        let _ = stream.write_all(&bye).await;
                    },
                    glommio::timer::sleep(Duration::from_millis(50)),
                )
                .await;
                return;
            }
            End::Killed => {
                client.kill.set(false);
                tally.churned.add(1);
                // Half the time a polite close, half the time a plain drop.
                if rand_below(2) == 0 {
                    let mut bye = Vec::new();
                    ws::write_close(&mut bye, 1000, rand_mask());
                    let _ = futures_lite::future::or(
                        async {
                            let _ = stream.write_all(&bye).await;
                        },
                        glommio::timer::sleep(Duration::from_millis(20)),
                    )
                    .await;
                }
                drop(stream);
                let away = rand_below(cfg.downtime.as_nanos() as u64 + 1);
                glommio::timer::sleep(Duration::from_nanos(away)).await;
            }
            End::Closed(Some(1001)) => {
                tally.going_away.add(1);
                drop(stream);
                glommio::timer::sleep(backoff(attempt, cfg.backoff_max)).await;
                attempt = attempt.saturating_add(1);
            }
            End::Closed(Some(code)) if (4000..5000).contains(&code) => {
                // Refused (4401, 4403...) or thrown out (4429): reconnecting
                // the same way would be refused again.
                ctx.error(&format!("closed by the gateway with {code}"));
                return;
            }
            other => {
                if ctx.phase() >= Phase::Done {
                    return;
                }
                tally.dropped.add(1);
                let what = match &other {
                    End::Closed(code) => format!("closed by the gateway ({code:?})"),
                    End::Eof => "connection dropped (EOF)".into(),
                    End::Io(e) => format!("connection error: {}", e.kind()),
                    End::Frame(e) => format!("protocol violation: {e}"),
                    End::NoWelcome => "no welcome within the connect timeout".into(),
                    _ => unreachable!(),
                };
                if !cfg.expect_drops || matches!(other, End::NoWelcome | End::Frame(_)) {
                    ctx.error(&what);
                }
                drop(stream);
                if !cfg.reconnect {
                    return;
                }
                glommio::timer::sleep(backoff(attempt, cfg.backoff_max)).await;
                attempt = attempt.saturating_add(1);
            }
        }
        sched = now_ns();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_carry_their_scheduled_time_and_have_the_asked_size() {
        let mut s = String::new();
        make_text(&mut s, 123_456_789, 32);
        assert_eq!(s.len(), 32);
        assert_eq!(parse_sched(&s), Some(123_456_789));
        make_text(&mut s, 42, 1);
        assert_eq!(s, "42 ", "never shorter than the time");
    }

    #[test]
    fn message_numbers() {
        assert_eq!(message_number("m17"), Some(17));
        assert_eq!(message_number("lg-abc-v3/17"), Some(17));
        assert_eq!(message_number("x17"), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let max = Duration::from_secs(2);
        assert!(backoff(0, max) <= Duration::from_millis(50));
        assert!(backoff(20, max) <= max);
        assert!(backoff(20, max) >= max / 2);
    }
}
