//! `harness compare`: the one command that runs a fair comparison and keeps every number
//! it measures.
//!
//! For every cell (backend × workload × repeat, repeats interleaved across backends) it
//! starts the backend as a child `harness serve` pinned to the server cores, drives it
//! from this process pinned to the client cores, takes the server's cost over the measured
//! window only, stops the server, and rewrites the results file atomically.

mod adaptive;
mod calibrate;
mod cell;
pub mod cgroup;
pub mod cost;
pub mod external;
mod manifest;
pub mod remote;
pub mod server;
pub mod suite;
pub mod summary;
mod window;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use backend_api::runner::usable_cores;
use backend_api::StopSignal;
use clap::Args;

use crate::results::{
    write_atomic, Plan, ResultsFile, RunState, SkippedBackend, WorkloadKind, SCHEMA_VERSION,
};
use crate::sysinfo::{auto_split, check_split, SysRoot};
use suite::Suite;

/// Options of `harness compare`.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Run the quick suite (every workload once, short): under a minute on 2 cores.
    #[arg(long, conflicts_with = "suite")]
    pub quick: bool,
    /// Run a suite file (TOML; see suites/ for the built-in ones and an example for
    /// benchmark boxes).
    #[arg(long, value_name = "FILE")]
    pub suite: Option<PathBuf>,
    /// Backends to compare, comma-separated (default: the suite's list, else every backend
    /// available here; see `harness list`).
    #[arg(long, value_name = "LIST")]
    pub backends: Option<String>,
    /// Only these workloads, comma-separated: echo, http, churn, stream, idle, sparse.
    #[arg(long, value_name = "LIST")]
    pub workloads: Option<String>,
    /// Repeats per cell (default: the suite's, 3 for the default suite).
    #[arg(long)]
    pub repeats: Option<u32>,
    /// Measured time of every cell, overriding the suite's: seconds or with a unit
    /// (500ms, 30s, 2m).
    #[arg(long, value_parser = crate::duration::parse_secs)]
    pub duration: Option<f64>,
    /// Warmup of every cell, overriding the suite's (250ms, 2s).
    #[arg(long, value_parser = crate::duration::parse_secs)]
    pub warmup: Option<f64>,
    /// CPUs for the server under test, e.g. 0 or 0-7 (default: half the usable cores,
    /// SMT siblings kept together).
    #[arg(long, value_name = "LIST")]
    pub server_cores: Option<String>,
    /// CPUs for the load generator (default: the other half).
    #[arg(long, value_name = "LIST")]
    pub client_cores: Option<String>,
    /// Directory for the results file (and plots/ beside it).
    #[arg(long, value_name = "DIR", default_value = "results")]
    pub out: PathBuf,
    /// Do not render plots at the end.
    #[arg(long)]
    pub no_plots: bool,
    /// Start the servers with the environment as it is even where this machine's libc
    /// copies ~30x slower at some buffer distances (see `harness doctor`). By default
    /// compare raises glibc's rep-movsb threshold for its servers there, so that no backend
    /// is ranked by where malloc happened to put its buffers; the manifest records it.
    #[arg(long)]
    pub keep_libc_memcpy: bool,
    /// After the cells, profile every backend at each fixed-rate shape of the suite with
    /// perf (see `harness profile`), into DIR/<shape>/.
    #[arg(long, value_name = "DIR")]
    pub profile: Option<PathBuf>,
    /// Adaptive repeats: after a shape's planned repeats, run more rounds (every backend,
    /// interleaved) until each backend's CPU/req ratio to --reference has a 95% interval
    /// within --ci-target, up to this many repeats in all (default: the planned repeats,
    /// i.e. no extra rounds).
    #[arg(long, value_name = "N")]
    pub max_repeats: Option<u32>,
    /// Relative half-width of the ratio's interval that ends adaptive repeats, in percent.
    #[arg(long, value_name = "PCT", default_value_t = 3.0)]
    pub ci_target: f64,
    /// Backend the summary's verdicts compare every other backend to.
    #[arg(long, value_name = "BACKEND", default_value = crate::analysis::stats::DEFAULT_REFERENCE)]
    pub reference: String,
    /// An external server measured beside the backends, as NAME=COMMAND (it speaks
    /// HTTP) or NAME:SERVICES=COMMAND (SERVICES: echo, http or echo,http); repeatable.
    /// The command is split with shell quoting rules and run without a shell (write
    /// `sh -c '...'` for one); `{addr}`, `{port}` and `{cores}` are replaced by the
    /// address and port the harness chose and the server cores. It is started pinned to
    /// the server cores in its own process group, must accept on the port within
    /// --ready-timeout, and is stopped with SIGTERM to the group. Cells of a service it
    /// does not speak are recorded unsupported. Example:
    /// --external 'nginx=scripts/external/nginx.sh {port} {cores}'
    #[arg(long = "external", value_name = "NAME[:SERVICES]=COMMAND")]
    pub externals: Vec<String>,
    /// Seconds a server may take to print READY before its cell is marked failed.
    #[arg(
        long,
        default_value_t = 15.0,
        hide = true,
        allow_negative_numbers = true
    )]
    pub ready_timeout: f64,
    /// Where the load comes from: this process (loopback), several agent processes
    /// (--client-procs), or client network namespaces (--topology netns).
    #[command(flatten)]
    pub clients: crate::topology::ClientArgs,
}

