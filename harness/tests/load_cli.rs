//! `harness load` from the command line, in process: bad input gives a clear error that
//! names the flag (and fast, for a dead target), a real run writes a JSON report whose
//! schema and histograms read back, and a stop signal ends a long run early.

mod util;

use std::time::{Duration, Instant};

use backend_api::Service;
use clap::Parser;
use harness::cli::Cli;
use harness::load::{read_report, run_load_until, StopSignal, Workload};
use util::*;

fn run(args: &[&str]) -> anyhow::Result<()> {
    let mut argv = vec!["harness", "load"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv)?.run()
}

fn err(args: &[&str]) -> String {
    format!("{:#}", run(args).unwrap_err())
}

/// A loopback port nobody listens on.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn bad_numbers_name_the_flag_and_the_cap() {
    // Validation happens before any connection: the target does not need to exist.
    let t = format!("127.0.0.1:{}", dead_port());
    let base = ["--target", t.as_str(), "--workload", "echo"];
    let cases: &[(&[&str], &str)] = &[
        (&["--rate", "0"], "--rate 0"),
        (&["--rate", "-5"], "--rate -5"),
        (&["--connections", "0"], "--connections 0"),
        (&["--connections", "2000000"], "cap of 1000000"),
        (
            &["--depth", "100000"],
            "--depth 100000 is beyond the cap of 1024",
        ),
        (&["--depth", "0"], "--depth 0"),
        (
            &["--size", "1073741824"],
            "--size 1073741824 is beyond the cap of 16777216",
        ),
        (&["--size", "0"], "--size 0"),
        (&["--depth", "1024", "--size", "1048576"], "cap of 67108864"),
        (&["--duration", "0"], "--duration 0"),
        (&["--duration", "-1"], "--duration -1"),
        (&["--warmup", "NaN"], "--warmup NaN"),
        (
            &["--idle", "10"],
            "--idle 10 applies only to --workload idle",
        ),
        (&["--cores", "1,1"], "appears twice"),
        (&["--cores", "100000"], "core 100000 does not exist"),
    ];
    for (extra, want) in cases {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let e = err(&args);
        assert!(e.contains(want), "{extra:?}: want '{want}' in: {e}");
    }
    let e = err(&["--target", &t, "--workload", "http", "--size", "10"]);
    assert!(e.contains("--size applies to"), "{e}");
    let e = err(&["--target", &t, "--workload", "churn", "--depth", "4"]);
    assert!(e.contains("--depth 4"), "{e}");
    let e = err(&["--target", &t, "--workload", "stream", "--rate", "10"]);
    assert!(e.contains("--rate does not apply"), "{e}");
    let e = err(&["--target", "nonsense", "--workload", "echo"]);
    assert!(e.contains("--target nonsense"), "{e}");
    let e = err(&["--target", &t, "--workload", "ftp"]);
    assert!(
        e.contains("'ftp'") && e.contains("possible values: echo, http, churn, stream, idle"),
        "{e}"
    );
}

#[test]
fn a_refused_target_fails_within_a_second() {
    let t = format!("127.0.0.1:{}", dead_port());
    let started = Instant::now();
    let e = err(&["--target", &t, "--workload", "http", "--duration", "30"]);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(e.contains(&format!("cannot reach {t}")), "{e}");
    assert!(e.contains("ECONNREFUSED"), "{e}");
}

#[test]
fn a_silent_target_fails_after_the_preflight_timeout() {
    // A listener whose accept queue is full drops new SYNs: a connect to it hangs like
    // one to an unreachable host. The preflight gives up after 1 s.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    // Fill the queue (backlog 0 holds one) with nonblocking connects.
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&addr.into());
        fillers.push(s);
    }
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let e = err(&["--target", &addr.to_string(), "--workload", "echo"]);
    let took = started.elapsed();
    // The message proves the 1 s preflight gave up; the bound only proves it did not hang
    // (a loaded CI machine can take seconds to start the process).
    assert!(took < Duration::from_secs(20), "{took:?}: {e}");
    assert!(e.contains("no answer within 1000 ms"), "{e}");
    drop(fillers);
}

#[test]
fn json_report_has_the_schema_and_mergeable_histograms() {
    let server = start(epoll_lt(), Service::Http);
    let dir = std::env::temp_dir().join(format!("ringside-load-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("report.json");
    let core = client_core().to_string();
    let target = server.local_addr().to_string();
    run(&[
        "--target",
        &target,
        "--workload",
        "http",
        "--connections",
        "4",
        "--rate",
        "500",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--cores",
        &core,
        "--json",
        path.to_str().unwrap(),
    ])
    .unwrap();
    stop(server);
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(raw["schema_version"], 1);
    assert_eq!(raw["engine"], "epoll");
    for key in [
        "config",
        "measured_s",
        "requests",
        "throughput",
        "latency",
        "latency_uncorrected",
        "schedule",
        "connect_latency",
        "connections",
        "totals",
        "errors",
        "threads",
        "client",
        "client_bound",
        "flags",
    ] {
        assert!(raw.get(key).is_some(), "missing {key}");
    }
    assert_eq!(raw["config"]["mode"], "open");
    assert_eq!(raw["latency"]["hdr"]["encoding"], "hdr-v2-deflate-base64");
    let r = read_report(&path).unwrap();
    let mut merged = r.latency.hdr.decode().unwrap();
    assert_eq!(merged.len(), r.requests.completed);
    merged
        .add(
            r.latency_uncorrected
                .as_ref()
                .unwrap()
                .hdr
                .decode()
                .unwrap(),
        )
        .unwrap();
    assert_eq!(merged.len(), 2 * r.requests.completed);
    assert!(r.threads[0].cpu_busy >= 0.0 && r.threads[0].cpu_busy <= 1.5);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_stop_signal_ends_a_long_run_early_with_a_report() {
    let server = start(epoll_lt(), Service::Echo);
    let mut cfg = config(&server, Workload::Echo);
    cfg.workload.duration = Duration::from_secs(60);
    cfg.workload.warmup = Duration::from_millis(100);
    let stop_signal = StopSignal::new().unwrap();
    let s2 = stop_signal.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(600));
        s2.fire();
    });
    let started = Instant::now();
    let r = run_load_until(&cfg, &stop_signal).unwrap();
    stop(server);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(r.interrupted);
    assert!(r.has_flag("interrupted"));
    assert!(r.measured_s > 0.1 && r.measured_s < 5.0, "{}", r.measured_s);
    assert!(r.requests.completed > 0);
    assert!(
        !r.errors.contains_key("unanswered_at_end"),
        "{:?}",
        r.errors
    );
}
