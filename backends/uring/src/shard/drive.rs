//! Driving a connection: bring its operations in line with its state at the end of a turn
//! (send what is pending, arm or stop its receive, shut down and linger per the close
//! policy, cancel, close).

use std::io;

use io_uring::{opcode, squeue, types};

use super::io::Io;
use super::{Shard, BGID};
use crate::bufring::BufRing;
use crate::conn::{OpState, Phase, Sock};
use crate::features::Feature;
use crate::token::{Op, Token};

/// Builds an SQE on a connection's socket, whether it is a descriptor or a fixed file.
macro_rules! on_sock {
    ($sock:expr, |$t:ident| $build:expr) => {
        match $sock {
            Sock::Fd(fd) => {
                let $t = types::Fd(fd);
                $build
            }
            Sock::Fixed(index) => {
                let $t = types::Fixed(index);
                $build
            }
        }
    };
}

impl Shard {
    /// Brings one connection's operations in line with its state.
    pub(super) fn drive(&mut self, io: &mut Io<'_>, slot: u32) -> io::Result<()> {
        let features = self.features;
        let multishot = features.has(Feature::RecvMulti);
        let zc = features.has(Feature::SendZc).then_some(self.zc_threshold);
        let stopping = self.stopping;
        let limits = self.limits;
        let bgid = self.bufring.as_ref().map_or(BGID, BufRing::bgid);
        let Some(conn) = self.table.slot_mut(slot) else {
            return Ok(());
        };
        conn.dirty = false;
        let gen = conn.gen;
        let sock = conn.sock;
        let token = |op| Token::conn(op, slot, gen).encode();

        if stopping {
            conn.abort();
        }
        if !conn.aborting() {
            if let Some(rings) = self.send_rings.as_mut() {
                // Send bundles: queue output into the connection's send ring even while its
                // send is in flight (the kernel may take it in the same send); one send in
                // flight at most.
                if !conn.out.is_empty() && conn.sendq.is_none() {
                    conn.sendq = Some(rings.take(&io.submitter)?);
                }
                if let Some(q) = conn.sendq.as_mut() {
                    if conn.send.can_arm() && q.needs_rebuild() {
                        rings.rebuild(q, &io.submitter)?;
                        self.counters.short_sends += 1;
                    }
                    q.queue(&mut conn.out, &mut conn.sending);
                    if conn.send.can_arm() && q.queued() > 0 {
                        let bgid = q.bgid();
                        let entry = on_sock!(sock, |t| opcode::SendBundle::new(t, bgid)
                            .flags(libc::MSG_NOSIGNAL | libc::MSG_WAITALL)
                            .build())
                        .user_data(token(Op::Send));
                        // SAFETY: the SQE carries no pointer. The ring's entries point into
                        // chunks frozen until a completion accounts for them, and the ring
                        // stays registered and mapped while a send is in flight (it goes
                        // back to the pool only with no send in flight).
                        unsafe { io.push(&entry) }?;
                        conn.send.armed();
                        conn.inflight += 1;
                    }
                }
            } else if conn.send.can_arm() {
                // Output: one send in flight at most, always from the frozen `sending` buffer.
                if conn.sending.is_empty() && !conn.out.is_empty() {
                    std::mem::swap(&mut conn.sending, &mut conn.out);
                }
                if !conn.sending.is_empty() {
                    let data = conn.sending.pending();
                    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
                    let entry = match zc {
                        Some(min) if data.len() >= min => on_sock!(sock, |t| {
                            opcode::SendZc::new(t, data.as_ptr(), len)
                                .flags(libc::MSG_NOSIGNAL)
                                .build()
                        }),
                        _ => on_sock!(sock, |t| {
                            opcode::Send::new(t, data.as_ptr(), len)
                                .flags(libc::MSG_NOSIGNAL)
                                .build()
                        }),
                    }
                    .user_data(token(Op::Send));
                    // SAFETY: `sending` is not appended to, compacted or dropped while a
                    // send is in flight (until its final CQE: for SEND_ZC the
                    // notification), so its heap buffer stays put, and the connection is
                    // not freed while `inflight > 0`.
                    unsafe { io.push(&entry) }?;
                    conn.send.armed();
                    conn.inflight += 1;
                }
            }

            let pending = conn.pending();
            self.counters.peak_pending_output =
                self.counters.peak_pending_output.max(pending as u64);
            let full = limits.output_full(pending);
            if let Phase::Open { paused } = &mut conn.phase {
                if full && !*paused {
                    *paused = true;
                    self.stats.backpressure_pauses += 1;
                } else if !full {
                    *paused = false;
                }
            }
            // After the session is done, input is discarded; a receive already armed stays
            // armed through the flush and the shutdown (cancelling and re-arming it around
            // every close would cost two SQEs), unless output backs up.
            let want_read = match conn.phase {
                Phase::Open { .. } | Phase::Flushing { eof: false } | Phase::ShuttingDown => !full,
                Phase::Lingering(_) => true,
                _ => false,
            };
            if want_read && conn.recv.can_arm() {
                let entry = if multishot {
                    if features.has(Feature::Bundle) {
                        on_sock!(sock, |t| opcode::RecvMultiBundle::new(t, bgid).build())
                    } else {
                        on_sock!(sock, |t| opcode::RecvMulti::new(t, bgid).build())
                    }
                } else {
                    let Some(buf) = conn.recv_buf.as_mut() else {
                        return Err(io::Error::other("one-shot connection without a buffer"));
                    };
                    let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
                    let ptr = buf.as_mut_ptr();
                    on_sock!(sock, |t| opcode::Recv::new(t, ptr, len).build())
                }
                .user_data(token(Op::Recv));
                // SAFETY: multishot receives carry no pointer (buffers come from the
                // registered ring, which outlives them). A one-shot receive writes into
                // `recv_buf`, a heap buffer replaced only after this receive's CQE, owned
                // by a connection that is not freed while `inflight > 0`.
                unsafe { io.push(&entry) }?;
                conn.inflight += 1;
                if conn.recv.armed() {
                    self.counters.recv_rearms += 1;
                }
            }
            if !want_read && multishot && conn.recv == OpState::Armed {
                // Backpressure, or done reading: stop the multishot receive. (A one-shot
                // receive completes by itself; what it brings is handed on or discarded.)
                cancel(io, token(Op::Recv), token(Op::CancelRecv))?;
                conn.recv.cancelling();
                conn.inflight += 1;
                self.counters.cancels += 1;
            }
            // The close policy: once everything is flushed, shut down the write side and
            // linger; after the peer's EOF, just close.
            if let Phase::Flushing { eof } = conn.phase {
                if conn.pending() == 0 && conn.send.can_arm() {
                    if eof {
                        conn.abort();
                    } else {
                        let entry = on_sock!(sock, |t| opcode::Shutdown::new(t, libc::SHUT_WR)
                            .build())
                        .user_data(token(Op::Shutdown));
                        // SAFETY: Shutdown carries no pointer; the socket stays open while
                        // `inflight > 0`.
                        unsafe { io.push(&entry) }?;
                        conn.inflight += 1;
                        conn.phase = Phase::ShuttingDown;
                    }
                }
            }
        }
        if conn.aborting() {
            if conn.recv == OpState::Armed {
                cancel(io, token(Op::Recv), token(Op::CancelRecv))?;
                conn.recv.cancelling();
                conn.inflight += 1;
                self.counters.cancels += 1;
            }
            if conn.send == OpState::Armed {
                cancel(io, token(Op::Send), token(Op::CancelSend))?;
                conn.send.cancelling();
                conn.inflight += 1;
                self.counters.cancels += 1;
            }
        }
        if conn.phase == Phase::Aborting && conn.send == OpState::Notifying && conn.inflight == 1 {
            // Only a SEND_ZC notification is due, and it comes when the kernel frees the
            // data, which may sit in the socket's write queue for as long as the peer does
            // not read. The socket is named by nothing in flight: close it now, with a reset
            // (SO_LINGER 0) so the queue is purged and the notification comes; the buffer
            // and the slot wait for it.
            conn.phase = Phase::Closed;
            let linger = &self.sockopts.linger as *const libc::linger;
            match sock {
                Sock::Fd(fd) => {
                    // SAFETY: the option value points at a live libc::linger with its size;
                    // the kernel copies it.
                    let _ = unsafe {
                        libc::setsockopt(
                            fd,
                            libc::SOL_SOCKET,
                            libc::SO_LINGER,
                            linger.cast(),
                            std::mem::size_of::<libc::linger>() as libc::socklen_t,
                        )
                    };
                }
                Sock::Fixed(index) => {
                    let entry = opcode::SetSockOpt::new(
                        types::Fixed(index),
                        libc::SOL_SOCKET as u32,
                        libc::SO_LINGER as u32,
                        linger.cast(),
                        std::mem::size_of::<libc::linger>() as u32,
                    )
                    .build()
                    .flags(squeue::Flags::IO_LINK)
                    .user_data(token(Op::SockOpt));
                    // SAFETY: the option value lives in `sockopts`, boxed and owned by the
                    // shard, which outlives every in-flight operation; the linked Close
                    // below runs after it.
                    unsafe { io.push(&entry) }?;
                    conn.inflight += 1;
                }
            }
            let entry = on_sock!(sock, |t| opcode::Close::new(t).build())
                .user_data(Token::shard(Op::Close).encode());
            // SAFETY: Close carries no pointer; nothing in flight names the socket (the
            // SEND_ZC result arrived; a setsockopt before it is linked ahead of it).
            unsafe { io.push(&entry) }?;
        }
        if conn.send.can_arm()
            && conn
                .sendq
                .as_ref()
                .is_some_and(|q| q.is_empty() || conn.aborting())
        {
            // No send in flight and nothing queued (or nothing more to send): the ring may
            // serve another connection.
            if let (Some(q), Some(rings)) = (conn.sendq.take(), self.send_rings.as_mut()) {
                rings.give_back(q, &io.submitter)?;
            }
        }
        if conn.inflight == 0 && conn.aborting() {
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
        // Nothing is in flight on the connection, so no send reads its ring. A failure is
        // reported after the socket's Close is queued, so the socket is not leaked by it.
        let ring = match (conn.sendq, self.send_rings.as_mut()) {
            (Some(q), Some(rings)) => rings.give_back(q, &io.submitter),
            _ => Ok(()),
        };
        if self.admission == super::accept::Admission::Full
            && self.table.live() < self.limits.max_connections
        {
            self.admission = super::accept::Admission::Open;
        }
        if conn.phase == Phase::Closed {
            return ring; // its socket was closed when only a notification was due
        }
        let entry = on_sock!(conn.sock, |t| opcode::Close::new(t).build())
            .user_data(Token::shard(Op::Close).encode());
        // SAFETY: Close carries no pointer; the socket is ours and no operation is in
        // flight on it, and its number (or slot) is not reused before the Close runs.
        match unsafe { io.push(&entry) } {
            Ok(()) => ring,
            Err(e) => {
                if let Sock::Fd(fd) = conn.sock {
                    // SAFETY: closing a descriptor we own with nothing in flight on it.
                    unsafe { libc::close(fd) };
                }
                Err(e)
            }
        }
    }
}

/// Queues an `AsyncCancel` of the operation with `target` user_data.
pub(super) fn cancel(io: &mut Io<'_>, target: u64, user_data: u64) -> io::Result<()> {
    let entry: squeue::Entry = opcode::AsyncCancel::new(target)
        .build()
        .user_data(user_data);
    // SAFETY: AsyncCancel carries no pointer.
    unsafe { io.push(&entry) }
}
