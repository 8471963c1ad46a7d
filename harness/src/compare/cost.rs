//! Server-side cost over a measured window: CPU time and context switches from /proc, and
//! syscalls from the `raw_syscalls:sys_enter` tracepoint via perf_event_open.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Process-wide counters read from /proc at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSnapshot {
    /// User CPU seconds (all threads, live and exited).
    pub user_s: f64,
    /// System CPU seconds.
    pub sys_s: f64,
    /// Voluntary context switches summed over live threads.
    pub ctx_voluntary: u64,
    /// Involuntary context switches summed over live threads.
    pub ctx_involuntary: u64,
    /// Resident set size, bytes.
    pub rss: u64,
    /// Peak resident set size, bytes.
    pub rss_peak: u64,
}

/// Reads a [`ProcSnapshot`] of process `pid`.
pub fn snapshot(pid: u32) -> io::Result<ProcSnapshot> {
    snapshot_from(&format!("/proc/{pid}"))
}

/// Reads a snapshot from a /proc/PID-shaped directory (tests pass a fake one).
pub fn snapshot_from(dir: &str) -> io::Result<ProcSnapshot> {
    let stat = fs::read_to_string(format!("{dir}/stat"))?;
    let (utime, stime) = parse_stat_times(&stat)
        .ok_or_else(|| io::Error::other(format!("unexpected format of {dir}/stat")))?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = fs::read_to_string(format!("{dir}/status"))?;
    let mut snap = ProcSnapshot {
        user_s: utime as f64 / hz,
        sys_s: stime as f64 / hz,
        rss: status_kib(&status, "VmRSS:") * 1024,
        rss_peak: status_kib(&status, "VmHWM:") * 1024,
        ..Default::default()
    };
    // Context switches are per thread in /proc: sum over tasks.
    for task in fs::read_dir(format!("{dir}/task"))?.flatten() {
        if let Ok(st) = fs::read_to_string(task.path().join("status")) {
            snap.ctx_voluntary += status_kib(&st, "voluntary_ctxt_switches:");
            snap.ctx_involuntary += status_kib(&st, "nonvoluntary_ctxt_switches:");
        }
    }
    Ok(snap)
}

/// Field `i` of a /proc/PID/stat line, counting from 0 at the field after the command name
/// (so `state` is 0, `utime` 11, `stime` 12, `processor` 36).
pub fn stat_field(stat: &str, i: usize) -> Option<&str> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    stat.get(stat.rfind(')')? + 2..)?.split_whitespace().nth(i)
}

/// utime and stime (clock ticks) from a /proc/PID/stat line.
pub fn parse_stat_times(stat: &str) -> Option<(u64, u64)> {
    Some((
        stat_field(stat, 11)?.parse().ok()?,
        stat_field(stat, 12)?.parse().ok()?,
    ))
}

fn status_kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// System-wide kernel memory at one instant: what idle connections cost the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KernelMem {
    /// TCP socket buffer memory (/proc/net/sockstat "TCP: … mem N", pages), bytes. Idle
    /// sockets hold no buffers, so this stays near 0 for them.
    pub sock: Option<u64>,
    /// Slab memory (/proc/meminfo "Slab:"), bytes: where a socket's own structures live
    /// (tcp_sock, the file, the socket inode and dentry, the epoll item).
    pub slab: Option<u64>,
}

/// Reads [`KernelMem`] now.
pub fn kernel_mem() -> KernelMem {
    KernelMem {
        sock: fs::read_to_string("/proc/net/sockstat")
            .ok()
            .and_then(|t| parse_sockstat_tcp_pages(&t))
            // SAFETY: sysconf has no memory-safety preconditions.
            .map(|pages| pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64),
        slab: fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| parse_meminfo_kib(&t, "Slab:"))
            .map(|kib| kib * 1024),
    }
}

/// The "mem" pages of the "TCP:" line of /proc/net/sockstat.
fn parse_sockstat_tcp_pages(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut it = line.split_whitespace();
    while let Some(tok) = it.next() {
        if tok == "mem" {
            return it.next()?.parse().ok();
        }
    }
    None
}

/// A "Key:   N kB" value of /proc/meminfo, in KiB.
fn parse_meminfo_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

const TRACEPOINT_ID_PATHS: [&str; 2] = [
    "/sys/kernel/tracing/events/raw_syscalls/sys_enter/id",
    "/sys/kernel/debug/tracing/events/raw_syscalls/sys_enter/id",
];

/// Counts syscalls entered by every thread of a process, like
/// `perf stat -e raw_syscalls:sys_enter -p PID`: one counter per thread (threads that exist
/// when it is opened) with `inherit`, so threads they create later are counted too.
pub struct SyscallCounter {
    fds: Vec<OwnedFd>,
}

