//! The cost ledger of one cell in the results file: nanosecond CPU of the server and of
//! the load generator over exactly the measured window, and how each chosen core spent it.

use serde::{Deserialize, Serialize};

/// What each side spent over the measured window, at nanosecond resolution, and whether
/// the host let the cell run undisturbed.
///
/// On loopback the kernel runs each side's receive path in the sender's context (softirq
/// on the sending CPU), so the server's CPU includes part of the client's network stack
/// and the client's part of the server's: the same for every backend, but not what the
/// server would cost behind a NIC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CostLedger {
    /// Wall time between the ledger's two readings, seconds.
    pub window_s: f64,
    /// On-CPU nanoseconds of every thread and child process of the server, kernel
    /// io-threads (iou-sqp, iou-wrk) included.
    pub server_cpu_ns: Option<u64>,
    /// How `server_cpu_ns` was counted. "cgroup cpuacct.usage" (or "cgroup cpu.stat
    /// usage_usec" on cgroup v2): the server ran in a cgroup of its own from before exec,
    /// and the group's usage is the scheduler's runtime of every task that ever ran in it,
    /// exited ones included; exact. Without a cgroup, the larger of two counts that each
    /// miss something, so a lower bound: "schedstat", the sum over the tree's live tasks
    /// of /proc/TID/schedstat (a task that exits inside the window loses its share), or
    /// "perf task-clock (tasks exited in the window)", perf's task-clock with inherit,
    /// which keeps exited tasks' share but reads below the scheduler's runtime when the
    /// server sleeps between requests.
    pub server_cpu_method: String,
    /// perf task-clock over the same window, kept as a cross-check.
    #[serde(default)]
    pub server_cpu_ns_task_clock: Option<u64>,
    /// schedstat over the tree's live tasks over the same window, kept as a cross-check.
    #[serde(default)]
    pub server_cpu_ns_schedstat: Option<u64>,
    /// Why `server_cpu_ns` is absent, when it is.
    pub server_cpu_absent: Option<String>,
    /// `server_cpu_ns` per completed request, µs.
    pub server_cpu_us_per_req: Option<f64>,
    /// On-CPU nanoseconds of the load generator's threads (in the harness or in its
    /// agents), each over its own measured window, by getrusage(RUSAGE_THREAD): its user +
    /// system sums to the scheduler's runtime. The coordinator's threads are left out.
    pub client_cpu_ns: Option<u64>,
    /// `client_cpu_ns` per completed request, µs.
    pub client_cpu_us_per_req: Option<f64>,
    /// How each server core spent the window (/proc/stat, tick-sampled).
    pub server_cores: Vec<CoreUsage>,
    /// How each client core spent the window (/proc/stat, tick-sampled).
    pub client_cores: Vec<CoreUsage>,
    /// True when steal or foreign work on the chosen cores passed its threshold (see
    /// `noisy_reasons`): the host disturbed the cell.
    pub noisy_host: bool,
    /// What made the cell noisy, one sentence each.
    pub noisy_reasons: Vec<String>,
}

/// One core over the window: shares of its ticks, summing to about 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CoreUsage {
    /// CPU number.
    pub core: usize,
    /// Ticks the core counted over the window (USER_HZ, 100 per second).
    pub ticks: u64,
    /// User time, nice included.
    pub user: f64,
    /// System time.
    pub system: f64,
    /// Hard interrupts.
    pub irq: f64,
    /// Soft interrupts (network receive on loopback among them).
    pub softirq: f64,
    /// Taken by the hypervisor.
    pub steal: f64,
    /// Idle, iowait included.
    pub idle: f64,
}
