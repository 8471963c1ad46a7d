//! The server's CPU time from a cgroup of its own: every task that ever ran in it (threads,
//! child processes, kernel io-threads such as iou-wrk and iou-sqp, tasks that exited inside
//! the window), in nanoseconds, with no per-task bookkeeping.
//!
//! cgroup v1's `cpuacct.usage` sums the scheduler's runtime (`sum_exec_runtime`) of the
//! group's tasks, exited ones included; cgroup v2's `cpu.stat` gives the same as
//! `usage_usec`. The child joins the group between fork and exec, so everything it ever
//! creates is inside from its first instruction. The group is removed once the server has
//! exited; groups left by a killed harness are found by their owner's pid and removed at
//! the next start.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Prefix of every group this harness creates: `ringside-<owner pid>-<n>`.
const PREFIX: &str = "ringside-";

/// How long removal waits for the last tasks of an exited server to leave the group.
const REMOVE_WAIT: Duration = Duration::from_secs(2);

static NEXT: AtomicU64 = AtomicU64::new(0);

/// Which cgroup interface the group lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// cgroup v1 cpuacct controller: `cpuacct.usage`, ns.
    V1,
    /// cgroup v2: `cpu.stat` `usage_usec`, µs.
    V2,
}

/// A cgroup created for one server process.
pub struct CpuCgroup {
    dir: PathBuf,
    kind: Kind,
    /// `cgroup.procs`, opened before the fork so the child only has to write to it.
    procs: OwnedFd,
}

impl CpuCgroup {
    /// Creates a fresh group beside this process's own (so it works inside a container's
    /// delegated subtree), after removing groups whose owners are gone. Errors say why
    /// not and what would fix it.
    pub fn create() -> Result<CpuCgroup, String> {
        let (parent, kind) = own_group().ok_or_else(|| {
            "no cgroup v1 cpuacct or cgroup v2 hierarchy is mounted (see /proc/self/mountinfo)"
                .to_string()
        })?;
        remove_stale(&parent);
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = parent.join(name);
        fs::create_dir(&dir).map_err(|e| {
            format!(
                "creating cgroup {}: {e} (needs write access to {}; run as root, or delegate it)",
                dir.display(),
                parent.display()
            )
        })?;
        let procs_path = dir.join("cgroup.procs");
        let c = CString::new(procs_path.as_os_str().as_encoded_bytes())
            .map_err(|_| format!("cgroup path {} holds a NUL", procs_path.display()))?;
        // SAFETY: c is a valid NUL-terminated path that outlives the call.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            let _ = fs::remove_dir(&dir);
            return Err(format!("opening {}: {e}", procs_path.display()));
        }
        // SAFETY: open returned a new descriptor that nothing else owns.
        let procs = unsafe { OwnedFd::from_raw_fd(fd) };
        let group = CpuCgroup { dir, kind, procs };
        group.usage_ns().map_err(|e| {
            format!(
                "reading the CPU usage of {}: {e} (cgroup v2 needs the cpu.stat file)",
                group.dir.display()
            )
        })?;
        Ok(group)
    }

    /// The descriptor the child writes to between fork and exec; see [`join_current`].
    pub fn procs_fd(&self) -> RawFd {
        self.procs.as_raw_fd()
    }

    /// On-CPU nanoseconds of every task that has run in the group.
    pub fn usage_ns(&self) -> io::Result<u64> {
        self.usage().read_ns()
    }

    /// A reader of the group's usage that another thread can keep.
    pub fn usage(&self) -> Usage {
        Usage {
            dir: self.dir.clone(),
            kind: self.kind,
        }
    }

    /// The group's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for CpuCgroup {
    fn drop(&mut self) {
        // The server has been reaped; its last tasks (a child it forked, a kernel io-thread
        // winding down) can take a moment to leave. rmdir fails with EBUSY until then.
        let deadline = Instant::now() + REMOVE_WAIT;
        while fs::remove_dir(&self.dir).is_err() && self.dir.exists() {
            if Instant::now() >= deadline {
                eprintln!(
                    "harness: cgroup {} still has tasks; the next compare removes it",
                    self.dir.display()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// This process moved into a group of its own (`harness serve --ledger-stdin`, which
/// measures itself on a server host): every task it creates from then on is counted. On
/// drop it moves back to the group it came from, so its own group can be removed.
pub struct OwnGroup {
    // Declared first: dropped (removed) after `drop` moved the process out.
    group: CpuCgroup,
    /// `cgroup.procs` of the group this process came from.
    home: OwnedFd,
}

impl OwnGroup {
    /// Creates a group beside this process's own and moves this process (all its threads)
    /// into it. Meant to run before the process starts any thread of its own.
    pub fn enter() -> Result<OwnGroup, String> {
        let (parent, _) = own_group().ok_or_else(|| {
            "no cgroup v1 cpuacct or cgroup v2 hierarchy is mounted (see /proc/self/mountinfo)"
                .to_string()
        })?;
        let home_path = parent.join("cgroup.procs");
        let home = fs::OpenOptions::new()
            .write(true)
            .open(&home_path)
            .map_err(|e| format!("opening {}: {e}", home_path.display()))?;
        let group = CpuCgroup::create()?;
        join_current(group.procs_fd()).map_err(|e| {
            format!(
                "moving this process into {}: {e} (cgroup v2 refuses it when the parent \
                 distributes controllers; run as root, or delegate the subtree)",
                group.dir.display()
            )
        })?;
        Ok(OwnGroup {
            group,
            home: home.into(),
        })
    }

    /// A reader of the group's usage.
    pub fn usage(&self) -> Usage {
        self.group.usage()
    }
}

impl Drop for OwnGroup {
    fn drop(&mut self) {
        // Back home first: a group cannot be removed while this process is in it.
        if let Err(e) = join_current(self.home.as_raw_fd()) {
            eprintln!(
                "harness: could not leave cgroup {}: {e}; the next run removes it",
                self.group.dir.display()
            );
        }
    }
}

/// Reads a group's CPU usage.
#[derive(Debug, Clone)]
pub struct Usage {
    dir: PathBuf,
    kind: Kind,
}

impl Usage {
    /// On-CPU nanoseconds of every task that has run in the group.
    pub fn read_ns(&self) -> io::Result<u64> {
        match self.kind {
            Kind::V1 => fs::read_to_string(self.dir.join("cpuacct.usage"))?
                .trim()
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "cpuacct.usage")),
            Kind::V2 => {
                let text = fs::read_to_string(self.dir.join("cpu.stat"))?;
                parse_usage_usec(&text)
                    .map(|us| us * 1000)
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "cpu.stat"))
            }
        }
    }

    /// How the ledger names this count.
    pub fn method(&self) -> &'static str {
        match self.kind {
            Kind::V1 => "cgroup cpuacct.usage",
            Kind::V2 => "cgroup cpu.stat usage_usec",
        }
    }
}

