//! The claim variants: each differs from epoll-et or epoll-lt in one point, and these
//! tests pin that point down through the shard's counters (reads, `epoll_ctl` calls,
//! events per wait) and the kernel's record of the registered interest.

mod util;

use std::io::{Read, Write};
use std::net::Shutdown;

use backend_api::{Backend, Limits, Service};
use backend_epoll::{
    EpollEt, EpollEtShortRead, EpollInOut, EpollLt, EpollLtMaxEvents, EpollOneshot, EpollToggle,
};
use util::*;

const ONESHOT: u32 = libc::EPOLLONESHOT as u32;
const RDHUP: u32 = libc::EPOLLRDHUP as u32;
/// The stop signal's and the listener's registrations.
const SHARD_CTL: u64 = 2;

/// `n` sequential 64-byte echo round trips on one connection, then EOF; the shard's
/// counters.
fn round_trips(backend: impl Backend + 'static, n: u32) -> backend_api::ShardStats {
    let server = start(backend, Service::Echo, Limits::default());
    let addr = server.local_addr();
    let mut c = connect(addr);
    for i in 0..n {
        round_trip(&mut c, &pattern(64, i as u8));
    }
    c.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).expect("EOF after the echoes");
    assert!(rest.is_empty());
    wait_for_server_close(addr, &c);
    let s = server.stop().unwrap().total;
    assert_eq!((s.accepted, s.closed), (1, 1), "{s:?}");
    assert_eq!(s.bytes_in, 64 * u64::from(n), "{s:?}");
    s
}

#[test]
fn names() {
    let names = [
        EpollEtShortRead.name(),
        EpollInOut.name(),
        EpollToggle.name(),
        EpollOneshot.name(),
        EpollLtMaxEvents::<1>.name(),
        EpollLtMaxEvents::<16>.name(),
        EpollLtMaxEvents::<64>.name(),
        EpollLtMaxEvents::<1024>.name(),
    ];
    assert_eq!(
        names,
        [
            "epoll-et-shortread",
            "epoll-inout",
            "epoll-toggle",
            "epoll-oneshot",
            "epoll-lt-me1",
            "epoll-lt-me16",
            "epoll-lt-me64",
            "epoll-lt-me1024"
        ]
    );
}

#[test]
fn shortread_skips_the_eagain_read_that_et_makes() {
    const N: u32 = 500;
    let et = round_trips(EpollEt, N);
    let short = round_trips(EpollEtShortRead, N);
    // epoll-et: every event for the connection (all but the listener's and the stop
    // signal's) ends with the read that says EAGAIN, or with the EOF. (The client often
    // sends its next request before that read, which then reads it: fewer events than
    // requests.)
    assert!(et.reads >= u64::from(N) + et.events - 2, "{et:?}");
    // Short read: each request's read ends the drain; then the EOF.
    assert!(short.reads <= u64::from(N) + 2, "{short:?}");
    assert!(short.reads < et.reads, "{short:?} against {et:?}");
}

#[test]
fn shortread_still_reads_an_eof_queued_behind_the_data() {
    // Data and FIN sent back to back usually reach the server before it wakes, as one
    // event: a short read of the data alone would end the drain and strand the EOF, and
    // the client would wait for the server's EOF until the guard fails it.
    let server = start(EpollEtShortRead, Service::Echo, Limits::default());
    let addr = server.local_addr();
    for i in 0..200u32 {
        let mut c = connect(addr);
        let data = pattern(100, i as u8);
        c.write_all(&data).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).expect("echo then EOF");
        assert!(got == data, "echo differs on connection {i}");
        // Registered for the peer's shutdown.
        if let Some(i) = server_interest(addr, &c) {
            assert_eq!(i & RDHUP, RDHUP, "{i:x}");
        }
    }
    let s = server.stop().unwrap().total;
    assert_eq!(s.accepted, 200, "{s:?}");
}

