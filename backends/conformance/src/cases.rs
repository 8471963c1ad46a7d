//! The cases. Each takes the backend and a [`ChildSpec`] and panics on a violation.
//! Numbered in the order the suite lists them ([`crate::CASES`]).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_api::close::LINGER_TIMEOUT;
use backend_api::session::http::{
    BAD_REQUEST, OK_CLOSE, OK_KEEP_ALIVE, OK_KEEP_ALIVE_10, TOO_LARGE,
};
use backend_api::{Backend, Service};

use crate::child::{ChildOptions, ChildOutcome, ChildSpec};
use crate::util::{
    self, assert_same, connect, connect_small_rcvbuf, data, echo_roundtrip, read_exact_n,
    read_to_eof, served, Rng, Server,
};

type B = Arc<dyn Backend>;

/// Case 1: Echo integrity for sizes 1 B … 4 MiB, written in random chunks, checked byte for byte.
pub fn echo_integrity_1b_to_4mib(backend: B, _: &ChildSpec) {
    if util::unsupported(&*backend) {
        return;
    }
    let server = Server::start(backend, Service::Echo, 1);
    let sizes = [
        1usize,
        2,
        7,
        100,
        1460,
        4096,
        65_535,
        65_536,
        65_537,
        1 << 20,
        4 << 20,
    ];
    let handles: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let stream = server.connect();
            std::thread::spawn(move || {
                echo_roundtrip(stream, Arc::new(data(size, i as u64 + 1)), i as u64 + 7)
            })
        })
        .collect();
    for h in handles {
        if let Err(panic) = h.join() {
            // The round trip's own message says what differed.
            std::panic::resume_unwind(panic);
        }
    }
    let report = server.stop();
    let total: usize = sizes.iter().sum();
    assert_eq!(report.total.accepted, sizes.len() as u64, "accepted count");
    assert_eq!(
        report.total.bytes_in, total as u64,
        "server counted bytes_in"
    );
}

/// Case 2: 1000 concurrent connections, each verified.
pub fn thousand_concurrent_connections(backend: B, _: &ChildSpec) {
    if util::unsupported(&*backend) {
        return;
    }
    let server = Server::start(backend, Service::Echo, 1);
    let n = 1000;
    // All connections open at once before any traffic, so the server holds 1000.
    let mut conns: Vec<TcpStream> = (0..n).map(|_| server.connect()).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.write_all(&data(64, 1000 + i as u64)).unwrap();
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let got = read_exact_n(c, 64);
        assert_same(&got, &data(64, 1000 + i as u64));
    }
    drop(conns);
    let report = server.stop();
    assert_eq!(report.total.accepted, n as u64);
    assert!(
        report.total.peak_connections == 0 || report.total.peak_connections >= n as u64,
        "peak_connections {} below the {n} connections held open at once",
        report.total.peak_connections
    );
}

const GET: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: ringside\r\n\r\n";
const GET_CLOSE: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: ringside\r\nConnection: close\r\n\r\n";

/// Case 3: 64 HTTP requests pipelined in one write → 64 responses in order.
pub fn http_64_pipelined_in_one_write(backend: B, _: &ChildSpec) {
    if util::unsupported(&*backend) {
        return;
    }
    let server = Server::start(backend, Service::Http, 1);
    let mut c = server.connect();
    // 63 keep-alive requests then one that closes: the closing response must come last,
    // and nothing may follow it.
    let mut req = GET.repeat(63);
    req.extend_from_slice(GET_CLOSE);
    c.write_all(&req).unwrap();
    let got = read_to_eof(&mut c).expect("reading 64 responses");
    let mut want = OK_KEEP_ALIVE.repeat(63);
    want.extend_from_slice(OK_CLOSE);
    assert_same(&got, &want);
    // Keep-alive holds: a second pipelined batch on a new connection, read without EOF.
    let mut c = server.connect();
    c.write_all(&GET.repeat(64)).unwrap();
    assert_same(
        &read_exact_n(&mut c, 64 * OK_KEEP_ALIVE.len()),
        &OK_KEEP_ALIVE.repeat(64),
    );
    server.stop();
}

