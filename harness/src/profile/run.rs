//! Driving one backend for a profile: the only place `profile` touches the server process
//! (compare's `harness serve` child) and the load generator.
//!
//! One server per backend, pinned as compare pins it, takes two runs of the same open-loop
//! load: the first unprofiled, for the ledger's CPU per request (what compare would
//! record); the second with `perf record -p` attached before its warmup, whose measured
//! window selects the samples. CPU time is counted on both windows as compare counts it
//! (/proc ticks) and in nanoseconds (/proc/PID/task/*/schedstat, every thread).

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context};
use backend_api::StopSignal;
use serde::{Deserialize, Serialize};

use super::perf::{monotonic_s, Perf};
use crate::compare::cost;
use crate::compare::server::{ServerProcess, ServerSpec};
use crate::load::{LoadConfig, LoadReport, WindowObserver, Workload};

/// How long a server may take to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The offered load and layout, the same for every backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadShape {
    /// Workload name.
    pub workload: Workload,
    /// Active connections.
    pub connections: usize,
    /// Most requests in flight per connection.
    pub depth: usize,
    /// Message size (echo).
    pub size: usize,
    /// Offered rate, requests/s (open loop).
    pub rate: f64,
    /// Warmup before each measured window, seconds.
    pub warmup_s: f64,
    /// Each measured window, seconds.
    pub duration_s: f64,
    /// Server cores.
    pub server_cores: Vec<usize>,
    /// Load-generator cores.
    pub client_cores: Vec<usize>,
}

/// The server's CPU over one measured window.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct WindowCost {
    /// Requests completed in the window.
    pub requests: u64,
    /// Completed requests per second.
    pub achieved_rate: f64,
    /// Window length, seconds.
    pub seconds: f64,
    /// On-CPU ns of every server thread (schedstat).
    pub cpu_ns: u64,
    /// User + system seconds from /proc/PID/stat, tick-sampled: compare's ledger.
    pub ledger_cpu_s: f64,
}

impl WindowCost {
    /// On-CPU µs per request (schedstat).
    pub fn cpu_us_per_req(&self) -> f64 {
        self.cpu_ns as f64 / 1000.0 / self.requests.max(1) as f64
    }

    /// The ledger's CPU µs per request (ticks), as compare records it.
    pub fn ledger_us_per_req(&self) -> f64 {
        self.ledger_cpu_s * 1e6 / self.requests.max(1) as f64
    }
}

/// One backend's two runs.
pub struct Driven {
    /// The unprofiled run.
    pub baseline: WindowCost,
    /// The profiled run.
    pub profiled: WindowCost,
    /// CLOCK_MONOTONIC seconds of the profiled window's edges.
    pub window_s: (f64, f64),
    /// The load generator's doubts about either run (`rate_not_met`, `client_bound`, …).
    pub flags: Vec<String>,
    /// Threads of the server during the profiled window (names), io-threads included.
    pub threads: Vec<String>,
}

/// What to run.
pub struct Job<'a> {
    /// `harness` executable (serves the backend).
    pub exe: &'a Path,
    /// Backend name.
    pub backend: &'a str,
    /// Load and layout.
    pub shape: &'a LoadShape,
    /// Server environment (GLIBC_TUNABLES where libc needs it).
    pub server_env: &'a [(String, String)],
    /// Where perf writes its samples.
    pub perf_data: &'a Path,
}

#[derive(Default)]
struct Edge {
    mono_s: f64,
    cpu_ns: u64,
    ticks_s: f64,
}

struct Observer {
    pid: u32,
    start: Mutex<Option<Edge>>,
    end: Mutex<Option<Edge>>,
}

fn edge(pid: u32) -> Edge {
    let mono_s = monotonic_s();
    Edge {
        mono_s,
        cpu_ns: on_cpu_ns(pid).unwrap_or(0),
        ticks_s: cost::snapshot(pid)
            .map(|s| s.user_s + s.sys_s)
            .unwrap_or(0.0),
    }
}

impl WindowObserver for Observer {
    fn window_start(&self) {
        *self.start.lock().unwrap_or_else(|p| p.into_inner()) = Some(edge(self.pid));
    }
    fn window_end(&self) {
        *self.end.lock().unwrap_or_else(|p| p.into_inner()) = Some(edge(self.pid));
    }
}

