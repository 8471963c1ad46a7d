//! The epoll instance shared by the epoll backends and the load generator: create,
//! register, re-register and wait, with every pointer argument built here.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An epoll instance, closed on drop.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// `epoll_create1(EPOLL_CLOEXEC)`.
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers.
        let fd = unsafe { syscall!(epoll_create1(libc::EPOLL_CLOEXEC)) }?;
        // SAFETY: epoll_create1 just returned this descriptor and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a live, initialised epoll_event for the duration of the call; the
        // kernel copies it and keeps no pointer. Both fds are open (owned by the caller).
        unsafe { syscall!(epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev)) }?;
        Ok(())
    }

    /// Registers `fd` for `events`, reported with `token`.
    #[inline]
    pub fn add(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    /// Replaces the interest of an already registered `fd`. The kernel re-checks readiness,
    /// so a condition that already holds is reported even in edge-triggered mode.
    #[inline]
    pub fn modify(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, token)
    }

    /// `epoll_wait` for up to `timeout_ms` (-1: forever), filling `events`; returns how
    /// many are ready. `EINTR` returns 0: the caller's loop simply goes round again.
    #[inline]
    pub fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
        let max = events.len().min(i32::MAX as usize) as libc::c_int;
        // SAFETY: the pointer and length describe `events`, a live array of initialised
        // epoll_events that the kernel may overwrite entirely; nothing else borrows it.
        match unsafe {
            syscall!(epoll_wait(
                self.fd.as_raw_fd(),
                events.as_mut_ptr(),
                max,
                timeout_ms
            ))
        } {
            Ok(n) => Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_a_readable_fd_with_its_token_and_times_out_otherwise() {
        let ep = Epoll::new().unwrap();
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        ep.add(a.as_raw_fd(), libc::EPOLLIN as u32, 42).unwrap();
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 4];
        assert_eq!(ep.wait(&mut evs, 0).unwrap(), 0, "nothing ready yet");
        std::io::Write::write_all(&mut b, b"x").unwrap();
        assert_eq!(ep.wait(&mut evs, 1000).unwrap(), 1);
        let (bits, token) = (evs[0].events, evs[0].u64);
        assert_eq!(token, 42);
        assert!(bits & libc::EPOLLIN as u32 != 0);
        ep.modify(a.as_raw_fd(), 0, 7).unwrap();
        assert_eq!(ep.wait(&mut evs, 0).unwrap(), 0, "no interest, no event");
    }
}
