//! The server's readings at the two edges of a cell's measured window. Where the server
//! runs decides who reads its counters ([`Meter`]): a child of this process is read here
//! (/proc, its cgroup, perf on its pid); a server on another host (`--topology ssh`) reads
//! itself and answers a mark at each edge ([`super::remote`]). Both give the same
//! [`Edge`]s, of which the cell makes one ledger.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::cost::{self, CpuClock, ProcSnapshot, SyscallCounter};
use super::server::ServerProcess;
use crate::load::WindowObserver;

/// How long a remote server may take to answer a mark.
const MARK_TIMEOUT: Duration = Duration::from_secs(5);

/// Marks exchanged with a remote server before the load: its host facts, its clock, its
/// counters before any connection.
const CLOCK_ROUNDS: usize = 4;

/// Who reads the server's counters: where the server runs.
pub(super) enum Meter {
    /// A child of this process, on this host.
    Here {
        pid: u32,
        cgroup: Option<super::cgroup::Usage>,
        counter: Option<SyscallCounter>,
        clock: Option<CpuClock>,
    },
    /// A server on another host, measuring itself; asked at each edge.
    Remote {
        link: super::remote::Link,
        /// Each edge mark's round trip and clock offset.
        marks: Mutex<Vec<(u64, i64)>>,
        /// Why an edge's mark went unanswered.
        failure: Mutex<Option<String>>,
    },
}

impl Meter {
    /// A server edge: its process, syscalls and ledger counters; `closing` tells which
    /// edge (a local counter is started at the opening one and stopped at the closing one).
    fn edge(&self, closing: bool) -> Option<Edge> {
        match self {
            Meter::Here {
                pid,
                cgroup,
                counter,
                clock,
            } => {
                let pid = *pid;
                // Mirror order at the two edges, so the window they span is the same for
                // each reading.
                if !closing {
                    let cores = cost::core_ticks().ok();
                    let server_sched_ns = cost::schedstat_ns(pid).ok();
                    let server_cgroup_ns = cgroup.as_ref().and_then(|g| g.read_ns().ok());
                    let server_clock_ns = clock.as_ref().and_then(|c| c.start().ok()).map(|()| 0);
                    let syscalls = counter.as_ref().and_then(|c| c.start().ok()).map(|()| 0);
                    let proc = cost::snapshot(pid).ok()?;
                    Some(Edge {
                        proc,
                        syscalls,
                        kmem: cost::kernel_mem(),
                        ledger: LedgerEdge {
                            at: Instant::now(),
                            server_unix_ns: None,
                            server_host_cores: cores.clone(),
                            client_host_cores: cores,
                            server_cgroup_ns,
                            server_sched_ns,
                            server_clock_ns,
                        },
                    })
                } else {
                    let snap = cost::snapshot(pid).ok();
                    let syscalls = counter.as_ref().and_then(|c| c.stop().ok());
                    let server_clock_ns = clock.as_ref().and_then(|c| c.stop().ok());
                    let at = Instant::now();
                    let server_cgroup_ns = cgroup.as_ref().and_then(|g| g.read_ns().ok());
                    let server_sched_ns = cost::schedstat_ns(pid).ok();
                    let cores = cost::core_ticks().ok();
                    Some(Edge {
                        proc: snap?,
                        syscalls,
                        kmem: cost::kernel_mem(),
                        ledger: LedgerEdge {
                            at,
                            server_unix_ns: None,
                            server_host_cores: cores.clone(),
                            client_host_cores: cores,
                            server_cgroup_ns,
                            server_sched_ns,
                            server_clock_ns,
                        },
                    })
                }
            }
            Meter::Remote {
                link,
                marks,
                failure,
            } => {
                let marked = match link.mark(MARK_TIMEOUT) {
                    Ok(m) => m,
                    Err(e) => {
                        failure
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(format!("{e:#}"));
                        return None;
                    }
                };
                marks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((marked.round_trip_ns(), marked.clock_offset_ns()));
                Some(Edge::remote(marked))
            }
        }
    }
}

/// Takes the server's snapshots at the edges of the measured window.
pub(super) struct ServerWindow {
    pub(super) meter: Meter,
    pub(super) start: Mutex<Option<Edge>>,
    pub(super) end: Mutex<Option<Edge>>,
}

/// The server as seen at one edge of the measured window.
pub(super) struct Edge {
    pub(super) proc: ProcSnapshot,
    /// Syscalls counted since an origin before the window (0 at the opening edge when the
    /// counter starts there).
    pub(super) syscalls: Option<u64>,
    /// System-wide kernel memory.
    pub(super) kmem: cost::KernelMem,
    /// The ledger's readings.
    pub(super) ledger: LedgerEdge,
}

