//! Helpers shared by the load generator's tests (`tests/load_*.rs`): servers to load (the
//! real epoll backends, and a small test-only backend that can misbehave on purpose),
//! configs sized for a small shared box, and a server in a child process for tests whose
//! connection counts would not fit client and server in one process's file limit.
#![allow(dead_code)]

pub mod run;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_api::runner::{self, RunReport, RunningServer, ServerConfig};
use backend_api::{Backend, OutBuf, Service, Session, ShardContext, ShardStats, Unsupported};
use harness::load::{LoadConfig, Workload};

/// The server's core: the first usable one.
pub fn server_core() -> usize {
    runner::usable_cores()[0]
}

/// The client's core: the last usable one (the same as the server's on a 1-core box).
pub fn client_core() -> usize {
    *runner::usable_cores().last().unwrap()
}

/// Starts `backend` serving `service` on one core, loopback, free port.
pub fn start(backend: Arc<dyn Backend>, service: Service) -> RunningServer {
    runner::start(backend, ServerConfig::new(service, vec![server_core()])).unwrap()
}

/// The level-triggered epoll backend.
pub fn epoll_lt() -> Arc<dyn Backend> {
    Arc::new(backend_epoll::EpollLt)
}

/// The edge-triggered epoll backend.
pub fn epoll_et() -> Arc<dyn Backend> {
    Arc::new(backend_epoll::EpollEt)
}

/// A short closed-loop config for `server`: 0.2 s warmup, 1 s measured.
pub fn config(server: &RunningServer, workload: Workload) -> LoadConfig {
    let mut c = LoadConfig::new(server.local_addr(), workload);
    c.cores = vec![client_core()];
    c.workload.warmup = Duration::from_millis(200);
    c.workload.duration = Duration::from_secs(1);
    c
}

/// Stops the server and returns what it counted.
pub fn stop(server: RunningServer) -> RunReport {
    server.stop().unwrap()
}

/// How the test backend misbehaves.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Behaves.
    None,
    /// Flips one bit of the byte at this offset of the shard's output.
    FlipByte(u64),
    /// Once, this long after the first byte arrived, freezes for `stall`.
    StallOnce { after: Duration, stall: Duration },
}

/// A small level-triggered epoll server for tests: runs the real sessions, and can flip
/// a byte or stall once on purpose.
pub struct TestBackend(pub Fault);

impl TestBackend {
    pub fn arc(fault: Fault) -> Arc<dyn Backend> {
        Arc::new(TestBackend(fault))
    }
}

struct Conn {
    stream: TcpStream,
    session: backend_api::AnySession,
    out: OutBuf,
    closing: bool,
    want_out: bool,
}

