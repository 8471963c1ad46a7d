//! The suite must fail backends that cheat. Each mutant here is a thread-per-connection
//! backend that is correct but for one flaw, and the case that guards the rule it breaks
//! must panic on it, for the reason the case names.
//!
//! The mutant keeps what a real backend keeps (sessions, the close policy, a slot per
//! connection under `max_connections`, stop by `shutdown(SHUT_RDWR)` of every connection)
//! so that a case fails it for its flaw, not for something else it lacks.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use backend_api::close;
use backend_api::{
    syscall, Backend, Flow, Limits, Service, Session, ShardContext, ShardStats, Unsupported,
};
use backend_conformance::cases;
use backend_conformance::child::{child_main, ChildSpec};

/// The one thing a mutant does wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flaw {
    /// Nothing: the reference the mutants are measured against.
    None,
    /// Writes nothing until the peer's EOF: no backpressure.
    Hoards,
    /// Changes byte 1000 of every connection's output.
    FlipsAByte,
    /// Closes right after the last response, with input unread: no linger.
    ClosesEarly,
    /// Lingers after the last response until the peer closes, however long that takes.
    LingersForever,
    /// When a write would block (backpressure), holds that output back and writes the next
    /// one first.
    ReordersUnderBackpressure,
    /// When a write would block, writes that output twice.
    DuplicatesUnderBackpressure,
    /// A connection that fails (reset) keeps its descriptor and its slot.
    LeaksOnReset,
    /// Keeps a touched 256 KiB buffer per connection.
    FatIdleConnections,
    /// At stop, shuts connections down for reading only: a thread blocked in `send` stays.
    StopMissesBlockedSends,
}

impl Flaw {
    const ALL: [Flaw; 10] = [
        Flaw::None,
        Flaw::Hoards,
        Flaw::FlipsAByte,
        Flaw::ClosesEarly,
        Flaw::LingersForever,
        Flaw::ReordersUnderBackpressure,
        Flaw::DuplicatesUnderBackpressure,
        Flaw::LeaksOnReset,
        Flaw::FatIdleConnections,
        Flaw::StopMissesBlockedSends,
    ];

    fn name(self) -> String {
        format!("{self:?}")
    }
}

/// Tells the child entry which mutant to serve.
const ENV_FLAW: &str = "RINGSIDE_MUTANT_FLAW";

struct Mutant(Flaw);

/// Open connections of a shard: their descriptors (for the stop) and a condvar signalled
/// when the last one ends.
#[derive(Default)]
struct Open {
    fds: Mutex<HashMap<u64, RawFd>>,
    idle: Condvar,
    bytes_in: AtomicU64,
}

