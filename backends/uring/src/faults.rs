//! Fault injection around submission and completion dispatch (unit tests only): make a push
//! or an `io_uring_enter` fail, lose or corrupt a completion, and check the shard's
//! bookkeeping survives it.

use std::collections::HashMap;
use std::io;

use io_uring::squeue;

use crate::token::{Op, Token};

/// What to break. Counts are 1-based.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Faults {
    /// The n-th push of an SQE of this op fails with EIO (nothing is queued).
    pub fail_push: Option<(Op, u32)>,
    /// `io_uring_enter` fails with `errno` on `count` calls, starting with call `from`.
    pub enter_errno: Option<(i32, u32, u32)>,
    /// Once an SQE of this op was pushed, every later `io_uring_enter` fails with EIO.
    pub break_ring_after_push_of: Option<Op>,
    /// The n-th completion of this op is lost (never dispatched).
    pub lose_cqe: Option<(Op, u32)>,
    /// The n-th receive completion with data reports more bytes than any buffer holds.
    pub corrupt_recv: Option<u32>,
    /// The n-th send completion with data names a buffer the send ring never had at its
    /// head (`send-bundle`).
    pub corrupt_send: Option<u32>,
}

/// The per-shard state of the injection.
pub(crate) struct Injector {
    faults: Faults,
    pushes: HashMap<Op, u32>,
    cqes: HashMap<Op, u32>,
    data_recvs: u32,
    data_sends: u32,
    enters: u32,
    broken: bool,
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected fault: {what} (EIO)"))
}

impl Injector {
    pub(crate) fn new(faults: Faults) -> Injector {
        Injector {
            faults,
            pushes: HashMap::new(),
            cqes: HashMap::new(),
            data_recvs: 0,
            data_sends: 0,
            enters: 0,
            broken: false,
        }
    }

