//! `blocking`: one thread per connection with blocking sockets, the oldest server design,
//! bounded by a thread cap.
//!
//! Each pinned shard thread waits in `poll(2)` on its listener and the stop eventfd,
//! accepts, and hands every connection to a new thread of its own that loops
//! `recv` → session → `send` on a blocking socket until the connection ends. Connection
//! threads inherit the shard thread's pinning (Linux threads inherit the creator's
//! affinity), so a shard's connections all share its core and the kernel scheduler, not
//! an event loop, multiplexes them: what this baseline measures is a context switch per
//! wake-up and a thread per connection.
//!
//! # The thread cap
//!
//! A shard runs at most `min(limits.max_connections, MAX_THREADS_PER_SHARD)` connection
//! threads ([`thread_cap`]). A connection accepted beyond the cap (or one whose thread
//! the system refuses to create) is **refused**: closed at once with a reset
//! (`SO_LINGER` 0, so the client reads `ECONNRESET` rather than a clean end), counted in
//! [`ShardStats::refused`] and reported on stderr with the cap and how to change it. The server
//! keeps serving the connections it holds and accepts again as soon as one ends. Unlike
//! the event-driven backends, which leave connections waiting in the backlog at
//! `max_connections`, this one refuses them, so a load generator sees the limit instead
//! of a silent stall.
//!
//! # Backpressure
//!
//! A connection thread writes everything the session produced with blocking `send`s
//! before it reads again, so pending output never exceeds what one read produced: a
//! client that writes and never reads blocks its thread in `send`, and nothing more is
//! read from it. `send` uses `MSG_NOSIGNAL`, so a vanished peer is an `EPIPE` for that
//! connection only.
//!
//! # Closing
//!
//! The shared close policy ([`backend_api::close`]): after the peer's EOF the thread
//! closes (its output is always written before it reads again); after the session's
//! `Flow::Close` it writes the last response and, if input is still queued, shuts down its
//! write side and discards input until EOF or the linger deadline
//! ([`close::linger_blocking`]).
//!
//! # Stop
//!
//! Every open connection's descriptor is registered with its shard. At stop the shard
//! calls `shutdown(SHUT_RDWR)` on each (which wakes a thread blocked in `recv` with 0 and
//! one blocked in `send` with `EPIPE`, and a lingering one's `poll`) and waits until every connection thread has ended.
//!
//! # Memory per connection
//!
//! A connection thread's user memory is its stack ([`CONNECTION_STACK`], of which only
//! the touched pages are resident) plus its own read buffer of `limits.read_buffer` bytes
//! (a blocked `recv` needs its buffer, so it cannot be shared), touched only as far as
//! reads filled it, plus the thread's libc and Rust runtime state. Measured: about 21 KiB
//! of RSS per idle connection (2,000 idle echo connections that each did one round trip,
//! release build, x86_64), plus the kernel's per-thread structures (a 16 KiB kernel stack
//! and the task struct), which RSS does not show. The event-driven backends keep 0.1 to
//! 1.3 KiB.
#![deny(missing_docs, rust_2018_idioms)]

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use backend_api::close;
use backend_api::listener::{is_accept_exhaustion, is_accept_transient, prepare_accepted};
use backend_api::{
    syscall, AnySession, Backend, Flow, Limits, OutBuf, Session, ShardContext, ShardStats,
    Unsupported, ACCEPT_PAUSE,
};

/// One thread per connection, blocking sockets, a thread cap per shard.
#[derive(Debug, Default, Clone, Copy)]
pub struct Blocking;

/// Most connection threads one shard runs, whatever `limits.max_connections` allows. Past
/// a few thousand threads per core the scheduler, not the I/O strategy, is what a run
/// measures, and every thread holds a kernel stack.
pub const MAX_THREADS_PER_SHARD: usize = 4096;

/// Stack size of a connection thread: the session and the `recv`/`send` loop need a few
/// KiB; only touched pages become resident.
pub const CONNECTION_STACK: usize = 128 * 1024;

/// The number of connection threads a shard with `limits` runs at most.
pub fn thread_cap(limits: &Limits) -> usize {
    limits.max_connections.min(MAX_THREADS_PER_SHARD)
}

