//! The [`Backend`] trait, what a shard is given ([`ShardContext`]) and what it reports
//! ([`ShardStats`]).

use std::io;
use std::net::TcpListener;
use std::ops::AddAssign;

use serde::{Deserialize, Serialize};

use crate::{Limits, Service, StopSignal};

/// Why a backend cannot run on this machine, in words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Unsupported {
    /// What is missing and, where known, how to get it ("needs Linux 6.0 for multishot recv").
    pub reason: String,
}

impl Unsupported {
    /// An `Unsupported` with the given reason.
    pub fn new(reason: impl Into<String>) -> Self {
        Unsupported {
            reason: reason.into(),
        }
    }
}

/// Which family of strategies a backend belongs to: the kernel interface its I/O goes
/// through, and whether a runtime sits between the backend and that interface. Charts
/// give each family its own hues; the results manifest lists the io_uring-based ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Family {
    /// Raw epoll.
    Epoll,
    /// Raw io_uring.
    IoUring,
    /// A runtime over epoll.
    EpollRuntime,
    /// A runtime over io_uring.
    IoUringRuntime,
    /// Neither (poll(2), blocking threads, …).
    #[default]
    Other,
}

impl Family {
    /// True for the io_uring-based families.
    pub fn uses_io_uring(self) -> bool {
        matches!(self, Family::IoUring | Family::IoUringRuntime)
    }
}

/// What a backend says about itself for the harness, so that no harness code has to
/// know it by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Traits {
    /// Its family of strategies.
    pub family: Family,
    /// Locked memory (RLIMIT_MEMLOCK) one server process of it needs, in bytes; 0 when
    /// it locks none.
    pub memlock_bytes: u64,
}

/// One network I/O strategy.
///
/// Implementations are stateless factories: all per-shard state lives inside
/// [`Backend::run_shard`], which the runner calls once per shard on a thread already
/// pinned to the shard's core.
pub trait Backend: Send + Sync {
    /// Short stable name used on the command line, in results and in plot legends
    /// (`"epoll-et"`).
    fn name(&self) -> &'static str;
    /// One line for `harness list`.
    fn describe(&self) -> &'static str;
    /// Checks kernel features and limits this backend needs; says exactly what is missing.
    fn probe(&self) -> Result<(), Unsupported>;
    /// Its family and the limits it needs beyond the shared ones; by default
    /// [`Family::Other`], no locked memory.
    fn traits(&self) -> Traits {
        Traits::default()
    }
    /// Serves the shard's listener on the calling thread until `ctx.stop` fires, then
    /// closes every connection it owns and returns what it counted.
    fn run_shard(&self, ctx: ShardContext) -> io::Result<ShardStats>;
}

/// Everything one shard needs. Identical for every backend except for the I/O strategy.
#[derive(Debug)]
pub struct ShardContext {
    /// Index of this shard, `0..shards`.
    pub shard: usize,
    /// The CPU this shard's thread is pinned to.
    pub core: usize,
    /// How many shards this server runs (all cores given to the runner).
    pub shards: usize,
    /// Unique per started server within this process: lets a backend that shares state
    /// between its shards (one runtime for all, say) find its siblings.
    pub server_id: u64,
    /// This shard's own nonblocking `SO_REUSEPORT` listener, already listening.
    pub listener: TcpListener,
    /// The application every connection runs.
    pub service: Service,
    /// Connection, buffer and backpressure limits.
    pub limits: Limits,
    /// Fires once when the server must stop. Poll its fd; never read it.
    pub stop: StopSignal,
}

/// What one shard counted. Every field is a plain counter so shards sum up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ShardStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed (by either side).
    pub closed: u64,
    /// Bytes read from sockets.
    pub bytes_in: u64,
    /// Bytes written to sockets.
    pub bytes_out: u64,
    /// Turns of the event loop (epoll_wait / submit_and_wait / poll calls).
    pub loop_iterations: u64,
    /// Read operations issued or completed (read/recv syscalls or recv completions).
    pub reads: u64,
    /// Write operations issued or completed.
    pub writes: u64,
    /// Times accepting was paused because the process or system ran out of descriptors
    /// (EMFILE/ENFILE) or the shard reached `max_connections`.
    pub accept_pauses: u64,
    /// Times a connection stopped being read because its pending output passed the limit.
    pub backpressure_pauses: u64,
    /// Most connections open at once on this shard.
    pub peak_connections: u64,
    /// Connections accepted and closed at once, unserved, because the shard could not take
    /// them (a backend that refuses at its limit rather than leaving connections waiting
    /// in the backlog: thread per connection at its thread cap). Counted in `accepted`
    /// and `closed` too.
    #[serde(default)]
    pub refused: u64,
    /// `epoll_ctl` calls (`ADD` and `MOD`; closing a descriptor removes it without one).
    /// 0 for backends that do not use epoll.
    #[serde(default)]
    pub epoll_ctl: u64,
    /// Readiness events the loop was handed: the sum of what its waits (`epoll_wait`,
    /// `poll`, `select`) returned. 0 where not counted.
    #[serde(default)]
    pub events: u64,
}

impl AddAssign for ShardStats {
    fn add_assign(&mut self, o: Self) {
        self.accepted += o.accepted;
        self.closed += o.closed;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.loop_iterations += o.loop_iterations;
        self.reads += o.reads;
        self.writes += o.writes;
        self.accept_pauses += o.accept_pauses;
        self.backpressure_pauses += o.backpressure_pauses;
        // Shards hold connections at the same time, so peaks add up (an upper bound).
        self.peak_connections += o.peak_connections;
        self.refused += o.refused;
        self.epoll_ctl += o.epoll_ctl;
        self.events += o.events;
    }
}
