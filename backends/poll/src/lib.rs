//! `poll`: one `poll(2)` loop per pinned shard, in raw libc. The control that shows why
//! epoll exists.
//!
//! Each shard keeps one `pollfd` array (the stop eventfd, its listener, then one entry per
//! connection) that lives as long as the shard and is reused every turn: connections are
//! appended on accept and swap-removed on close, and each turn rewrites only the `events`
//! of every entry. Every `poll` call still hands the kernel the whole array, which the
//! kernel copies in, walks (one `->poll()` per descriptor, idle or not, plus a wait-queue
//! registration for each) and copies back out; the loop then walks it again for `revents`.
//! Cost per call is therefore O(open connections), where epoll's is O(ready ones): with
//! many idle connections, each active request pays for all of them. That growth is what
//! the idle sweep shows for this backend.
//!
//! # Strategy
//!
//! Level-triggered like epoll-lt: one `read(2)` per readiness report into the shard's one
//! read buffer, the bytes straight into the session, then an immediate `send(2)` of what
//! it answered. `POLLOUT` is asked for only while a write would block, and `POLLIN` is
//! dropped while a connection's pending output is at `limits.max_pending_output`
//! (backpressure) or once it stops reading (peer finished, or the session asked to close).
//!
//! # Closing
//!
//! The shared close policy ([`backend_api::close`]): once the session asked to close and
//! the output is flushed, one read; if it found input, `shutdown(SHUT_WR)`, then `POLLIN`
//! again to read and discard until EOF, the linger deadline or the discard budget (the
//! poll timeout is the nearest linger deadline); if not, the close at once. After the peer's EOF the connection closes as soon as it is flushed.
//!
//! # Memory per connection
//!
//! An idle connection costs a `Conn` (descriptor, session, empty output buffer, phase
//! with room for the linger deadline, pause flag: 96 bytes on x86_64) plus its 8-byte
//! `pollfd`, in two vectors that grow by doubling. Measured before the phase replaced two
//! flags (a 72-byte `Conn`): 116 to 143 bytes of user memory per idle connection (RSS
//! growth over 8,000 and 2,000 idle echo connections that each did one round trip, release
//! build, x86_64); the phase adds 24 bytes to that.
//! The `limits.read_buffer` bytes of read buffer are one per shard.
#![deny(missing_docs, rust_2018_idioms)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use backend_api::close::{self, Linger, LingerStep, Queued};
use backend_api::listener::{accept_nonblocking, prepare_accepted, Accepted};
use backend_api::{
    syscall, AnySession, Backend, Flow, Limits, OutBuf, Session, ShardContext, ShardStats,
    Unsupported, ACCEPT_PAUSE,
};

/// `poll(2)` per shard, one pollfd array reused across turns.
#[derive(Debug, Default, Clone, Copy)]
pub struct Poll;

/// Index of the stop eventfd in the pollfd array.
const STOP: usize = 0;
/// Index of the listener in the pollfd array.
const LISTENER: usize = 1;
/// Index of the first connection in the pollfd array.
const FIRST_CONN: usize = 2;
/// Most connections accepted per turn, so a connection storm cannot starve the
/// connections already open (each accept batch is followed by a turn serving them).
const ACCEPT_BATCH: usize = 64;

impl Backend for Poll {
    fn name(&self) -> &'static str {
        "poll"
    }

    fn describe(&self) -> &'static str {
        "poll(2) per shard, level-triggered, pollfd array reused each turn: O(open fds) per call"
    }

    fn probe(&self) -> Result<(), Unsupported> {
        // poll(2) is in every kernel; its practical limit is cost, not support.
        Ok(())
    }

    fn run_shard(&self, ctx: ShardContext) -> io::Result<ShardStats> {
        Shard::new(&ctx).run(&ctx)
    }
}

/// One connection's state. Entry `i` of `Shard::conns` belongs to `pollfds[FIRST_CONN + i]`.
#[derive(Debug)]
struct Conn {
    fd: OwnedFd,
    session: AnySession,
    out: OutBuf,
    phase: Phase,
    /// True while reading is paused because the pending output is full.
    paused: bool,
}

/// Where a connection is in its life; see the crate docs' "Closing".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading requests (unless paused by backpressure).
    Open,
    /// No more reads: writing what is pending. `eof`: the peer finished, so the close
    /// follows the flush; else the session asked to close and the connection lingers.
    Flushing { eof: bool },
    /// Write side shut down; discarding input until EOF, the deadline or the budget.
    Lingering(Linger),
}

/// What became of a connection after it was served.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    Keep,
    Close,
}

struct Shard {
    pollfds: Vec<libc::pollfd>,
    conns: Vec<Conn>,
    buf: Vec<u8>,
    limits: Limits,
    stats: ShardStats,
    /// Set while accepting is paused after descriptor exhaustion.
    paused_until: Option<Instant>,
    /// True while the shard holds `max_connections` (counted once per stretch).
    at_limit: bool,
}

