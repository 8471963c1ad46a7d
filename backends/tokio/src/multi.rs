//! `tokio`: the multi-thread work-stealing runtime, the way most Rust services are written.
//!
//! # Layout
//!
//! The shards of one server (same [`ShardContext::server_id`]) share one multi-thread
//! runtime with `ctx.shards` workers. The first shard to arrive builds it; the last one to
//! leave drops it (a process-wide registry keyed by server id). Every shard thread, pinned
//! by the runner, drives its own listener's accept loop with `Runtime::block_on`, exactly
//! like `#[tokio::main] async fn main() { loop { spawn(handle(accept().await)) } }`, and
//! each accepted connection becomes a task `spawn`ed onto the workers.
//!
//! # What tokio's own threads do
//!
//! Tokio's workers are **not pinned**. They may run on any core of the server (the union
//! of its shards' cores, so the load generator's cores stay off limits as for every other
//! backend), and the kernel migrates them freely among those cores. Tasks are not tied to
//! a worker either: a woken task goes to the waking worker's queue or to the global
//! injection queue, and idle workers steal from busy ones. A connection may therefore be
//! accepted on one core, read on a second and written on a third. That migration, the
//! cross-thread wake-ups from the accept loops (a shard thread is not a worker, so every
//! spawn goes through the injection queue and unparks a worker) and twice as many threads
//! as cores are what this baseline measures against the thread-per-core backends.
//!
//! Threads inherit the affinity of the thread that creates them, and the runtime is built
//! by a pinned shard thread, so left alone every worker would be stuck on that one core.
//! Each worker therefore sets its own affinity when it starts, and each shard that joins
//! the runtime widens the mask of every worker to include its core.
//!
//! A shard that exits before a sibling has even started (a server stopped at once) drops
//! the runtime; the late sibling then builds a fresh one and exits at once too. Harmless.

use std::collections::hash_map::{Entry as MapEntry, HashMap};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use backend_api::{Backend, ShardContext, ShardStats, Unsupported};
use tokio::runtime::Runtime;

/// The work-stealing multi-thread tokio runtime, one worker per shard, shared by the
/// shards of a server; each pinned shard thread runs its listener's accept loop.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tokio;

/// Name of the worker threads of every `tokio` runtime (at most 15 bytes: Linux cuts
/// thread names there).
pub const WORKER_THREAD_NAME: &str = "tokio-mt-worker";

impl Backend for Tokio {
    fn name(&self) -> &'static str {
        "tokio"
    }

    fn traits(&self) -> backend_api::Traits {
        backend_api::Traits {
            family: backend_api::Family::EpollRuntime,
            ..Default::default()
        }
    }

    fn describe(&self) -> &'static str {
        "tokio multi-thread runtime: unpinned work-stealing workers (one per core), accept loops on the pinned shard threads"
    }

    fn probe(&self) -> Result<(), Unsupported> {
        // Tokio needs epoll and eventfd, which every Linux this project runs on has.
        Ok(())
    }

    fn run_shard(&self, ctx: ShardContext) -> io::Result<ShardStats> {
        let shard = ctx.shard;
        let attached = Attached::join(&ctx)?;
        let mut stats = attached.runtime.block_on(crate::shard::serve(ctx))?;
        // Workers are not tied to shards; attributing worker `shard`'s parks (each one a
        // wait in the reactor or on a condvar) to shard `shard` makes the sum over shards
        // the runtime's total.
        let metrics = attached.runtime.metrics();
        if shard < metrics.num_workers() {
            stats.loop_iterations = metrics.worker_park_count(shard);
        }
        Ok(stats)
    }
}

/// Number of multi-thread runtimes currently shared by running `tokio` servers in this
/// process (each is dropped when the last shard of its server exits).
pub fn shared_runtimes() -> usize {
    registry().len()
}

