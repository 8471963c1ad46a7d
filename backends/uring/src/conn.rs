//! The connection table shared by every feature set: a slab of connections addressed by
//! `(slot, generation)`, and the per-connection state the completion dispatch drives.
//!
//! Invariants the shard keeps:
//! - `inflight` counts every SQE that names this connection (receive, send, shutdown,
//!   setsockopt, cancels). A slot is freed, and its socket closed, only at `inflight == 0`,
//!   so no completion can arrive for a slot after it was reused, and no operation is ever in
//!   flight on a closed (or reused) descriptor.
//! - At most one send is in flight ([`Conn::send`]); it reads from `sending`, which nothing
//!   appends to until its final CQE (for `SEND_ZC`, the notification). Sessions append to
//!   `out`.
//! - At most one receive is armed ([`Conn::recv`]).
//! - `send-bundle`: the in-flight send reads from the chunks of [`Conn::sendq`] instead,
//!   which are frozen from the moment they are queued until a completion accounts for them;
//!   `sending` is then only an empty spare allocation for the next chunk.

use std::os::fd::RawFd;
use std::time::Instant;

use backend_api::close::Linger;
use backend_api::{AnySession, OutBuf};

use crate::sendring::SendQueue;
use crate::token::GEN_MASK;

/// How a connection's socket is named in SQEs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sock {
    /// A descriptor of the process.
    Fd(RawFd),
    /// An index into the ring's fixed file table (`fixed`).
    Fixed(u32),
}

/// One kind of operation on a connection (its receive, its send) or on the listener (its
/// accept): at most one in flight, and at most one cancel aimed at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpState {
    /// Nothing in flight. `ended`: the previous operation ended while more was wanted, so
    /// the next arm counts as a re-arm.
    Idle { ended: bool },
    /// In flight.
    Armed,
    /// In flight, and an `AsyncCancel` aimed at it is in flight too.
    Cancelling,
    /// The operation ended; the cancel's own completion is still due.
    CancelPending,
    /// `SEND_ZC` only: the result arrived, the notification (the kernel done with the
    /// buffer) is still due. Names no descriptor any more and cannot be cancelled.
    Notifying,
}

impl OpState {
    pub(crate) const IDLE: OpState = OpState::Idle { ended: false };

    /// The operation is in flight (possibly being cancelled).
    pub(crate) fn in_flight(self) -> bool {
        matches!(self, OpState::Armed | OpState::Cancelling)
    }

    /// A new operation may be armed: nothing in flight, no cancel pending.
    pub(crate) fn can_arm(self) -> bool {
        matches!(self, OpState::Idle { .. })
    }

    /// Records an arm; true when it is a re-arm after an operation that ended early.
    pub(crate) fn armed(&mut self) -> bool {
        let rearm = matches!(self, OpState::Idle { ended: true });
        *self = OpState::Armed;
        rearm
    }

    /// Records that a cancel was queued (only valid in `Armed`).
    pub(crate) fn cancelling(&mut self) {
        debug_assert_eq!(*self, OpState::Armed);
        *self = OpState::Cancelling;
    }

    /// The operation's final CQE arrived; `ended` as in [`OpState::Idle`].
    pub(crate) fn finished(&mut self, ended: bool) {
        *self = match self {
            OpState::Cancelling => OpState::CancelPending,
            _ => OpState::Idle { ended },
        };
    }

    /// A `SEND_ZC` result arrived; its notification is still due.
    pub(crate) fn notifying(&mut self) {
        *self = OpState::Notifying;
    }

    /// The cancel's CQE arrived. If the operation is still in flight (the cancel found
    /// nothing to cancel yet), it may be cancelled again.
    pub(crate) fn cancel_done(&mut self) {
        *self = match self {
            OpState::Cancelling => OpState::Armed,
            OpState::Notifying => OpState::Notifying,
            _ => OpState::IDLE,
        };
    }
}

/// Where a connection is in its life, after the close policy of `backend_api::close`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Serving. `paused`: not being read because of pending output (backpressure).
    Open { paused: bool },
    /// The session ended the connection (or the peer sent EOF): no more input is handed to
    /// the session; pending output is flushed. `eof`: the peer's EOF arrived already, so
    /// the socket closes after the flush, without shutdown and lingering.
    Flushing { eof: bool },
    /// Flushed; the `Shutdown(SHUT_WR)` is in flight.
    ShuttingDown,
    /// Write side shut down: input is read and discarded until EOF, the deadline or the
    /// discard budget.
    Lingering(Linger),
    /// Error, reset, linger over or shutdown: drop output, cancel everything, close.
    Aborting,
    /// Aborted and its socket already closed (with a reset) while a `SEND_ZC` notification
    /// is still due: the slot and the buffer wait for it; nothing names the socket.
    Closed,
}

/// One connection.
pub(crate) struct Conn {
    /// The socket. Owned: closed by a `Close` SQE (or `close(2)` at teardown) once
    /// `inflight == 0`.
    pub sock: Sock,
    pub gen: u32,
    pub session: AnySession,
    /// What sessions append to.
    pub out: OutBuf,
    /// What the in-flight send reads from; frozen while a send is in flight.
    pub sending: OutBuf,
    /// `send-bundle`: the send ring and the output chunks queued in it, while this
    /// connection has output (see `sendring.rs`).
    pub sendq: Option<SendQueue>,
    /// One-shot receives only: the buffer the in-flight `Recv` writes to.
    pub recv_buf: Option<Box<[u8]>>,
    /// SQEs naming this connection whose final CQE has not arrived.
    pub inflight: u32,
    pub recv: OpState,
    pub send: OpState,
    /// Bytes the in-flight send reported sent, applied to `sending` at its final CQE.
    pub sent: usize,
    pub phase: Phase,
    /// Queued on the shard's list of connections to drive at the end of the loop turn.
    pub dirty: bool,
}

