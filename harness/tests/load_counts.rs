//! Against the epoll backends through the runner: what the client counted adds up with
//! what the server counted, and every echo and stream byte is verified.

mod util;

use backend_api::Service;
use harness::load::{run_load, Workload};
use util::*;

const HTTP_OK: &[u8] = b"HTTP/1.1 200 OK\r\nServer: ringside\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";

#[test]
fn echo_counts_add_up_and_every_byte_is_verified() {
    for (backend, depth, size) in [(epoll_lt(), 4, 100), (epoll_et(), 2, 5000)] {
        let server = start(backend, Service::Echo);
        let mut cfg = config(&server, Workload::Echo);
        cfg.workload.connections = 8;
        cfg.workload.depth = depth;
        cfg.workload.size = size;
        let r = run_load(&cfg).unwrap();
        let s = stop(server).total;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert!(r.requests.completed > 100, "{}", r.summary());
        assert_eq!(r.requests.failed, 0);
        assert_eq!(r.requests.completed, r.requests.sent);
        // Every request got its reply, and every byte the client wrote came back.
        assert_eq!(r.totals.requests_sent, r.totals.replies);
        assert_eq!(r.totals.bytes_out, r.totals.requests_sent * size as u64);
        assert_eq!(r.totals.bytes_in, r.totals.bytes_out);
        assert_eq!(
            s.bytes_in, r.totals.bytes_out,
            "server read what the client wrote"
        );
        assert_eq!(
            s.bytes_out, r.totals.bytes_in,
            "client read what the server wrote"
        );
        // The preflight connection plus every connection the run opened.
        assert_eq!(s.accepted, r.connections.connects_ok + 1);
        assert_eq!(r.connections.established, 8);
        assert_eq!(r.latency.count, r.requests.completed);
        assert!(r.latency.p50_ns > 0 && r.latency.p50_ns <= r.latency.max_ns);
        assert_eq!(r.threads.len(), 1);
        assert!(r.client.syscalls > 0 && r.client.syscalls_per_request > 0.0);
    }
}

#[test]
fn http_pipelined_counts_add_up() {
    let server = start(epoll_lt(), Service::Http);
    let mut cfg = config(&server, Workload::Http);
    cfg.workload.connections = 16;
    cfg.workload.depth = 16;
    let r = run_load(&cfg).unwrap();
    let s = stop(server).total;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(r.requests.completed > 1000, "{}", r.summary());
    let req_len = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", cfg.target).len() as u64;
    assert_eq!(r.totals.requests_sent, r.totals.replies);
    assert_eq!(s.bytes_in, r.totals.requests_sent * req_len);
    assert_eq!(s.bytes_out, r.totals.replies * HTTP_OK.len() as u64);
    assert_eq!(r.totals.bytes_in, s.bytes_out);
    // Pipelining batches: far fewer writes than requests.
    assert!(r.client.write * 4 < r.requests.completed, "{:?}", r.client);
}

#[test]
fn stream_is_full_duplex_and_verified() {
    let server = start(epoll_lt(), Service::Echo);
    let mut cfg = config(&server, Workload::Stream);
    cfg.workload.connections = 2;
    let r = run_load(&cfg).unwrap();
    let s = stop(server).total;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(r.throughput.mb_per_s_out > 1.0, "{}", r.summary());
    assert!(r.throughput.mb_per_s_in > 1.0, "{}", r.summary());
    assert_eq!(
        r.totals.bytes_in, r.totals.bytes_out,
        "drained to a message boundary"
    );
    assert_eq!(r.totals.bytes_out % cfg.workload.size as u64, 0);
    assert_eq!(s.bytes_in, r.totals.bytes_out);
    assert_eq!(s.bytes_out, r.totals.bytes_in);
}

#[test]
fn churn_counts_connections_on_both_sides() {
    let server = start(epoll_lt(), Service::Http);
    let mut cfg = config(&server, Workload::Churn);
    cfg.workload.connections = 8;
    cfg.workload.requests = Some(2000);
    cfg.workload.duration = std::time::Duration::from_secs(60);
    let r = run_load(&cfg).unwrap();
    let s = stop(server).total;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.requests.completed, 2000, "{}", r.summary());
    assert_eq!(s.accepted, r.connections.connects_ok + 1);
    assert_eq!(r.totals.replies, r.connections.connects_ok);
    assert_eq!(r.connect_latency.count, 2000);
    assert!(r.throughput.connections_per_s.unwrap() > 0.0);
}
