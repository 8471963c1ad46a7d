//! How every backend ends a connection: one close policy, so that how a server closes is
//! never a difference between I/O strategies.
//!
//! When the session ends a connection ([`Flow::Close`](crate::Flow::Close): keep-alive off,
//! 400, 405, 431) or the peer half-closed and everything it asked for is answered, the
//! backend:
//!
//! 1. flushes the pending output (backpressure still applies: it waits for the socket);
//! 2. shuts down the write side (`shutdown(SHUT_WR)`): the peer sees every response, then
//!    EOF;
//! 3. reads and discards input until EOF, until [`LINGER_TIMEOUT`] has passed since the
//!    shutdown, or until [`LINGER_MAX_DISCARD`] bytes were thrown away;
//! 4. closes.
//!
//! Why: closing a TCP socket whose receive queue holds unread bytes makes the kernel send a
//! reset instead of a FIN, and a reset discards every response still queued for sending
//! (in our send queue and in flight), so a pipelining client that sent a few bytes past its
//! last request loses responses it was owed. nginx's `lingering_close` exists for the same
//! reason. The deadline and the byte budget bound what a peer that never stops sending, or
//! never closes, can hold: a lingering connection costs an idle connection's memory for at
//! most [`LINGER_TIMEOUT`].
//!
//! A backend may skip step 3 when one read finds no input queued (`EAGAIN`,
//! [`discard_queued`]) and it closes at once: then no reset can follow (the close sends
//! the FIN, so step 2 goes too). poll, tokio, glommio and blocking do, as epoll does, so
//! that the common close costs one read rather than a linger. If the peer's EOF arrived already, steps 2-3
//! are moot and the socket closes after the flush.
//!
//! [`Linger`] is the bookkeeping of step 3; each event-driven backend drives the reads its
//! own way. [`shutdown_write`] is step 2, and [`linger_blocking`] steps 2-3 for a blocking
//! socket (thread per connection).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

/// Longest a connection lingers (discarding input) after its write side was shut down.
pub const LINGER_TIMEOUT: Duration = Duration::from_secs(2);

/// Most input bytes a lingering connection discards before it is closed anyway.
pub const LINGER_MAX_DISCARD: u64 = 4 * 1024 * 1024;

/// What the owner of a lingering connection does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LingerStep {
    /// Keep discarding: the peer has not closed, the deadline and budget are not reached.
    Continue,
    /// Close now: EOF, the deadline passed, or the discard budget is spent.
    Close,
}

/// Step 3 of the close policy for one connection: since when it lingers, what it threw away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linger {
    deadline: Instant,
    discarded: u64,
}

impl Linger {
    /// Starts lingering at `now`, right after `shutdown(SHUT_WR)`.
    pub fn start(now: Instant) -> Linger {
        Linger {
            deadline: now + LINGER_TIMEOUT,
            discarded: 0,
        }
    }

    /// When the connection must be closed at the latest.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Bytes discarded so far.
    pub fn discarded(&self) -> u64 {
        self.discarded
    }

    /// Records one read of `n` bytes (0 is EOF) at `now`, and says what to do next.
    pub fn on_read(&mut self, n: usize, now: Instant) -> LingerStep {
        if n == 0 {
            return LingerStep::Close;
        }
        self.discarded = self.discarded.saturating_add(n as u64);
        if self.discarded >= LINGER_MAX_DISCARD || self.expired(now) {
            LingerStep::Close
        } else {
            LingerStep::Continue
        }
    }

    /// True once the deadline has passed.
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.deadline
    }

    /// Time left until the deadline (zero once it passed): the longest a backend may wait
    /// for the next input before it must close.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.deadline.saturating_duration_since(now)
    }
}

/// Step 2: `shutdown(SHUT_WR)`. The kernel sends FIN after the output already queued.
pub fn shutdown_write(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: shutdown takes no pointers; `fd` is borrowed, so it is open for the call.
    unsafe { crate::syscall!(shutdown(fd.as_raw_fd(), libc::SHUT_WR)) }?;
    Ok(())
}

/// What one nonblocking read found before the write side is shut down: the check that
/// lets a connection skip lingering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// No input queued (`EAGAIN`): close now, a FIN follows the output.
    Nothing,
    /// The peer's EOF: close now.
    Eof,
    /// `n` bytes of input were queued (and are thrown away): shut down and linger.
    Discarded(usize),
}

/// One nonblocking read (`MSG_DONTWAIT`, so it works on blocking sockets too) into `buf`,
/// whose bytes are thrown away: says whether the connection must linger.
pub fn discard_queued(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Queued> {
    loop {
        // SAFETY: the pointer and length describe `buf`, writable and exclusively borrowed
        // for the call.
        return match unsafe {
            crate::syscall!(recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT
            ))
        } {
            Ok(0) => Ok(Queued::Eof),
            Ok(n) => Ok(Queued::Discarded(n as usize)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Queued::Nothing),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
    }
}

/// What [`linger_blocking`] read and threw away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Discarded {
    /// Read calls made (the one that saw EOF included).
    pub reads: u64,
    /// Bytes thrown away.
    pub bytes: u64,
}

