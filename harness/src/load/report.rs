//! [`LoadReport`]: everything one load run measured, with how it was measured and whether
//! the numbers can be trusted. Serialized as-is into `--json` files and embedded by
//! `harness compare`; printed for people by [`LoadReport::summary`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::histogram::{fmt_ns, LatencySummary};
use super::Workload;

/// Version of the report schema; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// A client thread this busy (or busier) may be the bottleneck: the run is `client_bound`.
pub const CLIENT_BOUND_BUSY: f64 = 0.90;

/// One load run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// [`SCHEMA_VERSION`] of the writer.
    pub schema_version: u32,
    /// Writer, e.g. "ringside harness 0.1.0".
    pub tool: String,
    /// The generator's I/O engine: `"epoll"` (level-triggered for keep-alive connections,
    /// edge-triggered for churn).
    pub engine: String,
    /// When the measured clock started, seconds since the Unix epoch.
    pub started_at_unix_s: f64,
    /// What was asked for.
    pub config: ReportConfig,
    /// Length of the measured window, seconds (the duration, unless the run was cut
    /// short or a `requests` cap ended it early).
    pub measured_s: f64,
    /// True when the run was stopped early (Ctrl-C, a stop signal); numbers cover the
    /// part that ran.
    pub interrupted: bool,
    /// Requests of the measured window.
    pub requests: RequestCounts,
    /// Rates over the measured window.
    pub throughput: Throughput,
    /// Latency: from the intended send time under open loop (corrected for coordinated
    /// omission), from the actual send under closed loop. Churn: from the request write
    /// (closed loop) or the intended connection start (open loop) to EOF.
    pub latency: LatencySummary,
    /// Open loop only: latency from the actual send (uncorrected).
    pub latency_uncorrected: Option<LatencySummary>,
    /// Open loop only: target versus achieved rate and how far sends fell behind.
    pub schedule: Option<ScheduleCheck>,
    /// Time from connect() to established. Churn: connections of measured requests;
    /// other workloads: every connection opened (before the window, and reconnects).
    pub connect_latency: LatencySummary,
    /// Connections asked for versus established.
    pub connections: ConnectionCounts,
    /// Idle workload only: the idle connections.
    pub idle: Option<IdleReport>,
    /// Whole-run counters (warmup and drain included), to cross-check with the server's
    /// own counters.
    pub totals: WireTotals,
    /// Errors by kind over the whole run (warmup and drain included, so none is hidden):
    /// errno names (`ECONNREFUSED`, `ECONNRESET`, `ETIMEDOUT`, `EADDRNOTAVAIL`, …) or
    /// `echo_mismatch`, `short_reply`, `garbled_reply`, `http_status_NNN`,
    /// `closed_by_server`, `idle_closed_by_server`, `no_content_length`,
    /// `unsolicited_data`, `unanswered_at_end`.
    pub errors: BTreeMap<String, u64>,
    /// Sum of `errors`.
    pub errors_total: u64,
    /// Each client thread over the measured window.
    pub threads: Vec<ThreadReport>,
    /// The generator's own cost over the measured window.
    pub client: ClientCost,
    /// True when any client thread was at least 90% busy: the numbers may measure the load
    /// generator rather than the server.
    pub client_bound: bool,
    /// Everything that makes these numbers doubtful, each with a message.
    pub flags: Vec<Flag>,
    /// Under several load agents (`--client-procs`, `--topology netns`): each one's part,
    /// whose counts sum to this report's. Empty for a run in one process.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<crate::topology::agent::AgentRecord>,
}

/// The run's parameters, as used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportConfig {
    /// Workload.
    pub workload: Workload,
    /// `"closed"` (no rate: N connections × depth in flight) or `"open"` (constant rate).
    pub mode: String,
    /// Target address.
    pub target: SocketAddr,
    /// Host header (HTTP workloads).
    pub host: String,
    /// Path requested (HTTP workloads).
    pub path: String,
    /// Active connections, or concurrent slots for churn.
    pub connections: usize,
    /// Requests in flight per connection (most in flight, under open loop).
    pub depth: usize,
    /// Message size in bytes (echo, stream, idle); 0 where it does not apply.
    pub size: usize,
    /// Open loop: target total rate, requests/s.
    pub rate: Option<f64>,
    /// Measured duration asked for, seconds.
    pub duration_s: f64,
    /// Warmup excluded from every statistic, seconds.
    pub warmup_s: f64,
    /// Client cores, one pinned thread each.
    pub cores: Vec<usize>,
    /// Client threads actually run (at most one per connection).
    pub threads: usize,
    /// Idle connections (idle workload).
    pub idle: usize,
    /// Cap on measured requests, if any.
    pub requests: Option<u64>,
    /// Connect timeout, seconds.
    pub connect_timeout_s: f64,
    /// Drain timeout after the window, seconds.
    pub drain_timeout_s: f64,
    /// Source addresses were spread over 127.0.0.0/8 (loopback IPv4 targets).
    pub source_spread: bool,
    /// RLIMIT_NOFILE soft limit in force during the run.
    pub nofile_limit: u64,
}

