//! The connection table shared by every variant: a slab of connections addressed by
//! `(slot, generation)`, and the per-connection state the completion dispatch drives.
//!
//! Invariants the shard keeps:
//! - `inflight` counts every SQE that names this connection (receive, send, cancels). A
//!   slot is freed, and its socket closed, only at `inflight == 0`, so no completion can
//!   arrive for a slot after it was reused, and no operation is ever in flight on a closed
//!   (or reused) descriptor.
//! - At most one send is in flight (`send_inflight`); it reads from `sending`, which nothing
//!   appends to while it is in flight. Sessions append to `out`.
//! - At most one receive is armed (`recv_armed`).

use std::os::fd::RawFd;

use backend_api::{AnySession, OutBuf};

use crate::token::GEN_MASK;

/// One connection.
pub(crate) struct Conn {
    /// The socket. Owned: closed by a `Close` SQE (or `close(2)` at teardown) once
    /// `inflight == 0`.
    pub fd: RawFd,
    pub gen: u32,
    pub session: AnySession,
    /// What sessions append to.
    pub out: OutBuf,
    /// What the in-flight send reads from; frozen while `send_inflight`.
    pub sending: OutBuf,
    /// One-shot `uring` only: the buffer the in-flight `Recv` writes to.
    pub recv_buf: Option<Box<[u8]>>,
    /// SQEs naming this connection whose final CQE has not arrived.
    pub inflight: u32,
    pub recv_armed: bool,
    /// A receive of the previous round ended while the connection still wanted to read:
    /// the next arm counts as a re-arm.
    pub recv_ended: bool,
    pub recv_cancel: bool,
    pub send_inflight: bool,
    pub send_cancel: bool,
    /// No more reading: peer EOF, or the session returned `Flow::Close`.
    pub read_done: bool,
    /// Error or shutdown: drop output, cancel everything, close.
    pub aborting: bool,
    /// Not being read because of pending output.
    pub paused: bool,
    /// Queued on the shard's list of connections to drive at the end of the loop turn.
    pub dirty: bool,
}

impl Conn {
    /// Output bytes not yet accepted by the kernel.
    pub(crate) fn pending(&self) -> usize {
        self.sending.len() + self.out.len()
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
        fd: RawFd,
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
            fd,
            gen: entry.gen,
            session,
            out: OutBuf::new(),
            sending: OutBuf::new(),
            recv_buf,
            inflight: 0,
            recv_armed: false,
            recv_ended: false,
            recv_cancel: false,
            send_inflight: false,
            send_cancel: false,
            read_done: false,
            aborting: false,
            paused: false,
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
        let (s, g) = t.insert(10, Service::Echo.session(), None);
        assert!(t.get_mut(s, g).is_some());
        t.remove(s).unwrap();
        assert_eq!(t.live(), 0);
        let (s2, g2) = t.insert(10, Service::Echo.session(), None);
        assert_eq!(s2, s, "slot reused");
        assert_ne!(g2, g);
        assert!(
            t.get_mut(s, g).is_none(),
            "old generation no longer resolves"
        );
        assert!(t.get_mut(s2, g2).is_some());
    }
}
