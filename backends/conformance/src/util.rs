//! Client-side helpers the cases share: deterministic data, timed-out sockets, servers
//! that stop when dropped.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_api::runner::{self, RunningServer, ServerConfig};
use backend_api::{Backend, RunReport, Service};

/// How long any single client read or write may block before the case fails: long
/// enough for a loaded CI machine, short enough that a backend that lost data fails
/// instead of hanging the suite.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// How long stopping a server may take before the case fails instead of hanging (the
/// stop cases hold backends to far less; this only bounds a hang).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Environment variable naming backends (comma separated, or `all`) whose probe must
/// succeed: for them an unsupported environment fails the case instead of skipping it.
pub const REQUIRE_ENV: &str = "RINGSIDE_REQUIRE_BACKENDS";

/// Returns true, after saying why, when the backend's probe fails: the case then passes
/// without running. The line goes straight to the process's stderr, past the test
/// harness's capture, so every skip shows in the test log (a `SKIPPED:` line per case).
/// A backend named in [`REQUIRE_ENV`] fails instead.
pub fn unsupported(backend: &dyn Backend) -> bool {
    match backend.probe() {
        Ok(()) => false,
        Err(u) => {
            let name = backend.name();
            let required = is_required(name, std::env::var(REQUIRE_ENV).ok().as_deref());
            assert!(
                !required,
                "backend {name} is unsupported here, but {REQUIRE_ENV} requires it: {u}"
            );
            // Not eprintln!: libtest captures that and shows it only for failing tests.
            let _ = writeln!(
                io::stderr(),
                "SKIPPED: backend {name} is unsupported here, case not run: {u}"
            );
            true
        }
    }
}

/// Whether `backend` is named by a [`REQUIRE_ENV`] value.
fn is_required(backend: &str, require: Option<&str>) -> bool {
    require.is_some_and(|v| {
        v.split(',')
            .map(str::trim)
            .any(|b| b == backend || b == "all")
    })
}

/// A server started in-process that is stopped (and checked) when the case ends.
pub struct Server {
    inner: Option<RunningServer>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Server {
    /// Starts `backend` with `service` on `shards` shards.
    pub fn start(backend: Arc<dyn Backend>, service: Service, shards: usize) -> Server {
        Self::start_with(backend, ServerConfig::new(service, cores(shards)))
    }

    /// Starts with an explicit config.
    pub fn start_with(backend: Arc<dyn Backend>, config: ServerConfig) -> Server {
        raise_nofile();
        let name = backend.name();
        let inner =
            runner::start(backend, config).unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Server {
            addr: inner.local_addr(),
            inner: Some(inner),
        }
    }

    /// Stops the server; panics if any shard failed or panicked, or if the shards have not
    /// all exited after [`STOP_TIMEOUT`].
    pub fn stop(mut self) -> RunReport {
        let inner = self.inner.take().expect("server stopped twice");
        stop_within(inner, STOP_TIMEOUT)
            .unwrap_or_else(|| panic!("server did not stop within {STOP_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("server did not stop cleanly: {e}"))
    }

    /// A connected client with timeouts and TCP_NODELAY.
    pub fn connect(&self) -> TcpStream {
        connect(self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.inner.take() {
            // Bounded: a case that failed must not hang on a server that cannot stop.
            let _ = stop_within(s, STOP_TIMEOUT);
        }
    }
}

/// Stops `server` on a helper thread; `None` if it has not stopped after `limit` (the
/// helper thread and the server are then left behind: the case is failing anyway).
fn stop_within(
    server: RunningServer,
    limit: Duration,
) -> Option<Result<RunReport, backend_api::RunnerError>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(server.stop());
    });
    rx.recv_timeout(limit).ok()
}

/// `n` cores to run shards on: distinct usable cores where there are enough, else the
/// first core repeated (oversubscribed but still `n` shards).
pub fn cores(n: usize) -> Vec<usize> {
    let usable = runner::usable_cores();
    if usable.len() >= n {
        usable[..n].to_vec()
    } else {
        vec![usable[0]; n]
    }
}

/// Connects with timeouts set (the connect itself too: a full backlog makes a connect
/// retry its SYN for minutes).
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    with_timeouts(s)
}

/// Like [`connect`], with the client's receive buffer capped at `bytes` (which also turns
/// off its autotuning), so that a client that reads slowly makes the server's writes block
/// early.
///
/// The cap is set before connecting, as it must be: shrinking SO_RCVBUF on an established
/// loopback connection leaves a window already advertised for 64 KiB segments that the
/// buffer can no longer hold; the kernel then drops the segments, both sides back off
/// exponentially (RTO 26 s seen) and nothing moves for the length of a test.
pub fn connect_small_rcvbuf(addr: SocketAddr, bytes: usize) -> TcpStream {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(bytes)
        .expect("setsockopt(SO_RCVBUF)");
    sock.connect_timeout(&addr.into(), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    with_timeouts(sock.into())
}

fn with_timeouts(s: TcpStream) -> TcpStream {
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Closes `s` with a reset (`SO_LINGER` 0) instead of a FIN.
pub fn reset(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .expect("setsockopt(SO_LINGER)");
    drop(s);
}

/// Waits until `f` holds, checking every few milliseconds; panics naming `what` after
/// `limit`. A bound on a wait, never a pass condition.
pub fn wait_until(what: &str, limit: Duration, f: impl FnMut() -> bool) {
    assert!(
        poll_until(limit, f),
        "timed out after {limit:?} waiting until {what}"
    );
}

/// Waits until `f` holds, checking every few milliseconds, for at most `limit`; returns
/// whether it held.
pub fn poll_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Descriptors this process has open.
pub fn open_fds() -> usize {
    // read_dir holds one descriptor of its own while listing.
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count().saturating_sub(1))
        .unwrap_or(0)
}

/// The inode of the socket that holds the server side of the loopback connection from
/// `client` (the client's local address) to `server`, from `/proc/net/tcp`. `Some(0)`
/// once the server closed it while the kernel still finishes the connection (an orphan),
/// `None` when the kernel has no such connection (any more).
pub fn server_side_inode(server: SocketAddr, client: SocketAddr) -> Option<u64> {
    let (local, remote) = (proc_net_addr(server), proc_net_addr(client));
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 9 && f[1] == local && f[2] == remote)
            .then(|| f[9].parse().ok())
            .flatten()
    })
}

