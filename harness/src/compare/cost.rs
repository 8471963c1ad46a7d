//! The cost ledger: what the server (and the load generator) spent over exactly the
//! measured window. On-CPU nanoseconds of the whole server process tree from perf's
//! task-clock (schedstat as the cross-check and fallback), the tick-sampled user/system
//! split and context switches from /proc, syscalls from the `raw_syscalls:sys_enter`
//! tracepoint, and how each chosen core spent the window from /proc/stat.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub use crate::results::CoreUsage;

/// Process-wide counters read from /proc at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
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

/// Reads a [`ProcSnapshot`] of process `pid` and its descendants, summed (one process for
/// a built-in backend; an external server's master and workers).
pub fn snapshot(pid: u32) -> io::Result<ProcSnapshot> {
    let mut total = snapshot_from(&format!("/proc/{pid}"))?;
    for child in tree_processes(pid)?.into_iter().filter(|&p| p != pid) {
        // A descendant that exited in between has nothing left to add.
        if let Ok(s) = snapshot_from(&format!("/proc/{child}")) {
            total.user_s += s.user_s;
            total.sys_s += s.sys_s;
            total.ctx_voluntary += s.ctx_voluntary;
            total.ctx_involuntary += s.ctx_involuntary;
            total.rss += s.rss;
            total.rss_peak += s.rss_peak;
        }
    }
    Ok(total)
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
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
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

/// Counts syscalls entered by every thread of a process tree, like
/// `perf stat -e raw_syscalls:sys_enter -p PID`: one counter per task that exists when it
/// is opened, with `inherit`, so threads and children created later are counted too.
pub struct SyscallCounter {
    counters: PerfCounters,
}

impl SyscallCounter {
    /// Opens disabled counters on every task of `pid`'s tree; errors say why counting is
    /// not possible (tracefs missing, perf_event_paranoid, no permission).
    pub fn open(pid: u32) -> Result<SyscallCounter, String> {
        let id = TRACEPOINT_ID_PATHS
            .iter()
            .find_map(|p| fs::read_to_string(p).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                "tracepoint raw_syscalls:sys_enter not found (tracefs not mounted: mount -t tracefs nodev /sys/kernel/tracing)".to_string()
            })?;
        let counters =
            PerfCounters::open(pid, perf_event_open_sys::bindings::PERF_TYPE_TRACEPOINT, id)?;
        Ok(SyscallCounter { counters })
    }

    /// Zeroes and starts every counter.
    pub fn start(&self) -> io::Result<()> {
        self.counters.start()
    }

    /// Stops every counter and returns the sum.
    pub fn stop(&self) -> io::Result<u64> {
        self.counters.stop()
    }

    /// The sum since [`SyscallCounter::start`], the counters left running.
    pub fn read(&self) -> io::Result<u64> {
        self.counters.read()
    }
}

/// On-CPU nanoseconds of a process tree, from perf's software `task-clock` counted on
/// every task (thread, child process, kernel io-thread such as iou-sqp and iou-wrk) that
/// exists when it is opened, with `inherit`. What a task that exits inside the window ran
/// is kept: an opened task's counter stays readable after it exits, and an inherited
/// task's count is folded into its parent's counter when it exits.
///
/// It reads below the scheduler's runtime (cgroup, schedstat, ticks) by a fixed amount
/// per context switch: measured here at 5-14 µs per switch (2026-12-01: 96.5 ms short over
/// 7,490 switches for epoll-et at 10k req/s, 1.8 ms over 246 at saturation). The scheduler
/// starts charging a task when it picks it, before the switch itself; perf starts its
/// clock in the sched-in hook after the switch, and stops it before. So a server that
/// sleeps between requests (open loop) reads 20-30% low, a saturated one about 1%. The
/// ledger uses the server's cgroup and keeps this only as a cross-check, or as a lower
/// bound where no cgroup can be made.
pub struct CpuClock {
    counters: PerfCounters,
}

