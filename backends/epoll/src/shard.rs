//! One shard's event loop, generic over the [`Trigger`] mode: accepting, reading into the
//! shard's read buffer, handing input to sessions, writing output, backpressure, accept
//! pauses and the stop signal.
//!
//! Every `epoll_ctl` the shard makes is counted in `ShardStats::epoll_ctl`, and every
//! event `epoll_wait` hands it in `ShardStats::events`: the two figures the claim
//! variants of [`crate::trigger`] differ in.
//!
//! # Buffers
//!
//! Input is read into one per-shard buffer (`limits.read_buffer` bytes) and handed to the
//! session at once, so connections own no input buffer. A session's output goes into one
//! per-shard scratch vector and is written straight from there; only what the socket does
//! not take is copied into the connection's [`backend_api::OutBuf`], which gives its heap
//! back once drained. So the common request/response path allocates nothing, and an idle
//! connection holds only its [`Conn`] slot.
//!
//! # Backpressure
//!
//! When pending output reaches `limits.max_pending_output` the connection stops being
//! read, and resumes once output fell to half the limit (hysteresis, so a connection at
//! the limit does not flip its interest on every event). Level-triggered drops `EPOLLIN`
//! meanwhile, or the readable socket would be reported on every wait; edge-triggered keeps
//! it, remembers that input is waiting (`read_ready`), and reads again itself on resume,
//! because no new edge comes for bytes already queued.
//!
//! # Closing
//!
//! After the peer's EOF, the connection closes once its output drained. After the
//! session's `Flow::Close`, too, but only if one more read finds no input: closing with
//! unread input makes the kernel send a reset instead of a FIN, and a reset can destroy
//! the final response before the peer reads it. If the peer did send more, the
//! connection sends its FIN (`shutdown(SHUT_WR)`, so the peer sees the response and
//! EOF) and lingers, discarding input, until the peer closes, `LINGER_TIMEOUT` passes
//! or `LINGER_MAX_DISCARD` bytes were thrown away: the shared close policy of
//! [`backend_api::close`], like nginx's `lingering_close auto`.
//!
//! Lingering deadlines are all `LINGER_TIMEOUT` after their start, so they expire in the
//! order they were set: a FIFO queue of `(deadline, token)` holds them, its front is the
//! nearest, and `epoll_wait`'s timeout is cut to it. While nothing lingers the queue is
//! empty and the loop pays one emptiness check per turn. A connection that closed before
//! its deadline leaves a stale entry, dropped when it comes due (its token no longer
//! matches a lingering connection).
//!
//! # Accept pauses
//!
//! `EMFILE`/`ENFILE` (and the other exhaustion errors), `max_connections`, or `epoll_ctl`
//! running out of watches pause accepting for [`ACCEPT_PAUSE`]: the listener's interest is
//! set to nothing (a level-triggered listener that stays readable would otherwise spin),
//! `epoll_wait` gets a timeout, and open connections are served as usual. On resume the
//! interest is restored and, edge-triggered, the backlog is accepted at once: connections
//! that queued while paused produce no new edge.

use std::collections::VecDeque;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use backend_api::close::{Linger, LingerStep};
use backend_api::ACCEPT_PAUSE;
use backend_api::{listener, Flow, Limits, Service, Session, ShardContext, ShardStats};

use crate::conn::{Conn, ConnTable, Token, LISTENER, STOP};
use crate::sys::{self, Epoll, Events, ERR, HUP, IN, OUT, RDHUP};
use crate::trigger::Trigger;