#[test]
fn shortread_drains_past_a_full_buffer() {
    // Reads that fill the 512-byte buffer are not short: the drain goes on, and 1 MiB
    // crosses with far fewer edges than reads.
    let server = start(
        EpollEtShortRead,
        Service::Echo,
        Limits {
            read_buffer: 512,
            ..Limits::default()
        },
    );
    let mut c = connect(server.local_addr());
    let data = pattern(1 << 20, 9);
    let mut w = c.try_clone().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&sent).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    expect_bytes(&mut c, &data);
    writer.join().unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).expect("EOF after the echo");
    let s = server.stop().unwrap().total;
    assert_eq!(s.bytes_out, 1 << 20, "{s:?}");
}

#[test]
fn inout_registers_both_interests_once_and_never_modifies() {
    const N: u32 = 300;
    let server = start(EpollInOut, Service::Echo, Limits::default());
    let addr = server.local_addr();
    let mut c = connect(addr);
    for i in 0..N {
        round_trip(&mut c, &pattern(64, i as u8));
    }
    let got = server_interest(addr, &c).expect("connection registered");
    assert_eq!(got & (ET | IN | OUT), ET | IN | OUT, "{got:x}");
    drop(c);
    // A reader slower than the writer: writes hit EAGAIN, output queues, reading pauses
    // and resumes, and still no interest changes.
    let mut slow = connect_small_rcvbuf(addr, 16 << 10);
    let data = pattern(4 << 20, 5);
    let mut w = slow.try_clone().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&sent).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    expect_bytes(&mut slow, &data);
    writer.join().unwrap();
    let mut rest = Vec::new();
    slow.read_to_end(&mut rest).expect("EOF after the echo");
    let s = server.stop().unwrap().total;
    assert_eq!(s.accepted, 2, "{s:?}");
    // One ADD per connection, nothing after it.
    assert_eq!(s.epoll_ctl, SHARD_CTL + s.accepted, "{s:?}");
}

#[test]
fn toggle_modifies_interest_twice_per_request() {
    const N: u32 = 300;
    let s = round_trips(EpollToggle, N);
    // ADD, then EPOLLOUT and back for each response; the EOF closes without one.
    assert_eq!(s.epoll_ctl, SHARD_CTL + 1 + 2 * u64::from(N), "{s:?}");
    // A wait for the request and one for the writable socket.
    assert!(s.loop_iterations >= 2 * u64::from(N), "{s:?}");
    let lt = round_trips(EpollLt, N);
    assert_eq!(
        lt.epoll_ctl,
        SHARD_CTL + 1,
        "epoll-lt writes at once: {lt:?}"
    );
}

#[test]
fn oneshot_rearms_after_every_event() {
    const N: u32 = 300;
    let s = round_trips(EpollOneshot, N);
    // ADD, then one re-arm per request; the EOF event closes without one.
    assert_eq!(s.epoll_ctl, SHARD_CTL + 1 + u64::from(N), "{s:?}");

    let server = start(EpollOneshot, Service::Http, Limits::default());
    let addr = server.local_addr();
    let mut c = connect(addr);
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 256];
    let n = c.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
    let got = wait_for_interest(addr, &c, "re-armed", |i| i & IN != 0);
    assert_eq!(got & (ONESHOT | IN | OUT | ET), ONESHOT | IN, "{got:x}");
    drop(c);
    server.stop().unwrap();
}

/// 64 connections made ready at once: no wait may return more than `N` events.
fn max_events_caps_each_wait<const N: usize>() {
    const CONNS: usize = 64;
    let server = start(EpollLtMaxEvents::<N>, Service::Echo, Limits::default());
    let addr = server.local_addr();
    let mut conns: Vec<_> = (0..CONNS).map(|_| connect(addr)).collect();
    for round in 0..20u8 {
        for (i, c) in conns.iter_mut().enumerate() {
            c.write_all(&pattern(32, round ^ i as u8)).unwrap();
        }
        for (i, c) in conns.iter_mut().enumerate() {
            expect_bytes(c, &pattern(32, round ^ i as u8));
        }
    }
    drop(conns);
    let s = server.stop().unwrap().total;
    assert!(
        s.events <= N as u64 * s.loop_iterations,
        "more than {N} events per wait: {s:?}"
    );
    assert!(s.events >= (CONNS * 20) as u64, "{s:?}");
}

#[test]
fn max_events_1_caps_each_wait() {
    max_events_caps_each_wait::<1>();
}

#[test]
fn max_events_16_caps_each_wait() {
    max_events_caps_each_wait::<16>();
}
