//! Raw io_uring backends for ringside, on the `io-uring` crate (no liburing).
//!
//! Every backend here is one [`Features`] set run by one event loop (`src/shard/`), one
//! connection table (`src/conn.rs`) and one completion dispatch, so `harness compare` shows
//! what each kernel feature is worth.
//!
//! # Feature sets by name
//!
//! `uring` is the one-shot baseline; `uring+feature+feature...` adds toggles, in any order
//! (the canonical name lists them in [`Feature::ALL`] order). A name that is not valid gets
//! an error listing the valid features, or the combination rule it breaks. Every toggle is
//! probed: a set the kernel lacks reports `unsupported: <what is missing, which Linux has
//! it>`. [`backend`] resolves any name; [`ladder`] is the registered ladder.
//!
//! | feature | what | Linux |
//! | --- | --- | --- |
//! | `coop` | `IORING_SETUP_COOP_TASKRUN` | 5.19 |
//! | `single` | `IORING_SETUP_SINGLE_ISSUER` | 6.0 |
//! | `defer` | `IORING_SETUP_DEFER_TASKRUN` (needs `single`) | 6.1 |
//! | `sqpoll` | SQ polling thread on the shard's core (not with `defer`, `minwait`) | 5.11 |
//! | `ringfd` | registered ring fd for `io_uring_enter` | 5.18 |
//! | `minwait` | min-wait batching: wait for [`Tuning::min_wait_batch`] completions or [`Tuning::min_wait_usec`] | 6.12 |
//! | `accept-multi` | multishot accept | 5.19 |
//! | `fixed` | accepted sockets as fixed (direct) descriptors, fixed-file ops, setsockopt by `URING_CMD` | 6.7 |
//! | `recv-multi` | multishot recv from a provided buffer ring | 6.0 |
//! | `inc` | incremental buffer consumption (needs `recv-multi`, not with `bundle`) | 6.12 |
//! | `bundle` | receive bundles (needs `recv-multi`) | 6.10 |
//! | `send-bundle` | send bundles from a per-connection send buffer ring (not with `zc`) | 6.10 |
//! | `zc` | `SEND_ZC` for sends of at least [`Tuning::zc_threshold`] bytes (not with `send-bundle`) | 6.0 |
//! | `napi` | NAPI busy poll (needs a NAPI device; loopback has none) | 6.9 |
//!
//! The ladder adds, from `uring`: `single`, `defer`, `ringfd`, `accept-multi`,
//! `recv-multi`, `bundle`, `minwait`, `zc`, `fixed` ([`Features::ladder`]). `send-bundle`
//! excludes `zc`, so it is a branch off the step below `zc`.
//!
//! The historical names keep their meaning:
//!
//! | backend | accept | receive | ring setup |
//! | --- | --- | --- | --- |
//! | `uring` | one-shot `Accept` | one-shot `Recv` into a small pooled per-connection buffer | no flags |
//! | `uring-multishot` | multishot `Accept` | multishot `Recv` from a provided buffer ring | `SINGLE_ISSUER` + `DEFER_TASKRUN` |
//! | `uring-sqpoll` | multishot `Accept` | multishot `Recv` from a provided buffer ring | `SQPOLL` (idle 1 ms), SQ thread pinned to the shard's core |
//!
//! Every set sends with one-shot `Send` (or `SendZc`, or a bundle `Send` with
//! `send-bundle`; never two in flight per connection),
//! waits on the stop eventfd with a `PollAdd`, pauses accepting with a `Timeout` after
//! `EMFILE`, and closes sockets with `Close` SQEs, all batched into one `io_uring_enter` per
//! loop turn.
//!
//! # Closing
//!
//! Every set follows `backend_api::close`: when the session ends a connection, pending
//! output is flushed, a `Shutdown(SHUT_WR)` SQE sends the FIN, input is received and
//! discarded until EOF, `LINGER_TIMEOUT` (checked by a shard `Timeout` every 250 ms) or
//! `LINGER_MAX_DISCARD` bytes, and only then the socket is closed. After the peer's EOF the
//! socket closes once output is flushed.
//!
//! # Memory per connection
//!
//! Sets with `recv-multi` hold no receive buffer per connection: the kernel
//! picks a buffer from the shard's provided buffer ring when data arrives, and the buffer
//! returns to the ring as soon as the session consumed it. An idle connection costs its
//! table entry (about 150 bytes). One-shot receives must hand the kernel a buffer with every
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
#[cfg(test)]
mod faults;
mod features;
pub mod probe;
mod recvbuf;
mod sendring;
pub mod setup;
mod shard;
mod token;
mod variant;

