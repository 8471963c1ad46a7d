//! Tests that look inside a running shard through [`Hooks`]: pinning, listener adoption and
//! the options every socket carries.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backend_api::runner::{self, usable_cores};
use backend_api::{Backend, ServerConfig, Service, ShardContext, ShardStats, Unsupported};

use crate::shard::{self, Hooks};
use crate::Glommio;

/// Held by unit tests that count or create eventfds, so they do not see each other's.
pub(crate) static SERIAL: Mutex<()> = Mutex::new(());

/// What one shard saw from inside its executor.
#[derive(Debug, Default, Clone)]
struct Seen {
    core: usize,
    /// CPUs in the shard thread's affinity mask, read by `sched_getaffinity` from the
    /// executor's main task.
    affinity: Vec<usize>,
    /// CPUs of every thread named after this shard (the shard thread and glommio's blocking
    /// thread, which inherits the name), read from /proc.
    thread_affinities: Vec<Vec<usize>>,
    runner_listener_inode: u64,
    served_listener_inode: u64,
    reuseport: i32,
    reuseaddr: i32,
    accepting: i32,
    nonblocking: bool,
    accepted_nodelay: Vec<i32>,
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    fn with(&self, shard: usize, f: impl FnOnce(&mut Seen)) {
        let mut v = self.0.lock().unwrap();
        f(&mut v[shard]);
    }
}

/// The glommio backend with observation hooks.
struct Observed {
    log: Log,
}

struct ShardHooks {
    log: Log,
    shard: usize,
}

impl Hooks for ShardHooks {
    fn started(&self, listener: RawFd) {
        let affinity = affinity_of(0);
        let thread_affinities = threads_named(&format!("glommio-shard{}", self.shard));
        self.log.with(self.shard, |s| {
            s.affinity = affinity;
            s.thread_affinities = thread_affinities;
            s.served_listener_inode = inode(listener);
            s.reuseport = sockopt(listener, libc::SOL_SOCKET, libc::SO_REUSEPORT);
            s.reuseaddr = sockopt(listener, libc::SOL_SOCKET, libc::SO_REUSEADDR);
            s.accepting = sockopt(listener, libc::SOL_SOCKET, libc::SO_ACCEPTCONN);
            // SAFETY: F_GETFL on a descriptor the shard owns for the whole call.
            let flags = unsafe { libc::fcntl(listener, libc::F_GETFL) };
            s.nonblocking = flags & libc::O_NONBLOCK != 0;
        });
    }

    fn accepted(&self, conn: RawFd) {
        let nodelay = sockopt(conn, libc::IPPROTO_TCP, libc::TCP_NODELAY);
        self.log
            .with(self.shard, |s| s.accepted_nodelay.push(nodelay));
    }
}

impl Backend for Observed {
    fn name(&self) -> &'static str {
        "glommio"
    }
    fn describe(&self) -> &'static str {
        "glommio with test hooks"
    }
    fn probe(&self) -> Result<(), Unsupported> {
        Glommio.probe()
    }
    fn run_shard(&self, ctx: ShardContext) -> io::Result<ShardStats> {
        let shard = ctx.shard;
        let (core, ino) = (ctx.core, inode(ctx.listener.as_raw_fd()));
        self.log.with(shard, |s| {
            s.core = core;
            s.runner_listener_inode = ino;
        });
        shard::run(
            ctx,
            ShardHooks {
                log: self.log.clone(),
                shard,
            },
        )
    }
}

fn affinity_of(tid: libc::pid_t) -> Vec<usize> {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is a valid value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most `size_of::<cpu_set_t>()` bytes into `set`.
    let rc = unsafe { libc::sched_getaffinity(tid, std::mem::size_of_val(&set), &mut set) };
    assert_eq!(rc, 0, "sched_getaffinity: {}", io::Error::last_os_error());
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the size of the set.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

fn threads_named(name: &str) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            if let Ok(tid) = entry.file_name().to_string_lossy().parse() {
                out.push(affinity_of(tid));
            }
        }
    }
    out
}

