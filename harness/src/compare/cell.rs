//! One cell: start the server, measure its cost over the load's measured window, stop it.
//! Who reads the server at the window's edges (here, or the server on its own host) is
//! [`super::window`]'s.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use backend_api::StopSignal;

use super::cost;
use super::server::{ServerProcess, ServerSpec, StartFailed};
use super::suite::PlannedCell;
use super::window::{local_site, remote_site, LedgerEdge, Meter, ServerWindow, Site};
use crate::load::{LoadConfig, LoadReport, FD_MARGIN};
use crate::results::{Cell, CellStatus, ClientMeasure, CostLedger, Percentiles, ServerCost};

/// How long a server may take to stop after its stdin closes.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything one cell needs.
pub struct CellJob<'a> {
    pub exe: &'a Path,
    pub backend: &'a str,
    pub shape: &'a PlannedCell,
    pub repeat: u32,
    pub server_cores: &'a [usize],
    pub client_cores: &'a [usize],
    pub stop: &'a StopSignal,
    pub ready_timeout: Duration,
    /// Environment added to the server's (GLIBC_TUNABLES where libc needs it).
    pub server_env: &'a [(String, String)],
    /// The external server `backend` names, if it is one.
    pub external: Option<&'a super::external::External>,
    /// Where the load comes from.
    pub clients: crate::topology::ClientSide<'a>,
}

/// How the server's CPU time was counted, for the ledger's method line.
struct Counted<'a> {
    /// The cgroup's method, if the server had one.
    cgroup_method: Option<&'a str>,
    /// Why perf's task-clock could not be read.
    clock_absent: Option<&'a str>,
    /// The server host, when the readings were taken there.
    remote: bool,
}

/// The cell's cost ledger from the readings at the window's two edges; `generator_cpu_ns`
/// is the client CPU: what the load generator's threads (in this process or in agents)
/// measured of themselves over their windows, by getrusage(RUSAGE_THREAD), whose user +
/// system sums to the scheduler's nanosecond runtime. Their threads end with their
/// windows, so reading them here at the closing edge would miss them; and the
/// coordinator's own threads are not the generator's cost.
fn ledger(
    e0: &LedgerEdge,
    e1: &LedgerEdge,
    counted: &Counted<'_>,
    generator_cpu_ns: u64,
    requests: f64,
    job: &CellJob<'_>,
) -> CostLedger {
    let (server_cores, client_cores) = (job.server_cores, job.client_cores);
    let (cgroup_method, clock_absent) = (counted.cgroup_method, counted.clock_absent);
    let delta = |a: Option<u64>, b: Option<u64>| a.zip(b).map(|(a, b)| b.saturating_sub(a));
    // A remote server's window is its own two readings, by its own clock.
    let window_s = match delta(e0.server_unix_ns, e1.server_unix_ns) {
        Some(ns) => ns as f64 / 1e9,
        None => e1.at.saturating_duration_since(e0.at).as_secs_f64(),
    };
    let sched = delta(e0.server_sched_ns, e1.server_sched_ns);
    let cgroup = delta(e0.server_cgroup_ns, e1.server_cgroup_ns);
    let clock = delta(e0.server_clock_ns, e1.server_clock_ns);
    // The cgroup counts every task that ever ran in it, exited ones included, by the
    // scheduler's own runtime: nothing to reconcile. Without one, each fallback misses
    // something: schedstat leaves out tasks that exited inside the window (a
    // thread-per-connection server under churn), perf's task-clock reads below the
    // scheduler's runtime when a server sleeps between requests (see `CpuClock`). The
    // larger of the two is then the better lower bound, and the method says which it was.
    let (server_cpu_ns, method, absent) = match (cgroup, clock, sched) {
        (Some(ns), _, _) => (Some(ns), cgroup_method.unwrap_or("cgroup"), None),
        (None, Some(clock), Some(sched)) if clock > sched => (
            Some(clock),
            "perf task-clock (tasks exited in the window)",
            None,
        ),
        (None, _, Some(sched)) => (Some(sched), "schedstat", None),
        (None, Some(clock), None) => (
            Some(clock),
            "perf task-clock",
            Some("schedstat unreadable; task-clock reads low when the server sleeps often".into()),
        ),
        (None, None, None) => (
            None,
            "none",
            Some(format!(
                "neither the server's cgroup, /proc/PID/task/*/schedstat nor perf task-clock ({}) could be read",
                clock_absent.unwrap_or("counter could not be read")
            )),
        ),
    };
    let client_cpu_ns = Some(generator_cpu_ns);
    let usage = |a: &Option<_>, b: &Option<_>, cores: &[usize]| match (a, b) {
        (Some(a), Some(b)) => cost::core_usage(a, b, cores),
        _ => Vec::new(),
    };
    let server = usage(&e0.server_host_cores, &e1.server_host_cores, server_cores);
    let client = usage(&e0.client_host_cores, &e1.client_host_cores, client_cores);
    let method = if counted.remote {
        format!("remote {method} via ssh")
    } else {
        method.to_string()
    };
    let mut noisy_reasons = cost::noisy("server", &server, server_cpu_ns, window_s);
    noisy_reasons.extend(cost::noisy("client", &client, client_cpu_ns, window_s));
    let per_req = |ns: u64| ns as f64 / 1e3 / requests;
    CostLedger {
        window_s,
        server_cpu_ns,
        server_cpu_method: method,
        server_cpu_ns_task_clock: clock,
        server_cpu_ns_schedstat: sched,
        server_cpu_absent: absent,
        server_cpu_us_per_req: server_cpu_ns.map(per_req),
        client_cpu_ns,
        client_cpu_us_per_req: client_cpu_ns.map(per_req),
        server_cores: server,
        client_cores: client,
        noisy_host: !noisy_reasons.is_empty(),
        noisy_reasons,
    }
}

