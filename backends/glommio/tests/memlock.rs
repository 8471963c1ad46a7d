//! glommio as a non-root user with the default 8 MiB `RLIMIT_MEMLOCK`, and the message
//! below glommio's floor.
//!
//! Each case re-runs this test binary as a child process with the limit lowered (and, when
//! the tests run as root, as user `nobody`), since neither can be undone inside the test
//! process. The child runs the same test function, which sees `CHILD_ENV` and does the
//! actual work.

mod util;

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;

use backend_api::runner::{self, RunnerError};
use backend_api::{ServerConfig, Service};
use backend_glommio::probe::memlock_need;
use backend_glommio::Glommio;
use util::*;

const CHILD_ENV: &str = "RINGSIDE_GLOMMIO_MEMLOCK_CHILD";
const NOBODY: libc::uid_t = 65534;

/// Runs `test` of this binary in a child with `RLIMIT_MEMLOCK` = `limit` bytes, as
/// `nobody` when we are root. Returns the child's combined output.
fn run_child(test: &str, mode: &str, limit: u64) -> String {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode);
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // system calls (setrlimit, setgroups, setgid, setuid) on plain stack data.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: limit as libc::rlim_t,
                rlim_max: limit as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if root
                && (libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(NOBODY) != 0
                    || libc::setuid(NOBODY) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("spawn the child test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "child {test} ({mode}) failed:\n{text}"
    );
    assert!(
        text.contains("1 passed"),
        "child {test} ran nothing:\n{text}"
    );
    if !root {
        eprintln!("not root: {test} ran as this user, with only the memlock limit lowered");
    }
    text
}

/// Pinned memory of this process in KiB (`VmPin`: registered io_uring buffers).
fn vm_pin_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmPin:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The child: a two-shard HTTP server under the lowered limit.
fn serve_under_8mib() {
    // SAFETY: getuid has no preconditions.
    eprintln!("child uid {}", unsafe { libc::getuid() });
    let shards = 2;
    let config = ServerConfig::new(Service::Http, vec![core(); shards]);
    let server = runner::start(Arc::new(Glommio), config).expect("glommio starts under 8 MiB");
    let mut conns: Vec<_> = (0..8).map(|_| connect(server.local_addr())).collect();
    for c in &mut conns {
        c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut head = [0; 15];
        c.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 200 OK");
    }
    let pinned = vm_pin_kib();
    eprintln!("VmPin with {shards} shards: {pinned} KiB");
    assert!(
        pinned * 1024 <= memlock_need(shards, false),
        "pinned {pinned} KiB, more than the {} bytes the probe budgets",
        memlock_need(shards, false)
    );
    drop(conns);
    server.stop().unwrap();
}

/// The child: below glommio's floor the runner refuses with the fix.
fn refuse_under_256kib() {
    let config = ServerConfig::new(Service::Echo, vec![core()]);
    match runner::start(Arc::new(Glommio), config) {
        Err(RunnerError::Unsupported { reason, .. }) => {
            eprintln!("refused: {reason}");
            assert!(reason.contains("Fix: ulimit -l 512"), "{reason}");
            assert!(reason.contains("RLIMIT_MEMLOCK is 256 KiB"), "{reason}");
        }
        other => panic!("expected an Unsupported memlock error, got {other:?}"),
    }
}

/// One test, so that the two children never run at once: the kernel counts locked memory
/// per user, and both may run as `nobody`.
#[test]
fn non_root_memlock_limits() {
    const TEST: &str = "non_root_memlock_limits";
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("low") => return refuse_under_256kib(),
        Ok("default") => return serve_under_8mib(),
        _ => {}
    }
    let out = run_child(TEST, "low", 256 * 1024);
    eprintln!("{out}");
    let out = run_child(TEST, "default", 8 << 20);
    eprintln!("{out}");
}
