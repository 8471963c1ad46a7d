//! One shard's accept loop, the same for both tokio backends: accept from the shard's
//! listener, spawn one task per connection, watch the stop signal, pause on descriptor
//! exhaustion, and at stop abort every connection task and wait until all are dropped.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use backend_api::listener::{is_accept_exhaustion, is_accept_transient, prepare_accepted};
use backend_api::{syscall, ShardContext, ShardStats, ACCEPT_PAUSE};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::conn::{self, Counters, Tally};

/// Serves `ctx.listener` on the current tokio runtime until `ctx.stop` fires. Must be
/// called inside that runtime (`block_on`); connection tasks go wherever `spawn` puts
/// them on it.
pub(crate) async fn serve(ctx: ShardContext) -> io::Result<ShardStats> {
    let ShardContext {
        listener,
        service,
        limits,
        stop,
        ..
    } = ctx;
    // Our own descriptor for the stop eventfd: the shards of a `tokio` server share one
    // reactor (one epoll set), which refuses the same descriptor twice. It is only ever
    // polled for readability, never read, so the other shards keep seeing it fire.
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) takes an integer argument; the stop fd is open.
    let stop_fd = unsafe { syscall!(fcntl(stop.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0)) }?;
    // SAFETY: fcntl just returned this descriptor and nothing else owns it.
    let stop_fd = unsafe { OwnedFd::from_raw_fd(stop_fd) };
    // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open exactly as long
    // as it is registered.
    let stop_fd = unsafe { AsyncFd::register_with_interest(stop_fd, Interest::READABLE) }?;
    let listener = TcpListener::from_std(listener)?;

    let counters = Arc::new(Counters::default());
    let mut conns = JoinSet::new();
    let mut stats = ShardStats::default();
    let mut paused_until: Option<Instant> = None;
    let mut at_limit = false;

    loop {
        let full = conns.len() >= limits.max_connections;
        if full && !at_limit {
            stats.accept_pauses += 1;
        }
        at_limit = full;
        tokio::select! {
            biased;
            _ = stop_fd.readable() => break,
            Some(done) = conns.join_next(), if !conns.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        // A panicking connection task is a backend bug: surface it as
                        // this shard's panic instead of losing it.
                        std::panic::resume_unwind(e.into_panic());
                    }
                }
            }
            _ = tokio::time::sleep_until(paused_until.unwrap_or_else(Instant::now)),
                if paused_until.is_some() => paused_until = None,
            accepted = listener.accept(), if !full && paused_until.is_none() => match accepted {
                Ok((stream, _peer)) => {
                    stats.accepted += 1;
                    let tally = Tally::new(Arc::clone(&counters));
                    // A connection that cannot take TCP_NODELAY is already broken
                    // (reset while queued); dropping it closes and counts it.
                    if prepare_accepted(&stream).is_ok() {
                        conns.spawn(conn::serve(stream, service.session(), limits, tally));
                        stats.peak_connections = stats.peak_connections.max(conns.len() as u64);
                    }
                }
                Err(e) if is_accept_exhaustion(&e) => {
                    // The listener stays readable while descriptors are exhausted: retrying
                    // at once would spin. Open connections keep being served meanwhile.
                    stats.accept_pauses += 1;
                    paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                }
                Err(e) if is_accept_transient(&e) => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("accept failed: {e}"))),
            },
        }
    }
    // Abort every connection task and wait until each is dropped: its socket is closed
    // and its counts are in `counters` once this returns.
    conns.shutdown().await;
    counters.add_to(&mut stats);
    Ok(stats)
}
