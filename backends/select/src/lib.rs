//! `select`: one `select(2)` loop per pinned shard, in raw libc. The oldest readiness API,
//! the baseline for the field notes' claim that select neither scales nor reaches past
//! `FD_SETSIZE`.
//!
//! Each turn the shard builds two `fd_set` bitmaps (read and write interest) from its
//! connection list, hands them to `select`, which walks every descriptor below the
//! highest one set (one `->poll()` each, idle or not, plus a wait-queue registration),
//! and then walks the list again to see which bits came back. Like `poll`, the cost of a
//! call is O(open connections) where epoll's is O(ready ones).
//!
//! # `FD_SETSIZE`
//!
//! An `fd_set` is a fixed bitmap of [`FD_SETSIZE`] (1024) bits: a descriptor numbered
//! 1024 or above cannot be put in one (glibc's `FD_SET` aborts; writing past the bitmap
//! would corrupt memory). The backend never caps silently and never watches a descriptor
//! it cannot represent:
//!
//! - a connection whose accepted descriptor is at or above `FD_SETSIZE` is closed at
//!   once, unserved, and counted in `ShardStats::refused` (and `accepted`, `closed`); the
//!   first refusal of each shard is printed to standard error with the reason;
//! - a listener or stop signal at or above `FD_SETSIZE` fails the shard with that reason;
//! - [`MAX_CONNECTIONS`] is what one server process can hold (`FD_SETSIZE` minus
//!   [`RESERVED_FDS`] for standard streams, listeners and stop signals): the harness
//!   reads it through its registry and records a cell needing more as `unsupported`
//!   with the reason, before running it.
//!
//! # Strategy
//!
//! Level-triggered like poll and epoll-lt: one `read(2)` per readiness report into the
//! shard's one read buffer, the bytes straight into the session, then an immediate
//! `send(2)` of what it answered, until done or `EAGAIN`. The write set holds a
//! connection only while output is pending; the read set drops it while its pending
//! output is at `limits.max_pending_output` (backpressure) or once it stops reading.
//!
//! # Closing
//!
//! The shared close policy of [`backend_api::close`]: once the session or the peer ended
//! the connection and its output is flushed, one read checks for unread input; if there
//! is some, the write side is shut down and input is discarded until EOF, the deadline or
//! the discard budget. `select`'s timeout is cut to the nearest lingering deadline, found
//! in the walk that builds the bitmaps anyway.
#![deny(missing_docs, rust_2018_idioms)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use backend_api::close::{Linger, LingerStep};
use backend_api::listener::{accept_nonblocking, prepare_accepted, Accepted};
use backend_api::{
    syscall, AnySession, Backend, Flow, Limits, OutBuf, Service, Session, ShardContext, ShardStats,
    Unsupported, ACCEPT_PAUSE,
};

/// Bits in an `fd_set`: descriptors `0..FD_SETSIZE` are all `select(2)` can watch.
pub const FD_SETSIZE: usize = libc::FD_SETSIZE;

/// Descriptors a select server process keeps for other things than connections: the
/// standard streams, each shard's listener and stop signal, and the runner's own.
pub const RESERVED_FDS: usize = 16;

/// Most connections one select server process can hold: every one of them needs a
/// descriptor below [`FD_SETSIZE`].
pub const MAX_CONNECTIONS: usize = FD_SETSIZE - RESERVED_FDS;

/// `select(2)` per shard, interest bitmaps rebuilt each turn.
#[derive(Debug, Default, Clone, Copy)]
pub struct Select;

/// Most connections accepted per turn, so a connection storm cannot starve the
/// connections already open.
const ACCEPT_BATCH: usize = 64;

impl Backend for Select {
    fn name(&self) -> &'static str {
        "select"
    }

    fn describe(&self) -> &'static str {
        "select(2) per shard, level-triggered, fd_set bitmaps rebuilt each turn: O(highest fd) per call, fds < 1024 only"
    }

    fn probe(&self) -> Result<(), Unsupported> {
        // select(2) is in every kernel; its limit is FD_SETSIZE, which depends on the
        // cell (see MAX_CONNECTIONS), not on the machine.
        Ok(())
    }

    fn run_shard(&self, ctx: ShardContext) -> io::Result<ShardStats> {
        Shard::new(&ctx)?.run()
    }
}

/// An `fd_set` that only ever holds descriptors below [`FD_SETSIZE`].
struct FdSet(libc::fd_set);

