//! epoll-specific behaviour the shared conformance suite cannot see from outside: how much
//! one readiness event buys, which interest is registered when, and that the counters
//! add up. Assertions are on counters and on the kernel's record of the registered
//! interest, never on elapsed time.

mod util;

use std::io::{Read, Write};
use std::net::Shutdown;

use backend_api::{Backend, Limits, Service};
use backend_epoll::{EpollEt, EpollLt};
use util::*;

fn limits(read_buffer: usize, max_pending_output: usize) -> Limits {
    Limits {
        read_buffer,
        max_pending_output,
        ..Limits::default()
    }
}

/// Sends `len` bytes on one connection from a writer thread while reading the echo back,
/// then half-closes and waits for EOF.
fn echo_burst(addr: std::net::SocketAddr, len: usize, seed: u8) {
    let mut client = connect(addr);
    let data = pattern(len, seed);
    let mut writer = client.try_clone().unwrap();
    let sent = data.clone();
    let w = std::thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    expect_bytes(&mut client, &data);
    w.join().unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("EOF after the echo");
    assert!(rest.is_empty(), "nothing after the echo");
}

#[test]
fn et_leaves_no_input_stranded_with_a_tiny_read_buffer() {
    // 1 MiB through a 512-byte read buffer: the few edges the burst raises are far fewer
    // than the 2048 reads it needs, so a reader that stopped before EAGAIN strands data
    // and the client's read hits the guard.
    let server = start(EpollEt, Service::Echo, limits(512, 1 << 20));
    echo_burst(server.local_addr(), 1 << 20, 1);
    let s = server.stop().unwrap().total;
    assert_eq!((s.bytes_in, s.bytes_out), (1 << 20, 1 << 20));
    assert!(s.reads >= (1 << 20) / 512, "{s:?}");
    // Each wakeup drains many reads; one read per wakeup would make these equal.
    assert!(
        s.reads > 2 * s.loop_iterations,
        "ET read until EAGAIN: {s:?}"
    );
}

#[test]
fn lt_reads_once_per_readiness_event() {
    let server = start(EpollLt, Service::Echo, limits(512, 1 << 20));
    echo_burst(server.local_addr(), 256 << 10, 2);
    let s = server.stop().unwrap().total;
    assert_eq!((s.bytes_in, s.bytes_out), (256 << 10, 256 << 10));
    // One connection, one read per event, at most one event for it per wait.
    assert!(s.reads <= s.loop_iterations, "{s:?}");
}

/// A client that writes much more than `max_pending_output` without reading: the server
/// must pause reading it, register EPOLLOUT, serve another connection meanwhile, then
/// resume and deliver every byte in order; once drained, EPOLLOUT is gone again.
fn backpressure_then_drain(backend: impl Backend + 'static, edge: bool) {
    const TOTAL: usize = 16 << 20;
    let server = start(backend, Service::Echo, limits(64 << 10, 64 << 10));
    let addr = server.local_addr();
    let mut slow = connect_small_rcvbuf(addr, 16 << 10);
    let data = pattern(TOTAL, 3);
    let mut writer = slow.try_clone().unwrap();
    let sent = data.clone();
    let w = std::thread::spawn(move || writer.write_all(&sent).unwrap());

    // Paused: EPOLLOUT registered; level-triggered also dropped EPOLLIN so the readable
    // socket is not reported on every wait, edge-triggered kept it.
    let paused = if edge { ET | IN | OUT } else { OUT };
    wait_for_interest(addr, &slow, "paused by backpressure", |i| {
        i & (ET | IN | OUT) == paused
    });

    // The shard keeps serving others while one connection is stalled.
    let mut other = connect(addr);
    for i in 0..200u32 {
        round_trip(&mut other, &i.to_le_bytes());
    }

    // The slow client reads everything: the server must resume reading input that was
    // queued while it was paused.
    expect_bytes(&mut slow, &data);
    w.join().unwrap();
    round_trip(&mut slow, b"x");
    // The round trip was handled after the drain, so the drain's interest change is done.
    let idle = if edge { ET | IN } else { IN };
    let got = server_interest(addr, &slow).expect("connection registered");
    assert_eq!(
        got & (ET | IN | OUT),
        idle,
        "EPOLLOUT dropped after drain: {got:x}"
    );

    drop((slow, other));
    let s = server.stop().unwrap().total;
    assert!(s.backpressure_pauses >= 1, "{s:?}");
    assert_eq!(s.bytes_in, s.bytes_out);
    assert_eq!(s.bytes_in, TOTAL as u64 + 1 + 200 * 4);
}

