//! The event loop of every variant: one ring per shard, one completion dispatch.
//!
//! Each loop turn is one `submit_and_wait(1)`: it submits every SQE queued during the
//! previous turn and waits for at least one completion. The turn then dispatches every
//! CQE by its [`Token`], publishes recycled provided buffers, and *drives* each connection
//! a completion touched: submit its output (one send in flight at most), arm or stop its
//! receive (backpressure), cancel or close. Only the arming differs between variants.
//!
//! Shutdown: the stop eventfd's `PollAdd` completes; the accept (or its pause timeout) is
//! cancelled, every connection is aborted (its receive and send cancelled), each socket is
//! closed with a `Close` SQE once no operation on it is in flight, and the loop keeps
//! turning until every SQE ever submitted has produced its final CQE. Only then are the
//! buffer ring unregistered and the buffers freed, after one `AsyncCancel` matching anything
//! confirms the kernel holds nothing (a count that was wrong would otherwise free buffers
//! under it). Draining has a deadline ([`Tuning::drain_timeout`]) and fails at once if the
//! kernel dropped completions (EBADR, CQ overflow). If the loop fails and cannot drain,
//! [`Shard`]'s `Drop` leaks the buffers instead of freeing memory the kernel may write, and
//! leaks the sockets too while unsubmitted SQEs may still name them.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_api::listener::{is_accept_exhaustion, is_accept_transient, prepare_accepted};
use backend_api::{
    syscall, Flow, Limits, Service, Session, ShardContext, ShardStats, StopSignal, ACCEPT_PAUSE,
};
use io_uring::{
    cqueue, opcode, squeue, types, CompletionQueue, IoUring, SubmissionQueue, Submitter,
};

use crate::bufring::BufRing;
use crate::conn::Table;
use crate::diag::{Diagnostics, DiagnosticsSnapshot};
use crate::recvbuf::RecvPool;
use crate::token::{Op, Token};
use crate::{probe, Tuning, Variant};

/// The buffer group id of the shard's provided buffer ring.
const BGID: u16 = 0;

/// How long `uring-sqpoll` waits between accept retries at `EMFILE` (see `Shard::new`).
const SQPOLL_ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Runs one shard until its stop signal fires and everything in flight is reaped.
pub(crate) fn run(
    variant: Variant,
    tuning: &Tuning,
    diagnostics: Option<Arc<Diagnostics>>,
    ctx: ShardContext,
) -> io::Result<ShardStats> {
    // The ring is declared first so it is dropped last: after the shard's buffers were
    // either freed (nothing in flight) or leaked (see `Shard`'s Drop).
    let mut ring = probe::builder(variant, tuning, Some(ctx.core))
        .build(tuning.sq_entries)
        .map_err(|e| probe::explain_setup_error(e, variant, tuning, ctx.shards))?;
    let mut shard = Shard::new(variant, tuning, diagnostics, ctx)?;
    shard.run(&mut ring)?;
    Ok(shard.stats)
}

/// The ring as the loop uses it: its submission side, its completion queue, and the count of
/// operations in flight. Every SQE is pushed through [`Io::push`], which counts it the moment
/// it is queued, so no error path between a push and its bookkeeping can leave the count too
/// low (teardown frees buffers only when it reaches zero).
struct Io<'r> {
    submitter: Submitter<'r>,
    sq: SubmissionQueue<'r>,
    cq: CompletionQueue<'r>,
    sqpoll: bool,
    /// SQEs queued or submitted whose final CQE has not been reaped.
    inflight: u64,
    /// `io_uring_enter` calls retried after EBUSY/EAGAIN (diagnostics).
    retries: u64,
    #[cfg(test)]
    faults: crate::faults::Injector,
}