impl FdSet {
    fn new() -> FdSet {
        // SAFETY: fd_set is a plain array of integers; all zeros is the empty set, which is
        // what FD_ZERO writes.
        FdSet(unsafe { std::mem::zeroed() })
    }

    #[inline]
    fn insert(&mut self, fd: RawFd) {
        debug_assert!((0..FD_SETSIZE as RawFd).contains(&fd));
        // SAFETY: every descriptor inserted is below FD_SETSIZE (accept refuses the others,
        // `Shard::new` rejects a listener or stop signal above it), so the bit is inside
        // the bitmap, which is live and exclusively borrowed.
        unsafe { libc::FD_SET(fd, &mut self.0) }
    }

    #[inline]
    fn contains(&self, fd: RawFd) -> bool {
        // SAFETY: as for insert: fd is below FD_SETSIZE and the bitmap is live.
        unsafe { libc::FD_ISSET(fd, &self.0) }
    }
}

/// One connection's state.
#[derive(Debug)]
struct Conn {
    fd: OwnedFd,
    session: AnySession,
    out: OutBuf,
    /// False once the peer finished sending or the session asked to close.
    reading: bool,
    /// True while reading is paused because the pending output is full.
    paused: bool,
    /// The peer's EOF was read: nothing more will arrive.
    eof: bool,
    /// Set once the write side is shut down and input is being discarded.
    linger: Option<Linger>,
}

impl Conn {
    #[inline]
    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// In the read set: to read for the session, or to discard while lingering.
    #[inline]
    fn wants_read(&self) -> bool {
        (self.reading && !self.paused) || self.linger.is_some()
    }
}

/// What became of a connection after it was served.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    Keep,
    Close,
}

/// What a discarding read found.
enum Discard {
    Data(usize),
    Empty,
    Eof,
}

struct Shard {
    stop: RawFd,
    listener: RawFd,
    service: Service,
    conns: Vec<Conn>,
    buf: Vec<u8>,
    limits: Limits,
    stats: ShardStats,
    /// Set while accepting is paused after descriptor exhaustion.
    paused_until: Option<Instant>,
    /// True while the shard holds `max_connections` (counted once per stretch).
    at_limit: bool,
    /// Connections lingering now: when none, the turn skips the clock.
    lingering: usize,
    /// The first refusal for `FD_SETSIZE` was reported on standard error.
    refusal_reported: bool,
}

/// Fails when `fd` cannot be put in an `fd_set`.
fn check_fd(fd: RawFd, what: &str) -> io::Result<()> {
    if fd as usize >= FD_SETSIZE {
        return Err(io::Error::other(format!(
            "select(2) cannot watch the {what}: its descriptor {fd} is at or above FD_SETSIZE \
             ({FD_SETSIZE}); run fewer shards or with fewer descriptors open"
        )));
    }
    Ok(())
}

impl Shard {
    fn new(ctx: &ShardContext) -> io::Result<Shard> {
        let stop = ctx.stop.as_raw_fd();
        let listener = ctx.listener.as_raw_fd();
        check_fd(stop, "stop signal")?;
        check_fd(listener, "listener")?;
        Ok(Shard {
            stop,
            listener,
            service: ctx.service,
            conns: Vec::new(),
            buf: vec![0; ctx.limits.read_buffer.max(1)],
            limits: ctx.limits,
            stats: ShardStats::default(),
            paused_until: None,
            at_limit: false,
            lingering: 0,
            refusal_reported: false,
        })
    }

