//! Many connections: 50k churned connections never run out of ports (source addresses
//! spread over 127.0.0.0/8), and 10k idle connections are all established.

mod util;

use std::time::Duration;

use backend_api::Service;
use harness::load::{run_load, Workload};
use util::*;

#[test]
fn churn_of_50k_connections_completes_without_eaddrnotavail() {
    let server = start(epoll_lt(), Service::Http);
    let mut cfg = config(&server, Workload::Churn);
    cfg.workload.connections = 50;
    cfg.workload.warmup = Duration::ZERO;
    cfg.workload.duration = Duration::from_secs(300);
    cfg.workload.requests = Some(50_000);
    let r = run_load(&cfg).unwrap();
    let s = stop(server).total;
    let summary = r.summary();
    assert!(!r.errors.contains_key("EADDRNOTAVAIL"), "{summary}");
    assert!(r.errors.is_empty(), "{summary}");
    assert_eq!(r.requests.completed, 50_000, "{summary}");
    assert!(r.config.source_spread);
    assert_eq!(s.accepted, r.connections.connects_ok + 1);
    eprintln!("{summary}");
}

#[test]
fn idle_with_10k_connections_establishes_all() {
    // 10k connections need 10k descriptors on each side: the server runs in its own
    // process so each side fits the file limit alone.
    let limit = harness::rlimit::raise_nofile_to_hard();
    assert!(
        limit >= 10_100,
        "this test needs RLIMIT_NOFILE >= 10100; it is {limit}: raise it with ulimit -n"
    );
    let server = ChildServer::start("child_server", Service::Echo);
    let mut cfg = harness::load::LoadConfig::new(server.addr, Workload::Idle);
    cfg.cores = vec![client_core()];
    cfg.workload.warmup = Duration::from_millis(200);
    cfg.workload.duration = Duration::from_secs(1);
    cfg.workload.idle = 10_000;
    cfg.workload.connections = 4;
    let r = run_load(&cfg).unwrap();
    let s = server.stop();
    let summary = r.summary();
    let idle = r.idle.unwrap();
    assert_eq!(idle.established, 10_000, "{summary}");
    assert_eq!((idle.failed, idle.lost), (0, 0), "{summary}");
    assert_eq!(r.connections.requested, 10_004);
    assert_eq!(r.connections.established, 10_004, "{summary}");
    assert!(r.errors.is_empty(), "{summary}");
    assert!(r.requests.completed > 0);
    assert!(s.peak_connections >= 10_004, "{s:?}");
    assert_eq!(s.accepted, r.connections.connects_ok + 1);
    assert!(idle.establish_s > 0.0);
    eprintln!("{summary}");
}

/// Not a test of its own: the entry point of the server process the idle test starts
/// (does nothing unless that test runs it).
#[test]
fn child_server() {
    child_server_entry();
}
