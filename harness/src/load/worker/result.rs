//! What a client thread is asked to do ([`Plan`]) and what it counted ([`ThreadResult`]),
//! and the accounting of one completed reply.

use std::collections::BTreeMap;

use crate::load::error::ClientError;
use crate::load::histogram::NsHistogram;
use crate::load::sys::ThreadCpu;

/// What one thread is asked to do.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub thread: usize,
    pub threads: usize,
    pub core: usize,
    /// Active connections (or per-request slots) of this thread.
    pub active: usize,
    /// Idle connections of this thread.
    pub idle: usize,
    /// Global index of this thread's first connection (varies the echo bytes).
    pub first_conn: usize,
    /// Open loop: this thread's share of the rate, requests/s.
    pub rate: Option<f64>,
    /// Open loop: offset of this thread's schedule, so threads interleave.
    pub phase_ns: u64,
    /// Cap on measured requests for this thread.
    pub quota: Option<u64>,
}

/// System calls made, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Syscalls {
    pub epoll_wait: u64,
    pub epoll_ctl: u64,
    pub read: u64,
    pub write: u64,
    /// socket, setsockopt, bind, connect, getsockopt, close.
    pub connection: u64,
}

impl Syscalls {
    pub(crate) fn total(&self) -> u64 {
        self.epoll_wait + self.epoll_ctl + self.read + self.write + self.connection
    }

    pub(super) fn minus(&self, o: &Syscalls) -> Syscalls {
        Syscalls {
            epoll_wait: self.epoll_wait - o.epoll_wait,
            epoll_ctl: self.epoll_ctl - o.epoll_ctl,
            read: self.read - o.read,
            write: self.write - o.write,
            connection: self.connection - o.connection,
        }
    }

    pub(crate) fn add(&mut self, o: &Syscalls) {
        self.epoll_wait += o.epoll_wait;
        self.epoll_ctl += o.epoll_ctl;
        self.read += o.read;
        self.write += o.write;
        self.connection += o.connection;
    }
}

/// Everything a thread counted.
#[derive(Debug, Default)]
pub(crate) struct ThreadResult {
    pub thread: usize,
    pub core: usize,
    pub active: usize,
    pub idle: usize,
    /// Headline latency: from the actual send (closed loop) or the intended send (open).
    pub latency: NsHistogram,
    /// Open loop: from the actual send.
    pub latency_uncorrected: NsHistogram,
    /// Open loop: actual minus intended send time.
    pub lag: NsHistogram,
    pub connect: NsHistogram,
    pub errors: BTreeMap<ClientError, u64>,

    // Measured requests.
    pub sent: u64,
    pub completed: u64,
    pub failed: u64,
    pub unsent: u64,
    pub unanswered: u64,
    pub requeued: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,

    // Whole run (warmup and drain included): for cross-checks against server counters.
    pub total_sent: u64,
    pub total_completed: u64,
    pub total_bytes_out: u64,
    pub total_bytes_in: u64,
    pub connects_ok: u64,
    pub connects_failed: u64,
    pub reconnects: u64,
    pub server_closes: u64,

    /// Active connections open when the measured clock started.
    pub established_at_start: u64,
    pub idle_established: u64,
    pub idle_failed: u64,
    pub idle_lost: u64,
    pub idle_establish_ns: u64,
    pub establish_ns: u64,

    /// Measured window, ns since the shared start.
    pub window_start_ns: u64,
    pub window_end_ns: u64,
    pub cpu: ThreadCpu,
    pub syscalls: Syscalls,
    pub syscalls_total: Syscalls,
    pub interrupted: bool,
}

/// A request in flight.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pending {
    /// When it was due: the schedule's time under open loop, the send time otherwise.
    pub intended: u64,
    pub sent: u64,
    pub measured: bool,
}

impl ThreadResult {
    /// Accounts for one completed reply.
    #[inline]
    pub(super) fn complete(
        &mut self,
        p: Pending,
        err: Option<ClientError>,
        now: u64,
        open: bool,
        last_completion: &mut u64,
    ) {
        self.total_completed += 1;
        if let Some(e) = err {
            *self.errors.entry(e).or_insert(0) += 1;
            if p.measured {
                self.failed += 1;
            }
            return;
        }
        if !p.measured {
            return;
        }
        self.completed += 1;
        *last_completion = now;
        if open {
            self.latency.record(now.saturating_sub(p.intended));
            self.latency_uncorrected.record(now.saturating_sub(p.sent));
        } else {
            self.latency.record(now.saturating_sub(p.sent));
        }
    }
}