    fn run(mut self) -> io::Result<ShardStats> {
        loop {
            let mut read = FdSet::new();
            let mut write = FdSet::new();
            let (nfds, deadline) = self.prepare_turn(&mut read, &mut write);
            let mut tv = deadline.map(|until| {
                let left = until.saturating_duration_since(Instant::now());
                // Round up so a deadline is not cut short into a busy turn.
                let us = left.as_micros().max(1);
                libc::timeval {
                    tv_sec: (us / 1_000_000).min(i64::MAX as u128) as libc::time_t,
                    tv_usec: (us % 1_000_000) as libc::suseconds_t,
                }
            });
            let tv_ptr = tv
                .as_mut()
                .map_or(std::ptr::null_mut(), |t| t as *mut libc::timeval);
            // SAFETY: both sets are live fd_sets holding descriptors below `nfds` <=
            // FD_SETSIZE, which the kernel may rewrite; the except set may be null; `tv_ptr`
            // is null (wait forever) or points at a live timeval the kernel may update.
            let ready = unsafe {
                syscall!(select(
                    nfds,
                    &mut read.0,
                    &mut write.0,
                    std::ptr::null_mut(),
                    tv_ptr
                ))
            };
            self.stats.loop_iterations += 1;
            let ready = match ready {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io::Error::new(e.kind(), format!("select failed: {e}"))),
            };
            self.stats.events += ready as u64;
            if read.contains(self.stop) {
                break;
            }
            let now = (self.lingering > 0).then(Instant::now);
            // Walk backwards: closing swap-removes entry `i` with the last one, which was
            // already served this turn.
            for i in (0..self.conns.len()).rev() {
                let fd = self.conns[i].raw();
                let (r, w) = (read.contains(fd), write.contains(fd));
                let fate = if r || w { self.serve(i, r) } else { Fate::Keep };
                let expired =
                    now.is_some_and(|now| self.conns[i].linger.is_some_and(|l| l.expired(now)));
                if fate == Fate::Close || expired {
                    self.close(i);
                }
            }
            if read.contains(self.listener) {
                self.accept()?;
            }
        }
        // Closing every connection is dropping them.
        self.stats.closed += self.conns.len() as u64;
        self.conns.clear();
        Ok(self.stats)
    }

    /// Fills this turn's interest sets; returns `nfds` and the nearest deadline (an
    /// accept pause's end or a lingering connection's), if any.
    fn prepare_turn(&mut self, read: &mut FdSet, write: &mut FdSet) -> (i32, Option<Instant>) {
        let mut highest = self.stop.max(self.listener);
        let mut deadline = None::<Instant>;
        read.insert(self.stop);
        for c in &self.conns {
            let fd = c.raw();
            if c.wants_read() {
                read.insert(fd);
            }
            if !c.out.is_empty() {
                write.insert(fd);
            }
            highest = highest.max(fd);
            if let Some(l) = c.linger {
                deadline = Some(deadline.map_or(l.deadline(), |d| d.min(l.deadline())));
            }
        }
        let full = self.conns.len() >= self.limits.max_connections;
        if full && !self.at_limit {
            self.stats.accept_pauses += 1;
        }
        self.at_limit = full;
        if let Some(until) = self.paused_until {
            if Instant::now() >= until {
                self.paused_until = None;
            } else {
                deadline = Some(deadline.map_or(until, |d| d.min(until)));
            }
        }
        // A listener left in the set while paused would be reported every turn: the
        // level-triggered accept livelock. Leaving it out keeps the wait a real wait.
        if !full && self.paused_until.is_none() {
            read.insert(self.listener);
        }
        (highest + 1, deadline)
    }

    /// Serves connection `i` after `select` reported it readable and/or writable.
    fn serve(&mut self, i: usize, readable: bool) -> Fate {
        let conn = &mut self.conns[i];
        let fd = conn.raw();
        if let Some(linger) = &mut conn.linger {
            if !readable {
                return Fate::Keep;
            }
            return match discard(fd, &mut self.buf, &mut self.stats) {
                Ok(Discard::Data(n))
                    if linger.on_read(n, Instant::now()) == LingerStep::Continue =>
                {
                    Fate::Keep
                }
                Ok(Discard::Empty) => Fate::Keep,
                Ok(Discard::Data(_) | Discard::Eof) | Err(_) => Fate::Close,
            };
        }
        if readable && conn.reading && !conn.paused {
            match read_once(conn, &mut self.buf, &mut self.stats) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Fate::Close,
            }
        }
        // Written at once after a read; when writable, the rest that blocked before.
        if !conn.out.is_empty() {
            if let Err(e) = flush(conn, &mut self.stats) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Fate::Close;
                }
            }
        }
        let full = self.limits.output_full(conn.out.len());
        if full && !conn.paused {
            self.stats.backpressure_pauses += 1;
        }
        conn.paused = full;
        if conn.reading || !conn.out.is_empty() {
            return Fate::Keep;
        }
        self.finish(i)
    }

    /// The connection is done and its output flushed: close, or linger if input is queued
    /// (closing with unread input would reset the connection and destroy what is still in
    /// flight to the peer).
    fn finish(&mut self, i: usize) -> Fate {
        let conn = &mut self.conns[i];
        if conn.eof {
            return Fate::Close;
        }
        let first = match discard(conn.raw(), &mut self.buf, &mut self.stats) {
            Ok(Discard::Data(n)) => n,
            Ok(Discard::Empty | Discard::Eof) | Err(_) => return Fate::Close,
        };
        // SAFETY: no pointers; the socket is open, owned by `conn`.
        if unsafe { syscall!(shutdown(conn.raw(), libc::SHUT_WR)) }.is_err() {
            return Fate::Close;
        }
        let now = Instant::now();
        let mut linger = Linger::start(now);
        if linger.on_read(first, now) == LingerStep::Close {
            return Fate::Close;
        }
        conn.linger = Some(linger);
        self.lingering += 1;
        Fate::Keep
    }

    /// Closes connection `i`; the last connection takes its place.
    fn close(&mut self, i: usize) {
        let conn = self.conns.swap_remove(i);
        if conn.linger.is_some() {
            self.lingering -= 1;
        }
        self.stats.closed += 1;
    }

    /// Accepts up to [`ACCEPT_BATCH`] connections, stopping at `EAGAIN`.
    fn accept(&mut self) -> io::Result<()> {
        for _ in 0..ACCEPT_BATCH {
            if self.conns.len() >= self.limits.max_connections {
                return Ok(());
            }
            let fd = match accept_nonblocking(self.listener)? {
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
            if fd.as_raw_fd() as usize >= FD_SETSIZE {
                self.refuse(&fd);
                continue;
            }
            if prepare_accepted(&fd).is_err() {
                // Reset while queued; dropping `fd` closes it.
                self.stats.closed += 1;
                continue;
            }
            self.conns.push(Conn {
                fd,
                session: self.service.session(),
                out: OutBuf::new(),
                reading: true,
                paused: false,
                eof: false,
                linger: None,
            });
            self.stats.peak_connections = self.stats.peak_connections.max(self.conns.len() as u64);
        }
        Ok(())
    }

    /// Closes (on drop, by the caller) a connection whose descriptor no `fd_set` can hold.
    fn refuse(&mut self, fd: &OwnedFd) {
        self.stats.refused += 1;
        self.stats.closed += 1;
        if !self.refusal_reported {
            self.refusal_reported = true;
            eprintln!(
                "select: refusing connections: descriptor {} is at or above FD_SETSIZE \
                 ({FD_SETSIZE}), which select(2) cannot watch (at most {MAX_CONNECTIONS} \
                 connections per server process)",
                fd.as_raw_fd()
            );
        }
    }
}

