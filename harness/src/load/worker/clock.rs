//! The thread's clock: phases (warmup, measured window, drain), the open-loop schedule,
//! and the one rule for when a request is due and whether it is measured.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use super::conn::State;
use super::result::Pending;
use super::Worker;
use crate::load::sys::{self, ThreadCpu};
use crate::load::workloads::Plugin;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Phase {
    Establish,
    Warmup,
    Measure,
    Drain,
    Done,
}

/// Open loop: request `i` of the thread is due at `origin + i * interval`; requests go to
/// the thread's slots round robin.
pub(super) struct Schedule {
    origin: u64,
    interval: f64,
    /// The next request to mark due.
    next: u64,
}

impl Schedule {
    #[inline]
    fn time_of(&self, i: u64) -> u64 {
        self.origin + (i as f64 * self.interval) as u64
    }
}

impl<P: Plugin> Worker<'_, P> {
    /// Sets the phase boundaries from the shared start and the schedule's origin.
    pub(super) fn start_clock(&mut self, start: Instant) {
        let cfg = &self.sh.cfg;
        self.epoch = start.saturating_duration_since(self.base).as_nanos() as u64;
        self.warm_end = self.epoch + cfg.workload.warmup.as_nanos() as u64;
        self.end = self.warm_end + cfg.workload.duration.as_nanos() as u64;
        self.r.established_at_start = self.conns[..self.plan.active]
            .iter()
            .filter(|c| c.state == State::Open)
            .count() as u64;
        if let Some(rate) = self.plan.rate {
            self.sched = Some(Schedule {
                origin: self.epoch + self.plan.phase_ns,
                interval: 1e9 / rate,
                next: 0,
            });
        }
    }

    /// Moves between phases as time passes; takes the CPU snapshots at the window edges.
    pub(super) fn advance(&mut self, now: u64) {
        if self.stopped && self.phase < Phase::Done {
            if self.phase == Phase::Measure {
                self.close_window(now);
            }
            self.r.interrupted = true;
            self.phase = Phase::Done;
            return;
        }
        if self.phase == Phase::Warmup && now >= self.warm_end {
            self.phase = Phase::Measure;
            self.cpu0 = sys::thread_cpu();
            self.sys0 = self.sys;
            self.r.window_start_ns = self.warm_end - self.epoch;
        }
        if self.phase == Phase::Measure {
            let quota_done = self.quota_left == Some(0)
                && self.due_total == 0
                && self.conns.iter().all(|c| c.requeue.is_empty());
            if now >= self.end || quota_done {
                self.ended_by_quota = quota_done && now < self.end;
                self.close_window(now.min(self.end));
                self.phase = Phase::Drain;
                self.sending = false;
                self.drain_deadline = now + self.sh.cfg.drain_timeout.as_nanos() as u64;
            }
        }
        if self.phase == Phase::Drain
            && ((self.inflight_total == 0 && self.busy_slots() == 0) || now >= self.drain_deadline)
        {
            self.phase = Phase::Done;
        }
    }

    fn close_window(&mut self, at: u64) {
        let cpu = sys::thread_cpu();
        self.r.cpu = ThreadCpu {
            user_ns: cpu.user_ns.saturating_sub(self.cpu0.user_ns),
            system_ns: cpu.system_ns.saturating_sub(self.cpu0.system_ns),
            voluntary_switches: cpu
                .voluntary_switches
                .saturating_sub(self.cpu0.voluntary_switches),
            involuntary_switches: cpu
                .involuntary_switches
                .saturating_sub(self.cpu0.involuntary_switches),
        };
        self.r.syscalls = self.sys.minus(&self.sys0);
        self.r.window_end_ns = at.max(self.warm_end) - self.epoch;
    }

    /// How long epoll_wait may sleep: until the next phase edge, scheduled request,
    /// connect deadline or retry.
    pub(super) fn next_wakeup(&self, now: u64) -> Option<Duration> {
        let mut at = match self.phase {
            Phase::Warmup => self.warm_end,
            Phase::Measure => self.end,
            Phase::Drain => self.drain_deadline,
            _ => u64::MAX,
        };
        if let (true, Some(s)) = (self.sending, &self.sched) {
            at = at.min(s.time_of(s.next));
        }
        if let Some(&(d, _, _)) = self.connect_timeouts.front() {
            at = at.min(d);
        }
        if let Some(Reverse((d, _, _))) = self.retries.peek() {
            at = at.min(*d);
        }
        (at != u64::MAX).then(|| Duration::from_nanos(at.saturating_sub(now)))
    }

    /// Open loop: marks every request whose intended time has come as due on its
    /// connection, then lets each connection with new work send.
    pub(super) fn tick_schedule(&mut self, now: u64) {
        let Some(s) = &mut self.sched else {
            return;
        };
        let n = self.plan.active.max(1) as u64;
        loop {
            let t = s.time_of(s.next);
            if t > now || t >= self.end || self.quota_left == Some(0) {
                break;
            }
            let idx = (s.next % n) as usize;
            s.next += 1;
            if t >= self.warm_end {
                if let Some(q) = &mut self.quota_left {
                    *q -= 1;
                }
            }
            let c = &mut self.conns[idx];
            c.due += 1;
            self.due_total += 1;
            if c.due == 1 {
                self.dirty.push(idx as u32);
            }
        }
        if !self.dirty.is_empty() {
            let dirty = std::mem::take(&mut self.dirty);
            for &idx in &dirty {
                self.kick(idx as usize);
            }
            self.dirty = dirty;
            self.dirty.clear();
        }
    }

    pub(super) fn is_measured(&self, intended: u64) -> bool {
        intended >= self.warm_end && intended < self.end
    }

    /// The intended send time of the next request slot `idx` may send now, or `None`.
    /// Open loop: a request given back by a closed connection first, then the next due
    /// one of the schedule. Closed loop: now, while the request cap allows. This is the
    /// heart of the coordinated-omission correction: latency runs from this time.
    fn next_intended(&mut self, idx: usize, now: u64) -> Option<u64> {
        if let Some(s) = &self.sched {
            let c = &mut self.conns[idx];
            if let Some(t) = c.requeue.pop_front() {
                return Some(t);
            }
            if c.due == 0 {
                return None;
            }
            let t = s.time_of(idx as u64 + c.taken * self.plan.active as u64);
            c.due -= 1;
            c.taken += 1;
            self.due_total -= 1;
            return Some(t);
        }
        let measured = self.is_measured(now);
        match (&mut self.quota_left, measured) {
            (Some(0), true) => None,
            (Some(q), true) => {
                *q -= 1;
                Some(now)
            }
            _ => Some(now),
        }
    }

    /// Takes the next request slot `idx` may send now (see [`Self::next_intended`]) and
    /// counts it as sent and in flight.
    pub(super) fn take_request(&mut self, idx: usize, now: u64) -> Option<Pending> {
        let intended = self.next_intended(idx, now)?;
        let measured = self.is_measured(intended);
        if measured {
            self.r.sent += 1;
            if self.sched.is_some() {
                self.r.lag.record(now.saturating_sub(intended));
            }
        }
        self.inflight_total += 1;
        Some(Pending {
            intended,
            sent: now,
            measured,
        })
    }
}
