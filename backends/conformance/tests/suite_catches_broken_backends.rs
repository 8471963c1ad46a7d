//! The suite must fail backends that cheat. Each broken backend here breaks one rule, and
//! the case that guards the rule must panic on it.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use backend_api::{Backend, ShardContext, ShardStats, Unsupported};
use backend_conformance::cases;
use backend_conformance::child::{child_main, ChildSpec};

#[derive(Clone, Copy)]
enum Flaw {
    /// Buffers everything until EOF: no backpressure.
    Hoards,
    /// Echoes with one byte changed.
    FlipsAByte,
}

struct Broken(Flaw);

impl Backend for Broken {
    fn name(&self) -> &'static str {
        "broken"
    }
    fn describe(&self) -> &'static str {
        "a deliberately wrong backend"
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
                let flaw = self.0;
                std::thread::spawn(move || serve(conn, flaw));
            }
        }
    }
}

fn serve(mut conn: TcpStream, flaw: Flaw) -> io::Result<()> {
    conn.set_nonblocking(false)?;
    match flaw {
        Flaw::Hoards => {
            let mut all = Vec::new();
            conn.read_to_end(&mut all)?;
            conn.write_all(&all)
        }
        Flaw::FlipsAByte => {
            let mut buf = vec![0u8; 65536];
            let mut total = 0usize;
            loop {
                let n = conn.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                if total < 1000 && total + n >= 1000 {
                    buf[1000 - total] ^= 0x20;
                }
                total += n;
                conn.write_all(&buf[..n])?;
            }
        }
    }
}

fn spec() -> ChildSpec {
    ChildSpec::new(module_path!())
}

#[test]
fn child_server_entry() {
    child_main(Arc::new(Broken(Flaw::Hoards)));
}

#[test]
fn slow_reader_case_fails_a_backend_without_backpressure() {
    let r = catch_unwind(AssertUnwindSafe(|| {
        cases::slow_reader_backpressure_bounds_memory(Arc::new(Broken(Flaw::Hoards)), &spec())
    }));
    let msg = r.expect_err("the slow-reader case passed a backend that buffers everything");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("no backpressure"),
        "failed for another reason: {msg}"
    );
}

#[test]
fn echo_case_fails_a_backend_that_corrupts_a_byte() {
    let r = catch_unwind(AssertUnwindSafe(|| {
        cases::echo_integrity_1b_to_4mib(Arc::new(Broken(Flaw::FlipsAByte)), &spec())
    }));
    assert!(
        r.is_err(),
        "the echo case passed a backend that flips a byte"
    );
}
