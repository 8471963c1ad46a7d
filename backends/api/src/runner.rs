//! The shard runner: one pinned thread per core, one listener per shard, one stop signal.
//!
//! Used by `harness serve` and by the conformance suite alike, so what is tested is what is
//! measured.

use std::any::Any;
use std::io;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use crate::listener::{bind_shard_listener, EffectiveBacklog, DEFAULT_BACKLOG};
use crate::{Backend, Limits, Service, ShardContext, ShardStats, StopSignal};

/// How to run a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The application every connection runs.
    pub service: Service,
    /// One shard per entry, pinned to that CPU. Repeating a CPU oversubscribes it (useful in
    /// tests on small machines; the harness CLI refuses it).
    pub cores: Vec<usize>,
    /// Address to listen on; port 0 picks a free port shared by every shard.
    pub listen: SocketAddr,
    /// Backlog asked of `listen(2)`.
    pub backlog: u32,
    /// Per-shard limits.
    pub limits: Limits,
}

impl ServerConfig {
    /// A config for `service` on the given cores, listening on a free loopback port.
    pub fn new(service: Service, cores: Vec<usize>) -> ServerConfig {
        ServerConfig {
            service,
            cores,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            backlog: DEFAULT_BACKLOG,
            limits: Limits::default(),
        }
    }
}

/// Why a server could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// No cores given.
    #[error("no cores given; name at least one, e.g. --cores 0")]
    NoCores,
    /// A core that is not usable by this process.
    #[error("core {core} {why}; usable cores: {}", list(.usable))]
    BadCore {
        /// The core asked for.
        core: usize,
        /// "does not exist" or "is not in this process's CPU affinity mask".
        why: &'static str,
        /// Cores this process may run on.
        usable: Vec<usize>,
    },
    /// The backend's probe failed.
    #[error("backend {backend} is unsupported here: {reason}")]
    Unsupported {
        /// Backend name.
        backend: &'static str,
        /// The probe's reason.
        reason: String,
    },
    /// Creating the stop signal, binding or spawning failed.
    #[error("{what}: {source}")]
    Setup {
        /// What was being done.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// Pinning a shard thread failed.
    #[error("backend {backend} shard {shard}: pinning to core {core} failed (sched_setaffinity refused); check the core is online and allowed (taskset -p $$)")]
    Pin {
        /// Backend name.
        backend: &'static str,
        /// Shard index.
        shard: usize,
        /// Core it was to be pinned to.
        core: usize,
    },
    /// A shard returned an error.
    #[error("backend {backend} shard {shard} (core {core}) failed: {source}")]
    ShardFailed {
        /// Backend name.
        backend: &'static str,
        /// Shard index.
        shard: usize,
        /// Its core.
        core: usize,
        /// What it returned.
        source: io::Error,
    },
    /// A shard panicked (a bug in the backend).
    #[error("backend {backend} shard {shard} (core {core}) panicked: {message}")]
    ShardPanicked {
        /// Backend name.
        backend: &'static str,
        /// Shard index.
        shard: usize,
        /// Its core.
        core: usize,
        /// The panic message.
        message: String,
    },
}

fn list(cores: &[usize]) -> String {
    let v: Vec<String> = cores.iter().map(|c| c.to_string()).collect();
    v.join(",")
}

/// What a finished server counted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunReport {
    /// Backend name.
    pub backend: String,
    /// The sum over shards.
    pub total: ShardStats,
    /// Each shard's own counters, by shard index.
    pub shards: Vec<ShardStats>,
}

/// Cores this process may run on (its affinity mask), ascending.
pub fn usable_cores() -> Vec<usize> {
    let mut v: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    v.sort_unstable();
    v
}

/// Checks every core exists and is in the affinity mask.
pub fn check_cores(cores: &[usize]) -> Result<(), RunnerError> {
    if cores.is_empty() {
        return Err(RunnerError::NoCores);
    }
    let usable = usable_cores();
    // SAFETY: sysconf has no memory-safety preconditions.
    let configured = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) }.max(1) as usize;
    for &core in cores {
        if !usable.contains(&core) {
            let why = if core >= configured {
                "does not exist"
            } else {
                "is not in this process's CPU affinity mask"
            };
            return Err(RunnerError::BadCore { core, why, usable });
        }
    }
    Ok(())
}

type ShardOutcome = Result<ShardStats, RunnerError>;

