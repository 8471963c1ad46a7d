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

use super::merge::merge;
use super::report::LoadReport;
use super::worker::{Plan, RunShared, ThreadResult, Worker};
use super::workloads::{Plugin, Visit};
use super::{LoadConfig, LoadError, FD_MARGIN};

/// The engine name recorded in every report.
pub const ENGINE: &str = "epoll";

/// Longest the preflight connection may take: an unreachable target is an error within a
/// second, not a hang.
const PREFLIGHT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

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
    run_load_at(cfg, stop, observer, None)
}

/// Like [`run_load_observed`], with the measured clock starting no earlier than
/// `start_at` (wall clock), once every connection is established: load agents on
/// several processes or hosts start together this way. A start already past begins at
/// once.
pub fn run_load_at(
    cfg: &LoadConfig,
    stop: &StopSignal,
    observer: &dyn WindowObserver,
    start_at: Option<SystemTime>,
) -> Result<LoadReport, LoadError> {
    cfg.validate()?;
    backend_api::runner::check_cores(&cfg.cores)
        .map_err(|e| LoadError::Config(format!("--cores: {e}")))?;
    super::sys::preflight(&cfg.target, PREFLIGHT_TIMEOUT.min(cfg.connect_timeout))?;

    let threads = cfg.threads();
    let nofile_limit = crate::rlimit::raise_nofile_to_hard();
    let conns = (cfg.workload.connections + cfg.workload.idle) as u64;
    let needed = conns + threads as u64 + FD_MARGIN;
    if nofile_limit < needed {
        return Err(LoadError::TooFewFiles {
            needed,
            limit: nofile_limit,
            what: format!(
                "{} connections{} + {FD_MARGIN} spare",
                cfg.workload.connections,
                if cfg.workload.idle > 0 {
                    format!(" + {} idle", cfg.workload.idle)
                } else {
                    String::new()
                }
            ),
        });
    }

    let spread = matches!(cfg.target, std::net::SocketAddr::V4(a) if a.ip().is_loopback());
    cfg.workload.kind.visit(Run {
        cfg,
        stop,
        observer,
        spread,
        nofile_limit,
        start_at,
    })
}

/// The part of a run that depends on the workload's type: the threads and the merge.
struct Run<'a> {
    cfg: &'a LoadConfig,
    stop: &'a StopSignal,
    observer: &'a dyn WindowObserver,
    spread: bool,
    nofile_limit: u64,
    start_at: Option<SystemTime>,
}

impl Visit for Run<'_> {
    type Out = Result<LoadReport, LoadError>;

    fn visit<P: Plugin>(self) -> Self::Out {
        let Run {
            cfg,
            stop,
            observer,
            spread,
            nofile_limit,
            start_at: common_start,
        } = self;
        let threads = cfg.threads();
        // Internal failures fire `abort`, never the caller's `stop`, which may be shared
        // with the rest of a `harness compare` run.
        let abort =
            StopSignal::new().map_err(|e| LoadError::setup("creating the abort eventfd", e))?;
        let shared = Arc::new(RunShared {
            cfg: cfg.clone(),
            spread,
            work: P::new(cfg),
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
                    let prepared =
                        catch_unwind(AssertUnwindSafe(|| Worker::<P>::prepare(&shared, plan)))
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
        if let Some(at) = common_start {
            // Waits in short steps so a stop during the wait is seen.
            while let Ok(left) = at.duration_since(SystemTime::now()) {
                if left.is_zero() || stop.is_fired() || abort.is_fired() {
                    break;
                }
                std::thread::sleep(left.min(std::time::Duration::from_millis(5)));
            }
        }
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
        if wait_until(start + cfg.workload.warmup) {
            observer.window_start();
            wait_until(start + cfg.workload.warmup + cfg.workload.duration);
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
            let active = split(cfg.workload.connections, t);
            let share = active as f64 / cfg.workload.connections as f64;
            let plan = Plan {
                thread: t,
                threads,
                core: cfg.cores[t],
                active,
                idle: split(cfg.workload.idle, t),
                first_conn,
                rate: cfg.workload.rate.map(|r| r * share),
                // Thread t's sends fall between thread t-1's: the merged schedule is even.
                phase_ns: cfg.workload.rate.map_or(0, |r| (t as f64 * 1e9 / r) as u64),
                quota: cfg.workload.requests.map(|q| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Workload;

    #[test]
    fn plans_split_everything_evenly() {
        let mut cfg = LoadConfig::new("127.0.0.1:1".parse().unwrap(), Workload::Echo);
        cfg.cores = vec![0, 1, 2];
        cfg.workload.connections = 10;
        cfg.workload.rate = Some(1000.0);
        cfg.workload.requests = Some(100);
        let p = plans(&cfg, 3);
        assert_eq!(p.iter().map(|p| p.active).collect::<Vec<_>>(), [4, 3, 3]);
        assert_eq!(p.iter().map(|p| p.quota.unwrap()).sum::<u64>(), 100);
        let rate: f64 = p.iter().map(|p| p.rate.unwrap()).sum();
        assert!((rate - 1000.0).abs() < 1e-9);
        assert_eq!(p[1].first_conn, 4);
    }
}
