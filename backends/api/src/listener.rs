//! Listener setup shared by every backend: the same options, the same backlog.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// Backlog asked of `listen(2)` unless the user says otherwise.
pub const DEFAULT_BACKLOG: u32 = 4096;

/// Where the kernel caps every listen backlog.
const SOMAXCONN_PATH: &str = "/proc/sys/net/core/somaxconn";

/// The backlog the kernel will actually use: `min(backlog, net.core.somaxconn)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveBacklog {
    /// What was asked.
    pub requested: u32,
    /// `net.core.somaxconn`, when readable.
    pub somaxconn: Option<u32>,
    /// What the kernel uses.
    pub effective: u32,
}

impl EffectiveBacklog {
    /// Computes the effective backlog from the requested one and the running kernel.
    pub fn probe(requested: u32) -> EffectiveBacklog {
        let somaxconn = std::fs::read_to_string(SOMAXCONN_PATH)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        Self::from_parts(requested, somaxconn)
    }

    /// Computes the effective backlog from explicit inputs.
    pub fn from_parts(requested: u32, somaxconn: Option<u32>) -> EffectiveBacklog {
        let effective = somaxconn.map_or(requested, |m| requested.min(m));
        EffectiveBacklog {
            requested,
            somaxconn,
            effective,
        }
    }

    /// A warning with the fix when somaxconn cuts the requested backlog.
    pub fn warning(&self) -> Option<String> {
        (self.effective < self.requested).then(|| {
            format!(
                "listen backlog {} is cut to {} by net.core.somaxconn; connections beyond it are \
                 dropped in SYN_RECV without the client being told. Fix: sysctl -w net.core.somaxconn={}",
                self.requested, self.effective, self.requested
            )
        })
    }
}

/// Binds one shard's listener: nonblocking, close-on-exec, `SO_REUSEADDR` and
/// `SO_REUSEPORT` (so every shard binds the same port and the kernel spreads connections),
/// listening with `backlog`.
///
/// A port that another process already serves is refused, even when that process set
/// `SO_REUSEPORT` too: otherwise a second server would start and silently take part of the
/// connections. The first listener on a port is therefore bound and listening *without*
/// `SO_REUSEPORT` (the kernel lets only one such listener exist, so two servers racing for
/// the port cannot both win) and sets it only afterwards, so that this process's further
/// shards can join it. A bind that finds the port taken joins it only when this process
/// holds a `SO_REUSEPORT` listener on exactly that address.
pub fn bind_shard_listener(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let backlog = backlog.min(i32::MAX as u32) as i32;
    let claim = |reuse_port: bool| -> io::Result<Socket> {
        let socket = Socket::new(
            Domain::for_address(addr),
            Type::STREAM.nonblocking().cloexec(),
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(reuse_port)?;
        socket.bind(&addr.into())?;
        socket.listen(backlog)?;
        Ok(socket)
    };
    let socket = match claim(false) {
        Ok(socket) => {
            socket.set_reuse_port(true)?;
            socket
        }
        Err(e) if e.kind() == io::ErrorKind::AddrInUse && served_by_this_process(addr) => {
            claim(true).map_err(|e| io::Error::new(e.kind(), format!("joining {addr}: {e}")))?
        }
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "port {} on {} is already in use by another process; choose another \
                     with --listen (port 0 picks a free one) or stop that process",
                    addr.port(),
                    addr.ip()
                ),
            ))
        }
        Err(e) => return Err(io::Error::new(e.kind(), format!("binding {addr}: {e}"))),
    };
    Ok(socket.into())
}

/// True when one of this process's descriptors is a `SO_REUSEPORT` listener bound to
/// exactly `addr`: an earlier shard of this server, which later shards join.
fn served_by_this_process(addr: SocketAddr) -> bool {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    fds.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<RawFd>().ok())
        .any(|fd| {
            // SAFETY: the number was listed as open in /proc/self/fd and the borrow lives
            // only for three getsockopt/getsockname queries. Should another thread close it
            // meanwhile, the queries fail (EBADF) or read whatever took the number: they
            // read, never write, either way.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            let s = SockRef::from(&fd);
            s.is_listener().unwrap_or(false)
                && s.reuse_port().unwrap_or(false)
                && s.local_addr().ok().and_then(|a| a.as_socket()) == Some(addr)
        })
}

