//! The io_uring-specific correctness points, one test each, generated for every variant.
//! Assertions use counters a broken backend would get wrong; the only clock is the
//! failsafe that turns a hang into a failure.

mod util;

use std::io::{Read, Write};

use backend_api::{Backend, Limits, Service};
use backend_uring::{Feature, Features, Tuned, Uring, UringMultishot, UringSqpoll, Variant};
use util::*;

macro_rules! variant_tests {
    ($($module:ident => $variant:expr, $registered:expr;)*) => {$(
        mod $module {
            use super::*;
            fn v() -> Features {
                Features::from($variant)
            }

            #[test]
            fn probe_passes_and_names_match() {
                let b = $registered;
                assert_eq!(b.name(), v().name());
                b.probe().expect("this machine supports every variant");
            }

            #[test]
            fn short_sends_resubmit_the_remainder_in_order() {
                short_sends(v());
            }

            #[test]
            fn peer_eof_flushes_pending_output_then_closes() {
                peer_eof_flushes(v());
            }

            #[test]
            fn session_close_flushes_then_closes() {
                session_close_flushes(v());
            }

            #[test]
            fn reset_closes_only_that_connection() {
                reset_isolated(v());
            }

            #[test]
            fn stale_completions_never_reach_a_reused_slot() {
                stale_completions(v());
            }

            #[test]
            fn backpressure_stops_reading_until_output_drains() {
                backpressure(v());
            }

            #[test]
            fn shutdown_cancels_and_reaps_operations_in_flight() {
                shutdown_in_flight(v());
            }

            #[test]
            fn close_with_input_unread_lingers_and_delivers_every_response() {
                lingering_close(v());
            }
        }
    )*};
}

variant_tests! {
    uring => Variant::OneShot, Uring;
    multishot => Variant::Multishot, UringMultishot;
    sqpoll => Variant::Sqpoll, UringSqpoll;
    full => Features::full(), Tuned::new(Features::full());
    coop => Features::NONE.with(Feature::Coop), Tuned::new(Features::NONE.with(Feature::Coop));
    fixed_one_shot => FIXED, Tuned::new(FIXED);
    incremental => INC, Tuned::new(INC);
}

/// Fixed descriptors with one-shot accept and receives.
const FIXED: Features = Features::NONE.with(Feature::Fixed);
/// Incremental buffer consumption (excludes bundles, so not on the ladder's top).
const INC: Features = Features::NONE
    .with(Feature::Single)
    .with(Feature::Defer)
    .with(Feature::RecvMulti)
    .with(Feature::Inc);

macro_rules! multishot_tests {
    ($($module:ident => $variant:expr;)*) => {$(
        mod $module {
            use super::*;
            fn v() -> Features {
                Features::from($variant)
            }

            #[test]
            fn multishot_recv_without_more_is_rearmed() {
                multishot_termination(v());
            }

            #[test]
            fn enobufs_recovers_without_losing_data() {
                enobufs(v());
            }
        }
    )*};
}

multishot_tests! {
    multishot_rings => Variant::Multishot;
    sqpoll_rings => Variant::Sqpoll;
    full_rings => Features::full();
    incremental_rings => INC;
}

/// A 4 KiB send buffer on the server makes every large send short.
fn short_sends(v: Features) {
    let (backend, diag) = tuned(v, |t| t.send_buffer = Some(4096));
    let server = serve(backend, Service::Echo, Limits::default());
    let total = 2 << 20;
    let s = echo_verified(connect(server.local_addr()), 1, total, 256 * 1024);
    drop(s);
    let report = server.stop().unwrap();
    let d = diag.snapshot();
    assert!(d.short_sends > 0, "no short send happened: {d:?}");
    assert_eq!(report.total.bytes_in, total as u64);
    assert_eq!(
        report.total.bytes_out, total as u64,
        "remainders were resent"
    );
    assert!(report.total.writes > d.short_sends, "{report:?}");
}

/// The client sends a lot, half-closes, and only then reads: the server sees EOF with
/// output still pending and must deliver all of it before closing.
fn peer_eof_flushes(v: Features) {
    let server = serve(Tuned::new(v), Service::Echo, Limits::default());
    let total = 1 << 20;
    let data = pattern(2, total);
    let mut s = connect(server.local_addr());
    let mut w = s.try_clone().unwrap();
    let wdata = data.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&wdata).unwrap();
        shutdown_write(&w);
    });
    let got = read_to_close(&mut s);
    writer.join().unwrap();
    assert_eq!(got.len(), total, "every byte echoed before EOF");
    assert!(got == data);
    let report = server.stop().unwrap();
    assert_eq!(
        report.total.closed, 1,
        "closed by the server after the flush"
    );
}

