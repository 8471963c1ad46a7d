//! Backends that misbehave on purpose, for the harness's own tests of failure handling.
//! Compiled only into builds with debug assertions (the test builds; a release binary
//! has none of them), and registered only when `RINGSIDE_TEST_BACKENDS=1` is set.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;

use backend_api::{Backend, Flow, Session, ShardContext, ShardStats, Unsupported};

/// Environment variable that registers these backends.
pub const ENV: &str = "RINGSIDE_TEST_BACKENDS";

/// Serves correctly (thread per connection) until it has accepted `after` connections,
/// then panics in its shard.
pub struct PanicAfter(pub u64);

/// Never becomes ready: its probe blocks forever inside `harness serve` (and only there,
/// so `compare` can still list and probe it).
pub struct NeverReady;

impl Backend for PanicAfter {
    fn name(&self) -> &'static str {
        "test-panic"
    }
    fn describe(&self) -> &'static str {
        "test only: panics after a few connections"
    }
    fn probe(&self) -> Result<(), Unsupported> {
        Ok(())
    }
    fn run_shard(&self, ctx: ShardContext) -> io::Result<ShardStats> {
        let mut stats = ShardStats::default();
        let mut fds = [
            libc::pollfd {
                fd: ctx.listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: ctx.stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        loop {
            // SAFETY: the pollfd array is live and initialised for the call, with its true length; the kernel writes only revents.
            unsafe { backend_api::syscall!(poll(fds.as_mut_ptr(), 2, -1)) }?;
            if ctx.stop.is_fired() {
                return Ok(stats);
            }
            while let Ok((conn, _)) = ctx.listener.accept() {
                stats.accepted += 1;
                if stats.accepted > self.0 {
                    panic!("deliberate panic after {} connections", self.0);
                }
                let service = ctx.service;
                std::thread::spawn(move || serve(conn, service));
            }
        }
    }
}

fn serve(mut conn: TcpStream, service: backend_api::Service) -> io::Result<()> {
    conn.set_nonblocking(false)?;
    let mut session = service.session();
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = Vec::new();
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        out.clear();
        let flow = session.on_input(&buf[..n], &mut out);
        conn.write_all(&out)?;
        if flow == Flow::Close {
            return Ok(());
        }
    }
}

impl Backend for NeverReady {
    fn name(&self) -> &'static str {
        "test-never-ready"
    }
    fn describe(&self) -> &'static str {
        "test only: never becomes ready"
    }
    fn probe(&self) -> Result<(), Unsupported> {
        if std::env::args().nth(1).as_deref() == Some("serve") {
            loop {
                std::thread::park();
            }
        }
        Ok(())
    }
    fn run_shard(&self, _ctx: ShardContext) -> io::Result<ShardStats> {
        Ok(ShardStats::default())
    }
}
