//! The results file: what `harness compare` writes and `harness plot` / `harness report`
//! read. One JSON document per run, versioned, rewritten atomically after every cell.
//!
//! Every figure carries how it was measured: the [`Manifest`] describes the machine and
//! the command, each [`Cell`] its workload, cores and repeat, and the raw histograms are
//! kept so percentiles can be recomputed or merged.

mod ledger;
mod upgrade;
mod write;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::load::{Workload as WorkloadKind, WorkloadSpec};
pub use ledger::{CoreUsage, CostLedger};
pub use write::{claim_results_path, is_disk_full, read_results, write_atomic, write_atomic_via};

/// The JSON Schema of results files, as committed in `harness/schema/results.schema.json`.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(ResultsFile)).unwrap_or_default()
}

/// Version of this schema; bumped on any incompatible change. Version 2: a cell's
/// configuration is its [`WorkloadSpec`] alone (no `load_raw` copy of the load report;
/// `idle` is 0, not null, where no idle connections were held; `requests` added).
/// Version 1 files are upgraded on reading (see `upgrade.rs`).
pub const SCHEMA_VERSION: u32 = 2;

/// One `harness compare` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResultsFile {
    /// [`SCHEMA_VERSION`] of the writer.
    pub schema_version: u32,
    /// Writer, e.g. "ringside harness 0.1.0".
    pub tool: String,
    /// When the run started (RFC 3339, UTC).
    pub started_at: String,
    /// When the run ended, if it did.
    pub finished_at: Option<String>,
    /// Whether the run is still going, finished, or was cut short.
    pub state: RunState,
    /// The machine and the command.
    pub manifest: Manifest,
    /// What was planned.
    pub plan: Plan,
    /// Every cell measured so far, in the order they ran.
    pub cells: Vec<Cell>,
}

/// Where a run stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum RunState {
    /// Cells are still being measured (or the writer died without saying).
    Running,
    /// Every planned cell ran.
    Complete,
    /// Stopped early (Ctrl-C, a fatal error); the cells present are valid.
    Interrupted {
        /// Why.
        reason: String,
    },
}

/// What a run set out to measure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Plan {
    /// Suite name ("default", "quick", or the suite file's path).
    pub suite: String,
    /// Repeats per cell.
    pub repeats: u32,
    /// Backends measured, in legend order.
    pub backends: Vec<String>,
    /// Backends left out, with the reason (probe failure, not registered).
    pub skipped_backends: Vec<SkippedBackend>,
    /// Number of cells planned (workloads × backends × repeats).
    pub cells_planned: usize,
    /// How the rates of `ladder` blocks were chosen, one entry per calibrated shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calibration: Vec<Calibration>,
    /// External servers measured beside the backends (also listed in `backends`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub externals: Vec<ExternalServer>,
}

/// The calibration of one `ladder` block's shape: every backend closed loop for a moment,
/// the slowest one's throughput as the ceiling, each fraction of it as a fixed rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Calibration {
    /// The block's group, as the suite names it.
    pub group: String,
    /// The shape as calibrated (closed loop, the calibration's own window).
    pub workload: WorkloadSpec,
    /// Closed-loop requests per second each backend reached.
    pub ceilings: BTreeMap<String, f64>,
    /// Backends whose calibration cell did not complete, with the reason; they take no
    /// part in the ceiling.
    #[serde(default)]
    pub failed: BTreeMap<String, String>,
    /// The backend whose ceiling the fractions apply to (the slowest), if any completed.
    pub slowest: Option<String>,
    /// Whether the slowest backend's calibration cell was client-bound: then the ceiling
    /// is the generator's, not the backend's.
    #[serde(default)]
    pub client_bound: bool,
    /// Each fraction and the rate it became (req/s, rounded down to two significant
    /// figures).
    pub rates: Vec<LadderRate>,
}

/// One step of a rate ladder.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LadderRate {
    /// Fraction of the ceiling.
    pub fraction: f64,
    /// Requests per second.
    pub rate: f64,
}