/// HTTP: pipelined requests, the last with `Connection: close`: every response arrives,
/// then EOF.
fn session_close_flushes(v: Features) {
    let server = serve(Tuned::new(v), Service::Http, Limits::default());
    let mut s = connect(server.local_addr());
    let mut req = Vec::new();
    for _ in 0..50 {
        req.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    req.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(&req).unwrap();
    let got = String::from_utf8(read_to_close(&mut s)).unwrap();
    assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 51);
    assert!(
        got.ends_with("Connection: close\r\n\r\nHello, World!"),
        "{got}"
    );
    let report = server.stop().unwrap();
    assert_eq!(report.total.closed, 1);
}

/// One connection resets mid-stream; another keeps working.
fn reset_isolated(v: Features) {
    let server = serve(Tuned::new(v), Service::Echo, Limits::default());
    let addr = server.local_addr();
    let good = connect(addr);
    let good = echo_verified(good, 3, 64 * 1024, 4096);
    let bad = connect(addr);
    set_linger_zero(&bad);
    let (written, h) = flood(bad.try_clone().unwrap(), 512 * 1024);
    wait_counter(&written, 512 * 1024);
    h.join().unwrap();
    drop(bad); // RST with data in flight both ways
    let good = echo_verified(good, 4, 256 * 1024, 4096);
    drop(good);
    let report = server.stop().unwrap();
    assert_eq!(report.total.accepted, 2);
    assert_eq!(report.total.closed, 2);
}

/// Connections open and close (some with RST while data is in flight) as fast as the
/// client can, so descriptor numbers and table slots are reused constantly, while
/// long-lived connections keep echoing their own bytes.
fn stale_completions(v: Features) {
    let (backend, diag) = tuned(v, |_| {});
    let server = serve(backend, Service::Echo, Limits::default());
    let addr = server.local_addr();
    let mut long: Vec<_> = (0..4).map(|_| connect(addr)).collect();
    let rounds = 300;
    for round in 0..rounds {
        let mut s = connect(addr);
        let msg = pattern(1000 + round as u64, 1000 + round * 7);
        match round % 3 {
            0 => {
                set_linger_zero(&s);
                s.write_all(&msg).unwrap();
                drop(s); // RST: the server may have a recv and a send in flight
            }
            1 => {
                s.write_all(&msg).unwrap();
                let mut back = vec![0u8; msg.len()];
                s.read_exact(&mut back).unwrap();
                assert!(back == msg, "round {round}: another connection's bytes");
                shutdown_write(&s);
                assert!(read_to_close(&mut s).is_empty());
            }
            _ => {
                s.write_all(&msg).unwrap();
                let mut back = vec![0u8; msg.len()];
                s.read_exact(&mut back).unwrap();
                assert!(back == msg, "round {round}: another connection's bytes");
            }
        }
        let l = &mut long[round % 4];
        let own = pattern(round as u64 % 4, 512);
        l.write_all(&own).unwrap();
        let mut back = vec![0u8; own.len()];
        l.read_exact(&mut back).unwrap();
        assert!(back == own, "long-lived connection got foreign bytes");
    }
    drop(long);
    let report = server.stop().unwrap();
    assert_eq!(report.total.accepted, rounds as u64 + 4);
    assert_eq!(report.total.closed, report.total.accepted);
    assert_eq!(diag.snapshot().stale_completions, 0);
}

/// The server's output drains through a tiny send buffer while the client writes as fast
/// as it can: pending output must stay near the limit instead of growing with what the
/// client wrote.
fn backpressure(v: Features) {
    let (backend, diag) = tuned(v, |t| {
        t.send_buffer = Some(4096);
        t.buf_ring_entries = 16;
        t.buf_size = Some(4096);
    });
    let limits = Limits {
        max_pending_output: 64 * 1024,
        read_buffer: 4096,
        ..Limits::default()
    };
    let server = serve(backend, Service::Echo, limits);
    let s = connect(server.local_addr());
    let total = 4 << 20;
    drop(echo_reading_late(s, 5, total));
    let report = server.stop().unwrap();
    let d = diag.snapshot();
    // One-shot overshoots by at most one read; multishot by what the buffer ring can hold
    // before the cancel lands (twice, to be safe).
    let overshoot = if v.buffer_ring() { 2 * 16 * 4096 } else { 4096 };
    assert!(
        d.peak_pending_output <= (limits.max_pending_output + overshoot) as u64,
        "pending output reached {} with a limit of {}",
        d.peak_pending_output,
        limits.max_pending_output
    );
    assert!(report.total.backpressure_pauses > 0, "{report:?}");
    assert_eq!(report.total.bytes_out, total as u64);
}

