//! Completion dispatch: every CQE is applied by its [`Token`] to the shard or to the
//! connection it names; the connection is then queued to be driven at the end of the turn.

use std::io;
use std::time::Instant;

use backend_api::close::Linger;
use backend_api::{Flow, Session};
use io_uring::cqueue;

use super::io::Io;
use super::Shard;
use crate::conn::{Conn, Phase};
use crate::token::{Op, Token};

impl Shard {
    /// Applies one completion.
    pub(super) fn complete(
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
                self.stop_poll.finished(false);
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
                self.pause.finished(false);
                Ok(())
            }
            Op::AcceptCancel => {
                self.accept.cancel_done();
                Ok(())
            }
            Op::LingerTick => {
                self.on_linger_tick();
                Ok(())
            }
            Op::Close | Op::Ignore => Ok(()),
            Op::Recv | Op::Send | Op::CancelRecv | Op::CancelSend | Op::Shutdown | Op::SockOpt => {
                self.on_conn(token, res, flags, more);
                Ok(())
            }
        }
    }

    /// Applies a completion that belongs to a connection.
    fn on_conn(&mut self, token: Token, res: i32, flags: u32, more: bool) {
        let Some(conn) = self.table.get_mut(token.slot, token.gen) else {
            // Cannot happen while slots are freed only at inflight == 0; never apply it to
            // whoever holds the slot now, but give back the buffers it carries.
            self.counters.stale_completions += 1;
            if let (Op::Recv, Some(ring)) = (token.op, self.bufring.as_mut()) {
                if res > 0 {
                    let _ = ring.take(flags, res as usize, &mut self.segments);
                }
            }
            return;
        };
        if !more {
            conn.inflight = conn.inflight.saturating_sub(1);
        }
        let send_bundle = self.send_rings.is_some();
        match token.op {
            Op::Recv => {
                on_recv(
                    conn,
                    res,
                    flags,
                    more,
                    RecvCtx {
                        bufring: self.bufring.as_mut(),
                        pool: self.pool.as_mut(),
                        segments: &mut self.segments,
                        stats: &mut self.stats,
                        counters: &mut self.counters,
                    },
                );
            }
            Op::Send if send_bundle => {
                // Every completion of a bundle send covers whole chunks from the head of the
                // connection's send ring (MSG_WAITALL); MORE: the send goes on with buffers
                // queued meanwhile.
                let applied = match (res, conn.sendq.as_mut()) {
                    (n, Some(q)) if n > 0 => q.sent(flags, n as usize, &mut conn.sending).is_ok(),
                    (_, Some(q)) => {
                        q.mark_broken();
                        true
                    }
                    (_, None) => res <= 0,
                };
                if res > 0 && applied {
                    self.stats.bytes_out += res as u64;
                    self.stats.writes += 1;
                } else if !applied {
                    // Bytes sent that the queue cannot account for: the stream is broken.
                    self.counters.lost_output += 1;
                    conn.abort();
                } else {
                    // EPIPE, ECONNRESET, ECANCELED (we are aborting anyway), ENOBUFS (the
                    // ring was empty: our accounting is wrong), no progress.
                    conn.abort();
                }
                if !more {
                    conn.send.finished(false);
                }
            }
            Op::Send => {
                // SEND_ZC: the result CQE carries MORE and the notification ends the send.
                // The kernel reads the pages until the notification, so the bytes are
                // consumed from `sending` (which may free its buffer) only then.
                if !cqueue::notif(flags) {
                    if res > 0 {
                        conn.sent = (res as usize).min(conn.sending.len());
                    } else if res == 0 || !matches!(-res, libc::EINTR | libc::EAGAIN) {
                        // EPIPE, ECONNRESET, ECANCELED (we are aborting anyway), or a send
                        // that made no progress: this connection only.
                        conn.abort();
                    }
                }
                if more && !cqueue::notif(flags) {
                    conn.send.notifying();
                }
                if !more {
                    let n = std::mem::take(&mut conn.sent);
                    if n > 0 {
                        self.stats.bytes_out += n as u64;
                        self.stats.writes += 1;
                        if n < conn.sending.len() {
                            self.counters.short_sends += 1;
                        }
                        conn.sending.advance(n);
                    }
                    conn.send.finished(false);
                }
            }
            Op::Shutdown => {
                if res < 0 || conn.aborting() {
                    conn.abort(); // the peer is gone: nothing to linger for
                } else if conn.phase == Phase::ShuttingDown {
                    conn.phase = Phase::Lingering(Linger::start(Instant::now()));
                    self.lingering.push((token.slot, token.gen));
                }
            }
            // The connection died before we could configure it.
            Op::SockOpt if res < 0 => conn.abort(),
            Op::CancelRecv => conn.recv.cancel_done(),
            Op::CancelSend => conn.send.cancel_done(),
            _ => {}
        }
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(token.slot);
        }
    }
}

/// What a receive completion needs besides its connection.
struct RecvCtx<'a> {
    bufring: Option<&'a mut crate::bufring::BufRing>,
    pool: Option<&'a mut crate::recvbuf::RecvPool>,
    segments: &'a mut Vec<(u16, u32, u32)>,
    stats: &'a mut backend_api::ShardStats,
    counters: &'a mut crate::diag::DiagnosticsSnapshot,
}

fn on_recv(conn: &mut Conn, res: i32, flags: u32, more: bool, cx: RecvCtx<'_>) {
    let multishot = cx.bufring.is_some();
    if res > 0 {
        let n = res as usize;
        cx.stats.bytes_in += n as u64;
        cx.stats.reads += 1;
        let found = match cx.bufring {
            Some(ring) => match ring.take(flags, n, cx.segments) {
                Some(()) => {
                    for &(bid, off, len) in cx.segments.iter() {
                        if let Some(data) = ring.data(bid, off as usize, len as usize) {
                            deliver(conn, data);
                        }
                    }
                    true
                }
                None => false,
            },
            None => {
                // Taken out while the session reads it, so both can be borrowed.
                let buf = conn.recv_buf.take();
                let found = match buf.as_deref().and_then(|b| b.get(..n)) {
                    Some(data) => {
                        deliver(conn, data);
                        true
                    }
                    None => false,
                };
                conn.recv_buf = buf;
                found
            }
        };
        if !found {
            // A buffer id or length we never handed out: the bytes are lost, so the
            // stream is broken. Never carry on without them.
            cx.counters.lost_input += 1;
            conn.abort();
        }
        if let (Some(pool), Some(buf)) = (cx.pool, conn.recv_buf.as_mut()) {
            // The one-shot receive completed, so its buffer is ours again.
            let next = pool.next_size(buf.len(), n);
            if next != buf.len() {
                let old = std::mem::replace(buf, pool.get(next));
                pool.put(old);
            }
        }
    } else if res == 0 {
        cx.stats.reads += 1;
        conn.end_input(true); // peer EOF: flush what is pending, then close
    } else {
        match -res {
            libc::ENOBUFS => cx.counters.enobufs += 1,
            libc::ECANCELED | libc::EINTR | libc::EAGAIN => {}
            // ECONNRESET and friends: this connection only.
            _ => conn.abort(),
        }
    }
    if !more {
        let wants = matches!(conn.phase, Phase::Open { .. } | Phase::Lingering(_));
        conn.recv.finished(multishot && wants);
    }
}

/// Hands received bytes to the session, or discards them once it is done.
fn deliver(conn: &mut Conn, data: &[u8]) {
    if conn.open() {
        if conn.session.on_input(data, conn.out.tail()) == Flow::Close {
            conn.end_input(false);
        }
    } else {
        conn.discard(data.len(), Instant::now());
    }
}
