//! blocking-specific checks: the thread cap refuses clearly and the server keeps
//! serving; stop ends every connection thread, blocked in recv or in send.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;

use backend_api::runner::{self, ServerConfig};
use backend_api::{Limits, Service};
use backend_blocking::{thread_cap, Blocking, MAX_THREADS_PER_SHARD};

#[test]
fn cap_follows_max_connections_up_to_the_constant() {
    let mut limits = Limits::default();
    assert_eq!(thread_cap(&limits), MAX_THREADS_PER_SHARD);
    limits.max_connections = 7;
    assert_eq!(thread_cap(&limits), 7);
}

#[test]
fn beyond_the_thread_cap_a_connection_is_reset_and_the_others_are_served() {
    let mut config = ServerConfig::new(Service::Echo, util::cores(1));
    config.limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let server = runner::start(Arc::new(Blocking), config).unwrap();
    let addr = server.local_addr();
    let mut a = util::served(addr);
    let mut b = util::served(addr);

    let mut refused = TcpStream::connect(addr).unwrap();
    let err = refused.read(&mut [0u8; 16]).unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::ConnectionReset,
        "refused with a reset: {err}"
    );

    util::echo(&mut a, b"a still served");
    util::echo(&mut b, b"b still served");
    // Once `a` has ended (its thread unregisters before the close the client sees), the
    // shard has room again.
    a.shutdown(Shutdown::Write).unwrap();
    assert!(util::read_to_close(&mut a).is_empty());
    let mut d = util::served(addr);
    util::echo(&mut d, b"d served in a's place");

    let t = server.stop().unwrap().total;
    assert_eq!(t.accepted, 4, "{t:?}");
    assert_eq!(t.refused, 1, "one refusal: {t:?}");
    assert_eq!(t.accept_pauses, 0, "refusing is not pausing: {t:?}");
    assert_eq!(t.closed, 4, "{t:?}");
    assert_eq!(t.peak_connections, 2, "{t:?}");
}

#[test]
fn stop_ends_threads_blocked_in_recv_and_in_send() {
    let server = runner::start(
        Arc::new(Blocking),
        ServerConfig::new(Service::Echo, util::cores(2)),
    )
    .unwrap();
    let addr = server.local_addr();
    let mut idle: Vec<_> = (0..20).map(|_| util::served(addr)).collect();
    // A client that writes and never reads: its thread ends up blocked in send.
    let flooder = util::served(addr);
    let writer = {
        let mut s = flooder.try_clone().unwrap();
        std::thread::spawn(move || {
            let chunk = vec![7u8; 64 * 1024];
            // Fails once the server shuts the connection down at stop.
            while s.write_all(&chunk).is_ok() {}
        })
    };
    let report = server.stop().unwrap();
    writer.join().unwrap();
    for c in &mut idle {
        assert!(util::read_to_close(c).is_empty());
    }
    let t = report.total;
    assert_eq!((t.accepted, t.closed), (21, 21), "{t:?}");
    drop(flooder);
}

#[test]
fn http_pipelined_then_close() {
    let server = runner::start(
        Arc::new(Blocking),
        ServerConfig::new(Service::Http, util::cores(1)),
    )
    .unwrap();
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let all = String::from_utf8(util::read_to_close(&mut s)).unwrap();
    assert_eq!(all.matches("Hello, World!").count(), 2, "{all}");
    server.stop().unwrap();
}
