//! poll-specific checks: many idle descriptors in the array, stop, counters.

mod util;

use std::io::Write;
use std::net::Shutdown;
use std::sync::Arc;

use backend_api::runner::{self, ServerConfig};
use backend_api::{Limits, Service};
use backend_poll::Poll;

/// How many idle connections this process can hold: each costs two descriptors here
/// (client and server side), and some are kept for everything else.
fn idle_budget(want: usize) -> usize {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the live struct passed.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
    want.min((rl.rlim_cur as usize).saturating_sub(128) / 2)
}

#[test]
fn many_idle_connections_in_the_array_and_the_active_one_is_still_served() {
    let idle = idle_budget(2000);
    let server = runner::start(
        Arc::new(Poll),
        ServerConfig::new(Service::Echo, util::cores(2)),
    )
    .unwrap();
    let addr = server.local_addr();
    // Each did a round trip, so each is in its shard's pollfd array.
    let idle_conns: Vec<_> = (0..idle).map(|_| util::served(addr)).collect();
    let mut active = util::served(addr);
    for size in [1usize, 100, 10_000, 100_000] {
        let msg: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        util::echo(&mut active, &msg);
    }
    // Connections closing in the middle of the array are swap-removed; the rest go on.
    let (gone, kept) = idle_conns.split_at(idle / 2);
    for c in gone {
        c.shutdown(Shutdown::Both).unwrap();
    }
    util::echo(&mut active, b"after the closes");
    let mut kept: Vec<_> = kept.iter().map(|c| c.try_clone().unwrap()).collect();
    for c in kept.iter_mut().step_by(97) {
        util::echo(c, b"an idle one wakes up");
    }
    let report = server.stop().unwrap();
    let t = report.total;
    assert_eq!(t.accepted, idle as u64 + 1, "{t:?}");
    assert_eq!(t.closed, t.accepted, "{t:?}");
    assert!(t.peak_connections > idle as u64, "{t:?}");
    assert!(t.loop_iterations > 0, "{t:?}");
}

#[test]
fn small_output_limit_pauses_reading_and_still_delivers_every_byte() {
    let mut config = ServerConfig::new(Service::Echo, util::cores(1));
    config.limits = Limits {
        max_pending_output: 4096,
        ..Limits::default()
    };
    let server = runner::start(Arc::new(Poll), config).unwrap();
    let s = std::net::TcpStream::connect(server.local_addr()).unwrap();
    let msg: Vec<u8> = (0..8 << 20).map(|i| (i % 251) as u8).collect();
    // Every byte echoed in order, then EOF after the half-close.
    util::echo_roundtrip(s, Arc::new(msg), 1);
    let t = server.stop().unwrap().total;
    assert_eq!((t.bytes_in, t.bytes_out), (8 << 20, 8 << 20), "{t:?}");
}

#[test]
fn stop_closes_every_open_connection() {
    let server = runner::start(
        Arc::new(Poll),
        ServerConfig::new(Service::Http, util::cores(2)),
    )
    .unwrap();
    let mut conns: Vec<_> = (0..20)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(server.local_addr()).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
            s
        })
        .collect();
    let report = server.stop().unwrap();
    for c in &mut conns {
        let got = util::read_to_close(c);
        // The request may or may not have been answered before the stop; either way the
        // connection ends.
        assert!(got.is_empty() || got.ends_with(b"Hello, World!"));
    }
    assert_eq!(report.total.closed, report.total.accepted);
}