/// Runs one cell; never fails: what goes wrong is recorded in the cell.
pub fn run(job: &CellJob<'_>) -> Cell {
    let t0 = Instant::now();
    let w = &job.shape.workload;
    let mut cell = Cell {
        group: job.shape.group.clone(),
        backend: job.backend.to_string(),
        workload: w.clone(),
        repeat: job.repeat,
        server_cores: job.server_cores.to_vec(),
        client_cores: job.client_cores.to_vec(),
        started_at: super::chrono_now(),
        wall_s: 0.0,
        status: CellStatus::Ok,
        client: None,
        server: None,
        ledger: None,
        external: job.external.is_some(),
        agents: Vec::new(),
        server_host: None,
    };
    let service = w.kind.service();
    if let Some(ext) = job.external.filter(|e| !e.speaks(service)) {
        cell.status = CellStatus::Unsupported {
            reason: format!(
                "external server {} speaks {} only; {} needs {service} (declare it with \
                 --external {}:{service}=... if it does)",
                ext.name,
                ext.services_list(),
                w.kind,
                ext.name
            ),
        };
        return cell;
    }
    // Each connection costs a descriptor in the server and one in the client process that
    // opened it. A cell the limits cannot hold is recorded as such with the fix, not run
    // into EMFILE and charted as slow.
    let conns = w.total_connections();
    let have = backend_api::rlimit::nofile()
        .map(|(soft, _)| soft)
        .unwrap_or(0);
    let procs = job.clients.processes().max(1) as u64;
    let per_client = conns.div_ceil(procs);
    for (who, n, more) in [
        ("the server process", conns, ""),
        (
            "each client process",
            per_client,
            "; or spread the client side over more processes with --client-procs",
        ),
    ] {
        let need = n + FD_MARGIN;
        if need > have {
            cell.status = CellStatus::Unsupported {
                reason: format!(
                    "{who} needs {need} descriptors ({n} connections) but RLIMIT_NOFILE is \
                     {have} and could not be raised (hard limit; raising it needs root with \
                     CAP_SYS_RESOURCE): ulimit -Hn {need}; ulimit -n {need}{more}"
                ),
            };
            return cell;
        }
    }
    if let Some((most, why)) = crate::registry::connection_ceiling(job.backend) {
        if conns > most {
            cell.status = CellStatus::Unsupported {
                reason: format!("needs {conns} connections: {why}"),
            };
            return cell;
        }
    }
    let spec = ServerSpec {
        exe: job.exe.to_path_buf(),
        backend: job.backend.to_string(),
        service: w.kind.service().as_str().to_string(),
        cores: crate::cores::format_core_list(job.server_cores),
        env: job.server_env.to_vec(),
        netns: job.clients.server_netns(),
        ssh: job.clients.server_ssh().cloned(),
    };
    let fail = |cell: &mut Cell, reason: String, stderr_tail: String| {
        cell.status = CellStatus::Failed {
            reason,
            stderr_tail,
        };
    };
    let started = match job.external {
        None => ServerProcess::start(&spec, job.ready_timeout).map_err(|e| StartFailed {
            reason: format!("{e:#}"),
            stderr_tail: String::new(),
        }),
        Some(ext) => {
            ServerProcess::start_external(ext, job.server_cores, job.server_env, job.ready_timeout)
        }
    };
    let mut server = match started {
        Ok(s) => s,
        Err(e) => {
            fail(&mut cell, e.reason, e.stderr_tail);
            cell.wall_s = t0.elapsed().as_secs_f64();
            return cell;
        }
    };
    let site = match server.ledger_link() {
        Some(link) => remote_site(link, job.clients.server_ssh().map(|s| s.label.clone())),
        None => Ok(local_site(&server)),
    };
    let Site {
        meter,
        before,
        kmem_before,
        syscalls_absent,
        clock_absent,
        cgroup_method,
        host: server_host,
    } = match site {
        Ok(s) => s,
        Err(e) => {
            server.kill();
            fail(&mut cell, format!("{e:#}"), server.stderr_tail());
            cell.wall_s = t0.elapsed().as_secs_f64();
            return cell;
        }
    };
    let remote = matches!(meter, Meter::Remote { .. });
    let window = ServerWindow {
        meter,
        start: Mutex::new(None),
        end: Mutex::new(None),
    };
    let mut cfg = LoadConfig::of(server.addr, w.clone());
    cfg.cores = job.client_cores.to_vec();

    // Watchdog: a cell that runs far past its planned time is stopped and its server killed.
    let budget = w.warmup + w.duration + Duration::from_secs_f64(30.0 + w.idle as f64 / 2000.0);
    // Dropping `done` (the load returned) ends the watchdog; otherwise it fires at the budget.
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = {
        let stop = job.stop.clone();
        std::thread::spawn(move || {
            let expired =
                finished.recv_timeout(budget) == Err(std::sync::mpsc::RecvTimeoutError::Timeout);
            if expired {
                stop.fire();
            }
            expired
        })
    };
    let load = run_load(job, &cfg, &window);
    drop(done);
    let timed_out = watchdog.join().unwrap_or(false);
    let alive = server.is_alive();
    if !alive || timed_out {
        let why = if alive {
            format!("cell exceeded its time budget of {budget:.0?}; server killed")
        } else {
            "server exited during the load (crashed?)".to_string()
        };
        server.kill();
        fail(&mut cell, why, server.stderr_tail());
        cell.wall_s = t0.elapsed().as_secs_f64();
        return cell;
    }
    let report = match load {
        Ok(r) => r,
        Err(LoadFailure::Here(e)) => {
            let tail = server.stderr_tail();
            server.kill();
            fail(&mut cell, format!("load generator: {e}"), tail);
            cell.wall_s = t0.elapsed().as_secs_f64();
            return cell;
        }
        Err(LoadFailure::Agent(e)) => {
            server.kill();
            fail(
                &mut cell,
                format!("load agent: {}", e.reason),
                e.stderr_tail,
            );
            cell.wall_s = t0.elapsed().as_secs_f64();
            return cell;
        }
    };
    let tail = server.stderr_tail();
    let stats = match server.stop(STOP_TIMEOUT) {
        Ok(r) => r.map(|r| r.total),
        Err(e) => {
            fail(&mut cell, format!("{e:#}"), tail.clone());
            None
        }
    };
    let client = client_measure(&report);
    let requests = client.requests.max(1) as f64;
    let start = window
        .start
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let end = window.end.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Meter::Remote { marks, failure, .. } = &window.meter {
        if let Some(why) = failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
            fail(
                &mut cell,
                format!("the server host's ledger at a window edge: {why}"),
                tail.clone(),
            );
        }
        cell.server_host = server_host.map(|mut h| {
            // The edges' marks are clock exchanges too: the shortest round trip wins.
            for &(rtt, offset) in marks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                h.edge_round_trip_ns = h.edge_round_trip_ns.max(rtt);
                if rtt / 2 < h.clock_uncertainty_ns {
                    h.clock_uncertainty_ns = rtt / 2;
                    h.clock_offset_ns = offset;
                }
            }
            h
        });
    }
    if let (Some(e0), Some(e1)) = (start, end) {
        let generator_cpu_ns =
            ((report.client.user_s + report.client.system_s) * 1e9).round() as u64;
        let counted = Counted {
            cgroup_method: cgroup_method.as_deref(),
            clock_absent: clock_absent.as_deref(),
            remote,
        };
        cell.ledger = Some(ledger(
            &e0.ledger,
            &e1.ledger,
            &counted,
            generator_cpu_ns,
            requests,
            job,
        ));
        let (s0, s1) = (e0.proc, e1.proc);
        let syscalls = e0
            .syscalls
            .zip(e1.syscalls)
            .map(|(a, b)| b.saturating_sub(a));
        let (user, sys) = (s1.user_s - s0.user_s, s1.sys_s - s0.sys_s);
        let ctx = (
            s1.ctx_voluntary.saturating_sub(s0.ctx_voluntary),
            s1.ctx_involuntary.saturating_sub(s0.ctx_involuntary),
        );
        let conns = w.total_connections().max(1) as f64;
        cell.server = Some(ServerCost {
            cpu_user_s: user,
            cpu_sys_s: sys,
            cpu_user_us_per_req: user * 1e6 / requests,
            cpu_sys_us_per_req: sys * 1e6 / requests,
            cpu_busy: (user + sys) / report.measured_s.max(1e-9),
            syscalls,
            syscalls_per_req: syscalls.map(|n| n as f64 / requests),
            syscalls_absent: if syscalls.is_some() {
                None
            } else {
                syscalls_absent.or(Some("counter could not be read".into()))
            },
            ctx_voluntary: ctx.0,
            ctx_involuntary: ctx.1,
            ctx_per_req: (ctx.0 + ctx.1) as f64 / requests,
            rss_peak_bytes: s1.rss_peak,
            rss_per_conn_bytes: before.map(|b| s1.rss.saturating_sub(b.rss) as f64 / conns),
            kernel_sock_mem_bytes: e1
                .kmem
                .sock
                .or(e0.kmem.sock)
                .zip(kmem_before.sock)
                .map(|(during, base)| during.saturating_sub(base)),
            kernel_slab_bytes: e1
                .kmem
                .slab
                .zip(kmem_before.slab)
                .map(|(during, base)| during as i64 - base as i64),
            stats,
        });
    }
    // A backend that could not hold the connections is recorded as unable, not as slow.
    let requested = client.connections_requested;
    if cell.status == CellStatus::Ok && client.connections_established < requested {
        cell.status = CellStatus::Unsupported {
            reason: format!(
                "held {} of {requested} connections{}",
                client.connections_established,
                tail.lines()
                    .last()
                    .map(|l| format!("; server said: {l}"))
                    .unwrap_or_default()
            ),
        };
    }
    if cell.status == CellStatus::Ok {
        if let Some(reason) = reply_errors(&client.errors) {
            cell.status = CellStatus::Invalid { reason };
        }
    }
    cell.agents = report.agents.clone();
    cell.client = Some(client);
    cell.wall_s = t0.elapsed().as_secs_f64();
    cell
}

