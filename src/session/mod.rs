//! A connection's protocol session: hello, identity, commands, outbound frames.
//!
//! [`Conn`] is what the rest of the shard knows of a connection: its
//! identity once it said hello, and its outbound queue of ready frames
//! (`Bytes`, shared with every other recipient). The socket itself belongs
//! to the connection task in `server::connection`, which reads frames,
//! hands their text to `Shard::on_text`, and writes the outbound queue.
//!
//! Until its `welcome` is sent, a connection buffers everything addressed
//! to it: the welcome must come first, and it is only complete when every
//! conversation it lists has reported its summary (from whichever shards
//! own them). The replays that come with those summaries, and any live
//! frames that arrive meanwhile, follow the welcome in arrival order, which
//! keeps each conversation's entries in seq order.

pub mod commands;
pub mod hello;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use shards::notify::Notify;

use crate::ids::{ConvId, Participant};
use crate::metrics::add;
use crate::protocol::server::{self, ConvSummary};
use crate::shard::envelope::{Envelope, VisitorProfile};
use crate::shard::Shard;
use crate::tenants::Tenant;

/// Who a connection is, once it said hello.
pub struct Session {
    /// Its tenant.
    pub tenant: Arc<Tenant>,
    /// Its role and id.
    pub who: Participant,
    /// Display name from the token.
    pub name: Option<Arc<str>>,
    /// A visitor's routing attributes (default for agents).
    pub profile: VisitorProfile,
    /// The token the gateway issued (anonymous visitors), for the welcome.
    pub issued_token: Option<String>,
    /// Message rate limiter.
    pub rate: TokenBucket,
    /// Budget for every other frame, and for malformed ones.
    pub frames: TokenBucket,
}

/// Where a connection is in the protocol.
pub enum SessionState {
    /// Upgraded, waiting for `hello`.
    AwaitingHello,
    /// Said hello.
    Active(Box<Session>),
    /// Closing: nothing more is read.
    Closing,
}

/// A `welcome` being put together.
#[derive(Default)]
struct WelcomeAssembly {
    /// The conversations the welcome lists, once known.
    listed: Option<Vec<ConvId>>,
    /// Summaries received so far (`None`: no longer the caller's).
    summaries: HashMap<ConvId, Option<ConvSummary>>,
    /// Everything addressed to the connection meanwhile, in arrival order.
    held: Vec<Bytes>,
}

/// Frames waiting to be written.
#[derive(Default)]
struct Outbound {
    /// Ready frames, in order.
    frames: VecDeque<Bytes>,
    /// Their total size.
    bytes: usize,
    /// The welcome being assembled, if any: frames are held there until it is sent.
    welcome: Option<WelcomeAssembly>,
}

/// A WebSocket connection, as its shard sees it.
pub struct Conn {
    /// Its id on this shard.
    pub id: u64,
    /// The shard that owns it.
    pub shard: usize,
    /// The peer's address, for logs and per-IP limits.
    pub peer: SocketAddr,
    /// The upgrade request's `Origin`, checked against the tenant at hello.
    pub origin: Option<Box<str>>,
    /// Protocol state.
    pub state: RefCell<SessionState>,
    /// Outbound queue.
    out: RefCell<Outbound>,
    /// Wakes the connection task: frames to write, or a close requested.
    pub wake: Notify,
    /// A close the connection task must carry out: (code, reason).
    pub close_request: Cell<Option<(u16, &'static str)>>,
    /// Our close frame is queued: no data frame may follow it (RFC 6455,
    /// section 5.5.1), so later frames are dropped.
    pub close_queued: Cell<bool>,
    /// Drop without a close frame (the peer is not reading).
    pub abort: Cell<bool>,
    /// When the connection was upgraded.
    pub since: Instant,
    /// Replays waiting for this connection to take in their last chunk.
    pub replay_credits: RefCell<Vec<crate::shard::envelope::ReplayTicket>>,
    /// When bytes last arrived from the peer (idle detection).
    pub last_read: Cell<Instant>,
    /// A ping was sent for the current silence.
    pub pinged: Cell<bool>,
}

impl Conn {
    /// A freshly upgraded connection.
    pub fn new(id: u64, shard: usize, peer: SocketAddr, origin: Option<Box<str>>) -> Self {
        Conn {
            id,
            shard,
            peer,
            origin,
            state: RefCell::new(SessionState::AwaitingHello),
            out: RefCell::new(Outbound::default()),
            wake: Notify::new(),
            close_request: Cell::new(None),
            close_queued: Cell::new(false),
            abort: Cell::new(false),
            since: Instant::now(),
            replay_credits: RefCell::new(Vec::new()),
            last_read: Cell::new(Instant::now()),
            pinged: Cell::new(false),
        }
    }

