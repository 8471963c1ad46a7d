//! Runs a load: checks the input and the target, raises the file limit, starts one pinned
//! client thread per core on a shared clock, and merges what the threads counted into a
//! [`LoadReport`].
//!
//! Engine choice: epoll, level-triggered for keep-alive connections. A request/response
//! turn then costs one read and one write per connection plus a share of one epoll_wait
//! (every due request of a connection leaves in that one write), and no epoll_ctl unless a
//! write would block. wrk also uses epoll but re-arms write interest around every request
//! (two epoll_ctl per request). io_uring could batch the read and write submissions of
//! many connections into one syscall, but then the generator's cost depends on kernel
//! features (multishot recv, provided buffers) and the generator would share the very
//! mechanism some backends under test use; the syscall counts this engine reports make
//! the comparison measurable, and `engine` in every report records the choice.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use backend_api::StopSignal;

use super::histogram::NsHistogram;
use super::report::*;
use super::worker::{Plan, RunShared, Syscalls, ThreadResult, Worker};
use super::workloads;
use super::{LoadConfig, LoadError, Workload};

/// The engine name recorded in every report.
pub const ENGINE: &str = "epoll";

/// Longest the preflight connection may take: an unreachable target is an error within a
/// second, not a hang.
const PREFLIGHT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Descriptors kept free beyond the connections: epoll, eventfds, stdio, files.
const FD_MARGIN: u64 = 64;

/// Runs `cfg` to completion (or until it fails) and reports.
pub fn run_load(cfg: &LoadConfig) -> Result<LoadReport, LoadError> {
    let stop = StopSignal::new().map_err(|e| LoadError::setup("creating the stop eventfd", e))?;
    run_load_until(cfg, &stop)
}

/// Runs `cfg` until it completes or `stop` fires (Ctrl-C, a supervising harness). A
/// stopped run still reports what it measured, with `interrupted` set.
pub fn run_load_until(cfg: &LoadConfig, stop: &StopSignal) -> Result<LoadReport, LoadError> {
    run_load_observed(cfg, stop, &NoObserver)
}

/// Told when the measured window opens (the warmup is over) and closes (the duration is
/// over), from the thread that runs the load, at the instants the client threads use. A
/// supervisor samples the server there, so its cost covers exactly what was measured.
pub trait WindowObserver: Sync {
    /// The measured window opens.
    fn window_start(&self);
    /// The measured window closes (or the run was stopped inside it).
    fn window_end(&self);
}

struct NoObserver;

impl WindowObserver for NoObserver {
    fn window_start(&self) {}
    fn window_end(&self) {}
}