/// A server whose shards are all pinned and listening.
pub struct RunningServer {
    backend: &'static str,
    addr: SocketAddr,
    backlog: EffectiveBacklog,
    stop: StopSignal,
    shards: Vec<JoinHandle<ShardOutcome>>,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("backend", &self.backend)
            .field("addr", &self.addr)
            .field("shards", &self.shards.len())
            .finish()
    }
}

/// Starts `backend` as configured. Returns once every shard is pinned and every listener
/// listens, so the caller may announce readiness.
pub fn start(
    backend: Arc<dyn Backend>,
    config: ServerConfig,
) -> Result<RunningServer, RunnerError> {
    let name = backend.name();
    check_cores(&config.cores)?;
    backend.probe().map_err(|u| RunnerError::Unsupported {
        backend: name,
        reason: u.reason,
    })?;
    let setup = |what: String| move |source| RunnerError::Setup { what, source };

    let stop = StopSignal::new().map_err(setup("creating the stop eventfd".into()))?;
    // The first bind resolves port 0; the others join it through SO_REUSEPORT.
    let first = bind_shard_listener(config.listen, config.backlog)
        .map_err(setup(format!("binding {}", config.listen)))?;
    let addr = first
        .local_addr()
        .map_err(setup("reading the bound address".into()))?;
    let mut listeners = vec![first];
    for _ in 1..config.cores.len() {
        listeners.push(
            bind_shard_listener(addr, config.backlog).map_err(setup(format!("binding {addr}")))?,
        );
    }

    static NEXT_SERVER_ID: AtomicU64 = AtomicU64::new(1);
    let server_id = NEXT_SERVER_ID.fetch_add(1, Ordering::Relaxed);
    let shard_count = listeners.len();
    let (pinned_tx, pinned_rx) = mpsc::channel::<Result<(), RunnerError>>();
    let mut shards = Vec::with_capacity(listeners.len());
    for (shard, (listener, &core)) in listeners.into_iter().zip(&config.cores).enumerate() {
        let ctx = ShardContext {
            shard,
            core,
            shards: shard_count,
            server_id,
            listener,
            service: config.service,
            limits: config.limits,
            stop: stop.clone(),
        };
        let backend = Arc::clone(&backend);
        let pinned_tx = pinned_tx.clone();
        let stop = stop.clone();
        let handle = std::thread::Builder::new()
            .name(format!("{name}-shard{shard}"))
            .spawn(move || {
                let outcome = run_pinned(&*backend, ctx, &pinned_tx);
                if outcome.is_err() {
                    // One failed shard stops the whole server: a partial server would
                    // produce numbers that look valid and are not.
                    stop.fire();
                }
                outcome
            })
            .map_err(setup(format!("spawning shard {shard}")))?;
        shards.push(handle);
    }
    drop(pinned_tx);

    let server = RunningServer {
        backend: name,
        addr,
        backlog: EffectiveBacklog::probe(config.backlog),
        stop,
        shards,
    };
    // Wait until every shard is pinned (or one failed to pin).
    for _ in 0..server.shards.len() {
        match pinned_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                server.stop.fire();
                let _ = server.join();
                return Err(e);
            }
            // A shard thread died before reporting: join says why.
            Err(_) => {
                return Err(server.join().err().unwrap_or_else(|| RunnerError::Setup {
                    what: "a shard thread exited before reporting that it was pinned".into(),
                    source: io::Error::other("no report from the shard thread"),
                }))
            }
        }
    }
    Ok(server)
}

fn run_pinned(
    backend: &dyn Backend,
    ctx: ShardContext,
    pinned: &mpsc::Sender<Result<(), RunnerError>>,
) -> ShardOutcome {
    let (name, shard, core) = (backend.name(), ctx.shard, ctx.core);
    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        let _ = pinned.send(Err(RunnerError::Pin {
            backend: name,
            shard,
            core,
        }));
        return Err(RunnerError::Pin {
            backend: name,
            shard,
            core,
        });
    }
    let _ = pinned.send(Ok(()));
    match catch_unwind(AssertUnwindSafe(|| backend.run_shard(ctx))) {
        Ok(Ok(stats)) => Ok(stats),
        Ok(Err(source)) => Err(RunnerError::ShardFailed {
            backend: name,
            shard,
            core,
            source,
        }),
        Err(panic) => Err(RunnerError::ShardPanicked {
            backend: name,
            shard,
            core,
            message: panic_message(&*panic),
        }),
    }
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