impl Io<'_> {
    /// Queues `entry`, submitting first if the SQ is full, and counts it in flight.
    ///
    /// # Safety
    ///
    /// Every pointer `entry` carries (buffers, timespecs) must stay valid, and every buffer
    /// it names must not be read or written by us, until the operation's final CQE.
    unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        #[cfg(test)]
        self.faults.on_push(entry)?;
        loop {
            // SAFETY: forwarded from this function's contract.
            if unsafe { self.sq.push(entry) }.is_ok() {
                self.inflight += 1;
                return Ok(());
            }
            self.sq.sync();
            self.enter(0, None)?;
            self.sq.sync();
            if self.sqpoll && self.sq.is_full() {
                // The SQ thread consumes asynchronously: wait until it made room.
                self.retrying(|io| io.submitter.squeue_wait())?;
                self.sq.sync();
            }
        }
    }

    /// Submits what is queued and waits for `want` completions, or until `timeout`.
    /// Returns Ok on a timeout. Fails when the kernel dropped completions (EBADR, or the CQ
    /// overflow counter moved): the in-flight count can then never reach zero.
    fn enter(&mut self, want: usize, timeout: Option<&types::Timespec>) -> io::Result<()> {
        self.sq.sync();
        let result = self.retrying(|io| {
            #[cfg(test)]
            io.faults.on_enter()?;
            match timeout {
                Some(ts) => io
                    .submitter
                    .submit_with_args(want, &types::SubmitArgs::new().timespec(ts)),
                None => io.submitter.submit_and_wait(want),
            }
        });
        match result {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBADR) => {
                return Err(io::Error::new(
                    e.kind(),
                    "the kernel dropped io_uring completions (EBADR): the completion queue \
                     overflowed and no memory was left to buffer them; raise Tuning::cq_entries",
                ));
            }
            Err(e) => return Err(e),
        }
        self.check_overflow()
    }

    /// Fails if the kernel counted dropped completions.
    fn check_overflow(&self) -> io::Result<()> {
        let dropped = self.cq.overflow();
        if dropped > 0 {
            return Err(io::Error::other(format!(
                "the kernel dropped {dropped} io_uring completions (CQ overflow): raise \
                 Tuning::cq_entries"
            )));
        }
        Ok(())
    }

    /// Runs one `io_uring_enter`, retrying a bounded number of times after EINTR, and after
    /// EBUSY/EAGAIN (the kernel asks us to reap first) once the completions already consumed
    /// are handed back by publishing the CQ head.
    fn retrying(
        &mut self,
        mut call: impl FnMut(&mut Self) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let mut busy = 0;
        loop {
            match call(self) {
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => {
                    busy += 1;
                    if busy > ENTER_RETRIES {
                        return Err(io::Error::new(
                            e.kind(),
                            format!(
                                "io_uring_enter failed {ENTER_RETRIES} times in a row with \
                                 {e}: the completion queue stays full; raise \
                                 Tuning::cq_entries"
                            ),
                        ));
                    }
                    self.retries += 1;
                    self.cq.sync();
                }
                other => return other,
            }
        }
    }
}

/// How many times in a row `io_uring_enter` may report EBUSY/EAGAIN before the shard gives
/// up (each retry first publishes the CQ head, so a full CQ of consumed entries clears).
const ENTER_RETRIES: u32 = 64;

/// One shard's state. Holds everything the kernel may touch while operations are in
/// flight: the listener, the connection sockets and buffers, the buffer ring, the pause
/// timespec.
struct Shard {
    variant: Variant,
    listener: TcpListener,
    stop: StopSignal,
    service: Service,
    limits: Limits,
    send_buffer: Option<u32>,
    table: Table,
    /// Multishot variants: the provided buffer ring.
    bufring: Option<BufRing>,
    /// One-shot `uring`: the receive buffer pool.
    pool: Option<RecvPool>,
    /// Connections to drive at the end of this turn.
    dirty: Vec<u32>,
    /// The accept pause; boxed so its address is stable while a `Timeout` points at it.
    pause: Box<types::Timespec>,
    accept_armed: bool,
    /// The previous accept ended; the next arm is a re-arm.
    accept_ended: bool,
    accept_cancel: bool,
    /// A pause `Timeout` is in flight.
    accept_paused: bool,
    /// At `max_connections`: no accepting until a connection closes.
    accept_full: bool,
    stopping: bool,
    /// The stop eventfd's `PollAdd` is in flight.
    stop_armed: bool,
    /// Set at shutdown: when draining gives up.
    drain_deadline: Option<Instant>,
    drain_timeout: Duration,
    /// Set when `run` ended with operations still in flight: `Drop` must not free what the
    /// kernel may still use.
    abandoned: Option<Abandoned>,
    #[cfg(test)]
    faults: crate::faults::Faults,
    stats: ShardStats,
    counters: DiagnosticsSnapshot,
    flushed: DiagnosticsSnapshot,
    diagnostics: Option<Arc<Diagnostics>>,
}