/// An external server of a run: a user's command measured as a backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExternalServer {
    /// Its name in `backends` and in cells.
    pub name: String,
    /// The command template, placeholders unfilled.
    pub command: String,
    /// Services it speaks ("echo", "http").
    pub services: Vec<String>,
}

/// A backend that was not measured, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SkippedBackend {
    /// Backend name.
    pub name: String,
    /// Why it was skipped.
    pub reason: String,
}

/// The environment of a run: enough to reproduce it or to distrust it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Manifest {
    /// Host name.
    pub hostname: String,
    /// `uname -r`.
    pub kernel: String,
    /// Distribution (PRETTY_NAME from /etc/os-release).
    pub os: String,
    /// CPU model name from /proc/cpuinfo.
    pub cpu_model: String,
    /// Online CPUs.
    pub online_cores: usize,
    /// Groups of SMT siblings (from /sys topology), when known.
    pub smt_siblings: Vec<Vec<usize>>,
    /// CPUs the server under test ran on.
    pub server_cores: Vec<usize>,
    /// CPUs the load generator ran on.
    pub client_cores: Vec<usize>,
    /// Relevant sysctls by name (net.core.somaxconn, net.ipv4.tcp_tw_reuse, …).
    pub sysctls: BTreeMap<String, String>,
    /// Resource limits by name ("nofile", "memlock"), as "soft/hard".
    pub rlimits: BTreeMap<String, String>,
    /// The io_uring-based backends this run measured (those whose backend says it is
    /// io_uring-based), each with what its probe found: "available" or "unsupported: …"
    /// with the reason (the kernel features and limits it checks).
    pub io_uring: BTreeMap<String, String>,
    /// CPU frequency governor per server/client core, when readable.
    pub cpu_governor: Option<String>,
    /// `rustc --version` of the build.
    pub rustc: String,
    /// Versions of the crates that matter (io-uring, glommio, tokio, …).
    pub crate_versions: BTreeMap<String, String>,
    /// `git rev-parse HEAD` of the checkout, with "-dirty" when it had changes.
    pub git_commit: Option<String>,
    /// The exact command line.
    pub argv: Vec<String>,
    /// The libc copy slowdown check (see `harness/src/memcpy.rs`) and what was done about
    /// it. Absent in files written before it existed.
    #[serde(default)]
    pub memcpy: Option<MemcpyCheck>,
    /// Where the server and the load ran (`--topology`, `--client-procs`). Absent in files
    /// written before it existed, which ran on loopback from one client process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<TopologyManifest>,
}

/// Where the server and the load generators of a run ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TopologyManifest {
    /// `loopback`, `netns` or `ssh`.
    pub topology: crate::topology::Topology,
    /// Load agent processes per client (host or namespace); 1 under loopback means the
    /// load ran in the harness process.
    pub client_procs: usize,
    /// The server's namespace (netns).
    #[serde(default)]
    pub server_namespace: Option<String>,
    /// The client namespaces (netns).
    #[serde(default)]
    pub client_namespaces: Vec<String>,
    /// Link shaping on every veth end, as given to tc ("tbf rate 100000000bit"); None when
    /// the links were not shaped.
    #[serde(default)]
    pub link: Option<String>,
    /// The server host (`--server-host`, ssh): each cell's `server_host` has its facts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_host: Option<String>,
    /// The client hosts (`--client-hosts`, ssh).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_hosts: Vec<String>,
}

/// The host a server ran on when it was not this one (`compare --topology ssh`), as the
/// server itself reported it, and how its clock relates to the coordinator's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ServerHost {
    /// `--server-host` as given.
    pub label: String,
    /// What the server process said about its host (its pid there included).
    pub host: crate::topology::agent::HostFacts,
    /// The server host's wall clock minus the coordinator's, ns (from the ledger marks'
    /// round trips, the shortest one).
    pub clock_offset_ns: i64,
    /// Half that round trip: the offset's uncertainty, ns.
    pub clock_uncertainty_ns: u64,
    /// The longest round trip of a window edge's mark, ns: each edge was read up to about
    /// half of it after the coordinator's edge (both edges alike, so the window's length
    /// holds).
    pub edge_round_trip_ns: u64,
}