/// Probes the libc copy slowdown and decides the servers' extra environment.
pub(crate) fn memcpy_policy(keep: bool) -> (crate::results::MemcpyCheck, Vec<(String, String)>) {
    let probe = crate::memcpy::probe();
    let current = std::env::var("GLIBC_TUNABLES").ok();
    let fix = if probe.significant() && !keep {
        crate::memcpy::tunables_with_fix(current.as_deref())
    } else {
        None
    };
    if probe.significant() {
        let what = match (&fix, keep) {
            (Some(_), _) => format!(
                "servers start with {}={}",
                crate::memcpy::TUNABLE,
                crate::memcpy::TUNABLE_VALUE
            ),
            (None, true) => "kept as is (--keep-libc-memcpy)".to_string(),
            (None, false) => "kept as is: GLIBC_TUNABLES already sets the threshold".to_string(),
        };
        eprintln!(
            "note: this machine's memcpy is {:.0}x slower at some buffer distances (see harness \
             doctor); {what}",
            probe.slowdown()
        );
    }
    let check = crate::results::MemcpyCheck {
        near_gbps: probe.near_gbps,
        far_gbps: probe.far_gbps,
        slowdown: probe.slowdown(),
        server_glibc_tunables: fix.clone(),
    };
    let env = fix
        .map(|v| vec![("GLIBC_TUNABLES".to_string(), v)])
        .unwrap_or_default();
    (check, env)
}

