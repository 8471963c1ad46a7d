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
//! buffer ring unregistered and the buffers freed. If the loop fails and cannot drain,
//! [`Shard`]'s `Drop` leaks the buffers instead of freeing memory the kernel may write.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

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

/// The submission side of the ring, split from its completion queue so completions can
/// be dispatched while new SQEs are queued.
struct Io<'r> {
    submitter: Submitter<'r>,
    sq: SubmissionQueue<'r>,
    sqpoll: bool,
}

impl Io<'_> {
    /// Queues `entry`, submitting first if the SQ is full.
    ///
    /// # Safety
    ///
    /// Every pointer `entry` carries (buffers, timespecs) must stay valid, and every buffer
    /// it names must not be read or written by us, until the operation's final CQE.
    unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: forwarded from this function's contract.
            if unsafe { self.sq.push(entry) }.is_ok() {
                return Ok(());
            }
            self.sq.sync();
            match self.submitter.submit() {
                Ok(_) => {}
                Err(e) if retryable(&e) => {}
                Err(e) => return Err(e),
            }
            self.sq.sync();
            if self.sqpoll && self.sq.is_full() {
                // The SQ thread consumes asynchronously: wait until it made room.
                match self.submitter.squeue_wait() {
                    Ok(_) => {}
                    Err(e) if retryable(&e) => {}
                    Err(e) => return Err(e),
                }
                self.sq.sync();
            }
        }
    }
}

/// Errors of `io_uring_enter` after which the loop simply turns again: a signal, or the
/// kernel asking us to reap completions first.
fn retryable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)
    )
}

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
    /// SQEs submitted whose final CQE has not been reaped, connection ones included.
    inflight: u64,
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
            inflight: 0,
            stats: ShardStats::default(),
            counters: DiagnosticsSnapshot::default(),
            flushed: DiagnosticsSnapshot::default(),
            diagnostics,
        })
    }

    fn run(&mut self, ring: &mut IoUring) -> io::Result<()> {
        let (submitter, sq, mut cq) = ring.split();
        let mut io = Io {
            submitter,
            sq,
            sqpoll: self.variant.sqpoll(),
        };
        if let Some(bufring) = self.bufring.as_mut() {
            bufring.register(&io.submitter).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("registering the provided buffer ring (needs Linux 5.19): {e}"),
                )
            })?;
        }
        let mut result = self.serve(&mut io, &mut cq);
        if result.is_err() && self.inflight > 0 {
            // Cancel and reap what we can so the buffers may be freed; if this fails too,
            // Drop leaks them.
            let _ = self.begin_shutdown(&mut io);
            let _ = self.serve_until_drained(&mut io, &mut cq);
        }
        if self.inflight == 0 {
            if let Some(bufring) = self.bufring.as_mut() {
                if let Err(e) = bufring.unregister(&io.submitter) {
                    result = result.and(Err(e));
                }
            }
        }
        self.flush_diagnostics();
        result
    }

    fn serve(&mut self, io: &mut Io<'_>, cq: &mut CompletionQueue<'_>) -> io::Result<()> {
        self.arm_stop(io)?;
        self.maybe_arm_accept(io)?;
        self.serve_until_drained(io, cq)
    }

    fn serve_until_drained(
        &mut self,
        io: &mut Io<'_>,
        cq: &mut CompletionQueue<'_>,
    ) -> io::Result<()> {
        loop {
            if self.stopping && self.inflight == 0 {
                return Ok(());
            }
            io.sq.sync();
            // With SQPOLL, submitting needs no syscall unless the SQ thread sleeps; only
            // wait in the kernel when there is nothing to reap.
            cq.sync();
            let want = usize::from(!io.sqpoll || CompletionQueue::is_empty(cq));
            match io.submitter.submit_and_wait(want) {
                Ok(_) => {}
                Err(e) if retryable(&e) => {}
                Err(e) => return Err(e),
            }
            self.stats.loop_iterations += 1;
            cq.sync();
            for cqe in &mut *cq {
                self.complete(io, cqe.user_data(), cqe.result(), cqe.flags())?;
            }
            cq.sync();
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
        let Some(token) = Token::decode(user_data) else {
            return Ok(());
        };
        if !more {
            self.inflight = self.inflight.saturating_sub(1);
        }
        match token.op {
            Op::Stop => {
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
                self.inflight += 1;
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
                    if let Some(data) = data {
                        if !conn.read_done
                            && !conn.aborting
                            && conn.session.on_input(data, conn.out.tail()) == Flow::Close
                        {
                            conn.read_done = true;
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
        let mut queued = 0u64;
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
                    queued += 1;
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
                queued += 1;
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
        self.inflight += queued + cancels;
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
            Ok(()) => {
                self.inflight += 1;
                Ok(())
            }
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
        self.inflight += 1;
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
        self.inflight += 1;
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
            self.inflight += 1;
            self.counters.cancels += 1;
        }
        Ok(())
    }

    fn begin_shutdown(&mut self, io: &mut Io<'_>) -> io::Result<()> {
        if self.stopping {
            return Ok(());
        }
        self.stopping = true;
        if self.accept_armed {
            self.cancel_accept(io)?;
        }
        if self.accept_paused {
            cancel(
                io,
                Token::shard(Op::AcceptPause).encode(),
                Token::shard(Op::Ignore).encode(),
            )?;
            self.inflight += 1;
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

impl Drop for Shard {
    fn drop(&mut self) {
        let abandoned = self.inflight > 0;
        for conn in self.table.drain() {
            let fd: RawFd = conn.fd;
            // SAFETY: the descriptor is ours; closing it is memory-safe even if an
            // operation still holds the file (the kernel keeps its own reference).
            unsafe { libc::close(fd) };
            if abandoned {
                // The kernel may still write into this connection's buffers.
                std::mem::forget(conn);
            }
        }
        if abandoned {
            if let Some(ring) = self.bufring.take() {
                std::mem::forget(ring);
            }
        }
    }
}
