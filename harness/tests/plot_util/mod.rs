//! Helpers of the plot and report tests: the generator of `tests/fixtures/results.json`.
//!
//! The fixture is a plausible `harness compare` run on a 4-core box, built to exercise
//! every chart kind: an echo connection sweep, a 16 KiB sweep, HTTP depth 16, a stream
//! sweep without histograms, an open-loop rate sweep with corrected and uncorrected
//! histograms, a server-cores sweep, an idle sweep with an unsupported cell, and churn;
//! plus a failed cell, client-bound cells and a backend whose syscalls were not counted.
//! Regenerate it with `UPDATE_SNAPSHOTS=1 cargo test -p harness --test plot_render`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine;
use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

use harness::results::{
    Cell, CellStatus, ClientMeasure, Manifest, Percentiles, Plan, ResultsFile, RunState,
    ServerCost, SkippedBackend, WorkloadKind, WorkloadSpec, SCHEMA_VERSION,
};

/// Backends of the fixture, in legend order.
pub const BACKENDS: [&str; 4] = ["epoll-et", "epoll-lt", "uring", "glommio"];

/// Where the committed fixture lives.
pub fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/results.json")
}

/// Whether tests should rewrite committed snapshots instead of comparing.
pub fn updating() -> bool {
    std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v != "0")
}

/// The committed fixture, parsed.
pub fn load_fixture() -> ResultsFile {
    harness::results::read_results(&fixture_path()).expect("reading the committed fixture")
}

/// SplitMix64: tiny, deterministic, good enough for plausible noise.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-12);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    /// 1 ± `pct`/100, uniformly.
    pub fn jitter(&mut self, pct: f64) -> f64 {
        1.0 + (self.unit() * 2.0 - 1.0) * pct / 100.0
    }
}

/// A latency histogram in µs: log-normal around `p50`, with a 1% and a 0.1% tail
/// `tail`× and 10·`tail`× further out. 4000 samples, each counted `weight` times.
fn latency(rng: &mut Rng, p50: f64, tail: f64, weight: u64) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for _ in 0..4000 {
        let mut v = p50 * (0.3 * rng.normal()).exp();
        let u = rng.unit();
        if u < 0.001 {
            v *= 10.0 * tail * (1.0 + rng.unit());
        } else if u < 0.011 {
            v *= tail * (1.0 + rng.unit());
        }
        h.record_n((v.round() as u64).clamp(1, 60_000_000), weight)
            .unwrap();
    }
    h
}

fn encode(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new().serialize(h, &mut bytes).unwrap();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    Percentiles {
        p50: h.value_at_quantile(0.5) as f64,
        p90: h.value_at_quantile(0.9) as f64,
        p99: h.value_at_quantile(0.99) as f64,
        p999: h.value_at_quantile(0.999) as f64,
        max: h.max() as f64,
        mean: (h.mean() * 100.0).round() / 100.0,
    }
}

fn round(v: f64, decimals: i32) -> f64 {
    let m = 10f64.powi(decimals);
    (v * m).round() / m
}

/// Per-backend personality: peak req/s at 64 B on one core, CPU split, syscalls/req.
struct Personality {
    peak: f64,
    sys_share: f64,
    syscalls: Option<f64>,
    ctx: f64,
    rss_per_conn: f64,
}

fn personality(backend: &str) -> Personality {
    match backend {
        "epoll-et" => Personality {
            peak: 150_000.0,
            sys_share: 0.72,
            syscalls: Some(2.1),
            ctx: 0.004,
            rss_per_conn: 1400.0,
        },
        "epoll-lt" => Personality {
            peak: 138_000.0,
            sys_share: 0.76,
            syscalls: Some(3.05),
            ctx: 0.005,
            rss_per_conn: 1400.0,
        },
        "uring" => Personality {
            peak: 176_000.0,
            sys_share: 0.61,
            syscalls: Some(0.16),
            ctx: 0.002,
            rss_per_conn: 4300.0,
        },
        _ => Personality {
            peak: 163_000.0,
            sys_share: 0.58,
            syscalls: None,
            ctx: 0.011,
            rss_per_conn: 5200.0,
        },
    }
}

