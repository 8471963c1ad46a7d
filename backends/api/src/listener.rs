//! Listener setup shared by every backend: the same options, the same backlog.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

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
pub fn bind_shard_listener(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into()).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(
                e.kind(),
                format!(
                    "port {} on {} is already in use by a process without SO_REUSEPORT; \
                     choose another with --listen or stop that process",
                    addr.port(),
                    addr.ip()
                ),
            )
        } else {
            io::Error::new(e.kind(), format!("binding {addr}: {e}"))
        }
    })?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(socket.into())
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
        let _b = bind_shard_listener(addr, 16).unwrap();
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = bind_shard_listener(plain.local_addr().unwrap(), 16).unwrap_err();
        let port = plain.local_addr().unwrap().port().to_string();
        assert!(err.to_string().contains(&port), "{err}");
    }
}
