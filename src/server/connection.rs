//! One TCP connection: the HTTP request, then the WebSocket session.
//!
//! After the upgrade the connection is driven by `Driver`, a hand-written
//! future that does three things each time it is woken:
//!
//! - **reads** while the socket has data, into the shard's scratch buffer
//!   (shared by all its connections, so an idle connection holds no read
//!   buffer), and feeds the bytes to its WebSocket decoder, whose complete
//!   text messages go straight to the session;
//! - **writes** its outbound queue with one `sendmsg` over up to
//!   [`MAX_IOVECS`] frames, so a burst of frames costs one syscall, and
//!   waits for writability only when the socket's buffer is full;
//! - **closes** when asked: a close frame after whatever is queued, then
//!   the peer's close (or a short linger), then the socket.
//!
//! A panic while handling one frame is caught, counted and logged, and
//! closes that connection only; the shard goes on.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::timer::Timer;

use crate::metrics::{add, gauge_add, HandshakeFailure};
use crate::protocol::close;
use crate::session::{Conn, SessionState};
use crate::shard::Shard;
use crate::websocket::{self, Decoder, Event, Flow};

/// Frames written per `sendmsg`.
pub const MAX_IOVECS: usize = 64;
/// How long to wait for the peer's close frame after sending ours.
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// How long a welcome may wait for slow shards before it goes out partial.
pub const WELCOME_DEADLINE: Duration = Duration::from_secs(10);
/// Reads per wake-up before yielding to other connections.
const READ_BUDGET: usize = 8;

/// Serves one accepted connection to its end.
pub async fn serve(shard: Rc<Shard>, mut stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let _ = stream.set_nodelay(true);
    add(&shard.metrics.connects, 1);
    if !shard.admit(peer.ip()) {
        shard.metrics.handshake_failed(HandshakeFailure::Limit);
        add(&shard.metrics.disconnects, 1);
        let busy = crate::websocket::response(
            503,
            "Service Unavailable",
            "text/plain",
            b"too many connections\n",
            &[("Retry-After", "5")],
        );
        let _ = write_all(&mut stream, &busy).await;
        lingering_close(&mut stream).await;
        return;
    }
    let ip = peer.ip();
    serve_admitted(&shard, stream, peer).await;
    shard.release(ip);
}

/// Serves a socket admitted under the connection caps.
async fn serve_admitted(shard: &Rc<Shard>, mut stream: TcpStream, peer: SocketAddr) {
    gauge_add(&shard.metrics.pending, 1);
    let upgraded = super::http::handshake(shard, &mut stream).await;
    let Some((head, leftover)) = upgraded else {
        gauge_add(&shard.metrics.pending, -1);
        add(&shard.metrics.disconnects, 1);
        return;
    };
    let id = shard.next_conn_id();
    let conn = Rc::new(Conn::new(
        id,
        shard.id,
        peer,
        head.origin.map(String::into_boxed_str),
    ));
    shard.conns.borrow_mut().insert(id, conn.clone());
    if shard.draining() {
        // Accepted before the drain began, upgraded during it: the drain's
        // waves went by without it, so it is told now.
        conn.request_close(close::GOING_AWAY, "gateway shutting down");
    }
    let mut driver = Driver {
        shard: shard.clone(),
        conn: conn.clone(),
        stream,
        decoder: Decoder::new(shard.settings.limits.max_message_bytes),
        offset: 0,
        hello_timer: Some(Timer::new(shard.settings.limits.hello_timeout)),
        welcome_timer: None,
        linger: None,
        close_queued: false,
        peer_gone: false,
        peer_close: None,
    };
    if !leftover.is_empty() {
        let mut leftover = leftover;
        driver.decode(&mut leftover);
    }
    driver.await;
    shard.conns.borrow_mut().remove(&id);
    shard.detach(&conn);
    add(&shard.metrics.disconnects, 1);
}

/// The WebSocket half of a connection, as a future that ends when it closes.
struct Driver {
    /// The shard.
    shard: Rc<Shard>,
    /// The connection's session and outbound queue.
    conn: Rc<Conn>,
    /// The socket.
    stream: TcpStream,
    /// Frame decoder (holds only what a read cut short).
    decoder: Decoder,
    /// Bytes of the first queued frame already written.
    offset: usize,
    /// Fires if no hello came in time.
    hello_timer: Option<Timer>,
    /// Fires if the welcome waits too long for its conversations.
    welcome_timer: Option<Timer>,
    /// Started once our close frame is queued.
    linger: Option<Timer>,
    /// Our close frame is queued.
    close_queued: bool,
    /// The peer closed its side (EOF or error).
    peer_gone: bool,
    /// The peer sent a close frame (with this code, if any).
    peer_close: Option<Option<u16>>,
}

