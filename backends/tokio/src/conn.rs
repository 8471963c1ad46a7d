//! One connection as a tokio task: readiness from tokio's reactor, bytes through the
//! shared session layer, a thread-local read buffer, per-connection counters.
//!
//! A connection ends by the shared close policy ([`backend_api::close`]): after the peer's
//! EOF it closes once flushed; after the session's `Flow::Close` it flushes and, if input
//! is still queued, shuts down its write side and lingers (a tokio timer bounds the wait by
//! the linger deadline).
//!
//! Both tokio backends run exactly this task; only the runtime around it differs, so the
//! pair measures the layout (work stealing versus thread per core) and nothing else.

use std::cell::RefCell;
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use backend_api::close::{self, Linger, LingerStep, Queued};
use backend_api::{AnySession, Flow, Limits, OutBuf, Session, ShardStats};
use tokio::io::Interest;
use tokio::net::TcpStream;

thread_local! {
    /// The read buffer of whichever thread polls a connection task: one per tokio worker
    /// (or per shard thread for `tokio-tpc`), never one per connection. A task only borrows
    /// it between a readiness wake-up and the `try_read` that follows, with no `.await` in
    /// between, so no task can hold it while another runs on the same thread.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Counters a shard's connection tasks add to when they end; read by the shard at stop.
///
/// Tasks keep their own counts while they run (a [`Tally`]) and add them here once, so
/// workers stealing tasks from each other never contend on these cache lines per read.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    closed: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    reads: AtomicU64,
    writes: AtomicU64,
    backpressure_pauses: AtomicU64,
}

impl Counters {
    /// Adds what every finished connection counted to `stats`.
    pub(crate) fn add_to(&self, stats: &mut ShardStats) {
        stats.closed += self.closed.load(Ordering::Relaxed);
        stats.bytes_in += self.bytes_in.load(Ordering::Relaxed);
        stats.bytes_out += self.bytes_out.load(Ordering::Relaxed);
        stats.reads += self.reads.load(Ordering::Relaxed);
        stats.writes += self.writes.load(Ordering::Relaxed);
        stats.backpressure_pauses += self.backpressure_pauses.load(Ordering::Relaxed);
    }
}

/// One connection's counts. Flushed into the shard's [`Counters`] on drop, so a task
/// aborted at stop still counts, including its close.
#[derive(Debug)]
pub(crate) struct Tally {
    shared: Arc<Counters>,
    bytes_in: u64,
    bytes_out: u64,
    reads: u64,
    writes: u64,
    backpressure_pauses: u64,
}

impl Tally {
    pub(crate) fn new(shared: Arc<Counters>) -> Tally {
        Tally {
            shared,
            bytes_in: 0,
            bytes_out: 0,
            reads: 0,
            writes: 0,
            backpressure_pauses: 0,
        }
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        let s = &self.shared;
        s.closed.fetch_add(1, Ordering::Relaxed);
        s.bytes_in.fetch_add(self.bytes_in, Ordering::Relaxed);
        s.bytes_out.fetch_add(self.bytes_out, Ordering::Relaxed);
        s.reads.fetch_add(self.reads, Ordering::Relaxed);
        s.writes.fetch_add(self.writes, Ordering::Relaxed);
        s.backpressure_pauses
            .fetch_add(self.backpressure_pauses, Ordering::Relaxed);
    }
}

/// What one read did.
enum Read {
    /// The session took `n` bytes and wants more.
    More(usize),
    /// The peer finished sending: flush, then close.
    Eof,
    /// The session took `n` bytes and asked to close: flush, then the close policy.
    Close(usize),
    /// Nothing to read after all (a spurious wake-up); tokio cleared the readiness.
    WouldBlock,
}

