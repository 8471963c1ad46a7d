//! The load generator: `harness load`, and the in-process API `harness compare` uses.
//!
//! One pinned thread per client core, each its own epoll event loop over nonblocking
//! sockets; closed loop (N connections × depth in flight) or open loop (a constant rate
//! with per-connection send schedules, latency corrected for coordinated omission); the
//! workloads of `workloads/`, one plug-in each; HDR histograms; and self-validation in
//! every result (achieved vs target rate, schedule lag, client CPU and `client_bound`,
//! connections established, errors by kind).
//!
//! In process:
//! ```no_run
//! use harness::load::{run_load, LoadConfig, Workload};
//! let mut cfg = LoadConfig::new("127.0.0.1:8080".parse().unwrap(), Workload::Http);
//! cfg.workload.connections = 64;
//! let report = run_load(&cfg)?;
//! println!("{}", report.summary());
//! # Ok::<(), harness::load::LoadError>(())
//! ```
//! To stop early (Ctrl-C), pass a [`StopSignal`] to [`run_load_until`] and fire it.

mod config;
mod engine;
mod error;
mod histogram;
mod json;
mod merge;
mod report;
mod spec;
mod sys;
mod worker;
pub mod workloads;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

pub use backend_api::StopSignal;
pub use config::{LoadConfig, FD_MARGIN};
pub use engine::{
    run_load, run_load_at, run_load_observed, run_load_until, WindowObserver, ENGINE,
};
pub use error::{errno_name, ClientError, LoadError};
pub use histogram::{fmt_ns, LatencySummary, NsHistogram, SerializedHistogram, HDR_ENCODING};
pub use json::{read_report, write_report};
pub use report::{
    ClientCost, ConnectionCounts, Flag, IdleReport, LoadReport, ReportConfig, RequestCounts,
    ScheduleCheck, ThreadReport, Throughput, WireTotals, CLIENT_BOUND_BUSY, SCHEMA_VERSION,
};
pub use spec::{
    WorkloadSpec, MAX_CONNECTIONS, MAX_DEPTH, MAX_DURATION, MAX_IDLE, MAX_INFLIGHT_BYTES, MAX_RATE,
    MAX_SIZE, MAX_WARMUP,
};
#[doc(hidden)]
pub use workloads::http::replies_for_fuzzing;
pub use workloads::Workload;

/// Options of `harness load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Server to load: IP:PORT or HOST:PORT. With --client-procs, a comma-separated list
    /// spreads the agents over several servers (agent i loads server i modulo the list),
    /// e.g. server processes that cannot each hold every connection.
    #[arg(long)]
    pub target: String,
    /// Traffic.
    #[arg(long, value_enum)]
    pub workload: Workload,
    /// Active connections (churn: concurrent connection slots) [default: 64; stream 4;
    /// churn 50].
    #[arg(long, short)]
    pub connections: Option<usize>,
    /// Requests in flight per connection (pipelined); under --rate, the most in flight
    /// [default: 1; stream 8 messages].
    #[arg(long)]
    pub depth: Option<usize>,
    /// Message size in bytes for echo, stream and idle [default: 64; stream 65536].
    #[arg(long)]
    pub size: Option<usize>,
    /// Open loop: total requests (churn: connections) per second. Without it the run is
    /// closed loop (saturation).
    #[arg(long, short = 'R', allow_negative_numbers = true)]
    pub rate: Option<f64>,
    /// Open loop at this many requests per second per connection (the total rate is
    /// --connections times it), spread evenly over the connections; the unit of
    /// `--workload sparse` [default for sparse: 2].
    #[arg(long, allow_negative_numbers = true, conflicts_with = "rate")]
    pub conn_rate: Option<f64>,
    /// Measured time after the warmup: seconds, or with a unit (500ms, 30s, 2m).
    #[arg(long, short, default_value = "10", allow_negative_numbers = true,
          value_parser = crate::duration::parse_secs)]
    pub duration: f64,
    /// Time run before measuring, excluded from every statistic (500ms, 2s).
    #[arg(long, default_value = "2", allow_negative_numbers = true,
          value_parser = crate::duration::parse_secs)]
    pub warmup: f64,
    /// Client cores, one pinned thread each, e.g. 1 or 2-3 [default: the last usable core].
    #[arg(long)]
    pub cores: Option<String>,
    /// Idle connections to hold open (idle workload) [default: 1000].
    #[arg(long)]
    pub idle: Option<usize>,
    /// Write the full report (with serialized histograms) as JSON to this file; `-` for
    /// standard output (the summary then goes to standard error).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the latency distribution as an HdrHistogram `.hgrm` file (milliseconds, as
    /// wrk2 prints it); `-` for standard output.
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,
    /// Stop after this many measured requests (or at the end of --duration).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Path for HTTP workloads.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Host header for HTTP workloads [default: the target as given].
    #[arg(long)]
    pub host: Option<String>,
    /// Time one connect may take before it counts as ETIMEDOUT (5s, 500ms).
    #[arg(long, default_value = "5", allow_negative_numbers = true,
          value_parser = crate::duration::parse_secs)]
    pub connect_timeout: f64,
    /// Time to wait for outstanding replies after the measured window (2s, 500ms).
    #[arg(long, default_value = "2", allow_negative_numbers = true,
          value_parser = crate::duration::parse_secs)]
    pub drain: f64,
    /// Where the load comes from: this process, or several agent processes.
    #[command(flatten)]
    pub clients: crate::topology::ClientArgs,
}