impl Driver {
    /// Feeds received bytes to the decoder and the session.
    fn decode(&mut self, bytes: &mut [u8]) {
        let shard = &self.shard;
        let conn = &self.conn;
        let peer_close = &mut self.peer_close;
        let result = self.decoder.feed(bytes, &mut |event| match event {
            Event::Text(text) => {
                if matches!(&*conn.state.borrow(), SessionState::Closing) || conn.close_request.get().is_some() {
                    // Closing: what the peer still sends is read and dropped.
                    return Flow::Continue;
                }
                if catch_unwind(AssertUnwindSafe(|| shard.on_text(conn, text))).is_err() {
                    add(&shard.metrics.panics, 1);
                    tracing::error!(conn = conn.id, peer = %conn.peer, "panic while handling a frame; closing the connection");
                    conn.request_close(close::INTERNAL, "internal error");
                    return Flow::Stop;
                }
                Flow::Continue
            }
            Event::Binary => {
                conn.request_close(close::UNSUPPORTED_DATA, "binary frames are not supported");
                // Not `Stop`: the decoder would copy the rest of every read
                // into its pending input and decode one frame of it per read,
                // so a client sending binary frames during the close linger
                // grew it without bound. Everything that follows is read and
                // dropped (closing), its binary payloads skipped unbuffered.
                Flow::Continue
            }
            Event::Ping(payload) => {
                // Closing: our close frame may already be queued, and nothing
                // may follow it (RFC 6455 §5.5.1), a pong neither.
                if conn.close_request.get().is_none() {
                    conn.push_control(websocket::pong_frame(payload));
                }
                Flow::Continue
            }
            Event::Pong => Flow::Continue,
            Event::Close(code) => {
                *peer_close = Some(code.map(|(code, _)| code));
                Flow::Stop
            }
        });
        if let Err(violation) = result {
            conn.request_close(violation.close_code(), violation.reason());
        }
        if let Some(code) = self.peer_close {
            // Echo the peer's code (RFC 6455 §5.5.1); 1000 if it sent none.
            self.conn.request_close(code.unwrap_or(close::NORMAL), "");
        }
    }

    /// Reads while data is ready. Returns `true` if it stopped on budget
    /// (more may be ready: the task must be polled again).
    fn poll_reads(&mut self, cx: &mut Context<'_>) -> bool {
        for _ in 0..READ_BUDGET {
            if self.peer_gone || self.peer_close.is_some() {
                return false;
            }
            if self.shard.overloaded() && self.conn.close_request.get().is_none() {
                // Backpressure: leave the bytes in the kernel (and the
                // client's TCP window) until the shard catches up.
                self.shard.wait_for_capacity(cx);
                return false;
            }
            let shard = self.shard.clone();
            let mut scratch = shard.scratch.borrow_mut();
            match Pin::new(&mut self.stream).poll_read(cx, &mut scratch[..]) {
                Poll::Ready(Ok(0)) => self.peer_gone = true,
                Poll::Ready(Ok(n)) => {
                    self.conn.last_read.set(std::time::Instant::now());
                    self.conn.pinged.set(false);
                    self.decode(&mut scratch[..n]);
                }
                Poll::Ready(Err(_)) => {
                    self.peer_gone = true;
                    self.conn.abort.set(true);
                }
                Poll::Pending => return false,
            }
        }
        true
    }

    /// Writes queued frames until done or the socket is full.
    fn poll_writes(&mut self, cx: &mut Context<'_>) {
        let fd = self.stream.as_raw_fd();
        while self.conn.has_output() {
            let mut error = None;
            self.offset = self.conn.drain_output(self.offset, |frames, offset| {
                match send_frames(fd, frames, offset) {
                    Ok(n) => n,
                    Err(e) => {
                        error = Some(e);
                        0
                    }
                }
            });
            match error {
                None => continue,
                Some(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Register for writability (this may also write some bytes).
                    let mut written = None;
                    self.offset = self.conn.drain_output(self.offset, |frames, offset| {
                        let Some(front) = frames.front() else {
                            return 0;
                        };
                        match Pin::new(&mut self.stream).poll_write(cx, &front[offset..]) {
                            Poll::Ready(Ok(n)) => {
                                written = Some(n);
                                n
                            }
                            Poll::Ready(Err(_)) => {
                                written = Some(0);
                                0
                            }
                            Poll::Pending => 0,
                        }
                    });
                    match written {
                        Some(0) => {
                            self.conn.abort.set(true);
                            return;
                        }
                        Some(_) => continue,
                        None => return,
                    }
                }
                Some(_) => {
                    self.peer_gone = true;
                    self.conn.abort.set(true);
                    return;
                }
            }
        }
    }
}