/// How this machine's libc copies 16 KiB at an unlucky and a harmless distance, and the
/// environment the servers got because of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MemcpyCheck {
    /// GB/s copying to 16 bytes above the source modulo 4096 (the slow case where it exists).
    pub near_gbps: f64,
    /// GB/s copying to 256 bytes above the source modulo 4096.
    pub far_gbps: f64,
    /// far / near: about 1 on a machine without the slowdown, ~30 on the reference VM.
    pub slowdown: f64,
    /// GLIBC_TUNABLES the servers were started with to avoid the slowdown; None when they
    /// inherited the environment unchanged (no slowdown, the user set the tunable, or
    /// `--keep-libc-memcpy`).
    pub server_glibc_tunables: Option<String>,
}

/// One measurement: one backend, one workload, one repeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Cell {
    /// Series group for tables and plots: cells with the same group and workload shape are
    /// compared (e.g. "echo-64B", "http-d16", "idle-sweep").
    pub group: String,
    /// Backend name.
    pub backend: String,
    /// The workload and its parameters.
    pub workload: WorkloadSpec,
    /// Repeat index, from 0.
    pub repeat: u32,
    /// CPUs of the server.
    pub server_cores: Vec<usize>,
    /// CPUs of the load generator.
    pub client_cores: Vec<usize>,
    /// When the cell started (RFC 3339).
    pub started_at: String,
    /// Wall time of the whole cell including server start and warmup, seconds.
    pub wall_s: f64,
    /// Outcome.
    pub status: CellStatus,
    /// Client-side measurements (absent when the cell failed before measuring).
    pub client: Option<ClientMeasure>,
    /// Server-side cost over the measured window.
    pub server: Option<ServerCost>,
    /// Nanosecond CPU of both sides and the chosen cores' breakdown over the measured
    /// window. Absent in files written before it was measured.
    #[serde(default)]
    pub ledger: Option<CostLedger>,
    /// The server was an external one (a user's command, see `compare --external`), not
    /// a built-in backend: its `backend` names the external server.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
    /// Under several load agents: each one's part of `client`, whose counts sum to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<crate::topology::agent::AgentRecord>,
    /// The server's host when it ran on another one (`--topology ssh`): its ledger was
    /// read there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_host: Option<ServerHost>,
}

/// How a cell ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum CellStatus {
    /// Measured.
    Ok,
    /// The backend crashed, hung, never became ready or the load failed.
    Failed {
        /// What went wrong.
        reason: String,
        /// Last lines of the server's stderr.
        stderr_tail: String,
    },
    /// The backend cannot do this workload here (e.g. more connections than its cap).
    Unsupported {
        /// Why, recorded instead of a zero.
        reason: String,
    },
    /// Measured, but the client saw wrong or missing replies (echo mismatch, malformed or
    /// wrong responses, requests left unanswered): the numbers are not of a correct
    /// server, so the cell is never charted or compared. The counts are in the client's
    /// `errors`.
    Invalid {
        /// Which errors, with their counts.
        reason: String,
    },
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest value seen.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