/// Serves `ctx` until its stop signal fires, then closes every connection.
pub(crate) fn run<T: Trigger>(ctx: ShardContext) -> io::Result<ShardStats> {
    let epoll = Epoll::new().map_err(|e| context(e, "epoll_create1"))?;
    // The stop eventfd is level-triggered and never read, so every shard sees it.
    epoll
        .add(ctx.stop.as_raw_fd(), IN, STOP)
        .map_err(|e| context(e, "registering the stop signal"))?;
    let listener = ctx.listener.as_raw_fd();
    epoll
        .add(listener, T::LISTENER_INTEREST, LISTENER)
        .map_err(|e| context(e, "registering the listener"))?;
    let stats = ShardStats {
        epoll_ctl: 2,
        ..ShardStats::default()
    };

    let read_buffer = ctx.limits.read_buffer.max(1);
    let mut shard = Shard::<T> {
        epoll,
        listener,
        service: ctx.service,
        conns: ConnTable::new(),
        io: Io {
            rbuf: vec![0; read_buffer].into_boxed_slice(),
            scratch: Vec::with_capacity(read_buffer),
            limits: ctx.limits,
            stats,
            lingering: VecDeque::new(),
        },
        accept_paused_until: None,
        _trigger: PhantomData,
    };
    let mut events = Events::new(T::MAX_EVENTS);
    let outcome = shard.serve(&mut events);
    shard.io.stats.closed += shard.conns.clear() as u64;
    // The shard used the raw fds of `ctx`'s listener and stop signal; they close only now.
    drop(ctx);
    outcome.map(|()| shard.io.stats)
}

/// One shard's state.
struct Shard<T> {
    epoll: Epoll,
    /// Borrowed from the `ShardContext`, which outlives the shard.
    listener: RawFd,
    service: Service,
    conns: ConnTable,
    io: Io,
    /// Set while accepting is paused; `epoll_wait` wakes up by then.
    accept_paused_until: Option<Instant>,
    _trigger: PhantomData<T>,
}

/// The shard-wide buffers and counters the per-connection code works with, apart from
/// the connection table so both can be borrowed at once.
struct Io {
    /// Every read lands here.
    rbuf: Box<[u8]>,
    /// Sessions write their output here; it goes to the socket from here.
    scratch: Vec<u8>,
    limits: Limits,
    stats: ShardStats,
    /// Deadlines of lingering connections, nearest first (see "Closing").
    lingering: VecDeque<(Instant, Token)>,
}

impl<T: Trigger> Shard<T> {
    fn serve(&mut self, events: &mut Events) -> io::Result<()> {
        loop {
            let n = events
                .wait_on(&self.epoll, self.wait_timeout())
                .map_err(|e| context(e, "epoll_wait"))?;
            self.io.stats.loop_iterations += 1;
            self.io.stats.events += n as u64;
            for i in 0..n {
                let (bits, token) = events.get(i);
                match token {
                    STOP => return Ok(()),
                    LISTENER => {
                        // A stale event from before a pause started in this same batch.
                        if self.accept_paused_until.is_none() {
                            self.accept_batch()?;
                        }
                    }
                    _ => self.on_conn(token, bits),
                }
            }
            if self.accept_paused_until.is_some() || !self.io.lingering.is_empty() {
                let now = Instant::now();
                if self.accept_paused_until.is_some_and(|until| now >= until) {
                    self.resume_accept()?;
                }
                self.expire_lingering(now);
            }
        }
    }

    /// `-1` (no timeout) unless accepting is paused or a connection lingers: then until
    /// the nearer of the pause's end and the nearest lingering deadline.
    fn wait_timeout(&self) -> i32 {
        let linger = self.io.lingering.front().map(|&(deadline, _)| deadline);
        let until = match (self.accept_paused_until, linger) {
            (None, None) => return -1,
            (Some(a), Some(b)) => a.min(b),
            (Some(t), None) | (None, Some(t)) => t,
        };
        let left = until.saturating_duration_since(Instant::now());
        // Rounded up: waking before the deadline would only go round again.
        left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
    }

    /// Closes every lingering connection whose deadline passed by `now`.
    fn expire_lingering(&mut self, now: Instant) {
        while let Some(&(deadline, token)) = self.io.lingering.front() {
            if deadline > now {
                return;
            }
            self.io.lingering.pop_front();
            // A stale entry: the connection closed (or its slot moved on) meanwhile.
            let expired = self
                .conns
                .get_mut(token)
                .and_then(|c| c.linger)
                .is_some_and(|l| l.expired(now));
            if expired && self.conns.remove(token) {
                self.io.stats.closed += 1;
            }
        }
    }

