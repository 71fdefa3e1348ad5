//! Sockets: many source addresses, the file descriptor limit, and opening
//! a WebSocket (TCP connect, upgrade) on glommio.
//!
//! One source address gives about 28,000 connections to one gateway
//! address (the ephemeral port range); 100,000 connections need several.
//! Every `127.0.0.0/8` address is local on Linux, so `--source-ips
//! 127.0.0.1-127.0.0.8` (or `--source-ips 8`) just works on loopback. A
//! socket is bound to its source address before it connects, with
//! `IP_BIND_ADDRESS_NO_PORT` so that the port is chosen at connect time per
//! (source, destination) pair rather than reserved per source at bind time.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use socket2::{Domain, Protocol as SockProtocol, Socket, Type};

use crate::ws::{self, Target, UpgradeError};

/// Parses `--source-ips`: a count (`8`: 127.0.0.1..127.0.0.8), a range
/// (`127.0.0.1-127.0.0.20`) or a comma list of addresses.
pub fn parse_source_ips(spec: &str) -> Result<Vec<IpAddr>, String> {
    let spec = spec.trim();
    if let Ok(count) = spec.parse::<u32>() {
        if count == 0 || count > 65_000 {
            return Err(format!("--source-ips {count}: between 1 and 65000"));
        }
        let base = u32::from(Ipv4Addr::new(127, 0, 0, 1));
        return Ok((0..count)
            .map(|i| IpAddr::V4(Ipv4Addr::from(base + i)))
            .collect());
    }
    let mut ips = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: Ipv4Addr = a.trim().parse().map_err(|_| format!("bad address {a:?}"))?;
            let b: Ipv4Addr = b.trim().parse().map_err(|_| format!("bad address {b:?}"))?;
            let (a, b) = (u32::from(a), u32::from(b));
            if a > b || b - a > 65_000 {
                return Err(format!("bad address range {part:?}"));
            }
            ips.extend((a..=b).map(|x| IpAddr::V4(Ipv4Addr::from(x))));
        } else {
            ips.push(part.parse().map_err(|_| format!("bad address {part:?}"))?);
        }
    }
    if ips.is_empty() {
        return Err("empty --source-ips".into());
    }
    Ok(ips)
}

/// Connections per source address when they are spread automatically.
pub const AUTO_CONNECTIONS_PER_SOURCE: u64 = 1000;

/// The source addresses to use for `connections` connections to `dest`
/// when none were given: on loopback, one `127.0.0.x` per
/// [`AUTO_CONNECTIONS_PER_SOURCE`] connections. The kernel's ephemeral
/// port search in `connect` scans ports in use for the (source,
/// destination) pair, so its cost grows with how many connections share a
/// source address; measured here, with 19,000 connections from one
/// address it took 70% of the generator's CPU and stalled it for seconds.
/// Elsewhere: none (the kernel chooses).
pub fn auto_source_ips(dest: SocketAddr, connections: u64) -> Vec<IpAddr> {
    if !dest.ip().is_loopback() || !dest.is_ipv4() {
        return Vec::new();
    }
    let count = connections
        .div_ceil(AUTO_CONNECTIONS_PER_SOURCE)
        .clamp(1, 250);
    (1..=count as u8)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
        .collect()
}

/// Raises RLIMIT_NOFILE so that `wanted` descriptors fit: the soft limit
/// up to the hard one, and the hard one too when the process may (root,
/// up to `fs.nr_open`). Returns the soft limit in force afterwards.
pub fn raise_fd_limit(wanted: u64) -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur >= wanted {
        return Ok(lim.rlim_cur);
    }
    if lim.rlim_max < wanted {
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(1 << 20);
        let raised = libc::rlimit {
            rlim_cur: wanted.min(nr_open),
            rlim_max: wanted.min(nr_open),
        };
        // SAFETY: setrlimit reads the struct we pass. Failure (not root) is fine.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(raised.rlim_cur);
        }
    }
    lim.rlim_cur = lim.rlim_max.min(wanted.max(lim.rlim_cur));
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim.rlim_cur)
}

/// Why opening a WebSocket failed.
#[derive(Debug)]
pub enum ConnectError {
    /// The TCP connect or an I/O on the socket failed.
    Io(io::Error),
    /// It took longer than the connect timeout.
    Timeout,
    /// The server refused or botched the upgrade.
    Upgrade(UpgradeError),
    /// The server closed the connection during the upgrade.
    Closed,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Io(e) => write!(f, "connect: {e}"),
            ConnectError::Timeout => f.write_str("connect: timed out"),
            ConnectError::Upgrade(e) => write!(f, "upgrade: {e}"),
            ConnectError::Closed => f.write_str("upgrade: connection closed"),
        }
    }
}

