//! `tokio-tpc`: tokio in the thread-per-core layout.
//!
//! Each pinned shard thread builds its own current-thread runtime (its own reactor, its
//! own timer, no other threads) and runs its own `SO_REUSEPORT` listener's accept loop on
//! it; connection tasks are spawned onto that same runtime and never leave the core. The
//! connection code is the one `tokio` runs, so `tokio` versus `tokio-tpc` isolates the
//! layout (work stealing versus thread per core), and `tokio-tpc` versus `epoll-*` the
//! cost of tokio's abstractions over the same readiness API.
//!
//! # Memory per connection
//!
//! The same task as `tokio` (see the crate docs); the read buffer is one per shard
//! thread.

use std::io;

use backend_api::{Backend, ShardContext, ShardStats, Unsupported};

/// One current-thread tokio runtime per pinned shard, each with its own listener.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioTpc;

impl Backend for TokioTpc {
    fn name(&self) -> &'static str {
        "tokio-tpc"
    }

    fn traits(&self) -> backend_api::Traits {
        backend_api::Traits {
            family: backend_api::Family::EpollRuntime,
            ..Default::default()
        }
    }

    fn describe(&self) -> &'static str {
        "tokio thread-per-core: one current-thread runtime per pinned shard, each with its own listener"
    }

    fn probe(&self) -> Result<(), Unsupported> {
        // Tokio needs epoll and eventfd, which every Linux this project runs on has.
        Ok(())
    }

    fn run_shard(&self, ctx: ShardContext) -> io::Result<ShardStats> {
        // A LocalSet would allow !Send tasks; the connection task is Send, so plain
        // `spawn` on the current-thread scheduler does the same with one layer less.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut stats = runtime.block_on(crate::shard::serve(ctx))?;
        stats.loop_iterations = runtime.metrics().worker_park_count(0);
        Ok(stats)
    }
}