#[test]
fn et_backpressure_pauses_resumes_and_drops_epollout() {
    backpressure_then_drain(EpollEt, true);
}

#[test]
fn lt_backpressure_pauses_resumes_and_drops_epollout() {
    backpressure_then_drain(EpollLt, false);
}

/// While a connection is paused and its socket stays readable, the loop must sleep:
/// 1000 round trips on another connection cost about 1000 wakeups, where a loop spinning
/// on the readable socket would count one per microsecond or so.
fn paused_connection_does_not_spin(backend: impl Backend + 'static) {
    let server = start(backend, Service::Echo, limits(64 << 10, 64 << 10));
    let addr = server.local_addr();
    let slow = connect_small_rcvbuf(addr, 16 << 10);
    let mut writer = slow.try_clone().unwrap();
    // More than every buffer on the way can hold, so the socket stays readable.
    let w = std::thread::spawn(move || {
        let chunk = vec![7u8; 1 << 20];
        while writer.write_all(&chunk).is_ok() {}
    });
    // Output is blocked (EPOLLOUT registered); the writer keeps the input coming, so the
    // pause follows. Checking only EPOLLOUT here keeps the counter below the judge of a
    // spin (the exact paused interest is checked by `backpressure_then_drain`).
    wait_for_interest(addr, &slow, "output blocked", |i| i & OUT != 0);
    let mut other = connect(addr);
    for i in 0..1000u32 {
        round_trip(&mut other, &i.to_le_bytes());
    }
    let s = server.stop().unwrap().total;
    // The writer fails once the server closed the connection at stop.
    slow.shutdown(Shutdown::Both).ok();
    w.join().unwrap();
    // ~1000 wakeups for the round trips, a few hundred to fill the slow connection's
    // buffers, and some for the fdinfo polling window.
    assert!(s.loop_iterations < 5000, "loop spun while paused: {s:?}");
    assert!(s.backpressure_pauses >= 1, "{s:?}");
}

#[test]
fn et_paused_connection_does_not_spin() {
    paused_connection_does_not_spin(EpollEt);
}

#[test]
fn lt_paused_connection_does_not_spin() {
    paused_connection_does_not_spin(EpollLt);
}

/// Interest starts as EPOLLIN only (no EPOLLOUT while nothing is pending).
fn fresh_interest(backend: impl Backend + 'static, edge: bool) {
    let server = start(backend, Service::Http, Limits::default());
    let addr = server.local_addr();
    let mut c = connect(addr);
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 256];
    let n = c.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
    let want = if edge { ET | IN } else { IN };
    let got = server_interest(addr, &c).expect("connection registered");
    assert_eq!(got & (ET | IN | OUT), want, "{got:x}");
    drop(c);
    server.stop().unwrap();
}

#[test]
fn et_interest_is_edge_triggered_input_only_when_idle() {
    fresh_interest(EpollEt, true);
}

#[test]
fn lt_interest_is_input_only_when_idle() {
    fresh_interest(EpollLt, false);
}