impl Backend for Mutant {
    fn name(&self) -> &'static str {
        "mutant"
    }
    fn describe(&self) -> &'static str {
        "a deliberately wrong backend"
    }
    fn probe(&self) -> Result<(), Unsupported> {
        Ok(())
    }
    fn run_shard(&self, ctx: ShardContext) -> io::Result<ShardStats> {
        let flaw = self.0;
        let open = Arc::new(Open::default());
        let mut stats = ShardStats::default();
        let mut next_id = 0u64;
        loop {
            let full = open.fds.lock().unwrap().len() >= ctx.limits.max_connections;
            let mut fds = [
                libc::pollfd {
                    fd: ctx.stop.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: ctx.listener.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // At the limit, wait on the stop alone for a while (the backlog holds the rest).
            let (nfds, timeout) = if full { (1, 10) } else { (2, -1) };
            // SAFETY: the pollfd array is live and initialised for the call, with at least
            // `nfds` entries; the kernel writes only revents.
            match unsafe { syscall!(poll(fds.as_mut_ptr(), nfds, timeout)) } {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if ctx.stop.is_fired() {
                break;
            }
            if full || fds[1].revents == 0 {
                continue;
            }
            let Ok((conn, _)) = ctx.listener.accept() else {
                continue;
            };
            stats.accepted += 1;
            conn.set_nonblocking(false)?;
            let fd = OwnedFd::from(conn);
            let id = next_id;
            next_id += 1;
            open.fds.lock().unwrap().insert(id, fd.as_raw_fd());
            let (service, limits, open) = (ctx.service, ctx.limits, Arc::clone(&open));
            std::thread::spawn(move || {
                let leak = serve(&fd, service, limits, flaw, &open.bytes_in);
                if leak {
                    // The flaw: neither the descriptor nor the slot is ever released.
                    std::mem::forget(fd);
                    return;
                }
                let mut fds = open.fds.lock().unwrap();
                fds.remove(&id);
                drop(fd);
                if fds.is_empty() {
                    open.idle.notify_all();
                }
            });
        }
        let how = if flaw == Flaw::StopMissesBlockedSends {
            libc::SHUT_RD
        } else {
            libc::SHUT_RDWR
        };
        let mut fds = open.fds.lock().unwrap();
        for &fd in fds.values() {
            // SAFETY: `fd` is open while it is in the map and we hold its lock (a thread
            // removes it, then closes it, under the lock); shutdown does not close it.
            unsafe { libc::shutdown(fd, how) };
        }
        // Leaked connections never leave the map: do not wait for those.
        if flaw != Flaw::LeaksOnReset {
            while !fds.is_empty() {
                fds = open.idle.wait(fds).unwrap();
            }
        }
        stats.bytes_in = open.bytes_in.load(Ordering::Relaxed);
        Ok(stats)
    }
}

/// True when a write on `fd` would block now.
fn would_block(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one live pollfd for the call; a zero timeout never blocks.
    unsafe { libc::poll(&mut pfd, 1, 0) == 0 }
}

/// Blocking `send`s of all of `buf`.
fn send_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: the pointer and length describe `buf`, readable for the call.
        match unsafe { syscall!(send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL)) } {
            Ok(n) => buf = &buf[n as usize..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Serves one connection on its own thread. Returns true when the flaw says to leak it.
fn serve(fd: &OwnedFd, service: Service, limits: Limits, flaw: Flaw, bytes_in: &AtomicU64) -> bool {
    let raw = fd.as_raw_fd();
    let mut session = service.session();
    let mut buf = vec![0u8; limits.read_buffer];
    let _fat = (flaw == Flaw::FatIdleConnections).then(|| vec![0xA5u8; 256 * 1024]);
    let mut hoard = Vec::new();
    let mut held: Option<Vec<u8>> = None;
    let mut written = 0usize;
    let failed = flaw == Flaw::LeaksOnReset;
    loop {
        // SAFETY: the pointer and length describe `buf`, writable and exclusively borrowed.
        let n = match unsafe { syscall!(recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0)) } {
            Ok(n) => n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return failed,
        };
        bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        if n == 0 {
            if let Some(h) = held.take() {
                let _ = send_all(raw, &h);
            }
            return send_all(raw, &hoard).is_err() && failed;
        }
        let mut out = Vec::new();
        let flow = session.on_input(&buf[..n], &mut out);
        if flaw == Flaw::FlipsAByte && written <= 1000 && written + out.len() > 1000 {
            out[1000 - written] ^= 0x20;
        }
        written += out.len();
        let sent = match flaw {
            Flaw::Hoards => {
                hoard.extend_from_slice(&out);
                Ok(())
            }
            Flaw::ReordersUnderBackpressure if held.is_none() && would_block(raw) => {
                held = Some(out);
                Ok(())
            }
            Flaw::DuplicatesUnderBackpressure if would_block(raw) => {
                send_all(raw, &out).and_then(|()| send_all(raw, &out))
            }
            _ => send_all(raw, &out).and_then(|()| match held.take() {
                Some(h) => send_all(raw, &h),
                None => Ok(()),
            }),
        };
        if sent.is_err() {
            return failed;
        }
        if flow == Flow::Close {
            if let Some(h) = held.take() {
                let _ = send_all(raw, &h);
            }
            let _ = send_all(raw, &hoard);
            match flaw {
                Flaw::ClosesEarly => {}
                Flaw::LingersForever => {
                    let _ = close::shutdown_write(fd.as_fd());
                    loop {
                        // SAFETY: as above.
                        match unsafe { syscall!(recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0)) }
                        {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => break,
                        }
                    }
                }
                _ => {
                    close::linger_blocking(fd.as_fd(), &mut buf);
                }
            }
            return false;
        }
    }
}

fn spec(flaw: Flaw) -> ChildSpec {
    ChildSpec::new(module_path!()).env(ENV_FLAW, &flaw.name())
}

#[test]
fn child_server_entry() {
    let Ok(name) = std::env::var(ENV_FLAW) else {
        return;
    };
    let flaw = Flaw::ALL
        .into_iter()
        .find(|f| f.name() == name)
        .expect("a known flaw");
    child_main(Arc::new(Mutant(flaw)));
}

type Case = fn(Arc<dyn Backend>, &ChildSpec);

/// Runs `case` against the mutant with `flaw`; returns its panic message.
fn fails(case: Case, flaw: Flaw) -> String {
    let r = catch_unwind(AssertUnwindSafe(|| {
        case(Arc::new(Mutant(flaw)), &spec(flaw))
    }));
    let err = match r {
        Ok(()) => panic!("the case passed the {flaw:?} mutant"),
        Err(e) => e,
    };
    let msg = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    // The test log shows why each mutant failed.
    eprintln!("{flaw:?} fails as it must: {msg}");
    msg
}

/// Asserts the case fails `flaw` with a message containing `why`.
fn fails_because(case: Case, flaw: Flaw, why: &str) {
    let msg = fails(case, flaw);
    assert!(
        msg.contains(why),
        "the case failed the {flaw:?} mutant for another reason: {msg}"
    );
}

/// The reference mutant passes the cases the flaws are tested with, so each failure
/// below is the flaw's.
#[test]
fn the_unflawed_mutant_passes_the_cases_used_here() {
    let cases: [Case; 8] = [
        cases::echo_integrity_1b_to_4mib,
        cases::slow_reader_backpressure_bounds_memory,
        cases::http_slow_pipelining_client_gets_every_response_then_eof,
        cases::lingering_peer_is_closed_by_the_deadline,
        cases::http_pipelined_responses_in_order_under_backpressure,
        cases::reset_connections_free_their_slot_and_descriptor,
        cases::idle_memory_per_connection_is_bounded,
        cases::stop_with_sends_blocked_is_prompt_and_leaks_no_fd,
    ];
    for case in cases {
        case(Arc::new(Mutant(Flaw::None)), &spec(Flaw::None));
    }
}

#[test]
fn slow_reader_case_fails_a_backend_without_backpressure() {
    fails_because(
        cases::slow_reader_backpressure_bounds_memory,
        Flaw::Hoards,
        "no backpressure",
    );
}

#[test]
fn echo_case_fails_a_backend_that_corrupts_a_byte() {
    fails_because(
        cases::echo_integrity_1b_to_4mib,
        Flaw::FlipsAByte,
        "first difference at offset 1000",
    );
}

#[test]
fn slow_pipelining_case_fails_a_backend_that_closes_with_input_unread() {
    fails_because(
        cases::http_slow_pipelining_client_gets_every_response_then_eof,
        Flaw::ClosesEarly,
        "closed with input unread",
    );
}

#[test]
fn lingering_peer_case_fails_a_backend_that_lingers_without_deadline() {
    fails_because(
        cases::lingering_peer_is_closed_by_the_deadline,
        Flaw::LingersForever,
        "lingering must end by the deadline",
    );
}

#[test]
fn pipelined_order_case_fails_a_backend_that_reorders_under_backpressure() {
    fails_because(
        cases::http_pipelined_responses_in_order_under_backpressure,
        Flaw::ReordersUnderBackpressure,
        "responses reordered, duplicated or lost",
    );
}

#[test]
fn pipelined_order_case_fails_a_backend_that_duplicates_under_backpressure() {
    fails_because(
        cases::http_pipelined_responses_in_order_under_backpressure,
        Flaw::DuplicatesUnderBackpressure,
        "responses reordered, duplicated or lost",
    );
}

#[test]
fn reset_case_fails_a_backend_that_leaks_a_reset_connection() {
    fails_because(
        cases::reset_connections_free_their_slot_and_descriptor,
        Flaw::LeaksOnReset,
        "a descriptor leaked on reset",
    );
}

#[test]
fn idle_memory_case_fails_a_backend_with_fat_idle_connections() {
    fails_because(
        cases::idle_memory_per_connection_is_bounded,
        Flaw::FatIdleConnections,
        "idle memory per connection is not bounded",
    );
}

#[test]
fn stop_case_fails_a_backend_whose_stop_misses_blocked_sends() {
    fails_because(
        cases::stop_with_sends_blocked_is_prompt_and_leaks_no_fd,
        Flaw::StopMissesBlockedSends,
        "did not stop within",
    );
}

/// A backend whose probe fails: every case must skip it (return without running), never
/// fail it and never start it.
struct Unprobed;

impl Backend for Unprobed {
    fn name(&self) -> &'static str {
        "unprobed"
    }
    fn describe(&self) -> &'static str {
        "a backend this machine cannot run"
    }
    fn probe(&self) -> Result<(), Unsupported> {
        Err(Unsupported::new(
            "needs a feature this test pretends is missing",
        ))
    }
    fn run_shard(&self, _: ShardContext) -> io::Result<ShardStats> {
        panic!("a case started a backend whose probe failed");
    }
}

