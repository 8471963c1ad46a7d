//! Helpers shared by this crate's tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use backend_api::runner::usable_cores;

/// `n` shard cores taken round-robin from the usable ones (repeats oversubscribe, which
/// the runner allows for tests on small machines).
pub fn cores(n: usize) -> Vec<usize> {
    let usable = usable_cores();
    (0..n).map(|i| usable[i % usable.len()]).collect()
}

/// Sends `msg` and reads back exactly as many bytes; asserts they are the same.
pub fn echo(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).unwrap();
    let mut back = vec![0; msg.len()];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
}

/// A connection that already did one echo round trip, so the server holds it.
pub fn served(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    echo(&mut s, b"hello");
    s
}

/// Reads until the server closes; returns what arrived.
pub fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return all,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Names of this process's threads.
pub fn thread_names() -> Vec<(String, String)> {
    let mut v = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = entry.unwrap().path();
        // A thread may exit between listing and reading.
        if let Ok(comm) = std::fs::read_to_string(dir.join("comm")) {
            let tid = dir.file_name().unwrap().to_string_lossy().into_owned();
            v.push((tid, comm.trim_end().to_string()));
        }
    }
    v
}

/// The `Cpus_allowed_list` of thread `tid` of this process, expanded.
pub fn allowed_cpus(tid: &str) -> Vec<usize> {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim();
    let mut cpus = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}