impl CpuClock {
    /// Opens disabled task-clock counters on `pid`'s tree; errors say why not.
    pub fn open(pid: u32) -> Result<CpuClock, String> {
        let counters = PerfCounters::open(
            pid,
            perf_event_open_sys::bindings::PERF_TYPE_SOFTWARE,
            perf_event_open_sys::bindings::PERF_COUNT_SW_TASK_CLOCK as u64,
        )?;
        Ok(CpuClock { counters })
    }

    /// Zeroes and starts the clock.
    pub fn start(&self) -> io::Result<()> {
        self.counters.start()
    }

    /// Stops the clock and returns the nanoseconds run since [`CpuClock::start`].
    pub fn stop(&self) -> io::Result<u64> {
        self.counters.stop()
    }

    /// The nanoseconds run since [`CpuClock::start`], the clock left running.
    pub fn read(&self) -> io::Result<u64> {
        self.counters.read()
    }
}

/// One perf counter per task of a process tree, opened disabled with `inherit`.
struct PerfCounters {
    fds: Vec<OwnedFd>,
}

impl PerfCounters {
    fn open(pid: u32, type_: u32, config: u64) -> Result<PerfCounters, String> {
        let tasks = tree_tasks(pid).map_err(|e| format!("listing threads of {pid}: {e}"))?;
        let mut fds = Vec::new();
        for tid in tasks {
            let mut attr = perf_event_open_sys::bindings::perf_event_attr {
                type_,
                size: std::mem::size_of::<perf_event_open_sys::bindings::perf_event_attr>() as u32,
                config,
                ..Default::default()
            };
            attr.set_disabled(1);
            attr.set_inherit(1);
            // SAFETY: attr is a valid, fully initialised perf_event_attr that outlives the call.
            let fd = unsafe {
                perf_event_open_sys::perf_event_open(
                    &mut attr,
                    tid as i32,
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
        Ok(PerfCounters { fds })
    }

    fn start(&self) -> io::Result<()> {
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

    fn stop(&self) -> io::Result<u64> {
        for fd in &self.fds {
            // SAFETY: the perf event fd is open (owned by self.fds); this ioctl takes an integer argument.
            unsafe {
                backend_api::syscall!(ioctl(
                    fd.as_raw_fd(),
                    perf_event_open_sys::bindings::DISABLE as _,
                    0
                ))
            }?;
        }
        self.read()
    }

    /// The sum of every counter as it stands (running or stopped).
    fn read(&self) -> io::Result<u64> {
        let mut total = 0u64;
        for fd in &self.fds {
            let mut v = 0u64;
            // SAFETY: reads 8 bytes into a live u64; the default read_format is one u64
            // (the event's count plus that of its inherited children).
            let n = unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
            if n != 8 {
                return Err(io::Error::last_os_error());
            }
            total += v;
        }
        Ok(total)
    }
}

/// Every task (thread) of `pid` and of its descendant processes, kernel io-threads
/// included (they are tasks of the process that created them), from
/// /proc/PID/task/TID/children.
pub fn tree_tasks(pid: u32) -> io::Result<Vec<u32>> {
    walk_tree(pid).map(|(_, tasks)| tasks)
}

/// The processes of `pid`'s tree: `pid` and its descendants (an nginx master and its
/// workers, a shell and what it started).
pub fn tree_processes(pid: u32) -> io::Result<Vec<u32>> {
    walk_tree(pid).map(|(procs, _)| procs)
}

/// (processes, tasks) of `pid`'s tree.
fn walk_tree(pid: u32) -> io::Result<(Vec<u32>, Vec<u32>)> {
    let mut tasks = Vec::new();
    let mut seen = Vec::new();
    let mut procs = vec![pid];
    let mut first = true;
    while let Some(p) = procs.pop() {
        let listing = match fs::read_dir(format!("/proc/{p}/task")) {
            Ok(l) => l,
            // A descendant that exited meanwhile has nothing left to count; the root must exist.
            Err(e) if !first && e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        first = false;
        seen.push(p);
        for task in listing.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            tasks.push(tid);
            if let Ok(children) = fs::read_to_string(task.path().join("children")) {
                procs.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
    }
    Ok((seen, tasks))
}

/// On-CPU nanoseconds of every live task of `pid`'s tree: the first field of each
/// /proc/PID/task/TID/schedstat. Tasks that exited are missing from the sum, so a
/// difference of two readings loses what a task that exited in between ran; [`CpuClock`]
/// does not.
pub fn schedstat_ns(pid: u32) -> io::Result<u64> {
    let mut total = 0;
    for tid in tree_tasks(pid)? {
        // /proc/TID works for any thread id, whichever process it belongs to.
        if let Ok(s) = fs::read_to_string(format!("/proc/{tid}/schedstat")) {
            total += parse_schedstat_ns(&s).unwrap_or(0);
        }
    }
    Ok(total)
}

fn parse_schedstat_ns(s: &str) -> Option<u64> {
    s.split_whitespace().next()?.parse().ok()
}

/// One CPU's line of /proc/stat, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CoreTicks {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

/// Every `cpuN` line of /proc/stat.
pub fn core_ticks() -> io::Result<BTreeMap<usize, CoreTicks>> {
    Ok(parse_proc_stat(&fs::read_to_string("/proc/stat")?))
}

fn parse_proc_stat(text: &str) -> BTreeMap<usize, CoreTicks> {
    let mut cores = BTreeMap::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let Some(core) = it
            .next()
            .and_then(|n| n.strip_prefix("cpu"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let v: Vec<u64> = it.map(|f| f.parse().unwrap_or(0)).collect();
        let f = |i: usize| v.get(i).copied().unwrap_or(0);
        cores.insert(
            core,
            CoreTicks {
                user: f(0),
                nice: f(1),
                system: f(2),
                idle: f(3),
                iowait: f(4),
                irq: f(5),
                softirq: f(6),
                steal: f(7),
            },
        );
    }
    cores
}

/// How `cores` spent the window between two /proc/stat readings, as shares of each core's
/// ticks (tick-sampled: ±1 tick per field).
pub fn core_usage(
    before: &BTreeMap<usize, CoreTicks>,
    after: &BTreeMap<usize, CoreTicks>,
    cores: &[usize],
) -> Vec<CoreUsage> {
    cores
        .iter()
        .filter_map(|c| {
            let (a, b) = (before.get(c)?, after.get(c)?);
            let d = |f: fn(&CoreTicks) -> u64| f(b).saturating_sub(f(a));
            let (user, nice, system) = (d(|t| t.user), d(|t| t.nice), d(|t| t.system));
            let (idle, iowait, irq) = (d(|t| t.idle), d(|t| t.iowait), d(|t| t.irq));
            let (softirq, steal) = (d(|t| t.softirq), d(|t| t.steal));
            let total = user + nice + system + idle + iowait + irq + softirq + steal;
            let share = |v: u64| v as f64 / total.max(1) as f64;
            Some(CoreUsage {
                core: *c,
                ticks: total,
                user: share(user + nice),
                system: share(system),
                irq: share(irq),
                softirq: share(softirq),
                steal: share(steal),
                idle: share(idle + iowait),
            })
        })
        .collect()
}

/// Steal above this share of any chosen core over the window flags the cell `noisy_host`:
/// the hypervisor took the CPU away often enough to move a 3% verdict.
pub const NOISY_STEAL: f64 = 0.02;
/// Busy time on a side's cores not run by that side's own processes, above this share of
/// those cores, flags the cell `noisy_host`: something else (a build, another benchmark,
/// ksoftirqd for someone else) competed for them.
pub const NOISY_FOREIGN: f64 = 0.05;
/// How far a /proc/stat share can be off, in ticks per core: each field of a difference of
/// two readings is within one tick, and a busy share is the total less idle and steal.
const TICK_SLACK: f64 = 2.0;

/// Why a side's cores were too busy with something else to trust the cell, if they were.
/// `own_ns` is what that side's processes ran over `window_s` (they are pinned to those
/// cores, so all of it ran there; with no IRQ-time accounting that includes the softirqs
/// run in their context, which /proc/stat shows as softirq: on loopback, the peer's
/// receive path).
///
/// The shares come from ticks (100 per core-second here), so a flag needs the excess to be
/// larger than what the ticks can resolve: a 1 s cell cannot tell 5% foreign work from 3%.
/// Without that margin a quiet box flagged most cells.
pub fn noisy(side: &str, usage: &[CoreUsage], own_ns: Option<u64>, window_s: f64) -> Vec<String> {
    let mut why = Vec::new();
    for u in usage {
        let slack = 1.0 / u.ticks.max(1) as f64;
        if u.steal - slack > NOISY_STEAL {
            why.push(format!(
                "{side} core {} lost {:.1}% to steal (threshold {:.0}%, resolution {:.1}%)",
                u.core,
                u.steal * 100.0,
                NOISY_STEAL * 100.0,
                slack * 100.0
            ));
        }
    }
    if let (Some(own), false) = (own_ns, usage.is_empty()) {
        let capacity = window_s * usage.len() as f64;
        let busy: f64 = usage
            .iter()
            .map(|u| (u.user + u.system + u.irq + u.softirq) * window_s)
            .sum();
        let ticks: u64 = usage.iter().map(|u| u.ticks).sum();
        let slack = TICK_SLACK * usage.len() as f64 / ticks.max(1) as f64;
        let foreign = (busy - own as f64 / 1e9) / capacity.max(1e-9);
        if foreign - slack > NOISY_FOREIGN {
            why.push(format!(
                "{side} cores ran {:.1}% foreign work (threshold {:.0}%, resolution {:.1}%)",
                foreign * 100.0,
                NOISY_FOREIGN * 100.0,
                slack * 100.0
            ));
        }
    }
    why
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

    /// A shell that spins `script` (a bounded busy loop) once told to on stdin, prints
    /// "spun", then waits for end of input.
    struct Spinner {
        child: std::process::Child,
        lines: std::sync::mpsc::Receiver<String>,
    }

    impl Spinner {
        fn start(script: &str) -> Spinner {
            Spinner::start_in(script, None)
        }

        /// Like `start`, with the shell moved into a cgroup before exec.
        fn start_in(script: &str, cgroup: Option<&super::super::cgroup::CpuCgroup>) -> Spinner {
            use std::io::BufRead;
            use std::os::unix::process::CommandExt;
            let mut cmd = std::process::Command::new("sh");
            if let Some(fd) = cgroup.map(|g| g.procs_fd()) {
                // SAFETY: join_current is one write(2) to an inherited descriptor,
                // async-signal-safe and allocation-free.
                unsafe {
                    cmd.pre_exec(move || super::super::cgroup::join_current(fd));
                }
            }
            let mut child = cmd
                .args(["-c", &format!("read x; {script}; echo spun; read y")])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let out = std::io::BufReader::new(child.stdout.take().unwrap());
            let (tx, lines) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for l in out.lines().map_while(Result::ok) {
                    let _ = tx.send(l);
                }
            });
            Spinner { child, lines }
        }

        fn spin(&mut self) {
            use std::io::Write;
            writeln!(self.child.stdin.as_mut().unwrap(), "go").unwrap();
            let line = self
                .lines
                .recv_timeout(std::time::Duration::from_secs(120))
                .expect("the spinner finishes its bounded loop");
            assert_eq!(line, "spun");
        }

        fn finish(mut self) {
            drop(self.child.stdin.take());
            self.child.wait().unwrap();
        }
    }

    /// The shell's busy loop: about 0.15 s of CPU here (0.6 µs an iteration), well above
    /// the 50 ms (5 ticks) the tests need on a machine a few times faster.
    fn spin_loop() -> String {
        "i=0; while [ $i -lt 250000 ]; do i=$((i+1)); done".to_string()
    }

    #[test]
    fn nanosecond_cpu_agrees_with_ticks_on_a_busy_loop() {
        let mut sp = Spinner::start(&spin_loop());
        let pid = sp.child.id();
        let clock = match CpuClock::open(pid) {
            Ok(c) => Some(c),
            Err(why) => {
                eprintln!("perf task-clock unavailable here, checking schedstat only: {why}");
                assert!(why.contains("perf"), "{why}");
                None
            }
        };
        let sched0 = schedstat_ns(pid).unwrap();
        if let Some(c) = &clock {
            c.start().unwrap();
        }
        sp.spin();
        let clock_ns = clock.as_ref().map(|c| c.stop().unwrap());
        // The child now blocks on stdin: its counters no longer move.
        let lifetime_ns = schedstat_ns(pid).unwrap();
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let (utime, stime) = parse_stat_times(&stat).unwrap();
        // SAFETY: sysconf has no memory-safety preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let tick_ns = 1e9 / hz;
        let ticks_ns = (utime + stime) as f64 * tick_ns;
        // The kernel scales utime and stime so they sum to the same runtime schedstat
        // shows, then truncates each to whole ticks: within one tick per field.
        let life = lifetime_ns as f64;
        assert!(
            ticks_ns <= life + 1e6 && ticks_ns > life - 2.0 * tick_ns,
            "ticks say {ticks_ns} ns, schedstat {lifetime_ns} ns"
        );
        let window = lifetime_ns - sched0;
        assert!(
            window as f64 > 5.0 * tick_ns,
            "the loop ran only {window} ns"
        );
        if let Some(ns) = clock_ns {
            // Two exact counters of the same runtime, read a few µs apart.
            let diff = (ns as f64 - window as f64).abs();
            assert!(
                diff < 0.01 * window as f64 + 2e6,
                "task-clock {ns} ns, schedstat {window} ns"
            );
        }
        sp.finish();
    }

    #[test]
    fn task_clock_keeps_what_an_exited_child_ran_and_schedstat_loses_it() {
        // The loop runs in a subshell: a child process that exits inside the window.
        let mut sp = Spinner::start(&format!("({})", spin_loop()));
        let pid = sp.child.id();
        let Ok(clock) = CpuClock::open(pid) else {
            eprintln!("perf task-clock unavailable here; nothing to compare");
            sp.finish();
            return;
        };
        let sched0 = schedstat_ns(pid).unwrap();
        clock.start().unwrap();
        sp.spin();
        let ns = clock.stop().unwrap();
        let sched = schedstat_ns(pid).unwrap() - sched0;
        assert!(
            ns > 50_000_000 && ns > 5 * sched,
            "task-clock {ns} ns, schedstat of the live tasks {sched} ns"
        );
        sp.finish();
    }

    /// The server's cgroup, or None where this host cannot give one, saying why.
    fn cgroup_or_why() -> Option<super::super::cgroup::CpuCgroup> {
        match super::super::cgroup::CpuCgroup::create() {
            Ok(g) => Some(g),
            Err(why) => {
                eprintln!("no cgroup here, nothing to compare: {why}");
                assert!(
                    why.contains("no cgroup") || why.contains("write access"),
                    "unexpected cgroup failure: {why}"
                );
                None
            }
        }
    }

    #[test]
    fn cgroup_usage_agrees_with_schedstat_on_a_busy_loop() {
        let Some(group) = cgroup_or_why() else {
            return;
        };
        let mut sp = Spinner::start_in(&spin_loop(), Some(&group));
        let pid = sp.child.id();
        let (sched0, cg0) = (schedstat_ns(pid).unwrap(), group.usage_ns().unwrap());
        sp.spin();
        let (sched, cg) = (
            schedstat_ns(pid).unwrap() - sched0,
            group.usage_ns().unwrap() - cg0,
        );
        assert!(sched > 5_000_000, "the loop ran only {sched} ns");
        // Two exact counts of one task's runtime, read a few µs apart.
        let diff = (cg as f64 - sched as f64).abs();
        assert!(
            diff < 0.01 * sched as f64 + 1e6,
            "cgroup {cg} ns, schedstat {sched} ns"
        );
        sp.finish();
    }

    #[test]
    fn cgroup_keeps_what_an_exited_child_ran() {
        let Some(group) = cgroup_or_why() else {
            return;
        };
        // The loop runs in a subshell: a child process that exits inside the window.
        let mut sp = Spinner::start_in(&format!("({})", spin_loop()), Some(&group));
        let pid = sp.child.id();
        let (sched0, cg0) = (schedstat_ns(pid).unwrap(), group.usage_ns().unwrap());
        sp.spin();
        let sched = schedstat_ns(pid).unwrap() - sched0;
        let cg = group.usage_ns().unwrap() - cg0;
        assert!(
            cg > 50_000_000 && cg > 5 * sched,
            "cgroup {cg} ns, schedstat of the live tasks {sched} ns"
        );
        sp.finish();
    }

    #[test]
    fn process_tree_includes_children_and_their_threads() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 60 & read x; kill $!"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        // The background sleep appears as soon as the shell forked it.
        let mut tasks = Vec::new();
        for _ in 0..2000 {
            tasks = tree_tasks(pid).unwrap();
            if tasks.len() >= 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(tasks.contains(&pid) && tasks.len() >= 2, "{tasks:?}");
        drop(child.stdin.take());
        child.wait().unwrap();
        assert!(tree_tasks(pid).is_err(), "a reaped process has no tree");
    }

    #[test]
    fn core_usage_shares_and_noise_flags() {
        let before = parse_proc_stat(
            "cpu  1 2 3 4\ncpu0 100 0 50 800 0 0 10 0 0 0\ncpu1 100 0 50 800 0 0 10 0 0 0\nintr 5\n",
        );
        let after = parse_proc_stat(
            "cpu  1 2 3 4\ncpu0 150 0 90 800 0 0 20 0 0 0\ncpu1 110 0 55 880 0 0 10 5 0 0\n",
        );
        assert_eq!(before.len(), 2);
        let u = core_usage(&before, &after, &[0, 1, 7]);
        assert_eq!(u.len(), 2, "core 7 does not exist");
        assert_eq!(u[0].ticks, 100);
        assert!((u[0].user - 0.5).abs() < 1e-9 && (u[0].system - 0.4).abs() < 1e-9);
        assert!((u[0].softirq - 0.1).abs() < 1e-9 && u[0].idle.abs() < 1e-9);
        assert!((u[1].steal - 0.05).abs() < 1e-9 && (u[1].idle - 0.8).abs() < 1e-9);
        // Core 0 was fully busy for 1 s: with the server's own 1 s, nothing foreign.
        assert!(noisy("server", &u[..1], Some(1_000_000_000), 1.0).is_empty());
        // The server ran only half of it: the rest was someone else's.
        let why = noisy("server", &u[..1], Some(500_000_000), 1.0);
        assert!(why.len() == 1 && why[0].contains("foreign"), "{why:?}");
        let why = noisy("client", &u[1..], Some(300_000_000), 1.0);
        assert!(why.len() == 1 && why[0].contains("steal"), "{why:?}");
        // 6% foreign in a 100-tick window is within what the ticks resolve (2 ticks)...
        assert!(noisy("server", &u[..1], Some(940_000_000), 1.0).is_empty());
        // ...but not over 1,000 ticks.
        let mut long = u[0];
        long.ticks = 1000;
        let why = noisy("server", &[long], Some(9_400_000_000), 10.0);
        assert!(why.len() == 1 && why[0].contains("foreign"), "{why:?}");
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
