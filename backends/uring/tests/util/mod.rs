//! Helpers shared by the integration tests: servers, clients, verified transfers.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use backend_api::runner::{start, usable_cores, RunningServer};
use backend_api::{Backend, Limits, ServerConfig, Service};
use backend_uring::{Diagnostics, DiagnosticsSnapshot, Features, Tuned, Tuning};

/// A failsafe so a broken backend fails a test instead of hanging it; never an assertion.
pub const FAILSAFE: Duration = Duration::from_secs(60);

/// The first usable core: every test server runs one shard there.
pub fn core() -> usize {
    usable_cores()[0]
}

/// Starts `backend` serving `service` with `limits` on one shard.
pub fn serve(backend: impl Backend + 'static, service: Service, limits: Limits) -> RunningServer {
    let mut config = ServerConfig::new(service, vec![core()]);
    config.limits = limits;
    start(Arc::new(backend), config).expect("server starts")
}

/// A tuned variant with live diagnostics.
pub fn tuned(
    variant: impl Into<Features>,
    tune: impl FnOnce(&mut Tuning),
) -> (Tuned, Arc<Diagnostics>) {
    let variant = variant.into();
    let mut tuning = Tuning::default();
    tune(&mut tuning);
    let diag = Arc::new(Diagnostics::new());
    (
        Tuned::new(variant).tuning(tuning).diagnostics(diag.clone()),
        diag,
    )
}

/// A client connection with the failsafe timeouts.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(FAILSAFE)).unwrap();
    s.set_write_timeout(Some(FAILSAFE)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// `len` deterministic pseudo-random bytes, different for every `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Sets an int socket option on a client socket.
pub fn set_int_opt(s: &TcpStream, level: i32, name: i32, value: i32) {
    // SAFETY: the option value points at `value`, a live i32, with its size; the kernel copies it.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "setsockopt {name}: {}", io::Error::last_os_error());
}

/// Makes `drop(s)` send a RST instead of a FIN.
pub fn set_linger_zero(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the option value points at `linger`, a live libc::linger, with its size; the kernel copies it.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
}

/// Writes `total` pattern bytes from a thread (in `chunk`s) while this thread reads the echo
/// and checks every byte in order. Returns the stream.
pub fn echo_verified(s: TcpStream, seed: u64, total: usize, chunk: usize) -> TcpStream {
    let data = Arc::new(pattern(seed, total));
    let mut w = s.try_clone().unwrap();
    let wdata = data.clone();
    let writer = thread::spawn(move || {
        for c in wdata.chunks(chunk) {
            w.write_all(c).expect("client write");
        }
    });
    let mut r = s;
    let mut got = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while got < total {
        let n = match r.read(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            n => n.expect("client read"),
        };
        assert!(n > 0, "EOF after {got} of {total} echoed bytes");
        assert!(got + n <= total, "more bytes echoed than sent");
        assert!(
            buf[..n] == data[got..got + n],
            "echoed bytes differ from sent ones at offset {got}"
        );
        got += n;
    }
    writer.join().expect("writer");
    r
}

#[allow(unused_imports)] // not every test binary that includes this module reads to close
pub use backend_conformance::util::read_to_close;

/// Half-closes the write side.
pub fn shutdown_write(s: &TcpStream) {
    s.shutdown(Shutdown::Write).expect("shutdown(SHUT_WR)");
}

/// Waits until `cond(snapshot)` holds; panics after the failsafe.
pub fn wait_for(
    diag: &Diagnostics,
    what: &str,
    cond: impl Fn(&DiagnosticsSnapshot) -> bool,
) -> DiagnosticsSnapshot {
    let deadline = Instant::now() + FAILSAFE;
    loop {
        let s = diag.snapshot();
        if cond(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {s:?}"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// Writes from a thread until the peer stops reading and the write fails (or `limit`
/// bytes), counting progress in the returned counter.
pub fn flood(mut s: TcpStream, limit: usize) -> (Arc<AtomicUsize>, thread::JoinHandle<()>) {
    let written = Arc::new(AtomicUsize::new(0));
    let w = written.clone();
    let h = thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        while w.load(Ordering::Relaxed) < limit {
            match s.write(&chunk) {
                Ok(n) => {
                    w.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    });
    (written, h)
}

/// Waits until `counter` reaches `at_least`; panics after the failsafe.
pub fn wait_counter(counter: &AtomicUsize, at_least: usize) {
    let deadline = Instant::now() + FAILSAFE;
    while counter.load(Ordering::Relaxed) < at_least {
        assert!(Instant::now() < deadline, "timed out waiting for progress");
        thread::sleep(Duration::from_millis(1));
    }
}

/// Open descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}
