//! ringside's reference backends on raw Linux epoll: [`EpollEt`] (edge-triggered) and
//! [`EpollLt`] (level-triggered).
//!
//! Both share everything but the trigger mode: the connection table (`conn`), the
//! event loop with its buffers, backpressure and accept pauses (`event_loop`), and the
//! libc wrappers (`sys`). What differs between the two modes is confined to `trigger`:
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
#![deny(missing_docs, rust_2018_idioms)]

mod conn;
mod event_loop;
mod sys;
mod trigger;

use std::io;

use backend_api::{Backend, ShardContext, ShardStats, Unsupported};

use trigger::{Edge, Level, Trigger};

/// epoll, edge-triggered: drains accepts, reads and writes until `EAGAIN`; asks for
/// `EPOLLOUT` only after a write would block.
#[derive(Debug, Default, Clone, Copy)]
pub struct EpollEt;

/// epoll, level-triggered: one accept batch and one read per readiness event; `EPOLLOUT`
/// interest only while output is pending.
#[derive(Debug, Default, Clone, Copy)]
pub struct EpollLt;

impl Backend for EpollEt {
    fn name(&self) -> &'static str {
        Edge::NAME
    }

    fn describe(&self) -> &'static str {
        "raw epoll, edge-triggered: accept/read/write until EAGAIN, EPOLLOUT only while a write is blocked"
    }

    fn probe(&self) -> Result<(), Unsupported> {
        probe()
    }

    fn run_shard(&self, ctx: ShardContext) -> io::Result<ShardStats> {
        event_loop::run::<Edge>(ctx)
    }

    fn traits(&self) -> backend_api::Traits {
        backend_api::Traits {
            family: backend_api::Family::Epoll,
            ..Default::default()
        }
    }
}

impl Backend for EpollLt {
    fn name(&self) -> &'static str {
        Level::NAME
    }

    fn describe(&self) -> &'static str {
        "raw epoll, level-triggered: one read per readiness event, EPOLLOUT only while output is pending"
    }

    fn probe(&self) -> Result<(), Unsupported> {
        probe()
    }

    fn run_shard(&self, ctx: ShardContext) -> io::Result<ShardStats> {
        event_loop::run::<Level>(ctx)
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
