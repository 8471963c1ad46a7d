//! The event loop of every feature set: one ring per shard, one completion dispatch.
//!
//! Each loop turn is one `io_uring_enter`: it submits every SQE queued during the previous
//! turn and waits for at least one completion. The turn then dispatches every CQE by its
//! [`Token`] (`dispatch.rs`), publishes recycled provided buffers, and *drives* each
//! connection a completion touched (`drive.rs`): submit its output (one send in flight at
//! most), arm or stop its receive (backpressure), shut down, linger, cancel or close. Only
//! how operations are armed differs between feature sets.
//!
//! Files: `io.rs` submission and the in-flight count, `accept.rs` the accept state machine,
//! `dispatch.rs` completions, `drive.rs` connections, `teardown.rs` what happens to buffers
//! and sockets when the loop ends.
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

mod accept;
mod dispatch;
mod drive;
mod io;
mod teardown;

use std::io as stdio;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_api::{Limits, Service, ShardContext, ShardStats, StopSignal, ACCEPT_PAUSE};
use io_uring::{opcode, types, IoUring};

use crate::bufring::BufRing;
use crate::conn::{OpState, Table};
use crate::diag::{Diagnostics, DiagnosticsSnapshot};
use crate::features::{Feature, Features};
use crate::recvbuf::RecvPool;
use crate::sendring::SendRings;
use crate::token::{Op, Token};
use crate::{setup, Tuning};

use self::accept::Admission;
use self::io::Io;
use self::teardown::Abandoned;

/// The buffer group id of the shard's provided buffer ring.
const BGID: u16 = 0;

/// The first buffer group id of the send rings (`send-bundle`).
const SEND_BGID: u16 = 1;

/// How long `sqpoll` waits between accept retries at `EMFILE` (see `Shard::new`).
const SQPOLL_ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// How often lingering connections' deadlines are checked.
const LINGER_TICK: Duration = Duration::from_millis(250);

/// Runs one shard until its stop signal fires and everything in flight is reaped.
pub(crate) fn run(
    features: Features,
    tuning: &Tuning,
    diagnostics: Option<Arc<Diagnostics>>,
    ctx: ShardContext,
) -> stdio::Result<ShardStats> {
    // The ring is declared first so it is dropped last: after the shard's buffers were
    // either freed (nothing in flight) or leaked (see `Shard`'s Drop).
    let mut ring = setup::builder(features, tuning, Some(ctx.core))
        .build(tuning.sq_entries)
        .map_err(|e| setup::explain_setup_error(e, features, tuning, ctx.shards))?;
    let mut shard = Shard::new(features, tuning, diagnostics, ctx)?;
    shard.run(&mut ring)?;
    Ok(shard.stats)
}

/// Option values that setsockopt SQEs point at (`fixed`); boxed so their address is stable
/// while an SQE points at them.
struct SockOpts {
    nodelay: libc::c_int,
    send_buffer: libc::c_int,
    /// SO_LINGER 0: close with a reset.
    linger: libc::linger,
}

/// One shard's state. Holds everything the kernel may touch while operations are in
/// flight: the listener, the connection sockets and buffers, the buffer ring, the
/// timespecs and option values SQEs point at.
struct Shard {
    features: Features,
    listener: TcpListener,
    stop: StopSignal,
    service: Service,
    limits: Limits,
    send_buffer: Option<u32>,
    zc_threshold: usize,
    min_wait: Option<(u32, u32)>,
    /// `napi`: the busy-poll timeout (µs).
    napi_usec: Option<u32>,
    table: Table,
    /// `recv-multi`: the provided buffer ring.
    bufring: Option<BufRing>,
    /// One-shot receives: the receive buffer pool.
    pool: Option<RecvPool>,
    /// `send-bundle`: the pool of per-connection send rings.
    send_rings: Option<SendRings>,
    /// Connections to drive at the end of this turn.
    dirty: Vec<u32>,
    /// The accept (one-shot or multishot) on the listener.
    accept: OpState,
    /// The accept pause's `Timeout` (in flight while paused after `EMFILE`).
    pause: OpState,
    /// At `max_connections` or not.
    admission: Admission,
    /// The accept pause; boxed so its address is stable while a `Timeout` points at it.
    pause_ts: Box<types::Timespec>,
    /// Connections lingering after their shutdown, by (slot, generation).
    lingering: Vec<(u32, u32)>,
    /// The `Timeout` that checks lingering deadlines.
    linger_tick: OpState,
    linger_ts: Box<types::Timespec>,
    sockopts: Box<SockOpts>,
    /// The stop eventfd's `PollAdd`.
    stop_poll: OpState,
    stopping: bool,
    /// Set at shutdown: when draining gives up.
    drain_deadline: Option<Instant>,
    drain_timeout: Duration,
    /// Set when `run` ended with operations still in flight: `Drop` must not free what the
    /// kernel may still use.
    abandoned: Option<Abandoned>,
    /// Scratch list of buffer segments one receive completion carries.
    segments: Vec<(u16, u32, u32)>,
    stats: ShardStats,
    counters: DiagnosticsSnapshot,
    flushed: DiagnosticsSnapshot,
    diagnostics: Option<Arc<Diagnostics>>,
    #[cfg(test)]
    faults: crate::faults::Faults,
}