/// What the load generator measured in one cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClientMeasure {
    /// Requests (or echo messages) completed in the measured window.
    pub requests: u64,
    /// Length of the measured window, seconds.
    pub duration_s: f64,
    /// Completed requests per second.
    pub throughput_rps: f64,
    /// Payload MB/s (10^6 bytes) client → server.
    pub mbps_out: f64,
    /// Payload MB/s server → client.
    pub mbps_in: f64,
    /// Latency; from the intended send time under open loop (corrected for coordinated
    /// omission), from the actual send under closed loop.
    pub latency_us: Percentiles,
    /// Open loop only: latency from the actual send (uncorrected).
    pub latency_uncorrected_us: Option<Percentiles>,
    /// HdrHistogram (µs) behind `latency_us`: V2 serialization with deflate, base64.
    pub histogram: Option<String>,
    /// Open loop only: the uncorrected histogram, same encoding.
    pub histogram_uncorrected: Option<String>,
    /// Open loop: requested total rate.
    pub target_rate: Option<f64>,
    /// Rate actually achieved.
    pub achieved_rate: f64,
    /// Open loop: 99th percentile of how far sends fell behind schedule, µs.
    pub schedule_lag_p99_us: Option<f64>,
    /// Each client thread's CPU utilization, 0..1.
    pub client_cpu_util: Vec<f64>,
    /// True when any client thread was ≥ 90% busy: the number may measure the client.
    pub client_bound: bool,
    /// Open loop: the achieved rate fell more than 1% short of the target, so the server
    /// (or the client) did not keep up and the cell is not compared as if it had.
    #[serde(default)]
    pub saturated: bool,
    /// Connections asked for (active plus idle).
    pub connections_requested: u64,
    /// Connections that were established.
    pub connections_established: u64,
    /// Churn: connect latency.
    pub connect_latency_us: Option<Percentiles>,
    /// Churn: connections completed per second.
    pub connections_per_s: Option<f64>,
    /// Idle: time to establish the idle connections, seconds.
    pub idle_establish_s: Option<f64>,
    /// Errors by kind (errno name or "short_reply", "garbled_reply", …).
    pub errors: BTreeMap<String, u64>,
    /// The generator's I/O engine ("epoll", "io_uring").
    pub engine: String,
}

/// What the server process spent over the measured window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ServerCost {
    /// User CPU seconds of the server process (all threads), tick-sampled (/proc/PID/stat,
    /// 10 ms ticks): the split, not the total, is what it is for; see the cell's `ledger`.
    pub cpu_user_s: f64,
    /// System CPU seconds of the server process, tick-sampled.
    pub cpu_sys_s: f64,
    /// User CPU µs per completed request, tick-sampled.
    pub cpu_user_us_per_req: f64,
    /// System CPU µs per completed request, tick-sampled.
    pub cpu_sys_us_per_req: f64,
    /// Share of the server cores kept busy, 0..1 per core summed.
    pub cpu_busy: f64,
    /// Syscalls entered by all server threads (perf tracepoint raw_syscalls:sys_enter).
    pub syscalls: Option<u64>,
    /// Syscalls per completed request.
    pub syscalls_per_req: Option<f64>,
    /// Why `syscalls` is absent, when it is.
    pub syscalls_absent: Option<String>,
    /// Voluntary context switches.
    pub ctx_voluntary: u64,
    /// Involuntary context switches.
    pub ctx_involuntary: u64,
    /// Context switches (both kinds) per request.
    pub ctx_per_req: f64,
    /// Peak resident set size, bytes.
    pub rss_peak_bytes: u64,
    /// RSS at the end of the window minus RSS before connections opened, per connection.
    pub rss_per_conn_bytes: Option<f64>,
    /// Growth of kernel TCP socket memory (/proc/net/sockstat "mem" pages × page size) from
    /// before the cell's connections opened to the end of the window. System-wide: on
    /// loopback it covers both ends of every connection.
    pub kernel_sock_mem_bytes: Option<u64>,
    /// Growth of kernel slab memory (/proc/meminfo "Slab:") over the same span: the
    /// sockets' own structures (tcp_sock, file, inode, dentry, epoll item), which idle
    /// connections hold while their buffers are empty. System-wide, so it covers both
    /// ends of every loopback connection and anything else the machine allocated
    /// meanwhile; may be negative when caches were reclaimed. Absent in files written
    /// before it was measured.
    #[serde(default)]
    pub kernel_slab_bytes: Option<i64>,
    /// The server's own counters for the whole run of the process.
    pub stats: Option<backend_api::ShardStats>,
}

impl ResultsFile {
    /// Cells that measured something.
    pub fn ok_cells(&self) -> impl Iterator<Item = &Cell> {
        self.cells
            .iter()
            .filter(|c| c.status == CellStatus::Ok && c.client.is_some())
    }
}