/// Why a cell's load failed: in this process, or in one of its agents.
enum LoadFailure {
    Here(String),
    Agent(crate::topology::agent::AgentError),
}

/// Runs the cell's load in this process or over its agents.
fn run_load(
    job: &CellJob<'_>,
    cfg: &LoadConfig,
    window: &ServerWindow,
) -> Result<LoadReport, LoadFailure> {
    if job.clients.in_process() {
        return crate::load::run_load_observed(cfg, job.stop, window)
            .map_err(|e| LoadFailure::Here(e.to_string()));
    }
    let launches = job
        .clients
        .launches(cfg, cfg.target.port())
        .map_err(|e| LoadFailure::Here(format!("{e:#}")))?;
    crate::topology::agent::run_agents(cfg, &launches, job.stop, window, Default::default())
        .map(|d| d.report)
        .map_err(LoadFailure::Agent)
}

/// Error kinds that mean the server answered wrongly or not at all: a cell with any of
/// them measured something other than a correct server. Connection-level errors (resets,
/// refusals) are not among them: a server may legitimately refuse what it cannot hold, and
/// that is recorded as unsupported instead.
const REPLY_ERRORS: [&str; 7] = [
    "echo_mismatch",
    "short_reply",
    "garbled_reply",
    "no_content_length",
    "unsolicited_data",
    "unanswered_at_end",
    "http_status_",
];