/// Case 4: An HTTP request delivered one byte at a time.
pub fn http_one_byte_at_a_time(backend: B, _: &ChildSpec) {
    if util::unsupported(&*backend) {
        return;
    }
    let server = Server::start(backend, Service::Http, 1);
    let mut c = server.connect();
    for b in GET.iter().chain(GET) {
        c.write_all(std::slice::from_ref(b)).unwrap();
    }
    assert_same(
        &read_exact_n(&mut c, 2 * OK_KEEP_ALIVE.len()),
        &OK_KEEP_ALIVE.repeat(2),
    );
    server.stop();
}

/// Case 5: `Connection: close` and HTTP/1.0 → response then EOF; HTTP/1.0 keep-alive stays open.
pub fn http_connection_close_and_http10(backend: B, _: &ChildSpec) {
    if util::unsupported(&*backend) {
        return;
    }
    let server = Server::start(backend, Service::Http, 1);
    for req in [GET_CLOSE, b"GET / HTTP/1.0\r\n\r\n".as_slice()] {
        let mut c = server.connect();
        c.write_all(req).unwrap();
        assert_same(&read_to_eof(&mut c).expect("reading to EOF"), OK_CLOSE);
    }
    let mut c = server.connect();
    c.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    assert_same(
        &read_exact_n(&mut c, OK_KEEP_ALIVE_10.len()),
        OK_KEEP_ALIVE_10,
    );
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert_same(&read_to_eof(&mut c).expect("reading to EOF"), OK_CLOSE);
    server.stop();
}

/// Reads a closing error response: the exact bytes, then EOF (a reset after the full
/// response also counts as closed: the peer may reset while we still send).
fn expect_response_then_close(c: &mut TcpStream, want: &[u8]) {
    let got = read_exact_n(c, want.len());
    assert_same(&got, want);
    let mut rest = [0u8; 64];
    match c.read(&mut rest) {
        Ok(0) => {}
        Ok(n) => panic!("{n} unexpected bytes after a closing response"),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected EOF after a closing response, got {e}"),
    }
}

/// Case 6: Malformed request → 400 then close; 16 KiB head → 431 then close.
pub fn http_malformed_400_and_oversized_431(backend: B, _: &ChildSpec) {
    if util::unsupported(&*backend) {
        return;
    }
    let server = Server::start(backend, Service::Http, 1);
    let mut c = server.connect();
    c.write_all(b"NOT HTTP AT ALL\r\n\r\n").unwrap();
    expect_response_then_close(&mut c, BAD_REQUEST);

    let mut c = server.connect();
    let mut big = b"GET / HTTP/1.1\r\nX-Padding: ".to_vec();
    big.resize(16 * 1024, b'a');
    big.extend_from_slice(b"\r\n\r\n");
    c.write_all(&big).unwrap();
    expect_response_then_close(&mut c, TOO_LARGE);
    server.stop();
}

/// Case 7: A client reset in the middle of a response leaves other connections unharmed.
pub fn client_reset_mid_response_harms_no_one(backend: B, _: &ChildSpec) {
    if util::unsupported(&*backend) {
        return;
    }
    let server = Server::start(backend, Service::Echo, 1);
    let bystanders: Vec<TcpStream> = (0..8).map(|_| server.connect()).collect();
    for round in 0..3u64 {
        let mut victim = server.connect();
        // Fill both directions until the server holds output it cannot send, read a little
        // of the echo, then reset (SO_LINGER 0) with data in flight both ways.
        let (sent, _) = write_until_stalled(
            &victim,
            &Pattern::new(77 + round),
            64 << 20,
            Duration::from_millis(300),
        );
        assert!(
            sent > 64 * 1024,
            "server took only {sent} bytes before stalling"
        );
        victim.set_nonblocking(false).unwrap();
        let _ = read_exact_n(&mut victim, 64 * 1024);
        socket2::SockRef::from(&victim)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(victim);
    }
    for (i, b) in bystanders.into_iter().enumerate() {
        echo_roundtrip(b, Arc::new(data(256 * 1024, 500 + i as u64)), i as u64);
    }
    echo_roundtrip(server.connect(), Arc::new(data(1024, 9)), 9);
    let report = server.stop();
    assert_eq!(report.total.accepted, 12);
}