fn timespec(d: Duration) -> Box<types::Timespec> {
    Box::new(
        types::Timespec::new()
            .sec(d.as_secs())
            .nsec(d.subsec_nanos()),
    )
}

impl Shard {
    fn new(
        features: Features,
        tuning: &Tuning,
        diagnostics: Option<Arc<Diagnostics>>,
        ctx: ShardContext,
    ) -> stdio::Result<Shard> {
        let limits = ctx.limits;
        let read_buffer = u32::try_from(limits.read_buffer.max(1)).unwrap_or(u32::MAX);
        let bufring = if features.buffer_ring() {
            let size = tuning.buf_size.unwrap_or(read_buffer);
            Some(BufRing::new(
                tuning.buf_ring_entries,
                size,
                BGID,
                features.has(Feature::Inc),
            )?)
        } else {
            None
        };
        let pool = (!features.buffer_ring())
            .then(|| RecvPool::new(tuning.recv_min as usize, read_buffer as usize));
        // SQPOLL: every retry is a submission, after which the SQ thread spins for
        // `sq_thread_idle` (at least one jiffy, 4 ms at HZ=250, and up to two), so
        // retrying every ACCEPT_PAUSE would keep it spinning half the time at EMFILE.
        // It retries every SQPOLL_ACCEPT_PAUSE instead.
        let pause = if features.has(Feature::Sqpoll) {
            ACCEPT_PAUSE.max(SQPOLL_ACCEPT_PAUSE)
        } else {
            ACCEPT_PAUSE
        };
        let send_buffer = tuning
            .send_buffer
            .map_or(0, |b| libc::c_int::try_from(b).unwrap_or(libc::c_int::MAX));
        Ok(Shard {
            features,
            listener: ctx.listener,
            stop: ctx.stop,
            service: ctx.service,
            limits,
            send_buffer: tuning.send_buffer,
            zc_threshold: tuning.zc_threshold.max(1),
            min_wait: features
                .has(Feature::MinWait)
                .then_some((tuning.min_wait_usec, tuning.min_wait_batch.max(1))),
            napi_usec: features
                .has(Feature::Napi)
                .then_some(tuning.napi_busy_poll_usec),
            table: Table::default(),
            bufring,
            pool,
            send_rings: features
                .has(Feature::SendBundle)
                .then(|| SendRings::new(SEND_BGID)),
            dirty: Vec::new(),
            accept: OpState::IDLE,
            pause: OpState::IDLE,
            admission: Admission::Open,
            pause_ts: timespec(pause),
            lingering: Vec::new(),
            linger_tick: OpState::IDLE,
            linger_ts: timespec(LINGER_TICK),
            sockopts: Box::new(SockOpts {
                nodelay: 1,
                send_buffer,
                linger: libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                },
            }),
            stop_poll: OpState::IDLE,
            stopping: false,
            drain_deadline: None,
            drain_timeout: tuning.drain_timeout,
            abandoned: None,
            segments: Vec::new(),
            stats: ShardStats::default(),
            counters: DiagnosticsSnapshot::default(),
            flushed: DiagnosticsSnapshot::default(),
            diagnostics,
            #[cfg(test)]
            faults: tuning.faults.clone(),
        })
    }

    fn run(&mut self, ring: &mut IoUring) -> stdio::Result<()> {
        let (submitter, sq, cq) = ring.split();
        let mut io = Io {
            submitter,
            sq,
            cq,
            sqpoll: self.features.has(Feature::Sqpoll),
            inflight: 0,
            retries: 0,
            #[cfg(test)]
            faults: crate::faults::Injector::new(self.faults.clone()),
        };
        setup::register(
            &mut io.submitter,
            self.features,
            &self.limits,
            self.napi_usec,
        )?;
        if let Some(bufring) = self.bufring.as_mut() {
            bufring.register(&io.submitter).map_err(|e| {
                stdio::Error::new(
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
            if let Err(e) = teardown::verify_nothing_in_flight(&mut io) {
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
            if let Some(rings) = self.send_rings.as_mut() {
                if let Err(e) = rings.unregister_all(&io.submitter) {
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

    fn serve(&mut self, io: &mut Io<'_>) -> stdio::Result<()> {
        self.arm_stop(io)?;
        self.maybe_arm_accept(io)?;
        self.serve_until_drained(io)
    }

    fn serve_until_drained(&mut self, io: &mut Io<'_>) -> stdio::Result<()> {
        loop {
            let mut timeout = None;
            if let Some(deadline) = self.drain_deadline {
                if io.inflight == 0 {
                    return Ok(());
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(stdio::Error::new(
                        stdio::ErrorKind::TimedOut,
                        format!(
                            "stopping: {} io_uring operations still in flight {:?} after the \
                             stop; their buffers and sockets are leaked rather than freed \
                             under the kernel",
                            io.inflight, self.drain_timeout
                        ),
                    ));
                }
                timeout = Some(*timespec(left));
            }
            // With SQPOLL, submitting needs no syscall unless the SQ thread sleeps; only
            // wait in the kernel when there is nothing to reap.
            io.cq.sync();
            let (want, min_wait) = match self.min_wait {
                Some((usec, batch)) if !self.stopping => (batch as usize, Some(usec)),
                _ => (usize::from(!io.sqpoll || io.cq.is_empty()), None),
            };
            io.enter(want, timeout.as_ref(), min_wait)?;
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

    fn mark_dirty(&mut self, slot: u32) {
        if let Some(conn) = self.table.slot_mut(slot) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(slot);
            }
        }
    }

    /// End of a loop turn: hand recycled buffers to the kernel, drive every touched
    /// connection, re-arm accepting and the linger check.
    fn end_turn(&mut self, io: &mut Io<'_>) -> stdio::Result<()> {
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
        self.maybe_arm_linger_tick(io)?;
        self.counters.enter_retries = io.retries;
        self.flush_diagnostics();
        Ok(())
    }

    fn arm_stop(&mut self, io: &mut Io<'_>) -> stdio::Result<()> {
        // Poll, never read: every shard watches the same eventfd.
        let entry = opcode::PollAdd::new(types::Fd(self.stop.as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(Token::shard(Op::Stop).encode());
        // SAFETY: PollAdd carries no pointer; the eventfd outlives the shard (we hold a
        // clone of the signal).
        unsafe { io.push(&entry) }?;
        self.stop_poll.armed();
        Ok(())
    }

    fn maybe_arm_linger_tick(&mut self, io: &mut Io<'_>) -> stdio::Result<()> {
        if self.lingering.is_empty() || self.stopping || !self.linger_tick.can_arm() {
            return Ok(());
        }
        let entry = opcode::Timeout::new(&*self.linger_ts)
            .build()
            .user_data(Token::shard(Op::LingerTick).encode());
        // SAFETY: `linger_ts` is boxed and lives as long as the shard, which outlives every
        // in-flight operation.
        unsafe { io.push(&entry) }?;
        self.linger_tick.armed();
        Ok(())
    }

    /// The linger check fired: close every connection whose deadline passed.
    fn on_linger_tick(&mut self) {
        self.linger_tick.finished(false);
        let now = Instant::now();
        let mut expired = Vec::new();
        let mut keep = Vec::with_capacity(self.lingering.len());
        for (slot, gen) in std::mem::take(&mut self.lingering) {
            let Some(conn) = self.table.get_mut(slot, gen) else {
                continue;
            };
            match conn.phase {
                crate::conn::Phase::Lingering(l) if l.expired(now) => {
                    conn.abort();
                    expired.push(slot);
                }
                crate::conn::Phase::Lingering(_) => keep.push((slot, gen)),
                _ => {}
            }
        }
        self.lingering = keep;
        for slot in expired {
            self.mark_dirty(slot);
        }
    }

    fn begin_shutdown(&mut self, io: &mut Io<'_>) -> stdio::Result<()> {
        if self.stopping {
            return Ok(());
        }
        self.stopping = true;
        self.drain_deadline = Some(Instant::now() + self.drain_timeout);
        if self.stop_poll.in_flight() && !self.stop.is_fired() {
            // Shutting down after an error: the stop poll would wait for the user's stop.
            self.cancel_shard_op(io, Op::Stop)?;
        }
        if self.accept.in_flight() {
            self.cancel_accept(io)?;
        }
        if self.pause.in_flight() {
            self.cancel_shard_op(io, Op::AcceptPause)?;
        }
        if self.linger_tick.in_flight() {
            self.cancel_shard_op(io, Op::LingerTick)?;
        }
        for slot in self.table.slots() {
            self.mark_dirty(slot);
        }
        Ok(())
    }

    /// Cancels a shard operation whose cancel needs no bookkeeping of its own.
    fn cancel_shard_op(&mut self, io: &mut Io<'_>, op: Op) -> stdio::Result<()> {
        drive::cancel(
            io,
            Token::shard(op).encode(),
            Token::shard(Op::Ignore).encode(),
        )?;
        self.counters.cancels += 1;
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
