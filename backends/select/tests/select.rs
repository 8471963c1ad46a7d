//! select-specific checks: the close policy's deadline, many idle descriptors in the
//! bitmaps, and the counters.

mod util;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::Arc;

use backend_api::runner::{self, ServerConfig};
use backend_api::{Backend, Limits, Service};
use backend_select::{Select, FD_SETSIZE, MAX_CONNECTIONS, RESERVED_FDS};

fn start(service: Service, limits: Limits) -> backend_api::RunningServer {
    let mut config = ServerConfig::new(service, util::cores(1));
    config.limits = limits;
    runner::start(Arc::new(Select), config).expect("server starts")
}

#[test]
fn names_and_limits() {
    assert_eq!(Select.name(), "select");
    assert!(Select.probe().is_ok());
    assert_eq!(FD_SETSIZE, 1024);
    assert_eq!(MAX_CONNECTIONS + RESERVED_FDS, FD_SETSIZE);
}

#[test]
fn linger_ends_at_the_deadline() {
    // A read buffer smaller than the request, so the bytes sent after it are still queued
    // when the session closes: the server lingers, and a peer that neither sends more nor
    // closes is closed at the deadline.
    let server = start(
        Service::Http,
        Limits {
            read_buffer: 16,
            ..Limits::default()
        },
    );
    let addr = server.local_addr();
    let mut c = util::connect(addr);
    let mut request = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec();
    request.extend_from_slice(&[b's'; 100]);
    c.write_all(&request).unwrap();
    let mut resp = Vec::new();
    c.read_to_end(&mut resp).expect("response then EOF");
    assert!(resp.ends_with(b"Hello, World!"), "{resp:?}");
    util::wait_for_server_close(addr, &c);
    let t = server.stop().unwrap().total;
    assert_eq!((t.accepted, t.closed, t.refused), (1, 1, 0), "{t:?}");
}

#[test]
fn idle_connections_in_the_bitmaps_and_the_active_one_is_still_served() {
    let idle = 300;
    let server = start(Service::Echo, Limits::default());
    let addr = server.local_addr();
    let idle_conns: Vec<_> = (0..idle).map(|_| util::served(addr)).collect();
    let mut active = util::served(addr);
    for size in [1usize, 100, 10_000, 100_000] {
        let msg: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        util::echo(&mut active, &msg);
    }
    let (gone, kept) = idle_conns.split_at(idle / 2);
    for c in gone {
        c.shutdown(Shutdown::Both).unwrap();
    }
    util::echo(&mut active, b"after the closes");
    let mut kept: Vec<_> = kept.iter().map(|c| c.try_clone().unwrap()).collect();
    for c in kept.iter_mut().step_by(13) {
        util::echo(c, b"an idle one wakes up");
    }
    let t = server.stop().unwrap().total;
    assert_eq!(t.accepted, idle as u64 + 1, "{t:?}");
    assert_eq!(t.closed, t.accepted, "{t:?}");
    assert_eq!(t.refused, 0, "{t:?}");
    assert!(t.peak_connections > idle as u64, "{t:?}");
    // Every wake-up was for something: ready descriptors are counted.
    assert!(t.events >= t.loop_iterations - 1, "{t:?}");
}