/// Requests whose send (intended send, under open loop) fell in the measured window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    /// Sent (churn: connections started).
    pub sent: u64,
    /// Answered correctly.
    pub completed: u64,
    /// Failed: an error reply, a reset or mismatch on their connection, or unanswered.
    pub failed: u64,
    /// Of `failed`: still unanswered when the drain timed out.
    pub unanswered: u64,
    /// Open loop: scheduled but never sent (the generator or connections fell behind).
    pub unsent: u64,
    /// Sent again on a new connection after the server closed one gracefully.
    pub requeued: u64,
}

/// Rates over the measured window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Completed requests per second (churn: completed connections per second; stream:
    /// messages of `size` bytes per second).
    pub requests_per_s: f64,
    /// Bytes written in the window.
    pub bytes_out: u64,
    /// Bytes read in the window.
    pub bytes_in: u64,
    /// MB/s (10^6 bytes) client → server.
    pub mb_per_s_out: f64,
    /// MB/s server → client.
    pub mb_per_s_in: f64,
    /// Churn only: connections established per second.
    pub connections_per_s: Option<f64>,
}

/// Open-loop self-check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleCheck {
    /// Requested total rate, requests/s.
    pub target_rate: f64,
    /// Completed requests per second in the window.
    pub achieved_rate: f64,
    /// `achieved_rate / target_rate`.
    pub achieved_ratio: f64,
    /// 99th percentile of actual minus intended send time, ns.
    pub lag_p99_ns: u64,
    /// How far sends fell behind their intended time.
    pub lag: LatencySummary,
}

impl ScheduleCheck {
    /// The check of a run offered `target` requests/s that completed `achieved` a second,
    /// its sends `lag` behind their intended times.
    pub fn of(target: f64, achieved: f64, lag: LatencySummary) -> ScheduleCheck {
        ScheduleCheck {
            target_rate: target,
            achieved_rate: achieved,
            achieved_ratio: achieved / target,
            lag_p99_ns: lag.p99_ns,
            lag,
        }
    }
}

/// Connections asked for versus established.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectionCounts {
    /// Connections asked for: active plus idle (churn: concurrent slots).
    pub requested: u64,
    /// Active and idle connections open when the measured clock started (churn: slots).
    pub established: u64,
    /// Successful connects over the whole run.
    pub connects_ok: u64,
    /// Failed connects over the whole run.
    pub connects_failed: u64,
    /// Active connections opened again after a failure or a server close.
    pub reconnects: u64,
    /// Connections the server closed gracefully (`Connection: close` on keep-alive).
    pub server_closes: u64,
    /// Time to open every connection before the measured clock started, seconds.
    pub establish_s: f64,
    /// One extra connection opened and closed before the run to check the target
    /// answers (counted by the server, not here).
    pub preflight: u64,
}

/// The idle connections of an idle run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct IdleReport {
    /// Idle connections asked for.
    pub requested: u64,
    /// Established.
    pub established: u64,
    /// Failed to connect.
    pub failed: u64,
    /// Closed by the server while held.
    pub lost: u64,
    /// Time to establish them all (or give up), seconds.
    pub establish_s: f64,
}

/// Whole-run counters, warmup and drain included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireTotals {
    /// Requests written (churn: one per connection; stream: complete messages).
    pub requests_sent: u64,
    /// Replies received and framed (errors included).
    pub replies: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Bytes read.
    pub bytes_in: u64,
}

/// One client thread over the measured window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadReport {
    /// Thread index.
    pub thread: usize,
    /// Core it was pinned to.
    pub core: usize,
    /// Active connections it ran.
    pub connections: usize,
    /// Idle connections it held.
    pub idle: usize,
    /// Share of the window it was on CPU (user + system), 0..1.
    pub cpu_busy: f64,
    /// User CPU seconds.
    pub user_s: f64,
    /// System CPU seconds.
    pub system_s: f64,
    /// Voluntary context switches.
    pub voluntary_switches: u64,
    /// Involuntary context switches (preemption: another task wanted the core).
    pub involuntary_switches: u64,
    /// System calls it made.
    pub syscalls: u64,
    /// Requests it completed.
    pub completed: u64,
}

/// The generator's own cost over the measured window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientCost {
    /// User CPU seconds, all client threads.
    pub user_s: f64,
    /// System CPU seconds, all client threads.
    pub system_s: f64,
    /// (user + system) µs per completed request.
    pub cpu_us_per_request: f64,
    /// System calls made, all client threads (counted by the generator itself).
    pub syscalls: u64,
    /// System calls per completed request.
    pub syscalls_per_request: f64,
    /// epoll_wait calls.
    pub epoll_wait: u64,
    /// epoll_ctl calls.
    pub epoll_ctl: u64,
    /// read calls.
    pub read: u64,
    /// write calls.
    pub write: u64,
    /// Connection setup and teardown calls (socket, setsockopt, bind, connect,
    /// getsockopt, close).
    pub connection: u64,
}