impl Shard {
    fn new(ctx: &ShardContext) -> Shard {
        let pollfd = |fd: RawFd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        Shard {
            pollfds: vec![
                pollfd(ctx.stop.as_raw_fd()),
                pollfd(ctx.listener.as_raw_fd()),
            ],
            conns: Vec::new(),
            buf: vec![0; ctx.limits.read_buffer],
            limits: ctx.limits,
            stats: ShardStats::default(),
            paused_until: None,
            at_limit: false,
        }
    }

    fn run(mut self, ctx: &ShardContext) -> io::Result<ShardStats> {
        loop {
            let timeout = self.prepare_turn();
            let nfds = self.pollfds.len() as libc::nfds_t;
            // SAFETY: `pollfds` is a live, initialised array of `nfds` entries that the
            // kernel may write `revents` into; nothing else touches it during the call.
            let ready = unsafe { libc::poll(self.pollfds.as_mut_ptr(), nfds, timeout) };
            self.stats.loop_iterations += 1;
            if ready < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            if self.pollfds[STOP].revents != 0 {
                break;
            }
            let now = Instant::now();
            // Walk backwards: closing swap-removes entry `i` with the last one, which was
            // already served this turn. A lingering connection is visited without events
            // too: its deadline may have passed.
            for i in (0..self.conns.len()).rev() {
                let revents = self.pollfds[FIRST_CONN + i].revents;
                let lingering = matches!(self.conns[i].phase, Phase::Lingering(_));
                if (revents != 0 || lingering) && self.serve(i, revents, now) == Fate::Close {
                    self.close(i);
                }
            }
            if ready == 0 {
                continue;
            }
            if self.pollfds[LISTENER].revents & libc::POLLIN != 0 {
                self.accept(ctx)?;
            }
        }
        // Closing every connection is dropping them.
        self.stats.closed += self.conns.len() as u64;
        self.conns.clear();
        Ok(self.stats)
    }

    /// Sets every entry's `events` for this turn; returns the poll timeout in ms.
    fn prepare_turn(&mut self) -> libc::c_int {
        let mut next_deadline: Option<Instant> = None;
        for (pfd, conn) in self.pollfds[FIRST_CONN..].iter_mut().zip(&self.conns) {
            let mut events = 0;
            match conn.phase {
                Phase::Open if !conn.paused => events |= libc::POLLIN,
                Phase::Lingering(l) => {
                    events |= libc::POLLIN;
                    next_deadline =
                        Some(next_deadline.map_or(l.deadline(), |d| d.min(l.deadline())));
                }
                _ => {}
            }
            if !conn.out.is_empty() {
                events |= libc::POLLOUT;
            }
            pfd.events = events;
        }
        let full = self.conns.len() >= self.limits.max_connections;
        if full && !self.at_limit {
            self.stats.accept_pauses += 1;
        }
        self.at_limit = full;
        let now = Instant::now();
        if self.paused_until.is_some_and(|until| until <= now) {
            self.paused_until = None;
        }
        let wake = match (self.paused_until, next_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Round up so the wait is not cut short into a busy turn.
        let timeout = wake.map_or(-1, |at| {
            let left = at.saturating_duration_since(now);
            left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int
        });
        // A listener left in the set while paused would report POLLIN every turn: the
        // level-triggered accept livelock. Leaving it out keeps the wait a real wait.
        self.pollfds[LISTENER].events = if full || self.paused_until.is_some() {
            0
        } else {
            libc::POLLIN
        };
        timeout
    }

    /// Serves connection `i` after `poll` reported `revents` for it (none for a lingering
    /// connection whose deadline may have passed).
    fn serve(&mut self, i: usize, revents: libc::c_short, now: Instant) -> Fate {
        let conn = &mut self.conns[i];
        if revents & libc::POLLNVAL != 0 {
            return Fate::Close;
        }
        if let Phase::Lingering(linger) = &mut conn.phase {
            return linger_once(
                conn.fd.as_raw_fd(),
                linger,
                revents,
                &mut self.buf,
                now,
                &mut self.stats,
            );
        }
        // POLLHUP and POLLERR come whatever was asked: let the read or write that
        // follows find out what happened (pending input is still readable after a HUP).
        let want_read = conn.phase == Phase::Open && !conn.paused;
        if want_read && revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            match read_once(conn, &mut self.buf, &mut self.stats) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Fate::Close,
            }
        }
        if !conn.out.is_empty() {
            if let Err(e) = flush(conn, &mut self.stats) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Fate::Close;
                }
            }
        } else if !want_read && revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            // Nothing to read or write and the socket failed: nothing more can happen.
            return Fate::Close;
        }
        let full = self.limits.output_full(conn.out.len());
        if full && !conn.paused {
            self.stats.backpressure_pauses += 1;
        }
        conn.paused = full;
        match conn.phase {
            Phase::Flushing { eof: true } if conn.out.is_empty() => Fate::Close,
            Phase::Flushing { eof: false } if conn.out.is_empty() => {
                // Everything answered. Nothing more queued: close now (a FIN). Else FIN
                // after the last response, then linger.
                let queued = close::discard_queued(conn.fd.as_fd(), &mut self.buf);
                self.stats.reads += 1;
                let n = match queued {
                    Ok(Queued::Discarded(n)) => n,
                    Ok(Queued::Nothing | Queued::Eof) | Err(_) => return Fate::Close,
                };
                self.stats.bytes_in += n as u64;
                if close::shutdown_write(conn.fd.as_fd()).is_err() {
                    return Fate::Close;
                }
                let mut linger = Linger::start(now);
                if linger.on_read(n, now) == LingerStep::Close {
                    return Fate::Close;
                }
                conn.phase = Phase::Lingering(linger);
                Fate::Keep
            }
            _ => Fate::Keep,
        }
    }

    /// Closes connection `i`; the last connection takes its place.
    fn close(&mut self, i: usize) {
        self.conns.swap_remove(i);
        self.pollfds.swap_remove(FIRST_CONN + i);
        self.stats.closed += 1;
    }

    /// Accepts up to [`ACCEPT_BATCH`] connections, stopping at `EAGAIN`.
    fn accept(&mut self, ctx: &ShardContext) -> io::Result<()> {
        for _ in 0..ACCEPT_BATCH {
            if self.conns.len() >= self.limits.max_connections {
                return Ok(());
            }
            let fd = match accept_nonblocking(ctx.listener.as_raw_fd())? {
                Accepted::Conn(fd) => fd,
                Accepted::Empty => return Ok(()),
                Accepted::Exhausted => {
                    // Out of descriptors: stop asking for a while; open connections keep
                    // being served, waiting ones stay in the backlog.
                    self.stats.accept_pauses += 1;
                    self.paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                    return Ok(());
                }
                Accepted::Retry => continue,
            };
            self.stats.accepted += 1;
            if prepare_accepted(&fd).is_err() {
                // Reset while queued; dropping `fd` closes it.
                self.stats.closed += 1;
                continue;
            }
            self.pollfds.push(libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            self.conns.push(Conn {
                fd,
                session: ctx.service.session(),
                out: OutBuf::new(),
                phase: Phase::Open,
                paused: false,
            });
            self.stats.peak_connections = self.stats.peak_connections.max(self.conns.len() as u64);
        }
        Ok(())
    }
}