/// A runtime and the shards using it.
struct Entry {
    runtime: Arc<Runtime>,
    placement: Arc<Placement>,
    shards: usize,
}

fn registry() -> MutexGuard<'static, HashMap<u64, Entry>> {
    static REGISTRY: OnceLock<Mutex<HashMap<u64, Entry>>> = OnceLock::new();
    REGISTRY
        .get_or_init(Default::default)
        .lock()
        // Every update is one insert, remove or increment, so a panic elsewhere while the
        // lock was held cannot have left the map half-updated.
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One shard's hold on its server's runtime; dropping it detaches the shard and drops the
/// runtime if it was the last.
struct Attached {
    server_id: u64,
    runtime: Arc<Runtime>,
}

impl Attached {
    fn join(ctx: &ShardContext) -> io::Result<Attached> {
        let mut reg = registry();
        let entry = match reg.entry(ctx.server_id) {
            MapEntry::Occupied(e) => e.into_mut(),
            MapEntry::Vacant(v) => {
                let placement = Arc::new(Placement::default());
                // Known before any worker starts, so no worker ever runs unconstrained.
                placement.add_core(ctx.core);
                let runtime = build_runtime(ctx.shards, &placement)?;
                v.insert(Entry {
                    runtime: Arc::new(runtime),
                    placement,
                    shards: 0,
                })
            }
        };
        entry.placement.add_core(ctx.core);
        entry.shards += 1;
        Ok(Attached {
            server_id: ctx.server_id,
            runtime: Arc::clone(&entry.runtime),
        })
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let last = {
            let mut reg = registry();
            match reg.get_mut(&self.server_id) {
                Some(entry) if entry.shards > 1 => {
                    entry.shards -= 1;
                    None
                }
                Some(_) => reg.remove(&self.server_id),
                None => None,
            }
        };
        // Dropped outside the registry lock: shutting a runtime down joins its workers.
        drop(last);
    }
}

fn build_runtime(workers: usize, placement: &Arc<Placement>) -> io::Result<Runtime> {
    let on_start = Arc::clone(placement);
    let on_stop = Arc::clone(placement);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .thread_name(WORKER_THREAD_NAME)
        .on_thread_start(move || on_start.enter())
        .on_thread_stop(move || on_stop.leave())
        .enable_all()
        .build()
}

/// Which cores a runtime's threads may use, and which threads those are.
#[derive(Debug, Default)]
struct Placement {
    inner: Mutex<PlacementInner>,
}

#[derive(Debug, Default)]
struct PlacementInner {
    cores: Vec<usize>,
    tids: Vec<libc::pid_t>,
}

impl Placement {
    fn lock(&self) -> MutexGuard<'_, PlacementInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Widens the allowed set by `core` and applies it to every runtime thread.
    fn add_core(&self, core: usize) {
        let mut p = self.lock();
        if p.cores.contains(&core) {
            return;
        }
        p.cores.push(core);
        // A thread registers (under this lock) as it starts and unregisters (under this
        // lock) before it exits, so every tid here is a live thread of ours.
        for &tid in &p.tids {
            set_affinity(tid, &p.cores);
        }
    }

    /// Called on each new runtime thread: record it and give it the server's cores.
    fn enter(&self) {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let mut p = self.lock();
        p.tids.push(tid);
        set_affinity(0, &p.cores);
    }

    /// Called on each runtime thread as it exits.
    fn leave(&self) {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        self.lock().tids.retain(|&t| t != tid);
    }
}

/// Lets thread `tid` (0: the calling thread) run on any of `cores`. A failure leaves the
/// thread where it was: placement, not correctness.
fn set_affinity(tid: libc::pid_t, cores: &[usize]) {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &core in cores {
        if core < libc::CPU_SETSIZE as usize {
            // SAFETY: `core` is below CPU_SETSIZE, the number of bits in the set.
            unsafe { libc::CPU_SET(core, &mut set) };
        }
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let _ = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) };
}