impl Shard {
    fn new(
        variant: Variant,
        tuning: &Tuning,
        diagnostics: Option<Arc<Diagnostics>>,
        ctx: ShardContext,
    ) -> io::Result<Shard> {
        let limits = ctx.limits;
        let read_buffer = u32::try_from(limits.read_buffer.max(1)).unwrap_or(u32::MAX);
        let bufring = if variant.multishot() {
            let size = tuning.buf_size.unwrap_or(read_buffer);
            Some(BufRing::new(tuning.buf_ring_entries, size, BGID)?)
        } else {
            None
        };
        let pool = (!variant.multishot())
            .then(|| RecvPool::new(tuning.recv_min as usize, read_buffer as usize));
        // SQPOLL: every retry is a submission, after which the SQ thread spins for
        // `sq_thread_idle` (at least one jiffy, 4 ms at HZ=250, and up to two), so
        // retrying every ACCEPT_PAUSE would keep it spinning half the time at EMFILE.
        // It retries every SQPOLL_ACCEPT_PAUSE instead.
        let pause = if variant.sqpoll() {
            ACCEPT_PAUSE.max(SQPOLL_ACCEPT_PAUSE)
        } else {
            ACCEPT_PAUSE
        };
        let pause = Box::new(
            types::Timespec::new()
                .sec(pause.as_secs())
                .nsec(pause.subsec_nanos()),
        );
        Ok(Shard {
            variant,
            listener: ctx.listener,
            stop: ctx.stop,
            service: ctx.service,
            limits,
            send_buffer: tuning.send_buffer,
            table: Table::default(),
            bufring,
            pool,
            dirty: Vec::new(),
            pause,
            accept_armed: false,
            accept_ended: false,
            accept_cancel: false,
            accept_paused: false,
            accept_full: false,
            stopping: false,
            stop_armed: false,
            drain_deadline: None,
            drain_timeout: tuning.drain_timeout,
            abandoned: None,
            #[cfg(test)]
            faults: tuning.faults.clone(),
            stats: ShardStats::default(),
            counters: DiagnosticsSnapshot::default(),
            flushed: DiagnosticsSnapshot::default(),
            diagnostics,
        })
    }