/// What one nonblocking `accept4` on a shard's listener gave.
#[derive(Debug)]
pub enum Accepted {
    /// A new connection: nonblocking, close-on-exec, not yet [`prepare_accepted`].
    Conn(OwnedFd),
    /// The backlog is empty (`EAGAIN`).
    Empty,
    /// The process or system is out of descriptors or memory ([`is_accept_exhaustion`]):
    /// pause accepting for [`ACCEPT_PAUSE`](crate::ACCEPT_PAUSE).
    Exhausted,
    /// A connection died in the backlog or a signal interrupted the call
    /// ([`is_accept_transient`]): try the next one.
    Retry,
}

/// One nonblocking `accept4(SOCK_NONBLOCK | SOCK_CLOEXEC)` on `listener`, classified, for
/// the readiness backends' accept loops; any other error is returned, naming the call.
pub fn accept_nonblocking(listener: RawFd) -> io::Result<Accepted> {
    // SAFETY: null address and length pointers mean "peer address not wanted"; the caller's
    // listener fd is open for the call.
    let res = unsafe {
        crate::syscall!(accept4(
            listener,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        ))
    };
    match res {
        // SAFETY: accept4 just returned this descriptor and nothing else owns it.
        Ok(fd) => Ok(Accepted::Conn(unsafe { OwnedFd::from_raw_fd(fd) })),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Accepted::Empty),
        Err(e) if is_accept_exhaustion(&e) => Ok(Accepted::Exhausted),
        Err(e) if is_accept_transient(&e) => Ok(Accepted::Retry),
        Err(e) => Err(io::Error::new(e.kind(), format!("accept4 failed: {e}"))),
    }
}

/// Applies the options every accepted connection gets, whichever backend accepted it:
/// `TCP_NODELAY`, so small responses leave at once instead of waiting on Nagle.
pub fn prepare_accepted(fd: &impl AsRawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: the option value points at `one`, a live c_int, with its size; the kernel copies it.
    unsafe {
        crate::syscall!(setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ))
    }?;
    Ok(())
}

/// True for accept errors that mean "out of descriptors or memory": the backend must pause
/// accepting for [`crate::ACCEPT_PAUSE`] instead of retrying at once.
pub fn is_accept_exhaustion(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// True for accept errors that concern only the one connection being accepted (it was
/// reset or aborted while queued, or its network went away; `man 2 accept` asks servers
/// to treat these like EAGAIN): skip it and go on.
pub fn is_accept_transient(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::EPROTO
                | libc::EPERM
                | libc::EINTR
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn somaxconn_cuts_backlog_with_a_fix() {
        let b = EffectiveBacklog::from_parts(4096, Some(128));
        assert_eq!(b.effective, 128);
        let w = b.warning().unwrap();
        assert!(w.contains("sysctl -w net.core.somaxconn=4096"), "{w}");
        assert_eq!(
            EffectiveBacklog::from_parts(100, Some(4096)).warning(),
            None
        );
        assert_eq!(EffectiveBacklog::from_parts(100, None).effective, 100);
    }

    #[test]
    fn shards_share_a_port_and_a_foreign_bind_names_it() {
        let a = bind_shard_listener("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = a.local_addr().unwrap();
        let b = bind_shard_listener(addr, 16).unwrap();
        // Both shards are in the port's SO_REUSEPORT group.
        assert!(SockRef::from(&a).reuse_port().unwrap());
        assert!(SockRef::from(&b).reuse_port().unwrap());
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = bind_shard_listener(plain.local_addr().unwrap(), 16).unwrap_err();
        let port = plain.local_addr().unwrap().port().to_string();
        let msg = err.to_string();
        assert!(
            msg.contains(&port) && msg.contains("another process"),
            "{msg}"
        );
    }

    #[test]
    fn a_claimed_port_refuses_a_second_claimant() {
        // The kernel behaviour the claim relies on: a listener that set SO_REUSEPORT only
        // after listen(2) still refuses a newcomer that binds and listens without it, which
        // is what a second server process does first.
        let a = bind_shard_listener("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = a.local_addr().unwrap();
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_reuse_address(true).unwrap();
        let taken = s.bind(&addr.into()).and_then(|()| s.listen(16));
        assert_eq!(
            taken.map_err(|e| e.kind()),
            Err(io::ErrorKind::AddrInUse),
            "a second claimant got {addr}"
        );
        // Once the shards are gone, the port is free again for a new server.
        drop(a);
        drop(s);
        let again = bind_shard_listener(addr, 16).unwrap();
        assert_eq!(again.local_addr().unwrap(), addr);
    }
}