/// Echoes `total` pattern bytes, but starts reading only once 512 KiB were written or the
/// writer has been blocked for 2 s. Either way the server's pending output must have
/// reached a 64 KiB limit: 512 KiB cannot fit in the client's untouched receive window and
/// a 4 KiB send buffer, and a blocked writer means the server stopped reading. (A reader
/// that keeps up from the start may never let output pile up.)
fn echo_reading_late(s: std::net::TcpStream, seed: u64, total: usize) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let data = std::sync::Arc::new(util::pattern(seed, total));
    let mut w = s.try_clone().unwrap();
    let wdata = data.clone();
    let (head_tx, head_rx) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        for (i, c) in wdata.chunks(64 * 1024).enumerate() {
            w.write_all(c).expect("client write");
            if (i + 1) * 64 * 1024 == 512 * 1024 {
                let _ = head_tx.send(());
            }
        }
    });
    let _ = head_rx.recv_timeout(std::time::Duration::from_secs(2));
    let mut r = s;
    let mut got = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while got < total {
        let n = match r.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            n => n.expect("client read"),
        };
        assert!(n > 0, "EOF after {got} of {total} echoed bytes");
        assert!(
            buf[..n] == data[got..got + n],
            "echo differs at offset {got}"
        );
        got += n;
    }
    writer.join().expect("writer");
    r
}

/// Stop while connections have receives, sends and cancels in flight: the server must
/// return (everything reaped) and close every connection.
fn shutdown_in_flight(v: Features) {
    let server = serve(Tuned::new(v), Service::Echo, Limits::default());
    let addr = server.local_addr();
    let idle: Vec<_> = (0..8)
        .map(|i| echo_verified(connect(addr), 10 + i, 100, 100))
        .collect();
    // Never reads: the server ends up with a send blocked and reading paused.
    let stuck = connect(addr);
    let (written, h) = flood(stuck.try_clone().unwrap(), usize::MAX);
    wait_counter(&written, 1 << 20);
    let report = server.stop().unwrap();
    h.join().unwrap();
    assert_eq!(report.total.accepted, 9);
    assert_eq!(
        report.total.closed, 9,
        "every connection closed at shutdown"
    );
    for mut s in idle {
        assert!(read_to_close(&mut s).is_empty(), "EOF after shutdown");
    }
}

/// A CQ of 4 entries cannot hold what 8 streaming connections produce per turn, so
/// multishot receives end without `IORING_CQE_F_MORE` (with data) and must be re-armed.
fn multishot_termination(v: Features) {
    let (backend, diag) = tuned(v, |t| {
        t.sq_entries = 2;
        t.cq_entries = 4;
    });
    let server = serve(backend, Service::Echo, Limits::default());
    let addr = server.local_addr();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                drop(echo_verified(connect(addr), 20 + i, 1 << 20, 16 * 1024))
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let report = server.stop().unwrap();
    let d = diag.snapshot();
    assert!(
        d.recv_rearms > 0,
        "no multishot receive ended and was re-armed: {d:?}"
    );
    assert_eq!(report.total.accepted, 8);
    assert_eq!(report.total.bytes_out, 8 << 20);
}

/// A one-entry buffer ring runs dry on every burst: receives end with ENOBUFS and must be
/// re-armed once the buffer is back, without losing a byte or the connection.
fn enobufs(v: Features) {
    let (backend, diag) = tuned(v, |t| {
        t.buf_ring_entries = 1;
        t.buf_size = Some(512);
    });
    let server = serve(backend, Service::Echo, Limits::default());
    let addr = server.local_addr();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                drop(echo_verified(connect(addr), 30 + i, 512 * 1024, 64 * 1024))
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let report = server.stop().unwrap();
    let d = diag.snapshot();
    assert!(d.enobufs > 0, "the buffer ring never ran dry: {d:?}");
    assert!(d.recv_rearms >= d.enobufs, "{d:?}");
    assert_eq!(report.total.bytes_out, 4 * 512 * 1024);
    assert_eq!(report.total.closed, 4);
}

/// A slow client pipelines many requests, the last with `Connection: close`, and sends a
/// few stray bytes once the responses start arriving (so they reach the server after it
/// read the last request, while most responses still sit in its send queue). A server that
/// closes then (input unread, or data arriving after close) makes the kernel reset the
/// connection and discard those responses: every response must arrive, then a clean EOF.
fn lingering_close(v: Features) {
    const N: usize = 4000;
    let server = serve(Tuned::new(v), Service::Http, Limits::default());
    let mut s = connect(server.local_addr());
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(N - 1);
    req.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&req).expect("client write"));
    writer.join().expect("writer");
    let mut all = Vec::new();
    let mut buf = [0u8; 1024];
    let mut stray_sent = false;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!(
                "{e} after {} of {N} responses: the server closed with input unread",
                count(&all, b"HTTP/1.1 200")
            ),
        }
        if !stray_sent {
            s.write_all(b"stray").expect("client write");
            stray_sent = true;
        }
    }
    assert_eq!(count(&all, b"HTTP/1.1 200"), N, "every response, then EOF");
    drop(s);
    server.stop().expect("clean stop");
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}