    /// Queues frames (held back while a welcome is being assembled).
    /// Returns the bytes now queued.
    pub fn push(&self, frames: impl IntoIterator<Item = Bytes>) -> usize {
        let mut out = self.out.borrow_mut();
        let out = &mut *out;
        if self.close_queued.get() {
            return out.bytes;
        }
        if let Some(welcome) = &mut out.welcome {
            welcome.held.extend(frames);
            return out.bytes;
        }
        for frame in frames {
            out.bytes += frame.len();
            out.frames.push_back(frame);
        }
        let bytes = out.bytes;
        self.wake.notify();
        bytes
    }

    /// Queues a control frame (pong, close) now, ahead of a welcome still
    /// being assembled: control frames are not part of the session's order.
    pub fn push_control(&self, frame: Bytes) {
        let mut out = self.out.borrow_mut();
        out.bytes += frame.len();
        out.frames.push_back(frame);
        drop(out);
        self.wake.notify();
    }

    /// Is a welcome still being assembled?
    pub fn welcome_pending(&self) -> bool {
        self.out.borrow().welcome.is_some()
    }

    /// Starts holding frames until the welcome is complete.
    pub fn begin_welcome(&self) {
        self.out.borrow_mut().welcome = Some(WelcomeAssembly::default());
    }

    /// Asks the connection task to close with `code`.
    pub fn request_close(&self, code: u16, reason: &'static str) {
        if self.close_request.get().is_none() {
            self.close_request.set(Some((code, reason)));
        }
        self.wake.notify();
    }

    /// Is anything waiting to be written?
    pub fn has_output(&self) -> bool {
        !self.out.borrow().frames.is_empty()
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.out.borrow().bytes
    }

    /// Runs `write` over the queued frames (the first one from `offset`),
    /// which returns how many bytes it wrote; removes what was written.
    /// Returns (bytes written, new offset into the first frame).
    pub fn drain_output(
        &self,
        offset: usize,
        write: impl FnOnce(&VecDeque<Bytes>, usize) -> usize,
    ) -> usize {
        let mut out = self.out.borrow_mut();
        let written = write(&out.frames, offset);
        let mut left = written + offset;
        while let Some(front) = out.frames.front() {
            if left >= front.len() {
                left -= front.len();
                out.bytes -= front.len();
                out.frames.pop_front();
            } else {
                break;
            }
        }
        left
    }

    /// The identity, if the connection said hello.
    pub fn who(&self) -> Option<(Arc<Tenant>, Participant)> {
        match &*self.state.borrow() {
            SessionState::Active(s) => Some((s.tenant.clone(), s.who.clone())),
            _ => None,
        }
    }
}

/// A token bucket: `rate` per second, bursts up to `burst`.
pub struct TokenBucket {
    /// Tokens per second; 0 disables the limit.
    rate: f64,
    /// Bucket size.
    burst: f64,
    /// Tokens now.
    tokens: f64,
    /// Last refill.
    last: Instant,
    /// Refusals in a row, for the 4429 close.
    pub strikes: u32,
}

impl TokenBucket {
    /// A full bucket for `per_second` messages, bursts of twice that.
    pub fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second);
        TokenBucket {
            rate,
            burst: rate * 2.0,
            tokens: rate * 2.0,
            last: Instant::now(),
            strikes: 0,
        }
    }

    /// A bucket of `per_second` tokens a second, bursts of twice that.
    pub fn with_rate(per_second: f64) -> Self {
        TokenBucket {
            rate: per_second,
            burst: per_second * 2.0,
            tokens: per_second * 2.0,
            last: Instant::now(),
            strikes: 0,
        }
    }

    /// Takes `n` tokens even if that leaves the bucket negative (a cost
    /// charged after the fact, such as for a malformed frame).
    pub fn charge(&mut self, n: f64) {
        if self.rate != 0.0 {
            self.tokens -= n;
        }
    }

    /// Takes a token if there is one.
    pub fn take(&mut self) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.strikes = 0;
            true
        } else {
            self.strikes += 1;
            false
        }
    }
}

/// `rate_limited` warnings in a row before the connection closes with 4429.
pub const RATE_LIMIT_STRIKES: u32 = 20;