/// Moves the calling process into the group whose `cgroup.procs` is open as `fd`. Meant for
/// the child between fork and exec: one write(2) of a constant, no allocation.
pub fn join_current(fd: RawFd) -> io::Result<()> {
    // "0" names the writing process, in both cgroup versions.
    // SAFETY: writes one byte from a static buffer to a descriptor the caller owns.
    let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
    if n == 1 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// This process's own group in the cpuacct (v1) or unified (v2) hierarchy, as a directory.
fn own_group() -> Option<(PathBuf, Kind)> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let cgroups = fs::read_to_string("/proc/self/cgroup").ok()?;
    let (mounts_v1, mount_v2) = parse_mounts(&mountinfo);
    for line in cgroups.lines() {
        // "2:cpuacct:/path" (v1) or "0::/path" (v2).
        let mut f = line.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        if controllers.split(',').any(|c| c == "cpuacct") {
            if let Some(m) = &mounts_v1 {
                return Some((m.join(path.trim_start_matches('/')), Kind::V1));
            }
        }
    }
    let m = mount_v2?;
    let path = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some((m.join(path.trim_start_matches('/')), Kind::V2))
}

/// The cpuacct v1 mount point and the cgroup2 mount point, from /proc/self/mountinfo.
fn parse_mounts(mountinfo: &str) -> (Option<PathBuf>, Option<PathBuf>) {
    let (mut v1, mut v2) = (None, None);
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split_whitespace().nth(4);
        let mut r = right.split_whitespace();
        let (fstype, _source, opts) = (r.next(), r.next(), r.next().unwrap_or(""));
        match (fstype, mount_point) {
            (Some("cgroup"), Some(m)) if opts.split(',').any(|o| o == "cpuacct") => {
                v1.get_or_insert_with(|| PathBuf::from(m));
            }
            (Some("cgroup2"), Some(m)) => {
                v2.get_or_insert_with(|| PathBuf::from(m));
            }
            _ => {}
        }
    }
    (v1, v2)
}

fn parse_usage_usec(cpu_stat: &str) -> Option<u64> {
    cpu_stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

/// Removes `ringside-<pid>-<n>` groups under `parent` whose owner is no longer running (a
/// harness that was killed). A server's own processes die with the harness (PDEATHSIG), but
/// what they forked may not (an external server's workers): whatever is still in such a
/// group is killed first.
fn remove_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if owner != std::process::id() && !Path::new(&format!("/proc/{owner}")).exists() {
            kill_members(&e.path());
            let _ = fs::remove_dir(e.path());
        }
    }
}

/// SIGKILL to every process left in a group, then a short wait for them to leave it.
fn kill_members(dir: &Path) {
    let procs = dir.join("cgroup.procs");
    let deadline = Instant::now() + REMOVE_WAIT;
    loop {
        let pids: Vec<i32> = fs::read_to_string(&procs)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() || Instant::now() >= deadline {
            if !pids.is_empty() {
                eprintln!(
                    "harness: {} processes of a killed run's server survive in {}",
                    pids.len(),
                    dir.display()
                );
            }
            return;
        }
        for pid in pids {
            eprintln!(
                "harness: killing process {pid}, left behind by a killed run (cgroup {})",
                dir.display()
            );
            // SAFETY: kill has no memory-safety preconditions; the pid was read from the
            // group this harness created for a server whose harness is gone.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_of_both_versions_are_found() {
        let info = "\
30 24 0:26 / /sys/fs/cgroup/cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpuacct
31 24 0:27 / /sys/fs/cgroup/cpu rw,nosuid shared:10 - cgroup cgroup rw,cpu
29 24 0:25 / /sys/fs/cgroup/unified rw,nosuid shared:8 - cgroup2 cgroup2 rw,nsdelegate
";
        let (v1, v2) = parse_mounts(info);
        assert_eq!(v1.as_deref(), Some(Path::new("/sys/fs/cgroup/cpuacct")));
        assert_eq!(v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(parse_mounts("").0, None);
    }

    #[test]
    fn cpu_stat_usage_parses() {
        let s = "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n";
        assert_eq!(parse_usage_usec(s), Some(123456));
        assert_eq!(parse_usage_usec("user_usec 5\n"), None);
    }
}
