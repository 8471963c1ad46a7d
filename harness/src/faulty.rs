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

/// Serves thread per connection but flips the first byte of every reply: a server whose
/// numbers must never be charted.
pub struct CorruptReplies;

/// Serves correctly, thread per connection, but sleeps this long before answering each
/// read: a server that cannot keep up with a modest offered rate.
pub struct SlowReplies(pub std::time::Duration);

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
        let after = self.0;
        accept_threads(ctx, Reply::Correct, move |accepted| {
            if accepted > after {
                panic!("deliberate panic after {after} connections");
            }
        })
    }
}

impl Backend for CorruptReplies {
    fn name(&self) -> &'static str {
        "test-corrupt"
    }
    fn describe(&self) -> &'static str {
        "test only: flips the first byte of every reply"
    }
    fn probe(&self) -> Result<(), Unsupported> {
        Ok(())
    }
    fn run_shard(&self, ctx: ShardContext) -> io::Result<ShardStats> {
        accept_threads(ctx, Reply::Corrupt, |_| {})
    }
}

impl Backend for SlowReplies {
    fn name(&self) -> &'static str {
        "test-slow"
    }
    fn describe(&self) -> &'static str {
        "test only: sleeps before every reply"
    }
    fn probe(&self) -> Result<(), Unsupported> {
        Ok(())
    }
    fn run_shard(&self, ctx: ShardContext) -> io::Result<ShardStats> {
        accept_threads(ctx, Reply::After(self.0), |_| {})
    }
}

/// How a test backend answers.
#[derive(Debug, Clone, Copy)]
enum Reply {
    Correct,
    Corrupt,
    After(std::time::Duration),
}

/// Accepts until stopped, one thread per connection; `on_accept` sees the running count.
fn accept_threads(
    ctx: ShardContext,
    reply: Reply,
    on_accept: impl Fn(u64),
) -> io::Result<ShardStats> {
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
            on_accept(stats.accepted);
            let service = ctx.service;
            std::thread::spawn(move || serve(conn, service, reply));
        }
    }
}

fn serve(mut conn: TcpStream, service: backend_api::Service, reply: Reply) -> io::Result<()> {
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
        match reply {
            Reply::Correct => {}
            Reply::Corrupt => {
                if let Some(b) = out.first_mut() {
                    *b ^= 0x20;
                }
            }
            Reply::After(d) => std::thread::sleep(d),
        }
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
