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
//! A backend may skip step 3 when one read finds no input queued (`EAGAIN`) and it
//! closes at once: then no reset can follow. If the peer's EOF arrived already, steps 2-3
//! are moot and the socket closes after the flush.
//!
//! [`Linger`] is the bookkeeping of step 3; each backend drives the reads its own way.

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
}
