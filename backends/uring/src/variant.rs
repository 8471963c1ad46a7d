//! The three historical backends ([`Variant`]) and the knobs every feature set shares
//! ([`Tuning`]).

use std::time::Duration;

use crate::features::{Feature, Features};

/// The three historical backends, each a fixed [`Features`] set under its own name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// `uring`: one-shot `Accept` / `Recv` / `Send`, plain ring.
    OneShot,
    /// `uring-multishot`: multishot `Accept` and `Recv` with a provided buffer ring,
    /// `SINGLE_ISSUER` + `DEFER_TASKRUN`.
    Multishot,
    /// `uring-sqpoll`: multishot `Accept` and `Recv` with a provided buffer ring, `SQPOLL`;
    /// `DEFER_TASKRUN` and `COOP_TASKRUN` are refused with `SQPOLL`.
    Sqpoll,
}

impl Variant {
    /// The three historical variants (what their names resolve to in [`Features::parse`]).
    pub const ALL: [Variant; 3] = [Variant::OneShot, Variant::Multishot, Variant::Sqpoll];

    /// The backend name.
    pub const fn name(self) -> &'static str {
        match self {
            Variant::OneShot => "uring",
            Variant::Multishot => "uring-multishot",
            Variant::Sqpoll => "uring-sqpoll",
        }
    }

    /// One line for `harness list`.
    pub const fn describe(self) -> &'static str {
        match self {
            Variant::OneShot => {
                "io_uring, one-shot accept/recv/send SQEs, one submit_and_wait per loop turn"
            }
            Variant::Multishot => {
                "io_uring, multishot accept + multishot recv from a provided buffer ring, \
                 SINGLE_ISSUER + DEFER_TASKRUN"
            }
            Variant::Sqpoll => {
                "io_uring, multishot accept/recv with a buffer ring, SQPOLL thread on the \
                 shard's core"
            }
        }
    }

    /// Its feature set.
    pub const fn features(self) -> Features {
        match self {
            Variant::OneShot => Features::NONE,
            Variant::Multishot => Features::NONE
                .with(Feature::Single)
                .with(Feature::Defer)
                .with(Feature::AcceptMulti)
                .with(Feature::RecvMulti),
            Variant::Sqpoll => Features::NONE
                .with(Feature::Sqpoll)
                .with(Feature::AcceptMulti)
                .with(Feature::RecvMulti),
        }
    }

    /// True when receives use multishot `Recv` with the provided buffer ring.
    pub const fn multishot(self) -> bool {
        self.features().has(Feature::RecvMulti)
    }
}

/// Where the `uring-sqpoll` SQ thread runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqThread {
    /// Pinned to the shard's own core (`IORING_SETUP_SQ_AFF`, `sq_thread_cpu = ctx.core`):
    /// the same core budget as every other backend. The default.
    SameCore,
    /// Not pinned: the scheduler places it, usually on another core.
    Unbound,
    /// Pinned to this CPU.
    Cpu(u32),
}

/// Ring and buffer sizes. The defaults are what the registered backends use; tests shrink
/// them to force rare paths (a one-entry buffer ring forces `ENOBUFS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuning {
    /// Submission queue entries (power of two). More SQEs per loop turn than this cost an
    /// extra `submit` mid-turn, never a lost operation.
    pub sq_entries: u32,
    /// Completion queue entries (power of two, at least `sq_entries`). Multishot requests
    /// end (CQE without `IORING_CQE_F_MORE`) when the CQ is full; they are re-armed.
    pub cq_entries: u32,
    /// Provided buffer ring entries (`recv-multi`) (power of two, ≤ 32768).
    pub buf_ring_entries: u16,
    /// Size of each provided buffer; `None` means `limits.read_buffer`.
    pub buf_size: Option<u32>,
    /// Smallest per-connection receive buffer of one-shot receives (what an idle connection
    /// pins while its `Recv` is in flight).
    pub recv_min: u32,
    /// `sqpoll`: SQ thread placement.
    pub sq_thread: SqThread,
    /// `sqpoll`: milliseconds the SQ thread keeps polling after the last submission
    /// before it sleeps (and the next submission needs a wakeup syscall).
    pub sq_thread_idle_ms: u32,
    /// `SO_SNDBUF` for accepted sockets; `None` leaves the kernel's autotuning alone. Tests
    /// set it small to force short sends.
    pub send_buffer: Option<u32>,
    /// Longest a stopping shard waits for its cancelled operations to complete. Past it the
    /// shard fails and leaks what the kernel may still use instead of waiting forever.
    pub drain_timeout: Duration,
    /// `minwait`: how long a wait may hold completions back to batch them (µs).
    pub min_wait_usec: u32,
    /// `minwait`: completions that end a wait before `min_wait_usec` passed.
    pub min_wait_batch: u32,
    /// `zc`: sends of at least this many bytes use `SEND_ZC`; smaller ones copy.
    pub zc_threshold: usize,
    /// `napi`: busy-poll timeout (µs).
    pub napi_busy_poll_usec: u32,
    /// Faults to inject (unit tests only).
    #[cfg(test)]
    pub(crate) faults: crate::faults::Faults,
}

impl Tuning {
    /// The defaults of `variant` (the same for every feature set: each reads the fields
    /// that concern it).
    pub fn for_variant(variant: impl Into<Features>) -> Tuning {
        let _ = variant.into();
        Tuning::default()
    }
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            sq_entries: 1024,
            cq_entries: 8192,
            buf_ring_entries: 256,
            buf_size: None,
            recv_min: 1024,
            sq_thread: SqThread::SameCore,
            sq_thread_idle_ms: 1,
            send_buffer: None,
            drain_timeout: Duration::from_secs(5),
            min_wait_usec: 50,
            min_wait_batch: 16,
            zc_threshold: 16 * 1024,
            napi_busy_poll_usec: 50,
            #[cfg(test)]
            faults: crate::faults::Faults::default(),
        }
    }
}