    pub(crate) fn on_push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        let Some(token) = Token::decode(entry.get_user_data()) else {
            return Ok(());
        };
        let n = self.pushes.entry(token.op).or_default();
        *n += 1;
        if self.faults.fail_push == Some((token.op, *n)) {
            return Err(injected("push"));
        }
        if self.faults.break_ring_after_push_of == Some(token.op) {
            self.broken = true;
        }
        Ok(())
    }

    pub(crate) fn on_enter(&mut self) -> io::Result<usize> {
        self.enters += 1;
        if self.broken {
            return Err(injected("io_uring_enter"));
        }
        if let Some((errno, from, count)) = self.faults.enter_errno {
            if self.enters >= from && self.enters - from < count {
                return Err(io::Error::from_raw_os_error(errno));
            }
        }
        Ok(0)
    }

    pub(crate) fn on_cqe(
        &mut self,
        user_data: u64,
        res: i32,
        flags: u32,
    ) -> Option<(u64, i32, u32)> {
        let Some(token) = Token::decode(user_data) else {
            return Some((user_data, res, flags));
        };
        let n = self.cqes.entry(token.op).or_default();
        *n += 1;
        if self.faults.lose_cqe == Some((token.op, *n)) {
            return None;
        }
        if token.op == Op::Recv && res > 0 {
            self.data_recvs += 1;
            if self.faults.corrupt_recv == Some(self.data_recvs) {
                return Some((user_data, 1 << 30, flags));
            }
        }
        if token.op == Op::Send && res > 0 && !io_uring::cqueue::notif(flags) {
            self.data_sends += 1;
            if self.faults.corrupt_send == Some(self.data_sends) {
                // IORING_CQE_F_BUFFER with a buffer id one past the one reported.
                let bid = io_uring::cqueue::buffer_select(flags).unwrap_or(0);
                return Some((user_data, res, 1 | (u32::from(bid.wrapping_add(1)) << 16)));
            }
        }
        Some((user_data, res, flags))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read, Write};
    use std::net::TcpStream;
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    use backend_api::runner::{start, usable_cores, RunReport, RunnerError, RunningServer};
    use backend_api::{ServerConfig, Service};

    use super::*;
    use crate::{Diagnostics, Feature, Features, Tuned, Tuning, Variant};

    /// Turns a hang into a failure; never an assertion about speed.
    const FAILSAFE: Duration = Duration::from_secs(60);

    fn serve(
        variant: impl Into<Features> + Copy,
        tune: impl FnOnce(&mut Tuning),
    ) -> (RunningServer, Arc<Diagnostics>) {
        let mut tuning = Tuning::for_variant(variant);
        tune(&mut tuning);
        let diag = Arc::new(Diagnostics::new());
        let backend = Tuned::new(variant).tuning(tuning).diagnostics(diag.clone());
        let config = ServerConfig::new(Service::Echo, vec![usable_cores()[0]]);
        (
            start(Arc::new(backend), config).expect("server starts"),
            diag,
        )
    }

    fn connect(server: &RunningServer) -> TcpStream {
        let s = TcpStream::connect(server.local_addr()).expect("connect");
        s.set_read_timeout(Some(FAILSAFE)).unwrap();
        s.set_write_timeout(Some(FAILSAFE)).unwrap();
        s
    }

    /// Stops (or, with `stop == false`, waits for a shard that failed) within the failsafe.
    fn finish(server: RunningServer, stop: bool) -> Result<RunReport, RunnerError> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let r = if stop { server.stop() } else { server.join() };
            let _ = tx.send(r);
        });
        rx.recv_timeout(FAILSAFE)
            .expect("the shard ended within the failsafe instead of hanging")
    }

    fn echo_once(s: &mut TcpStream) {
        s.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
    }

    #[test]
    fn a_failed_push_after_a_queued_send_keeps_the_count_exact() {
        // The receive re-armed after the first echo fails to queue, right after the echo's
        // send was queued: the send must still be counted, or teardown ends with it in
        // flight (which the kernel-side check at teardown reports as a bookkeeping bug).
        let (server, _) = serve(Variant::OneShot, |t| {
            t.faults.fail_push = Some((Op::Recv, 2));
            t.send_buffer = Some(4096);
        });
        let mut c = connect(&server);
        c.write_all(&[b'x'; 64 * 1024]).unwrap();
        let err = finish(server, false).expect_err("the injected push failure ends the shard");
        let msg = err.to_string();
        assert!(msg.contains("injected fault: push"), "{msg}");
        assert!(
            !msg.contains("bookkeeping") && !msg.contains("still in flight"),
            "{msg}"
        );
    }

    #[test]
    fn a_lost_completion_makes_stop_fail_at_its_deadline_instead_of_hanging() {
        let (server, _) = serve(Variant::OneShot, |t| {
            t.faults.lose_cqe = Some((Op::Close, 1));
            t.drain_timeout = Duration::from_millis(200);
        });
        let mut c = connect(&server);
        echo_once(&mut c);
        drop(c); // the server's Close completion is lost
                 // Make sure the close was submitted before stopping: a second connection's echo
                 // runs after the first one's EOF was handled.
        let mut d = connect(&server);
        echo_once(&mut d);
        drop(d);
        let err = finish(server, true).expect_err("a drain that cannot finish fails");
        let msg = err.to_string();
        assert!(msg.contains("still in flight"), "{msg}");
    }

    #[test]
    fn ebadr_names_the_lost_completions() {
        let (server, _) = serve(Variant::OneShot, |t| {
            t.faults.enter_errno = Some((libc::EBADR, 2, 1));
        });
        let c = connect(&server);
        let err = finish(server, false).expect_err("lost completions end the shard");
        drop(c);
        assert!(err.to_string().contains("EBADR"), "{err}");
    }

    #[test]
    fn ebusy_is_retried_a_bounded_number_of_times() {
        let (server, diag) = serve(Variant::OneShot, |t| {
            t.faults.enter_errno = Some((libc::EBUSY, 2, 3));
        });
        let mut c = connect(&server);
        echo_once(&mut c);
        drop(c);
        finish(server, true).expect("three EBUSY in a row are retried");
        assert_eq!(diag.snapshot().enter_retries, 3);

        let (server, _) = serve(Variant::OneShot, |t| {
            t.faults.enter_errno = Some((libc::EBUSY, 2, u32::MAX));
        });
        let c = connect(&server);
        let err = finish(server, false).expect_err("EBUSY forever ends the shard");
        drop(c);
        assert!(err.to_string().contains("times in a row"), "{err}");
    }

    fn lost_input_aborts(variant: Variant) {
        let (server, diag) = serve(variant, |t| t.faults.corrupt_recv = Some(1));
        let mut c = connect(&server);
        c.write_all(b"hello").unwrap();
        let mut buf = [0u8; 16];
        match c.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("expected the connection aborted, got {other:?}"),
        }
        assert_eq!(diag.snapshot().lost_input, 1);
        finish(server, true).expect("the shard itself is fine");
    }

    #[test]
    fn a_receive_whose_data_cannot_be_found_aborts_its_connection_one_shot() {
        lost_input_aborts(Variant::OneShot);
    }

    #[test]
    fn a_receive_whose_data_cannot_be_found_aborts_its_connection_multishot() {
        lost_input_aborts(Variant::Multishot);
    }

    #[test]
    fn an_abandoned_ring_never_closes_a_descriptor_a_queued_sqe_names() {
        // The echo's send is queued, then every io_uring_enter fails: the send (and the
        // cancels queued after it) stay in the SQ, naming the socket by number. The socket
        // must stay open (leaked), or its number could be reused under the queued SQE.
        let (server, _) = serve(Variant::OneShot, |t| {
            t.faults.break_ring_after_push_of = Some(Op::Send);
        });
        let mut c = connect(&server);
        c.write_all(b"hello").unwrap();
        let err = finish(server, false).expect_err("the broken ring ends the shard");
        assert!(err.to_string().contains("injected fault"), "{err}");
        c.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        match c.read(&mut buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("the server closed a socket a queued SQE names: {other:?}"),
        }
    }

    fn send_bundle() -> Features {
        Features::NONE.with(Feature::SendBundle)
    }

    #[test]
    fn a_send_completion_that_does_not_match_the_send_ring_aborts_its_connection() {
        let (server, diag) = serve(send_bundle(), |t| t.faults.corrupt_send = Some(2));
        let mut c = connect(&server);
        echo_once(&mut c);
        c.write_all(b"hello").unwrap();
        let mut buf = [0u8; 16];
        // The reply itself may arrive (the kernel sent it); the connection must end.
        loop {
            match c.read(&mut buf) {
                Ok(0) => break,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                Ok(_) => {}
                Err(e) => panic!("expected the connection aborted, got {e}"),
            }
        }
        assert_eq!(diag.snapshot().lost_output, 1);
        let mut d = connect(&server);
        echo_once(&mut d);
        drop(d);
        finish(server, true).expect("the shard itself is fine, and its rings unregister");
    }

    #[test]
    fn a_failed_bundle_send_push_keeps_the_count_exact() {
        // The second send fails to queue after the connection took its send ring: the
        // shard ends, and teardown must find nothing in flight and the ring unregistered.
        let (server, _) = serve(send_bundle(), |t| t.faults.fail_push = Some((Op::Send, 2)));
        let mut c = connect(&server);
        echo_once(&mut c);
        c.write_all(b"again").unwrap();
        let err = finish(server, false).expect_err("the injected push failure ends the shard");
        let msg = err.to_string();
        assert!(msg.contains("injected fault: push"), "{msg}");
        assert!(
            !msg.contains("bookkeeping") && !msg.contains("still in flight"),
            "{msg}"
        );
    }

    #[test]
    fn bundle_sends_under_a_small_send_buffer_lose_no_bytes() {
        // Many sends, each waiting for room, with output queued meanwhile; every byte must
        // arrive in order. (Sends that end inside a chunk, which need a fresh ring, show
        // up in the conformance suite's slow-reader case.)
        let (server, diag) = serve(send_bundle(), |t| t.send_buffer = Some(4096));
        let mut c = connect(&server);
        let data: Vec<u8> = (0..(4usize << 20)).map(|i| (i * 7 % 251) as u8).collect();
        let mut w = c.try_clone().unwrap();
        let sent = data.clone();
        let writer = std::thread::spawn(move || w.write_all(&sent));
        let mut got = vec![0u8; data.len()];
        c.read_exact(&mut got).unwrap();
        writer.join().unwrap().unwrap();
        assert!(got == data, "echo differs");
        let d = diag.snapshot();
        assert_eq!(d.lost_output, 0);
        drop(c);
        finish(server, true).expect("clean stop");
    }
}
