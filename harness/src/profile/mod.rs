//! `harness profile`: where each backend's CPU time goes, at a fixed offered load.
//!
//! For each backend: its server (pinned as compare pins it) takes an unprofiled open-loop
//! run, for the ledger's CPU per request, then the same run with `perf record -e cpu-clock
//! -g -p PID` attached (kernel and user call chains, every thread of the server, io_uring's
//! io-threads included as they are threads of the process). The samples of the measured
//! window are folded with inferno, drawn as a flamegraph, and sorted into the categories of
//! `categories.toml`. A category's µs per request is its share of the samples times the
//! server's on-CPU ns over the same window (schedstat, every thread) divided by the
//! requests completed in it; samples × period is kept beside it as a cross-check.
//! Across backends: a stacked chart, differential flamegraphs and a table (markdown, JSON).

pub mod categories;
mod output;
pub mod perf;
pub mod run;

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use serde::{Deserialize, Serialize};

pub use categories::{Counts, Table, UNMATCHED};
pub use output::{write_outputs, Written};
use run::{LoadShape, WindowCost};

/// Profiles are refused above this many connections: perf's per-thread bookkeeping stays
/// cheap, and the point is the cost of a request, not of a crowd.
const MAX_PROFILE_CONNECTIONS: usize = 10_000;
/// A profile's total and the ledger's CPU per request should agree within this.
pub const LEDGER_TOLERANCE: f64 = 0.05;

/// Options of `harness profile`.
#[derive(Debug, Clone, Args)]
pub struct ProfileArgs {
    /// Backend to profile; repeat for several (see `harness list`). The first is the
    /// reference of the differential flamegraphs.
    #[arg(long = "backend", value_name = "NAME", required = true)]
    pub backends: Vec<String>,
    /// Traffic: echo or http (churn works too; stream and idle have no fixed rate).
    #[arg(long, default_value = "http")]
    pub workload: crate::load::Workload,
    /// Offered load in requests/s (open loop). Required: a profile at saturation measures
    /// batching, not the cost of a request.
    #[arg(long, allow_negative_numbers = true)]
    pub rate: f64,
    /// Active connections [default: the workload's, 64 for http].
    #[arg(long)]
    pub connections: Option<usize>,
    /// Most requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub depth: usize,
    /// Message size in bytes (echo).
    #[arg(long)]
    pub size: Option<usize>,
    /// Measured seconds of each run (unprofiled and profiled).
    #[arg(long, default_value_t = 3.0, allow_negative_numbers = true)]
    pub duration: f64,
    /// Warmup seconds before each run.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub warmup: f64,
    /// CPUs for the server (default: compare's split of the usable cores).
    #[arg(long, value_name = "LIST")]
    pub server_cores: Option<String>,
    /// CPUs for the load generator (default: the other cores).
    #[arg(long, value_name = "LIST")]
    pub client_cores: Option<String>,
    /// Extra differential flamegraph, BEFORE,AFTER (two profiled backends); repeatable.
    /// By default the first backend is compared with each other one.
    #[arg(long, value_name = "A,B")]
    pub diff: Vec<String>,
    /// Category table (TOML, in the format of src/profile/categories.toml) instead of the
    /// built-in one.
    #[arg(long, value_name = "FILE")]
    pub categories: Option<PathBuf>,
    /// Output directory: flamegraphs, folded stacks, chart, profile.json, profile.md.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Start the servers with the environment as it is (see `harness compare
    /// --keep-libc-memcpy`).
    #[arg(long)]
    pub keep_libc_memcpy: bool,
}

/// One category's cost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CategoryCost {
    /// Category id.
    pub id: String,
    /// Label.
    pub label: String,
    /// Samples in it.
    pub samples: u64,
    /// Share of the backend's samples.
    pub share: f64,
    /// µs of server CPU per request.
    pub us_per_req: f64,
}