struct Builder {
    rng: Rng,
    cells: Vec<Cell>,
    clock_s: f64,
}

/// What one cell should look like; the builder fills in the rest consistently.
struct Spec {
    group: &'static str,
    backend: &'static str,
    workload: WorkloadSpec,
    repeat: u32,
    server_cores: Vec<usize>,
    /// Requests/s achieved.
    rps: f64,
    client_bound: bool,
    status: CellStatus,
    with_histogram: bool,
}

impl Builder {
    fn started_at(&self) -> String {
        let total = self.clock_s.round() as u64;
        format!(
            "2026-05-01T{:02}:{:02}:{:02}Z",
            9 + total / 3600,
            (total / 60) % 60,
            total % 60
        )
    }

    fn push(&mut self, spec: Spec) {
        let w = spec.workload.clone();
        let started_at = self.started_at();
        let wall_s = round(
            w.duration.as_secs_f64() + w.warmup.as_secs_f64() + 0.8 + self.rng.unit() * 0.4,
            2,
        );
        self.clock_s += wall_s;
        if spec.status != CellStatus::Ok {
            self.cells.push(Cell {
                group: spec.group.to_string(),
                backend: spec.backend.to_string(),
                workload: w,
                repeat: spec.repeat,
                server_cores: spec.server_cores,
                client_cores: vec![3],
                started_at,
                wall_s,
                status: spec.status,
                client: None,
                server: None,
                ledger: None,
                external: false,
                agents: Vec::new(),
                server_host: None,
            });
            return;
        }
        let p = personality(spec.backend);
        let rps = round(spec.rps, 1);
        let requests = (rps * w.duration.as_secs_f64()).round() as u64;
        let in_flight = (w.connections * w.depth.max(1)) as f64;
        // Little's law for closed loop; service time plus queueing for open loop.
        let (hist, uncorrected, achieved) = match w.rate {
            None => {
                let p50 = (in_flight / rps * 1e6).max(8.0);
                let h = latency(&mut self.rng, p50, 3.0, 25);
                (h, None, rps)
            }
            Some(target) => {
                let capacity = p.peak * 0.97;
                let rho = (target / capacity).min(1.2);
                let service = 28.0;
                let unc = latency(&mut self.rng, service * (1.0 + rho), 3.0, 25);
                let queue = if rho >= 1.0 { 400.0 } else { 1.0 / (1.0 - rho) };
                let cor = latency(
                    &mut self.rng,
                    service * (1.0 + rho) * queue.sqrt(),
                    3.0 + queue,
                    25,
                );
                let achieved = if rho >= 1.0 {
                    capacity * 0.99
                } else {
                    target * 0.999
                };
                (cor, Some(unc), round(achieved, 1))
            }
        };
        let busy = if spec.client_bound {
            0.97
        } else {
            0.55 + self.rng.unit() * 0.3
        };
        let cpu_per_req = 1e6 / p.peak
            * (spec.server_cores.len() as f64).max(1.0)
            * 0.93
            * self.rng.jitter(2.0)
            * if w.kind == WorkloadKind::Churn {
                6.0
            } else {
                1.0
            }
            * (1.0 + (w.size as f64) / 65_536.0)
            * (1.0 + (w.idle as f64) / 400_000.0);
        let cpu_user = round(cpu_per_req * (1.0 - p.sys_share), 3);
        let cpu_sys = round(cpu_per_req * p.sys_share, 3);
        let dur = w.duration.as_secs_f64();
        let syscalls_per_req = p.syscalls.map(|s| round(s * self.rng.jitter(1.5), 3));
        let conns = (w.connections as f64) + (w.idle as f64);
        let churn = w.kind == WorkloadKind::Churn;
        let connect = churn.then(|| {
            let h = latency(&mut self.rng, 38.0 * p.peak.recip() * 150_000.0, 4.0, 1);
            percentiles(&h)
        });
        let mbps = round(rps * (w.size as f64) / 1e6, 2);
        let client = ClientMeasure {
            requests,
            duration_s: dur,
            throughput_rps: rps,
            mbps_out: mbps,
            mbps_in: mbps,
            latency_us: percentiles(&hist),
            latency_uncorrected_us: uncorrected.as_ref().map(percentiles),
            histogram: spec.with_histogram.then(|| encode(&hist)),
            histogram_uncorrected: uncorrected.as_ref().map(encode),
            target_rate: w.rate,
            achieved_rate: achieved,
            schedule_lag_p99_us: w.rate.map(|_| round(3.0 + self.rng.unit() * 20.0, 1)),
            client_cpu_util: vec![round(busy, 3)],
            client_bound: spec.client_bound,
            saturated: false,
            connections_requested: conns as u64,
            connections_established: conns as u64,
            connect_latency_us: connect,
            connections_per_s: churn.then_some(rps),
            idle_establish_s: (w.kind == WorkloadKind::Idle)
                .then(|| round(w.idle as f64 / 90_000.0, 3)),
            errors: BTreeMap::new(),
            engine: "epoll".to_string(),
        };
        let rss_base = 6_000_000.0;
        let server = ServerCost {
            cpu_user_s: round(cpu_user * requests as f64 / 1e6, 4),
            cpu_sys_s: round(cpu_sys * requests as f64 / 1e6, 4),
            cpu_user_us_per_req: cpu_user,
            cpu_sys_us_per_req: cpu_sys,
            cpu_busy: round(
                ((cpu_user + cpu_sys) * rps / 1e6).min(spec.server_cores.len() as f64),
                3,
            ),
            syscalls: syscalls_per_req.map(|s| (s * requests as f64) as u64),
            syscalls_per_req,
            syscalls_absent: p.syscalls.is_none().then(|| {
                "perf_event_open on raw_syscalls:sys_enter: EACCES \
                 (kernel.perf_event_paranoid = 3)"
                    .to_string()
            }),
            ctx_voluntary: (p.ctx * requests as f64 * 0.8) as u64,
            ctx_involuntary: (p.ctx * requests as f64 * 0.2) as u64,
            ctx_per_req: round(p.ctx * self.rng.jitter(5.0), 5),
            rss_peak_bytes: (rss_base + p.rss_per_conn * conns) as u64,
            rss_per_conn_bytes: Some(round(p.rss_per_conn * self.rng.jitter(3.0), 1)),
            kernel_sock_mem_bytes: Some((conns * 2.0 * 2300.0 + 1.2e6) as u64 / 4096 * 4096),
            kernel_slab_bytes: Some((conns * 2.0 * 3900.0 + 3.0e5) as i64),
            stats: None,
        };
        self.cells.push(Cell {
            group: spec.group.to_string(),
            backend: spec.backend.to_string(),
            workload: w,
            repeat: spec.repeat,
            server_cores: spec.server_cores,
            client_cores: vec![3],
            started_at,
            wall_s,
            status: CellStatus::Ok,
            client: Some(client),
            server: Some(server),
            ledger: None,
            external: false,
            agents: Vec::new(),
            server_host: None,
        });
    }
}

