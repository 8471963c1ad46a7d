//! What a shard's tasks share: counters, limits, the read buffer and the table of open
//! connection tasks. Both the accept loop (`shard`) and the connection tasks (`conn`) use
//! it; neither depends on the other's module.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use backend_api::{Limits, Service};
use glommio::task::JoinHandle;

/// Counters shared by the shard's tasks (single-threaded, so plain cells).
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) accepted: Cell<u64>,
    pub(crate) closed: Cell<u64>,
    pub(crate) bytes_in: Cell<u64>,
    pub(crate) bytes_out: Cell<u64>,
    pub(crate) reads: Cell<u64>,
    pub(crate) writes: Cell<u64>,
    pub(crate) accept_pauses: Cell<u64>,
    pub(crate) backpressure_pauses: Cell<u64>,
    pub(crate) open: Cell<u64>,
    pub(crate) peak_connections: Cell<u64>,
}

/// Adds `n` to a counter.
#[inline]
pub(crate) fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

/// What every task of one shard shares.
pub(crate) struct Shared {
    pub(crate) service: Service,
    pub(crate) limits: Limits,
    pub(crate) counters: Counters,
    /// One read buffer for the whole shard. glommio's socket reads are readiness based: the
    /// buffer is only lent to a direct `recv` inside one poll, never held by the kernel
    /// across an await, so connections need no buffer of their own while they wait.
    pub(crate) read_buf: RefCell<Vec<u8>>,
    /// Open connection tasks, so that a stop can cancel and await them.
    pub(crate) conns: RefCell<HashMap<u64, JoinHandle<()>>>,
    next_conn: Cell<u64>,
}

/// Removes a finished connection from the shard's bookkeeping, however the task ends
/// (completed or cancelled).
pub(crate) struct ConnGuard {
    pub(crate) shared: Rc<Shared>,
    id: u64,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let c = &self.shared.counters;
        bump(&c.closed, 1);
        c.open.set(c.open.get() - 1);
        // On a stop the map was already emptied; then this finds nothing.
        self.shared.conns.borrow_mut().remove(&self.id);
    }
}

impl Shared {
    /// A shard's shared state before its first connection.
    pub(crate) fn new(service: Service, limits: Limits) -> Shared {
        Shared {
            service,
            limits,
            counters: Counters::default(),
            read_buf: RefCell::new(vec![0; limits.read_buffer.max(1)]),
            conns: RefCell::new(HashMap::new()),
            next_conn: Cell::new(0),
        }
    }

    /// Registers a new connection; its task holds the guard, whose drop unregisters it.
    pub(crate) fn open_connection(self: &Rc<Self>) -> ConnGuard {
        let c = &self.counters;
        let open = c.open.get() + 1;
        c.open.set(open);
        c.peak_connections.set(c.peak_connections.get().max(open));
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        ConnGuard {
            shared: Rc::clone(self),
            id,
        }
    }

    /// Files the task serving connection `id`, so that a stop can cancel and await it.
    pub(crate) fn track(&self, id: u64, handle: JoinHandle<()>) {
        self.conns.borrow_mut().insert(id, handle);
    }
}

impl ConnGuard {
    /// The id the connection is filed under.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}