/// One backend's profile.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendProfile {
    /// Backend name.
    pub backend: String,
    /// Samples in the measured window.
    pub samples: u64,
    /// Those samples' weight, ns of cpu-clock (samples × period): the unit of the folded
    /// file.
    pub sampled_ns: u64,
    /// The profiled run's window: requests, rate, CPU.
    pub profiled: WindowCost,
    /// The unprofiled run's window (the ledger, as compare measures it).
    pub unprofiled: WindowCost,
    /// Server on-CPU µs per request in the unprofiled window (schedstat, every thread): the
    /// total the categories add up to.
    pub total_us_per_req: f64,
    /// samples × period ÷ requests in the profiled window: the cost seen by the samples.
    pub sampled_us_per_req: f64,
    /// On-CPU µs per request of the profiled run over the unprofiled one, minus 1: what
    /// sampling cost the server.
    pub perf_overhead: f64,
    /// The ledger's CPU µs per request (unprofiled run, /proc ticks, as compare records it).
    pub ledger_us_per_req: f64,
    /// total ÷ ledger − 1.
    pub ledger_difference: f64,
    /// Categories in table order, unmatched last.
    pub categories: Vec<CategoryCost>,
    /// Most frequent leaf frames of unmatched samples.
    pub unmatched_leaves: Vec<(String, u64)>,
    /// Doubts: rate not met, client-bound, errors, ledger mismatch.
    pub flags: Vec<String>,
    /// Thread names of the server at the end of the profiled run.
    pub threads: Vec<String>,
}

/// A whole profile: what `profile.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileReport {
    /// Tool and version.
    pub tool: String,
    /// When it started (RFC 3339 UTC).
    pub started_at: String,
    /// `perf --version`.
    pub perf_version: String,
    /// Kernel release.
    pub kernel: String,
    /// The offered load, the same for every backend.
    pub shape: LoadShape,
    /// Sampling period of cpu-clock, ns.
    pub period_ns: u64,
    /// How samples become µs per request.
    pub method: String,
    /// One entry per backend, in the order given.
    pub backends: Vec<BackendProfile>,
}

/// Turns one backend's folded samples and windows into its profile.
pub fn breakdown(
    table: &Table,
    backend: &str,
    counts: &Counts,
    profiled: WindowCost,
    unprofiled: WindowCost,
    mut flags: Vec<String>,
    threads: Vec<String>,
) -> BackendProfile {
    let requests = profiled.requests.max(1) as f64;
    // The shares come from the profiled run; the cost they divide is the unprofiled run's,
    // so perf's own overhead (its sampling interrupts, charged to the server) stays out.
    let total_us = unprofiled.cpu_us_per_req();
    // Folded counts are ns of sampled cpu-clock (period-weighted samples).
    let weight = counts.total.max(1) as f64;
    let ledger = unprofiled.ledger_us_per_req();
    let difference = if ledger > 0.0 {
        total_us / ledger - 1.0
    } else {
        f64::NAN
    };
    // NaN (no ledger) is flagged too.
    if difference.is_nan() || difference.abs() > LEDGER_TOLERANCE {
        flags.push(format!(
            "ledger: the total {total_us:.2} µs/req differs from the ledger's \
             {ledger:.2} µs/req (unprofiled run, tick-sampled) by {:+.1}% (more than {:.0}%)",
            difference * 100.0,
            LEDGER_TOLERANCE * 100.0
        ));
    }
    BackendProfile {
        backend: backend.to_string(),
        samples: counts.total / perf::PERIOD_NS,
        sampled_ns: counts.total,
        profiled,
        unprofiled,
        total_us_per_req: total_us,
        sampled_us_per_req: counts.total as f64 / 1000.0 / requests,
        ledger_us_per_req: ledger,
        ledger_difference: difference,
        perf_overhead: if unprofiled.cpu_ns > 0 {
            profiled.cpu_us_per_req() / total_us - 1.0
        } else {
            f64::NAN
        },
        categories: counts
            .by_category
            .iter()
            .map(|(id, n)| CategoryCost {
                id: id.clone(),
                label: table.label(id),
                samples: *n / perf::PERIOD_NS,
                share: *n as f64 / weight,
                us_per_req: *n as f64 / weight * total_us,
            })
            .collect(),
        unmatched_leaves: counts.unmatched_leaves.clone(),
        flags,
        threads,
    }
}