impl Backend for Blocking {
    fn name(&self) -> &'static str {
        "blocking"
    }

    fn describe(&self) -> &'static str {
        "one thread per connection, blocking sockets, at most 4096 connection threads per shard"
    }

    fn probe(&self) -> Result<(), Unsupported> {
        // Threads and blocking sockets are everywhere; the cap is reported per connection.
        Ok(())
    }

    fn run_shard(&self, ctx: ShardContext) -> io::Result<ShardStats> {
        let shard = Arc::new(Shared::default());
        let result = accept_loop(&ctx, &shard);
        // Whether the loop ended by stop or by error, end every connection thread.
        shard.stop_connections();
        let mut stats = result?;
        let done = shard.lock().stats;
        stats.closed += done.closed;
        stats.bytes_in += done.bytes_in;
        stats.bytes_out += done.bytes_out;
        stats.reads += done.reads;
        stats.writes += done.writes;
        Ok(stats)
    }
}

/// What a shard and its connection threads share.
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when the last connection thread ends.
    idle: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Open connections by id. A thread removes its entry and closes its descriptor under
    /// the lock, so every descriptor here is open while the lock is held.
    open: HashMap<u64, RawFd>,
    next_id: u64,
    /// Counts of connections that ended.
    stats: ShardStats,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a single insert, remove or add: a poisoned state is consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Shuts every open connection down and waits until all their threads have ended.
    fn stop_connections(&self) {
        let mut state = self.lock();
        for &fd in state.open.values() {
            // SAFETY: `fd` is open while it is in `open` and we hold the lock (see
            // `State::open`); shutdown does not close it, its owner still will.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
        while !state.open.is_empty() {
            state = self
                .idle
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

fn accept_loop(ctx: &ShardContext, shard: &Arc<Shared>) -> io::Result<ShardStats> {
    let cap = thread_cap(&ctx.limits);
    let mut stats = ShardStats::default();
    let mut paused_until: Option<Instant> = None;
    let mut pfds = [
        libc::pollfd {
            fd: ctx.stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: ctx.listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // While paused, wait on the stop signal alone, for the rest of the pause.
        let (nfds, timeout) = match paused_until {
            Some(until) => {
                let left = until.saturating_duration_since(Instant::now());
                (
                    1,
                    left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int,
                )
            }
            None => (2, -1),
        };
        // SAFETY: `pfds` is a live array of at least `nfds` initialised entries.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), nfds, timeout) };
        stats.loop_iterations += 1;
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if pfds[0].revents != 0 {
            break;
        }
        if paused_until.is_some_and(|until| Instant::now() >= until) {
            paused_until = None;
        }
        if paused_until.is_some() || pfds[1].revents == 0 {
            continue;
        }
        // SAFETY: null address and length pointers mean "peer address not wanted"; the listener fd is open.
        let fd = match unsafe {
            syscall!(accept4(
                ctx.listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                // No SOCK_NONBLOCK: the connection's socket blocks.
                libc::SOCK_CLOEXEC,
            ))
        } {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if is_accept_exhaustion(&e) => {
                stats.accept_pauses += 1;
                paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                continue;
            }
            Err(e) if is_accept_transient(&e) => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("accept4 failed: {e}"))),
        };
        // SAFETY: accept4 just returned this descriptor and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        stats.accepted += 1;
        if prepare_accepted(&fd).is_err() {
            // Reset while queued; dropping `fd` closes it.
            stats.closed += 1;
            continue;
        }
        let refusal = {
            let mut state = shard.lock();
            let open = state.open.len();
            if open >= cap {
                drop(state);
                // Closed here, so counted here.
                reset(fd);
                stats.closed += 1;
                Some(format!(
                    "{open} connection threads open, the cap is {cap} \
                     (min(limits.max_connections, MAX_THREADS_PER_SHARD = {MAX_THREADS_PER_SHARD}))"
                ))
            } else {
                let id = state.next_id;
                state.next_id += 1;
                state.open.insert(id, fd.as_raw_fd());
                stats.peak_connections = stats.peak_connections.max(state.open.len() as u64);
                drop(state);
                // On failure the connection was unregistered, closed and counted by
                // `Connection`'s Drop.
                spawn_connection(ctx, shard, id, fd)
                    .err()
                    .map(|e| format!("the system refused a connection thread: {e}"))
            }
        };
        if let Some(reason) = refusal {
            stats.refused += 1;
            let refused = stats.refused;
            // Log the 1st, 2nd, 4th, 8th... refusal: visible, but no log storm.
            if refused.is_power_of_two() {
                eprintln!(
                    "blocking shard {}: refused a connection ({refused} so far): {reason}; \
                     run more shards, or raise limits.max_connections up to the cap",
                    ctx.shard
                );
            }
        }
    }
    if stats.refused > 0 {
        eprintln!(
            "blocking shard {}: refused {} connection(s) in all beyond the thread cap of {cap}",
            ctx.shard, stats.refused
        );
    }
    Ok(stats)
}

/// Starts the thread for connection `id`, registered under that id.
fn spawn_connection(
    ctx: &ShardContext,
    shard: &Arc<Shared>,
    id: u64,
    fd: OwnedFd,
) -> io::Result<()> {
    let conn = Connection {
        raw: fd.as_raw_fd(),
        fd: Some(fd),
        session: ctx.service.session(),
        limits: ctx.limits,
        shard: Arc::clone(shard),
        id,
        stats: ShardStats::default(),
    };
    // When the system refuses the thread, `spawn` drops the closure and with it `conn`,
    // whose Drop unregisters, counts and closes the connection.
    std::thread::Builder::new()
        .name(format!("blocking-c{}", ctx.shard))
        .stack_size(CONNECTION_STACK)
        .spawn(move || conn.run())
        .map(drop)
}

/// One connection, owned by its thread.
struct Connection {
    /// Taken (closed) only by Drop.
    fd: Option<OwnedFd>,
    /// `fd`'s number, valid until Drop.
    raw: RawFd,
    session: AnySession,
    limits: Limits,
    shard: Arc<Shared>,
    id: u64,
    stats: ShardStats,
}

impl Connection {
    fn run(mut self) {
        let mut buf = vec![0u8; self.limits.read_buffer];
        let mut out = OutBuf::new();
        loop {
            // SAFETY: the pointer and length describe `buf`, writable and exclusively borrowed for the call.
            let n = match unsafe { syscall!(recv(self.raw, buf.as_mut_ptr().cast(), buf.len(), 0)) }
            {
                Ok(n) => n as usize,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ECONNRESET and friends: this connection only.
                Err(_) => return,
            };
            self.stats.reads += 1;
            if n == 0 {
                // The peer finished; everything it asked for was already written.
                return;
            }
            self.stats.bytes_in += n as u64;
            let flow = self.session.on_input(&buf[..n], out.tail());
            if self.write_all(&mut out).is_err() {
                return;
            }
            if flow == Flow::Close {
                // The close policy: FIN after the last response, then discard input until
                // EOF or the linger deadline, so that no unread input turns the close into
                // a reset that would destroy responses still queued.
                if let Some(fd) = &self.fd {
                    let done = close::linger_blocking(fd.as_fd(), &mut buf);
                    self.stats.reads += done.reads;
                    self.stats.bytes_in += done.bytes;
                }
                return;
            }
        }
    }

    /// Blocking `send`s until `out` is empty. Nothing is read meanwhile: that is this
    /// model's backpressure.
    fn write_all(&mut self, out: &mut OutBuf) -> io::Result<()> {
        while !out.is_empty() {
            let pending = out.pending();
            // SAFETY: the pointer and length describe `pending`, readable for the duration of the call.
            match unsafe {
                syscall!(send(
                    self.raw,
                    pending.as_ptr().cast(),
                    pending.len(),
                    libc::MSG_NOSIGNAL,
                ))
            } {
                Ok(n) => {
                    self.stats.writes += 1;
                    self.stats.bytes_out += n as u64;
                    out.advance(n as usize);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut state = self.shard.lock();
        // Unregister and close under the lock: the shard never shuts down a descriptor
        // number that was reused, and once the shard sees `open` empty every connection
        // descriptor is closed (stop leaks none).
        state.open.remove(&self.id);
        drop(self.fd.take());
        state.stats.closed += 1;
        state.stats.bytes_in += self.stats.bytes_in;
        state.stats.bytes_out += self.stats.bytes_out;
        state.stats.reads += self.stats.reads;
        state.stats.writes += self.stats.writes;
        if state.open.is_empty() {
            self.shard.idle.notify_all();
        }
    }
}

/// Closes `fd` with a reset (`SO_LINGER` 0), so the client is told it was refused.
fn reset(fd: OwnedFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the option value points at `linger`, a live libc::linger, with its size; the kernel copies it.
    let _ = unsafe {
        syscall!(setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        ))
    };
    drop(fd);
}