/// One `read(2)` into the shard's buffer, handed to the session. Read 0 or `Flow::Close`
/// stops reading; what is pending is still written before the close.
fn read_once(conn: &mut Conn, buf: &mut [u8], stats: &mut ShardStats) -> io::Result<()> {
    // SAFETY: the pointer and length describe `buf`, writable and exclusively borrowed for the call.
    let n = unsafe {
        syscall!(read(
            conn.fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len()
        ))
    }?;
    stats.reads += 1;
    if n == 0 {
        conn.phase = Phase::Flushing { eof: true };
        return Ok(());
    }
    let n = n as usize;
    stats.bytes_in += n as u64;
    if conn.session.on_input(&buf[..n], conn.out.tail()) == Flow::Close {
        conn.phase = Phase::Flushing { eof: false };
    }
    Ok(())
}

/// One turn of a lingering connection: one read whose bytes are thrown away if `poll`
/// reported input, then the deadline check.
fn linger_once(
    fd: RawFd,
    linger: &mut Linger,
    revents: libc::c_short,
    buf: &mut [u8],
    now: Instant,
    stats: &mut ShardStats,
) -> Fate {
    if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
        // SAFETY: the pointer and length describe `buf`, writable and exclusively borrowed for the call.
        match unsafe { syscall!(read(fd, buf.as_mut_ptr().cast(), buf.len())) } {
            Ok(n) => {
                stats.reads += 1;
                stats.bytes_in += n as u64;
                if linger.on_read(n as usize, now) == LingerStep::Close {
                    return Fate::Close;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return Fate::Close,
        }
    }
    if linger.expired(now) {
        Fate::Close
    } else {
        Fate::Keep
    }
}

/// Writes pending output until done or `EAGAIN`. `MSG_NOSIGNAL`: a vanished peer is an
/// `EPIPE` for this connection, not a `SIGPIPE` for the process.
fn flush(conn: &mut Conn, stats: &mut ShardStats) -> io::Result<()> {
    while !conn.out.is_empty() {
        let pending = conn.out.pending();
        // SAFETY: the pointer and length describe `pending`, readable for the duration of the call.
        match unsafe {
            syscall!(send(
                conn.fd.as_raw_fd(),
                pending.as_ptr().cast(),
                pending.len(),
                libc::MSG_NOSIGNAL,
            ))
        } {
            Ok(n) => {
                stats.writes += 1;
                stats.bytes_out += n as u64;
                conn.out.advance(n as usize);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
