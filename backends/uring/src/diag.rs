//! Live internal counters, for tests that must see a rare path was taken (and for
//! experiments). Only [`crate::Tuned`] backends carry them; the registered backends do not
//! pay for them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters every shard of a [`crate::Tuned`] backend adds to as it runs (once per loop
/// turn), readable while the server runs.
#[derive(Debug, Default)]
pub struct Diagnostics {
    loop_iterations: AtomicU64,
    accepted: AtomicU64,
    accept_pauses: AtomicU64,
    accept_rearms: AtomicU64,
    recv_rearms: AtomicU64,
    enobufs: AtomicU64,
    short_sends: AtomicU64,
    stale_completions: AtomicU64,
    cancels: AtomicU64,
    backpressure_pauses: AtomicU64,
    peak_pending_output: AtomicU64,
    lost_input: AtomicU64,
    lost_output: AtomicU64,
    enter_retries: AtomicU64,
}

/// A copy of [`Diagnostics`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiagnosticsSnapshot {
    /// Loop turns (one `submit_and_wait` each).
    pub loop_iterations: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Accept pauses (`EMFILE`-like errors or `max_connections`).
    pub accept_pauses: u64,
    /// Accepts re-armed after the previous one ended (after a pause, or a multishot accept
    /// that ended without `IORING_CQE_F_MORE`).
    pub accept_rearms: u64,
    /// Multishot receives re-armed on a connection that kept reading after the previous
    /// one ended without `IORING_CQE_F_MORE` (CQ full, `ENOBUFS`, backpressure cancel).
    pub recv_rearms: u64,
    /// Multishot receives ended by `ENOBUFS` (buffer ring empty).
    pub enobufs: u64,
    /// Sends that wrote less than asked; the remainder was resubmitted.
    pub short_sends: u64,
    /// Completions whose generation did not match their slot (must stay 0: slots are
    /// only reused once nothing is in flight on them).
    pub stale_completions: u64,
    /// `AsyncCancel` SQEs issued.
    pub cancels: u64,
    /// Times a connection stopped being read because of pending output.
    pub backpressure_pauses: u64,
    /// Most output bytes one connection had pending (queued plus in flight).
    pub peak_pending_output: u64,
    /// Receive completions whose data could not be found (a buffer id or length never
    /// handed out); each aborted its connection. Must stay 0.
    pub lost_input: u64,
    /// `send-bundle` completions that did not match the connection's send queue (a buffer
    /// not at its head, a length that ends inside a chunk); each aborted its connection.
    /// Must stay 0.
    pub lost_output: u64,
    /// `io_uring_enter` calls retried after EBUSY/EAGAIN.
    pub enter_retries: u64,
}

impl Diagnostics {
    /// All counters at zero.
    pub fn new() -> Diagnostics {
        Diagnostics::default()
    }

    /// The counters now.
    pub fn snapshot(&self) -> DiagnosticsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DiagnosticsSnapshot {
            loop_iterations: l(&self.loop_iterations),
            accepted: l(&self.accepted),
            accept_pauses: l(&self.accept_pauses),
            accept_rearms: l(&self.accept_rearms),
            recv_rearms: l(&self.recv_rearms),
            enobufs: l(&self.enobufs),
            short_sends: l(&self.short_sends),
            stale_completions: l(&self.stale_completions),
            cancels: l(&self.cancels),
            backpressure_pauses: l(&self.backpressure_pauses),
            peak_pending_output: l(&self.peak_pending_output),
            lost_input: l(&self.lost_input),
            lost_output: l(&self.lost_output),
            enter_retries: l(&self.enter_retries),
        }
    }

    /// Adds what a shard counted since its last flush (`now - before`); peaks take the max.
    pub(crate) fn add(&self, now: &DiagnosticsSnapshot, before: &DiagnosticsSnapshot) {
        let add = |a: &AtomicU64, n: u64, b: u64| {
            if n > b {
                a.fetch_add(n - b, Ordering::Relaxed);
            }
        };
        add(
            &self.loop_iterations,
            now.loop_iterations,
            before.loop_iterations,
        );
        add(&self.accepted, now.accepted, before.accepted);
        add(&self.accept_pauses, now.accept_pauses, before.accept_pauses);
        add(&self.accept_rearms, now.accept_rearms, before.accept_rearms);
        add(&self.recv_rearms, now.recv_rearms, before.recv_rearms);
        add(&self.enobufs, now.enobufs, before.enobufs);
        add(&self.short_sends, now.short_sends, before.short_sends);
        add(
            &self.stale_completions,
            now.stale_completions,
            before.stale_completions,
        );
        add(&self.cancels, now.cancels, before.cancels);
        add(
            &self.backpressure_pauses,
            now.backpressure_pauses,
            before.backpressure_pauses,
        );
        add(&self.lost_input, now.lost_input, before.lost_input);
        add(&self.lost_output, now.lost_output, before.lost_output);
        add(&self.enter_retries, now.enter_retries, before.enter_retries);
        self.peak_pending_output
            .fetch_max(now.peak_pending_output, Ordering::Relaxed);
    }
}