/// Resolves cores as compare does: given lists, or its split of the usable cores.
fn cores(args: &ProfileArgs) -> anyhow::Result<(Vec<usize>, Vec<usize>)> {
    let sys = crate::sysinfo::SysRoot::default();
    let usable = backend_api::runner::usable_cores();
    let parse = |flag: &str, s: &str| crate::cores::parse_core_list(s).context(flag.to_string());
    let (s, c) = match (&args.server_cores, &args.client_cores) {
        (None, None) => crate::sysinfo::auto_split(&usable, &sys.smt_groups(&usable))?,
        (Some(s), Some(c)) => (parse("--server-cores", s)?, parse("--client-cores", c)?),
        (Some(s), None) => {
            let s = parse("--server-cores", s)?;
            let c = usable.iter().copied().filter(|x| !s.contains(x)).collect();
            (s, c)
        }
        (None, Some(c)) => {
            let c = parse("--client-cores", c)?;
            let s = usable.iter().copied().filter(|x| !c.contains(x)).collect();
            (s, c)
        }
    };
    crate::sysinfo::check_split(&s, &c, &usable)?;
    Ok((s, c))
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Runs `harness profile`.
pub fn run(args: ProfileArgs) -> anyhow::Result<()> {
    let table = match &args.categories {
        Some(p) => Table::parse(
            &std::fs::read_to_string(p)
                .with_context(|| format!("reading --categories {}", p.display()))?,
        )
        .with_context(|| format!("--categories {}", p.display()))?,
        None => Table::default_table()?,
    };
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!(
            "--rate {}: give the offered load in requests/s, above 0",
            args.rate
        );
    }
    if matches!(
        args.workload,
        crate::load::Workload::Stream | crate::load::Workload::Idle
    ) {
        bail!(
            "--workload {}: profiles need a fixed request rate; use http, echo or churn",
            args.workload
        );
    }
    let connections = args
        .connections
        .unwrap_or_else(|| args.workload.facts().defaults.connections);
    if connections > MAX_PROFILE_CONNECTIONS {
        bail!("--connections {connections}: profiles take at most {MAX_PROFILE_CONNECTIONS}");
    }
    let mut names: Vec<String> = Vec::new();
    for b in &args.backends {
        let backend = crate::registry::find(b).context("--backend")?;
        if let Err(u) = backend.probe() {
            bail!("--backend {b} is unsupported here: {u}");
        }
        if names.contains(b) {
            bail!("--backend {b} is given twice");
        }
        names.push(b.clone());
    }
    let diffs = diff_pairs(&names, &args.diff)?;
    let (server_cores, client_cores) = cores(&args)?;
    let shape = LoadShape {
        workload: args.workload,
        connections,
        depth: args.depth,
        size: args
            .size
            .unwrap_or_else(|| args.workload.facts().defaults.size),
        rate: args.rate,
        warmup_s: args.warmup,
        duration_s: args.duration,
        server_cores,
        client_cores,
    };
    run::validate(&shape)?;
    let perf = perf::check()?;
    std::fs::create_dir_all(&args.out).with_context(|| {
        format!(
            "creating {} (choose another with --out)",
            args.out.display()
        )
    })?;
    crate::rlimit::raise_nofile_to_hard();
    let (_, server_env) = crate::compare::memcpy_policy(args.keep_libc_memcpy);
    let report = profile_all(&perf, &table, &names, &shape, &server_env, &args.out)?;
    let written = write_outputs(&report, &table, &diffs, &args.out)?;
    print!("{}", output::markdown(&report, &table));
    for f in &written.files {
        println!("{}", f.display());
    }
    let flags: usize = report.backends.iter().map(|b| b.flags.len()).sum();
    if flags > 0 {
        eprintln!(
            "warning: {flags} flags (rate not met, ledger mismatch, …): see Flags in {}",
            args.out.join("profile.md").display()
        );
    }
    Ok(())
}