#[test]
fn every_case_skips_a_backend_whose_probe_fails() {
    let all: [Case; 18] = [
        cases::echo_integrity_1b_to_4mib,
        cases::thousand_concurrent_connections,
        cases::http_64_pipelined_in_one_write,
        cases::http_one_byte_at_a_time,
        cases::http_connection_close_and_http10,
        cases::http_malformed_400_and_oversized_431,
        cases::client_reset_mid_response_harms_no_one,
        cases::slow_reader_backpressure_bounds_memory,
        cases::half_close_gets_full_echo_then_eof,
        cases::two_shards_both_accept,
        cases::stop_is_prompt_and_leaks_no_fd,
        cases::emfile_does_not_spin_and_recovers,
        cases::http_slow_pipelining_client_gets_every_response_then_eof,
        cases::lingering_peer_is_closed_by_the_deadline,
        cases::http_pipelined_responses_in_order_under_backpressure,
        cases::reset_connections_free_their_slot_and_descriptor,
        cases::idle_memory_per_connection_is_bounded,
        cases::stop_with_sends_blocked_is_prompt_and_leaks_no_fd,
    ];
    assert_eq!(
        all.len(),
        backend_conformance::CASES.len(),
        "a case is missing here"
    );
    for case in all {
        case(Arc::new(Unprobed), &spec(Flaw::None));
    }
}
