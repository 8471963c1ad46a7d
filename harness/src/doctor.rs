//! `harness doctor`: what on this host would make a comparison wrong or fail, each with
//! the exact command that fixes it. `scripts/tune-host.sh` applies the fixes.

use anyhow::Context;

use crate::sysinfo::SysRoot;

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Short name of the check.
    pub check: &'static str,
    /// True when the check passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// The command that fixes it, when it failed.
    pub fix: Option<String>,
}

/// Inputs that are not files under /proc or /sys.
#[derive(Debug, Clone)]
pub struct DoctorInputs {
    /// Backlog the servers will ask for.
    pub backlog: u32,
    /// Connections the suite needs at most (idle sweep included).
    pub max_connections: u64,
    /// RLIMIT_NOFILE (soft, hard).
    pub nofile: (u64, u64),
    /// RLIMIT_MEMLOCK (soft, hard) in bytes.
    pub memlock: (u64, u64),
    /// Locked memory the backends need, bytes, and which ones (from the registry).
    pub memlock_need: (u64, String),
    /// Cores the comparison will use.
    pub cores: Vec<usize>,
    /// Whether perf can count the tracepoint (Err carries why not).
    pub perf: Result<(), String>,
    /// Whether the server can run in a cgroup of its own, so its CPU is counted exactly
    /// (Ok names the method; Err carries why not).
    pub cgroup: Result<&'static str, String>,
    /// Other processes' CPU use on the chosen cores: (pid, name, share of a core).
    pub busy: Vec<(u32, String, f64)>,
    /// The libc copy slowdown measured in this process, and GLIBC_TUNABLES as set.
    pub memcpy: (crate::memcpy::Probe, Option<String>),
}

fn finding(check: &'static str, ok: bool, detail: String, fix: Option<String>) -> Finding {
    Finding {
        check,
        ok,
        detail,
        fix: if ok { None } else { fix },
    }
}