impl RunningServer {
    /// The address every shard listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The backlog the kernel uses, with any somaxconn warning.
    pub fn backlog(&self) -> &EffectiveBacklog {
        &self.backlog
    }

    /// The server's stop signal (fire it from anywhere to stop every shard).
    pub fn stop_signal(&self) -> StopSignal {
        self.stop.clone()
    }

    /// Fires the stop signal and waits for every shard.
    pub fn stop(self) -> Result<RunReport, RunnerError> {
        self.stop.fire();
        self.join()
    }

    /// Waits for every shard to exit (after a stop, or after one failed) and sums their
    /// stats. The first failure, by shard index, is returned.
    pub fn join(mut self) -> Result<RunReport, RunnerError> {
        let handles = std::mem::take(&mut self.shards);
        let mut shards = Vec::with_capacity(handles.len());
        let mut first_err = None;
        for (shard, handle) in handles.into_iter().enumerate() {
            let outcome = handle.join().unwrap_or_else(|p| {
                Err(RunnerError::ShardPanicked {
                    backend: self.backend,
                    shard,
                    core: usize::MAX,
                    message: panic_message(&*p),
                })
            });
            match outcome {
                Ok(s) => shards.push(s),
                Err(e) => {
                    shards.push(ShardStats::default());
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        let mut total = ShardStats::default();
        for s in &shards {
            total += *s;
        }
        Ok(RunReport {
            backend: self.backend.to_string(),
            total,
            shards,
        })
    }
}

impl Drop for RunningServer {
    /// A server dropped without [`RunningServer::stop`] or [`RunningServer::join`] (a
    /// failed test, an early return) is told to stop, so its shards do not outlive it.
    fn drop(&mut self) {
        if !self.shards.is_empty() {
            self.stop.fire();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Unsupported;

    struct Faulty(&'static str);
    impl Backend for Faulty {
        fn name(&self) -> &'static str {
            "faulty"
        }
        fn describe(&self) -> &'static str {
            "test backend"
        }
        fn probe(&self) -> Result<(), Unsupported> {
            Ok(())
        }
        fn run_shard(&self, ctx: ShardContext) -> io::Result<ShardStats> {
            match (self.0, ctx.shard) {
                ("panic", 1) => panic!("boom in shard 1"),
                ("error", 1) => Err(io::Error::other("broken")),
                _ => {
                    // Healthy shards wait for the stop signal like a real backend.
                    let mut pfd = libc::pollfd {
                        fd: std::os::fd::AsRawFd::as_raw_fd(&ctx.stop),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: `pfd` is a live pollfd for the call (count 1); the kernel writes only revents.
                    unsafe { crate::syscall!(poll(&mut pfd, 1, -1)) }?;
                    Ok(ShardStats {
                        accepted: 1,
                        ..Default::default()
                    })
                }
            }
        }
    }

    fn cores2() -> Vec<usize> {
        let c = usable_cores();
        vec![c[0], *c.last().unwrap()]
    }

    #[test]
    fn failing_or_panicking_shard_stops_the_others_and_is_named() {
        for (mode, want) in [
            ("panic", "panicked: boom in shard 1"),
            ("error", "failed: broken"),
        ] {
            let server = start(
                Arc::new(Faulty(mode)),
                ServerConfig::new(Service::Echo, cores2()),
            )
            .unwrap();
            let err = server.join().unwrap_err().to_string();
            assert!(
                err.contains("faulty shard 1") && err.contains(want),
                "{err}"
            );
        }
    }

    #[test]
    fn stats_are_summed() {
        let server = start(
            Arc::new(Faulty("ok")),
            ServerConfig::new(Service::Echo, cores2()),
        )
        .unwrap();
        let report = server.stop().unwrap();
        assert_eq!(report.total.accepted, 2);
        assert_eq!(report.shards.len(), 2);
    }

    #[test]
    fn dropping_a_server_stops_its_shards() {
        let server = start(
            Arc::new(Faulty("ok")),
            ServerConfig::new(Service::Echo, cores2()),
        )
        .unwrap();
        let stop = server.stop_signal();
        drop(server);
        assert!(stop.is_fired());
    }

    #[test]
    fn bad_cores_list_the_usable_ones() {
        let err = check_cores(&[100_000]).unwrap_err().to_string();
        assert!(
            err.contains("core 100000 does not exist; usable cores: "),
            "{err}"
        );
        assert!(matches!(check_cores(&[]), Err(RunnerError::NoCores)));
    }
}