/// Runs `harness compare`. Returns an error (exit 1) when interrupted or when any cell
/// failed, after writing the results.
pub fn run(args: CompareArgs) -> anyhow::Result<()> {
    let ready_timeout = Some(args.ready_timeout)
        .filter(|t| *t > 0.0 && *t <= 3600.0)
        .map(std::time::Duration::from_secs_f64)
        .with_context(|| {
            format!(
                "--ready-timeout {}: give seconds, more than 0 and at most 3600",
                args.ready_timeout
            )
        })?;
    let suite = match (&args.suite, args.quick) {
        (Some(path), _) => Suite::load(path)?,
        (None, true) => Suite::parse(suite::QUICK_SUITE, "quick")?,
        (None, false) => Suite::parse(suite::DEFAULT_SUITE, "default")?,
    };
    let mut cells = suite.cells.clone();
    if let Some(list) = &args.workloads {
        let wanted = parse_workloads(list)?;
        cells.retain(|c| wanted.contains(&c.workload.kind));
        if cells.is_empty() {
            bail!("suite {} has no cells for --workloads {list}", suite.name);
        }
    }
    if let Some(r) = args.repeats {
        anyhow::ensure!(r >= 1, "--repeats must be at least 1");
        for c in &mut cells {
            c.repeats = r;
        }
    }
    if let Some(d) = args.duration {
        anyhow::ensure!(
            d > 0.0 && d <= 3600.0,
            "--duration {d} s is out of range: give more than 0 and at most 1h (e.g. 500ms, 30s)"
        );
        for c in &mut cells {
            c.workload.duration = std::time::Duration::from_secs_f64(d);
        }
    }
    if let Some(w) = args.warmup {
        anyhow::ensure!(
            (0.0..=600.0).contains(&w),
            "--warmup {w} s is out of range: give 0 to 10m (e.g. 250ms, 2s)"
        );
        for c in &mut cells {
            c.workload.warmup = std::time::Duration::from_secs_f64(w);
        }
    }

    // Backends: named ones must exist; unavailable ones are skipped with their reason.
    let registry = crate::registry::all();
    let names: Vec<String> = match (&args.backends, &suite.backends) {
        (Some(list), _) => list
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        (None, Some(list)) => list.clone(),
        (None, None) => registry.iter().map(|b| b.name().to_string()).collect(),
    };
    let mut externals: Vec<external::External> = suite.externals.clone();
    for arg in &args.externals {
        externals.push(arg.parse()?);
    }
    for (i, e) in externals.iter().enumerate() {
        if externals[..i].iter().any(|o| o.name == e.name) {
            bail!(
                "external server {} is declared twice (--external or the suite's [[external]]); \
                 give each a name of its own",
                e.name
            );
        }
    }
    let mut backends = Vec::new();
    let mut skipped = Vec::new();
    let mut io_uring = BTreeMap::new();
    for name in &names {
        if externals.iter().any(|e| &e.name == name) {
            // Named in --backends: it runs, in the externals' place after the backends.
            continue;
        }
        let b = crate::registry::find(name).context("--backends")?;
        let probed = b.probe();
        if b.traits().family.uses_io_uring() {
            let said = match &probed {
                Ok(()) => "available".to_string(),
                Err(u) => format!("unsupported: {u}"),
            };
            io_uring.insert(name.clone(), said);
        }
        match probed {
            Ok(()) => backends.push(name.clone()),
            Err(u) => {
                eprintln!("skipping {name}: unsupported here: {u}");
                skipped.push(SkippedBackend {
                    name: name.clone(),
                    reason: u.reason,
                });
            }
        }
    }
    if backends.is_empty() && externals.is_empty() {
        bail!("no backend to compare: every one named is unsupported here (see `harness list`)");
    }
    // Built-in backends, then the external servers: what every cell loop runs.
    let builtin = backends.clone();
    backends.extend(externals.iter().map(|e| e.name.clone()));

    // Cores.
    let sys = SysRoot::default();
    let usable = usable_cores();
    let (server_cores, client_cores) = match (&args.server_cores, &args.client_cores) {
        (None, None) => auto_split(&usable, &sys.smt_groups(&usable))?,
        (Some(s), Some(c)) => (
            crate::cores::parse_core_list(s).context("--server-cores")?,
            crate::cores::parse_core_list(c).context("--client-cores")?,
        ),
        (Some(s), None) => {
            let s = crate::cores::parse_core_list(s).context("--server-cores")?;
            let c: Vec<usize> = usable.iter().copied().filter(|x| !s.contains(x)).collect();
            (s, c)
        }
        (None, Some(c)) => {
            let c = crate::cores::parse_core_list(c).context("--client-cores")?;
            let s: Vec<usize> = usable.iter().copied().filter(|x| !c.contains(x)).collect();
            (s, c)
        }
    };
    let ssh = args.clients.topology == crate::topology::Topology::Ssh;
    if ssh {
        // The server's cores are the server host's and the client cores the client
        // hosts': which exist is for those hosts to say (a server pinned to a core its
        // host lacks fails to start there). Only emptiness and overlap are checked here.
        let both: Vec<usize> = server_cores.iter().chain(&client_cores).copied().collect();
        check_split(&server_cores, &client_cores, &both)?;
    } else {
        check_split(&server_cores, &client_cores, &usable)?;
    }
    for c in &cells {
        if let Some(n) = c.server_cores {
            anyhow::ensure!(
                n <= server_cores.len(),
                "suite cell {} asks for {n} server cores but only {} are given (--server-cores)",
                c.group,
                server_cores.len()
            );
        }
    }
    crate::rlimit::raise_nofile_to_hard();
    args.clients.validate_for_compare()?;
    if let (Some(e), crate::topology::Topology::Netns) = (externals.first(), args.clients.topology)
    {
        bail!(
            "external server {} cannot run under --topology netns yet: externals are started \
             in the root namespace and would be measured over loopback; run it with \
             --topology loopback (the default)",
            e.name
        );
    }
    if let (Some(e), true) = (externals.first(), ssh) {
        bail!(
            "external server {} cannot run under --topology ssh yet: externals are started \
             on this host, not on --server-host; run it with --topology loopback (the default)",
            e.name
        );
    }
    anyhow::ensure!(
        !(ssh && args.profile.is_some()),
        "--profile records the server with perf on this host: it cannot follow a server on \
         --server-host; run --profile with --topology loopback"
    );
    // Created once for the whole run; dropping it (at any return from here on, an error
    // or a Ctrl-C included) removes the namespaces.
    let netns = match args.clients.topology {
        crate::topology::Topology::Netns => Some(crate::topology::netns::Netns::create(
            args.clients.clients,
            &crate::topology::netns::Shaping {
                rate_bps: args.clients.link_rate,
                delay: args.clients.link_delay.clone(),
                loss: args.clients.link_loss.clone(),
            },
        )?),
        crate::topology::Topology::Loopback | crate::topology::Topology::Ssh => None,
    };
    let ssh_server = crate::topology::SshServer::of(&args.clients)?;
    let client_side = crate::topology::ClientSide {
        args: &args.clients,
        netns: netns.as_ref(),
        ssh_server: ssh_server.as_ref(),
    };
    let profile_plan = match &args.profile {
        Some(dir) => Some(crate::profile::plan_for_compare(
            &cells,
            &server_cores,
            &client_cores,
            dir,
        )?),
        None => None,
    };

    let planned: usize = cells
        .iter()
        .map(|c| c.repeats as usize * backends.len())
        .sum();
    let started = chrono_now();
    let stem = format!(
        "compare-{}",
        started
            .replace([':', '-'], "")
            .replace('T', "-")
            .trim_end_matches('Z')
    );
    let path = crate::results::claim_results_path(&args.out, &stem)
        .context("choose another results directory with --out")?;
    let (memcpy_check, server_env) = memcpy_policy(args.keep_libc_memcpy);
    let mut results = ResultsFile {
        schema_version: SCHEMA_VERSION,
        tool: format!("ringside harness {}", env!("CARGO_PKG_VERSION")),
        started_at: started,
        finished_at: None,
        state: RunState::Running,
        manifest: crate::results::Manifest {
            memcpy: Some(memcpy_check),
            topology: (!client_side.in_process()).then(|| client_side.manifest()),
            ..manifest::collect(&sys, &server_cores, &client_cores, io_uring)
        },
        plan: Plan {
            suite: args
                .suite
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| suite.name.clone()),
            repeats: cells.iter().map(|c| c.repeats).max().unwrap_or(1),
            backends: backends.clone(),
            skipped_backends: skipped,
            cells_planned: planned,
            calibration: Vec::new(),
            externals: externals
                .iter()
                .map(|e| crate::results::ExternalServer {
                    name: e.name.clone(),
                    command: e.command.clone(),
                    services: e.services.iter().map(|s| s.to_string()).collect(),
                })
                .collect(),
        },
        cells: Vec::new(),
    };
    write_atomic(&path, &results).with_context(|| {
        format!(
            "cannot write results under {} (choose another with --out)",
            args.out.display()
        )
    })?;

    // Ctrl-C / SIGTERM: stop the current cell, keep what was measured. A second one exits
    // at once (the servers die with this process).
    let interrupted = Arc::new(AtomicBool::new(false));
    let cell_stop = Arc::new(std::sync::Mutex::new(None::<StopSignal>));
    {
        let interrupted = Arc::clone(&interrupted);
        let cell_stop = Arc::clone(&cell_stop);
        let path = path.clone();
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ])
        .context("installing the Ctrl-C handler")?;
        std::thread::Builder::new()
            .name("compare-signals".into())
            .spawn(move || {
                for _ in signals.forever() {
                    if interrupted.swap(true, Ordering::SeqCst) {
                        eprintln!(
                            "interrupted again: exiting now; {} keeps the cells finished so far",
                            path.display()
                        );
                        std::process::exit(130);
                    }
                    eprintln!(
                        "interrupted: stopping the current cell (Ctrl-C again exits at once)"
                    );
                    if let Some(s) = cell_stop.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                        s.fire();
                    }
                }
            })
            .context("spawning the signal thread")?;
    }
    eprintln!("writing results to {}", path.display());

    // From here nothing of the harness runs on the server cores: its threads (the load
    // generator's and the coordinator's own) and its agents stay on the client cores, and
    // each server is given its own cores when it starts. (Not earlier: the profiler plans
    // from the whole mask.)
    crate::cores::pin_current_thread(&client_cores).context("pinning compare to --client-cores")?;
    let exe = std::env::current_exe().context("locating the harness executable")?;
    if cells.iter().any(|c| c.ladder.is_some()) {
        let cx = calibrate::Context {
            exe: &exe,
            backends: &backends,
            externals: &externals,
            server_cores: &server_cores,
            client_cores: &client_cores,
            ready_timeout,
            server_env: &server_env,
            clients: client_side,
            interrupted: &|| interrupted.load(Ordering::SeqCst),
            current_stop: &|s| *cell_stop.lock().unwrap_or_else(|p| p.into_inner()) = s,
        };
        results.plan.calibration = calibrate::resolve(&mut cells, &cx)?;
        for cal in &results.plan.calibration {
            eprintln!("{}", calibrate::line(cal));
        }
        write_atomic(&path, &results).context("writing the calibration to the results")?;
    }
    let planned: usize = cells
        .iter()
        .map(|c| c.repeats as usize * backends.len())
        .sum();
    results.plan.cells_planned = planned;
    let progress = progress_bar(planned as u64);
    // Each reason an external server cannot run a cell is said once, not per cell.
    let mut said = std::collections::BTreeSet::new();
    // Interleave repeats across backends: A B C A B C, so drift hits every backend alike.
    'cells: for shape in &cells {
        let cap = args.max_repeats.unwrap_or(shape.repeats).max(shape.repeats);
        let mut repeat = 0;
        while repeat < shape.repeats
            || adaptive::another_round(
                adaptive::widest_half_width(
                    &results.cells,
                    &shape.group,
                    &shape.workload,
                    &backends,
                    &args.reference,
                ),
                args.ci_target / 100.0,
                repeat,
                cap,
            )
        {
            if repeat >= shape.repeats {
                progress.inc_length(backends.len() as u64);
            }
            for backend in &backends {
                if interrupted.load(Ordering::SeqCst) {
                    break 'cells;
                }
                progress.set_message(format!("{backend} {} r{repeat}", shape.group));
                let stop = StopSignal::new().context("creating a stop signal")?;
                *cell_stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(stop.clone());
                let cores: Vec<usize> = match shape.server_cores {
                    Some(n) => server_cores[..n].to_vec(),
                    None => server_cores.clone(),
                };
                let job = cell::CellJob {
                    exe: &exe,
                    backend,
                    shape,
                    repeat,
                    server_cores: &cores,
                    client_cores: &client_cores,
                    stop: &stop,
                    ready_timeout,
                    server_env: &server_env,
                    external: externals.iter().find(|e| &e.name == backend),
                    clients: client_side,
                };
                let measured = cell::run(&job);
                if let (true, crate::results::CellStatus::Unsupported { reason }) =
                    (job.external.is_some(), &measured.status)
                {
                    if said.insert(reason.clone()) {
                        eprintln!("{backend}: {reason}");
                    }
                }
                if interrupted.load(Ordering::SeqCst)
                    && measured.status != crate::results::CellStatus::Ok
                {
                    // The interrupted cell is incomplete: leave it out rather than mark it failed.
                    break 'cells;
                }
                results.cells.push(measured);
                write_or_interrupt(&path, &results, results.cells.len() - 1, &mut write_atomic)?;
                progress.inc(1);
            }
            repeat += 1;
        }
    }
    progress.finish_and_clear();
    results.finished_at = Some(chrono_now());
    let was_interrupted = interrupted.load(Ordering::SeqCst);
    results.state = if was_interrupted {
        RunState::Interrupted {
            reason: "interrupted by signal".into(),
        }
    } else {
        RunState::Complete
    };
    write_or_interrupt(&path, &results, results.cells.len(), &mut write_atomic)?;
    summary::print_with_reference(&results, &args.reference, &mut std::io::stdout().lock())?;
    if !args.no_plots && !results.cells.is_empty() {
        render_plots(&results, &path);
    }
    if let (Some(plan), false) = (&profile_plan, was_interrupted) {
        // The profiler places its server and load itself, from the cores compare started
        // with.
        crate::cores::pin_current_thread(&usable).context("restoring compare's CPU mask")?;
        crate::profile::after_compare(plan, &builtin, &server_env)?;
    }
    if was_interrupted {
        bail!(
            "interrupted after {} of {planned} cells; results so far are in {}",
            results.cells.len(),
            path.display()
        );
    }
    println!("results: {}", path.display());
    let failed: Vec<String> = results
        .cells
        .iter()
        .filter(|c| matches!(c.status, crate::results::CellStatus::Failed { .. }))
        .map(|c| format!("{} {} r{}", c.backend, c.group, c.repeat))
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} cells failed ({}); each cell's reason and the server's stderr are in {}",
            failed.len(),
            results.cells.len(),
            failed.join(", "),
            path.display()
        );
    }
    Ok(())
}