impl Shard {
    /// Handles an envelope addressed to a connection of this shard.
    pub fn on_conn_envelope(&self, envelope: Envelope) {
        match envelope {
            Envelope::ToConn { conn, frames } => {
                if let Some(c) = self.conn(conn) {
                    self.queue_frames(&c, frames);
                }
            }
            Envelope::Deliver { conns, frame } => {
                for id in conns {
                    if let Some(c) = self.conn(id) {
                        self.queue_frames(&c, [frame.clone()]);
                    }
                }
            }
            Envelope::WelcomeList { conn, convs } => {
                if let Some(c) = self.conn(conn) {
                    if let Some(w) = c.out.borrow_mut().welcome.as_mut() {
                        w.listed = Some(convs);
                    }
                    self.try_finish_welcome(&c);
                }
            }
            Envelope::Snapshot {
                conn,
                conv,
                summary,
                frames,
                credit_from,
            } => {
                if let Some(c) = self.conn(conn) {
                    if let Some(ticket) = credit_from {
                        c.replay_credits.borrow_mut().push(ticket);
                    }
                    let complete = {
                        let mut out = c.out.borrow_mut();
                        match out.welcome.as_mut() {
                            Some(w) => {
                                w.summaries.insert(conv, summary);
                                w.held.extend(frames);
                                true
                            }
                            None => {
                                // The welcome went out already (it timed out): frames as usual.
                                drop(out);
                                self.queue_frames(&c, frames);
                                false
                            }
                        }
                    };
                    if complete {
                        self.try_finish_welcome(&c);
                    }
                    self.grant_replay_credits(&c);
                }
            }
            Envelope::ReplayChunk {
                conn,
                conv: _,
                frames,
                credit_from,
            } => {
                if let Some(c) = self.conn(conn) {
                    c.replay_credits.borrow_mut().push(credit_from);
                    self.queue_frames(&c, frames);
                    self.grant_replay_credits(&c);
                }
            }
            Envelope::CloseConn { conn, code, reason } => {
                if let Some(c) = self.conn(conn) {
                    c.request_close(code, reason);
                }
            }
            _ => unreachable!("not a connection envelope"),
        }
    }

    /// Credits the shards replaying to `conn` once it has written most of
    /// what it was sent (its queue is under half the outbound limit and no
    /// welcome holds frames back): the next chunk may come. Called when a
    /// chunk arrives and after the connection writes.
    pub fn grant_replay_credits(&self, conn: &Conn) {
        if conn.replay_credits.borrow().is_empty()
            || conn.welcome_pending()
            || conn.queued_bytes() > self.settings.limits.outbound_limit_bytes / 2
        {
            return;
        }
        let credits = std::mem::take(&mut *conn.replay_credits.borrow_mut());
        for ticket in credits {
            let envelope = Envelope::ReplayCredit {
                replay: ticket.replay,
            };
            // Through the mesh even to this shard: its local queue runs the
            // handler later, outside whatever borrows the caller holds.
            self.send(ticket.shard, envelope);
        }
    }

    /// The connection with this id, if it is still open.
    pub fn conn(&self, id: u64) -> Option<std::rc::Rc<Conn>> {
        self.conns.borrow().get(&id).cloned()
    }

    /// Queues frames on a connection; drops it if it stopped reading.
    pub fn queue_frames(&self, conn: &Conn, frames: impl IntoIterator<Item = Bytes>) {
        let queued = conn.push(frames);
        if queued > self.settings.limits.outbound_limit_bytes && !conn.abort.get() {
            add(&self.metrics.slow_consumers, 1);
            tracing::info!(conn = conn.id, peer = %conn.peer, queued, "dropping a connection that does not read");
            conn.abort.set(true);
            conn.wake.notify();
        }
    }

    /// Sends the welcome if everything it lists has reported.
    fn try_finish_welcome(&self, conn: &Conn) {
        let mut out = conn.out.borrow_mut();
        let ready = match &out.welcome {
            Some(w) => w
                .listed
                .as_ref()
                .is_some_and(|l| l.iter().all(|c| w.summaries.contains_key(c))),
            None => false,
        };
        if !ready {
            return;
        }
        let welcome = out.welcome.take().expect("checked above");
        drop(out);
        self.send_welcome(conn, welcome);
    }

    /// Sends the welcome now with what has arrived (used when a shard is
    /// too slow to answer: better a partial welcome than none).
    pub fn force_welcome(&self, conn: &Conn) {
        let welcome = conn.out.borrow_mut().welcome.take();
        if let Some(welcome) = welcome {
            tracing::warn!(
                conn = conn.id,
                "welcome sent before every conversation reported"
            );
            self.send_welcome(conn, welcome);
        }
    }

    fn send_welcome(&self, conn: &Conn, mut welcome: WelcomeAssembly) {
        let frame = {
            let state = conn.state.borrow();
            let SessionState::Active(session) = &*state else {
                return;
            };
            let summaries: Vec<ConvSummary> = welcome
                .listed
                .unwrap_or_default()
                .iter()
                .filter_map(|c| welcome.summaries.remove(c).flatten())
                .collect();
            server::welcome(
                session.who.role.as_str(),
                session.who.id.as_str(),
                session.tenant.id.as_str(),
                session.issued_token.as_deref(),
                &summaries,
            )
        };
        add(&self.metrics.frames_out, 1 + welcome.held.len() as u64);
        self.queue_frames(conn, std::iter::once(frame).chain(welcome.held));
    }
}
