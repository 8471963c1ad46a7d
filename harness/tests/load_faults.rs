//! Servers that misbehave on purpose: a flipped byte is caught, and a one-off stall shows
//! in the latency corrected for coordinated omission but not in the uncorrected median.

mod util;

use std::time::Duration;

use backend_api::Service;
use harness::load::{fmt_ns, run_load, Workload};
use util::*;

#[test]
fn a_corrupted_echo_reply_is_detected() {
    for workload in [Workload::Echo, Workload::Stream] {
        // Well past the warmup's first bytes, so the corruption lands mid-run.
        let server = start(TestBackend::arc(Fault::FlipByte(200_000)), Service::Echo);
        let mut cfg = config(&server, workload);
        cfg.workload.connections = 4;
        cfg.workload.size = 1000;
        let r = run_load(&cfg).unwrap();
        stop(server);
        assert_eq!(
            r.errors.get("echo_mismatch"),
            Some(&1),
            "{workload}: {}",
            r.summary()
        );
        assert!(r.has_flag("errors"));
        // The connection was replaced and the run went on.
        assert!(r.connections.reconnects >= 1, "{}", r.summary());
        assert!(r.requests.completed > 0);
    }
}

#[test]
fn the_same_server_without_the_fault_is_clean() {
    let server = start(TestBackend::arc(Fault::None), Service::Echo);
    let mut cfg = config(&server, Workload::Echo);
    cfg.workload.connections = 4;
    cfg.workload.size = 1000;
    let r = run_load(&cfg).unwrap();
    let s = stop(server).total;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(s.bytes_out, r.totals.bytes_in);
}

#[test]
fn a_stall_shows_in_corrected_p999_not_in_uncorrected_p50() {
    // 1000 req/s over 10 connections for 4 s; the server freezes once for 200 ms about
    // 1.5 s in. ~200 requests are scheduled during the freeze: corrected latency must
    // carry up to 200 ms for them (>= 1% of the run is over 100 ms), while each
    // connection's uncorrected latency spikes only for the one request in flight.
    let server = start(
        TestBackend::arc(Fault::StallOnce {
            after: Duration::from_millis(1500),
            stall: Duration::from_millis(200),
        }),
        Service::Http,
    );
    let mut cfg = config(&server, Workload::Http);
    cfg.workload.connections = 10;
    cfg.workload.rate = Some(1000.0);
    cfg.workload.warmup = Duration::from_millis(500);
    cfg.workload.duration = Duration::from_secs(4);
    let r = run_load(&cfg).unwrap();
    stop(server);
    let u = r.latency_uncorrected.as_ref().unwrap();
    let summary = r.summary();
    assert!(r.errors.is_empty(), "{summary}");
    assert!(
        r.latency.p99_9_ns >= 100_000_000,
        "corrected p99.9 {} should show the 200 ms stall\n{summary}",
        fmt_ns(r.latency.p99_9_ns)
    );
    assert!(
        r.latency.max_ns >= 150_000_000,
        "corrected max {}\n{summary}",
        fmt_ns(r.latency.max_ns)
    );
    assert!(
        u.p50_ns < 20_000_000,
        "uncorrected p50 {} should not show the stall\n{summary}",
        fmt_ns(u.p50_ns)
    );
    // The lag is reported, not hidden.
    assert!(
        r.schedule.as_ref().unwrap().lag.max_ns >= 100_000_000,
        "{summary}"
    );
}
