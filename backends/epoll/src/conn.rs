//! The connection table: one slot per open connection, addressed by a [`Token`] that
//! epoll hands back in `epoll_event.u64`.
//!
//! # Why a token carries a generation
//!
//! One `epoll_wait` returns a batch of events, and handling an early event in the batch
//! can close a connection and accept a new one. Closing removes the fd from epoll, but the
//! events already copied into the batch array still carry the old token. If the token were
//! the fd (the kernel hands out the lowest free fd, so the new connection very likely gets
//! the same number) or a bare slot index (the free list hands the slot straight back), a
//! stale EPOLLERR or EPOLLIN meant for the dead connection would be applied to the new
//! one: a healthy connection closed, or read at the wrong time. So a token is
//! `generation << 32 | slot`, and a slot's generation changes every time it is freed; an
//! event whose generation does not match the slot's is stale and dropped. A generation
//! repeats only after 2^32 reuses of one slot, and a stale token lives at most one batch.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use backend_api::close::Linger;
use backend_api::{AnySession, OutBuf};

/// What epoll reports back for a registration: a connection's slot and generation, or one
/// of the two reserved values below.
pub(crate) type Token = u64;

/// The shard's listener.
pub(crate) const LISTENER: Token = u64::MAX;
/// The stop signal's eventfd.
pub(crate) const STOP: Token = u64::MAX - 1;

/// One connection's state. Small on purpose: an idle connection costs this struct plus
/// whatever its session buffers (nothing for echo or for an HTTP connection between
/// requests); the output buffer is empty and holds no heap once drained.
#[derive(Debug)]
pub(crate) struct Conn {
    /// The socket; closing it (drop) also removes it from epoll, since it is never dup'ed.
    pub(crate) fd: OwnedFd,
    /// The application state.
    pub(crate) session: AnySession,
    /// Output the socket did not take yet.
    pub(crate) out: OutBuf,
    /// The interest currently registered in epoll, so `epoll_ctl` runs only on change.
    pub(crate) interest: u32,
    /// EOF was read or the session asked to close: input goes to the session no more;
    /// the connection closes once `out` drains.
    pub(crate) read_closed: bool,
    /// The peer closed its side (read returned 0): nothing more will arrive.
    pub(crate) eof: bool,
    /// Set when the session asked to close and input kept arriving: our side is shut down
    /// for writing (FIN sent after the response) and input is discarded until the peer
    /// closes, the deadline passes or the discard budget is spent, because closing with
    /// unread input would send a reset that can destroy the response still in flight.
    pub(crate) linger: Option<Linger>,
    /// Pending output passed the limit: reading is paused until it drains (backpressure).
    pub(crate) paused: bool,
    /// Edge-triggered only: a readable edge was seen and `EAGAIN` not yet, so the socket
    /// may hold input no further edge will announce.
    pub(crate) read_ready: bool,
    /// `EPOLLRDHUP` was reported (only registered by epoll-et-shortread): the peer's FIN
    /// is queued behind its data, so reads go on to EOF whatever their length.
    pub(crate) rdhup: bool,
}

impl Conn {
    /// A fresh connection registered with `interest`.
    pub(crate) fn new(fd: OwnedFd, session: AnySession, interest: u32) -> Conn {
        Conn {
            fd,
            session,
            out: OutBuf::new(),
            interest,
            read_closed: false,
            eof: false,
            linger: None,
            paused: false,
            read_ready: false,
            rdhup: false,
        }
    }

    /// The socket's raw fd.
    #[inline]
    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// True while input may be read for the session.
    #[inline]
    pub(crate) fn can_read(&self) -> bool {
        !self.read_closed && !self.paused
    }

    /// True while the connection lingers (see [`Conn::linger`]).
    #[inline]
    pub(crate) fn lingering(&self) -> bool {
        self.linger.is_some()
    }

    /// True while the connection wants to hear about input: to read it for the session,
    /// or to discard it while lingering.
    #[inline]
    pub(crate) fn wants_input(&self) -> bool {
        self.can_read() || self.lingering()
    }