/// Whether the connection reads requests, and if not, why it stopped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reading {
    Open,
    /// The peer finished: close once flushed.
    PeerDone,
    /// The session asked to close: once flushed, shut down the write side and linger.
    SessionDone,
}
/// Serves one accepted connection until it closes. Never fails: every error ends this
/// connection only (the socket is closed when `stream` drops).
///
/// Writes go through `send(MSG_NOSIGNAL)` (tokio → mio → std), so a peer that vanished
/// yields `EPIPE` here instead of a `SIGPIPE` for the process.
pub(crate) async fn serve(
    stream: TcpStream,
    mut session: AnySession,
    limits: Limits,
    mut tally: Tally,
) {
    let mut out = OutBuf::new();
    let mut reading = Reading::Open;
    let mut paused = false;
    loop {
        // Write whatever is pending before reading more; only a write that would block
        // makes the task wait for writability.
        while !out.is_empty() {
            match stream.try_write(out.pending()) {
                Ok(n) => {
                    tally.writes += 1;
                    tally.bytes_out += n as u64;
                    out.advance(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // ECONNRESET, EPIPE, ...: this connection is gone.
                Err(_) => return,
            }
        }
        let full = limits.output_full(out.len());
        if full && !paused {
            tally.backpressure_pauses += 1;
        }
        paused = full;
        let want_read = reading == Reading::Open && !full;
        let interest = match (want_read, !out.is_empty()) {
            (true, true) => Interest::READABLE | Interest::WRITABLE,
            (true, false) => Interest::READABLE,
            (false, true) => Interest::WRITABLE,
            // Not reading any more and everything is written: close.
            (false, false) => {
                if reading == Reading::SessionDone {
                    // Boxed: the linger's timer would otherwise grow every connection's
                    // future (the idle cost) by ~200 bytes for a phase most never reach.
                    Box::pin(linger(&stream, limits.read_buffer, &mut tally)).await;
                }
                return;
            }
        };
        let ready = match stream.ready(interest).await {
            Ok(ready) => ready,
            Err(_) => return,
        };
        if want_read && ready.is_readable() {
            match read_once(&stream, &mut session, &mut out, limits.read_buffer) {
                Ok(Read::More(n)) => {
                    tally.reads += 1;
                    tally.bytes_in += n as u64;
                }
                Ok(Read::Eof) => {
                    tally.reads += 1;
                    reading = Reading::PeerDone;
                }
                Ok(Read::Close(n)) => {
                    tally.reads += 1;
                    tally.bytes_in += n as u64;
                    reading = Reading::SessionDone;
                }
                Ok(Read::WouldBlock) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

/// Steps 2-3 of the close policy ([`backend_api::close`]) when input is still queued: FIN
/// after the last response, then discard input until EOF, the deadline or the budget.
/// Dropping the stream closes.
async fn linger(stream: &TcpStream, size: usize, tally: &mut Tally) {
    // Nothing more queued: close now (a FIN follows the output).
    let queued = READ_BUF.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() != size {
            buf.resize(size, 0);
        }
        close::discard_queued(stream.as_fd(), &mut buf)
    });
    tally.reads += 1;
    let first = match queued {
        Ok(Queued::Discarded(n)) => n,
        Ok(Queued::Nothing | Queued::Eof) | Err(_) => return,
    };
    tally.bytes_in += first as u64;
    if close::shutdown_write(stream.as_fd()).is_err() {
        return;
    }
    let mut linger = Linger::start(std::time::Instant::now());
    if linger.on_read(first, std::time::Instant::now()) == LingerStep::Close {
        return;
    }
    let deadline = tokio::time::Instant::from_std(linger.deadline());
    loop {
        match tokio::time::timeout_at(deadline, stream.readable()).await {
            Ok(Ok(())) => {}
            // The deadline passed, or the socket failed.
            Err(_) | Ok(Err(_)) => return,
        }
        let read = READ_BUF.with(|cell| {
            let mut buf = cell.borrow_mut();
            if buf.len() != size {
                buf.resize(size, 0);
            }
            stream.try_read(&mut buf)
        });
        match read {
            Ok(n) => {
                tally.reads += 1;
                tally.bytes_in += n as u64;
                if linger.on_read(n, std::time::Instant::now()) == LingerStep::Close {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}

/// One `read(2)` into this thread's shared buffer, handed straight to the session.
fn read_once(
    stream: &TcpStream,
    session: &mut AnySession,
    out: &mut OutBuf,
    size: usize,
) -> io::Result<Read> {
    READ_BUF.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() != size {
            buf.resize(size, 0);
        }
        match stream.try_read(&mut buf) {
            Ok(0) => Ok(Read::Eof),
            Ok(n) => Ok(match session.on_input(&buf[..n], out.tail()) {
                Flow::Continue => Read::More(n),
                Flow::Close => Read::Close(n),
            }),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Read::WouldBlock),
            Err(e) => Err(e),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use backend_api::Service;

    #[test]
    fn connection_future_stays_small() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            client.set_nonblocking(true).unwrap();
            let stream = TcpStream::from_std(client).unwrap();
            let task = serve(
                stream,
                Service::Http.session(),
                Limits::default(),
                Tally::new(Arc::default()),
            );
            let size = std::mem::size_of_val(&task);
            eprintln!("connection future: {size} bytes");
            // 464 bytes with tokio 1.54; this guards the idle-connection cost against growth.
            assert!(size <= 640, "the connection future grew to {size} bytes");
        });
    }
}