/// Something that makes a run's numbers doubtful.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flag {
    /// Stable code: `client_bound`, `rate_not_met`, `schedule_lag`,
    /// `connections_missing`, `errors`, `unanswered`, `interrupted`, `no_source_spread`,
    /// `few_requests`, `agents_start_skew` (load agents started apart).
    pub code: String,
    /// What happened and what it means.
    pub message: String,
}

impl LoadReport {
    /// True when a flag with this code is set.
    pub fn has_flag(&self, code: &str) -> bool {
        self.flags.iter().any(|f| f.code == code)
    }

    /// The human summary: throughput, percentiles, errors and flags.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let c = &self.config;
        let _ = writeln!(
            s,
            "{} against {} ({} loop{}), {} connection{} x depth {}{}, {} thread{} on core{} {}, engine {}",
            c.workload,
            c.target,
            c.mode,
            c.rate.map(|r| format!(" at {r} req/s")).unwrap_or_default(),
            c.connections,
            if c.connections == 1 { "" } else { "s" },
            c.depth,
            if c.workload.uses_size() { format!(", {} B messages", c.size) } else { String::new() },
            c.threads,
            if c.threads == 1 { "" } else { "s" },
            if c.cores.len() == 1 { "" } else { "s" },
            crate::cores::format_core_list(&c.cores),
            self.engine,
        );
        let _ = writeln!(
            s,
            "  window      {:.2} s measured after {:.2} s warmup{}",
            self.measured_s,
            c.warmup_s,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
        let r = &self.requests;
        let unit = match c.workload {
            Workload::Churn => "conn/s",
            Workload::Stream => "msg/s",
            _ => "req/s",
        };
        let _ = writeln!(
            s,
            "  throughput  {:.1} {unit}  ({} completed, {} failed of {} sent{}{})",
            self.throughput.requests_per_s,
            r.completed,
            r.failed,
            r.sent,
            if r.unsent > 0 {
                format!(", {} unsent", r.unsent)
            } else {
                String::new()
            },
            if r.requeued > 0 {
                format!(", {} requeued", r.requeued)
            } else {
                String::new()
            },
        );
        let _ = writeln!(
            s,
            "  transfer    out {:.2} MB/s, in {:.2} MB/s",
            self.throughput.mb_per_s_out, self.throughput.mb_per_s_in
        );
        let lat = |l: &LatencySummary| {
            format!(
                "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                fmt_ns(l.p50_ns),
                fmt_ns(l.p90_ns),
                fmt_ns(l.p99_ns),
                fmt_ns(l.p99_9_ns),
                fmt_ns(l.max_ns)
            )
        };
        let label = if self.latency_uncorrected.is_some() {
            "latency     (corrected) "
        } else {
            "latency     "
        };
        let _ = writeln!(s, "  {label}{}", lat(&self.latency));
        if let Some(u) = &self.latency_uncorrected {
            let _ = writeln!(s, "  latency     (uncorrected) {}", lat(u));
        }
        if let Some(sc) = &self.schedule {
            let _ = writeln!(
                s,
                "  schedule    target {:.1} req/s, achieved {:.1} ({:.2}%), lag p99 {} max {}",
                sc.target_rate,
                sc.achieved_rate,
                sc.achieved_ratio * 100.0,
                fmt_ns(sc.lag_p99_ns),
                fmt_ns(sc.lag.max_ns)
            );
        }
        if self.connect_latency.count > 0 {
            let _ = writeln!(s, "  connect     {}", lat(&self.connect_latency));
        }
        let cn = &self.connections;
        let _ = writeln!(
            s,
            "  connections {} requested, {} established in {:.3} s ({} connects ok, {} failed, {} reconnects)",
            cn.requested, cn.established, cn.establish_s, cn.connects_ok, cn.connects_failed, cn.reconnects
        );
        if let Some(i) = &self.idle {
            let _ = writeln!(
                s,
                "  idle        {} of {} established in {:.3} s, {} failed, {} lost",
                i.established, i.requested, i.establish_s, i.failed, i.lost
            );
        }
        let busy: Vec<String> = self
            .threads
            .iter()
            .map(|t| format!("core {} {:.0}%", t.core, t.cpu_busy * 100.0))
            .collect();
        let _ = writeln!(
            s,
            "  client      {} busy; {:.2} µs CPU and {:.2} syscalls per request",
            busy.join(", "),
            self.client.cpu_us_per_request,
            self.client.syscalls_per_request
        );
        if self.errors.is_empty() {
            let _ = writeln!(s, "  errors      none");
        } else {
            let e: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(s, "  errors      {}", e.join(", "));
        }
        if self.flags.is_empty() {
            let _ = writeln!(s, "  flags       none");
        } else {
            for f in &self.flags {
                let _ = writeln!(s, "  flag        {}: {}", f.code, f.message);
            }
        }
        s
    }
}