/// Runs every check.
pub fn check(sys: &SysRoot, inp: &DoctorInputs) -> Vec<Finding> {
    let mut out = Vec::new();
    let somaxconn: u32 = sys
        .sysctl("net.core.somaxconn")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    out.push(finding(
        "somaxconn",
        somaxconn >= inp.backlog,
        format!(
            "net.core.somaxconn = {somaxconn}, backlog asked = {}",
            inp.backlog
        ),
        Some(format!("sysctl -w net.core.somaxconn={}", inp.backlog)),
    ));
    // Each connection costs a descriptor in the server and one in the generator.
    let need = inp.max_connections + 1024;
    out.push(finding(
        "nofile",
        inp.nofile.1 >= need,
        format!(
            "RLIMIT_NOFILE soft {} hard {}, needed about {need}",
            inp.nofile.0, inp.nofile.1
        ),
        Some(format!(
            "ulimit -n {need}   (hard limit: /etc/security/limits.conf, or run as root)"
        )),
    ));
    let (memlock_need, memlock_users) = &inp.memlock_need;
    out.push(finding(
        "memlock",
        inp.memlock.0 >= *memlock_need || inp.memlock.0 == u64::MAX,
        format!("RLIMIT_MEMLOCK soft {} KiB", inp.memlock.0 / 1024),
        Some(format!(
            "ulimit -l {}   ({memlock_users} lock ring memory)",
            memlock_need / 1024
        )),
    ));
    let range = sys
        .sysctl("net.ipv4.ip_local_port_range")
        .unwrap_or_default();
    let ports: Vec<u32> = range
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let width = if ports.len() == 2 {
        ports[1].saturating_sub(ports[0])
    } else {
        0
    };
    out.push(finding(
        "ephemeral ports",
        width >= 28_000,
        format!("ip_local_port_range {range} ({width} ports per source address; the generator also spreads over 127.0.0.0/8)"),
        Some("sysctl -w net.ipv4.ip_local_port_range=\"1024 65000\"".into()),
    ));
    let uring = sys
        .sysctl("kernel.io_uring_disabled")
        .unwrap_or_else(|| "0".into());
    out.push(finding(
        "io_uring",
        uring == "0",
        format!("kernel.io_uring_disabled = {uring}"),
        Some("sysctl -w kernel.io_uring_disabled=0".into()),
    ));
    out.push(match &inp.perf {
        Ok(()) => finding("perf tracepoint", true, "raw_syscalls:sys_enter can be counted".into(), None),
        Err(why) => finding(
            "perf tracepoint",
            false,
            format!("syscalls per request will be absent: {why}"),
            Some("sysctl -w kernel.perf_event_paranoid=-1; mount -t tracefs nodev /sys/kernel/tracing".into()),
        ),
    });
    out.push(match &inp.cgroup {
        Ok(method) => finding(
            "cpu ledger",
            true,
            format!("servers run in a cgroup of their own: CPU counted exactly ({method})"),
            None,
        ),
        Err(why) => finding(
            "cpu ledger",
            false,
            format!(
                "no cgroup for the server ({why}): its CPU is the larger of schedstat and perf \
                 task-clock, a lower bound"
            ),
            Some(
                "run as root, or delegate a cgroup v2 subtree (or v1 cpuacct) to this user".into(),
            ),
        ),
    });
    let governors: Vec<String> = inp
        .cores
        .iter()
        .filter_map(|&c| sys.governor(c).map(|g| format!("cpu{c}={g}")))
        .collect();
    if governors.is_empty() {
        out.push(finding(
            "cpu governor",
            true,
            "no cpufreq exposed (virtual machine or fixed frequency)".into(),
            None,
        ));
    } else {
        let all_perf = governors.iter().all(|g| g.ends_with("=performance"));
        out.push(finding(
            "cpu governor",
            all_perf,
            governors.join(" "),
            Some("for c in /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor; do echo performance > $c; done".into()),
        ));
    }
    let groups = sys.smt_groups(&inp.cores);
    let shared: Vec<String> = groups
        .iter()
        .filter(|g| g.len() > 1)
        .map(|g| crate::cores::format_core_list(g))
        .collect();
    out.push(finding(
        "smt siblings",
        shared.is_empty(),
        if shared.is_empty() {
            "no two chosen cores are SMT siblings".into()
        } else {
            format!(
                "chosen cores share physical cores: {}; the split keeps siblings on one side",
                shared.join(" ")
            )
        },
        Some(
            "echo off > /sys/devices/system/cpu/smt/control   (or choose one thread per core)"
                .into(),
        ),
    ));
    let busy: Vec<String> = inp
        .busy
        .iter()
        .map(|(pid, name, share)| format!("{name}[{pid}] {:.0}%", share * 100.0))
        .collect();
    out.push(finding(
        "busy cores",
        busy.is_empty(),
        if busy.is_empty() {
            "no other process is busy on the chosen cores".into()
        } else {
            format!("busy on the chosen cores: {}", busy.join(", "))
        },
        Some("stop those processes, or pick other cores with --server-cores/--client-cores".into()),
    ));
    let (probe, tunables) = &inp.memcpy;
    let fixed = crate::memcpy::tunables_with_fix(tunables.as_deref()).is_none();
    out.push(finding(
        "libc memcpy",
        !probe.significant() || fixed,
        format!(
            "16 KiB memcpy: {:.1} GB/s at 16 B above the source mod 4096, {:.1} GB/s at 256 B \
             ({:.1}x){}",
            probe.near_gbps,
            probe.far_gbps,
            probe.slowdown(),
            if probe.significant() && fixed {
                "; GLIBC_TUNABLES already sets the threshold"
            } else if probe.significant() {
                "; rep movsb slowdown (sourceware bug 30994): copy-heavy backends would be \
                 ranked by where malloc put their buffers. harness compare works around it \
                 for the servers it starts"
            } else {
                ""
            }
        ),
        Some(format!(
            "{}   (for servers and clients started by hand)",
            crate::memcpy::export_line()
        )),
    ));
    out
}