/// On-CPU ns of every thread of `pid`: the first field of each task's schedstat.
pub fn on_cpu_ns(pid: u32) -> std::io::Result<u64> {
    let mut total = 0u64;
    for task in fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        if let Ok(s) = fs::read_to_string(task.path().join("schedstat")) {
            total += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|t| fs::read_to_string(t.path().join("comm")).ok())
                .map(|s| s.trim().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn load_config(shape: &LoadShape, addr: SocketAddr) -> LoadConfig {
    let mut cfg = LoadConfig::new(addr, shape.workload);
    cfg.workload.connections = shape.connections;
    cfg.workload.depth = shape.depth;
    cfg.workload.size = shape.size;
    cfg.workload.rate = Some(shape.rate);
    cfg.workload.duration = Duration::from_secs_f64(shape.duration_s);
    cfg.workload.warmup = Duration::from_secs_f64(shape.warmup_s);
    cfg.cores = shape.client_cores.clone();
    cfg
}

/// Checks a load shape before any server starts: the error names the flag.
pub fn validate(shape: &LoadShape) -> anyhow::Result<()> {
    let cfg = load_config(shape, SocketAddr::from(([127, 0, 0, 1], 1)));
    cfg.validate()?;
    backend_api::runner::check_cores(&shape.client_cores).context("--client-cores")?;
    backend_api::runner::check_cores(&shape.server_cores).context("--server-cores")?;
    Ok(())
}

/// One load run against the running server, bounded by a watchdog.
fn drive(
    server: &mut ServerProcess,
    shape: &LoadShape,
    what: &str,
) -> anyhow::Result<(LoadReport, Edge, Edge)> {
    let cfg = load_config(shape, server.addr);
    let obs = Observer {
        pid: server.pid(),
        start: Mutex::new(None),
        end: Mutex::new(None),
    };
    let stop = StopSignal::new().context("creating a stop signal")?;
    let budget = Duration::from_secs_f64(shape.warmup_s + shape.duration_s + 30.0);
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let expired =
                finished.recv_timeout(budget) == Err(std::sync::mpsc::RecvTimeoutError::Timeout);
            if expired {
                stop.fire();
            }
            expired
        })
    };
    let report = crate::load::run_load_observed(&cfg, &stop, &obs);
    drop(done);
    let timed_out = watchdog.join().unwrap_or(false);
    if !server.is_alive() {
        bail!(
            "the server exited during the {what} run: {}",
            server.stderr_tail()
        );
    }
    if timed_out {
        bail!("the {what} run exceeded its time budget of {budget:.0?}");
    }
    let report = report.with_context(|| format!("load generator ({what} run)"))?;
    let start = obs.start.into_inner().unwrap_or_else(|p| p.into_inner());
    let end = obs.end.into_inner().unwrap_or_else(|p| p.into_inner());
    match (start, end) {
        (Some(s), Some(e)) => Ok((report, s, e)),
        _ => bail!("the {what} run ended before its measured window closed"),
    }
}

fn window(report: &LoadReport, s: &Edge, e: &Edge) -> WindowCost {
    WindowCost {
        requests: report.requests.completed,
        achieved_rate: report
            .schedule
            .as_ref()
            .map_or(report.throughput.requests_per_s, |c| c.achieved_rate),
        seconds: e.mono_s - s.mono_s,
        cpu_ns: e.cpu_ns.saturating_sub(s.cpu_ns),
        ledger_cpu_s: e.ticks_s - s.ticks_s,
    }
}

/// The load generator's doubts about a run (`rate_not_met` below 99% of the target,
/// `schedule_lag`, `client_bound`, …), and client-side errors.
fn flags(report: &LoadReport, what: &str) -> Vec<String> {
    let mut out: Vec<String> = report
        .flags
        .iter()
        .map(|f| format!("{what}: {}: {}", f.code, f.message))
        .collect();
    if report.errors_total > 0 && !report.has_flag("errors") {
        out.push(format!(
            "{what}: errors: {} client-side errors",
            report.errors_total
        ));
    }
    out
}

/// Runs one backend: server up, unprofiled run, profiled run, server down.
pub fn drive_backend(perf: &Perf, job: &Job<'_>) -> anyhow::Result<Driven> {
    let spec = ServerSpec {
        exe: job.exe.to_path_buf(),
        backend: job.backend.to_string(),
        service: job.shape.workload.service().as_str().to_string(),
        cores: crate::cores::format_core_list(&job.shape.server_cores),
        env: job.server_env.to_vec(),
        netns: None,
        ssh: None,
    };
    let mut server = ServerProcess::start(&spec, Duration::from_secs(15))
        .with_context(|| format!("starting {}", job.backend))?;
    let (r0, s0, e0) = drive(&mut server, job.shape, "unprofiled")?;
    let mut rec = perf.record(server.pid(), job.perf_data)?;
    let profiled = drive(&mut server, job.shape, "profiled");
    let threads = thread_names(server.pid());
    let perf_alive = rec.is_running();
    let data = rec.stop();
    let tail = server.stderr_tail();
    server
        .stop(STOP_TIMEOUT)
        .with_context(|| format!("stopping {}: {tail}", job.backend))?;
    let (r1, s1, e1) = profiled?;
    let data = data.context("perf record")?;
    if !perf_alive {
        bail!(
            "perf record exited before the profiled run ended; its samples in {} miss the end \
             of the window",
            data.display()
        );
    }
    let mut all_flags = flags(&r0, "unprofiled");
    all_flags.extend(flags(&r1, "profiled"));
    Ok(Driven {
        baseline: window(&r0, &s0, &e0),
        profiled: window(&r1, &s1, &e1),
        window_s: (s1.mono_s, e1.mono_s),
        flags: all_flags,
        threads,
    })
}
