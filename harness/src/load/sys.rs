//! The thin layer over the system calls the client threads use: epoll (with a nanosecond
//! timeout through `epoll_pwait2`, falling back to `epoll_wait`), nonblocking sockets,
//! source-address spreading and per-thread CPU accounting.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backend_api::syscall;

use super::error::errno_name;
use super::LoadError;

pub(crate) use backend_api::epoll::Epoll;

/// Set once `epoll_pwait2` returned ENOSYS, so the fallback is taken without retrying.
static NO_PWAIT2: AtomicBool = AtomicBool::new(false);

/// Waits on `ep` for events with nanosecond resolution (`epoll_pwait2`, falling back to
/// `epoll_wait` rounded up to milliseconds); `timeout` None waits forever. Returns how
/// many were filled in (0 on `EINTR`).
pub(crate) fn wait(
    ep: &Epoll,
    events: &mut [libc::epoll_event],
    timeout: Option<Duration>,
) -> io::Result<usize> {
    let max = events.len().min(i32::MAX as usize) as libc::c_int;
    if !NO_PWAIT2.load(Ordering::Relaxed) {
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let tsp = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `events` is a live, writable array of `max` epoll_event; `tsp` is null
        // or points to a timespec that outlives the call; a null sigmask is allowed.
        let n = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                ep.as_raw_fd(),
                events.as_mut_ptr(),
                max,
                tsp,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => return Ok(0),
            Some(libc::ENOSYS) => NO_PWAIT2.store(true, Ordering::Relaxed),
            _ => return Err(err),
        }
    }
    // epoll_wait has millisecond resolution: round up so we never wake early and spin.
    let ms = timeout.map_or(-1, |t| {
        let ms = t.as_nanos().div_ceil(1_000_000);
        ms.min(i32::MAX as u128) as libc::c_int
    });
    ep.wait(events, ms)
}

/// A new nonblocking, close-on-exec TCP socket for `target`'s address family.
pub(crate) fn tcp_socket(target: &SocketAddr) -> io::Result<OwnedFd> {
    let domain = if target.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: socket takes no pointers.
    let fd = unsafe {
        syscall!(socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0
        ))
    }?;
    // SAFETY: socket just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_int_opt(fd: RawFd, level: libc::c_int, opt: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: the option value points at `v`, a live c_int, with its size; the kernel copies it.
    unsafe {
        syscall!(setsockopt(
            fd,
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ))
    }?;
    Ok(())
}

/// Disables Nagle so pipelined requests leave at once.
pub(crate) fn set_nodelay(fd: RawFd) -> io::Result<()> {
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
}

/// Binds `fd` to `ip` without choosing a port yet (`IP_BIND_ADDRESS_NO_PORT`): the port is
/// picked at connect time for the full 4-tuple, so each source address has its own
/// ephemeral port range.
pub(crate) fn bind_source(fd: RawFd, ip: Ipv4Addr) -> io::Result<()> {
    set_int_opt(fd, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1)?;
    let addr = socket2::SockAddr::from(SocketAddr::from((ip, 0)));
    // SAFETY: `addr` is a live socket address and `addr.len()` its true length; the kernel copies it.
    unsafe { syscall!(bind(fd, addr.as_ptr().cast(), addr.len())) }?;
    Ok(())
}

/// Starts a nonblocking connect. `Ok(true)`: connected already; `Ok(false)`: in progress.
pub(crate) fn connect(fd: RawFd, target: &SocketAddr) -> io::Result<bool> {
    let addr = socket2::SockAddr::from(*target);
    // SAFETY: `addr` is a live socket address and `addr.len()` its true length; the kernel copies it.
    match unsafe { syscall!(connect(fd, addr.as_ptr().cast(), addr.len())) } {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The pending error of a socket (`SO_ERROR`), 0 if none.
pub(crate) fn socket_error(fd: RawFd) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are live and sized for a c_int option; the kernel writes both.
    unsafe {
        syscall!(getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut v as *mut libc::c_int).cast(),
            &mut len
        ))
    }?;
    Ok(v)
}

/// `read(2)` into `buf`.
#[inline]
pub(crate) fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe `buf`, writable and exclusively borrowed for the call.
    unsafe { syscall!(read(fd, buf.as_mut_ptr().cast(), buf.len())) }.map(|n| n as usize)
}

