//! The only places where epoll-et and epoll-lt differ: how a fd is registered and how
//! much work one readiness event buys.

use crate::conn::Conn;
use crate::sys::{ET, IN, OUT};

/// One epoll trigger mode. The event loop is generic over it, so each mode compiles to its
/// own loop with the constants folded in.
pub(crate) trait Trigger {
    /// Backend name.
    const NAME: &'static str;
    /// Edge-triggered: drain accepts, reads and writes until `EAGAIN`, because epoll will
    /// not report a condition that already held when the fd was last reported.
    const EDGE: bool;
    /// Most connections accepted per listener event.
    const ACCEPT_BATCH: usize;
    /// Interest for the listener while accepting.
    const LISTENER_INTEREST: u32;

    /// The interest a connection needs in its current state.
    fn interest(conn: &Conn) -> u32;
}

/// Edge-triggered (`EPOLLET`).
#[derive(Debug)]
pub(crate) struct Edge;

impl Trigger for Edge {
    const NAME: &'static str = "epoll-et";
    const EDGE: bool = true;
    /// Until `EAGAIN`: a connection left in the backlog gets no new edge.
    const ACCEPT_BATCH: usize = usize::MAX;
    const LISTENER_INTEREST: u32 = IN | ET;

    /// `EPOLLIN` stays registered while paused by backpressure: edges that arrive then
    /// only set `read_ready` (no `epoll_ctl` on every pause), and the loop resumes reading
    /// itself once output drains. `EPOLLOUT` only while a write hit `EAGAIN` and output is
    /// pending: with it registered, every incoming packet also reports `EPOLLOUT`.
    #[inline]
    fn interest(conn: &Conn) -> u32 {
        let read = if conn.read_closed && !conn.lingering() {
            0
        } else {
            IN
        };
        let write = if conn.out.is_empty() { 0 } else { OUT };
        ET | read | write
    }
}

/// Level-triggered (the epoll default).
#[derive(Debug)]
pub(crate) struct Level;

impl Trigger for Level {
    const NAME: &'static str = "epoll-lt";
    const EDGE: bool = false;
    /// One bounded batch per event; a listener with more queued reports again next wait,
    /// so connections and the listener take turns.
    const ACCEPT_BATCH: usize = 64;
    const LISTENER_INTEREST: u32 = IN;

    /// `EPOLLIN` only while the connection may be read: a paused or finished connection
    /// whose socket stays readable would otherwise be reported on every wait (a busy
    /// loop). `EPOLLOUT` only while output is pending, for the same reason.
    #[inline]
    fn interest(conn: &Conn) -> u32 {
        let read = if conn.wants_input() { IN } else { 0 };
        let write = if conn.out.is_empty() { 0 } else { OUT };
        read | write
    }
}