/// Prints findings; returns how many failed.
pub fn print(findings: &[Finding], out: &mut impl std::io::Write) -> std::io::Result<usize> {
    let mut failed = 0;
    for f in findings {
        let mark = if f.ok { "ok  " } else { "FIX " };
        writeln!(out, "{mark} {:<16} {}", f.check, f.detail)?;
        if let Some(fix) = &f.fix {
            failed += 1;
            writeln!(out, "     fix: {fix}")?;
        }
    }
    Ok(failed)
}

/// Processes other than this one that were busy on `cores` over a short sample.
pub fn busy_processes(cores: &[usize], sample: std::time::Duration) -> Vec<(u32, String, f64)> {
    let read_all = || -> Vec<(u32, String, u64, usize)> {
        let mut v = Vec::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return v;
        };
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let name = stat
                .split_once('(')
                .and_then(|(_, r)| r.rsplit_once(')'))
                .map(|(n, _)| n.to_string())
                .unwrap_or_default();
            let Some((utime, stime)) = crate::compare::cost::parse_stat_times(&stat) else {
                continue;
            };
            let cpu = crate::compare::cost::stat_field(&stat, 36)
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(usize::MAX);
            let ticks = utime + stime;
            v.push((pid, name, ticks, cpu));
        }
        v
    };
    let before = read_all();
    std::thread::sleep(sample);
    let after = read_all();
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let me = std::process::id();
    after
        .into_iter()
        .filter(|(pid, _, _, cpu)| *pid != me && cores.contains(cpu))
        .filter_map(|(pid, name, ticks, _)| {
            let t0 = before.iter().find(|b| b.0 == pid)?.2;
            let share = (ticks.saturating_sub(t0)) as f64 / hz / sample.as_secs_f64();
            (share > 0.10).then_some((pid, name, share))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn fake_root(files: &[(&str, &str)]) -> (SysRoot, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "ringside-doctor-{}-{}",
            std::process::id(),
            files.len()
        ));
        let _ = fs::remove_dir_all(&dir);
        for (p, v) in files {
            let path = dir.join(p);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, v).unwrap();
        }
        (SysRoot::at(&dir), dir)
    }

    fn inputs() -> DoctorInputs {
        DoctorInputs {
            backlog: 4096,
            max_connections: 100_000,
            nofile: (1024, 4096),
            memlock: (8 << 20, 8 << 20),
            memlock_need: crate::registry::memlock_need(),
            cores: vec![0, 1],
            perf: Err("perf_event_paranoid=3".into()),
            cgroup: Err("creating cgroup: Permission denied".into()),
            busy: vec![(42, "stress".into(), 0.97)],
            memcpy: (
                crate::memcpy::Probe {
                    near_gbps: 2.5,
                    far_gbps: 80.0,
                },
                None,
            ),
        }
    }

    #[test]
    fn bad_host_gets_a_fix_for_every_problem() {
        let (sys, dir) = fake_root(&[
            ("proc/sys/net/core/somaxconn", "128\n"),
            ("proc/sys/net/ipv4/ip_local_port_range", "50000\t60999\n"),
            ("proc/sys/kernel/io_uring_disabled", "2\n"),
            (
                "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
                "powersave\n",
            ),
            (
                "sys/devices/system/cpu/cpu0/topology/thread_siblings_list",
                "0-1\n",
            ),
            (
                "sys/devices/system/cpu/cpu1/topology/thread_siblings_list",
                "0-1\n",
            ),
        ]);
        let f = check(&sys, &inputs());
        let fix = |name: &str| {
            f.iter()
                .find(|x| x.check == name)
                .and_then(|x| x.fix.clone())
                .unwrap_or_default()
        };
        assert!(fix("somaxconn").contains("sysctl -w net.core.somaxconn=4096"));
        assert!(fix("nofile").contains("ulimit -n 101024"));
        assert!(fix("memlock").contains("ulimit -l 65536"));
        assert!(fix("ephemeral ports").contains("ip_local_port_range"));
        assert!(fix("io_uring").contains("io_uring_disabled=0"));
        assert!(fix("perf tracepoint").contains("perf_event_paranoid"));
        assert!(fix("cpu ledger").contains("cgroup"));
        assert!(fix("cpu governor").contains("performance"));
        assert!(fix("smt siblings").contains("smt/control"));
        assert!(fix("busy cores").contains("--server-cores"));
        assert!(fix("libc memcpy").contains("GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold="));
        let mut text = Vec::new();
        assert_eq!(print(&f, &mut text).unwrap(), 11);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn good_host_passes() {
        let (sys, dir) = fake_root(&[
            ("proc/sys/net/core/somaxconn", "4096\n"),
            ("proc/sys/net/ipv4/ip_local_port_range", "1024 65000\n"),
            ("proc/sys/kernel/io_uring_disabled", "0\n"),
        ]);
        let inp = DoctorInputs {
            nofile: (1 << 20, 1 << 20),
            memlock: (u64::MAX, u64::MAX),
            memlock_need: crate::registry::memlock_need(),
            perf: Ok(()),
            cgroup: Ok("cgroup cpuacct.usage"),
            busy: vec![],
            memcpy: (
                crate::memcpy::Probe {
                    near_gbps: 2.5,
                    far_gbps: 80.0,
                },
                // The slowdown is there but the tunable is set: nothing left to fix.
                Some("glibc.cpu.x86_rep_movsb_threshold=2147483647".into()),
            ),
            ..inputs()
        };
        let f = check(&sys, &inp);
        assert!(f.iter().all(|x| x.ok), "{f:#?}");
        fs::remove_dir_all(dir).unwrap();
    }
}