/// Every accepted connection is counted closed, bytes in equal bytes out for echo, and
/// the peak is what was open at once.
fn stats_add_up(backend: impl Backend + 'static) {
    const CLIENTS: usize = 20;
    let server = start(backend, Service::Echo, Limits::default());
    let addr = server.local_addr();
    let mut clients: Vec<_> = (0..CLIENTS).map(|_| connect(addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        round_trip(c, &pattern(10_000, i as u8));
    }
    for c in &clients {
        c.shutdown(Shutdown::Write).unwrap();
    }
    for c in &mut clients {
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }
    // Each client saw EOF, so the server closed every connection before stop.
    let s = server.stop().unwrap().total;
    assert_eq!(s.accepted, CLIENTS as u64, "{s:?}");
    assert_eq!(s.closed, s.accepted, "{s:?}");
    assert_eq!(s.peak_connections, CLIENTS as u64, "{s:?}");
    assert_eq!(s.bytes_in, (CLIENTS * 10_000) as u64, "{s:?}");
    assert_eq!(s.bytes_out, s.bytes_in, "{s:?}");
    assert!(
        s.reads >= CLIENTS as u64 * 2 && s.writes >= CLIENTS as u64,
        "{s:?}"
    );
    assert_eq!((s.accept_pauses, s.backpressure_pauses), (0, 0), "{s:?}");
}

#[test]
fn et_stats_add_up() {
    stats_add_up(EpollEt);
}

#[test]
fn lt_stats_add_up() {
    stats_add_up(EpollLt);
}

/// At `max_connections` the shard pauses accepting; queued connections are accepted once
/// others close (edge-triggered: without a new edge, by retrying on resume).
fn max_connections_pause(backend: impl Backend + 'static) {
    let server = start(
        backend,
        Service::Echo,
        Limits {
            max_connections: 2,
            ..Limits::default()
        },
    );
    let addr = server.local_addr();
    let mut first: Vec<_> = (0..2).map(|_| connect(addr)).collect();
    for c in &mut first {
        round_trip(c, b"hello");
    }
    // Connected (the kernel completed the handshake) but not accepted yet.
    let mut queued: Vec<_> = (0..3).map(|_| connect(addr)).collect();
    for c in &mut queued {
        c.write_all(b"queued").unwrap();
    }
    // Open connections keep being served while the shard is at its limit.
    for c in &mut first {
        round_trip(c, b"still served");
    }
    drop(first);
    // Only two fit at once: serve two, close them, then the third gets in.
    for c in queued.iter_mut().take(2) {
        expect_bytes(c, b"queued");
    }
    let mut last = queued.pop().unwrap();
    drop(queued);
    expect_bytes(&mut last, b"queued");
    drop(last);
    let s = server.stop().unwrap().total;
    assert_eq!(s.accepted, 5, "{s:?}");
    assert_eq!(s.closed, 5, "{s:?}");
    assert_eq!(s.peak_connections, 2, "{s:?}");
    assert!(s.accept_pauses >= 1, "{s:?}");
}

#[test]
fn et_max_connections_pauses_and_resumes_accepting() {
    max_connections_pause(EpollEt);
}

#[test]
fn lt_max_connections_pauses_and_resumes_accepting() {
    max_connections_pause(EpollLt);
}

/// `Connection: close` with output larger than the socket takes at once: the response is
/// flushed completely before the close, and nothing is read after it.
fn close_after_flush(backend: impl Backend + 'static) {
    let server = start(backend, Service::Http, Limits::default());
    let addr = server.local_addr();
    let mut c = connect_small_rcvbuf(addr, 4 << 10);
    let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut req = get.repeat(2000);
    req.extend_from_slice(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    req.extend_from_slice(get);
    c.write_all(&req).unwrap();
    let mut resp = Vec::new();
    c.read_to_end(&mut resp).expect("response then EOF");
    let text = String::from_utf8(resp).unwrap();
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2001);
    assert!(text.ends_with("Connection: close\r\n\r\nHello, World!"));
    let s = server.stop().unwrap().total;
    assert_eq!((s.accepted, s.closed), (1, 1), "{s:?}");
}

#[test]
fn et_close_flushes_then_closes() {
    close_after_flush(EpollEt);
}

#[test]
fn lt_close_flushes_then_closes() {
    close_after_flush(EpollLt);
}

/// The peer keeps sending after a `Connection: close` request: the server must not close
/// with unread input (the kernel would reset the connection and destroy the response
/// still in flight). It sends the response, then EOF, and discards input until the peer
/// closes.
fn close_lingers_while_peer_sends(backend: impl Backend + 'static) {
    let server = start(backend, Service::Http, Limits::default());
    let addr = server.local_addr();
    let mut c = connect_small_rcvbuf(addr, 4 << 10);
    let mut stream = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2000);
    stream.extend_from_slice(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    // In the same write, so part of it is already queued when the session closes.
    stream.extend(std::iter::repeat_n(b'j', 2 << 20));
    let total = stream.len() as u64;
    let mut w = c.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        w.write_all(&stream)?;
        w.shutdown(Shutdown::Write)
    });
    let mut resp = Vec::new();
    c.read_to_end(&mut resp)
        .expect("response then EOF, not a reset");
    let text = String::from_utf8(resp).unwrap();
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2001);
    assert!(text.ends_with("Connection: close\r\n\r\nHello, World!"));
    writer
        .join()
        .unwrap()
        .expect("the server took all input without resetting");
    wait_for_server_close(addr, &c);
    let s = server.stop().unwrap().total;
    assert_eq!((s.accepted, s.closed), (1, 1), "{s:?}");
    assert_eq!(
        s.bytes_in, total,
        "every byte was read, then discarded: {s:?}"
    );
}

