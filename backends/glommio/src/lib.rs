//! The `glommio` backend: one glommio `LocalExecutor` per shard.
//!
//! glommio is a thread-per-core runtime on io_uring. For sockets it is a hybrid: every read
//! and write first tries a direct nonblocking `recv`/`send` syscall and only when that
//! would block does it arm an io_uring poll and park the task until the completion arrives.
//! Accepts work the same way (a direct `accept`, else an io_uring accept). This crate keeps
//! everything else identical to the other backends:
//!
//! * **Placement.** The runner already pinned the calling thread to `ctx.core`; the executor
//!   is built on that thread with [`glommio::Placement::Unbound`], which makes glommio leave
//!   the affinity alone (it only calls `sched_setaffinity` for bound placements). Its one
//!   blocking-pool thread is spawned from the pinned thread and inherits the same mask.
//! * **Listener.** The runner's listener is adopted as is (glommio's `TcpListener` implements
//!   `FromRawFd`), so the address, `SO_REUSEADDR`/`SO_REUSEPORT` and backlog are the shared
//!   ones by construction and no second socket joins the port's `SO_REUSEPORT` group. The
//!   only change is clearing `O_NONBLOCK`, which is how glommio expects its listeners: it
//!   sets `O_NONBLOCK` itself around each direct `accept`, and a blocking listener makes the
//!   io_uring accept wait for a connection on every kernel instead of failing with `EAGAIN`
//!   where the kernel honours the file's nonblocking flag.
//! * **Sessions.** Every connection is one task that drives the shared
//!   [`backend_api::Session`] and an [`backend_api::OutBuf`]; see `conn`.
//! * **Stop.** See `shard`: the stop eventfd is waited on with `poll(2)` on glommio's
//!   blocking thread, so stopping is event driven and costs nothing while serving.
//! * **Locked memory.** See [`IO_MEMORY`], [`RING_DEPTH`] and [`probe::memlock_need`].
//! * **Stats.** Every `ShardStats` field is counted by the shard, except `loop_iterations`,
//!   which is glommio's own `scheduler_runs` (one per task-queue activation plus the final
//!   empty pass of each loop turn: close to, and at most about twice, its loop turns).
//!   `reads` counts completed reads; a `recv` that found nothing is not visible.
//! * **glommio's descriptor leak.** glommio 0.9.0 keeps one eventfd per executor forever
//!   (DataDog/glommio#448) and still references it, so closing it would be unsafe; `leak`
//!   identifies it exactly and records it in [`backend_api::known_leaks`], which the
//!   descriptor-leak checks account for (one per shard).
#![deny(missing_docs, rust_2018_idioms)]

use std::io;

use backend_api::{Backend, ShardContext, ShardStats, Unsupported};

mod conn;
mod leak;
pub mod probe;
mod shard;
mod state;

#[cfg(test)]
mod tests;

/// Bytes of io_uring-registered "DMA" memory each executor reserves: glommio's floor.
///
/// glommio preallocates this for storage I/O and registers it with each of its three rings
/// (main, latency, poll), so without `CAP_IPC_LOCK` every shard pins three times this much
/// against `RLIMIT_MEMLOCK`. Sockets never use it (glommio's socket reads and writes go
/// through plain user buffers), so the default 10 MiB would be 30 MiB of pinned memory per
/// shard for nothing, and more than the 8 MiB default limit of a non-root user. glommio
/// rounds anything smaller up to 64 KiB, so this is the least it can be.
pub const IO_MEMORY: usize = 64 * 1024;

/// Submission queue entries per io_uring ring: glommio's default.
///
/// Each of the three rings then takes 16 KiB (128 SQEs, 256 CQEs), which io_uring charges to
/// `RLIMIT_MEMLOCK` without `CAP_IPC_LOCK` (measured on 6.18; see [`probe`]). Deeper rings
/// would only save `io_uring_enter` calls when more than 128 polls are queued in one loop
/// turn, and glommio queues any excess itself.
pub const RING_DEPTH: usize = 128;

/// The glommio backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct Glommio;

impl Backend for Glommio {
    fn name(&self) -> &'static str {
        "glommio"
    }

    fn describe(&self) -> &'static str {
        "glommio 0.9 executor per shard: a task per connection, direct recv/send, io_uring poll when blocked"
    }

    fn probe(&self) -> Result<(), Unsupported> {
        probe::probe()
    }

    fn traits(&self) -> backend_api::Traits {
        // glommio's rings and buffers are locked memory.
        backend_api::Traits {
            family: backend_api::Family::IoUringRuntime,
            memlock_bytes: 64 << 20,
        }
    }

    fn run_shard(&self, ctx: ShardContext) -> io::Result<ShardStats> {
        shard::run(ctx, shard::NoHooks)
    }
}