/// An endless deterministic byte stream: byte `i` is `base[i % PERIOD]`, so any slice of
/// it can be produced and checked without holding the whole stream.
struct Pattern {
    bytes: Vec<u8>,
}

impl Pattern {
    const PERIOD: usize = 4093;
    const MAX: usize = 1 << 20;

    fn new(seed: u64) -> Pattern {
        let base = data(Self::PERIOD, seed);
        let bytes = base
            .iter()
            .copied()
            .cycle()
            .take(Self::PERIOD + Self::MAX)
            .collect();
        Pattern { bytes }
    }

    /// Up to `n` (at most 1 MiB) bytes of the stream starting at offset `off`.
    fn at(&self, off: usize, n: usize) -> &[u8] {
        let start = off % Self::PERIOD;
        &self.bytes[start..start + n.min(Self::MAX)]
    }
}

/// Writes `pattern` (nonblocking) without reading until `total` bytes are written or the
/// peer has taken nothing for `quiet`. Returns bytes written and whether it stalled.
fn write_until_stalled(
    c: &TcpStream,
    pattern: &Pattern,
    total: usize,
    quiet: Duration,
) -> (usize, bool) {
    write_slices_until_stalled(c, total, quiet, |off, n| pattern.at(off, n))
}

/// Writes bytes `0..total` of a stream, `at(offset, max)` giving the next slice of it,
/// nonblocking and without reading, until all is written or the peer has taken nothing
/// for `quiet`. Returns bytes written and whether it stalled. Leaves `c` nonblocking.
fn write_slices_until_stalled<'a>(
    c: &TcpStream,
    total: usize,
    quiet: Duration,
    at: impl Fn(usize, usize) -> &'a [u8],
) -> (usize, bool) {
    c.set_nonblocking(true).unwrap();
    let mut sent = 0usize;
    while sent < total {
        match (&*c).write(at(sent, total - sent)) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let mut pfd = libc::pollfd {
                    fd: std::os::fd::AsRawFd::as_raw_fd(c),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd for the duration of the call.
                let ready = unsafe { libc::poll(&mut pfd, 1, quiet.as_millis() as libc::c_int) };
                if ready == 0 {
                    return (sent, true);
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("writing without reading after {sent} bytes: {e}"),
        }
    }
    (sent, false)
}

/// Case 8: Slow reader: a client writes up to 256 MiB of echo traffic without reading; the
/// server's RSS growth stays under 64 MiB; then it reads everything and verifies it.
pub fn slow_reader_backpressure_bounds_memory(backend: B, child: &ChildSpec) {
    if util::unsupported(&*backend) {
        return;
    }
    const TOTAL: usize = 256 << 20;
    let server = child.spawn(Service::Echo, None);
    let rss_before = server.rss();
    let c = connect(server.addr);
    let pattern = Arc::new(Pattern::new(3));
    // Without reading, write until the server stops taking data for a whole second
    // (backpressure) or everything is written (no backpressure at all).
    let (sent, stalled) = write_until_stalled(&c, &pattern, TOTAL, Duration::from_secs(1));
    let growth = server.rss().saturating_sub(rss_before);
    assert!(
        growth < 64 << 20,
        "server RSS grew by {} MiB while a client wrote {} MiB without reading: no backpressure",
        growth >> 20,
        sent >> 20
    );
    assert!(
        stalled,
        "the server accepted all 256 MiB from a client that never read: no backpressure"
    );
    // Now read everything back while writing the rest, verifying every byte.
    c.set_nonblocking(false).unwrap();
    let mut w = c.try_clone().unwrap();
    let pat = Arc::clone(&pattern);
    let writer = std::thread::spawn(move || {
        let mut off = sent;
        while off < TOTAL {
            let piece = pat.at(off, TOTAL - off);
            w.write_all(piece)?;
            off += piece.len();
        }
        w.shutdown(Shutdown::Write)
    });
    let mut r = c;
    let mut buf = vec![0u8; Pattern::MAX];
    let mut got = 0usize;
    loop {
        let n = r
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("reading the echo back after {got} bytes: {e}"));
        if n == 0 {
            break;
        }
        if buf[..n] != *pattern.at(got, n) {
            panic!("echo differs within bytes {got}..{}", got + n);
        }
        got += n;
    }
    writer.join().unwrap().expect("writing the rest");
    assert_eq!(got, TOTAL, "echo length");
    let out = server.finish();
    assert_eq!(out.report.total.bytes_in, TOTAL as u64);
}