/// One `sendmsg` over the queued frames, the first from `offset`.
fn send_frames(
    fd: i32,
    frames: &std::collections::VecDeque<bytes::Bytes>,
    offset: usize,
) -> io::Result<usize> {
    let mut iov: [libc::iovec; MAX_IOVECS] = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_IOVECS];
    let mut n = 0;
    for (i, frame) in frames.iter().take(MAX_IOVECS).enumerate() {
        let bytes = if i == 0 { &frame[offset..] } else { &frame[..] };
        iov[n] = libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        };
        n += 1;
    }
    // SAFETY: the iovecs point into `frames`, which outlive the call; msghdr
    // is fully initialised; the kernel only reads the buffers.
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = n as _;
        libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            if this.conn.abort.get() {
                return Poll::Ready(());
            }
            // Timers.
            if this.hello_timer.is_some()
                && matches!(&*this.conn.state.borrow(), SessionState::Active(_))
            {
                this.hello_timer = None;
            }
            if let Some(timer) = this.hello_timer.as_mut() {
                if Pin::new(timer).poll(cx).is_ready() {
                    this.hello_timer = None;
                    if matches!(&*this.conn.state.borrow(), SessionState::AwaitingHello) {
                        this.shard
                            .metrics
                            .handshake_failed(HandshakeFailure::HelloTimeout);
                        this.conn
                            .request_close(close::HELLO_TIMEOUT, "no hello in time");
                    }
                }
            }
            if this.welcome_timer.is_none() && this.conn.welcome_pending() {
                this.welcome_timer = Some(Timer::new(WELCOME_DEADLINE));
            }
            if let Some(timer) = this.welcome_timer.as_mut() {
                if !this.conn.welcome_pending() {
                    this.welcome_timer = None;
                } else if Pin::new(timer).poll(cx).is_ready() {
                    this.welcome_timer = None;
                    this.shard.force_welcome(&this.conn);
                }
            }
            // A close was asked for: queue our close frame after what is queued.
            if !this.close_queued {
                if let Some((code, reason)) = this.conn.close_request.get() {
                    this.close_queued = true;
                    this.hello_timer = None;
                    this.conn.push_control(websocket::close_frame(code, reason));
                    this.conn.close_queued.set(true);
                    this.linger = Some(Timer::new(CLOSE_LINGER));
                }
            }
            let more_to_read = if this.close_queued && this.peer_close.is_some() {
                false
            } else {
                this.poll_reads(cx)
            };
            this.poll_writes(cx);
            if !this.conn.replay_credits.borrow().is_empty() {
                this.shard.grant_replay_credits(&this.conn);
            }
            if this.conn.abort.get() {
                return Poll::Ready(());
            }
            if this.close_queued && !this.conn.has_output() {
                // Our close frame is out. Done once the peer closed too, or
                // when the linger runs out.
                if this.peer_close.is_some() || this.peer_gone {
                    return Poll::Ready(());
                }
                if let Some(linger) = this.linger.as_mut() {
                    if Pin::new(linger).poll(cx).is_ready() {
                        return Poll::Ready(());
                    }
                }
            } else if this.peer_gone && !this.close_queued {
                // EOF without a close frame: nothing left to say.
                return Poll::Ready(());
            }
            if this.conn.wake.poll_notified(cx).is_ready() {
                continue;
            }
            if more_to_read {
                cx.waker().wake_by_ref();
            }
            return Poll::Pending;
        }
    }
}

/// Pings connections that have been silent for the idle timeout and drops
/// those silent for twice as long (dead peers, half-open sockets). One task
/// per shard looks at every connection a few times per timeout, instead of
/// a timer per connection re-armed on every read.
pub async fn sweep_idle(shard: Rc<Shard>) {
    let timeout = shard.settings.limits.idle_timeout;
    let period = (timeout / 4).max(Duration::from_millis(250));
    loop {
        glommio::timer::sleep(period).await;
        let now = std::time::Instant::now();
        let mut dropped = 0;
        for conn in shard.conns.borrow().values() {
            let silent = now.saturating_duration_since(conn.last_read.get());
            if silent >= timeout * 2 {
                conn.abort.set(true);
                conn.wake.notify();
                dropped += 1;
            } else if silent >= timeout && !conn.pinged.get() && conn.close_request.get().is_none()
            {
                conn.pinged.set(true);
                conn.push_control(websocket::ping_frame(b""));
            }
        }
        add(&shard.metrics.idle_timeouts, dropped);
    }
}

/// Closes a socket whose request may still be unread without losing the
/// response just written: closing with unread input makes the kernel send a
/// reset, which can destroy the response on the client's side. So: shut
/// our side, read and discard until the client closes, at most briefly.
pub async fn lingering_close(stream: &mut TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write).await;
    let mut sink = [0u8; 512];
    let _ = futures_lite::future::or(
        async {
            while let Ok(n) = stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        },
        glommio::timer::sleep(Duration::from_secs(1)),
    )
    .await;
}

/// Writes all of `bytes` (used for HTTP responses before the upgrade).
pub async fn write_all(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// Reads some bytes (used for the HTTP request before the upgrade).
pub async fn read_some(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    stream.read(buf).await
}
