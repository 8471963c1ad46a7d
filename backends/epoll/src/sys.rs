//! Thin, safe wrappers over the libc calls this crate makes: the event array, `accept4`,
//! `read` and `send` (the epoll instance itself is `backend_api::epoll`, shared with the
//! load generator). Every `unsafe` pointer argument in the crate is built here.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use backend_api::syscall;

/// Readable (or EOF, or a pending error).
pub(crate) const IN: u32 = libc::EPOLLIN as u32;
/// Writable.
pub(crate) const OUT: u32 = libc::EPOLLOUT as u32;
/// Edge-triggered registration.
pub(crate) const ET: u32 = libc::EPOLLET as u32;
/// Error on the fd; reported whether asked for or not.
pub(crate) const ERR: u32 = libc::EPOLLERR as u32;
/// Hang-up (both directions shut, or reset); reported whether asked for or not.
pub(crate) const HUP: u32 = libc::EPOLLHUP as u32;
/// The peer shut down its writing side (its FIN arrived); reported only if asked for.
pub(crate) const RDHUP: u32 = libc::EPOLLRDHUP as u32;
/// Disable the fd after one event until it is re-armed with `EPOLL_CTL_MOD`.
pub(crate) const ONESHOT: u32 = libc::EPOLLONESHOT as u32;

/// Most events one `epoll_wait` returns, unless a mode sets its own. 256 keeps the array at 3 KiB (12 bytes per event),
/// well inside L1, while a saturated loop still handles many ready fds per syscall; a full
/// batch is simply continued by the next call, which returns at once. Larger arrays (1024
/// in the field notes) buy little: by 256 the per-call cost is already amortised to noise.
pub(crate) const MAX_EVENTS: usize = 256;

pub(crate) use backend_api::epoll::Epoll;

/// The array `epoll_wait` fills, allocated once per shard.
#[derive(Debug)]
pub(crate) struct Events {
    buf: Box<[libc::epoll_event]>,
}

impl Events {
    /// Waits on `epoll` up to `timeout_ms` (-1: forever) and fills this array; returns how
    /// many are ready (0 on `EINTR`).
    #[inline]
    pub(crate) fn wait_on(&mut self, epoll: &Epoll, timeout_ms: i32) -> io::Result<usize> {
        epoll.wait(&mut self.buf, timeout_ms)
    }

    /// Room for `max_events` (at least one).
    pub(crate) fn new(max_events: usize) -> Events {
        Events {
            buf: vec![libc::epoll_event { events: 0, u64: 0 }; max_events.max(1)]
                .into_boxed_slice(),
        }
    }

    /// The `i`th event of the last wait: (event bits, token). Copied out, because the
    /// kernel's struct is packed on x86-64 and its fields must not be borrowed.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> (u32, u64) {
        let ev = self.buf[i];
        (ev.events, ev.u64)
    }
}

/// True when `err` is `EAGAIN`/`EWOULDBLOCK`.
#[inline]
pub(crate) fn would_block(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::EAGAIN)
}

/// `accept4(SOCK_NONBLOCK | SOCK_CLOEXEC)`, retrying `EINTR`.
pub(crate) fn accept(listener: RawFd) -> io::Result<OwnedFd> {
    loop {
        // SAFETY: null address and length pointers are allowed and mean "peer address not
        // wanted"; the listener fd is open for the shard's lifetime.
        match unsafe {
            syscall!(accept4(
                listener,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC
            ))
        } {
            // SAFETY: accept4 just returned this descriptor and nothing else owns it.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// One `read(2)` into `buf`, retrying `EINTR`. `Ok(0)` is end of stream.
#[inline]
pub(crate) fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: the pointer and length describe `buf`, writable and exclusively borrowed
        // for the duration of the call.
        match unsafe { syscall!(read(fd, buf.as_mut_ptr().cast(), buf.len())) } {
            Ok(n) => return Ok(n as usize),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// One `send(2)` of `buf` with `MSG_NOSIGNAL` (a peer that went away yields `EPIPE`, never
/// `SIGPIPE`), retrying `EINTR`.
#[inline]
pub(crate) fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: the pointer and length describe `buf`, readable for the duration of the
        // call.
        match unsafe { syscall!(send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL)) } {
            Ok(n) => return Ok(n as usize),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `shutdown(SHUT_WR)`: sends FIN after everything already written.
pub(crate) fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: no pointers; `fd` is an open socket owned by the caller.
    unsafe { syscall!(shutdown(fd, libc::SHUT_WR)) }?;
    Ok(())
}