/// Writes `results` to `path`. Should that fail (a full disk), the file still holds the
/// version written before, with its first `saved` cells: that version is rewritten marked
/// interrupted, if the disk allows, and the error to end the run with says which it is.
fn write_or_interrupt(
    path: &Path,
    results: &ResultsFile,
    saved: usize,
    write: &mut impl FnMut(&Path, &ResultsFile) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let Err(e) = write(path, results) else {
        return Ok(());
    };
    let what = if crate::results::is_disk_full(&e) {
        "the disk is full"
    } else {
        "the results file could not be written"
    };
    let mut kept = results.clone();
    kept.cells.truncate(saved);
    kept.finished_at = Some(chrono_now());
    kept.state = RunState::Interrupted {
        reason: format!("{what}: {e:#}"),
    };
    let fix = if crate::results::is_disk_full(&e) {
        "free some space and run again"
    } else {
        "fix the cause and run again"
    };
    Err(match write(path, &kept) {
        Ok(()) => e.context(format!(
            "{what}: stopped; {} keeps the {saved} cells measured before, marked interrupted; \
             {fix}",
            path.display()
        )),
        Err(m) => e.context(format!(
            "{what}: stopped; {} keeps the {saved} cells measured before, but could not be \
             marked interrupted ({m:#}), so it still says running; {fix}",
            path.display()
        )),
    })
}

