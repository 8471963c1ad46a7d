//! The environment manifest recorded with every run.

use std::collections::BTreeMap;
use std::process::Command;

use crate::results::Manifest;
use crate::sysinfo::SysRoot;

/// Collects the manifest for a run on `server`/`client` cores; `io_uring` carries what the
/// io_uring-based backends' probes said.
pub fn collect(
    sys: &SysRoot,
    server: &[usize],
    client: &[usize],
    io_uring: BTreeMap<String, String>,
) -> Manifest {
    let online = sys.online_cpus();
    let mut rlimits = BTreeMap::new();
    for (name, res) in [
        ("nofile", libc::RLIMIT_NOFILE),
        ("memlock", libc::RLIMIT_MEMLOCK),
    ] {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct we own.
        if unsafe { libc::getrlimit(res, &mut lim) } == 0 {
            let fmt = |v: libc::rlim_t| {
                if v == libc::RLIM_INFINITY {
                    "unlimited".to_string()
                } else {
                    v.to_string()
                }
            };
            rlimits.insert(
                name.to_string(),
                format!("{}/{}", fmt(lim.rlim_cur), fmt(lim.rlim_max)),
            );
        }
    }
    let governors: Vec<String> = server
        .iter()
        .chain(client)
        .filter_map(|&c| sys.governor(c).map(|g| format!("cpu{c}={g}")))
        .collect();
    Manifest {
        hostname: sys.read("proc/sys/kernel/hostname").unwrap_or_default(),
        kernel: sys.read("proc/sys/kernel/osrelease").unwrap_or_default(),
        os: sys
            .read("etc/os-release")
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                    .map(|v| v.trim_matches('"').to_string())
            })
            .unwrap_or_default(),
        cpu_model: sys.cpu_model(),
        online_cores: online.len(),
        smt_siblings: sys
            .smt_groups(&online)
            .into_iter()
            .filter(|g| g.len() > 1)
            .collect(),
        server_cores: server.to_vec(),
        client_cores: client.to_vec(),
        sysctls: sys.sysctls(),
        rlimits,
        io_uring,
        cpu_governor: (!governors.is_empty()).then(|| governors.join(" ")),
        rustc: env!("RINGSIDE_RUSTC").to_string(),
        crate_versions: env!("RINGSIDE_CRATES")
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        git_commit: git_commit(),
        argv: std::env::args().collect(),
        memcpy: None,
        topology: None,
    }
}

/// The checkout's commit, "-dirty" when the work tree has changes; None outside git.
fn git_commit() -> Option<String> {
    let dir = env!("CARGO_MANIFEST_DIR");
    let head = Command::new("git")
        .args(["-C", dir, "rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let mut commit = String::from_utf8(head.stdout).ok()?.trim().to_string();
    let dirty = Command::new("git")
        .args(["-C", dir, "status", "--porcelain", "--untracked-files=no"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    if dirty {
        commit.push_str("-dirty");
    }
    Some(commit)
}