/// "3 echo_mismatch, 1 unanswered_at_end" when the client saw wrong or missing replies.
pub fn reply_errors(errors: &std::collections::BTreeMap<String, u64>) -> Option<String> {
    let bad: Vec<String> = errors
        .iter()
        .filter(|(k, n)| **n > 0 && REPLY_ERRORS.iter().any(|r| k.starts_with(r)))
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    (!bad.is_empty()).then(|| {
        format!(
            "client saw wrong or missing replies: {}; numbers not of a correct server",
            bad.join(", ")
        )
    })
}

fn pct(s: &crate::load::LatencySummary) -> Percentiles {
    let us = |ns: u64| ns as f64 / 1000.0;
    Percentiles {
        p50: us(s.p50_ns),
        p90: us(s.p90_ns),
        p99: us(s.p99_ns),
        p999: us(s.p99_9_ns),
        max: us(s.max_ns),
        mean: s.mean_ns / 1000.0,
    }
}

/// Re-encodes a nanosecond histogram in microseconds (the results schema's unit).
fn hist_us(s: &crate::load::LatencySummary) -> Option<String> {
    use base64::Engine as _;
    use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
    let ns = s.hdr.decode().ok()?;
    let mut us = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).ok()?;
    for v in ns.iter_recorded() {
        us.saturating_record_n((v.value_iterated_to() / 1000).max(1), v.count_at_value());
    }
    let mut buf = Vec::new();
    V2DeflateSerializer::new().serialize(&us, &mut buf).ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(buf))
}