    /// Drops the output buffer's heap once it drained, so an idle connection holds none.
    /// Output normally goes straight from the shard's scratch buffer to the socket; this
    /// buffer only fills when a write would block, so releasing it costs little.
    #[inline]
    pub(crate) fn release_drained_output(&mut self) {
        if self.out.is_empty() && self.out.capacity() != 0 {
            self.out = OutBuf::new();
        }
    }
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

/// A slab of connections with a free list; slots are reused, never shrunk.
#[derive(Debug, Default)]
pub(crate) struct ConnTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
}

impl ConnTable {
    /// An empty table.
    pub(crate) fn new() -> ConnTable {
        ConnTable::default()
    }

    /// Connections open now.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// The token the next [`ConnTable::insert`] will return, so a connection can be
    /// registered in epoll before it is stored (and dropped, closing it, if that fails).
    pub(crate) fn next_token(&self) -> Token {
        match self.free.last() {
            Some(&i) => token(i, self.slots[i as usize].generation),
            None => token(self.slots.len() as u32, 0),
        }
    }

    /// Stores `conn` and returns its token (the one [`ConnTable::next_token`] announced).
    pub(crate) fn insert(&mut self, conn: Conn) -> Token {
        self.live += 1;
        match self.free.pop() {
            Some(i) => {
                let slot = &mut self.slots[i as usize];
                debug_assert!(slot.conn.is_none());
                slot.conn = Some(conn);
                token(i, slot.generation)
            }
            None => {
                let i = self.slots.len() as u32;
                self.slots.push(Slot {
                    generation: 0,
                    conn: Some(conn),
                });
                token(i, 0)
            }
        }
    }

    /// The live connection `token` names, or `None` if the token is stale.
    #[inline]
    pub(crate) fn get_mut(&mut self, token: Token) -> Option<&mut Conn> {
        let (index, generation) = split(token);
        match self.slots.get_mut(index as usize) {
            Some(slot) if slot.generation == generation => slot.conn.as_mut(),
            _ => None,
        }
    }

    /// Removes the connection `token` names (closing its fd on drop) and retires the
    /// token. Returns whether a connection was removed.
    pub(crate) fn remove(&mut self, token: Token) -> bool {
        let (index, generation) = split(token);
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return false;
        };
        if slot.generation != generation {
            return false;
        }
        let Some(conn) = slot.conn.take() else {
            return false;
        };
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index);
        self.live -= 1;
        drop(conn);
        true
    }

    /// Closes every connection; returns how many there were.
    pub(crate) fn clear(&mut self) -> usize {
        let n = self.live;
        self.slots.clear();
        self.free.clear();
        self.live = 0;
        n
    }
}

#[inline]
fn token(index: u32, generation: u32) -> Token {
    (u64::from(generation) << 32) | u64::from(index)
}

#[inline]
fn split(token: Token) -> (u32, u32) {
    (token as u32, (token >> 32) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use backend_api::Service;

    fn conn() -> Conn {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        Conn::new(a.into(), Service::Http.session(), 0)
    }

    #[test]
    fn stale_tokens_do_not_reach_a_reused_slot() {
        let mut t = ConnTable::new();
        let announced = t.next_token();
        let old = t.insert(conn());
        assert_eq!(announced, old);
        assert!(t.remove(old));
        assert!(!t.remove(old), "a token is retired once");
        let announced = t.next_token();
        let new = t.insert(conn());
        assert_eq!(announced, new);
        assert_eq!(split(old).0, split(new).0, "the slot is reused");
        assert!(t.get_mut(old).is_none(), "the stale token misses");
        assert!(t.get_mut(new).is_some());
        assert!(old != LISTENER && old != STOP && new != LISTENER && new != STOP);
        assert_eq!((t.len(), t.clear(), t.len()), (1, 1, 0));
    }

    #[test]
    fn an_idle_connection_costs_well_under_4_kib() {
        let per_connection = std::mem::size_of::<Slot>() + std::mem::size_of::<u32>();
        assert!(per_connection <= 128, "{per_connection} bytes per slot");
        let c = conn();
        assert_eq!(c.out.capacity(), 0);
        assert_eq!(c.session.buffered(), 0);
    }
}
