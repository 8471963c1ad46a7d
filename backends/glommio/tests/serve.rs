//! The glommio backend serving real connections: echo, HTTP, closes, resets, backpressure
//! and stopping.

mod util;

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_api::{Backend, Limits, Service};
use backend_glommio::Glommio;
use socket2::{Domain, Socket, Type};
use util::*;

#[test]
fn names_itself_and_probes() {
    assert_eq!(Glommio.name(), "glommio");
    assert!(!Glommio.describe().is_empty());
    Glommio.probe().expect("glommio runs on the test machine");
}

#[test]
fn echoes_large_streams_byte_exact() {
    let server = start(Service::Echo);
    let conn = connect(server.local_addr());
    echo_roundtrip(conn, Arc::new(data(16 << 20, 7)), 7);
    let report = server.stop().unwrap();
    assert_eq!(report.total.bytes_in, 16 << 20);
    assert_eq!(report.total.bytes_out, 16 << 20);
    assert!(report.total.reads > 0 && report.total.writes > 0);
    assert!(report.total.loop_iterations > 0);
    assert_eq!(report.total.peak_connections, 1);
}

#[test]
fn http_pipelined_keep_alive_then_connection_close() {
    let server = start(Service::Http);
    let mut conn = connect(server.local_addr());
    let get = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    let req = format!("{get}{get}{get}GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).unwrap();
    let all = String::from_utf8(read_to_eof(&mut conn).unwrap()).unwrap();
    assert_eq!(all.matches("HTTP/1.1 200 OK").count(), 4, "{all}");
    assert!(all.ends_with("Hello, World!"));
    server.stop().unwrap();
}

#[test]
fn malformed_http_gets_400_and_close() {
    let server = start(Service::Http);
    let mut conn = connect(server.local_addr());
    conn.write_all(b"NOT HTTP AT ALL\r\n\r\n").unwrap();
    let all = String::from_utf8(read_to_eof(&mut conn).unwrap()).unwrap();
    assert!(all.starts_with("HTTP/1.1 400"), "{all}");
    server.stop().unwrap();
}

#[test]
fn half_close_flushes_everything_before_closing() {
    let server = start(Service::Echo);
    let mut conn = connect(server.local_addr());
    let data = data(4 << 20, 3);
    // Write everything (the server echoes into our receive buffer as we go), then EOF.
    let mut w = conn.try_clone().unwrap();
    let d = data.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&d)?;
        w.shutdown(Shutdown::Write)
    });
    let back = read_to_eof(&mut conn).unwrap();
    writer.join().unwrap().unwrap();
    assert!(back == data, "got {} of {} bytes", back.len(), data.len());
    let report = server.stop().unwrap();
    assert_eq!(report.total.closed, 1);
}

#[test]
fn a_reset_connection_closes_alone() {
    let server = start(Service::Echo);
    let addr = server.local_addr();
    let mut healthy = connect(addr);
    healthy.write_all(b"before").unwrap();
    let mut buf = [0; 6];
    healthy.read_exact(&mut buf).unwrap();

    // Leave echoed data unread, then reset: the server's next write or read fails.
    let victim = Socket::from(connect(addr));
    victim.send(&data(1 << 20, 1)).unwrap();
    victim.set_linger(Some(Duration::ZERO)).unwrap();
    drop(victim);

    for round in 0..100u32 {
        let msg = format!("after {round}");
        healthy.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0; msg.len()];
        healthy.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
    }
    drop(healthy);
    let report = server.stop().unwrap();
    assert_eq!(report.total.accepted, 2);
    assert_eq!(report.total.closed, 2);
}

/// A client that writes and never reads: the server must stop reading it once its pending
/// output passes the limit, instead of buffering the whole stream.
#[test]
fn backpressure_stops_reading_a_client_that_does_not_read() {
    const TOTAL: usize = 64 << 20;
    let limits = Limits {
        max_pending_output: 64 * 1024,
        ..Limits::default()
    };
    let server = start_with(Service::Echo, limits);
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    // A small receive window makes the server's sends block early.
    sock.set_recv_buffer_size(16 * 1024).unwrap();
    sock.connect(&server.local_addr().into()).unwrap();
    sock.set_nonblocking(true).unwrap();
    let data = data(TOTAL, 9);

    // Write until the connection stops taking bytes for a generous while.
    let mut written = 0;
    while written < TOTAL {
        match sock.send(&data[written..(written + 256 * 1024).min(TOTAL)]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut pfd = libc::pollfd {
                    fd: sock.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: polls one valid pollfd.
                let n = unsafe { libc::poll(&mut pfd, 1, 5000) };
                assert!(n >= 0, "poll: {}", io::Error::last_os_error());
                if n == 0 {
                    break;
                }
            }
            Err(e) => panic!("send: {e}"),
        }
    }
    assert!(
        written < TOTAL,
        "the server kept reading all {TOTAL} bytes from a client that never reads"
    );

    // Now read everything back: every byte that was taken is echoed, in order.
    sock.set_nonblocking(false).unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut conn: std::net::TcpStream = sock.into();
    let mut back = vec![0; written];
    conn.read_exact(&mut back).unwrap();
    assert!(back == data[..written], "echo differs");
    drop(conn);
    let report = server.stop().unwrap();
    assert!(report.total.backpressure_pauses >= 1, "{:?}", report.total);
    assert_eq!(report.total.bytes_in, written as u64);
}

#[test]
fn stop_is_prompt_and_closes_every_connection() {
    let server = start(Service::Echo);
    let addr = server.local_addr();
    let mut idle: Vec<_> = (0..20).map(|_| connect(addr)).collect();
    // One connection stuck in backpressure: it writes and never reads.
    let stuck = connect(addr);
    stuck.set_nonblocking(true).unwrap();
    let chunk = data(256 * 1024, 2);
    let mut blocked = false;
    for _ in 0..1000 {
        match (&stuck).write(&chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                blocked = true;
                break;
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    assert!(blocked, "the server never pushed back");
    // Make sure the idle ones were accepted before stopping.
    idle[0].write_all(b"x").unwrap();
    let mut one = [0; 1];
    idle[0].read_exact(&mut one).unwrap();

    let t = Instant::now();
    let report = server.stop().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "stop took {:?}",
        t.elapsed()
    );
    assert_eq!(report.total.accepted, 21);
    assert_eq!(report.total.closed, 21);
    for c in &mut idle {
        // EOF (or a reset) rather than the read timeout: the server closed its side. The
        // shared reader retries EINTR, which a read with a timeout got once in CI.
        assert!(
            backend_conformance::util::read_to_close(c).is_empty(),
            "nothing but the close after stop"
        );
    }
}

#[test]
fn many_short_connections_are_all_served_and_counted() {
    let server = start(Service::Http);
    let addr = server.local_addr();
    for _ in 0..200 {
        let mut c = connect(addr);
        c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let all = read_to_eof(&mut c).unwrap();
        assert!(all.starts_with(b"HTTP/1.1 200 OK"));
    }
    let report = server.stop().unwrap();
    assert_eq!(report.total.accepted, 200);
    assert_eq!(report.total.closed, 200);
}
