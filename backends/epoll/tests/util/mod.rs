//! Helpers shared by the epoll-specific tests: starting a server, clients with a deadlock
//! guard, and reading a connection's registered epoll interest from `/proc`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_api::runner::{self, usable_cores};
use backend_api::{Backend, Limits, RunningServer, ServerConfig, Service};

/// A client blocked this long means the server stranded it: fail instead of hanging.
/// Never a pass condition.
pub const GUARD: Duration = Duration::from_secs(30);

pub const IN: u32 = libc::EPOLLIN as u32;
pub const OUT: u32 = libc::EPOLLOUT as u32;
pub const ET: u32 = libc::EPOLLET as u32;

/// Starts `backend` with one shard on the first usable core.
pub fn start(backend: impl Backend + 'static, service: Service, limits: Limits) -> RunningServer {
    let mut config = ServerConfig::new(service, vec![usable_cores()[0]]);
    config.limits = limits;
    runner::start(Arc::new(backend), config).expect("server starts")
}

/// A blocking client whose reads and writes fail after [`GUARD`].
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(GUARD)).unwrap();
    s.set_write_timeout(Some(GUARD)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// A client like [`connect`] whose receive buffer is capped (which also turns off its
/// autotuning), so a client that does not read makes the server's writes block early.
///
/// The cap is set before connecting, as it must be: shrinking SO_RCVBUF on an established
/// loopback connection leaves a window already advertised for 64 KiB segments that the
/// buffer can no longer hold. The kernel then drops the segments, both sides back off
/// exponentially (RTO 26 s seen) and nothing moves for the length of a test.
pub fn connect_small_rcvbuf(addr: SocketAddr, bytes: usize) -> TcpStream {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(bytes)
        .expect("setsockopt(SO_RCVBUF)");
    sock.connect(&addr.into()).expect("connect");
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(GUARD)).unwrap();
    s.set_write_timeout(Some(GUARD)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Deterministic, position-dependent bytes so a reordered or dropped chunk is caught.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(seed as u32 % 32) as u8
        })
        .collect()
}

/// Reads exactly `want.len()` bytes and checks them.
pub fn expect_bytes(s: &mut TcpStream, want: &[u8]) {
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got)
        .expect("echo arrives before the guard");
    assert!(got == want, "echoed bytes differ");
}

/// Writes `msg`, reads it back.
pub fn round_trip(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    expect_bytes(s, msg);
}

/// The epoll interest the server registered for the server side of `client`'s
/// connection, read from `/proc/self/fdinfo` of the epoll instance holding it; `None`
/// when the server has not accepted it (or already closed it).
pub fn server_interest(server: SocketAddr, client: &TcpStream) -> Option<u32> {
    let inode = server_side_inode(server, client.local_addr().unwrap())?;
    let fd = fd_of_socket(inode)?;
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let Ok(link) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if link.to_string_lossy() != "anon_inode:[eventpoll]" {
            continue;
        }
        let name = entry.file_name();
        let Ok(info) =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", name.to_string_lossy()))
        else {
            continue;
        };
        // tfd:        7 events:       19 data: ...
        for line in info.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("tfd:") {
                continue;
            }
            let tfd: i32 = words.next()?.parse().ok()?;
            if tfd != fd {
                continue;
            }
            if words.next() != Some("events:") {
                return None;
            }
            return u32::from_str_radix(words.next()?, 16).ok();
        }
    }
    None
}

/// Polls [`server_interest`] until `pred` holds; panics with what it saw after [`GUARD`].
pub fn wait_for_interest(
    server: SocketAddr,
    client: &TcpStream,
    what: &str,
    pred: impl Fn(u32) -> bool,
) -> u32 {
    let deadline = Instant::now() + GUARD;
    let mut last = None;
    loop {
        last = server_interest(server, client).or(last);
        if let Some(i) = last.filter(|&i| pred(i)) {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: interest never matched, last seen {last:x?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn hex_addr(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v4) => {
            format!(
                "{:08X}:{:04X}",
                u32::from_ne_bytes(v4.ip().octets()),
                v4.port()
            )
        }
        SocketAddr::V6(_) => panic!("tests use IPv4"),
    }
}

fn server_side_inode(server: SocketAddr, client: SocketAddr) -> Option<u64> {
    let (local, remote) = (hex_addr(server), hex_addr(client));
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 9 && f[1] == local && f[2] == remote)
            .then(|| f[9].parse().ok())
            .flatten()
    })
}

fn fd_of_socket(inode: u64) -> Option<i32> {
    let want = format!("socket:[{inode}]");
    std::fs::read_dir("/proc/self/fd")
        .ok()?
        .flatten()
        .find_map(|e| {
            let link = std::fs::read_link(e.path()).ok()?;
            (link.to_string_lossy() == want)
                .then(|| e.file_name().to_string_lossy().parse().ok())
                .flatten()
        })
}

/// Waits until the server no longer holds the server side of `client`'s connection.
pub fn wait_for_server_close(server: SocketAddr, client: &TcpStream) {
    let deadline = Instant::now() + GUARD;
    while server_interest(server, client).is_some() {
        assert!(
            Instant::now() < deadline,
            "server never closed the connection"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}