/// Options of `harness doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Cores the comparison will use (default: every usable core).
    #[arg(long, value_name = "LIST")]
    pub cores: Option<String>,
    /// Backlog the servers will ask for.
    #[arg(long, default_value_t = backend_api::listener::DEFAULT_BACKLOG)]
    pub backlog: u32,
    /// Most connections (active plus idle) a suite will open.
    #[arg(long, default_value_t = 100_000)]
    pub connections: u64,
}

/// Runs `harness doctor`; exits non-zero when something needs fixing.
pub fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let usable = backend_api::runner::usable_cores();
    let cores = match &args.cores {
        Some(l) => {
            let cores = crate::cores::parse_core_list(l).context("--cores")?;
            crate::cores::check_usable("--cores", &cores, &usable)?;
            cores
        }
        None => usable,
    };
    let limit = |res| {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct we own.
        unsafe { libc::getrlimit(res, &mut lim) };
        (lim.rlim_cur, lim.rlim_max)
    };
    crate::rlimit::raise_nofile_to_hard();
    let perf = crate::compare::cost::SyscallCounter::open(std::process::id()).map(|_| ());
    let cgroup = crate::compare::cgroup::CpuCgroup::create().map(|g| g.usage().method());
    let inputs = DoctorInputs {
        backlog: args.backlog,
        max_connections: args.connections,
        nofile: limit(libc::RLIMIT_NOFILE),
        memlock: limit(libc::RLIMIT_MEMLOCK),
        memlock_need: crate::registry::memlock_need(),
        busy: busy_processes(&cores, std::time::Duration::from_millis(500)),
        cores,
        perf,
        cgroup,
        memcpy: (crate::memcpy::probe(), std::env::var("GLIBC_TUNABLES").ok()),
    };
    let findings = check(&SysRoot::default(), &inputs);
    let failed = print(&findings, &mut std::io::stdout().lock())?;
    if failed > 0 {
        anyhow::bail!("{failed} setting(s) to fix (scripts/tune-host.sh applies the sysctl ones)");
    }
    Ok(())
}
