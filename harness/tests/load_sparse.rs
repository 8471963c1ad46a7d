//! The sparse workload: many connections at a low rate each. Counts and achieved rate at a
//! small scale, a slow server showing in latency rather than in the count, and its
//! parameters checked.

mod util;

use std::time::Duration;

use backend_api::Service;
use harness::load::{run_load, Workload};
use util::*;

/// 200 connections at 5 requests/s each for 2 s: 2000 measured requests.
fn sparse(server: &backend_api::runner::RunningServer) -> harness::load::LoadConfig {
    let mut cfg = config(server, Workload::Sparse);
    cfg.workload.connections = 200;
    cfg.workload.rate = Some(200.0 * 5.0);
    cfg.workload.warmup = Duration::from_millis(500);
    cfg.workload.duration = Duration::from_secs(2);
    cfg.drain_timeout = Duration::from_secs(5);
    cfg
}

#[test]
fn every_connection_sends_its_share_and_the_rate_is_met() {
    let server = start(epoll_et(), Service::Http);
    let cfg = sparse(&server);
    let r = run_load(&cfg).unwrap();
    let stats = stop(server);
    let summary = r.summary();
    assert!(r.errors.is_empty(), "{summary}");
    assert_eq!(r.connections.established, 200, "{summary}");
    let want = 2000i64;
    let slack = 2 * cfg.threads() as i64;
    assert!(
        (r.requests.completed as i64 - want).abs() <= slack,
        "completed {} of {want}\n{summary}",
        r.requests.completed
    );
    assert_eq!(r.requests.unsent, 0, "{summary}");
    let s = r.schedule.as_ref().expect("sparse is open loop");
    assert_eq!(s.target_rate, 1000.0);
    assert!(
        (s.achieved_ratio - 1.0).abs() <= 0.02,
        "achieved {} of 1000\n{summary}",
        s.achieved_rate
    );
    // All 200 held at once for the whole run; the server read every byte sent and the
    // client every byte answered.
    assert_eq!(stats.total.peak_connections, 200, "{stats:?}");
    assert_eq!(stats.total.bytes_in, r.totals.bytes_out, "{stats:?}");
    assert_eq!(stats.total.bytes_out, r.totals.bytes_in, "{stats:?}");
}

#[test]
fn a_slow_server_shows_in_latency_not_in_the_count() {
    let stall = Duration::from_millis(400);
    let server = start(
        TestBackend::arc(Fault::StallOnce {
            after: Duration::from_millis(1000),
            stall,
        }),
        Service::Http,
    );
    let cfg = sparse(&server);
    let r = run_load(&cfg).unwrap();
    stop(server);
    let summary = r.summary();
    assert!(r.errors.is_empty(), "{summary}");
    let want = 2000i64;
    let slack = 2 * cfg.threads() as i64;
    assert!(
        (r.requests.completed as i64 - want).abs() <= slack,
        "completed {} of {want}: a stall must not change the count\n{summary}",
        r.requests.completed
    );
    // Requests due during the stall waited for it, from their intended send time.
    assert!(
        r.latency.max_ns >= stall.as_nanos() as u64 * 3 / 4,
        "max latency {} ns despite a {stall:?} stall\n{summary}",
        r.latency.max_ns
    );
}

#[test]
fn sparse_parameters_are_checked() {
    let server = start(epoll_et(), Service::Http);
    let mut cfg = sparse(&server);
    stop(server);
    cfg.workload.rate = None;
    let e = cfg.validate().unwrap_err().to_string();
    assert!(
        e.contains("open loop only") && e.contains("--conn-rate"),
        "{e}"
    );
    // 0.1 requests/s per connection over 2 s: most connections would never send.
    cfg.workload.rate = Some(20.0);
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("lengthen --duration to at least 10.0 s"), "{e}");
    cfg.workload.rate = Some(200.0);
    cfg.validate().unwrap();
}

/// `harness load --workload sparse -c 20 ARGS` against a fresh server: its JSON report.
fn cli_load(args: &[&str]) -> serde_json::Value {
    let server = start(epoll_et(), Service::Http);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["load", "--workload", "sparse", "-c", "20"])
        .args(args)
        .args(["-d", "1s", "--warmup", "200ms", "--json", "-", "--target"])
        .arg(server.local_addr().to_string())
        .arg("--cores")
        .arg(client_core().to_string())
        .output()
        .unwrap();
    stop(server);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_cli_takes_a_per_connection_rate() {
    let r = cli_load(&["--conn-rate", "5"]);
    assert_eq!(r["schedule"]["target_rate"], 100.0, "{r}");
    assert_eq!(r["config"]["mode"], "open", "{}", r["config"]);
    // Without a rate of either kind, the default per-connection rate: 2/s each.
    let r = cli_load(&[]);
    assert_eq!(r["schedule"]["target_rate"], 40.0, "{r}");
    // A per-connection rate of 0 is refused, naming the flag.
    let e = std::process::Command::new(env!("CARGO_BIN_EXE_harness"))
        .args([
            "load",
            "--workload",
            "sparse",
            "-c",
            "20",
            "--conn-rate",
            "0",
        ])
        .args(["--target", "127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!e.status.success());
    assert!(String::from_utf8_lossy(&e.stderr).contains("--conn-rate 0"));
}