    /// Accepts up to `T::ACCEPT_BATCH` connections, stopping at `EAGAIN` or a pause.
    fn accept_batch(&mut self) -> io::Result<()> {
        for _ in 0..T::ACCEPT_BATCH {
            if self.accept_paused_until.is_some() {
                return Ok(());
            }
            if self.conns.len() >= self.io.limits.max_connections {
                return self.pause_accept();
            }
            match sys::accept(self.listener) {
                Ok(fd) => self.admit(fd)?,
                Err(e) if sys::would_block(&e) => return Ok(()),
                Err(e) if listener::is_accept_exhaustion(&e) => return self.pause_accept(),
                // Only the connection being accepted is lost; go on with the next.
                Err(e) if listener::is_accept_transient(&e) || is_network_error(&e) => {}
                Err(e) => return Err(context(e, "accept4 on the shard listener")),
            }
        }
        Ok(())
    }

    /// Sets up an accepted connection and registers it.
    fn admit(&mut self, fd: OwnedFd) -> io::Result<()> {
        let stats = &mut self.io.stats;
        stats.accepted += 1;
        if listener::prepare_accepted(&fd).is_err() {
            // Only fails on a socket that is already dead; losing it harms nobody else.
            stats.closed += 1;
            return Ok(());
        }
        let mut conn = Conn::new(fd, self.service.session(), 0);
        conn.interest = T::interest(&conn);
        let token = self.conns.next_token();
        stats.epoll_ctl += 1;
        if let Err(e) = self.epoll.add(conn.raw(), conn.interest, token) {
            stats.closed += 1;
            drop(conn);
            // Out of kernel memory or of fs.epoll.max_user_watches: like running out of
            // fds, pause rather than fail the shard.
            return match e.raw_os_error() {
                Some(libc::ENOMEM | libc::ENOSPC) => self.pause_accept(),
                _ => Err(context(e, "epoll_ctl(ADD) of an accepted connection")),
            };
        }
        self.conns.insert(conn);
        let open = self.conns.len() as u64;
        stats.peak_connections = stats.peak_connections.max(open);
        Ok(())
    }

    fn pause_accept(&mut self) -> io::Result<()> {
        self.io.stats.accept_pauses += 1;
        self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
        self.io.stats.epoll_ctl += 1;
        self.epoll
            .modify(self.listener, 0, LISTENER)
            .map_err(|e| context(e, "pausing the listener"))
    }

    fn resume_accept(&mut self) -> io::Result<()> {
        self.accept_paused_until = None;
        self.io.stats.epoll_ctl += 1;
        self.epoll
            .modify(self.listener, T::LISTENER_INTEREST, LISTENER)
            .map_err(|e| context(e, "resuming the listener"))?;
        if T::EDGE {
            // Connections that queued meanwhile raise no new edge: take them now. (Level
            // needs nothing: a non-empty backlog is reported by the next wait.)
            self.accept_batch()?;
        }
        Ok(())
    }

    /// Handles one event for a connection; closes it when it is done or broken.
    fn on_conn(&mut self, token: Token, bits: u32) {
        // A stale token (the connection closed earlier in this batch) finds nothing.
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        // ERR: reset or failed, nothing more can be delivered. HUP: both directions shut,
        // so unless we shut ours (lingering, where the read of EOF closes) the connection
        // was reset.
        let dead = bits & ERR != 0 || (bits & HUP != 0 && !conn.lingering());
        let alive = !dead
            && if conn.lingering() {
                self.io.linger::<T>(conn, bits)
            } else {
                self.io.drive::<T>(conn, bits).is_ok() && self.io.keep_open::<T>(conn, token)
            };
        let alive = alive && {
            let want = T::interest(conn);
            // Oneshot: the event disarmed the fd; it must be armed again even unchanged.
            (want == conn.interest && !T::ONESHOT) || {
                self.io.stats.epoll_ctl += 1;
                let ok = self.epoll.modify(conn.raw(), want, token).is_ok();
                conn.interest = want;
                ok
            }
        };
        if !alive && self.conns.remove(token) {
            self.io.stats.closed += 1;
        }
    }
}

