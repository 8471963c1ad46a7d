//! One shard: the executor, the accept loop, the stop watch and the final cleanup.
//!
//! # Stop
//!
//! glommio 0.9 has no public way to await readiness of a foreign fd, and reading the stop
//! eventfd is forbidden (the other shards watch it too). So a task hands a `poll(2)` on the
//! stop eventfd (and on a private "exit" eventfd) to glommio's blocking thread through
//! `spawn_blocking`; when it returns, glommio wakes the executor through its own notifier.
//! Stopping is therefore event driven and an idle or busy shard pays nothing for it, unlike
//! a timer task polling `is_fired()` every few milliseconds, which would add a wake-up per
//! interval to every shard's CPU and syscall counts. The blocking thread is the one glommio
//! creates for every executor anyway; it is spawned from the pinned shard thread and inherits
//! its affinity, and it sleeps in `poll` the whole time.
//!
//! When the stop fires the shard sets a flag and shuts its listener down, which completes
//! the pending io_uring accept with an error instead of cancelling it (a cancelled accept
//! that races with a new connection would leak the accepted fd inside glommio). Then every
//! connection task is cancelled and awaited, so each socket is closed by its task's drop,
//! inside the executor, before `run_shard` returns.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;

use backend_api::listener::{is_accept_exhaustion, is_accept_transient, prepare_accepted};
use backend_api::{syscall, ShardContext, ShardStats, StopSignal, ACCEPT_PAUSE};
use futures_lite::future;
use glommio::net::TcpListener;
use glommio::task::JoinHandle;
use glommio::{GlommioError, LocalExecutorBuilder, Placement, ReactorErrorKind};

use crate::probe::{memlock_need, ulimit_kib};
use crate::state::{bump, Shared};
use crate::{conn, leak, IO_MEMORY, RING_DEPTH};

/// Why a shard could not start or had to stop early.
#[derive(Debug, thiserror::Error)]
enum ShardError {
    /// glommio's reactor refused the memlock limit.
    #[error(
        "glommio shard {shard} (core {core}): RLIMIT_MEMLOCK is {limit} bytes, below the {min} \
         bytes glommio's reactor requires. Fix: ulimit -l {fix_kib}"
    )]
    MemLock {
        shard: usize,
        core: usize,
        limit: u64,
        min: u64,
        fix_kib: u64,
    },
    /// Building the executor failed for another reason.
    #[error("glommio shard {shard} (core {core}): creating the executor failed: {source}{hint}")]
    Executor {
        shard: usize,
        core: usize,
        source: io::Error,
        hint: String,
    },
    /// Preparing the listener failed.
    #[error("glommio shard {shard}: preparing the listener: {source}")]
    Listener { shard: usize, source: io::Error },
    /// accept failed with an error that is neither transient nor exhaustion.
    #[error("glommio shard {shard}: accept on {addr} failed: {source}")]
    Accept {
        shard: usize,
        addr: String,
        source: io::Error,
    },
    /// The stop watch could not be set up or failed.
    #[error("glommio shard {shard}: watching the stop signal: {source}")]
    StopWatch { shard: usize, source: io::Error },
}

impl From<ShardError> for io::Error {
    fn from(e: ShardError) -> io::Error {
        let kind = match &e {
            ShardError::MemLock { .. } => io::ErrorKind::OutOfMemory,
            ShardError::Executor { source, .. }
            | ShardError::Listener { source, .. }
            | ShardError::Accept { source, .. }
            | ShardError::StopWatch { source, .. } => source.kind(),
        };
        io::Error::new(kind, e.to_string())
    }
}

/// Observation points for tests; production passes [`NoHooks`] and they compile away.
pub(crate) trait Hooks {
    /// Called from the executor's main task once the listener is adopted.
    fn started(&self, _listener: RawFd) {}
    /// Called for every accepted connection after its options are applied.
    fn accepted(&self, _conn: RawFd) {}
}

/// No observation.
pub(crate) struct NoHooks;
impl Hooks for NoHooks {}

