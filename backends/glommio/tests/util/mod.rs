//! Helpers shared by the glommio integration tests.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_api::runner::{self, usable_cores, RunningServer};
use backend_api::{Limits, ServerConfig, Service};
use backend_glommio::Glommio;

/// Generous bound for anything that should take milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The core every test server runs on.
pub fn core() -> usize {
    usable_cores()[0]
}

/// Starts a one-shard glommio server.
pub fn start(service: Service) -> RunningServer {
    start_with(service, Limits::default())
}

/// Starts a one-shard glommio server with the given limits.
pub fn start_with(service: Service, limits: Limits) -> RunningServer {
    let mut config = ServerConfig::new(service, vec![core()]);
    config.limits = limits;
    runner::start(Arc::new(Glommio), config).expect("glommio server starts")
}

/// A client connection with generous timeouts.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.set_write_timeout(Some(PATIENCE)).unwrap();
    s
}

/// A deterministic byte pattern that catches reordering and loss.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(seed as u32 % 32) as u8
                ^ seed
        })
        .collect()
}

/// Reads until EOF (or a reset after data) and returns everything read.
pub fn read_to_end(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    s.read_to_end(&mut v)?;
    Ok(v)
}

/// Writes `data` on one thread while reading it back on this one; returns what came back.
pub fn echo_concurrently(s: &TcpStream, data: Arc<Vec<u8>>) -> Vec<u8> {
    let mut w = s.try_clone().unwrap();
    let d = Arc::clone(&data);
    let writer = std::thread::spawn(move || w.write_all(&d));
    let mut r = s.try_clone().unwrap();
    let mut back = vec![0; data.len()];
    r.read_exact(&mut back).expect("read the echo back");
    writer.join().unwrap().expect("write everything");
    back
}

/// Waits until `f` holds, up to [`PATIENCE`].
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