/// One `read(2)` into the shard's buffer, handed to the session. Read 0 or `Flow::Close`
/// stops reading; what is pending is still written before the close.
fn read_once(conn: &mut Conn, buf: &mut [u8], stats: &mut ShardStats) -> io::Result<()> {
    stats.reads += 1;
    // SAFETY: the pointer and length describe `buf`, writable and exclusively borrowed for
    // the call.
    let n = unsafe { syscall!(read(conn.raw(), buf.as_mut_ptr().cast(), buf.len())) }?;
    if n == 0 {
        conn.reading = false;
        conn.eof = true;
        return Ok(());
    }
    let n = n as usize;
    stats.bytes_in += n as u64;
    if conn.session.on_input(&buf[..n], conn.out.tail()) == Flow::Close {
        conn.reading = false;
    }
    Ok(())
}

/// One read whose bytes are thrown away (the session is done with the connection).
fn discard(fd: RawFd, buf: &mut [u8], stats: &mut ShardStats) -> io::Result<Discard> {
    stats.reads += 1;
    // SAFETY: the pointer and length describe `buf`, writable and exclusively borrowed for
    // the call.
    match unsafe { syscall!(read(fd, buf.as_mut_ptr().cast(), buf.len())) } {
        Ok(0) => Ok(Discard::Eof),
        Ok(n) => {
            stats.bytes_in += n as u64;
            Ok(Discard::Data(n as usize))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Discard::Empty),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Discard::Empty),
        Err(e) => Err(e),
    }
}

/// Writes pending output until done or `EAGAIN`. `MSG_NOSIGNAL`: a vanished peer is an
/// `EPIPE` for this connection, not a `SIGPIPE` for the process.
fn flush(conn: &mut Conn, stats: &mut ShardStats) -> io::Result<()> {
    while !conn.out.is_empty() {
        let pending = conn.out.pending();
        stats.writes += 1;
        // SAFETY: the pointer and length describe `pending`, readable for the duration of
        // the call.
        match unsafe {
            syscall!(send(
                conn.raw(),
                pending.as_ptr().cast(),
                pending.len(),
                libc::MSG_NOSIGNAL,
            ))
        } {
            Ok(n) => {
                stats.bytes_out += n as u64;
                conn.out.advance(n as usize);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
