//! Helpers shared by this crate's tests: the common ones live in backend-conformance.
#![allow(unused_imports, dead_code)]

pub use backend_conformance::util::{connect, cores_round_robin as cores, echo, served};

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Longest a test waits for the server to do something before it fails.
pub const GUARD: Duration = Duration::from_secs(30);

/// True while this process holds an open descriptor for the server side of `client`'s
/// connection to `server` (found through /proc/net/tcp's inode and /proc/self/fd).
pub fn server_holds(server: SocketAddr, client: &TcpStream) -> bool {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => panic!("tests use IPv4"),
    };
    let (local, remote) = (hex(server), hex(client.local_addr().unwrap()));
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let inode = table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 9 && f[1] == local && f[2] == remote).then(|| f[9].to_string())
    });
    let Some(inode) = inode else {
        return false;
    };
    let want = format!("socket:[{inode}]");
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.flatten()
                .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == want))
        })
        .unwrap_or(false)
}

/// Waits (bounded by [`GUARD`]) until the server closed its side of `client`'s connection.
pub fn wait_for_server_close(server: SocketAddr, client: &TcpStream) {
    let deadline = Instant::now() + GUARD;
    while server_holds(server, client) {
        assert!(
            Instant::now() < deadline,
            "server never closed the connection"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