impl SyscallCounter {
    /// Opens disabled counters on every thread of `pid`; errors say why counting is not
    /// possible (tracefs missing, perf_event_paranoid, no permission).
    pub fn open(pid: u32) -> Result<SyscallCounter, String> {
        let id = TRACEPOINT_ID_PATHS
            .iter()
            .find_map(|p| fs::read_to_string(p).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                "tracepoint raw_syscalls:sys_enter not found (tracefs not mounted: mount -t tracefs nodev /sys/kernel/tracing)".to_string()
            })?;
        let tasks = fs::read_dir(format!("/proc/{pid}/task"))
            .map_err(|e| format!("listing threads of {pid}: {e}"))?;
        let mut fds = Vec::new();
        for task in tasks.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let mut attr = perf_event_open_sys::bindings::perf_event_attr {
                type_: perf_event_open_sys::bindings::PERF_TYPE_TRACEPOINT,
                size: std::mem::size_of::<perf_event_open_sys::bindings::perf_event_attr>() as u32,
                config: id,
                ..Default::default()
            };
            attr.set_disabled(1);
            attr.set_inherit(1);
            // SAFETY: attr is a valid, fully initialised perf_event_attr that outlives the call.
            let fd = unsafe {
                perf_event_open_sys::perf_event_open(
                    &mut attr,
                    tid,
                    -1,
                    -1,
                    perf_event_open_sys::bindings::PERF_FLAG_FD_CLOEXEC as libc::c_ulong,
                )
            };
            if fd < 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::ESRCH) {
                    continue; // the thread exited meanwhile
                }
                let paranoid =
                    fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").unwrap_or_default();
                return Err(format!(
                    "perf_event_open on thread {tid} failed: {err} (kernel.perf_event_paranoid={}; run as root or: sysctl -w kernel.perf_event_paranoid=-1)",
                    paranoid.trim()
                ));
            }
            // SAFETY: perf_event_open returned a new descriptor that nothing else owns.
            fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        if fds.is_empty() {
            return Err(format!("process {pid} has no threads to count"));
        }
        Ok(SyscallCounter { fds })
    }

    /// Zeroes and starts every counter.
    pub fn start(&self) -> io::Result<()> {
        for fd in &self.fds {
            // SAFETY: the perf event fd is open (owned by self.fds); this ioctl takes an integer argument.
            unsafe {
                backend_api::syscall!(ioctl(
                    fd.as_raw_fd(),
                    perf_event_open_sys::bindings::RESET as _,
                    0
                ))
            }?;
            // SAFETY: the perf event fd is open (owned by self.fds); this ioctl takes an integer argument.
            unsafe {
                backend_api::syscall!(ioctl(
                    fd.as_raw_fd(),
                    perf_event_open_sys::bindings::ENABLE as _,
                    0
                ))
            }?;
        }
        Ok(())
    }

    /// Stops every counter and returns the sum.
    pub fn stop(&self) -> io::Result<u64> {
        let mut total = 0u64;
        for fd in &self.fds {
            // SAFETY: the perf event fd is open (owned by self.fds); this ioctl takes an integer argument.
            unsafe {
                backend_api::syscall!(ioctl(
                    fd.as_raw_fd(),
                    perf_event_open_sys::bindings::DISABLE as _,
                    0
                ))
            }?;
            let mut v = 0u64;
            // SAFETY: reads 8 bytes into a live u64; the default read_format is one u64.
            let n = unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
            if n != 8 {
                return Err(io::Error::last_os_error());
            }
            total += v;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_survive_odd_command_names() {
        let line =
            "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_stat_times(line), Some((250, 75)));
        assert_eq!(parse_stat_times("garbage"), None);
    }

    #[test]
    fn kernel_memory_lines_parse() {
        let sockstat =
            "sockets: used 130\nTCP: inuse 5 orphan 0 tw 2 alloc 7 mem 3\nUDP: inuse 1 mem 0\n";
        assert_eq!(parse_sockstat_tcp_pages(sockstat), Some(3));
        assert_eq!(parse_sockstat_tcp_pages("UDP: inuse 1 mem 9\n"), None);
        let meminfo = "MemTotal:       24576000 kB\nSlab:             123456 kB\nSReclaimable:      23456 kB\n";
        assert_eq!(parse_meminfo_kib(meminfo, "Slab:"), Some(123456));
        assert_eq!(parse_meminfo_kib(meminfo, "Shmem:"), None);
        // This machine has both files.
        let now = kernel_mem();
        assert!(now.sock.is_some() && now.slab.unwrap() > 0, "{now:?}");
    }

    #[test]
    fn fake_proc_snapshot_sums_threads() {
        let dir = std::env::temp_dir().join(format!("ringside-fakeproc-{}", std::process::id()));
        for tid in ["1", "2"] {
            fs::create_dir_all(dir.join("task").join(tid)).unwrap();
            fs::write(
                dir.join("task").join(tid).join("status"),
                "voluntary_ctxt_switches:\t10\nnonvoluntary_ctxt_switches:\t3\n",
            )
            .unwrap();
        }
        fs::write(dir.join("stat"), "1 (x) S 0 0 0 0 0 0 0 0 0 0 200 100 0 0").unwrap();
        fs::write(dir.join("status"), "VmHWM:\t 2048 kB\nVmRSS:\t 1024 kB\n").unwrap();
        let s = snapshot_from(dir.to_str().unwrap()).unwrap();
        assert_eq!(
            (s.ctx_voluntary, s.ctx_involuntary, s.rss, s.rss_peak),
            (20, 6, 1 << 20, 2 << 20)
        );
        assert!(s.user_s > 0.0 && s.sys_s > 0.0);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn counts_syscalls_of_a_child_or_says_why_not() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "read x; for i in 1 2 3 4 5 6 7 8; do /bin/true; done"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        match SyscallCounter::open(child.id()) {
            Ok(counter) => {
                counter.start().unwrap();
                drop(child.stdin.take());
                child.wait().unwrap();
                let n = counter.stop().unwrap();
                // Eight fork+exec+wait rounds cannot take fewer than a few dozen syscalls.
                assert!(n > 40, "counted only {n} syscalls");
            }
            Err(why) => {
                eprintln!("syscall counting unavailable here: {why}");
                assert!(why.contains("perf") || why.contains("tracepoint"), "{why}");
                let _ = child.kill();
            }
        }
    }
}