    fn run(&mut self, ring: &mut IoUring) -> io::Result<()> {
        let (submitter, sq, cq) = ring.split();
        let mut io = Io {
            submitter,
            sq,
            cq,
            sqpoll: self.variant.sqpoll(),
            inflight: 0,
            retries: 0,
            #[cfg(test)]
            faults: crate::faults::Injector::new(self.faults.clone()),
        };
        if let Some(bufring) = self.bufring.as_mut() {
            bufring.register(&io.submitter).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("registering the provided buffer ring (needs Linux 5.19): {e}"),
                )
            })?;
        }
        let mut result = self.serve(&mut io);
        if result.is_err() && io.inflight > 0 {
            // Cancel and reap what we can so the buffers may be freed; if this fails too,
            // Drop leaks them.
            let _ = self.begin_shutdown(&mut io);
            let _ = self.serve_until_drained(&mut io);
        }
        if io.inflight == 0 {
            if let Err(e) = verify_nothing_in_flight(&mut io) {
                io.inflight = 1; // abandon: our count was wrong
                result = result.and(Err(e));
            }
        }
        if io.inflight == 0 {
            if let Some(bufring) = self.bufring.as_mut() {
                if let Err(e) = bufring.unregister(&io.submitter) {
                    result = result.and(Err(e));
                }
            }
        } else {
            io.sq.sync();
            self.abandoned = Some(Abandoned {
                queued: !io.sq.is_empty(),
            });
        }
        self.counters.enter_retries = io.retries;
        self.flush_diagnostics();
        result
    }

    fn serve(&mut self, io: &mut Io<'_>) -> io::Result<()> {
        self.arm_stop(io)?;
        self.maybe_arm_accept(io)?;
        self.serve_until_drained(io)
    }

    fn serve_until_drained(&mut self, io: &mut Io<'_>) -> io::Result<()> {
        loop {
            let mut timeout = None;
            if let Some(deadline) = self.drain_deadline {
                if io.inflight == 0 {
                    return Ok(());
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "stopping: {} io_uring operations still in flight {:?} after the \
                             stop; their buffers and sockets are leaked rather than freed \
                             under the kernel",
                            io.inflight, self.drain_timeout
                        ),
                    ));
                }
                timeout = Some(
                    types::Timespec::new()
                        .sec(left.as_secs())
                        .nsec(left.subsec_nanos()),
                );
            }
            io.sq.sync();
            // With SQPOLL, submitting needs no syscall unless the SQ thread sleeps; only
            // wait in the kernel when there is nothing to reap.
            io.cq.sync();
            let want = usize::from(!io.sqpoll || io.cq.is_empty());
            io.enter(want, timeout.as_ref())?;
            self.stats.loop_iterations += 1;
            io.cq.sync();
            while let Some(cqe) = io.cq.next() {
                let (user_data, res, flags) = (cqe.user_data(), cqe.result(), cqe.flags());
                #[cfg(test)]
                let Some((user_data, res, flags)) = io.faults.on_cqe(user_data, res, flags) else {
                    continue;
                };
                self.complete(io, user_data, res, flags)?;
            }
            io.cq.sync();
            if !self.stopping && self.stop.is_fired() {
                // Belt and braces: the PollAdd normally reports this first.
                self.begin_shutdown(io)?;
            }
            self.end_turn(io)?;
        }
    }

    /// Applies one completion.
    fn complete(
        &mut self,
        io: &mut Io<'_>,
        user_data: u64,
        res: i32,
        flags: u32,
    ) -> io::Result<()> {
        let more = cqueue::more(flags);
        if !more {
            io.inflight = io.inflight.saturating_sub(1);
        }
        let Some(token) = Token::decode(user_data) else {
            return Ok(());
        };
        match token.op {
            Op::Stop => {
                self.stop_armed = false;
                if res == -libc::ECANCELED && self.stopping {
                    return Ok(()); // cancelled by a shutdown after an error
                }
                if res < 0 {
                    let e = io::Error::from_raw_os_error(-res);
                    return Err(io::Error::new(
                        e.kind(),
                        format!("polling the stop eventfd failed: {e}"),
                    ));
                }
                self.begin_shutdown(io)
            }
            Op::Accept => self.on_accept(io, res, more),
            Op::AcceptPause => {
                self.accept_paused = false;
                Ok(())
            }
            Op::AcceptCancel => {
                self.accept_cancel = false;
                Ok(())
            }
            Op::Close | Op::Ignore => Ok(()),
            Op::Recv | Op::Send | Op::CancelRecv | Op::CancelSend => {
                self.on_conn(token, res, flags, more);
                Ok(())
            }
        }
    }

    fn on_accept(&mut self, io: &mut Io<'_>, res: i32, more: bool) -> io::Result<()> {
        if !more {
            self.accept_armed = false;
            self.accept_ended = true;
        }
        if res >= 0 {
            // SAFETY: the kernel just installed this descriptor for us; nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(res) };
            self.admit(fd, io)?;
            return Ok(());
        }
        let err = io::Error::from_raw_os_error(-res);
        if -res == libc::ECANCELED || -res == libc::EAGAIN || is_accept_transient(&err) {
            return Ok(()); // re-armed at the end of the turn unless stopping or paused
        }
        if is_accept_exhaustion(&err) {
            // Out of descriptors: retrying now would spin on a listener that stays
            // readable. Wait ACCEPT_PAUSE with a Timeout SQE, then re-arm.
            if !self.accept_paused && !self.stopping {
                let entry = opcode::Timeout::new(&*self.pause)
                    .build()
                    .user_data(Token::shard(Op::AcceptPause).encode());
                // SAFETY: `self.pause` is boxed and lives as long as the shard, which
                // outlives every in-flight operation.
                unsafe { io.push(&entry) }?;
                self.accept_paused = true;
                self.stats.accept_pauses += 1;
            }
            if self.accept_armed {
                self.cancel_accept(io)?;
            }
            return Ok(());
        }
        Err(io::Error::new(
            err.kind(),
            format!("accept on the shard's listener failed: {err}"),
        ))
    }

    /// Takes a newly accepted socket into the table.
    fn admit(&mut self, fd: OwnedFd, io: &mut Io<'_>) -> io::Result<()> {
        self.stats.accepted += 1;
        if self.stopping || self.setup_socket(&fd).is_err() {
            // Shutting down, or the connection died before we could configure it.
            self.stats.closed += 1;
            return Ok(());
        }
        let recv_buf = self.pool.as_mut().map(|p| {
            let size = p.initial();
            p.get(size)
        });
        let (slot, _gen) = self
            .table
            .insert(fd.into_raw_fd(), self.service.session(), recv_buf);
        let live = self.table.live() as u64;
        self.stats.peak_connections = self.stats.peak_connections.max(live);
        self.mark_dirty(slot);
        if self.table.live() >= self.limits.max_connections && !self.accept_full {
            self.accept_full = true;
            self.stats.accept_pauses += 1;
            if self.accept_armed {
                self.cancel_accept(io)?;
            }
        }
        Ok(())
    }

    fn setup_socket(&self, fd: &OwnedFd) -> io::Result<()> {
        prepare_accepted(fd)?;
        if let Some(size) = self.send_buffer {
            let size = size as libc::c_int;
            // SAFETY: the option value points at `size`, a live c_int, with its size; the kernel copies it.
            unsafe {
                syscall!(setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_SNDBUF,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                ))
            }?;
        }
        Ok(())
    }

    /// Applies a completion that belongs to a connection.
    fn on_conn(&mut self, token: Token, res: i32, flags: u32, more: bool) {
        let bid = cqueue::buffer_select(flags);
        let Some(conn) = self.table.get_mut(token.slot, token.gen) else {
            // Cannot happen while slots are freed only at inflight == 0; never apply it to
            // whoever holds the slot now, but give back the buffer it carries.
            self.counters.stale_completions += 1;
            if let (Some(bid), Some(ring)) = (bid, self.bufring.as_mut()) {
                ring.recycle(bid);
            }
            return;
        };
        if !more {
            conn.inflight = conn.inflight.saturating_sub(1);
        }
        match token.op {
            Op::Recv => {
                if !more {
                    conn.recv_armed = false;
                }
                if res > 0 {
                    let n = res as usize;
                    self.stats.bytes_in += n as u64;
                    self.stats.reads += 1;
                    let data = match (bid, self.bufring.as_ref()) {
                        (Some(bid), Some(ring)) => ring.data(bid, n),
                        _ => conn.recv_buf.as_deref().and_then(|b| b.get(..n)),
                    };
                    match data {
                        Some(data) => {
                            if !conn.read_done
                                && !conn.aborting
                                && conn.session.on_input(data, conn.out.tail()) == Flow::Close
                            {
                                conn.read_done = true;
                            }
                        }
                        None => {
                            // A buffer id or length we never handed out: the bytes are
                            // lost, so the stream is broken. Never carry on without them.
                            self.counters.lost_input += 1;
                            conn.aborting = true;
                        }
                    }
                    if let (Some(pool), Some(buf)) = (self.pool.as_mut(), conn.recv_buf.as_mut()) {
                        // The one-shot receive completed, so its buffer is ours again.
                        let next = pool.next_size(buf.len(), n);
                        if next != buf.len() {
                            let old = std::mem::replace(buf, pool.get(next));
                            pool.put(old);
                        }
                    }
                } else if res == 0 {
                    self.stats.reads += 1;
                    conn.read_done = true; // peer EOF: flush what is pending, then close
                } else {
                    match -res {
                        libc::ENOBUFS => self.counters.enobufs += 1,
                        libc::ECANCELED | libc::EINTR | libc::EAGAIN => {}
                        // ECONNRESET and friends: this connection only.
                        _ => conn.aborting = true,
                    }
                }
                if let (Some(bid), Some(ring)) = (bid, self.bufring.as_mut()) {
                    ring.recycle(bid);
                }
                if !more && self.variant.multishot() && !conn.read_done && !conn.aborting {
                    conn.recv_ended = true;
                }
            }
            Op::Send => {
                conn.send_inflight = false;
                if res > 0 {
                    let n = (res as usize).min(conn.sending.len());
                    self.stats.bytes_out += n as u64;
                    self.stats.writes += 1;
                    if n < conn.sending.len() {
                        self.counters.short_sends += 1;
                    }
                    conn.sending.advance(n);
                } else if res == 0 || !matches!(-res, libc::EINTR | libc::EAGAIN) {
                    // EPIPE, ECONNRESET, ECANCELED (we are aborting anyway), or a send that
                    // made no progress: this connection only.
                    conn.aborting = true;
                }
            }
            Op::CancelRecv => conn.recv_cancel = false,
            Op::CancelSend => conn.send_cancel = false,
            _ => {}
        }
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(token.slot);
        }
    }

    fn mark_dirty(&mut self, slot: u32) {
        if let Some(conn) = self.table.slot_mut(slot) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(slot);
            }
        }
    }

    /// End of a loop turn: hand recycled buffers to the kernel, drive every touched
    /// connection, re-arm accepting.
    fn end_turn(&mut self, io: &mut Io<'_>) -> io::Result<()> {
        // Publish before re-arming receives that ended with ENOBUFS.
        if let Some(ring) = self.bufring.as_mut() {
            ring.publish();
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        for slot in dirty.drain(..) {
            self.drive(io, slot)?;
        }
        // Keep the allocation; driving never marks connections dirty.
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
        self.maybe_arm_accept(io)?;
        self.counters.enter_retries = io.retries;
        self.flush_diagnostics();
        Ok(())
    }

    /// Brings one connection's operations in line with its state.
    fn drive(&mut self, io: &mut Io<'_>, slot: u32) -> io::Result<()> {
        let multishot = self.variant.multishot();
        let stopping = self.stopping;
        let limits = self.limits;
        let bgid = self.bufring.as_ref().map_or(BGID, BufRing::bgid);
        let Some(conn) = self.table.slot_mut(slot) else {
            return Ok(());
        };
        conn.dirty = false;
        let gen = conn.gen;
        let fd = types::Fd(conn.fd);
        let token = |op| Token::conn(op, slot, gen).encode();
        let mut cancels = 0u64;

        if stopping {
            conn.aborting = true;
        }
        if !conn.aborting {
            // Output: one send in flight at most, always from the frozen `sending` buffer.
            if !conn.send_inflight {
                if conn.sending.is_empty() && !conn.out.is_empty() {
                    std::mem::swap(&mut conn.sending, &mut conn.out);
                }
                if !conn.sending.is_empty() {
                    let data = conn.sending.pending();
                    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
                    let entry = opcode::Send::new(fd, data.as_ptr(), len)
                        .flags(libc::MSG_NOSIGNAL)
                        .build()
                        .user_data(token(Op::Send));
                    // SAFETY: `sending` is not appended to, compacted or dropped while
                    // `send_inflight` (its heap buffer stays put), and the connection is
                    // not freed while `inflight > 0`.
                    unsafe { io.push(&entry) }?;
                    conn.send_inflight = true;
                    conn.inflight += 1;
                }
            }

            let pending = conn.pending();
            self.counters.peak_pending_output =
                self.counters.peak_pending_output.max(pending as u64);
            let full = limits.output_full(pending);
            if full && !conn.read_done && !conn.paused {
                conn.paused = true;
                self.stats.backpressure_pauses += 1;
            } else if !full {
                conn.paused = false;
            }
            let want_read = !conn.read_done && !full;
            if want_read && !conn.recv_armed && !conn.recv_cancel {
                let entry = if multishot {
                    opcode::RecvMulti::new(fd, bgid)
                        .build()
                        .user_data(token(Op::Recv))
                } else {
                    let Some(buf) = conn.recv_buf.as_mut() else {
                        return Err(io::Error::other("one-shot connection without a buffer"));
                    };
                    let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
                    opcode::Recv::new(fd, buf.as_mut_ptr(), len)
                        .build()
                        .user_data(token(Op::Recv))
                };
                // SAFETY: multishot receives carry no pointer (buffers come from the
                // registered ring, which outlives them). A one-shot receive writes into
                // `recv_buf`, a heap buffer replaced only after this receive's CQE, owned
                // by a connection that is not freed while `inflight > 0`.
                unsafe { io.push(&entry) }?;
                conn.recv_armed = true;
                conn.inflight += 1;
                if conn.recv_ended {
                    conn.recv_ended = false;
                    self.counters.recv_rearms += 1;
                }
            }
            let flushed = conn.read_done && conn.pending() == 0 && !conn.send_inflight;
            if conn.recv_armed && !conn.recv_cancel && (flushed || (!want_read && multishot)) {
                // Backpressure (multishot), or done reading: stop the receive.
                cancel(io, token(Op::Recv), token(Op::CancelRecv))?;
                conn.recv_cancel = true;
                conn.inflight += 1;
                cancels += 1;
            }
        } else {
            if conn.recv_armed && !conn.recv_cancel {
                cancel(io, token(Op::Recv), token(Op::CancelRecv))?;
                conn.recv_cancel = true;
                conn.inflight += 1;
                cancels += 1;
            }
            if conn.send_inflight && !conn.send_cancel {
                cancel(io, token(Op::Send), token(Op::CancelSend))?;
                conn.send_cancel = true;
                conn.inflight += 1;
                cancels += 1;
            }
        }
        let close =
            conn.inflight == 0 && (conn.aborting || (conn.read_done && conn.pending() == 0));
        self.counters.cancels += cancels;
        if close {
            self.close(io, slot)?;
        }
        Ok(())
    }

    /// Frees the slot and closes the socket; nothing is in flight on it.
    fn close(&mut self, io: &mut Io<'_>, slot: u32) -> io::Result<()> {
        let Some(conn) = self.table.remove(slot) else {
            return Ok(());
        };
        self.stats.closed += 1;
        if let (Some(pool), Some(buf)) = (self.pool.as_mut(), conn.recv_buf) {
            pool.put(buf);
        }
        if self.accept_full && self.table.live() < self.limits.max_connections {
            self.accept_full = false;
        }
        let entry = opcode::Close::new(types::Fd(conn.fd))
            .build()
            .user_data(Token::shard(Op::Close).encode());
        // SAFETY: Close carries no pointer; the descriptor is ours and no operation is in
        // flight on it, and its number is not reused before the Close runs.
        match unsafe { io.push(&entry) } {
            Ok(()) => Ok(()),
            Err(e) => {
                // SAFETY: closing a descriptor we own with nothing in flight on it.
                unsafe { libc::close(conn.fd) };
                Err(e)
            }
        }
    }

    fn arm_stop(&mut self, io: &mut Io<'_>) -> io::Result<()> {
        // Poll, never read: every shard watches the same eventfd.
        let entry = opcode::PollAdd::new(types::Fd(self.stop.as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(Token::shard(Op::Stop).encode());
        // SAFETY: PollAdd carries no pointer; the eventfd outlives the shard (we hold a
        // clone of the signal).
        unsafe { io.push(&entry) }?;
        self.stop_armed = true;
        Ok(())
    }

    fn maybe_arm_accept(&mut self, io: &mut Io<'_>) -> io::Result<()> {
        if self.stopping
            || self.accept_armed
            || self.accept_paused
            || self.accept_full
            || self.accept_cancel
        {
            return Ok(());
        }
        let fd = types::Fd(self.listener.as_raw_fd());
        let user_data = Token::shard(Op::Accept).encode();
        let entry = if self.variant.multishot() {
            opcode::AcceptMulti::new(fd)
                .flags(libc::SOCK_CLOEXEC)
                .build()
                .user_data(user_data)
        } else {
            opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
                .flags(libc::SOCK_CLOEXEC)
                .build()
                .user_data(user_data)
        };
        // SAFETY: no address is asked for (null pointers); the listener lives as long as
        // the shard.
        unsafe { io.push(&entry) }?;
        self.accept_armed = true;
        if self.accept_ended {
            self.accept_ended = false;
            self.counters.accept_rearms += 1;
        }
        Ok(())
    }

    fn cancel_accept(&mut self, io: &mut Io<'_>) -> io::Result<()> {
        if !self.accept_cancel {
            cancel(
                io,
                Token::shard(Op::Accept).encode(),
                Token::shard(Op::AcceptCancel).encode(),
            )?;
            self.accept_cancel = true;
            self.counters.cancels += 1;
        }
        Ok(())
    }

    fn begin_shutdown(&mut self, io: &mut Io<'_>) -> io::Result<()> {
        if self.stopping {
            return Ok(());
        }
        self.stopping = true;
        self.drain_deadline = Some(Instant::now() + self.drain_timeout);
        if self.stop_armed && !self.stop.is_fired() {
            // Shutting down after an error: the stop poll would wait for the user's stop.
            cancel(
                io,
                Token::shard(Op::Stop).encode(),
                Token::shard(Op::Ignore).encode(),
            )?;
            self.counters.cancels += 1;
        }
        if self.accept_armed {
            self.cancel_accept(io)?;
        }
        if self.accept_paused {
            cancel(
                io,
                Token::shard(Op::AcceptPause).encode(),
                Token::shard(Op::Ignore).encode(),
            )?;
            self.counters.cancels += 1;
        }
        for slot in self.table.slots() {
            self.mark_dirty(slot);
        }
        Ok(())
    }

    fn flush_diagnostics(&mut self) {
        if let Some(d) = self.diagnostics.as_ref() {
            let c = &mut self.counters;
            c.loop_iterations = self.stats.loop_iterations;
            c.accepted = self.stats.accepted;
            c.accept_pauses = self.stats.accept_pauses;
            c.backpressure_pauses = self.stats.backpressure_pauses;
            d.add(c, &self.flushed);
            self.flushed = *c;
        }
    }
}

/// Queues an `AsyncCancel` of the operation with `target` user_data.
fn cancel(io: &mut Io<'_>, target: u64, user_data: u64) -> io::Result<()> {
    let entry = opcode::AsyncCancel::new(target)
        .build()
        .user_data(user_data);
    // SAFETY: AsyncCancel carries no pointer.
    unsafe { io.push(&entry) }
}

/// How a shard that could not reap everything left the ring.
struct Abandoned {
    /// SQEs were still queued in the SQ, unsubmitted: with SQPOLL the kernel may still
    /// pick them up, and they name descriptors by number.
    queued: bool,
}

/// After the count reached zero, asks the kernel to cancel anything still in flight: a
/// count that was too low would otherwise let teardown free buffers the kernel still writes
/// into. Fails (and the caller abandons the ring) if something was found.
fn verify_nothing_in_flight(io: &mut Io<'_>) -> io::Result<()> {
    let entry = opcode::AsyncCancel2::new(types::CancelBuilder::any())
        .build()
        .user_data(Token::shard(Op::Ignore).encode());
    // SAFETY: AsyncCancel2 carries no pointer.
    unsafe { io.push(&entry) }?;
    loop {
        io.enter(1, None)?;
        io.cq.sync();
        if let Some(cqe) = io.cq.next() {
            if !cqueue::more(cqe.flags()) {
                io.inflight = io.inflight.saturating_sub(1);
            }
            io.cq.sync();
            if cqe.user_data() != Token::shard(Op::Ignore).encode() {
                return Err(io::Error::other(format!(
                    "io_uring bookkeeping bug: a completion ({:#x}) arrived after the in-flight \
                     count reached zero; leaking the shard's buffers",
                    cqe.user_data()
                )));
            }
            return match cqe.result() {
                // CANCEL_ANY returns how many it cancelled. EINVAL: a kernel without
                // CANCEL_ANY (added in 5.19), which cannot check.
                r if r > 0 => Err(io::Error::other(format!(
                    "io_uring bookkeeping bug: {r} operations were still in flight when the \
                     count reached zero; leaking the shard's buffers"
                ))),
                _ => Ok(()),
            };
        }
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        let Some(abandoned) = self.abandoned.take() else {
            for conn in self.table.drain() {
                // SAFETY: nothing is in flight (the count reached zero and the kernel
                // confirmed it), so no SQE names this descriptor of ours.
                unsafe { libc::close(conn.fd) };
            }
            return;
        };
        for conn in self.table.drain() {
            if !abandoned.queued {
                // SAFETY: the descriptor is ours and no unsubmitted SQE names it; closing
                // it is memory-safe even if a submitted operation still holds the file (the
                // kernel keeps its own reference).
                unsafe { libc::close(conn.fd) };
            }
            // Queued SQEs may still name the descriptor (so its number must not be reused)
            // and the kernel may still write into the connection's buffers.
            std::mem::forget(conn);
        }
        if let Some(ring) = self.bufring.take() {
            std::mem::forget(ring);
        }
    }
}
