//! What the client threads counted, merged into one [`LoadReport`], with the flags that
//! say when the numbers are doubtful.

use super::histogram::NsHistogram;
use super::report::*;
use super::worker::{Syscalls, ThreadResult};
use super::workloads::Connect;
use super::{LoadConfig, ENGINE};

pub(super) fn merge(
    cfg: &LoadConfig,
    threads: usize,
    spread: bool,
    nofile_limit: u64,
    establish_s: f64,
    started_at_unix_s: f64,
    results: Vec<ThreadResult>,
) -> LoadReport {
    let open = cfg.is_open_loop();
    let facts = cfg.workload.kind.facts();
    let per_request = facts.connect == Connect::PerRequest;
    let mut latency = NsHistogram::new();
    let mut uncorrected = NsHistogram::new();
    let mut lag = NsHistogram::new();
    let mut connect = NsHistogram::new();
    let mut errors = std::collections::BTreeMap::new();
    let mut req = RequestCounts::default();
    let mut totals = WireTotals::default();
    let mut conns = ConnectionCounts {
        requested: (cfg.workload.connections + cfg.workload.idle) as u64,
        establish_s,
        preflight: 1,
        ..Default::default()
    };
    let mut idle = IdleReport {
        requested: cfg.workload.idle as u64,
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
        conns.established += if per_request {
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
        connections_per_s: per_request.then_some(rps),
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
    let schedule = cfg
        .workload
        .rate
        .map(|target| ScheduleCheck::of(target, rps, lag.summary()));
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
    if conns.established < conns.requested && !per_request {
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
            workload: cfg.workload.kind,
            mode: if open { "open" } else { "closed" }.to_string(),
            target: cfg.target,
            host: cfg.host.clone(),
            path: cfg.path.clone(),
            connections: cfg.workload.connections,
            depth: cfg.workload.depth,
            size: if cfg.workload.kind.uses_size() {
                cfg.workload.size
            } else {
                0
            },
            rate: cfg.workload.rate,
            duration_s: cfg.workload.duration.as_secs_f64(),
            warmup_s: cfg.workload.warmup.as_secs_f64(),
            cores: cfg.cores.clone(),
            threads,
            idle: cfg.workload.idle,
            requests: cfg.workload.requests,
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
        idle: facts.holds_idle.then_some(idle),
        totals,
        errors,
        errors_total,
        threads: thread_reports,
        client,
        client_bound,
        flags,
        agents: Vec::new(),
    }
}