/// The cost ledger's readings at one edge, taken in mirror order at the two edges so the
/// window they span is the same for each.
pub(super) struct LedgerEdge {
    pub(super) at: Instant,
    /// The server host's clock at its reading (a remote server): the window's length is
    /// taken from it.
    pub(super) server_unix_ns: Option<u64>,
    /// /proc/stat of the host the server runs on.
    pub(super) server_host_cores: Option<std::collections::BTreeMap<usize, cost::CoreTicks>>,
    /// /proc/stat of this host, when the client cores are on it.
    pub(super) client_host_cores: Option<std::collections::BTreeMap<usize, cost::CoreTicks>>,
    /// The server's cgroup: every task that ever ran in it.
    pub(super) server_cgroup_ns: Option<u64>,
    /// The server tree's live tasks by schedstat.
    pub(super) server_sched_ns: Option<u64>,
    /// The server tree by task-clock since an origin before the window.
    pub(super) server_clock_ns: Option<u64>,
}

impl Edge {
    /// An edge from a remote server's answer. The client cores are not on this host (they
    /// are on the client hosts), so this host's /proc/stat says nothing of them.
    fn remote(m: super::remote::Marked) -> Edge {
        let r = m.reading;
        Edge {
            proc: r.proc.unwrap_or_default(),
            syscalls: r.syscalls,
            kmem: r.kmem,
            ledger: LedgerEdge {
                at: m.sent,
                server_unix_ns: Some(r.unix_ns),
                server_host_cores: r.cores,
                client_host_cores: None,
                server_cgroup_ns: r.cgroup_ns,
                server_sched_ns: r.schedstat_ns,
                server_clock_ns: r.task_clock_ns,
            },
        }
    }
}

impl WindowObserver for ServerWindow {
    fn window_start(&self) {
        *self.start.lock().unwrap_or_else(|p| p.into_inner()) = self.meter.edge(false);
    }

    fn window_end(&self) {
        *self.end.lock().unwrap_or_else(|p| p.into_inner()) = self.meter.edge(true);
    }
}

/// What a cell knows of how its server is measured, before the load.
pub(super) struct Site {
    pub(super) meter: Meter,
    /// The server's process before the load.
    pub(super) before: Option<ProcSnapshot>,
    /// Its host's kernel memory before the load.
    pub(super) kmem_before: cost::KernelMem,
    pub(super) syscalls_absent: Option<String>,
    pub(super) clock_absent: Option<String>,
    pub(super) cgroup_method: Option<String>,
    /// The server's host, when it is another one.
    pub(super) host: Option<crate::results::ServerHost>,
}

/// A server child of this process: its counters are opened here, on its pid.
pub(super) fn local_site(server: &ServerProcess) -> Site {
    let before = cost::snapshot(server.pid()).ok();
    let kmem_before = cost::kernel_mem();
    let (counter, syscalls_absent) = match SyscallCounter::open(server.pid()) {
        Ok(c) => (Some(c), None),
        Err(why) => (None, Some(why)),
    };
    let (clock, clock_absent) = match CpuClock::open(server.pid()) {
        Ok(c) => (Some(c), None),
        Err(why) => (None, Some(why)),
    };
    let cgroup = server.cgroup.as_ref().ok().map(|g| g.usage());
    let cgroup_method = cgroup.as_ref().map(|g| g.method().to_string());
    Site {
        meter: Meter::Here {
            pid: server.pid(),
            cgroup,
            counter,
            clock,
        },
        before,
        kmem_before,
        syscalls_absent,
        clock_absent,
        cgroup_method,
        host: None,
    }
}

/// A server measuring itself on another host: a few marks before the load give its host,
/// its clock and its counters before any connection (and prove it answers).
pub(super) fn remote_site(
    link: super::remote::Link,
    label: Option<String>,
) -> anyhow::Result<Site> {
    let mut best: Option<(u64, i64)> = None;
    let mut last = None;
    for _ in 0..CLOCK_ROUNDS {
        let m = link
            .mark(MARK_TIMEOUT)
            .context("asking the server host for its ledger")?;
        let (rtt, offset) = (m.round_trip_ns(), m.clock_offset_ns());
        if best.is_none_or(|(b, _)| rtt < b) {
            best = Some((rtt, offset));
        }
        last = Some(m.reading);
    }
    let r = last.context("no ledger reading")?;
    let (rtt, offset) = best.unwrap_or_default();
    Ok(Site {
        before: r.proc,
        kmem_before: r.kmem,
        syscalls_absent: r.syscalls_absent,
        clock_absent: r.task_clock_absent,
        cgroup_method: r.cgroup_method,
        host: Some(crate::results::ServerHost {
            label: label.unwrap_or_default(),
            host: r.host,
            clock_offset_ns: offset,
            clock_uncertainty_ns: rtt / 2,
            edge_round_trip_ns: 0,
        }),
        meter: Meter::Remote {
            link,
            marks: Mutex::new(Vec::new()),
            failure: Mutex::new(None),
        },
    })
}
