//! What the machine says about itself, read from /proc and /sys under a root directory
//! (`/` normally; a fake tree in tests).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Sysctls that change what a network benchmark measures, recorded in every manifest.
pub const SYSCTLS: [&str; 12] = [
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.core.rmem_default",
    "net.core.wmem_default",
    "net.core.busy_poll",
    "fs.nr_open",
    "kernel.io_uring_disabled",
    "kernel.perf_event_paranoid",
];

/// A view of /proc and /sys rooted somewhere.
#[derive(Debug, Clone)]
pub struct SysRoot {
    root: PathBuf,
}

impl Default for SysRoot {
    fn default() -> Self {
        SysRoot {
            root: PathBuf::from("/"),
        }
    }
}

impl SysRoot {
    /// A view rooted at `root` (tests).
    pub fn at(root: impl Into<PathBuf>) -> SysRoot {
        SysRoot { root: root.into() }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    /// A file's contents, trimmed.
    pub fn read(&self, p: &str) -> Option<String> {
        std::fs::read_to_string(self.path(p))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// A sysctl by dotted name (`net.core.somaxconn`), whitespace collapsed.
    pub fn sysctl(&self, name: &str) -> Option<String> {
        let p = format!("proc/sys/{}", name.replace('.', "/"));
        self.read(&p)
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    /// The recorded sysctls that exist here.
    pub fn sysctls(&self) -> BTreeMap<String, String> {
        SYSCTLS
            .iter()
            .filter_map(|n| Some((n.to_string(), self.sysctl(n)?)))
            .collect()
    }

    /// Online CPUs (from /sys/devices/system/cpu/online).
    pub fn online_cpus(&self) -> Vec<usize> {
        self.read("sys/devices/system/cpu/online")
            .and_then(|s| crate::cores::parse_core_list(&s).ok())
            .unwrap_or_default()
    }

    /// Groups of SMT siblings among `cpus`, each group sorted, groups in order of first CPU.
    pub fn smt_groups(&self, cpus: &[usize]) -> Vec<Vec<usize>> {
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for &c in cpus {
            if groups.iter().any(|g| g.contains(&c)) {
                continue;
            }
            let sib = self
                .read(&format!(
                    "sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list"
                ))
                .and_then(|s| crate::cores::parse_core_list(&s).ok())
                .unwrap_or_else(|| vec![c]);
            let mut g: Vec<usize> = sib.into_iter().filter(|s| cpus.contains(s)).collect();
            if !g.contains(&c) {
                g.push(c);
            }
            g.sort_unstable();
            groups.push(g);
        }
        groups
    }

    /// CPU model name.
    pub fn cpu_model(&self) -> String {
        self.read("proc/cpuinfo")
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into())
    }

    /// Frequency governor of a CPU, if cpufreq is exposed.
    pub fn governor(&self, cpu: usize) -> Option<String> {
        self.read(&format!(
            "sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"
        ))
    }

    /// The root this view reads under.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// Splits usable cores into (server, client) halves, keeping SMT siblings on one side.
/// With 2 cores: one each. With one core: an error, since server and client would share it.
pub fn auto_split(
    usable: &[usize],
    smt_groups: &[Vec<usize>],
) -> anyhow::Result<(Vec<usize>, Vec<usize>)> {
    anyhow::ensure!(
        usable.len() >= 2,
        "only {} usable core(s): the server and the load generator need one each; \
         give both --server-cores and --client-cores to share a core knowingly",
        usable.len()
    );
    // Whole physical cores first; when there is only one physical core, split its threads.
    let groups: Vec<Vec<usize>> = if smt_groups.len() >= 2 {
        smt_groups.to_vec()
    } else {
        usable.iter().map(|&c| vec![c]).collect()
    };
    let half = groups.len() / 2;
    let server: Vec<usize> = groups[..half].iter().flatten().copied().collect();
    let client: Vec<usize> = groups[half..].iter().flatten().copied().collect();
    Ok((server, client))
}

/// Checks explicit server and client core sets: non-empty, disjoint, usable.
pub fn check_split(server: &[usize], client: &[usize], usable: &[usize]) -> anyhow::Result<()> {
    for (what, set) in [("--server-cores", server), ("--client-cores", client)] {
        anyhow::ensure!(!set.is_empty(), "{what} is empty");
        for c in set {
            anyhow::ensure!(
                usable.contains(c),
                "{what}: core {c} is not usable by this process; usable cores: {}",
                crate::cores::format_core_list(usable)
            );
        }
    }
    if let Some(c) = server.iter().find(|c| client.contains(c)) {
        anyhow::bail!(
            "core {c} is in both --server-cores and --client-cores; the server and the load \
             generator must not share a core (it would measure their contention)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_siblings_together() {
        let (s, c) = auto_split(&[0, 1], &[vec![0], vec![1]]).unwrap();
        assert_eq!((s, c), (vec![0], vec![1]));
        // 8 threads, siblings (0,4) (1,5) (2,6) (3,7).
        let groups = vec![vec![0, 4], vec![1, 5], vec![2, 6], vec![3, 7]];
        let (s, c) = auto_split(&[0, 1, 2, 3, 4, 5, 6, 7], &groups).unwrap();
        assert_eq!(s, vec![0, 4, 1, 5]);
        assert_eq!(c, vec![2, 6, 3, 7]);
        assert!(auto_split(&[0], &[vec![0]]).is_err());
    }

    #[test]
    fn split_errors_name_the_flag() {
        let e = check_split(&[0], &[0], &[0, 1]).unwrap_err().to_string();
        assert!(e.contains("both --server-cores and --client-cores"), "{e}");
        let e = check_split(&[0], &[9], &[0, 1]).unwrap_err().to_string();
        assert!(
            e.contains("--client-cores: core 9") && e.contains("usable cores: 0-1"),
            "{e}"
        );
    }
}
