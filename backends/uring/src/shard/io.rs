//! Submission: the one place SQEs are queued and `io_uring_enter` is called, and the
//! shard-wide count of operations in flight.

use std::io;

use io_uring::{squeue, types, CompletionQueue, SubmissionQueue, Submitter};

/// The ring as the loop uses it: its submission side, its completion queue, and the count of
/// operations in flight. Every SQE is pushed through [`Io::push`], which counts it the moment
/// it is queued, so no error path between a push and its bookkeeping can leave the count too
/// low (teardown frees buffers only when it reaches zero).
pub(crate) struct Io<'r> {
    pub(crate) submitter: Submitter<'r>,
    pub(crate) sq: SubmissionQueue<'r>,
    pub(crate) cq: CompletionQueue<'r>,
    pub(crate) sqpoll: bool,
    /// SQEs queued or submitted whose final CQE has not been reaped.
    pub(crate) inflight: u64,
    /// `io_uring_enter` calls retried after EBUSY/EAGAIN (diagnostics).
    pub(crate) retries: u64,
    #[cfg(test)]
    pub(crate) faults: crate::faults::Injector,
}

impl Io<'_> {
    /// Queues `entry`, submitting first if the SQ is full, and counts it in flight.
    ///
    /// # Safety
    ///
    /// Every pointer `entry` carries (buffers, timespecs) must stay valid, and every buffer
    /// it names must not be read or written by us, until the operation's final CQE.
    pub(crate) unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        #[cfg(test)]
        self.faults.on_push(entry)?;
        loop {
            // SAFETY: forwarded from this function's contract.
            if unsafe { self.sq.push(entry) }.is_ok() {
                self.inflight += 1;
                return Ok(());
            }
            self.sq.sync();
            self.enter(0, None, None)?;
            self.sq.sync();
            if self.sqpoll && self.sq.is_full() {
                // The SQ thread consumes asynchronously: wait until it made room.
                self.retrying(|io| io.submitter.squeue_wait())?;
                self.sq.sync();
            }
        }
    }

    /// Submits what is queued and waits for `want` completions, or until `timeout`;
    /// `min_wait` (µs, `minwait`) lets a wait return early with fewer once it passed.
    /// Returns Ok on a timeout. Fails when the kernel dropped completions (EBADR, or the CQ
    /// overflow counter moved): the in-flight count can then never reach zero.
    pub(crate) fn enter(
        &mut self,
        want: usize,
        timeout: Option<&types::Timespec>,
        min_wait: Option<u32>,
    ) -> io::Result<()> {
        self.sq.sync();
        let result = self.retrying(|io| {
            #[cfg(test)]
            io.faults.on_enter()?;
            match (timeout, min_wait) {
                (None, None) => io.submitter.submit_and_wait(want),
                (ts, min) => {
                    let mut args = types::SubmitArgs::new();
                    if let Some(min) = min {
                        args = args.min_wait_usec(min);
                    }
                    match ts {
                        Some(ts) => io.submitter.submit_with_args(want, &args.timespec(ts)),
                        None => io.submitter.submit_with_args(want, &args),
                    }
                }
            }
        });
        match result {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBADR) => {
                return Err(io::Error::new(
                    e.kind(),
                    "the kernel dropped io_uring completions (EBADR): the completion queue \
                     overflowed and no memory was left to buffer them; raise Tuning::cq_entries",
                ));
            }
            Err(e) => return Err(e),
        }
        self.check_overflow()
    }

    /// Fails if the kernel counted dropped completions.
    fn check_overflow(&self) -> io::Result<()> {
        let dropped = self.cq.overflow();
        if dropped > 0 {
            return Err(io::Error::other(format!(
                "the kernel dropped {dropped} io_uring completions (CQ overflow): raise \
                 Tuning::cq_entries"
            )));
        }
        Ok(())
    }

    /// Runs one `io_uring_enter`, retrying a bounded number of times after EINTR, and after
    /// EBUSY/EAGAIN (the kernel asks us to reap first) once the completions already consumed
    /// are handed back by publishing the CQ head.
    fn retrying(
        &mut self,
        mut call: impl FnMut(&mut Self) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let mut busy = 0;
        loop {
            match call(self) {
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => {
                    busy += 1;
                    if busy > ENTER_RETRIES {
                        return Err(io::Error::new(
                            e.kind(),
                            format!(
                                "io_uring_enter failed {ENTER_RETRIES} times in a row with \
                                 {e}: the completion queue stays full; raise \
                                 Tuning::cq_entries"
                            ),
                        ));
                    }
                    self.retries += 1;
                    self.cq.sync();
                }
                other => return other,
            }
        }
    }
}

/// How many times in a row `io_uring_enter` may report EBUSY/EAGAIN before the shard gives
/// up (each retry first publishes the CQ head, so a full CQ of consumed entries clears).
const ENTER_RETRIES: u32 = 64;