fn workload(kind: WorkloadKind, connections: u32, depth: u32, size: u32) -> WorkloadSpec {
    WorkloadSpec {
        kind,
        connections: connections as usize,
        depth: depth as usize,
        size: size as usize,
        rate: None,
        duration: std::time::Duration::from_secs(10),
        warmup: std::time::Duration::from_secs(2),
        idle: 0,
        requests: None,
    }
}

fn ok(
    group: &'static str,
    backend: &'static str,
    workload: WorkloadSpec,
    repeat: u32,
    rps: f64,
) -> Spec {
    Spec {
        group,
        backend,
        workload,
        repeat,
        server_cores: vec![0],
        rps,
        client_bound: false,
        status: CellStatus::Ok,
        with_histogram: true,
    }
}

/// Builds the fixture. Deterministic: the same bytes every time (for one hdrhistogram /
/// flate2 version).
pub fn fixture() -> ResultsFile {
    let mut b = Builder {
        rng: Rng::new(0x5EED_0007),
        cells: Vec::new(),
        clock_s: 0.0,
    };
    let conn_factor = |c: u32| match c {
        1 => 0.19,
        16 => 0.81,
        64 => 1.0,
        _ => 0.965,
    };
    // Repeats interleaved across backends, as `harness compare` runs them.
    for repeat in 0..3 {
        for &c in &[1u32, 16, 64, 256] {
            for &be in &BACKENDS {
                let rps = personality(be).peak * conn_factor(c) * b.rng.jitter(1.5);
                let mut spec = ok(
                    "echo-64B",
                    be,
                    workload(WorkloadKind::Echo, c, 1, 64),
                    repeat,
                    rps,
                );
                if c == 256 && be == "uring" && repeat == 1 {
                    spec.status = CellStatus::Failed {
                        reason: "server exited with signal 11 (SIGSEGV) during the measured \
                                 window"
                            .to_string(),
                        stderr_tail: "shard 0: completion for unknown user_data 0x7f00\n\
                                      Segmentation fault"
                            .to_string(),
                    };
                }
                spec.client_bound = c == 256 && be == "epoll-lt";
                b.push(spec);
            }
        }
        for &c in &[16u32, 64] {
            for &be in &BACKENDS {
                let rps = personality(be).peak * 0.42 * conn_factor(c) * b.rng.jitter(2.0);
                b.push(ok(
                    "echo-16KiB",
                    be,
                    workload(WorkloadKind::Echo, c, 1, 16 * 1024),
                    repeat,
                    rps,
                ));
            }
        }
        for &be in &BACKENDS {
            let rps = personality(be).peak * 1.9 * b.rng.jitter(2.0);
            let mut spec = ok(
                "http-d16",
                be,
                workload(WorkloadKind::Http, 64, 16, 0),
                repeat,
                rps,
            );
            spec.client_bound = be == "uring" && repeat != 1;
            b.push(spec);
        }
        for &c in &[1u32, 4] {
            for &be in &BACKENDS {
                let mbps =
                    if c == 1 { 2900.0 } else { 3600.0 } * b.rng.jitter(3.0) * personality(be).peak
                        / 160_000.0;
                let mut spec = ok(
                    "stream-1MiB",
                    be,
                    workload(WorkloadKind::Stream, c, 1, 1 << 20),
                    repeat,
                    mbps * 1e6 / f64::from(1u32 << 20),
                );
                spec.with_histogram = false;
                b.push(spec);
            }
        }
        for &be in &BACKENDS {
            let rps = personality(be).peak * 0.14 * b.rng.jitter(3.0);
            let mut spec = ok(
                "churn",
                be,
                workload(WorkloadKind::Churn, 50, 1, 0),
                repeat,
                rps,
            );
            spec.client_bound = be == "glommio" && repeat == 2;
            b.push(spec);
        }
    }
    // One run each from here on: sweeps that are long on a real box.
    for &rate in &[20_000.0, 60_000.0, 100_000.0, 140_000.0] {
        for &be in &BACKENDS {
            let mut w = workload(WorkloadKind::Echo, 64, 1, 64);
            w.rate = Some(rate);
            let capacity = personality(be).peak * 0.97;
            let achieved = rate.min(capacity * 0.99);
            b.push(ok("echo-64B-open-loop", be, w, 0, achieved));
        }
    }
    for cores in [vec![0, 1], vec![0, 1, 2]] {
        for &be in &BACKENDS {
            let scale = if cores.len() == 2 { 1.86 } else { 2.55 };
            let mut spec = ok(
                "echo-64B-cores",
                be,
                workload(WorkloadKind::Echo, 64, 1, 64),
                0,
                personality(be).peak * scale * b.rng.jitter(1.5),
            );
            spec.client_bound = cores.len() == 3;
            spec.server_cores = cores.clone();
            b.push(spec);
        }
    }
    for &idle in &[0u32, 1000, 10_000, 50_000] {
        for &be in &BACKENDS {
            let mut w = workload(WorkloadKind::Idle, 64, 1, 64);
            w.idle = idle as usize;
            let decline = 1.0 - f64::from(idle) / 1_000_000.0;
            let mut spec = ok(
                "idle-sweep",
                be,
                w,
                0,
                personality(be).peak * decline * b.rng.jitter(1.5),
            );
            if be == "glommio" && idle == 50_000 {
                spec.status = CellStatus::Unsupported {
                    reason: "more connections (50064) than the backend's cap (32768)".to_string(),
                };
            }
            b.push(spec);
        }
    }
    let planned = b.cells.len();
    ResultsFile {
        schema_version: SCHEMA_VERSION,
        tool: "ringside harness 0.1.0".to_string(),
        started_at: "2026-05-01T09:00:00Z".to_string(),
        finished_at: Some(b.started_at()),
        state: RunState::Complete,
        manifest: Manifest {
            hostname: "bench-1".to_string(),
            kernel: "6.1.0-31-amd64".to_string(),
            os: "Debian GNU/Linux 12 (bookworm)".to_string(),
            cpu_model: "AMD EPYC 7B13 64-Core Processor".to_string(),
            online_cores: 4,
            smt_siblings: vec![vec![0], vec![1], vec![2], vec![3]],
            server_cores: vec![0],
            client_cores: vec![3],
            sysctls: [
                ("net.core.somaxconn", "4096"),
                ("net.ipv4.ip_local_port_range", "1024 65535"),
                ("net.ipv4.tcp_tw_reuse", "1"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            rlimits: [
                ("memlock", "8388608/8388608"),
                ("nofile", "1048576/1048576"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            io_uring: [
                ("IORING_OP_RECV_MULTISHOT", "yes"),
                ("IORING_SETUP_SQPOLL", "yes"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            cpu_governor: Some("performance".to_string()),
            rustc: "rustc 1.95.0 (59807616e 2026-04-14)".to_string(),
            crate_versions: [("glommio", "0.9.0"), ("io-uring", "0.7.4")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            git_commit: Some("76292e0c1a2b3c4d5e6f708192a3b4c5d6e7f809".to_string()),
            argv: vec![
                "harness".to_string(),
                "compare".to_string(),
                "--suite".to_string(),
                "fixture.toml".to_string(),
            ],
            memcpy: Some(harness::results::MemcpyCheck {
                near_gbps: 2.6,
                far_gbps: 80.2,
                slowdown: 30.8,
                server_glibc_tunables: Some(
                    "glibc.cpu.x86_rep_movsb_threshold=2147483647".to_string(),
                ),
            }),
            topology: None,
        },
        plan: Plan {
            suite: "fixture.toml".to_string(),
            repeats: 3,
            backends: BACKENDS.iter().map(|s| s.to_string()).collect(),
            skipped_backends: vec![SkippedBackend {
                name: "uring-sqpoll".to_string(),
                reason: "IORING_SETUP_SQPOLL needs CAP_SYS_NICE here".to_string(),
            }],
            cells_planned: planned,
            calibration: Vec::new(),
            externals: Vec::new(),
        },
        cells: b.cells,
    }
}

/// The fixture as committed: pretty JSON with a trailing newline.
pub fn fixture_json() -> String {
    let mut s = serde_json::to_string_pretty(&fixture()).unwrap();
    s.push('\n');
    s
}

/// Colour → backend, for every backend a test may meet.
pub fn backend_of_color(hex: &str, names: &[&str]) -> Option<String> {
    names
        .iter()
        .find(|n| {
            harness::plot::style::hex(harness::plot::style::backend_style(n).color)
                .eq_ignore_ascii_case(hex)
        })
        .map(|n| n.to_string())
}