fn ctl(ep: RawFd, op: i32, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: epoll_ctl reads the event struct we own.
    if unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Backend for TestBackend {
    fn name(&self) -> &'static str {
        "test-epoll"
    }
    fn describe(&self) -> &'static str {
        "test-only epoll server that can misbehave"
    }
    fn probe(&self) -> Result<(), Unsupported> {
        Ok(())
    }
    fn run_shard(&self, ctx: ShardContext) -> io::Result<ShardStats> {
        const LISTENER: u64 = u64::MAX;
        const STOP: u64 = u64::MAX - 1;
        // SAFETY: plain syscall.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(io::Error::last_os_error());
        }
        let inn = libc::EPOLLIN as u32;
        let out = libc::EPOLLOUT as u32;
        ctl(
            ep,
            libc::EPOLL_CTL_ADD,
            ctx.listener.as_raw_fd(),
            inn,
            LISTENER,
        )?;
        ctl(ep, libc::EPOLL_CTL_ADD, ctx.stop.as_raw_fd(), inn, STOP)?;
        let mut conns: HashMap<u64, Conn> = HashMap::new();
        let mut next: u64 = 0;
        let mut stats = ShardStats::default();
        let mut buf = vec![0u8; 64 * 1024];
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut written: u64 = 0;
        let mut first_byte: Option<Instant> = None;
        let mut stalled = false;
        'outer: loop {
            stats.loop_iterations += 1;
            // SAFETY: events is a live array of its length.
            let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in &events[..n as usize] {
                let (tok, bits) = (ev.u64, ev.events);
                if tok == STOP {
                    break 'outer;
                }
                if tok == LISTENER {
                    while let Ok((s, _)) = ctx.listener.accept() {
                        s.set_nonblocking(true)?;
                        backend_api::listener::prepare_accepted(&s)?;
                        stats.accepted += 1;
                        let id = next;
                        next += 1;
                        ctl(ep, libc::EPOLL_CTL_ADD, s.as_raw_fd(), inn, id)?;
                        conns.insert(
                            id,
                            Conn {
                                stream: s,
                                session: ctx.service.session(),
                                out: OutBuf::new(),
                                closing: false,
                                want_out: false,
                            },
                        );
                        stats.peak_connections = stats.peak_connections.max(conns.len() as u64);
                    }
                    continue;
                }
                let Some(c) = conns.get_mut(&tok) else {
                    continue;
                };
                let mut close = false;
                if bits & (inn | (libc::EPOLLERR | libc::EPOLLHUP) as u32) != 0 && !c.closing {
                    stats.reads += 1;
                    match c.stream.read(&mut buf) {
                        Ok(0) => close = true,
                        Ok(n) => {
                            stats.bytes_in += n as u64;
                            let now = Instant::now();
                            let first = *first_byte.get_or_insert(now);
                            if let Fault::StallOnce { after, stall } = self.0 {
                                if !stalled && now - first >= after {
                                    stalled = true;
                                    std::thread::sleep(stall);
                                }
                            }
                            let before = c.out.len() as u64;
                            let flow = c.session.on_input(&buf[..n], c.out.tail());
                            if let Fault::FlipByte(at) = self.0 {
                                let added = c.out.len() as u64 - before;
                                let first_new = written + before;
                                if at >= first_new && at < first_new + added {
                                    let pending = c.out.len();
                                    let v = c.out.tail();
                                    let i = v.len() - pending + (at - written) as usize;
                                    v[i] ^= 0x01;
                                }
                            }
                            if flow == backend_api::Flow::Close {
                                c.closing = true;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => close = true,
                    }
                }
                if !close {
                    while !c.out.is_empty() {
                        stats.writes += 1;
                        match c.stream.write(c.out.pending()) {
                            Ok(n) => {
                                written += n as u64;
                                stats.bytes_out += n as u64;
                                c.out.advance(n);
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(_) => {
                                close = true;
                                break;
                            }
                        }
                    }
                    if !close {
                        let want = !c.out.is_empty();
                        if want != c.want_out {
                            c.want_out = want;
                            let evs = if want { inn | out } else { inn };
                            ctl(ep, libc::EPOLL_CTL_MOD, c.stream.as_raw_fd(), evs, tok)?;
                        }
                        if c.closing && c.out.is_empty() {
                            close = true;
                        }
                    }
                }
                if close {
                    conns.remove(&tok);
                    stats.closed += 1;
                }
            }
        }
        stats.closed += conns.len() as u64;
        drop(conns);
        // SAFETY: closing the epoll fd we created, once.
        unsafe { libc::close(ep) };
        Ok(stats)
    }
}

/// Environment variable that turns [`child_server_entry`] into a server.
pub const CHILD_ENV: &str = "RINGSIDE_LOAD_TEST_CHILD_SERVER";

/// A server in its own process (this test binary, re-executed), for tests whose
/// connection counts would not fit client and server in one process's file limit.
pub struct ChildServer {
    child: Option<std::process::Child>,
    pub addr: std::net::SocketAddr,
}

impl ChildServer {
    /// Starts `entry_test` (a test that calls [`child_server_entry`]) of this binary as
    /// a server for `service`.
    pub fn start(entry_test: &str, service: Service) -> ChildServer {
        use std::io::BufRead;
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", entry_test, "--nocapture", "--test-threads", "1"])
            .env(CHILD_ENV, service.as_str())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Owned by the guard at once: any panic below kills and reaps it.
        let mut server = ChildServer {
            child: Some(child),
            addr: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        let mut stdout = std::io::BufReader::new(server.child_mut().stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            let n = stdout.read_line(&mut line).unwrap_or(0);
            assert!(n > 0, "the child server exited before announcing READY");
            // libtest prints "test child_server ... " before the line, without a newline.
            if let Some((_, a)) = line.trim().split_once("READY ") {
                server.addr = a.parse().unwrap();
                server.child_mut().stdout = Some(stdout.into_inner());
                return server;
            }
        }
    }

    fn child_mut(&mut self) -> &mut std::process::Child {
        self.child.as_mut().unwrap()
    }

    /// Stops the child and returns what its server counted.
    pub fn stop(mut self) -> ShardStats {
        use std::io::BufRead;
        drop(self.child_mut().stdin.take());
        let mut stdout = std::io::BufReader::new(self.child_mut().stdout.take().unwrap());
        let mut line = String::new();
        let mut stats = None;
        while stdout.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some((_, j)) = line.trim().split_once("STATS ") {
                stats = Some(serde_json::from_str(j).unwrap());
            }
            line.clear();
        }
        assert!(self.child_mut().wait().unwrap().success());
        stats.expect("child server printed no STATS line")
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Body of the child-server entry test: a no-op unless [`CHILD_ENV`] is set, in which
/// case it serves on epoll-lt until stdin closes, then prints its stats.
pub fn child_server_entry() {
    let Ok(service) = std::env::var(CHILD_ENV) else {
        return;
    };
    harness::rlimit::raise_nofile_to_hard();
    let service: Service = service.parse().unwrap();
    let server = start(epoll_lt(), service);
    println!("READY {}", server.local_addr());
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    let stats = stop(server).total;
    println!("STATS {}", serde_json::to_string(&stats).unwrap());
}