/// Profiles every backend in turn at `shape`, writing perf data and folded stacks into
/// `out`.
pub fn profile_all(
    perf: &perf::Perf,
    table: &Table,
    names: &[String],
    shape: &LoadShape,
    server_env: &[(String, String)],
    out: &std::path::Path,
) -> anyhow::Result<ProfileReport> {
    let exe = std::env::current_exe().context("locating the harness executable")?;
    let started_at = crate::compare::chrono_now();
    let mut backends = Vec::new();
    for name in names {
        eprintln!(
            "profiling {name} at {} req/s ({} s warmup + {} s, twice)",
            shape.rate, shape.warmup_s, shape.duration_s
        );
        let data = out.join(format!("{name}.perf.data"));
        let job = run::Job {
            exe: &exe,
            backend: name,
            shape,
            server_env,
            perf_data: &data,
        };
        let driven = run::drive_backend(perf, &job).with_context(|| format!("profiling {name}"))?;
        let folded = perf.fold(&data, driven.window_s.0, driven.window_s.1)?;
        let folded_path = out.join(format!("{name}.folded"));
        std::fs::write(&folded_path, &folded)
            .with_context(|| format!("writing {}", folded_path.display()))?;
        // The samples live on in the folded file; perf.data is large and machine-specific.
        let _ = std::fs::remove_file(&data);
        let counts = table.count_folded(&folded)?;
        if counts.total == 0 {
            bail!(
                "perf recorded no samples of {name} in the measured window: is the server on \
                 CPU at all at this rate?"
            );
        }
        backends.push(breakdown(
            table,
            name,
            &counts,
            driven.profiled,
            driven.baseline,
            driven.flags,
            driven.threads,
        ));
    }
    Ok(ProfileReport {
        tool: format!("ringside harness {}", env!("CARGO_PKG_VERSION")),
        started_at,
        perf_version: perf.version.clone(),
        kernel: kernel_release(),
        shape: shape.clone(),
        period_ns: perf::PERIOD_NS,
        method: format!(
            "perf record -e cpu-clock -c {} -g -p PID (every thread of the server, io-threads \
             included) on the second of two runs of the same load on the same server; a \
             category's µs/request = its share of the profiled window's samples × the server's \
             on-CPU ns per request in the first, unprofiled window (schedstat, all threads), so \
             perf's own overhead is left out; the ledger is that window's tick-sampled \
             user+system CPU per request, as compare records it",
            perf::PERIOD_NS
        ),
        backends,
    })
}

/// What `harness compare --profile DIR` profiles once its cells are done: every
/// open-loop shape of the run, with every compared backend.
pub struct ComparePlan {
    perf: perf::Perf,
    table: Table,
    shapes: Vec<(String, LoadShape)>,
    out: PathBuf,
}

/// Plans the profiles of `compare --profile`, before any cell runs: perf must work here and
/// the suite must have a fixed-rate cell.
pub fn plan_for_compare(
    cells: &[crate::compare::suite::PlannedCell],
    server_cores: &[usize],
    client_cores: &[usize],
    out: &std::path::Path,
) -> anyhow::Result<ComparePlan> {
    let mut shapes: Vec<(String, LoadShape)> = Vec::new();
    for c in cells {
        let w = &c.workload;
        let Some(rate) = w.rate else { continue };
        let workload = w.kind;
        if matches!(
            workload,
            crate::load::Workload::Stream | crate::load::Workload::Idle
        ) {
            continue;
        }
        let shape = LoadShape {
            workload,
            connections: w.connections,
            depth: w.depth,
            size: w.size,
            rate,
            warmup_s: w.warmup.as_secs_f64().min(2.0),
            duration_s: w.duration.as_secs_f64().min(5.0),
            server_cores: server_cores.to_vec(),
            client_cores: client_cores.to_vec(),
        };
        let name = format!(
            "{}-c{}-d{}-{}rps",
            shape.workload, shape.connections, shape.depth, rate as u64
        );
        if !shapes.iter().any(|(n, _)| *n == name) {
            run::validate(&shape)?;
            shapes.push((name, shape));
        }
    }
    if shapes.is_empty() {
        bail!(
            "--profile needs a fixed-rate cell (a `rate` in the suite) to profile at: a profile              at saturation measures batching, not the cost of a request; use a suite with a              rate sweep, or `harness profile --rate R`"
        );
    }
    Ok(ComparePlan {
        perf: perf::check()?,
        table: Table::default_table()?,
        shapes,
        out: out.to_path_buf(),
    })
}