impl Io {
    /// Does what one event allows for one connection: write pending output, then read (and
    /// answer) input. An error means the connection is broken (reset, `EPIPE`, ...) and
    /// must be closed; it never concerns other connections.
    #[inline]
    fn drive<T: Trigger>(&mut self, c: &mut Conn, bits: u32) -> io::Result<()> {
        if bits & OUT != 0 && !c.out.is_empty() {
            let written = self.write::<T>(c.raw(), c.out.pending())?;
            c.out.advance(written);
            c.release_drained_output();
            if c.paused && c.out.len() <= self.limits.max_pending_output / 2 {
                c.paused = false;
            }
        }
        if T::SHORT_READ_DRAINS && bits & RDHUP != 0 {
            c.rdhup = true;
        }
        if T::EDGE {
            // Remember the edge even while reading is paused: it will not be repeated.
            // (An event for EPOLLOUT also carries EPOLLIN while input is queued, since
            // epoll reports the socket's whole readiness; `read_ready` does not rely on it.)
            if bits & IN != 0 {
                c.read_ready = true;
            }
            while c.read_ready && c.can_read() {
                self.read::<T>(c)?;
            }
        } else if bits & IN != 0 && c.can_read() {
            self.read::<T>(c)?;
        }
        Ok(())
    }