/// Renders the charts beside the results file. A plotting failure is reported but does not
/// fail the run: the measurements are already safe on disk.
fn render_plots(results: &ResultsFile, path: &Path) {
    let dir = crate::plot::default_out_dir(path);
    match crate::plot::render_all(
        results,
        &dir,
        &[crate::plot::Format::Svg, crate::plot::Format::Png],
    ) {
        Ok(files) => eprintln!("{} plot files in {}", files.len(), dir.display()),
        Err(e) => eprintln!(
            "warning: plotting failed ({e:#}); the results are intact, retry with: harness plot {}",
            path.display()
        ),
    }
}

fn parse_workloads(list: &str) -> anyhow::Result<Vec<WorkloadKind>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|w| {
            w.parse::<WorkloadKind>()
                .map_err(|e| anyhow::anyhow!("--workloads: {e}"))
        })
        .collect()
}

fn progress_bar(len: u64) -> indicatif::ProgressBar {
    let target = if crate::cli::quiet() {
        indicatif::ProgressDrawTarget::hidden()
    } else {
        indicatif::ProgressDrawTarget::stderr()
    };
    let pb = indicatif::ProgressBar::with_draw_target(Some(len), target);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} cells, ETA {eta} — {msg}")
    {
        pb.set_style(style);
    }
    pb
}

