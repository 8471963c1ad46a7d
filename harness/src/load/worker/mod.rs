//! One client thread: its own epoll instance over nonblocking sockets, driving one
//! workload's plug-in. Every system call it makes is counted.
//!
//! Life of a thread: pin; establish idle then active connections; wait at the start
//! barrier; run warmup, measured window and drain on a shared clock; report.
//!
//! By concern: `clock` (phases, the open-loop schedule, when each request is due),
//! `conn` (connection lifecycle, reconnects and backoff), `io` (epoll dispatch, sending,
//! receiving, EOF), `result` (what a thread is asked and what it counted). The workload
//! decides what is sent and what a reply is (`load/workloads/`); the worker asks it
//! through [`Plugin`] and its [`Facts`](super::workloads::Facts).

mod clock;
mod conn;
mod io;
mod result;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::os::fd::AsRawFd;
use std::time::Instant;

use backend_api::StopSignal;

use super::sys::{Epoll, SourceSpread, ThreadCpu};
use super::workloads::{Connect, Plugin};
use super::{LoadConfig, LoadError};
use clock::{Phase, Schedule};
use conn::{Conn, State};
pub(crate) use result::{Plan, Syscalls, ThreadResult};

/// Per-thread read buffer: one read takes whatever a connection has, up to this.
const READ_BUFFER: usize = 256 * 1024;
/// Events taken per epoll_wait.
const MAX_EVENTS: usize = 1024;
/// epoll token of the stop signal.
const STOP_TOKEN: u64 = u64::MAX;

/// Read-only context shared by all threads of a run.
pub(crate) struct RunShared<P> {
    pub cfg: LoadConfig,
    pub spread: bool,
    /// The workload's shared data (requests, verification pattern).
    pub work: P,
    /// The caller's stop signal (Ctrl-C, a supervising harness).
    pub stop: StopSignal,
    /// Fired by the engine when a thread fails: the others stop too.
    pub abort: StopSignal,
}

pub(crate) struct Worker<'a, P: Plugin> {
    sh: &'a RunShared<P>,
    plan: Plan,
    ep: Epoll,
    events: Vec<libc::epoll_event>,
    rbuf: Vec<u8>,
    conns: Vec<Conn<P::Conn>>,
    base: Instant,
    phase: Phase,
    sending: bool,
    stopped: bool,
    ended_by_quota: bool,
    epoch: u64,
    warm_end: u64,
    end: u64,
    drain_deadline: u64,
    last_completion: u64,
    sched: Option<Schedule>,
    quota_left: Option<u64>,
    due_total: u64,
    inflight_total: usize,
    connecting: usize,
    connect_timeouts: VecDeque<(u64, u32, u32)>,
    retries: BinaryHeap<Reverse<(u64, u32, u32)>>,
    dirty: Vec<u32>,
    spread: Option<SourceSpread>,
    sys: Syscalls,
    cpu0: ThreadCpu,
    sys0: Syscalls,
    r: ThreadResult,
}

impl<'a, P: Plugin> Worker<'a, P> {
    /// Pins the thread, sets up epoll and establishes idle and active connections.
    pub(crate) fn prepare(sh: &'a RunShared<P>, plan: Plan) -> Result<Worker<'a, P>, LoadError> {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: plan.core }) {
            return Err(LoadError::Config(format!(
                "--cores: pinning client thread {} to core {} failed (sched_setaffinity \
                 refused); check the core is online and allowed (taskset -p $$)",
                plan.thread, plan.core
            )));
        }
        let ep = Epoll::new().map_err(|e| LoadError::setup("creating an epoll instance", e))?;
        for signal in [&sh.stop, &sh.abort] {
            ep.add(signal.as_raw_fd(), io::EV_IN, STOP_TOKEN)
                .map_err(|e| LoadError::setup("watching the stop signal", e))?;
        }
        let n = plan.active + plan.idle;
        let conns = (0..n)
            .map(|i| Conn::new(i >= plan.active, sh.work.conn(0)))
            .collect();
        let spread = sh
            .spread
            .then(|| SourceSpread::new(plan.thread, plan.threads));
        let r = ThreadResult {
            thread: plan.thread,
            core: plan.core,
            active: plan.active,
            idle: plan.idle,
            ..Default::default()
        };
        let mut w = Worker {
            sh,
            quota_left: plan.quota,
            plan,
            ep,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS],
            rbuf: vec![0; READ_BUFFER],
            conns,
            base: Instant::now(),
            phase: Phase::Establish,
            sending: false,
            stopped: false,
            ended_by_quota: false,
            epoch: 0,
            warm_end: 0,
            end: 0,
            drain_deadline: 0,
            last_completion: 0,
            sched: None,
            due_total: 0,
            inflight_total: 0,
            connecting: 0,
            connect_timeouts: VecDeque::new(),
            retries: BinaryHeap::new(),
            dirty: Vec::new(),
            spread,
            sys: Syscalls::default(),
            cpu0: ThreadCpu::default(),
            sys0: Syscalls::default(),
            r,
        };
        w.establish()?;
        Ok(w)
    }

    #[inline]
    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// True when connections are opened per request rather than held.
    #[inline]
    fn per_request(&self) -> bool {
        P::FACTS.connect == Connect::PerRequest
    }

    /// Runs warmup, the measured window and the drain, then reports.
    pub(crate) fn run(mut self, start: Instant) -> Result<ThreadResult, LoadError> {
        self.start_clock(start);
        // Wait for the shared start so every thread begins on the same clock.
        while self.now() < self.epoch {
            std::hint::spin_loop();
        }
        self.phase = Phase::Warmup;
        self.sending = true;
        if self.stopped {
            self.phase = Phase::Done;
        }
        self.advance(self.now());
        for idx in 0..self.plan.active {
            self.kick(idx);
        }
        while self.phase != Phase::Done {
            let now = self.now();
            self.advance(now);
            if self.phase == Phase::Done {
                break;
            }
            if self.sending {
                self.tick_schedule(now);
            }
            self.expire_connects(now);
            self.expire_retries(now);
            let timeout = self.next_wakeup(now);
            self.wait_and_dispatch(timeout)
                .map_err(|e| LoadError::setup("epoll_wait", e))?;
        }
        Ok(self.finish())
    }

    /// Per-request slots with a transaction under way (they hold the drain open).
    fn busy_slots(&self) -> usize {
        if !self.per_request() {
            return 0;
        }
        self.conns
            .iter()
            .filter(|c| c.state != State::Closed)
            .count()
    }

    fn finish(mut self) -> ThreadResult {
        let interrupted = self.r.interrupted;
        for idx in 0..self.conns.len() {
            let c = &mut self.conns[idx];
            let mut unanswered = 0;
            for p in c.inflight.drain(..) {
                if p.measured {
                    self.r.unanswered += 1;
                    self.r.failed += 1;
                }
                unanswered += 1;
            }
            if self.sched.is_some() {
                let measured_due =
                    c.requeue.iter().filter(|&&t| t >= self.warm_end).count() as u64 + c.due;
                self.r.unsent += measured_due;
            }
            if unanswered > 0 && !interrupted {
                *self
                    .r
                    .errors
                    .entry(super::error::ClientError::Unanswered)
                    .or_insert(0) += unanswered;
            }
            self.close(idx);
        }
        if self.ended_by_quota && self.last_completion > self.warm_end {
            self.r.window_end_ns = self.r.window_end_ns.max(self.last_completion - self.epoch);
        }
        self.r.syscalls_total = self.sys;
        self.r
    }
}