/// Like [`run_load_until`], and tells `observer` when the measured window opens and closes.
pub fn run_load_observed(
    cfg: &LoadConfig,
    stop: &StopSignal,
    observer: &dyn WindowObserver,
) -> Result<LoadReport, LoadError> {
    cfg.validate()?;
    backend_api::runner::check_cores(&cfg.cores)
        .map_err(|e| LoadError::Config(format!("--cores: {e}")))?;
    super::sys::preflight(&cfg.target, PREFLIGHT_TIMEOUT.min(cfg.connect_timeout))?;

    let threads = cfg.threads();
    let nofile_limit = crate::rlimit::raise_nofile_to_hard();
    let conns = (cfg.connections + cfg.idle) as u64;
    let needed = conns + threads as u64 + FD_MARGIN;
    if nofile_limit < needed {
        return Err(LoadError::TooFewFiles {
            needed,
            limit: nofile_limit,
            what: format!(
                "{} connections{} + {FD_MARGIN} spare",
                cfg.connections,
                if cfg.idle > 0 {
                    format!(" + {} idle", cfg.idle)
                } else {
                    String::new()
                }
            ),
        });
    }

    let spread = matches!(cfg.target, std::net::SocketAddr::V4(a) if a.ip().is_loopback());
    // Internal failures fire `abort`, never the caller's `stop`, which may be shared
    // with the rest of a `harness compare` run.
    let abort = StopSignal::new().map_err(|e| LoadError::setup("creating the abort eventfd", e))?;
    let shared = Arc::new(RunShared {
        cfg: cfg.clone(),
        spread,
        work: workloads::Shared::new(cfg),
        stop: stop.clone(),
        abort: abort.clone(),
    });
    let plans = plans(cfg, threads);
    let threads = plans.len();
    // Every thread plus this one: `ready` once connections are established, `go` once
    // the shared start time is set.
    let ready = Arc::new(Barrier::new(threads + 1));
    let go = Arc::new(Barrier::new(threads + 1));
    let start_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let failed = Arc::new(AtomicBool::new(false));
    let t_spawn = Instant::now();

    let mut handles = Vec::with_capacity(threads);
    for plan in plans {
        let (shared, ready, go, start_at, failed) = (
            Arc::clone(&shared),
            Arc::clone(&ready),
            Arc::clone(&go),
            Arc::clone(&start_at),
            Arc::clone(&failed),
        );
        let thread = plan.thread;
        let spawned = std::thread::Builder::new()
            .name(format!("load-{thread}"))
            .spawn(move || -> Result<ThreadResult, LoadError> {
                let prepared = catch_unwind(AssertUnwindSafe(|| Worker::prepare(&shared, plan)))
                    .unwrap_or_else(|p| {
                        Err(LoadError::Panicked {
                            thread,
                            message: panic_message(&*p),
                        })
                    });
                if prepared.is_err() {
                    failed.store(true, Ordering::SeqCst);
                    shared.abort.fire();
                }
                ready.wait();
                go.wait();
                let worker = prepared?;
                let start = start_at
                    .lock()
                    .map(|g| g.unwrap_or_else(Instant::now))
                    .unwrap_or_else(|_| Instant::now());
                catch_unwind(AssertUnwindSafe(|| worker.run(start))).unwrap_or_else(|p| {
                    shared.abort.fire();
                    Err(LoadError::Panicked {
                        thread,
                        message: panic_message(&*p),
                    })
                })
            });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                // Threads already started wait at the barrier; let them through to stop.
                stop.fire();
                return Err(LoadError::setup(
                    format!("spawning client thread {thread}"),
                    e,
                ));
            }
        }
    }
    ready.wait();
    if failed.load(Ordering::SeqCst) {
        abort.fire();
    }
    let establish_s = t_spawn.elapsed().as_secs_f64();
    let start = Instant::now();
    let started_at_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    if let Ok(mut g) = start_at.lock() {
        *g = Some(start);
    }
    go.wait();
    // Sleeps until `until`, waking often enough to notice a stop or that every thread is
    // done (a request cap ends a run early); false when the run ended first.
    let wait_until = |until: Instant| loop {
        let now = Instant::now();
        if now >= until {
            return true;
        }
        if stop.is_fired() || abort.is_fired() || handles.iter().all(|h| h.is_finished()) {
            return false;
        }
        std::thread::sleep((until - now).min(std::time::Duration::from_millis(5)));
    };
    if wait_until(start + cfg.warmup) {
        observer.window_start();
        wait_until(start + cfg.warmup + cfg.duration);
        observer.window_end();
    }

    let mut results = Vec::with_capacity(threads);
    let mut first_err = None;
    for (i, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(r)) => results.push(r),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(p) => {
                first_err.get_or_insert(LoadError::Panicked {
                    thread: i,
                    message: panic_message(&*p),
                });
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok(merge(
        cfg,
        threads,
        spread,
        nofile_limit,
        establish_s,
        started_at_unix_s,
        results,
    ))
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

/// Splits connections, idle connections, rate and request cap over the threads.
fn plans(cfg: &LoadConfig, threads: usize) -> Vec<Plan> {
    let split = |n: usize, t: usize| n / threads + usize::from(t < n % threads);
    let mut first_conn = 0;
    (0..threads)
        .map(|t| {
            let active = split(cfg.connections, t);
            let share = active as f64 / cfg.connections as f64;
            let plan = Plan {
                thread: t,
                threads,
                core: cfg.cores[t],
                active,
                idle: split(cfg.idle, t),
                first_conn,
                rate: cfg.rate.map(|r| r * share),
                // Thread t's sends fall between thread t-1's: the merged schedule is even.
                phase_ns: cfg.rate.map_or(0, |r| (t as f64 * 1e9 / r) as u64),
                quota: cfg.requests.map(|q| {
                    let q = q as usize;
                    (q / threads + usize::from(t < q % threads)) as u64
                }),
            };
            first_conn += active + plan.idle;
            plan
        })
        .filter(|p| p.active > 0)
        .collect()
}

fn merge(
    cfg: &LoadConfig,
    threads: usize,
    spread: bool,
    nofile_limit: u64,
    establish_s: f64,
    started_at_unix_s: f64,
    results: Vec<ThreadResult>,
) -> LoadReport {
    let open = cfg.is_open_loop();
    let mut latency = NsHistogram::new();
    let mut uncorrected = NsHistogram::new();
    let mut lag = NsHistogram::new();
    let mut connect = NsHistogram::new();
    let mut errors = std::collections::BTreeMap::new();
    let mut req = RequestCounts::default();
    let mut totals = WireTotals::default();
    let mut conns = ConnectionCounts {
        requested: (cfg.connections + cfg.idle) as u64,
        establish_s,
        preflight: 1,
        ..Default::default()
    };
    let mut idle = IdleReport {
        requested: cfg.idle as u64,
        ..Default::default()
    };
    let (mut bytes_out, mut bytes_in) = (0u64, 0u64);
    let mut window_ns = 0u64;
    let mut interrupted = false;
    let mut sys = Syscalls::default();
    let (mut user_ns, mut system_ns) = (0u64, 0u64);
    let mut thread_reports = Vec::with_capacity(results.len());
    for r in &results {
        latency.add(&r.latency);
        uncorrected.add(&r.latency_uncorrected);
        lag.add(&r.lag);
        connect.add(&r.connect);
        for (k, v) in &r.errors {
            *errors.entry(k.to_string()).or_insert(0u64) += v;
        }
        req.sent += r.sent;
        req.completed += r.completed;
        req.failed += r.failed;
        req.unanswered += r.unanswered;
        req.unsent += r.unsent;
        req.requeued += r.requeued;
        totals.requests_sent += r.total_sent;
        totals.replies += r.total_completed;
        totals.bytes_out += r.total_bytes_out;
        totals.bytes_in += r.total_bytes_in;
        bytes_out += r.bytes_out;
        bytes_in += r.bytes_in;
        conns.established += if cfg.workload == Workload::Churn {
            r.active as u64
        } else {
            r.established_at_start + r.idle_established
        };
        conns.connects_ok += r.connects_ok;
        conns.connects_failed += r.connects_failed;
        conns.reconnects += r.reconnects;
        conns.server_closes += r.server_closes;
        idle.established += r.idle_established;
        idle.failed += r.idle_failed;
        idle.lost += r.idle_lost;
        idle.establish_s = idle.establish_s.max(r.idle_establish_ns as f64 / 1e9);
        let w = r.window_end_ns.saturating_sub(r.window_start_ns);
        window_ns = window_ns.max(w);
        interrupted |= r.interrupted;
        sys.add(&r.syscalls);
        user_ns += r.cpu.user_ns;
        system_ns += r.cpu.system_ns;
        let busy = if w > 0 {
            (r.cpu.user_ns + r.cpu.system_ns) as f64 / w as f64
        } else {
            0.0
        };
        thread_reports.push(ThreadReport {
            thread: r.thread,
            core: r.core,
            connections: r.active,
            idle: r.idle,
            cpu_busy: busy,
            user_s: r.cpu.user_ns as f64 / 1e9,
            system_s: r.cpu.system_ns as f64 / 1e9,
            voluntary_switches: r.cpu.voluntary_switches,
            involuntary_switches: r.cpu.involuntary_switches,
            syscalls: r.syscalls.total(),
            completed: r.completed,
        });
    }
    let measured_s = window_ns as f64 / 1e9;
    let per_s = |n: u64| {
        if measured_s > 0.0 {
            n as f64 / measured_s
        } else {
            0.0
        }
    };
    let rps = per_s(req.completed);
    let throughput = Throughput {
        requests_per_s: rps,
        bytes_out,
        bytes_in,
        mb_per_s_out: per_s(bytes_out) / 1e6,
        mb_per_s_in: per_s(bytes_in) / 1e6,
        connections_per_s: (cfg.workload == Workload::Churn).then_some(rps),
    };
    let per_req = |x: f64| {
        if req.completed > 0 {
            x / req.completed as f64
        } else {
            0.0
        }
    };
    let client = ClientCost {
        user_s: user_ns as f64 / 1e9,
        system_s: system_ns as f64 / 1e9,
        cpu_us_per_request: per_req((user_ns + system_ns) as f64 / 1e3),
        syscalls: sys.total(),
        syscalls_per_request: per_req(sys.total() as f64),
        epoll_wait: sys.epoll_wait,
        epoll_ctl: sys.epoll_ctl,
        read: sys.read,
        write: sys.write,
        connection: sys.connection,
    };
    let schedule = cfg.rate.map(|target| {
        let l = lag.summary();
        ScheduleCheck {
            target_rate: target,
            achieved_rate: rps,
            achieved_ratio: rps / target,
            lag_p99_ns: l.p99_ns,
            lag: l,
        }
    });
    let errors_total = errors.values().sum();
    let client_bound = thread_reports
        .iter()
        .any(|t| t.cpu_busy >= CLIENT_BOUND_BUSY);

    let mut flags = Vec::new();
    let mut flag = |code: &str, message: String| {
        flags.push(Flag {
            code: code.to_string(),
            message,
        })
    };
    if client_bound {
        let worst = thread_reports
            .iter()
            .map(|t| t.cpu_busy)
            .fold(0.0, f64::max);
        flag(
            "client_bound",
            format!(
                "a client thread was {:.0}% busy (>= {:.0}%): the numbers may measure the load \
                 generator, not the server; give it more --cores",
                worst * 100.0,
                CLIENT_BOUND_BUSY * 100.0
            ),
        );
    }
    if let Some(s) = &schedule {
        if s.achieved_ratio < 0.99 && !interrupted {
            flag(
                "rate_not_met",
                format!(
                    "achieved {:.1} req/s of the {:.1} asked ({:.1}%)",
                    s.achieved_rate,
                    s.target_rate,
                    s.achieved_ratio * 100.0
                ),
            );
        }
        if s.lag_p99_ns > 1_000_000 {
            flag(
                "schedule_lag",
                format!(
                    "p99 of sends were up to {} behind schedule; latency is corrected for it, \
                     but the client or the connections could not keep up",
                    super::histogram::fmt_ns(s.lag_p99_ns)
                ),
            );
        }
    }
    if conns.established < conns.requested && cfg.workload != Workload::Churn {
        flag(
            "connections_missing",
            format!(
                "{} of {} connections were established",
                conns.established, conns.requested
            ),
        );
    }
    if errors_total > 0 {
        flag(
            "errors",
            format!("{errors_total} errors; see errors by kind"),
        );
    }
    if req.unanswered > 0 {
        flag(
            "unanswered",
            format!(
                "{} requests were unanswered when the {:.1} s drain ended",
                req.unanswered,
                cfg.drain_timeout.as_secs_f64()
            ),
        );
    }
    if interrupted {
        flag(
            "interrupted",
            "the run was stopped early; numbers cover the part that ran".into(),
        );
    }
    if !spread && conns.requested > 20_000 {
        flag(
            "no_source_spread",
            "source addresses are spread only for IPv4 loopback targets; with this many \
             connections ephemeral ports may run out (EADDRNOTAVAIL)"
                .into(),
        );
    }
    if req.completed < 100 && !interrupted {
        flag(
            "few_requests",
            format!(
                "only {} requests were measured; percentiles are coarse",
                req.completed
            ),
        );
    }

    LoadReport {
        schema_version: SCHEMA_VERSION,
        tool: format!("ringside harness {}", env!("CARGO_PKG_VERSION")),
        engine: ENGINE.to_string(),
        started_at_unix_s,
        config: ReportConfig {
            workload: cfg.workload,
            mode: if open { "open" } else { "closed" }.to_string(),
            target: cfg.target,
            host: cfg.host.clone(),
            path: cfg.path.clone(),
            connections: cfg.connections,
            depth: cfg.depth,
            size: if cfg.workload.uses_size() {
                cfg.size
            } else {
                0
            },
            rate: cfg.rate,
            duration_s: cfg.duration.as_secs_f64(),
            warmup_s: cfg.warmup.as_secs_f64(),
            cores: cfg.cores.clone(),
            threads,
            idle: cfg.idle,
            requests: cfg.requests,
            connect_timeout_s: cfg.connect_timeout.as_secs_f64(),
            drain_timeout_s: cfg.drain_timeout.as_secs_f64(),
            source_spread: spread,
            nofile_limit,
        },
        measured_s,
        interrupted,
        requests: req,
        throughput,
        latency: latency.summary(),
        latency_uncorrected: open.then(|| uncorrected.summary()),
        schedule,
        connect_latency: connect.summary(),
        connections: conns,
        idle: (cfg.workload == Workload::Idle).then_some(idle),
        totals,
        errors,
        errors_total,
        threads: thread_reports,
        client,
        client_bound,
        flags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_split_everything_evenly() {
        let mut cfg = LoadConfig::new("127.0.0.1:1".parse().unwrap(), Workload::Echo);
        cfg.cores = vec![0, 1, 2];
        cfg.connections = 10;
        cfg.rate = Some(1000.0);
        cfg.requests = Some(100);
        let p = plans(&cfg, 3);
        assert_eq!(p.iter().map(|p| p.active).collect::<Vec<_>>(), [4, 3, 3]);
        assert_eq!(p.iter().map(|p| p.quota.unwrap()).sum::<u64>(), 100);
        let rate: f64 = p.iter().map(|p| p.rate.unwrap()).sum();
        assert!((rate - 1000.0).abs() < 1e-9);
        assert_eq!(p[1].first_conn, 4);
    }
}
