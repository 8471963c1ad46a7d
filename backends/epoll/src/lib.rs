//! ringside's reference backends on raw Linux epoll: [`EpollEt`] (edge-triggered) and
//! [`EpollLt`] (level-triggered), and the variants that each test one claim of the epoll
//! field notes against them.
//!
//! All share everything but the trigger mode: the connection table (`conn`), the
//! event loop with its buffers, backpressure, close policy and accept pauses (`shard`),
//! and the libc wrappers (`sys`). What differs between the modes is confined to `trigger`:
//!
//! | | epoll-et | epoll-lt |
//! | --- | --- | --- |
//! | accept | until `EAGAIN` | one batch of up to 64 per event |
//! | read | until `EAGAIN` | one read per event |
//! | write | until done or `EAGAIN` | one `send` per event |
//! | `EPOLLOUT` interest | only after a write hit `EAGAIN`, dropped once drained | only while output is pending |
//! | paused by backpressure | keeps `EPOLLIN`, reads again itself on resume | drops `EPOLLIN` until output drains |
//!
//! Each shard owns one epoll instance, its listener, one read buffer and one output
//! scratch buffer; a connection owns its socket, its session and the output the socket
//! has not taken yet. No per-request allocation, and `epoll_ctl` runs only when a
//! connection's needed interest actually changes.
//!
//! # Claim variants
//!
//! Each differs from epoll-et or epoll-lt in exactly one point, so that a comparison with
//! its base measures that point (the suite `suites/seed-claims.toml` runs them):
//!
//! | backend | base | claim under test |
//! | --- | --- | --- |
//! | [`EpollEtShortRead`] | epoll-et | a short read means the socket is drained: stop without the read that returns `EAGAIN` |
//! | [`EpollInOut`] | epoll-et | `EPOLLIN\|EPOLLOUT` registered for good: no `epoll_ctl` after accept, but spurious `EPOLLOUT` wake-ups |
//! | [`EpollToggle`] | epoll-lt | `EPOLL_CTL_MOD` to `EPOLLOUT` and back around every response: two `epoll_ctl` per request |
//! | [`EpollOneshot`] | epoll-lt | `EPOLLONESHOT`, re-armed with `EPOLL_CTL_MOD`: one `epoll_ctl` per event |
//! | [`EpollLtMaxEvents`] | epoll-lt | `epoll_wait`'s `maxevents`: `epoll-lt-me1`, `-me16`, `-me64`, `-me1024` (epoll-lt itself uses 256) |
//!
//! The `maxevents` sweep is a set of named backends rather than a parameter, because a
//! backend is what a suite, a results cell and a plot legend name: a swept value becomes
//! a legend entry with no new plumbing.
#![deny(missing_docs, rust_2018_idioms)]

mod conn;
mod shard;
mod sys;
mod trigger;

use std::io;

use backend_api::{Backend, ShardContext, ShardStats, Unsupported};

use trigger::{
    Edge, EdgeInOut, EdgeShortRead, Level, LevelMaxEvents, LevelOneshot, LevelToggle, Trigger,
};

/// One public backend per trigger mode.
macro_rules! epoll_backend {
    ($(#[$doc:meta])* $name:ident => $mode:ty, $describe:literal) => {
        $(#[$doc])*
        #[derive(Debug, Default, Clone, Copy)]
        pub struct $name;

        impl Backend for $name {
            fn name(&self) -> &'static str {
                <$mode>::NAME
            }

            fn describe(&self) -> &'static str {
                $describe
            }

            fn probe(&self) -> Result<(), Unsupported> {
                probe()
            }

            fn run_shard(&self, ctx: ShardContext) -> io::Result<ShardStats> {
                shard::run::<$mode>(ctx)
            }

            fn traits(&self) -> backend_api::Traits {
                backend_api::Traits {
                    family: backend_api::Family::Epoll,
                    ..Default::default()
                }
            }
        }
    };
}

epoll_backend!(
    /// epoll, edge-triggered: drains accepts, reads and writes until `EAGAIN`; asks for
    /// `EPOLLOUT` only after a write would block.
    EpollEt => Edge,
    "raw epoll, edge-triggered: accept/read/write until EAGAIN, EPOLLOUT only while a write is blocked"
);

epoll_backend!(
    /// epoll, level-triggered: one accept batch and one read per readiness event;
    /// `EPOLLOUT` interest only while output is pending.
    EpollLt => Level,
    "raw epoll, level-triggered: one read per readiness event, EPOLLOUT only while output is pending"
);

epoll_backend!(
    /// epoll-et that stops draining at a short read instead of reading on to `EAGAIN`
    /// (with `EPOLLRDHUP`, so an EOF queued behind the data is still read).
    EpollEtShortRead => EdgeShortRead,
    "claim variant of epoll-et: a read shorter than the buffer ends the drain (no EAGAIN read); EPOLLRDHUP keeps EOF"
);

epoll_backend!(
    /// epoll-et with `EPOLLIN | EPOLLOUT` registered for the connection's lifetime.
    EpollInOut => EdgeInOut,
    "claim variant of epoll-et: EPOLLIN|EPOLLOUT registered for the connection's lifetime, never modified"
);

epoll_backend!(
    /// epoll-lt switching interest `EPOLLIN` → `EPOLLOUT` → `EPOLLIN` around every
    /// response, writing only on `EPOLLOUT`.
    EpollToggle => LevelToggle,
    "claim variant of epoll-lt: EPOLL_CTL_MOD to EPOLLOUT and back around every response (write only on EPOLLOUT)"
);

epoll_backend!(
    /// epoll-lt with `EPOLLONESHOT`, re-armed after every event.
    EpollOneshot => LevelOneshot,
    "claim variant of epoll-lt: EPOLLONESHOT, re-armed with EPOLL_CTL_MOD after every event"
);

/// epoll-lt with `epoll_wait`'s `maxevents` set to `N`. Exists for `N` = 1, 16, 64 and
/// 1024 (named `epoll-lt-me{N}`); any other `N` fails to compile.
#[derive(Debug, Default, Clone, Copy)]
pub struct EpollLtMaxEvents<const N: usize>;

impl<const N: usize> Backend for EpollLtMaxEvents<N> {
    fn name(&self) -> &'static str {
        LevelMaxEvents::<N>::NAME
    }

    fn describe(&self) -> &'static str {
        LevelMaxEvents::<N>::DESCRIBE
    }

    fn probe(&self) -> Result<(), Unsupported> {
        probe()
    }

    fn run_shard(&self, ctx: ShardContext) -> io::Result<ShardStats> {
        shard::run::<LevelMaxEvents<N>>(ctx)
    }

    fn traits(&self) -> backend_api::Traits {
        backend_api::Traits {
            family: backend_api::Family::Epoll,
            ..Default::default()
        }
    }
}

/// epoll exists on every Linux this crate builds for, but a sandbox (seccomp) can still
/// forbid it: create one instance rather than assume.
fn probe() -> Result<(), Unsupported> {
    sys::Epoll::new()
        .map(drop)
        .map_err(|e| Unsupported::new(format!("epoll_create1 failed: {e}")))
}
