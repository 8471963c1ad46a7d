//! One connection: a glommio task that moves bytes between its socket and its session.
//!
//! The task polls reads and writes itself (one `poll_fn`) rather than awaiting them in
//! turn, so that it can keep reading while earlier output is still draining, exactly up to
//! the shared backpressure limit:
//!
//! 1. write pending output until it is empty or the socket would block;
//! 2. if the pending output is at or past `limits.max_pending_output`, stop reading and
//!    wait for write readiness only (backpressure);
//! 3. otherwise read once into the shard's buffer, hand the bytes to the session, and loop.
//!
//! A read of 0 or `Flow::Close` stops reading. The connection then ends by the shared close
//! policy ([`backend_api::close`]): after the peer's EOF it closes once the output is
//! flushed; after `Flow::Close` it flushes and, if input is still queued, shuts down its
//! write side and lingers, discarding input until EOF or the linger deadline (a glommio
//! timer) or budget. Dropping
//! the socket closes it. Any socket error (`ECONNRESET`, `EPIPE`, ...) ends only
//! this task. (glommio sends with `MSG_DONTWAIT` but not `MSG_NOSIGNAL`; a write to a reset
//! peer is only an `EPIPE` because the Rust runtime ignores `SIGPIPE` in every binary.) A task reads at most [`READ_BUDGET`] times per poll before yielding, so one
//! busy connection cannot starve the others on the shard.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use backend_api::close::{self, Linger, LingerStep, Queued};
use backend_api::{AnySession, Flow, OutBuf, Session};
use futures_lite::future;
use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use crate::state::{bump, ConnGuard};

/// Reads per poll before the task yields to the others (at the default 64 KiB read buffer,
/// up to 1 MiB per turn).
const READ_BUDGET: u32 = 16;

/// Serves one accepted connection until it closes; errors close only this connection.
pub(crate) async fn serve(stream: TcpStream, session: AnySession, guard: ConnGuard) {
    let mut conn = Conn {
        stream,
        session,
        out: OutBuf::new(),
        closing: None,
        paused: false,
        guard,
    };
    // An error here concerns only this connection: it is closed when `conn` drops.
    if let Ok(End::SessionDone) = std::future::poll_fn(|cx| conn.drive(cx)).await {
        conn.linger().await;
    }
}

/// Why a connection stopped reading requests.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// The peer finished sending: close once flushed.
    PeerDone,
    /// The session asked to close: once flushed, shut down the write side and linger.
    SessionDone,
}

struct Conn {
    stream: TcpStream,
    session: AnySession,
    out: OutBuf,
    /// No more reads, and why: flush, then close.
    closing: Option<End>,
    /// Currently not reading because of backpressure (counted once per pause).
    paused: bool,
    guard: ConnGuard,
}

impl Conn {
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<End>> {
        let shared = &*self.guard.shared;
        let c = &shared.counters;
        let mut budget = READ_BUDGET;
        loop {
            while !self.out.is_empty() {
                match Pin::new(&mut self.stream).poll_write(cx, self.out.pending()) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        bump(&c.writes, 1);
                        bump(&c.bytes_out, n as u64);
                        self.out.advance(n);
                    }
                    Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    // glommio armed a write-readiness poll that wakes this task.
                    Poll::Pending => break,
                }
            }
            if let Some(end) = self.closing {
                return if self.out.is_empty() {
                    Poll::Ready(Ok(end))
                } else {
                    Poll::Pending
                };
            }
            if shared.limits.output_full(self.out.len()) {
                if !self.paused {
                    self.paused = true;
                    bump(&c.backpressure_pauses, 1);
                }
                // Only the pending write can wake us: reads stay off until output drains.
                return Poll::Pending;
            }
            self.paused = false;
            if budget == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            budget -= 1;
            let mut buf = shared.read_buf.borrow_mut();
            match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(0)) => {
                    bump(&c.reads, 1);
                    self.closing = Some(End::PeerDone);
                }
                Poll::Ready(Ok(n)) => {
                    bump(&c.reads, 1);
                    bump(&c.bytes_in, n as u64);
                    if self.session.on_input(&buf[..n], self.out.tail()) == Flow::Close {
                        self.closing = Some(End::SessionDone);
                    }
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                // glommio armed a read-readiness poll that wakes this task.
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Steps 2-3 of the close policy, once the output is flushed, if input is still
    /// queued: FIN, then discard input until EOF, the deadline or the budget.
    async fn linger(&mut self) {
        // SAFETY: the stream owns this descriptor and outlives the borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(self.stream.as_raw_fd()) };
        let c = &self.guard.shared.counters;
        // Nothing more queued: close now (a FIN follows the output). The buffer is lent
        // for this one call only.
        let queued = close::discard_queued(fd, &mut self.guard.shared.read_buf.borrow_mut());
        bump(&c.reads, 1);
        let first = match queued {
            Ok(Queued::Discarded(n)) => n,
            Ok(Queued::Nothing | Queued::Eof) | Err(_) => return,
        };
        bump(&c.bytes_in, first as u64);
        if close::shutdown_write(fd).is_err() {
            return;
        }
        let mut linger = Linger::start(Instant::now());
        if linger.on_read(first, Instant::now()) == LingerStep::Close {
            return;
        }
        let deadline = glommio::timer::sleep(linger.remaining(Instant::now()));
        let discard = std::future::poll_fn(|cx| self.discard(cx, &mut linger));
        future::or(discard, deadline).await;
    }

    /// Reads and throws away until the linger says close (or the socket fails).
    fn discard(&mut self, cx: &mut Context<'_>, linger: &mut Linger) -> Poll<()> {
        let c = &self.guard.shared.counters;
        let mut budget = READ_BUDGET;
        while budget > 0 {
            budget -= 1;
            let mut buf = self.guard.shared.read_buf.borrow_mut();
            match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(n)) => {
                    bump(&c.reads, 1);
                    bump(&c.bytes_in, n as u64);
                    if linger.on_read(n, Instant::now()) == LingerStep::Close {
                        return Poll::Ready(());
                    }
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