/// Runs the planned profiles into `DIR/<shape>/` and prints where they went.
pub fn after_compare(
    plan: &ComparePlan,
    backends: &[String],
    server_env: &[(String, String)],
) -> anyhow::Result<()> {
    for (name, shape) in &plan.shapes {
        let dir = plan.out.join(name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating {} (choose another --profile)", dir.display()))?;
        let report = profile_all(&plan.perf, &plan.table, backends, shape, server_env, &dir)?;
        let diffs = diff_pairs(backends, &[])?;
        write_outputs(&report, &plan.table, &diffs, &dir)?;
        eprintln!("profile of {name}: {}", dir.join("profile.md").display());
    }
    Ok(())
}

/// The differential pairs: the first backend against each other one, plus `--diff A,B`.
fn diff_pairs(names: &[String], extra: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut pairs: Vec<(String, String)> = names
        .iter()
        .skip(1)
        .map(|b| (names[0].clone(), b.clone()))
        .collect();
    for d in extra {
        let (a, b) = d
            .split_once(',')
            .with_context(|| format!("--diff {d}: give two backends, BEFORE,AFTER"))?;
        let (a, b) = (a.trim().to_string(), b.trim().to_string());
        for x in [&a, &b] {
            if !names.contains(x) {
                bail!("--diff {d}: {x} is not among the --backend values");
            }
        }
        if a == b {
            bail!("--diff {d}: name two different backends");
        }
        if !pairs.contains(&(a.clone(), b.clone())) {
            pairs.push((a, b));
        }
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_pairs_default_to_the_first_backend() {
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let p = diff_pairs(&names, &["b,c".to_string(), "a,b".to_string()]).unwrap();
        let p: Vec<(&str, &str)> = p.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(p, vec![("a", "b"), ("a", "c"), ("b", "c")]);
        assert!(diff_pairs(&names, &["a,z".to_string()]).is_err());
        assert!(diff_pairs(&names, &["a".to_string()]).is_err());
    }

    #[test]
    fn breakdown_scales_shares_by_on_cpu_time() {
        let table = Table::parse(
            "[[category]]\nid='x'\nlabel='X'\nframes=['x']\n[[category]]\nid='y'\nlabel='Y'\nframes=['y']\n",
        )
        .unwrap();
        let p = perf::PERIOD_NS;
        let counts = table
            .count_folded(&format!("c;x {}\nc;y {}\nc;z {}\n", 30 * p, 10 * p, 10 * p))
            .unwrap();
        let w = |cpu_ns, ledger_cpu_s| WindowCost {
            requests: 1000,
            achieved_rate: 1000.0,
            seconds: 1.0,
            cpu_ns,
            ledger_cpu_s,
        };
        // 10 ms of CPU over 1000 requests: 10 µs each; the ledger says 9.9.
        let b = breakdown(
            &table,
            "t",
            &counts,
            w(11_000_000, 0.0),
            w(10_000_000, 0.0099),
            vec![],
            vec![],
        );
        let us: Vec<f64> = b.categories.iter().map(|c| c.us_per_req).collect();
        assert!(
            (us[0] - 6.0).abs() < 1e-9 && (us[1] - 2.0).abs() < 1e-9,
            "{us:?}"
        );
        assert_eq!(b.categories[2].id, UNMATCHED);
        assert!(
            (us[2] - 2.0).abs() < 1e-9,
            "unmatched samples are kept: {us:?}"
        );
        assert!(b.flags.is_empty(), "{:?}", b.flags);
        assert_eq!((b.samples, b.categories[0].samples), (50, 30));
        assert!((b.perf_overhead - 0.1).abs() < 1e-9, "{}", b.perf_overhead);
        // A 20% mismatch with the ledger is flagged.
        let off = breakdown(
            &table,
            "t",
            &counts,
            w(12_000_000, 0.0),
            w(12_000_000, 0.010),
            vec![],
            vec![],
        );
        assert!(
            off.flags.iter().any(|f| f.starts_with("ledger:")),
            "{:?}",
            off.flags
        );
    }
}