/// Maps the load generator's report onto the results schema's client view.
pub fn client_measure(r: &LoadReport) -> ClientMeasure {
    let open = r.schedule.is_some();
    ClientMeasure {
        requests: r.requests.completed,
        duration_s: r.measured_s,
        throughput_rps: r.throughput.requests_per_s,
        mbps_out: r.throughput.mb_per_s_out,
        mbps_in: r.throughput.mb_per_s_in,
        latency_us: pct(&r.latency),
        latency_uncorrected_us: r.latency_uncorrected.as_ref().map(pct),
        histogram: (r.latency.count > 0).then(|| hist_us(&r.latency)).flatten(),
        histogram_uncorrected: r.latency_uncorrected.as_ref().and_then(hist_us),
        target_rate: r.schedule.as_ref().map(|s| s.target_rate),
        achieved_rate: r
            .schedule
            .as_ref()
            .map_or(r.throughput.requests_per_s, |s| s.achieved_rate),
        schedule_lag_p99_us: r
            .schedule
            .as_ref()
            .filter(|_| open)
            .map(|s| s.lag.p99_ns as f64 / 1000.0),
        client_cpu_util: r.threads.iter().map(|t| t.cpu_busy).collect(),
        client_bound: r.client_bound,
        saturated: crate::analysis::stats::saturated(
            r.schedule.as_ref().map(|s| s.target_rate),
            r.schedule
                .as_ref()
                .map_or(r.throughput.requests_per_s, |s| s.achieved_rate),
        ),
        connections_requested: r.connections.requested,
        connections_established: r.connections.established,
        connect_latency_us: (r.connect_latency.count > 0).then(|| pct(&r.connect_latency)),
        connections_per_s: r.throughput.connections_per_s,
        idle_establish_s: r.idle.as_ref().map(|i| i.establish_s),
        errors: r.errors.clone(),
        engine: r.engine.clone(),
    }
}
