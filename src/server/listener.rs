//! The listening sockets: one per shard on the same port (`SO_REUSEPORT`).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::Duration;

use glommio::net::TcpListener;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::shard::Shard;

/// Pending connections the kernel may queue per shard. A flash sale opens
/// tens of thousands of connections a second; the kernel caps this at
/// `net.core.somaxconn` (see `scripts/tune.sh`).
pub const BACKLOG: i32 = 16384;

fn socket_for(addr: SocketAddr) -> io::Result<Socket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    Ok(socket)
}

/// Resolves `addr` (port 0 picks a free port) and holds it with a bound,
/// non-listening `SO_REUSEPORT` socket until every shard has bound it.
/// A socket that does not listen receives no connections.
pub fn reserve(addr: SocketAddr) -> io::Result<(Socket, SocketAddr)> {
    let socket = socket_for(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("socket for {addr}: {e}")))?;
    socket
        .bind(&SockAddr::from(addr))
        .map_err(|e| io::Error::new(e.kind(), format!("binding {addr}: {e}")))?;
    let bound = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("listener has no IP address"))?;
    Ok((socket, bound))
}

/// A listening socket on `addr` for the calling shard's executor.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket_for(addr)?;
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(BACKLOG)?;
    // SAFETY: a bound, listening TCP socket whose ownership we hand over.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// Accepts until the shard drains; each connection gets its own task.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            loop {
                shard.phase_changed.listen().await;
                if shard.draining() {
                    return None;
                }
            }
        })
        .await;
        match accepted {
            None => return,
            Some(Ok(stream)) => {
                glommio::spawn_local(super::connection::serve(shard.clone(), stream)).detach();
            }
            Some(Err(e)) => {
                // Out of file descriptors, most likely: back off instead of spinning.
                tracing::warn!(shard = shard.id, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