use std::io;
use std::sync::Arc;

use backend_api::{Backend, ShardContext, ShardStats, Unsupported};

pub use diag::{Diagnostics, DiagnosticsSnapshot};
pub use features::{BadName, Feature, Features};
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
                probe::check($variant, &Tuning::default())
            }
            fn run_shard(&self, ctx: ShardContext) -> io::Result<ShardStats> {
                shard::run($variant.features(), &Tuning::default(), None, ctx)
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

/// Any feature set, with explicit [`Tuning`] and optional live [`Diagnostics`]: what
/// [`backend`] and [`ladder`] hand out, and what tests use to force rare paths (a tiny
/// buffer ring forces `ENOBUFS`).
#[derive(Debug, Clone)]
pub struct Tuned {
    features: Features,
    tuning: Tuning,
    diagnostics: Option<Arc<Diagnostics>>,
}

impl Tuned {
    /// `features` (or a [`Variant`]) with the default tuning and no diagnostics.
    pub fn new(features: impl Into<Features>) -> Tuned {
        Tuned {
            features: features.into(),
            tuning: Tuning::default(),
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

    /// The feature set.
    pub fn features(&self) -> Features {
        self.features
    }
}

impl Backend for Tuned {
    fn name(&self) -> &'static str {
        self.features.name()
    }
    fn describe(&self) -> &'static str {
        self.features.describe()
    }
    fn probe(&self) -> Result<(), Unsupported> {
        probe::check(self.features, &self.tuning)
    }
    fn run_shard(&self, ctx: ShardContext) -> io::Result<ShardStats> {
        shard::run(self.features, &self.tuning, self.diagnostics.clone(), ctx)
    }
}

/// Resolves a uring backend name (`uring`, `uring-multishot`, `uring-sqpoll` or
/// `uring+feature+...`). `None` when `name` is not a uring name; `Err` says what is wrong
/// and lists the valid features.
pub fn backend(name: &str) -> Option<Result<Arc<dyn Backend>, BadName>> {
    Some(Features::parse(name)?.map(|f| -> Arc<dyn Backend> {
        match Variant::ALL.into_iter().find(|v| v.features() == f) {
            Some(Variant::OneShot) => Arc::new(Uring),
            Some(Variant::Multishot) => Arc::new(UringMultishot),
            Some(Variant::Sqpoll) => Arc::new(UringSqpoll),
            None => Arc::new(Tuned::new(f)),
        }
    }))
}

/// The top of the ladder ([`Features::full`]): what the default comparison runs beside the
/// three historical backends.
pub fn full() -> Arc<dyn Backend> {
    Arc::new(Tuned::new(Features::full()))
}

/// The ladder's steps beyond `uring` ([`Features::ladder`], ending with [`full`]), then the
/// toggles that are not on it (`coop` alone, `napi` alone) and the send-bundle branch
/// ([`Features::send_bundle_branch`]): what `harness list` shows and
/// `suites/uring-ablation.toml` runs.
pub fn ladder() -> Vec<Arc<dyn Backend>> {
    let mut sets: Vec<Features> = Features::ladder().into_iter().skip(1).collect();
    sets.push(Features::NONE.with(Feature::Coop));
    sets.push(Features::NONE.with(Feature::Napi));
    sets.push(Features::send_bundle_branch());
    sets.into_iter()
        .map(|f| Arc::new(Tuned::new(f)) as Arc<dyn Backend>)
        .collect()
}
