//! Descriptor accounting: no descriptor leaks across a server's life, and accepting at
//! `EMFILE` pauses instead of spinning. Both look at process-wide state (the descriptor
//! table, `RLIMIT_NOFILE`), so the tests of this file run one at a time.

mod util;

use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

use backend_api::{Limits, Service};
use backend_uring::{Tuned, Variant};
use util::*;

static PROCESS_WIDE: Mutex<()> = Mutex::new(());

macro_rules! variant_tests {
    ($($module:ident => $variant:expr;)*) => {$(
        mod $module {
            use super::*;

            #[test]
            fn shutdown_leaks_no_descriptor() {
                no_fd_leak($variant);
            }

            #[test]
            fn emfile_pauses_accepting_instead_of_spinning() {
                emfile($variant);
            }
        }
    )*};
}

variant_tests! {
    uring => Variant::OneShot;
    multishot => Variant::Multishot;
    sqpoll => Variant::Sqpoll;
}

fn no_fd_leak(v: Variant) {
    let _serial = PROCESS_WIDE.lock().unwrap_or_else(|p| p.into_inner());
    let before = open_fds();
    let server = serve(Tuned::new(v), Service::Echo, Limits::default());
    let addr = server.local_addr();
    // Churn, idle connections, and one whose output is stuck when the server stops.
    for i in 0..50 {
        drop(echo_verified(connect(addr), i, 1000, 1000));
    }
    let idle: Vec<_> = (0..10)
        .map(|i| echo_verified(connect(addr), 100 + i, 10, 10))
        .collect();
    let stuck = connect(addr);
    let (written, h) = flood(stuck.try_clone().unwrap(), usize::MAX);
    wait_counter(&written, 1 << 20);
    let report = server.stop().unwrap();
    h.join().unwrap();
    drop((idle, stuck));
    assert_eq!(report.total.accepted, 61);
    assert_eq!(report.total.closed, 61);
    assert_eq!(open_fds(), before, "descriptors leaked");
}

fn rlimit_nofile() -> libc::rlimit {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a live rlimit the kernel writes; nothing else borrows it.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
    r
}

fn set_soft_nofile(soft: u64) {
    let mut r = rlimit_nofile();
    r.rlim_cur = soft;
    // SAFETY: `r` is a live, initialised rlimit the kernel only reads.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) }, 0);
}

fn max_open_fd() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// With every descriptor number but two in use, `clients` connections arrive: two are
/// accepted, then accept fails with EMFILE. The shard must pause (a Timeout SQE per
/// pause, a couple of loop turns each) rather than spin, and serve everyone once
/// descriptors free up.
fn emfile(v: Variant) {
    let _serial = PROCESS_WIDE.lock().unwrap_or_else(|p| p.into_inner());
    let original = rlimit_nofile();
    // Lower the limit before the server arms its accept (the kernel reads it then).
    set_soft_nofile(max_open_fd() + 1 + 64);
    let (backend, diag) = tuned(v, |_| {});
    let server = serve(backend, Service::Echo, Limits::default());
    let addr = server.local_addr();
    // `serve` returns once the shard is pinned, before it has created its ring (a
    // descriptor): one round trip proves the ring exists and accepting is armed, so the
    // fillers below cannot race with the ring for descriptor numbers.
    let warm = echo_verified(connect(addr), 300, 10, 10);

    let clients = 6;
    let socks: Vec<OwnedFd> = (0..clients)
        .map(|_| {
            let fd =
                // SAFETY: socket takes no pointers.
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
            assert!(fd >= 0);
            // SAFETY: socket just returned this descriptor and nothing else owns it.
            unsafe { OwnedFd::from_raw_fd(fd) }
        })
        .collect();
    // Take every free descriptor number, then give exactly two back.
    let mut fillers = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        fillers.push(f);
    }
    fillers.truncate(fillers.len() - 2);
    let std::net::SocketAddr::V4(a4) = addr else {
        panic!("loopback is IPv4")
    };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    for s in &socks {
        // SAFETY: `sin` is a live sockaddr_in, passed with its size; the kernel copies it.
        let r = unsafe {
            libc::connect(
                s.as_raw_fd(),
                (&sin as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "connect: {}", std::io::Error::last_os_error());
    }

    let first = wait_for(&diag, "three accept pauses", |d| d.accept_pauses >= 3);
    let later = wait_for(&diag, "ten more accept pauses", |d| {
        d.accept_pauses >= first.accept_pauses + 10
    });
    let turns = later.loop_iterations - first.loop_iterations;
    let pauses = later.accept_pauses - first.accept_pauses;
    assert!(
        turns <= 3 * pauses + 3,
        "{turns} loop turns for {pauses} accept pauses: the shard spins on EMFILE"
    );
    assert_eq!(later.accepted, 1 + 2, "only two descriptors were free");

    // Descriptors free up: everyone is served after the current pause.
    drop(fillers);
    set_soft_nofile(original.rlim_cur);
    for (i, fd) in socks.into_iter().enumerate() {
        let s = TcpStream::from(fd);
        s.set_read_timeout(Some(FAILSAFE)).unwrap();
        drop(echo_verified(s, 200 + i as u64, 100, 100));
    }
    drop(warm);
    let report = server.stop().unwrap();
    let d = diag.snapshot();
    assert_eq!(report.total.accepted, 1 + clients as u64);
    assert_eq!(report.total.closed, 1 + clients as u64);
    assert!(
        d.accept_rearms >= pauses,
        "accept re-armed after each pause: {d:?}"
    );
}