    /// One read, handed to the session, its output written or queued.
    #[inline]
    fn read<T: Trigger>(&mut self, c: &mut Conn) -> io::Result<()> {
        self.stats.reads += 1;
        let n = match sys::read(c.raw(), &mut self.rbuf) {
            Ok(0) => {
                // Peer half-closed: answer what it sent, flush, then close.
                c.read_closed = true;
                c.eof = true;
                c.read_ready = false;
                return Ok(());
            }
            Ok(n) => n,
            Err(e) if sys::would_block(&e) => {
                c.read_ready = false;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if T::SHORT_READ_DRAINS && n < self.rbuf.len() && !c.rdhup {
            // The receive queue held less than the buffer: it is empty now, and whatever
            // arrives next raises a new edge.
            c.read_ready = false;
        }
        self.stats.bytes_in += n as u64;
        let input = &self.rbuf[..n];
        let flow = if c.out.is_empty() && !T::WRITE_ON_EPOLLOUT {
            self.scratch.clear();
            let flow = c.session.on_input(input, &mut self.scratch);
            let written = write::<T>(c.raw(), &self.scratch, &mut self.stats)?;
            if written < self.scratch.len() {
                c.out.tail().extend_from_slice(&self.scratch[written..]);
            }
            flow
        } else {
            // A write already blocked (or this mode writes only on EPOLLOUT): queue
            // behind it, in order, until EPOLLOUT.
            c.session.on_input(input, c.out.tail())
        };
        if flow == Flow::Close {
            c.read_closed = true;
        } else if !c.out.is_empty() && self.limits.output_full(c.out.len()) {
            c.paused = true;
            self.stats.backpressure_pauses += 1;
        }
        Ok(())
    }

    /// One event for a lingering connection: discard input (level: one read; edge: until
    /// `EAGAIN`). False when it must close now: EOF, an error, the deadline or the
    /// discard budget.
    fn linger<T: Trigger>(&mut self, c: &mut Conn, bits: u32) -> bool {
        let fd = c.raw();
        let Some(linger) = &mut c.linger else {
            return true;
        };
        if bits & IN == 0 {
            return true;
        }
        loop {
            match discard(fd, &mut self.rbuf, &mut self.stats) {
                Ok(Discard::Data(n)) => {
                    if linger.on_read(n, Instant::now()) == LingerStep::Close {
                        return false;
                    }
                }
                Ok(Discard::Empty) => return true,
                Ok(Discard::Eof) | Err(_) => return false,
            }
            if !T::EDGE {
                return true;
            }
        }
    }

    /// After an event: false when the connection is finished and must be closed now.
    #[inline]
    fn keep_open<T: Trigger>(&mut self, c: &mut Conn, token: Token) -> bool {
        if !c.read_closed || !c.out.is_empty() {
            return true;
        }
        if c.eof {
            // The peer closed and everything it asked for is written.
            return false;
        }
        // The session closed and its last response is written. Closing with unread input
        // makes the kernel send a reset, which can destroy that response before the peer
        // reads it. Usually nothing is queued (one read says EAGAIN) and the close sends a
        // plain FIN after the response.
        let first = match discard(c.raw(), &mut self.rbuf, &mut self.stats) {
            Ok(Discard::Data(n)) => n,
            Ok(Discard::Empty | Discard::Eof) | Err(_) => return false,
        };
        // The peer sent more after its last request and may still be sending: FIN now
        // (it sees the response, then EOF), and discard its input until it closes, the
        // deadline passes or the budget is spent.
        if sys::shutdown_write(c.raw()).is_err() {
            return false;
        }
        let now = Instant::now();
        let mut linger = Linger::start(now);
        if linger.on_read(first, now) == LingerStep::Close {
            return false;
        }
        if T::EDGE {
            // The input still queued raises no new edge.
            loop {
                match discard(c.raw(), &mut self.rbuf, &mut self.stats) {
                    Ok(Discard::Data(n)) => {
                        if linger.on_read(n, Instant::now()) == LingerStep::Close {
                            return false;
                        }
                    }
                    Ok(Discard::Empty) => break,
                    Ok(Discard::Eof) | Err(_) => return false,
                }
            }
        }
        self.lingering.push_back((linger.deadline(), token));
        c.linger = Some(linger);
        true
    }

    #[inline]
    fn write<T: Trigger>(&mut self, fd: RawFd, buf: &[u8]) -> io::Result<usize> {
        write::<T>(fd, buf, &mut self.stats)
    }
}

/// What a discarding read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Discard {
    /// This many bytes, thrown away.
    Data(usize),
    Empty,
    Eof,
}

/// One read whose bytes are thrown away (the session is done with the connection).
fn discard(fd: RawFd, rbuf: &mut [u8], stats: &mut ShardStats) -> io::Result<Discard> {
    stats.reads += 1;
    match sys::read(fd, rbuf) {
        Ok(0) => Ok(Discard::Eof),
        Ok(n) => {
            stats.bytes_in += n as u64;
            Ok(Discard::Data(n))
        }
        Err(e) if sys::would_block(&e) => Ok(Discard::Empty),
        Err(e) => Err(e),
    }
}

/// Writes from `buf`: edge-triggered until done or `EAGAIN` (an `EPOLLOUT` edge comes only
/// after a write found the socket full); level-triggered one `send` per event (a partial
/// send means the socket is full, and `EPOLLOUT` reports when it is not). Returns how many
/// bytes the socket took.
#[inline]
fn write<T: Trigger>(fd: RawFd, buf: &[u8], stats: &mut ShardStats) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        stats.writes += 1;
        match sys::send(fd, &buf[done..]) {
            // A stream socket takes at least one byte or says EAGAIN; never spin on 0.
            Ok(0) => break,
            Ok(n) => {
                stats.bytes_out += n as u64;
                done += n;
                if !T::EDGE {
                    break;
                }
            }
            Err(e) if sys::would_block(&e) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Network errors `accept(2)` may pass on from the new connection (see its man page,
/// "Error handling"): they concern only that connection.
fn is_network_error(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(
            libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
        )
    )
}

/// `err` with what was being done prepended, keeping its kind.
fn context(err: io::Error, what: &str) -> io::Error {
    io::Error::new(err.kind(), format!("{what}: {err}"))
}