/// Case 9: Half-close: the client sends, shuts down its write side, receives the full echo
/// then EOF.
pub fn half_close_gets_full_echo_then_eof(backend: B, _: &ChildSpec) {
    if util::unsupported(&*backend) {
        return;
    }
    let server = Server::start(backend, Service::Echo, 1);
    for (i, size) in [1usize, 300 * 1024].into_iter().enumerate() {
        let mut c = server.connect();
        let payload = data(size, 40 + i as u64);
        // Everything written and half-closed before reading a byte.
        let mut w = c.try_clone().unwrap();
        let p = payload.clone();
        let writer = std::thread::spawn(move || {
            w.write_all(&p).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        writer.join().unwrap();
        let got = read_to_eof(&mut c).expect("reading echo to EOF after half-close");
        assert_same(&got, &payload);
    }
    server.stop();
}

/// Case 10: Two shards both accept connections.
pub fn two_shards_both_accept(backend: B, _: &ChildSpec) {
    if util::unsupported(&*backend) {
        return;
    }
    let server = Server::start(backend, Service::Echo, 2);
    // SO_REUSEPORT hashes the 4-tuple; 64 connections from different ports all landing on
    // one of two listeners has probability 2^-63.
    let conns: Vec<TcpStream> = (0..64).map(|_| server.connect()).collect();
    for (i, c) in conns.into_iter().enumerate() {
        echo_roundtrip(c, Arc::new(data(100, i as u64)), i as u64);
    }
    let report = server.stop();
    assert_eq!(report.shards.len(), 2);
    assert_eq!(report.total.accepted, 64);
    for (i, s) in report.shards.iter().enumerate() {
        assert!(
            s.accepted > 0,
            "shard {i} accepted no connection: {:?}",
            report.shards
        );
    }
}

/// Case 11: Stop: all shards exit within 1 s and the process holds no more descriptors than
/// before the server started, even with connections open and mid-request.
pub fn stop_is_prompt_and_leaks_no_fd(backend: B, child: &ChildSpec) {
    if util::unsupported(&*backend) {
        return;
    }
    let server = child.spawn(Service::Http, None);
    let mut open = Vec::new();
    for i in 0..32 {
        let mut c = connect(server.addr);
        c.write_all(GET).unwrap();
        read_exact_n(&mut c, OK_KEEP_ALIVE.len());
        if i % 2 == 0 {
            // Half a request pending in the server's session when it stops.
            c.write_all(&GET[..10]).unwrap();
        }
        open.push(c);
    }
    // One more that completes, so every open connection above is surely accepted.
    let mut c = connect(server.addr);
    c.write_all(GET_CLOSE).unwrap();
    read_to_eof(&mut c).unwrap();
    let out = server.finish();
    assert!(
        out.stop_ms <= 1000,
        "shards took {} ms to stop (limit 1000 ms)",
        out.stop_ms
    );
    assert_no_fd_leak(&out);
    assert_eq!(out.report.total.accepted, 33);
    drop(open);
}

/// The child server (one shard) holds no more descriptors after its stop than before its
/// start, beyond at most one known leak (a descriptor a dependency still references,
/// identified and recorded by the backend: see `backend_api::known_leaks`).
fn assert_no_fd_leak(out: &ChildOutcome) {
    assert!(
        out.fds_after <= out.fds_before,
        "server leaked descriptors: {} open before start, {} after stop (besides {} known leaks)",
        out.fds_before,
        out.fds_after,
        out.known_leaks
    );
    assert!(
        out.known_leaks <= 1,
        "the backend recorded {} known leaks for one shard (at most one is accounted for)",
        out.known_leaks
    );
}

/// Case 12: EMFILE: a server with a low RLIMIT_NOFILE under a connection flood keeps serving
/// its open connections, accepts again once descriptors are freed, and uses under 20% of
/// a core while at the limit.
pub fn emfile_does_not_spin_and_recovers(backend: B, child: &ChildSpec) {
    if util::unsupported(&*backend) {
        return;
    }
    const NOFILE: u64 = 96;
    let server = child.spawn(Service::Echo, Some(NOFILE));
    let mut first = connect(server.addr);
    echo_once(&mut first, 1);
    // Flood: far more connections than the server can hold. They all complete the
    // handshake into the backlog; the server accepts until EMFILE.
    let mut flood: Vec<TcpStream> = (0..300).map(|_| connect(server.addr)).collect();
    // Wait (bounded) until the server has taken all the descriptors it may.
    let deadline = Instant::now() + Duration::from_secs(20);
    while (server.open_fds() as u64) < NOFILE - 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let at_limit = server.open_fds();
    assert!(
        at_limit as u64 >= NOFILE - 2,
        "server never reached its descriptor limit ({at_limit} of {NOFILE} open)"
    );
    // At the limit with connections still queued: must not spin.
    let cpu0 = server.cpu_seconds();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    echo_once(&mut first, 2);
    let busy = (server.cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64();
    assert!(
        busy < 0.20,
        "server used {:.0}% of a core while at its descriptor limit (limit 20%)",
        busy * 100.0
    );
    // Free descriptors: the last queued connection must eventually be accepted and served.
    let last_conn = flood.pop().unwrap();
    flood.truncate(100);
    drop(flood);
    let mut last_conn = last_conn;
    echo_once(&mut last_conn, 3);
    drop(last_conn);
    drop(first);
    let out = server.finish();
    assert!(
        out.report.total.accepted > NOFILE,
        "accepted {} (the flood needed more than {NOFILE})",
        out.report.total.accepted
    );
}

fn echo_once(c: &mut TcpStream, seed: u64) {
    let msg = data(32, seed);
    c.write_all(&msg).unwrap();
    assert_same(&read_exact_n(c, 32), &msg);
}

/// A pipelined HTTP conversation whose responses can be told apart: request `i` is HTTP/1.1
/// or HTTP/1.0 with keep-alive by a pseudo-random bit, so its answer is [`OK_KEEP_ALIVE`] or
/// [`OK_KEEP_ALIVE_10`]; the last request closes. Any response dropped, duplicated or
/// moved shifts the sequence. Followed by `stray` bytes the session never parses (it
/// closed), which a server must still read before it closes.
struct Pipeline {
    requests: Vec<u8>,
    /// Which canned response each request gets, in order.
    answers: Vec<&'static [u8]>,
}

const GET_10_KEEP_ALIVE: &[u8] = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";

impl Pipeline {
    fn new(n: usize, mixed: bool, stray: usize, seed: u64) -> Pipeline {
        let mut rng = Rng::new(seed);
        let mut requests = Vec::with_capacity(n * GET.len() + stray);
        let mut answers = Vec::with_capacity(n);
        for _ in 1..n {
            if mixed && rng.upto(2) == 1 {
                requests.extend_from_slice(GET_10_KEEP_ALIVE);
                answers.push(OK_KEEP_ALIVE_10);
            } else {
                requests.extend_from_slice(GET);
                answers.push(OK_KEEP_ALIVE);
            }
        }
        requests.extend_from_slice(GET_CLOSE);
        answers.push(OK_CLOSE);
        requests.resize(requests.len() + stray, b'x');
        Pipeline { requests, answers }
    }

    fn expected(&self) -> Vec<u8> {
        self.answers.concat()
    }

    /// Which response the byte at `offset` of the expected output belongs to.
    fn response_at(&self, offset: usize) -> usize {
        let mut end = 0;
        for (i, a) in self.answers.iter().enumerate() {
            end += a.len();
            if offset < end {
                return i;
            }
        }
        self.answers.len()
    }

    /// Runs the conversation as a slow client: a small receive buffer, everything written
    /// before anything is read (as far as the server takes it), then the responses read in
    /// small pieces while the rest is written. Returns what arrived and how the reading
    /// ended (`Ok` at EOF).
    fn run_slow(&self, addr: std::net::SocketAddr) -> (Vec<u8>, std::io::Result<()>) {
        let c = connect_small_rcvbuf(addr, 16 * 1024);
        let reqs = Arc::new(self.requests.clone());
        let total = reqs.len();
        let (sent, _) =
            write_slices_until_stalled(&c, total, Duration::from_millis(300), |off, n| {
                &reqs[off..off + n]
            });
        c.set_nonblocking(false).unwrap();
        let mut w = c.try_clone().unwrap();
        let rest = Arc::clone(&reqs);
        let writer = std::thread::spawn(move || w.write_all(&rest[sent..]));
        let mut r = c;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let end = loop {
            match r.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        // The writer ends too: everything written, or failed on the closed connection
        // (its timeout bounds it either way). Only the reading side is judged.
        let _ = writer.join();
        (got, end)
    }

    /// Asserts `got` is exactly the expected responses, naming the first wrong one.
    fn check(&self, got: &[u8], what: &str) {
        let want = self.expected();
        if got == want.as_slice() {
            return;
        }
        let first = got
            .iter()
            .zip(&want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: got {} bytes, want {} ({} responses); the first difference is in response \
             {} of {}: responses reordered, duplicated or lost",
            got.len(),
            want.len(),
            self.answers.len(),
            self.response_at(first),
            self.answers.len()
        );
    }
}

/// Case 13: A slow-reading client pipelines 20,000 requests, the last with
/// `Connection: close`, followed by 256 KiB of stray bytes: it receives every response,
/// then EOF. A server that closes with the stray input unread makes the kernel reset the
/// connection and destroy the responses still queued.
pub fn http_slow_pipelining_client_gets_every_response_then_eof(backend: B, _: &ChildSpec) {
    if util::unsupported(&*backend) {
        return;
    }
    let server = Server::start(backend, Service::Http, 1);
    // More stray bytes than one read takes, so some are surely unread at the close.
    let p = Pipeline::new(20_000, false, 256 * 1024, 1);
    let (got, end) = p.run_slow(server.addr);
    if let Err(e) = end {
        panic!(
            "reading the responses ended with \"{e}\" after {} of {} bytes: the server closed \
             with input unread (a reset) instead of flushing, shutting down its write side and \
             discarding input until EOF",
            got.len(),
            p.expected().len()
        );
    }
    p.check(&got, "slow pipelining client");
    server.stop();
}

/// Case 14: A peer that sends `Connection: close` followed by 256 KiB it never expects
/// answered, and then never closes, is closed by the server within the linger deadline
/// (plus a generous allowance for a loaded machine); it sees the response, then EOF. (Input it sends after that EOF may meet a reset: a server that
/// found nothing unread may have closed at once.)
pub fn lingering_peer_is_closed_by_the_deadline(backend: B, _: &ChildSpec) {
    if util::unsupported(&*backend) {
        return;
    }
    const ALLOWANCE: Duration = Duration::from_secs(10);
    // How often the server may find nothing queued when the session ends (see below).
    const ATTEMPTS: usize = 8;
    let server = Server::start(backend, Service::Http, 1);
    let mut lingering = None;
    for _ in 0..ATTEMPTS {
        let mut c = server.connect();
        // The request, then more than one read takes: the server usually has input left
        // unread when the session closes, so it must linger (not close at once) and then
        // end that linger.
        let mut req = GET_CLOSE.to_vec();
        req.resize(GET_CLOSE.len() + 256 * 1024, b'x');
        c.write_all(&req).unwrap();
        assert_same(&read_exact_n(&mut c, OK_CLOSE.len()), OK_CLOSE);
        let mut one = [0u8; 1];
        match c.read(&mut one) {
            Ok(0) => {
                lingering = Some(c);
                break;
            }
            Ok(_) => panic!("bytes after the closing response"),
            // The policy lets a server close at once when one read finds nothing queued.
            // On a busy machine this client can still be between two segments of its
            // write then, and its next segment meets the closed socket: a reset, after a
            // response it did get. That attempt shows nothing about lingering; try again.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => continue,
            Err(e) => panic!("expected EOF after the closing response, got {e}"),
        }
    }
    let Some(mut c) = lingering else {
        panic!(
            "in {ATTEMPTS} attempts the server never lingered: every connection was reset \
             right after its closing response although input was still arriving"
        );
    };
    // More input after the EOF, which the server must throw away too if it still reads;
    // then nothing, and this side never closes. (A server that found nothing more queued
    // when it closed resets the connection on this input: the write may then fail.)
    let _ = c.write_all(b"stray bytes after the close");
    let closed_at = Instant::now();
    let client = c.local_addr().unwrap();
    let mut held = true;
    while held {
        // Some(0): the server closed its socket and the kernel finishes the connection.
        held = util::server_side_inode(server.addr, client).is_some_and(|inode| inode != 0);
        assert!(
            !held || closed_at.elapsed() < LINGER_TIMEOUT + ALLOWANCE,
            "the server still holds a connection {:?} after its peer got EOF without closing: \
             lingering must end by the deadline ({LINGER_TIMEOUT:?})",
            closed_at.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.stop();
}

/// Case 15: 100,000 pipelined requests whose responses differ (HTTP/1.1 and HTTP/1.0
/// keep-alive, mixed pseudo-randomly), from a client too slow to keep up, so the server's
/// writes block and it pauses reading: every response arrives once, in order. (12 MB of
/// responses: more than a loopback socket's send buffer grows to, 4 MiB by default, plus
/// the pending-output limit.)
pub fn http_pipelined_responses_in_order_under_backpressure(backend: B, _: &ChildSpec) {
    if util::unsupported(&*backend) {
        return;
    }
    let server = Server::start(backend, Service::Http, 1);
    let p = Pipeline::new(100_000, true, 0, 2);
    let (got, end) = p.run_slow(server.addr);
    if let Err(e) = end {
        panic!(
            "reading the responses failed after {} of {} bytes: {e}",
            got.len(),
            p.expected().len()
        );
    }
    p.check(&got, "pipelined responses under backpressure");
    server.stop();
}

/// Case 16: Connections reset by their peer in every state (idle, with output unread,
/// with the server's sends blocked, half-closed) give back their descriptor and their
/// connection slot while the server keeps running: a server with one connection held and
/// `max_connections` 5 serves round after round of four new connections, and its
/// descriptor count returns to what it was before each round.
pub fn reset_connections_free_their_slot_and_descriptor(backend: B, child: &ChildSpec) {
    if util::unsupported(&*backend) {
        return;
    }
    const SLOTS: usize = 4;
    let server = child.spawn_with(
        Service::Echo,
        ChildOptions {
            max_connections: Some(SLOTS + 1),
            ..ChildOptions::default()
        },
    );
    // Served, so the shard is fully up (a runtime may create its descriptors after the
    // server reports ready); held open throughout, so the count compared is stable.
    let warm = served(server.addr);
    let baseline = server.fd_targets();
    for round in 0..3u64 {
        let mut conns: Vec<TcpStream> = (0..SLOTS as u64)
            .map(|i| {
                let mut c = connect(server.addr);
                let msg = data(32, 100 * round + i);
                c.write_all(&msg).unwrap();
                let mut back = vec![0u8; msg.len()];
                if let Err(e) = c.read_exact(&mut back) {
                    panic!(
                        "round {round}: connection {i} of {SLOTS} was not served ({e}): a \
                         connection slot of a connection reset earlier is still taken"
                    );
                }
                assert_same(&back, &msg);
                c
            })
            .collect();
        // conns[0] stays idle. conns[1] leaves its echo unread.
        conns[1].write_all(&data(32 * 1024, round)).unwrap();
        // conns[2] fills both directions until the server's sends block.
        let (_, stalled) = write_until_stalled(
            &conns[2],
            &Pattern::new(round),
            256 << 20,
            Duration::from_millis(300),
        );
        assert!(
            stalled,
            "the server never stopped taking input: no backpressure"
        );
        // conns[3] half-closes first.
        conns[3].shutdown(Shutdown::Write).unwrap();
        for c in conns {
            util::reset(c);
        }
        let settled = util::poll_until(Duration::from_secs(10), || {
            server.open_fds() <= baseline.len()
        });
        if !settled {
            let now = server.fd_targets();
            let new: Vec<_> = now
                .iter()
                .filter(|(fd, t)| baseline.get(fd) != Some(t))
                .collect();
            panic!(
                "round {round}: 10 s after its connections were reset the server holds {} \
                 descriptors, {} before the round; new ones: {new:?} (a descriptor \
                 leaked on reset)",
                now.len(),
                baseline.len()
            );
        }
    }
    drop(warm);
    let out = server.finish();
    assert_eq!(out.report.total.accepted, 3 * SLOTS as u64 + 1);
}

/// Case 17: Idle connections cost bounded memory: 500 connections that each did one small
/// round trip grow the server's RSS by less than 64 KiB each (the event-driven backends
/// keep 0.1-1.3 KiB, a thread per connection about 21 KiB).
pub fn idle_memory_per_connection_is_bounded(backend: B, child: &ChildSpec) {
    if util::unsupported(&*backend) {
        return;
    }
    const IDLE: usize = 500;
    const LIMIT: u64 = 64 * 1024;
    let server = child.spawn(Service::Echo, None);
    // One connection first, so per-shard state allocated on first use counts as before.
    let warm = served(server.addr);
    let before = server.rss();
    let idle: Vec<TcpStream> = (0..IDLE).map(|_| served(server.addr)).collect();
    let growth = server.rss().saturating_sub(before);
    let each = growth / IDLE as u64;
    assert!(
        each < LIMIT,
        "{IDLE} idle connections grew the server's RSS by {} KiB, {each} B each (limit {} \
         KiB each): idle memory per connection is not bounded",
        growth >> 10,
        LIMIT >> 10
    );
    drop(idle);
    drop(warm);
    server.finish();
}

/// Case 18: Stop while sends are blocked: with connections whose server-side writes are
/// blocked (clients that write and never read), every shard exits within 1 s and no
/// descriptor is left.
pub fn stop_with_sends_blocked_is_prompt_and_leaks_no_fd(backend: B, child: &ChildSpec) {
    if util::unsupported(&*backend) {
        return;
    }
    let server = child.spawn(Service::Echo, None);
    let blocked: Vec<TcpStream> = (0..4u64)
        .map(|i| {
            let c = connect(server.addr);
            let (sent, stalled) = write_until_stalled(
                &c,
                &Pattern::new(60 + i),
                256 << 20,
                Duration::from_millis(300),
            );
            assert!(
                stalled,
                "the server took all {sent} bytes from a client that never read: no \
                 backpressure"
            );
            c
        })
        .collect();
    let out = server.finish();
    assert!(
        out.stop_ms <= 1000,
        "shards took {} ms to stop with sends blocked (limit 1000 ms)",
        out.stop_ms
    );
    assert_no_fd_leak(&out);
    drop(blocked);
}
