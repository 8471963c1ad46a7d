//! Both tokio backends serve, stop and count.

mod util;

use std::io::Write;
use std::sync::Arc;

use backend_api::runner::{self, ServerConfig};
use backend_api::{Backend, Service};
use backend_tokio::{Tokio, TokioTpc};

fn backends() -> [Arc<dyn Backend>; 2] {
    [Arc::new(Tokio), Arc::new(TokioTpc)]
}

#[test]
fn stop_closes_every_open_connection_and_counts_it() {
    for backend in backends() {
        let name = backend.name();
        let server =
            runner::start(backend, ServerConfig::new(Service::Echo, util::cores(2))).unwrap();
        let mut conns: Vec<_> = (0..50).map(|_| util::served(server.local_addr())).collect();
        let report = server.stop().unwrap();
        for c in &mut conns {
            assert!(util::read_to_close(c).is_empty(), "{name}: closed at stop");
        }
        let t = report.total;
        assert_eq!((t.accepted, t.closed), (50, 50), "{name}: {t:?}");
        assert_eq!((t.bytes_in, t.bytes_out), (250, 250), "{name}: {t:?}");
        assert!(t.reads >= 50 && t.writes >= 50, "{name}: {t:?}");
        assert!(
            t.loop_iterations > 0,
            "{name}: reactor turns counted: {t:?}"
        );
    }
}

#[test]
fn http_keep_alive_then_close_flushes_before_closing() {
    for backend in backends() {
        let name = backend.name();
        let server =
            runner::start(backend, ServerConfig::new(Service::Http, util::cores(1))).unwrap();
        let mut s = std::net::TcpStream::connect(server.local_addr()).unwrap();
        // Two pipelined requests, the second asking to close.
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap();
        let all = String::from_utf8(util::read_to_close(&mut s)).unwrap();
        assert_eq!(all.matches("Hello, World!").count(), 2, "{name}: {all}");
        assert!(all.ends_with("Hello, World!"), "{name}: {all}");
        server.stop().unwrap();
    }
}

#[test]
fn half_closed_client_gets_everything_before_the_close() {
    for backend in backends() {
        let name = backend.name();
        let server =
            runner::start(backend, ServerConfig::new(Service::Echo, util::cores(1))).unwrap();
        let s = std::net::TcpStream::connect(server.local_addr()).unwrap();
        let msg: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
        eprintln!("{name}: half-closed echo of {} bytes", msg.len());
        // Every byte echoed in order, then EOF after the half-close.
        util::echo_roundtrip(s, Arc::new(msg), 2);
        server.stop().unwrap();
    }
}