/// Current UTC time as RFC 3339 (seconds).
pub fn chrono_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// Formats Unix seconds as RFC 3339 UTC (civil-from-days, no time zone database needed).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    fn disk_full() -> anyhow::Error {
        anyhow::Error::from(std::io::Error::from_raw_os_error(libc::ENOSPC))
            .context("writing results")
    }

    #[test]
    fn a_full_disk_ends_the_run_with_the_file_valid_and_marked_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/results.json");
        let mut r = crate::results::read_results(&fixture).unwrap();
        let n = r.cells.len();
        assert!(n >= 2);
        r.state = RunState::Running;
        r.cells.truncate(n - 1);
        write_atomic(&path, &r).unwrap();
        // The next cell's write hits ENOSPC; the marking write gets through.
        r.cells = crate::results::read_results(&fixture).unwrap().cells;
        let mut calls = 0;
        let e = write_or_interrupt(&path, &r, n - 1, &mut |p, res| {
            calls += 1;
            if calls == 1 {
                crate::results::write_atomic_via(p, res, |_, _| {
                    Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
                })
            } else {
                write_atomic(p, res)
            }
        })
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("the disk is full") && msg.contains("marked interrupted"),
            "{msg}"
        );
        assert!(msg.contains("free some space"), "{msg}");
        let on_disk = crate::results::read_results(&path).unwrap();
        assert_eq!(on_disk.cells.len(), n - 1);
        match on_disk.state {
            RunState::Interrupted { reason } => {
                assert!(reason.contains("disk is full"), "{reason}")
            }
            other => panic!("not marked interrupted: {other:?}"),
        }
        assert!(on_disk.finished_at.is_some());
    }

    #[test]
    fn a_disk_too_full_to_mark_keeps_the_last_version_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/results.json");
        let mut r = crate::results::read_results(&fixture).unwrap();
        r.state = RunState::Running;
        write_atomic(&path, &r).unwrap();
        let before = std::fs::read(&path).unwrap();
        let e =
            write_or_interrupt(&path, &r, r.cells.len(), &mut |_, _| Err(disk_full())).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("could not be marked interrupted"), "{msg}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn workload_list_errors_list_valid_names() {
        assert_eq!(
            parse_workloads("echo, idle").unwrap(),
            vec![WorkloadKind::Echo, WorkloadKind::Idle]
        );
        let e = parse_workloads("echo,ftp").unwrap_err().to_string();
        assert!(
            e.contains("'ftp'") && e.contains("valid workloads: echo, http, churn, stream, idle"),
            "{e}"
        );
    }
}
