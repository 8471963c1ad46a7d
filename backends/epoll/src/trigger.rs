//! The only places where the epoll backends differ: how a fd is registered, how much work
//! one readiness event buys, and the one point each claim variant changes.
//!
//! epoll-et ([`Edge`]) and epoll-lt ([`Level`]) are the two honest strategies. Each other
//! mode is one of them with exactly one point changed, so that measuring it against its
//! base measures that point alone:
//!
//! | mode | base | the one difference |
//! | --- | --- | --- |
//! | [`EdgeShortRead`] | epoll-et | a read shorter than the buffer ends the drain (no read that returns `EAGAIN`); `EPOLLRDHUP` registered so a pending EOF is never missed |
//! | [`EdgeInOut`] | epoll-et | `EPOLLIN | EPOLLOUT` registered for the connection's lifetime, never modified |
//! | [`LevelToggle`] | epoll-lt | output goes out only on `EPOLLOUT`: interest switches `EPOLLIN` → `EPOLLOUT` → `EPOLLIN` with `EPOLL_CTL_MOD` around every response |
//! | [`LevelOneshot`] | epoll-lt | `EPOLLONESHOT`: re-armed with `EPOLL_CTL_MOD` after every event |
//! | [`LevelMaxEvents`] | epoll-lt | `epoll_wait`'s `maxevents` (epoll-lt: [`MAX_EVENTS`]) |

use crate::conn::Conn;
use crate::sys::{ET, IN, MAX_EVENTS, ONESHOT, OUT, RDHUP};

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
    /// Size of the event array, `epoll_wait`'s `maxevents`.
    const MAX_EVENTS: usize = MAX_EVENTS;
    /// Edge only: a read that did not fill the buffer ends the drain, as if it had been
    /// followed by `EAGAIN`, unless the peer's shutdown (`EPOLLRDHUP`) was reported: then
    /// the drain goes on to EOF.
    const SHORT_READ_DRAINS: bool = false;
    /// Output is written only when `EPOLLOUT` reports the socket writable, never straight
    /// after the read that produced it.
    const WRITE_ON_EPOLLOUT: bool = false;
    /// Registered with `EPOLLONESHOT`: every event disables the fd, so it is re-armed with
    /// `EPOLL_CTL_MOD` after each one, changed or not.
    const ONESHOT: bool = false;

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

/// epoll-et that trusts a short read: a read returning less than the buffer size means
/// the socket's receive queue was empty, so the read that would return `EAGAIN` is
/// skipped. Safe for TCP on Linux because every later arrival (data or FIN) raises a new
/// edge; the one thing a short read can hide is an EOF that arrived with the data, which
/// the event reports as `EPOLLRDHUP`, so that is registered and, once seen, the drain
/// runs to EOF.
#[derive(Debug)]
pub(crate) struct EdgeShortRead;

impl Trigger for EdgeShortRead {
    const NAME: &'static str = "epoll-et-shortread";
    const EDGE: bool = true;
    const ACCEPT_BATCH: usize = Edge::ACCEPT_BATCH;
    const LISTENER_INTEREST: u32 = Edge::LISTENER_INTEREST;
    const SHORT_READ_DRAINS: bool = true;

    #[inline]
    fn interest(conn: &Conn) -> u32 {
        Edge::interest(conn) | RDHUP
    }
}

/// epoll-et with both interests registered once, at accept, for the connection's
/// lifetime: no `epoll_ctl` after the `ADD`, and every change of the socket's state
/// (each incoming segment, each ACK that frees send buffer) reports the connection.
#[derive(Debug)]
pub(crate) struct EdgeInOut;

impl Trigger for EdgeInOut {
    const NAME: &'static str = "epoll-inout";
    const EDGE: bool = true;
    const ACCEPT_BATCH: usize = Edge::ACCEPT_BATCH;
    const LISTENER_INTEREST: u32 = Edge::LISTENER_INTEREST;

    #[inline]
    fn interest(_: &Conn) -> u32 {
        ET | IN | OUT
    }
}

/// epoll-lt in the pattern of the field notes' 129-line server: read on `EPOLLIN`, switch
/// to `EPOLLOUT`, write on it, switch back: two `epoll_ctl(MOD)` per request.
#[derive(Debug)]
pub(crate) struct LevelToggle;

impl Trigger for LevelToggle {
    const NAME: &'static str = "epoll-toggle";
    const EDGE: bool = false;
    const ACCEPT_BATCH: usize = Level::ACCEPT_BATCH;
    const LISTENER_INTEREST: u32 = Level::LISTENER_INTEREST;
    const WRITE_ON_EPOLLOUT: bool = true;

    /// `EPOLLOUT` alone while a response is pending, `EPOLLIN` otherwise: the connection
    /// is read only once its last response is out.
    #[inline]
    fn interest(conn: &Conn) -> u32 {
        if !conn.out.is_empty() {
            OUT
        } else if conn.wants_input() {
            IN
        } else {
            0
        }
    }
}

/// epoll-lt with `EPOLLONESHOT`: one `epoll_ctl(MOD)` per event to re-arm.
#[derive(Debug)]
pub(crate) struct LevelOneshot;

impl Trigger for LevelOneshot {
    const NAME: &'static str = "epoll-oneshot";
    const EDGE: bool = false;
    const ACCEPT_BATCH: usize = Level::ACCEPT_BATCH;
    const LISTENER_INTEREST: u32 = Level::LISTENER_INTEREST;
    const ONESHOT: bool = true;

    #[inline]
    fn interest(conn: &Conn) -> u32 {
        Level::interest(conn) | ONESHOT
    }
}

/// epoll-lt with `maxevents = N`. Names exist for the sizes suites sweep; another `N`
/// fails to compile.
#[derive(Debug)]
pub(crate) struct LevelMaxEvents<const N: usize>;

impl<const N: usize> LevelMaxEvents<N> {
    /// The line for `harness list`.
    pub(crate) const DESCRIBE: &'static str = max_events_variant(N).1;
}

impl<const N: usize> Trigger for LevelMaxEvents<N> {
    const NAME: &'static str = max_events_variant(N).0;
    const EDGE: bool = false;
    const ACCEPT_BATCH: usize = Level::ACCEPT_BATCH;
    const LISTENER_INTEREST: u32 = Level::LISTENER_INTEREST;
    const MAX_EVENTS: usize = N;

    #[inline]
    fn interest(conn: &Conn) -> u32 {
        Level::interest(conn)
    }
}

/// The backend name and description of epoll-lt with `maxevents = n`.
const fn max_events_variant(n: usize) -> (&'static str, &'static str) {
    match n {
        1 => (
            "epoll-lt-me1",
            "claim variant of epoll-lt: maxevents 1 (one event per epoll_wait)",
        ),
        16 => ("epoll-lt-me16", "claim variant of epoll-lt: maxevents 16"),
        64 => ("epoll-lt-me64", "claim variant of epoll-lt: maxevents 64"),
        1024 => (
            "epoll-lt-me1024",
            "claim variant of epoll-lt: maxevents 1024 (the field notes' array)",
        ),
        _ => panic!("no backend name for this maxevents: add one to max_events_variant"),
    }
}