fn inode(fd: RawFd) -> u64 {
    // SAFETY: stat is plain data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one `struct stat` into `st`.
    assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0);
    st.st_ino
}

fn sockopt(fd: RawFd, level: libc::c_int, name: libc::c_int) -> i32 {
    let mut v: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `v`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "getsockopt: {}", io::Error::last_os_error());
    v
}

/// Listening sockets on `port` in /proc/net/tcp (state 0A).
fn listeners_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let want = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&want) && f[3] == "0A"
        })
        .count()
}

fn echo(addr: std::net::SocketAddr, msg: &[u8]) -> io::Result<()> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(msg)?;
    let mut back = vec![0; msg.len()];
    s.read_exact(&mut back)?;
    assert_eq!(back, msg);
    Ok(())
}

#[test]
fn executor_keeps_the_runner_pin_and_adopts_the_runners_listener() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let core = usable_cores()[0];
    let log = Log::default();
    log.0.lock().unwrap().resize(2, Seen::default());
    // Two shards on one core: both listeners share the port through SO_REUSEPORT.
    let server = runner::start(
        Arc::new(Observed { log: log.clone() }),
        ServerConfig::new(Service::Echo, vec![core, core]),
    )
    .unwrap();
    let addr = server.local_addr();
    // Every connection is answered: a listener bound but never accepted on would leave
    // about half of them hanging in its backlog.
    for i in 0..64u32 {
        echo(addr, format!("hello {i}").as_bytes()).unwrap();
    }
    assert_eq!(
        listeners_on(addr.port()),
        2,
        "no socket beyond the runner's two"
    );
    let report = server.stop().unwrap();
    assert_eq!(report.total.accepted, 64);
    assert_eq!(report.total.closed, 64);

    let seen = log.0.lock().unwrap().clone();
    for (shard, s) in seen.iter().enumerate() {
        assert_eq!(s.core, core);
        assert_eq!(
            s.affinity,
            vec![core],
            "shard {shard}: glommio re-pinned the thread"
        );
        assert!(
            s.thread_affinities.len() >= 2,
            "shard {shard}: expected the shard thread and glommio's blocking thread, saw {:?}",
            s.thread_affinities
        );
        for a in &s.thread_affinities {
            assert_eq!(
                a,
                &vec![core],
                "shard {shard}: a glommio thread left the core"
            );
        }
        assert_eq!(
            s.served_listener_inode, s.runner_listener_inode,
            "shard {shard} serves the runner's own socket"
        );
        assert_eq!((s.reuseport, s.reuseaddr, s.accepting), (1, 1, 1));
        assert!(
            !s.nonblocking,
            "glommio listeners are blocking; it toggles O_NONBLOCK itself"
        );
        assert!(
            s.accepted_nodelay.iter().all(|&v| v == 1),
            "TCP_NODELAY on every accepted socket: {:?}",
            s.accepted_nodelay
        );
    }
    let accepted: usize = seen.iter().map(|s| s.accepted_nodelay.len()).sum();
    assert_eq!(accepted, 64);
}

#[test]
fn glommio_errors_are_mapped_with_the_fix() {
    use glommio::{GlommioError, ReactorErrorKind};
    let e = shard::executor_error(
        GlommioError::ReactorError(ReactorErrorKind::MemLockLimit(65536, 524288)),
        1,
        3,
        2,
    );
    let msg = e.to_string();
    assert!(msg.contains("glommio shard 1 (core 3)"), "{msg}");
    assert!(msg.contains("Fix: ulimit -l 512"), "{msg}");

    let e = shard::executor_error(
        GlommioError::IoError(io::Error::from_raw_os_error(libc::ENOMEM)),
        0,
        0,
        4,
    );
    let msg = e.to_string();
    assert!(msg.contains("creating the executor failed"), "{msg}");
    assert!(msg.contains("Fix: ulimit -l 960"), "{msg}");
}
