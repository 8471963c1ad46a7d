//! Raw io_uring backends for ringside, on the `io-uring` crate (no liburing).
//!
//! Three backends share one event loop (`src/shard.rs`), one connection table (`src/conn.rs`) and
//! one completion dispatch; only the [`Variant`] differs, so `harness compare` shows what
//! each kernel feature is worth:
//!
//! | backend | accept | receive | ring setup |
//! | --- | --- | --- | --- |
//! | `uring` | one-shot `Accept` | one-shot `Recv` into a small pooled per-connection buffer | no flags |
//! | `uring-multishot` | multishot `Accept` | multishot `Recv` from a provided buffer ring | `SINGLE_ISSUER` + `DEFER_TASKRUN` |
//! | `uring-sqpoll` | multishot `Accept` | multishot `Recv` from a provided buffer ring | `SQPOLL` (idle 1 ms), SQ thread pinned to the shard's core |
//!
//! Every variant sends with one-shot `Send` (never two in flight per connection), waits on
//! the stop eventfd with a `PollAdd`, pauses accepting with a `Timeout` after `EMFILE`, and
//! closes sockets with `Close` SQEs, all batched into one `submit_and_wait` per loop turn.
//!
//! # Memory per connection
//!
//! `uring-multishot` and `uring-sqpoll` hold no receive buffer per connection: the kernel
//! picks a buffer from the shard's provided buffer ring when data arrives, and the buffer
//! returns to the ring as soon as the session consumed it. An idle connection costs its
//! table entry (about 150 bytes). One-shot `uring` must hand the kernel a buffer with every
//! `Recv`, and the kernel may write into it until the completion arrives, so an idle
//! connection pins one buffer. It starts at [`Tuning::recv_min`] (1 KiB), grows ×4 while
//! receives fill it, up to `limits.read_buffer`, and shrinks by halves when they do not;
//! buffers are recycled through a per-shard pool. The tradeoff: a connection that starts
//! streaming takes a few receives to reach full-size reads, in exchange for 1 KiB (not
//! 64 KiB) per idle connection.
//!
//! # SQPOLL placement
//!
//! The SQ thread is a kernel thread of the server process (an io-thread since Linux 5.12),
//! so its CPU time is in the server's `/proc/PID/stat` and counts against the server. By
//! default it is pinned to the shard's own core ([`SqThread::SameCore`]): the server keeps
//! the same core budget as every other backend and never steals the load generator's core.
//! [`SqThread::Unbound`] and [`SqThread::Cpu`] exist for experiments that give SQPOLL its
//! own core, which is how it is meant to be deployed but is not a like-for-like comparison.
//!
//! The SQ thread polls for `sq_thread_idle` after each submission (1 ms, rounded up to a
//! jiffy: 4 ms at HZ=250) before it sleeps; `DEFER_TASKRUN` and `COOP_TASKRUN` are refused
//! with `SQPOLL`, and `SINGLE_ISSUER` buys nothing when the SQ thread is the only issuer.
//! Because every submission can cost up to two jiffies of polling, `uring-sqpoll` retries
//! accepting at `EMFILE` every 100 ms instead of every `ACCEPT_PAUSE` (10 ms): at 10 ms the
//! SQ thread polled half the time while the shard waited for descriptors.
//!
//! # Shutdown
//!
//! The stop eventfd's `PollAdd` completes (the fd is never read); the accept or its pause
//! `Timeout` is cancelled; every connection's receive and send are cancelled with
//! `AsyncCancel`; each socket is closed with a `Close` SQE once its own in-flight count is
//! zero; the loop turns until every SQE ever submitted has produced its final CQE; then the
//! buffer ring is unregistered and the buffers freed. See `src/shard.rs` and `src/conn.rs`.
#![deny(missing_docs, rust_2018_idioms)]

mod bufring;
mod conn;
mod diag;
pub mod probe;
mod recvbuf;
mod shard;
mod token;
mod variant;

use std::io;
use std::sync::Arc;

use backend_api::{Backend, ShardContext, ShardStats, Unsupported};

pub use diag::{Diagnostics, DiagnosticsSnapshot};
pub use variant::{SqThread, Tuning, Variant};

/// `uring`: one-shot accept, recv and send SQEs, one `submit_and_wait` per loop turn.
#[derive(Debug, Clone, Copy, Default)]
pub struct Uring;

/// `uring-multishot`: multishot accept and recv with a provided buffer ring, ring set up
/// with `SINGLE_ISSUER` + `DEFER_TASKRUN`.
#[derive(Debug, Clone, Copy, Default)]
pub struct UringMultishot;

/// `uring-sqpoll`: like `uring-multishot`, with a kernel SQ polling thread instead of
/// `DEFER_TASKRUN` (the two cannot be combined).
#[derive(Debug, Clone, Copy, Default)]
pub struct UringSqpoll;

macro_rules! fixed_variant {
    ($ty:ty, $variant:expr) => {
        impl Backend for $ty {
            fn name(&self) -> &'static str {
                $variant.name()
            }
            fn describe(&self) -> &'static str {
                $variant.describe()
            }
            fn probe(&self) -> Result<(), Unsupported> {
                probe::check($variant, &Tuning::for_variant($variant)).map(drop)
            }
            fn run_shard(&self, ctx: ShardContext) -> io::Result<ShardStats> {
                shard::run($variant, &Tuning::for_variant($variant), None, ctx)
            }
            fn traits(&self) -> backend_api::Traits {
                // Rings and provided-buffer rings are locked memory.
                backend_api::Traits {
                    family: backend_api::Family::IoUring,
                    memlock_bytes: 64 << 20,
                }
            }
        }
    };
}

fixed_variant!(Uring, Variant::OneShot);
fixed_variant!(UringMultishot, Variant::Multishot);
fixed_variant!(UringSqpoll, Variant::Sqpoll);

/// A variant with explicit [`Tuning`] and optional live [`Diagnostics`]: for tests that
/// must force rare paths (a tiny buffer ring forces `ENOBUFS`) and for experiments.
/// Registered backends use [`Uring`], [`UringMultishot`] and [`UringSqpoll`].
#[derive(Debug, Clone)]
pub struct Tuned {
    variant: Variant,
    tuning: Tuning,
    diagnostics: Option<Arc<Diagnostics>>,
}

impl Tuned {
    /// `variant` with its default tuning and no diagnostics.
    pub fn new(variant: Variant) -> Tuned {
        Tuned {
            variant,
            tuning: Tuning::for_variant(variant),
            diagnostics: None,
        }
    }

    /// Replaces the tuning.
    pub fn tuning(mut self, tuning: Tuning) -> Tuned {
        self.tuning = tuning;
        self
    }

    /// Makes every shard add its internal counters to `diagnostics` as it runs.
    pub fn diagnostics(mut self, diagnostics: Arc<Diagnostics>) -> Tuned {
        self.diagnostics = Some(diagnostics);
        self
    }

    /// The tuning in use.
    pub fn current_tuning(&self) -> &Tuning {
        &self.tuning
    }
}

impl Backend for Tuned {
    fn name(&self) -> &'static str {
        self.variant.name()
    }
    fn describe(&self) -> &'static str {
        self.variant.describe()
    }
    fn probe(&self) -> Result<(), Unsupported> {
        probe::check(self.variant, &self.tuning).map(drop)
    }
    fn run_shard(&self, ctx: ShardContext) -> io::Result<ShardStats> {
        shard::run(self.variant, &self.tuning, self.diagnostics.clone(), ctx)
    }
}