/// Steps 2 and 3 for a blocking socket whose output is flushed: when one read finds input
/// queued ([`discard_queued`]), shuts down the write side, then reads into `buf` and
/// discards until EOF, [`LINGER_TIMEOUT`] or [`LINGER_MAX_DISCARD`]. Each wait is a
/// `poll(2)` bounded by the time left, so a peer that never closes costs the thread at most
/// the deadline. The caller closes the socket after.
///
/// Another thread's `shutdown(SHUT_RDWR)` on the socket (a server stopping) ends the wait
/// at once: the next read sees EOF. A socket error ends it too (the close follows anyway).
pub fn linger_blocking(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Discarded {
    let mut done = Discarded::default();
    let first = match discard_queued(fd, buf) {
        Ok(Queued::Discarded(n)) => n,
        Ok(Queued::Nothing | Queued::Eof) | Err(_) => return done,
    };
    done.reads += 1;
    done.bytes += first as u64;
    if shutdown_write(fd).is_err() {
        return done;
    }
    let mut linger = Linger::start(Instant::now());
    if linger.on_read(first, Instant::now()) == LingerStep::Close {
        return done;
    }
    loop {
        let left = linger.remaining(Instant::now());
        if left.is_zero() {
            return done;
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // Round up so the wait does not end just before the deadline and spin.
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one live, initialised pollfd for the call; the kernel writes only revents.
        match unsafe { crate::syscall!(poll(&mut pfd, 1, ms)) } {
            Ok(0) => continue,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return done,
        }
        // SAFETY: the pointer and length describe `buf`, writable and exclusively borrowed
        // for the call.
        let n = match unsafe {
            crate::syscall!(recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT
            ))
        } {
            Ok(n) => n as usize,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(_) => return done,
        };
        done.reads += 1;
        done.bytes += n as u64;
        if linger.on_read(n, Instant::now()) == LingerStep::Close {
            return done;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eof_closes_at_once() {
        let now = Instant::now();
        let mut l = Linger::start(now);
        assert_eq!(l.on_read(0, now), LingerStep::Close);
    }

    #[test]
    fn input_within_budget_and_deadline_continues() {
        let now = Instant::now();
        let mut l = Linger::start(now);
        assert_eq!(l.on_read(100, now), LingerStep::Continue);
        assert_eq!(l.discarded(), 100);
        assert!(!l.expired(now));
        assert_eq!(l.remaining(now), LINGER_TIMEOUT);
    }

    #[test]
    fn deadline_closes() {
        let now = Instant::now();
        let mut l = Linger::start(now);
        let late = now + LINGER_TIMEOUT;
        assert!(l.expired(late));
        assert_eq!(l.remaining(late), Duration::ZERO);
        assert_eq!(l.on_read(1, late), LingerStep::Close);
    }

    #[test]
    fn budget_closes() {
        let now = Instant::now();
        let mut l = Linger::start(now);
        assert_eq!(
            l.on_read(LINGER_MAX_DISCARD as usize - 1, now),
            LingerStep::Continue
        );
        assert_eq!(l.on_read(1, now), LingerStep::Close);
    }

    #[test]
    fn blocking_linger_discards_until_eof_and_the_peer_sees_every_byte_then_eof() {
        use std::io::{Read, Write};
        use std::os::fd::AsFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let (mut server, _) = l.accept().unwrap();
        // Input the server never reads before it closes: without lingering, a reset.
        client.write_all(&[7u8; 100_000]).unwrap();
        server.write_all(b"last response").unwrap();
        wait_readable(&server);
        // Reads to EOF, then closes: that EOF ends the server's linger.
        let peer = std::thread::spawn(move || {
            let mut got = Vec::new();
            client.read_to_end(&mut got).map(|_| got)
        });
        let mut buf = vec![0u8; 4096];
        let done = linger_blocking(server.as_fd(), &mut buf);
        drop(server);
        let got = peer.join().unwrap();
        assert_eq!(got.expect("EOF, not a reset"), b"last response");
        assert_eq!(done.bytes, 100_000, "every unread byte discarded");
    }

    #[test]
    fn blocking_linger_ends_at_the_deadline_when_the_peer_never_closes() {
        use std::io::Write;
        use std::os::fd::AsFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        client.write_all(b"unread").unwrap();
        wait_readable(&server);
        let t0 = Instant::now();
        let done = linger_blocking(server.as_fd(), &mut [0u8; 64]);
        assert!(
            t0.elapsed() >= LINGER_TIMEOUT,
            "returned before the deadline"
        );
        assert_eq!(done.bytes, 6);
    }

    #[test]
    fn blocking_linger_closes_at_once_with_nothing_queued() {
        use std::io::Read;
        use std::os::fd::AsFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let (server, _) = l.accept().unwrap();
        let done = linger_blocking(server.as_fd(), &mut [0u8; 64]);
        assert_eq!(done, Discarded::default());
        drop(server);
        assert_eq!(client.read(&mut [0u8; 8]).unwrap(), 0, "a FIN, not a reset");
    }

    /// Waits (bounded) until `s` has input queued.
    fn wait_readable(s: &std::net::TcpStream) {
        let mut pfd = libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd for the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, 20_000) };
        assert_eq!(ready, 1, "input never arrived");
    }
}