/// Serves the shard on the calling (already pinned) thread until the stop fires.
pub(crate) fn run(ctx: ShardContext, hooks: impl Hooks + 'static) -> io::Result<ShardStats> {
    let ShardContext {
        shard,
        core,
        shards,
        listener,
        service,
        limits,
        stop,
        ..
    } = ctx;
    // Placement::Unbound: glommio neither pins this thread nor its blocking-pool thread, so
    // both keep the runner's pin to `core`.
    let builder = LocalExecutorBuilder::new(Placement::Unbound)
        .name(&format!("glommio-shard{shard}"))
        .io_memory(IO_MEMORY)
        .ring_depth(RING_DEPTH);
    // The exit eventfd is created first, so it is never mistaken for glommio's notifier.
    let (exit, executor, notifier) = leak::make_identified(ExitFd::new, || builder.make());
    let exit = exit.map_err(|source| ShardError::StopWatch { shard, source })?;
    let executor = executor.map_err(|e| executor_error(e, shard, core, shards))?;

    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a: SocketAddr| a.to_string());
    set_blocking(listener.as_raw_fd()).map_err(|source| ShardError::Listener { shard, source })?;
    let listener = OwnedFd::from(listener);

    let shared = Rc::new(Shared::new(service, limits));
    let watch = StopWatch { stop, exit };
    let result = executor.run(serve(shard, addr, listener, watch, shared, Rc::new(hooks)));
    drop(executor);
    // glommio keeps its notifier eventfd open forever (see `leak`): account for it.
    if let Some(notifier) = notifier {
        notifier.record_if_leaked();
    }
    result
}

/// Maps glommio's executor errors into messages that say what to do.
pub(crate) fn executor_error(
    e: GlommioError<()>,
    shard: usize,
    core: usize,
    shards: usize,
) -> io::Error {
    if let GlommioError::ReactorError(ReactorErrorKind::MemLockLimit(limit, min)) = e {
        return ShardError::MemLock {
            shard,
            core,
            limit,
            min,
            fix_kib: ulimit_kib(min),
        }
        .into();
    }
    let source = io::Error::from(e);
    let hint = match source.raw_os_error() {
        Some(libc::ENOMEM) => format!(
            " (io_uring charges its rings and registered buffers to RLIMIT_MEMLOCK, counted \
             per user; {shards} shard(s) need {} KiB. Fix: ulimit -l {0})",
            ulimit_kib(memlock_need(shards, false))
        ),
        Some(libc::EPERM) => {
            " (io_uring refused: check kernel.io_uring_disabled and seccomp)".to_string()
        }
        _ => String::new(),
    };
    ShardError::Executor {
        shard,
        core,
        source,
        hint,
    }
    .into()
}

fn set_blocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl(F_GETFL) takes no pointers; `fd` is open.
    let flags = unsafe { syscall!(fcntl(fd, libc::F_GETFL)) }?;
    // SAFETY: fcntl(F_SETFL) takes an integer argument; `fd` is open.
    unsafe { syscall!(fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK)) }?;
    Ok(())
}

/// How the main task's wait ended.
enum Woke {
    Stop(io::Result<()>),
    AcceptEnded(io::Result<()>),
}

/// The executor's main task.
async fn serve(
    shard: usize,
    addr: String,
    listener: OwnedFd,
    watch: StopWatch,
    shared: Rc<Shared>,
    hooks: Rc<impl Hooks + 'static>,
) -> io::Result<ShardStats> {
    let (exit, mut task) = watch.spawn();
    let listener_fd = listener.as_raw_fd();
    // SAFETY: `listener` is the runner's listening TCP socket, owned by this shard; its
    // ownership moves into glommio's listener, which closes it on drop.
    let listener = Rc::new(unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) });
    hooks.started(listener_fd);

    let stopping = Rc::new(Cell::new(false));
    let mut acceptor = glommio::spawn_local(accept_loop(
        shard,
        addr,
        Rc::clone(&listener),
        Rc::clone(&shared),
        Rc::clone(&stopping),
        Rc::clone(&hooks),
    ));

    let woke = future::or(async { Woke::Stop((&mut task).await) }, async {
        Woke::AcceptEnded((&mut acceptor).await)
    })
    .await;

    stopping.set(true);
    // Completes a pending accept with EINVAL instead of cancelling it; the loop then sees
    // `stopping`. Connections still in the backlog are reset by the kernel.
    // SAFETY: shutdown on a descriptor the listener still owns; no memory is involved.
    let _ = unsafe { libc::shutdown(listener_fd, libc::SHUT_RDWR) };
    let (stop_result, accept_result) = match woke {
        Woke::Stop(r) => (r, acceptor.await),
        Woke::AcceptEnded(r) => {
            // Release the blocking poll before leaving: glommio's blocking thread must hand
            // back its result while the executor still exists.
            exit.wake();
            (task.await, r)
        }
    };

    // Every connection task is cancelled and awaited, so their sockets close here.
    let conns: Vec<JoinHandle<()>> = shared.conns.borrow_mut().drain().map(|(_, h)| h).collect();
    for handle in &conns {
        handle.cancel();
    }
    for handle in conns {
        let _ = handle.await;
    }
    drop(listener);

    accept_result?;
    stop_result.map_err(|source| ShardError::StopWatch { shard, source })?;
    let c = &shared.counters;
    Ok(ShardStats {
        accepted: c.accepted.get(),
        closed: c.closed.get(),
        bytes_in: c.bytes_in.get(),
        bytes_out: c.bytes_out.get(),
        // glommio's count of scheduler passes: one per turn of its loop that found work,
        // plus the final empty pass of each turn. The closest thing it exposes to loop turns.
        loop_iterations: glommio::executor().executor_stats().scheduler_runs(),
        reads: c.reads.get(),
        writes: c.writes.get(),
        accept_pauses: c.accept_pauses.get(),
        backpressure_pauses: c.backpressure_pauses.get(),
        peak_connections: c.peak_connections.get(),
        // Like the other event-driven backends, glommio leaves connections in the backlog
        // at its limit instead of refusing them.
        refused: 0,
        ..ShardStats::default()
    })
}