/// An IPv4 socket address as `/proc/net/tcp` writes it.
fn proc_net_addr(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => panic!("the suite uses IPv4 loopback"),
    }
}

/// Deterministic pseudo-random bytes (xorshift), different for every seed, so a reordered,
/// duplicated or dropped chunk never compares equal.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A small deterministic generator for chunk sizes.
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    /// A number in `1..=max`.
    pub fn upto(&mut self, max: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        1 + (self.0 % max as u64) as usize
    }
}

/// Reads until EOF, failing on timeout. Returns everything read.
pub fn read_to_eof(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    s.read_to_end(&mut v)?;
    Ok(v)
}

/// Reads exactly `n` bytes or fails saying how many arrived.
pub fn read_exact_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match s.read(&mut v[got..]) {
            Ok(0) => panic!("connection closed after {got} of {n} expected bytes"),
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read failed after {got} of {n} expected bytes: {e}"),
        }
    }
    v
}

/// Sends `payload` in random-sized chunks from another thread while this thread reads
/// the echo; then half-closes and expects EOF right after the echo. Panics on any
/// difference, naming the first differing offset.
pub fn echo_roundtrip(stream: TcpStream, payload: Arc<Vec<u8>>, seed: u64) {
    let mut writer = stream.try_clone().unwrap();
    let to_send = Arc::clone(&payload);
    let w = std::thread::spawn(move || {
        let mut rng = Rng::new(seed);
        let mut off = 0;
        while off < to_send.len() {
            let n = rng.upto(64 * 1024).min(to_send.len() - off);
            writer.write_all(&to_send[off..off + n])?;
            off += n;
        }
        writer.shutdown(Shutdown::Write)
    });
    let mut reader = stream;
    let got = read_to_eof(&mut reader)
        .unwrap_or_else(|e| panic!("reading the echo of {} bytes: {e}", payload.len()));
    w.join()
        .unwrap()
        .unwrap_or_else(|e| panic!("writing {} bytes: {e}", payload.len()));
    assert_same(&got, &payload);
}

/// Asserts two byte strings are equal, reporting length and first difference, not dumps.
pub fn assert_same(got: &[u8], want: &[u8]) {
    if got != want {
        let first = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "echo differs: got {} bytes, want {}; first difference at offset {first}",
            got.len(),
            want.len()
        );
    }
}

/// Raises RLIMIT_NOFILE as far as allowed (client and server share this process).
pub fn raise_nofile() {
    let _ = backend_api::rlimit::raise_nofile();
}

/// `n` shard cores taken round-robin from the usable ones (repeats oversubscribe, which
/// the runner allows for tests on small machines).
pub fn cores_round_robin(n: usize) -> Vec<usize> {
    let usable = runner::usable_cores();
    (0..n).map(|i| usable[i % usable.len()]).collect()
}

/// Sends `msg` and reads back exactly as many bytes; asserts they are the same.
pub fn echo(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).unwrap();
    let mut back = vec![0; msg.len()];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
}

/// A connection that already did one echo round trip, so the server holds it.
pub fn served(addr: SocketAddr) -> TcpStream {
    let mut s = connect(addr);
    echo(&mut s, b"hello");
    s
}

/// Reads until the server closes (EOF or a reset); returns what arrived. A read
/// interrupted by a signal (EINTR) is retried, as any client must.
pub fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return all,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Names of this process's threads.
pub fn thread_names() -> Vec<(String, String)> {
    let mut v = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = entry.unwrap().path();
        // A thread may exit between listing and reading.
        if let Ok(comm) = std::fs::read_to_string(dir.join("comm")) {
            let tid = dir.file_name().unwrap().to_string_lossy().into_owned();
            v.push((tid, comm.trim_end().to_string()));
        }
    }
    v
}

/// The `Cpus_allowed_list` of thread `tid` of this process, expanded.
pub fn allowed_cpus(tid: &str) -> Vec<usize> {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim();
    let mut cpus = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_backends_are_named_or_all() {
        assert!(!is_required("glommio", None));
        assert!(!is_required("glommio", Some("")));
        assert!(!is_required("glommio", Some("uring,epoll-et")));
        assert!(is_required("glommio", Some("uring, glommio")));
        assert!(is_required("glommio", Some("all")));
    }
}