#[test]
fn et_close_lingers_while_peer_sends() {
    close_lingers_while_peer_sends(EpollEt);
}

#[test]
fn lt_close_lingers_while_peer_sends() {
    close_lingers_while_peer_sends(EpollLt);
}

/// A peer that sends past its `Connection: close` request, then neither sends more nor
/// closes: the server answers, sends EOF, lingers, and closes anyway at the deadline. A
/// linger without one would hold the connection until the guard fails the test.
fn linger_ends_at_the_deadline(backend: impl Backend + 'static) {
    // A read buffer smaller than the request, so the stray bytes sent with it are still
    // queued when the session closes: the server must linger rather than close with them
    // unread.
    let server = start(backend, Service::Http, limits(16, 1 << 20));
    let addr = server.local_addr();
    let mut c = connect(addr);
    let mut request = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec();
    request.extend_from_slice(&[b's'; 100]);
    c.write_all(&request).unwrap();
    let mut resp = Vec::new();
    c.read_to_end(&mut resp).expect("response then EOF");
    assert!(resp.ends_with(b"Hello, World!"), "{resp:?}");
    wait_for_server_close(addr, &c);
    let s = server.stop().unwrap().total;
    assert_eq!((s.accepted, s.closed), (1, 1), "{s:?}");
}

#[test]
fn et_linger_ends_at_the_deadline() {
    linger_ends_at_the_deadline(EpollEt);
}

#[test]
fn lt_linger_ends_at_the_deadline() {
    linger_ends_at_the_deadline(EpollLt);
}

/// A peer that keeps sending after its `Connection: close` request: the server discards
/// at most the linger budget, then closes (the peer's writes fail), instead of reading
/// for it as long as the deadline allows.
fn linger_ends_at_the_discard_budget(backend: impl Backend + 'static) {
    const READ_BUFFER: usize = 16 << 10;
    let server = start(backend, Service::Http, limits(READ_BUFFER, 1 << 20));
    let addr = server.local_addr();
    let mut c = connect(addr);
    let request = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n";
    let mut w = c.try_clone().unwrap();
    let writer = std::thread::spawn(move || -> std::io::Result<u64> {
        w.write_all(request)?;
        let chunk = vec![b'j'; 64 << 10];
        let mut sent = 0u64;
        // Far past the budget: a server that never stops discarding lets all of it in.
        while sent < 1 << 30 {
            w.write_all(&chunk)?;
            sent += chunk.len() as u64;
        }
        Ok(sent)
    });
    let mut resp = [0u8; 4096];
    let n = c.read(&mut resp).expect("the response");
    assert!(resp[..n].starts_with(b"HTTP/1.1 200 OK"));
    let result = writer.join().unwrap();
    assert!(
        result.is_err(),
        "the server read the whole gigabyte: {result:?}"
    );
    wait_for_server_close(addr, &c);
    let s = server.stop().unwrap().total;
    // The session's last read (request and the first junk), the budget, and the one read
    // that crossed it.
    let most = READ_BUFFER + backend_api::close::LINGER_MAX_DISCARD as usize + READ_BUFFER;
    assert!(
        s.bytes_in <= most as u64,
        "discarded past the budget: {} > {most} bytes in",
        s.bytes_in
    );
}

#[test]
fn et_linger_ends_at_the_discard_budget() {
    linger_ends_at_the_discard_budget(EpollEt);
}

#[test]
fn lt_linger_ends_at_the_discard_budget() {
    linger_ends_at_the_discard_budget(EpollLt);
}

#[test]
fn probe_and_names() {
    assert_eq!(EpollEt.name(), "epoll-et");
    assert_eq!(EpollLt.name(), "epoll-lt");
    assert!(EpollEt.probe().is_ok() && EpollLt.probe().is_ok());
}