/// Accepts until the stop, pausing on descriptor exhaustion and at `max_connections`.
async fn accept_loop<H: Hooks>(
    shard: usize,
    addr: String,
    listener: Rc<TcpListener>,
    shared: Rc<Shared>,
    stopping: Rc<Cell<bool>>,
    hooks: Rc<H>,
) -> io::Result<()> {
    let c = &shared.counters;
    loop {
        if stopping.get() {
            return Ok(());
        }
        if c.open.get() >= shared.limits.max_connections as u64 {
            bump(&c.accept_pauses, 1);
            glommio::timer::sleep(ACCEPT_PAUSE).await;
            continue;
        }
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                if stopping.get() {
                    return Ok(());
                }
                let e = io::Error::from(e);
                if is_accept_exhaustion(&e) {
                    // The connection stays in the backlog; retrying at once would spin.
                    bump(&c.accept_pauses, 1);
                    glommio::timer::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
                if is_accept_transient(&e) {
                    continue;
                }
                return Err(ShardError::Accept {
                    shard,
                    addr,
                    source: e,
                }
                .into());
            }
        };
        bump(&c.accepted, 1);
        if prepare_accepted(&stream).is_err() {
            // Only fails for a connection already gone; dropping it closes it.
            bump(&c.closed, 1);
            continue;
        }
        hooks.accepted(stream.as_raw_fd());
        let guard = shared.open_connection();
        let id = guard.id();
        let session = shared.service.session();
        let handle = glommio::spawn_local(conn::serve(stream, session, guard)).detach();
        shared.track(id, handle);
    }
}

/// The stop signal, to be awaited on glommio's blocking thread.
struct StopWatch {
    stop: StopSignal,
    exit: ExitFd,
}

/// A private eventfd that releases the blocking `poll` when the shard ends without a stop.
#[derive(Clone)]
struct ExitFd(Arc<OwnedFd>);

impl ExitFd {
    fn new() -> io::Result<ExitFd> {
        // SAFETY: eventfd takes no pointers.
        let fd = unsafe { syscall!(eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)) }?;
        // SAFETY: eventfd just returned this descriptor and nothing else owns it.
        Ok(ExitFd(Arc::new(unsafe { OwnedFd::from_raw_fd(fd) })))
    }

    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd we own; written at most a
        // few times, so the counter cannot overflow.
        let _ = unsafe {
            libc::write(
                self.0.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

impl StopWatch {
    /// Starts the wait; returns the exit fd and the task that ends when the wait does.
    fn spawn(self) -> (ExitFd, glommio::Task<io::Result<()>>) {
        let StopWatch { stop, exit } = self;
        let exit_fd = exit.clone();
        let task = glommio::spawn_local(
            glommio::executor().spawn_blocking(move || wait_readable(&stop, &exit_fd)),
        );
        (exit, task)
    }
}

/// Blocks until the stop signal or the exit fd is readable. Never reads either.
fn wait_readable(stop: &StopSignal, exit: &ExitFd) -> io::Result<()> {
    let mut fds = [
        libc::pollfd {
            fd: stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: exit.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: the pollfd array is live and initialised for the call, with its true length; the kernel writes only revents.
        match unsafe { syscall!(poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1)) } {
            Ok(n) if n > 0 => return Ok(()),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}