impl ConnectError {
    /// A short label for error tallies.
    pub fn kind(&self) -> String {
        match self {
            ConnectError::Io(e) => match e.raw_os_error() {
                Some(libc::ECONNREFUSED) => "connect refused".into(),
                Some(libc::EADDRNOTAVAIL) => "no free port (use --source-ips)".into(),
                Some(libc::EMFILE) | Some(libc::ENFILE) => "out of file descriptors".into(),
                Some(libc::ECONNRESET) => "connection reset".into(),
                _ => format!("io: {}", e.kind()),
            },
            ConnectError::Timeout => "connect timeout".into(),
            ConnectError::Upgrade(UpgradeError::Status(s)) => format!("upgrade refused: HTTP {s}"),
            ConnectError::Upgrade(_) => "bad upgrade response".into(),
            ConnectError::Closed => "closed during upgrade".into(),
        }
    }
}

/// An open WebSocket: the stream and any frame bytes that came with the
/// upgrade response.
pub struct Opened {
    /// The socket, upgraded.
    pub stream: TcpStream,
    /// Bytes after the HTTP response head (the start of the first frames).
    pub leftover: Vec<u8>,
}

/// A non-blocking socket bound to `source` (if any) whose connect to
/// `dest` has been started.
fn start_connect(dest: SocketAddr, source: Option<IpAddr>) -> io::Result<Socket> {
    let domain = if dest.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::STREAM, Some(SockProtocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    if let Some(ip) = source {
        if ip.is_ipv4() {
            let one: libc::c_int = 1;
            // SAFETY: setsockopt with a c_int option value on our own socket.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&dest.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket)
}

/// TCP connect (from `source`), then the WebSocket upgrade, within `timeout`.
///
/// The connect is started non-blocking; the upgrade request is then written
/// through glommio, whose write waits for the socket to become writable,
/// which is when the connect completed (or failed, and the write reports
/// why).
pub async fn open(
    target: &Target,
    source: Option<IpAddr>,
    subprotocol: Option<&str>,
    timeout: Duration,
) -> Result<Opened, ConnectError> {
    let attempt = async {
        let socket = start_connect(target.addr, source).map_err(ConnectError::Io)?;
        // SAFETY: the descriptor comes from `into_raw_fd`, so the stream
        // becomes its only owner. (glommio takes its own socket2 version.)
        let mut stream = unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) };
        let key = tungstenite::handshake::client::generate_key();
        let request = ws::upgrade_request(target, &key, subprotocol);
        stream.write_all(&request).await.map_err(ConnectError::Io)?;
        let mut buf = vec![0u8; 1024];
        let mut filled = 0;
        loop {
            if filled == buf.len() {
                if buf.len() >= 16 * 1024 {
                    return Err(ConnectError::Upgrade(UpgradeError::Malformed));
                }
                buf.resize(buf.len() * 2, 0);
            }
            let n = stream
                .read(&mut buf[filled..])
                .await
                .map_err(ConnectError::Io)?;
            if n == 0 {
                return Err(ConnectError::Closed);
            }
            filled += n;
            if let Some(head) =
                ws::parse_upgrade_response(&buf[..filled], &key).map_err(ConnectError::Upgrade)?
            {
                buf.truncate(filled);
                buf.drain(..head);
                buf.shrink_to_fit();
                return Ok(Opened {
                    stream,
                    leftover: buf,
                });
            }
        }
    };
    futures_lite::future::or(attempt, async {
        glommio::timer::sleep(timeout).await;
        Err(ConnectError::Timeout)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ip_specs() {
        let ips = parse_source_ips("3").unwrap();
        assert_eq!(
            ips,
            vec![
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "127.0.0.2".parse().unwrap(),
                "127.0.0.3".parse().unwrap()
            ]
        );
        assert_eq!(
            parse_source_ips("127.0.0.254-127.0.1.1").unwrap().len(),
            4,
            "ranges cross octets"
        );
        assert_eq!(parse_source_ips("10.0.0.1, 10.0.0.2").unwrap().len(), 2);
        assert!(parse_source_ips("0").is_err());
        assert!(parse_source_ips("127.0.0.9-127.0.0.1").is_err());
        assert!(parse_source_ips("nope").is_err());
    }

    #[test]
    fn sources_are_spread_on_loopback_only() {
        let lo: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(auto_source_ips(lo, 10).len(), 1);
        assert_eq!(auto_source_ips(lo, 19_000).len(), 19);
        assert_eq!(auto_source_ips(lo, 10_000_000).len(), 250);
        assert!(auto_source_ips("10.1.2.3:9".parse().unwrap(), 19_000).is_empty());
    }

    #[test]
    fn the_fd_limit_can_be_raised_to_what_is_allowed() {
        let got = raise_fd_limit(256).unwrap();
        assert!(got >= 256);
    }
}