/// `write(2)` from `buf`.
#[inline]
pub(crate) fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe `buf`, readable for the duration of the call.
    unsafe { syscall!(write(fd, buf.as_ptr().cast(), buf.len())) }.map(|n| n as usize)
}

/// CPU time and context switches of the calling thread.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ThreadCpu {
    pub user_ns: u64,
    pub system_ns: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
}

/// Reads the calling thread's `getrusage(RUSAGE_THREAD)`.
pub(crate) fn thread_cpu() -> ThreadCpu {
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return ThreadCpu::default();
    }
    let ns = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1_000;
    ThreadCpu {
        user_ns: ns(ru.ru_utime),
        system_ns: ns(ru.ru_stime),
        voluntary_switches: ru.ru_nvcsw as u64,
        involuntary_switches: ru.ru_nivcsw as u64,
    }
}

/// Hands out source addresses across 127.0.0.0/8, skipping `.0` and `.255` host bytes, so
/// that every address gets its own ephemeral port range and 100k+ connections (and their
/// TIME_WAIT remnants) never exhaust ports.
#[derive(Debug, Clone)]
pub(crate) struct SourceSpread {
    next: u32,
}

/// Addresses handed out before the spread wraps: 127.1-254.1-254.1-254.
const SPREAD: u32 = 254 * 254 * 254;

impl SourceSpread {
    /// A spreader for thread `thread` of `threads`, starting in its own slice of the range.
    pub(crate) fn new(thread: usize, threads: usize) -> SourceSpread {
        SourceSpread {
            next: (SPREAD / threads.max(1) as u32) * thread as u32,
        }
    }

    /// The next source address.
    #[inline]
    pub(crate) fn next_addr(&mut self) -> Ipv4Addr {
        let i = self.next % SPREAD;
        self.next = self.next.wrapping_add(1);
        let a = (i % 254 + 1) as u8;
        let b = ((i / 254) % 254 + 1) as u8;
        let c = (i / (254 * 254) + 1) as u8;
        Ipv4Addr::new(127, c, b, a)
    }
}

/// Connects once to `target` with a deadline and closes again, turning failure into an
/// error that says what to check: the run never starts against a dead target.
pub(crate) fn preflight(target: &SocketAddr, timeout: Duration) -> Result<(), LoadError> {
    let fail = |reason: String| LoadError::Unreachable {
        target: *target,
        reason,
    };
    let describe = |e: &io::Error| {
        let name = e.raw_os_error().map(errno_name).unwrap_or_default();
        let hint = match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => "nothing listens there; start the server or fix --target",
            Some(libc::ENETUNREACH | libc::EHOSTUNREACH) => "no route to that address",
            Some(libc::EADDRNOTAVAIL) => "that address cannot be used as a destination",
            _ => "check --target",
        };
        format!("{e} ({name}): {hint}")
    };
    let sock = tcp_socket(target).map_err(|e| fail(describe(&e)))?;
    let fd = sock.as_raw_fd();
    if connect(fd, target).map_err(|e| fail(describe(&e)))? {
        return Ok(());
    }
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms = left.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: `pfd` is a live pollfd for the call (count 1); the kernel writes only revents.
        match unsafe { syscall!(poll(&mut pfd, 1, ms)) } {
            Ok(0) => {
                return Err(fail(format!(
                    "no answer within {} ms (connect timed out, ETIMEDOUT); check the address, \
                     the port and any firewall",
                    timeout.as_millis()
                )))
            }
            Ok(_) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(fail(describe(&e))),
        }
    }
    match socket_error(fd) {
        Ok(0) => Ok(()),
        Ok(errno) => Err(fail(describe(&io::Error::from_raw_os_error(errno)))),
        Err(e) => Err(fail(describe(&e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_stays_in_loopback_and_skips_edges() {
        let mut s = SourceSpread::new(0, 1);
        let first = s.next_addr();
        assert_eq!(first, Ipv4Addr::new(127, 1, 1, 1));
        for _ in 0..100_000 {
            let a = s.next_addr().octets();
            assert_eq!(a[0], 127);
            assert!(a[1..].iter().all(|&o| o != 0 && o != 255), "{a:?}");
        }
        let mut t = SourceSpread::new(1, 2);
        assert_ne!(t.next_addr(), first);
    }
}