impl Conn {
    /// Output bytes not yet accepted by the kernel.
    pub(crate) fn pending(&self) -> usize {
        self.sending.len() + self.out.len() + self.sendq.as_ref().map_or(0, SendQueue::queued)
    }

    /// True while input goes to the session.
    pub(crate) fn open(&self) -> bool {
        matches!(self.phase, Phase::Open { .. })
    }

    /// No more input for the session: the session said close, or the peer's EOF came.
    pub(crate) fn end_input(&mut self, eof: bool) {
        self.phase = match self.phase {
            Phase::Open { .. } => Phase::Flushing { eof },
            Phase::Flushing { eof: had } => Phase::Flushing { eof: had || eof },
            // Lingering: EOF (or the budget) ends it.
            Phase::Lingering(_) | Phase::ShuttingDown if eof => Phase::Aborting,
            other => other,
        };
    }

    /// Input that arrived after the session was done: discarded, counted against the
    /// linger budget.
    pub(crate) fn discard(&mut self, n: usize, now: Instant) {
        if let Phase::Lingering(linger) = &mut self.phase {
            if linger.on_read(n, now) == backend_api::close::LingerStep::Close {
                self.phase = Phase::Aborting;
            }
        }
    }

    pub(crate) fn abort(&mut self) {
        if self.phase != Phase::Closed {
            self.phase = Phase::Aborting;
        }
    }

    pub(crate) fn aborting(&self) -> bool {
        matches!(self.phase, Phase::Aborting | Phase::Closed)
    }
}

struct Slot {
    gen: u32,
    conn: Option<Conn>,
}

/// All connections of one shard.
#[derive(Default)]
pub(crate) struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
}

impl Table {
    /// Connections open now.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// Stores a new connection; returns its slot and generation.
    pub(crate) fn insert(
        &mut self,
        sock: Sock,
        session: AnySession,
        recv_buf: Option<Box<[u8]>>,
    ) -> (u32, u32) {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot { gen: 0, conn: None });
                (self.slots.len() - 1) as u32
            }
        };
        let entry = &mut self.slots[slot as usize];
        entry.gen = entry.gen.wrapping_add(1) & GEN_MASK;
        entry.conn = Some(Conn {
            sock,
            gen: entry.gen,
            session,
            out: OutBuf::new(),
            sending: OutBuf::new(),
            sendq: None,
            recv_buf,
            inflight: 0,
            recv: OpState::IDLE,
            send: OpState::IDLE,
            sent: 0,
            phase: Phase::Open { paused: false },
            dirty: false,
        });
        self.live += 1;
        (slot, entry.gen)
    }

    /// The connection in `slot` if it is of generation `gen`.
    pub(crate) fn get_mut(&mut self, slot: u32, gen: u32) -> Option<&mut Conn> {
        self.slots
            .get_mut(slot as usize)
            .filter(|s| s.gen == gen)
            .and_then(|s| s.conn.as_mut())
    }

    /// The connection in `slot`, whatever its generation.
    pub(crate) fn slot_mut(&mut self, slot: u32) -> Option<&mut Conn> {
        self.slots
            .get_mut(slot as usize)
            .and_then(|s| s.conn.as_mut())
    }

    /// Frees `slot` and returns its connection. The caller checked `inflight == 0`.
    pub(crate) fn remove(&mut self, slot: u32) -> Option<Conn> {
        let conn = self.slots.get_mut(slot as usize)?.conn.take()?;
        debug_assert_eq!(conn.inflight, 0, "slot freed with operations in flight");
        self.free.push(slot);
        self.live -= 1;
        Some(conn)
    }

    /// Slots of every open connection.
    pub(crate) fn slots(&self) -> Vec<u32> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.conn.is_some())
            .map(|(i, _)| i as u32)
            .collect()
    }

    /// Removes every connection (teardown).
    pub(crate) fn drain(&mut self) -> Vec<Conn> {
        self.free.clear();
        self.live = 0;
        self.slots.drain(..).filter_map(|s| s.conn).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backend_api::Service;

    #[test]
    fn reused_slot_gets_a_new_generation() {
        let mut t = Table::default();
        let (s, g) = t.insert(Sock::Fd(10), Service::Echo.session(), None);
        assert!(t.get_mut(s, g).is_some());
        t.remove(s).unwrap();
        assert_eq!(t.live(), 0);
        let (s2, g2) = t.insert(Sock::Fd(10), Service::Echo.session(), None);
        assert_eq!(s2, s, "slot reused");
        assert_ne!(g2, g);
        assert!(
            t.get_mut(s, g).is_none(),
            "old generation no longer resolves"
        );
        assert!(t.get_mut(s2, g2).is_some());
    }

    #[test]
    fn op_state_cancel_races_resolve() {
        let mut s = OpState::IDLE;
        assert!(!s.armed(), "first arm is no re-arm");
        s.cancelling();
        // The cancel completes first and found nothing: may cancel again.
        s.cancel_done();
        assert_eq!(s, OpState::Armed);
        s.cancelling();
        s.finished(true);
        assert_eq!(s, OpState::CancelPending);
        assert!(!s.can_arm(), "no re-arm while the cancel is due");
        s.cancel_done();
        assert!(s.can_arm());
        s.finished(true);
        assert!(
            s.armed(),
            "an operation that ended early makes the next arm a re-arm"
        );
    }
}