fn secs(flag: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|_| v.is_finite())
        .with_context(|| format!("--{flag} {v}: give a number of seconds, 0 or more"))
}

/// Resolves `--target`, preferring IPv4 (loopback IPv4 targets get source spreading).
fn resolve(target: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(a) = target.parse::<SocketAddr>() {
        return Ok(a);
    }
    let addrs: Vec<SocketAddr> = target
        .to_socket_addrs()
        .with_context(|| format!("--target {target}: give IP:PORT or HOST:PORT"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .with_context(|| format!("--target {target}: the name resolved to no address"))
}

impl LoadArgs {
    /// The config these options describe, with per-workload defaults filled in.
    pub fn to_config(&self) -> anyhow::Result<LoadConfig> {
        let first = self.target.split(',').next().unwrap_or_default().trim();
        let target = resolve(first)?;
        let w = self.workload;
        let mut spec = WorkloadSpec::new(w);
        if let Some(n) = self.connections {
            spec.connections = n;
        }
        if let Some(d) = self.depth {
            spec.depth = d;
        }
        if let Some(s) = self.size {
            anyhow::ensure!(
                w.uses_size(),
                "--size applies to --workload {}, not {w}",
                spec::names_where(|f| f.sized)
            );
            spec.size = s;
        }
        if let Some(r) = self.conn_rate {
            anyhow::ensure!(
                r.is_finite() && r > 0.0,
                "--conn-rate {r}: give requests/s per connection above 0 (e.g. 2)"
            );
        }
        spec.rate = self.rate.or_else(|| {
            self.conn_rate
                .or(w.facts().conn_rate)
                .map(|r| r * spec.connections as f64)
        });
        spec.duration = secs("duration", self.duration)?;
        spec.warmup = secs("warmup", self.warmup)?;
        if let Some(m) = self.idle {
            spec.idle = m;
        }
        spec.requests = self.requests;
        let mut cfg = LoadConfig::of(target, spec);
        cfg.host = self.host.clone().unwrap_or_else(|| first.to_string());
        cfg.path = self.path.clone();
        cfg.connect_timeout = secs("connect-timeout", self.connect_timeout)?;
        cfg.drain_timeout = secs("drain", self.drain)?;
        if let Some(list) = &self.cores {
            cfg.cores = crate::cores::parse_core_list(list)?;
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Runs the load in this process, or over `--client-procs` agent processes.
fn run_distributed_or_here(
    args: &LoadArgs,
    cfg: &LoadConfig,
    stop: &StopSignal,
) -> anyhow::Result<LoadReport> {
    let clients = &args.clients;
    clients.validate_for_load()?;
    let targets: Vec<&str> = args.target.split(',').map(str::trim).collect();
    if clients.in_process() {
        anyhow::ensure!(
            targets.len() == 1,
            "--target {}: several servers need several client processes (--client-procs)",
            args.target
        );
        return Ok(run_load_until(cfg, stop)?);
    }
    use crate::topology::Topology;
    let mut launches = match clients.topology {
        Topology::Loopback => crate::topology::local_launches(cfg, clients.client_procs)?,
        Topology::Ssh => crate::topology::ssh_launches(cfg, clients)?,
        Topology::Netns => anyhow::bail!(
            "harness load runs against a server it does not start: --topology netns applies \
             to harness compare (use --client-procs or --topology ssh here)"
        ),
    };
    if targets.len() > 1 {
        for (i, l) in launches.iter_mut().enumerate() {
            let t = targets[i % targets.len()];
            l.config.target = resolve(t)?;
            if args.host.is_none() {
                l.config.host = t.to_string();
            }
        }
    }
    struct Quiet;
    impl WindowObserver for Quiet {
        fn window_start(&self) {}
        fn window_end(&self) {}
    }
    let d = crate::topology::agent::run_agents(cfg, &launches, stop, &Quiet, Default::default())?;
    if !crate::cli::quiet() {
        for a in &d.agents {
            eprintln!(
                "  agent       {}: pid {}, {} connections ({} established), {} completed",
                a.label,
                a.host.pid,
                a.connections + a.idle,
                a.established,
                a.completed
            );
        }
    }
    Ok(d.report)
}

/// Runs `harness load`: prints the summary, writes `--json` if asked. SIGINT or SIGTERM
/// stops the run early and still reports; a second one exits at once.
pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    let cfg = args.to_config()?;
    let stop = StopSignal::new().context("creating the stop eventfd")?;
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("installing SIGINT/SIGTERM handlers")?;
    let handle = signals.handle();
    let watcher = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("load-signals".into())
            .spawn(move || {
                let mut forever = signals.forever();
                if forever.next().is_some() {
                    stop.fire();
                    eprintln!("interrupted: stopping (Ctrl-C again exits at once)");
                }
                if forever.next().is_some() {
                    eprintln!("interrupted again: exiting now, without a report");
                    std::process::exit(130);
                }
            })
            .context("spawning the signal thread")?
    };
    let result = run_distributed_or_here(&args, &cfg, &stop);
    handle.close();
    let _ = watcher.join();
    let report = result?;
    let dash = |p: &Option<PathBuf>| p.as_deref() == Some(std::path::Path::new("-"));
    // Standard output carries the one file asked for there; the summary moves aside.
    let to_stderr = dash(&args.json) || dash(&args.hgrm);
    let note = |s: String| {
        if to_stderr {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    };
    if to_stderr {
        eprint!("{}", report.summary());
    } else {
        print!("{}", report.summary());
    }
    if let Some(path) = &args.json {
        if dash(&args.json) {
            let mut out = std::io::stdout().lock();
            serde_json::to_writer_pretty(&mut out, &report)
                .context("writing the JSON report to standard output")?;
            std::io::Write::write_all(&mut out, b"\n")
                .context("writing the JSON report to standard output")?;
        } else {
            write_report(path, &report)?;
            note(format!("  json        {}", path.display()));
        }
    }
    if let Some(path) = &args.hgrm {
        let h = report
            .latency
            .hdr
            .decode()
            .context("decoding this run's latency histogram for --hgrm")?;
        let text = crate::report::hgrm::percentile_distribution(&h, 1e6);
        if dash(&args.hgrm) {
            std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes())
                .context("writing the .hgrm to standard output")?;
        } else {
            std::fs::write(path, text).with_context(|| {
                format!("writing --hgrm {} (choose another file)", path.display())
            })?;
            note(format!("  hgrm        {}", path.display()));
        }
    }
    Ok(())
}
