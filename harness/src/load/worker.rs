//! One client thread: its own epoll instance over nonblocking sockets, level-triggered for
//! keep-alive connections (one read per readiness, one write per connection per turn
//! carrying every request due), edge-triggered for churn connections (which are read to
//! EOF anyway). Every system call it makes is counted.
//!
//! Life of a thread: pin; establish idle then active connections; wait at the start
//! barrier; run warmup, measured window and drain on a shared clock; report.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use backend_api::StopSignal;

use super::error::ClientError;
use super::histogram::NsHistogram;
use super::sys::{self, Epoll, SourceSpread, ThreadCpu};
use super::workloads::{self, churn, idle::CONNECT_WINDOW, Proto};
use super::{LoadConfig, LoadError, Workload};

/// Per-thread read buffer: one read takes whatever a connection has, up to this.
const READ_BUFFER: usize = 256 * 1024;
/// Events taken per epoll_wait.
const MAX_EVENTS: usize = 1024;
/// epoll token of the stop signal.
const STOP_TOKEN: u64 = u64::MAX;
/// First and longest wait before reconnecting after a failure.
const BACKOFF_MIN: u64 = 1_000_000;
const BACKOFF_MAX: u64 = 1_000_000_000;

/// What one thread is asked to do.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub thread: usize,
    pub threads: usize,
    pub core: usize,
    /// Active connections (or churn slots) of this thread.
    pub active: usize,
    /// Idle connections of this thread.
    pub idle: usize,
    /// Global index of this thread's first connection (varies the echo bytes).
    pub first_conn: usize,
    /// Open loop: this thread's share of the rate, requests/s.
    pub rate: Option<f64>,
    /// Open loop: offset of this thread's schedule, so threads interleave.
    pub phase_ns: u64,
    /// Cap on measured requests for this thread.
    pub quota: Option<u64>,
}

/// System calls made, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Syscalls {
    pub epoll_wait: u64,
    pub epoll_ctl: u64,
    pub read: u64,
    pub write: u64,
    /// socket, setsockopt, bind, connect, getsockopt, close.
    pub connection: u64,
}

impl Syscalls {
    pub(crate) fn total(&self) -> u64 {
        self.epoll_wait + self.epoll_ctl + self.read + self.write + self.connection
    }

    fn minus(&self, o: &Syscalls) -> Syscalls {
        Syscalls {
            epoll_wait: self.epoll_wait - o.epoll_wait,
            epoll_ctl: self.epoll_ctl - o.epoll_ctl,
            read: self.read - o.read,
            write: self.write - o.write,
            connection: self.connection - o.connection,
        }
    }

    pub(crate) fn add(&mut self, o: &Syscalls) {
        self.epoll_wait += o.epoll_wait;
        self.epoll_ctl += o.epoll_ctl;
        self.read += o.read;
        self.write += o.write;
        self.connection += o.connection;
    }
}

/// Everything a thread counted.
#[derive(Debug, Default)]
pub(crate) struct ThreadResult {
    pub thread: usize,
    pub core: usize,
    pub active: usize,
    pub idle: usize,
    /// Headline latency: from the actual send (closed loop) or the intended send (open).
    pub latency: NsHistogram,
    /// Open loop: from the actual send.
    pub latency_uncorrected: NsHistogram,
    /// Open loop: actual minus intended send time.
    pub lag: NsHistogram,
    pub connect: NsHistogram,
    pub errors: BTreeMap<ClientError, u64>,

    // Measured requests.
    pub sent: u64,
    pub completed: u64,
    pub failed: u64,
    pub unsent: u64,
    pub unanswered: u64,
    pub requeued: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,

    // Whole run (warmup and drain included): for cross-checks against server counters.
    pub total_sent: u64,
    pub total_completed: u64,
    pub total_bytes_out: u64,
    pub total_bytes_in: u64,
    pub connects_ok: u64,
    pub connects_failed: u64,
    pub reconnects: u64,
    pub server_closes: u64,

    /// Active connections open when the measured clock started.
    pub established_at_start: u64,
    pub idle_established: u64,
    pub idle_failed: u64,
    pub idle_lost: u64,
    pub idle_establish_ns: u64,
    pub establish_ns: u64,

    /// Measured window, ns since the shared start.
    pub window_start_ns: u64,
    pub window_end_ns: u64,
    pub cpu: ThreadCpu,
    pub syscalls: Syscalls,
    pub syscalls_total: Syscalls,
    pub interrupted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Connecting,
    Open,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    intended: u64,
    sent: u64,
    measured: bool,
}

#[derive(Debug)]
struct Conn {
    fd: Option<OwnedFd>,
    gen: u32,
    state: State,
    idle: bool,
    want_out: bool,
    connect_start: u64,
    out: Vec<u8>,
    out_pos: usize,
    inflight: VecDeque<Pending>,
    /// Open loop: intended times of requests to resend after the server closed gracefully.
    requeue: VecDeque<u64>,
    proto: Proto,
    /// Open loop: scheduled requests not yet sent, and scheduled requests taken so far.
    due: u64,
    taken: u64,
    backoff: u64,
    /// Connections opened on this slot (varies the echo bytes per connection).
    opened: u64,
    /// Churn: the reply completed before EOF, with its error if any.
    churn_reply: Option<Option<ClientError>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Establish,
    Warmup,
    Measure,
    Drain,
    Done,
}

struct Schedule {
    origin: u64,
    interval: f64,
    next: u64,
}

impl Schedule {
    #[inline]
    fn time_of(&self, i: u64) -> u64 {
        self.origin + (i as f64 * self.interval) as u64
    }
}

/// Read-only context shared by all threads of a run.
pub(crate) struct RunShared {
    pub cfg: LoadConfig,
    pub spread: bool,
    pub work: workloads::Shared,
    /// The caller's stop signal (Ctrl-C, a supervising harness).
    pub stop: StopSignal,
    /// Fired by the engine when a thread fails: the others stop too.
    pub abort: StopSignal,
}

pub(crate) struct Worker<'a> {
    sh: &'a RunShared,
    plan: Plan,
    ep: Epoll,
    events: Vec<libc::epoll_event>,
    rbuf: Vec<u8>,
    conns: Vec<Conn>,
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

fn token(idx: usize, gen: u32) -> u64 {
    ((gen as u64) << 32) | idx as u64
}

fn errno_of(e: &io::Error) -> ClientError {
    ClientError::Errno(e.raw_os_error().unwrap_or(libc::EIO))
}

const EV_IN: u32 = libc::EPOLLIN as u32;
const EV_OUT: u32 = libc::EPOLLOUT as u32;
const EV_ERR: u32 = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
const EV_RDHUP: u32 = libc::EPOLLRDHUP as u32;
const EV_ET: u32 = libc::EPOLLET as u32;

impl<'a> Worker<'a> {
    /// Pins the thread, sets up epoll and establishes idle and active connections.
    pub(crate) fn prepare(sh: &'a RunShared, plan: Plan) -> Result<Worker<'a>, LoadError> {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: plan.core }) {
            return Err(LoadError::Config(format!(
                "--cores: pinning client thread {} to core {} failed (sched_setaffinity \
                 refused); check the core is online and allowed (taskset -p $$)",
                plan.thread, plan.core
            )));
        }
        let ep = Epoll::new().map_err(|e| LoadError::setup("creating an epoll instance", e))?;
        for signal in [&sh.stop, &sh.abort] {
            ep.add(signal.as_raw_fd(), EV_IN, STOP_TOKEN)
                .map_err(|e| LoadError::setup("watching the stop signal", e))?;
        }
        let n = plan.active + plan.idle;
        let mut conns = Vec::with_capacity(n);
        for i in 0..n {
            conns.push(Conn {
                fd: None,
                gen: 0,
                state: State::Closed,
                idle: i >= plan.active,
                want_out: false,
                connect_start: 0,
                out: Vec::new(),
                out_pos: 0,
                inflight: VecDeque::new(),
                requeue: VecDeque::new(),
                proto: Proto::new(sh.cfg.workload, 0),
                due: 0,
                taken: 0,
                backoff: 0,
                opened: 0,
                churn_reply: None,
            });
        }
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

    /// Opens idle connections, then active ones (not for churn), before the clock starts.
    fn establish(&mut self) -> Result<(), LoadError> {
        let t0 = self.now();
        let active = self.plan.active;
        let total = self.conns.len();
        self.connect_range(active, total)?;
        self.r.idle_establish_ns = self.now() - t0;
        if self.sh.cfg.workload != Workload::Churn {
            self.connect_range(0, active)?;
        }
        self.r.establish_ns = self.now() - t0;
        Ok(())
    }

    fn connect_range(&mut self, from: usize, to: usize) -> Result<(), LoadError> {
        let mut next = from;
        while (next < to || self.connecting > 0) && !self.stopped {
            while next < to && self.connecting < CONNECT_WINDOW {
                self.start_connect(next);
                next += 1;
            }
            let now = self.now();
            self.expire_connects(now);
            let timeout = self
                .connect_timeouts
                .front()
                .map(|&(d, _, _)| Duration::from_nanos(d.saturating_sub(now)));
            self.wait_and_dispatch(timeout)
                .map_err(|e| LoadError::setup("epoll_wait", e))?;
        }
        Ok(())
    }

    /// Runs warmup, the measured window and the drain, then reports.
    pub(crate) fn run(mut self, start: Instant) -> Result<ThreadResult, LoadError> {
        let cfg = &self.sh.cfg;
        self.epoch = start.saturating_duration_since(self.base).as_nanos() as u64;
        self.warm_end = self.epoch + cfg.warmup.as_nanos() as u64;
        self.end = self.warm_end + cfg.duration.as_nanos() as u64;
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

    /// Moves between phases as time passes; takes the CPU snapshots at the window edges.
    fn advance(&mut self, now: u64) {
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
            && ((self.inflight_total == 0 && self.busy_churn_slots() == 0)
                || now >= self.drain_deadline)
        {
            self.phase = Phase::Done;
        }
    }

    fn busy_churn_slots(&self) -> usize {
        if self.sh.cfg.workload != Workload::Churn {
            return 0;
        }
        self.conns
            .iter()
            .filter(|c| c.state != State::Closed)
            .count()
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

    fn next_wakeup(&self, now: u64) -> Option<Duration> {
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

    fn wait_and_dispatch(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.sys.epoll_wait += 1;
        let n = sys::wait(&self.ep, &mut self.events, timeout)?;
        for i in 0..n {
            let ev = self.events[i];
            let (tok, bits) = (ev.u64, ev.events);
            if tok == STOP_TOKEN {
                self.stopped = true;
                continue;
            }
            let idx = (tok & 0xFFFF_FFFF) as usize;
            let gen = (tok >> 32) as u32;
            let Some(c) = self.conns.get(idx) else {
                continue;
            };
            if c.gen != gen || c.fd.is_none() {
                continue;
            }
            match c.state {
                State::Connecting => {
                    self.on_connect_event(idx, bits);
                    // Churn is edge-triggered: data that came with the connect edge
                    // would never be reported again.
                    let c = &self.conns[idx];
                    if c.state == State::Open && c.gen == gen && bits & (EV_IN | EV_RDHUP) != 0 {
                        self.on_readable(idx);
                    }
                }
                State::Open => {
                    if bits & (EV_IN | EV_ERR | EV_RDHUP) != 0 {
                        self.on_readable(idx);
                    }
                    let c = &self.conns[idx];
                    if c.state == State::Open && c.gen == gen && bits & EV_OUT != 0 {
                        self.on_writable(idx);
                    }
                }
                State::Closed => {}
            }
        }
        Ok(())
    }

    // ----- connections -------------------------------------------------------------

    fn is_churn(&self) -> bool {
        self.sh.cfg.workload == Workload::Churn
    }

    /// Starts a nonblocking connect on slot `idx`. Failures are counted and handled.
    fn start_connect(&mut self, idx: usize) {
        let now = self.now();
        match self.open_socket(idx, now) {
            Ok(true) => self.on_connected(idx, now),
            Ok(false) => {
                let c = &mut self.conns[idx];
                c.state = State::Connecting;
                self.connecting += 1;
                let deadline = now + self.sh.cfg.connect_timeout.as_nanos() as u64;
                self.connect_timeouts
                    .push_back((deadline, idx as u32, self.conns[idx].gen));
            }
            Err(e) => self.connect_failed(idx, errno_of(&e)),
        }
    }

    fn open_socket(&mut self, idx: usize, now: u64) -> io::Result<bool> {
        let target = self.sh.cfg.target;
        self.sys.connection += 1;
        let fd = sys::tcp_socket(&target)?;
        let raw = fd.as_raw_fd();
        // Register before anything can fail so the descriptor is owned by the slot.
        let c = &mut self.conns[idx];
        c.fd = Some(fd);
        c.connect_start = now;
        c.opened += 1;
        c.churn_reply = None;
        let seed = (self.plan.first_conn + idx) as u64 * 1_000_003 + c.opened;
        c.proto = Proto::new(self.sh.cfg.workload, seed);
        if let Some(spread) = &mut self.spread {
            self.sys.connection += 2;
            sys::bind_source(raw, spread.next_addr())?;
        }
        let churn = self.is_churn();
        if !churn {
            self.sys.connection += 1;
            sys::set_nodelay(raw)?;
        }
        self.sys.connection += 1;
        let done = sys::connect(raw, &target)?;
        let gen = self.conns[idx].gen;
        // Churn: edge-triggered for both directions from the start, so no epoll_ctl is
        // needed after connecting. Others: EPOLLOUT until connected, then EPOLLIN only.
        let events = if churn {
            EV_IN | EV_OUT | EV_RDHUP | EV_ET
        } else if done {
            self.in_events(idx)
        } else {
            EV_OUT
        };
        self.sys.epoll_ctl += 1;
        self.ep.add(raw, events, token(idx, gen))?;
        Ok(done)
    }

    fn in_events(&self, idx: usize) -> u32 {
        if self.conns[idx].idle {
            EV_IN | EV_RDHUP
        } else {
            EV_IN
        }
    }

    fn on_connect_event(&mut self, idx: usize, bits: u32) {
        let now = self.now();
        self.connecting -= 1;
        let c = &mut self.conns[idx];
        c.state = State::Closed; // decided below
        let Some(raw) = c.fd.as_ref().map(|f| f.as_raw_fd()) else {
            return;
        };
        if bits & EV_ERR != 0 {
            self.sys.connection += 1;
            let errno = match sys::socket_error(raw) {
                Ok(0) => libc::ECONNREFUSED,
                Ok(e) => e,
                Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
            };
            self.conns[idx].state = State::Connecting;
            self.connect_failed(idx, ClientError::Errno(errno));
            return;
        }
        if !self.is_churn() {
            let ev = self.in_events(idx);
            let tok = token(idx, self.conns[idx].gen);
            self.sys.epoll_ctl += 1;
            if let Err(e) = self.ep.modify(raw, ev, tok) {
                self.conns[idx].state = State::Connecting;
                self.connect_failed(idx, errno_of(&e));
                return;
            }
        }
        self.on_connected(idx, now);
    }

    fn on_connected(&mut self, idx: usize, now: u64) {
        let churn = self.is_churn();
        let c = &mut self.conns[idx];
        c.state = State::Open;
        c.want_out = false;
        self.r.connects_ok += 1;
        let connect_ns = now - c.connect_start;
        if c.idle {
            self.r.idle_established += 1;
            self.r.connect.record(connect_ns);
            return;
        }
        if churn {
            if c.inflight.front().is_some_and(|p| p.measured) {
                self.r.connect.record(connect_ns);
            }
            let c = &mut self.conns[idx];
            c.out.clear();
            c.out_pos = 0;
            c.out.extend_from_slice(&self.sh.work.request);
            if let Some(p) = c.inflight.front_mut() {
                p.sent = now;
            }
            self.r.total_sent += 1;
            self.flush(idx);
        } else {
            self.r.connect.record(connect_ns);
            self.pump(idx, now);
        }
    }

    fn connect_failed(&mut self, idx: usize, err: ClientError) {
        self.r.connects_failed += 1;
        let idle = self.conns[idx].idle;
        if idle {
            self.r.idle_failed += 1;
        }
        self.fail(idx, err);
    }

    fn expire_connects(&mut self, now: u64) {
        while let Some(&(deadline, idx, gen)) = self.connect_timeouts.front() {
            if deadline > now {
                break;
            }
            self.connect_timeouts.pop_front();
            let c = &self.conns[idx as usize];
            if c.gen == gen && c.state == State::Connecting {
                self.connecting -= 1;
                self.connect_failed(idx as usize, ClientError::ConnectTimeout);
            }
        }
    }

    fn expire_retries(&mut self, now: u64) {
        while let Some(&Reverse((at, idx, gen))) = self.retries.peek() {
            if at > now {
                break;
            }
            self.retries.pop();
            let c = &self.conns[idx as usize];
            if c.gen == gen && c.state == State::Closed && self.sending {
                if self.is_churn() {
                    self.kick(idx as usize);
                } else {
                    self.r.reconnects += 1;
                    self.start_connect(idx as usize);
                }
            }
        }
    }

    /// Counts `err`, fails every request in flight on the connection, closes it and
    /// schedules a reconnect (active connections only, with exponential backoff).
    fn fail(&mut self, idx: usize, err: ClientError) {
        *self.r.errors.entry(err).or_insert(0) += 1;
        let c = &mut self.conns[idx];
        let was_open = c.state == State::Open;
        for p in c.inflight.drain(..) {
            self.inflight_total -= 1;
            if p.measured {
                self.r.failed += 1;
            }
        }
        if c.idle && was_open {
            self.r.idle_lost += 1;
        }
        let idle = c.idle;
        self.close(idx);
        if !idle {
            let now = self.now();
            let c = &mut self.conns[idx];
            c.backoff = (c.backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
            let at = now + c.backoff;
            self.retries.push(Reverse((at, idx as u32, c.gen)));
        }
    }

    fn close(&mut self, idx: usize) {
        let c = &mut self.conns[idx];
        if c.fd.take().is_some() {
            self.sys.connection += 1;
        }
        c.gen = c.gen.wrapping_add(1);
        c.state = State::Closed;
        c.want_out = false;
        c.out.clear();
        c.out_pos = 0;
        if c.out.capacity() > 1 << 20 {
            c.out = Vec::new();
        }
    }

    // ----- sending -----------------------------------------------------------------

    /// Open loop: marks every request whose intended time has come as due on its
    /// connection, then sends what each connection can.
    fn tick_schedule(&mut self, now: u64) {
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

    /// Gives slot `idx` a chance to send: keep-alive connections pump requests, churn
    /// slots start their next connection.
    fn kick(&mut self, idx: usize) {
        let now = self.now();
        if self.is_churn() {
            self.start_churn(idx, now);
        } else {
            self.pump(idx, now);
        }
    }

    fn is_measured(&self, intended: u64) -> bool {
        intended >= self.warm_end && intended < self.end
    }

    /// Closed loop: takes a measured request from the quota. Returns false when exhausted.
    fn take_closed_quota(&mut self, measured: bool) -> bool {
        match (&mut self.quota_left, measured) {
            (Some(0), true) => false,
            (Some(q), true) => {
                *q -= 1;
                true
            }
            _ => true,
        }
    }

    fn start_churn(&mut self, idx: usize, now: u64) {
        let c = &self.conns[idx];
        if c.state != State::Closed || !self.sending {
            return;
        }
        let intended = if let Some(s) = &self.sched {
            if let Some(t) = self.conns[idx].requeue.front().copied() {
                self.conns[idx].requeue.pop_front();
                t
            } else if c.due > 0 {
                let n = self.plan.active as u64;
                let t = s.time_of(idx as u64 + c.taken * n);
                let c = &mut self.conns[idx];
                c.due -= 1;
                c.taken += 1;
                self.due_total -= 1;
                t
            } else {
                return;
            }
        } else {
            if !self.take_closed_quota(self.is_measured(now)) {
                return;
            }
            now
        };
        let measured = self.is_measured(intended);
        if measured {
            self.r.sent += 1;
            if self.sched.is_some() {
                self.r.lag.record(now.saturating_sub(intended));
            }
        }
        self.conns[idx].inflight.push_back(Pending {
            intended,
            sent: now,
            measured,
        });
        self.inflight_total += 1;
        self.start_connect(idx);
    }

    /// Sends every request slot `idx` may send now, in one write.
    fn pump(&mut self, idx: usize, now: u64) {
        if self.conns[idx].state != State::Open || self.conns[idx].idle {
            return;
        }
        if self.sh.cfg.workload == Workload::Stream {
            self.pump_stream(idx, now);
            return;
        }
        if self.sending && !self.conns[idx].proto.server_closing() {
            let depth = self.sh.cfg.depth;
            let open = self.sched.is_some();
            loop {
                let c = &self.conns[idx];
                if c.inflight.len() >= depth {
                    break;
                }
                let intended = if open {
                    if let Some(&t) = c.requeue.front() {
                        self.conns[idx].requeue.pop_front();
                        t
                    } else if c.due > 0 {
                        let n = self.plan.active as u64;
                        let t = self
                            .sched
                            .as_ref()
                            .map_or(now, |s| s.time_of(idx as u64 + c.taken * n));
                        let c = &mut self.conns[idx];
                        c.due -= 1;
                        c.taken += 1;
                        self.due_total -= 1;
                        t
                    } else {
                        break;
                    }
                } else {
                    if !self.take_closed_quota(self.is_measured(now)) {
                        break;
                    }
                    now
                };
                let measured = self.is_measured(intended);
                if measured {
                    self.r.sent += 1;
                    if open {
                        self.r.lag.record(now.saturating_sub(intended));
                    }
                }
                self.r.total_sent += 1;
                self.inflight_total += 1;
                let Worker { conns, sh, .. } = self;
                let c = &mut conns[idx];
                c.inflight.push_back(Pending {
                    intended,
                    sent: now,
                    measured,
                });
                c.proto.append_request(&sh.work, &mut c.out);
            }
        }
        self.flush(idx);
    }

    /// Writes the connection's pending output once; asks for EPOLLOUT only if the
    /// kernel would not take it all.
    fn flush(&mut self, idx: usize) {
        let c = &self.conns[idx];
        let Some(raw) = c.fd.as_ref().map(|f| f.as_raw_fd()) else {
            return;
        };
        if c.out_pos == c.out.len() {
            if c.want_out {
                self.set_want_out(idx, raw, false);
            }
            return;
        }
        loop {
            self.sys.write += 1;
            let c = &mut self.conns[idx];
            match sys::write(raw, &c.out[c.out_pos..]) {
                Ok(n) => {
                    c.out_pos += n;
                    self.count_out(n);
                    let c = &mut self.conns[idx];
                    let done = c.out_pos == c.out.len();
                    if done {
                        c.out.clear();
                        c.out_pos = 0;
                    }
                    if done == c.want_out {
                        self.set_want_out(idx, raw, !done);
                    }
                    return;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    if !self.conns[idx].want_out {
                        self.set_want_out(idx, raw, true);
                    }
                    return;
                }
                Err(e) => {
                    self.fail(idx, errno_of(&e));
                    return;
                }
            }
        }
    }

    fn set_want_out(&mut self, idx: usize, raw: RawFd, want: bool) {
        if self.is_churn() {
            // Edge-triggered for both directions already.
            self.conns[idx].want_out = want;
            return;
        }
        let ev = if want { EV_IN | EV_OUT } else { EV_IN };
        let tok = token(idx, self.conns[idx].gen);
        self.sys.epoll_ctl += 1;
        match self.ep.modify(raw, ev, tok) {
            Ok(()) => self.conns[idx].want_out = want,
            Err(e) => self.fail(idx, errno_of(&e)),
        }
    }

    #[inline]
    fn count_out(&mut self, n: usize) {
        self.r.total_bytes_out += n as u64;
        if self.phase == Phase::Measure {
            self.r.bytes_out += n as u64;
        }
    }

    /// Stream: writes pattern bytes straight from the shared pattern (no copy) until the
    /// window is full or the socket is.
    fn pump_stream(&mut self, idx: usize, now: u64) {
        let Some(raw) = self.conns[idx].fd.as_ref().map(|f| f.as_raw_fd()) else {
            return;
        };
        let window = (self.sh.cfg.depth * self.sh.cfg.size) as u64;
        let measured = self.phase == Phase::Measure;
        let mut blocked = false;
        loop {
            let sending = self.sending;
            let Worker { conns, sh, .. } = &mut *self;
            let Some(st) = conns[idx].proto.stream() else {
                return;
            };
            let room = window.saturating_sub(st.sent - st.received) as usize;
            let chunk = st.next_chunk(&sh.work, room, !sending);
            if chunk.is_empty() {
                break;
            }
            let want = chunk.len();
            self.sys.write += 1;
            match sys::write(raw, chunk) {
                Ok(n) => {
                    self.count_out(n);
                    let Worker { conns, sh, r, .. } = &mut *self;
                    let c = &mut conns[idx];
                    let Some(st) = c.proto.stream() else {
                        return;
                    };
                    let done = st.on_sent(&sh.work, n);
                    for _ in 0..done {
                        c.inflight.push_back(Pending {
                            intended: now,
                            sent: now,
                            measured,
                        });
                        r.total_sent += 1;
                        if measured {
                            r.sent += 1;
                        }
                    }
                    self.inflight_total += done as usize;
                    if n < want {
                        blocked = true;
                        break;
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    blocked = true;
                    break;
                }
                Err(e) => {
                    self.fail(idx, errno_of(&e));
                    return;
                }
            }
        }
        if blocked != self.conns[idx].want_out {
            self.set_want_out(idx, raw, blocked);
        }
    }

    fn on_writable(&mut self, idx: usize) {
        let now = self.now();
        if self.sh.cfg.workload == Workload::Stream {
            self.pump_stream(idx, now);
        } else {
            self.flush(idx);
        }
    }

    // ----- receiving ---------------------------------------------------------------

    fn on_readable(&mut self, idx: usize) {
        let churn = self.is_churn();
        loop {
            let Some(raw) = self.conns[idx].fd.as_ref().map(|f| f.as_raw_fd()) else {
                return;
            };
            self.sys.read += 1;
            match sys::read(raw, &mut self.rbuf) {
                Ok(0) => {
                    self.on_eof(idx);
                    return;
                }
                Ok(n) => {
                    let now = self.now();
                    self.r.total_bytes_in += n as u64;
                    if self.phase == Phase::Measure {
                        self.r.bytes_in += n as u64;
                    }
                    if let Err(e) = self.feed(idx, n, now) {
                        self.fail(idx, e);
                        return;
                    }
                    // Level-triggered: another readiness event brings the rest, unless
                    // the buffer was filled (more is almost surely waiting).
                    if !churn && n < self.rbuf.len() {
                        break;
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => break,
                Err(e) => {
                    self.fail(idx, errno_of(&e));
                    return;
                }
            }
        }
        if !churn {
            let now = self.now();
            self.pump(idx, now);
        }
    }

    /// Hands `n` bytes of the read buffer to the connection's protocol and accounts for
    /// every reply they complete.
    fn feed(&mut self, idx: usize, n: usize, now: u64) -> Result<(), ClientError> {
        let Worker {
            conns,
            sh,
            rbuf,
            r,
            sched,
            inflight_total,
            last_completion,
            ..
        } = self;
        let c = &mut conns[idx];
        if c.idle {
            return Err(ClientError::UnsolicitedData);
        }
        let open = sched.is_some();
        let churn = sh.cfg.workload == Workload::Churn;
        let Conn {
            proto,
            inflight,
            churn_reply,
            backoff,
            ..
        } = c;
        let outstanding = if churn {
            usize::from(churn_reply.is_none())
        } else {
            inflight.len()
        };
        proto.feed(&sh.work, &rbuf[..n], outstanding, |err| {
            if churn {
                // Completes at EOF.
                *churn_reply = Some(err);
                return;
            }
            let Some(p) = inflight.pop_front() else {
                return;
            };
            *inflight_total -= 1;
            complete(r, p, err, now, open, last_completion);
            if err.is_none() {
                *backoff = 0;
            }
        })
    }

    fn on_eof(&mut self, idx: usize) {
        let now = self.now();
        let churn = self.is_churn();
        let c = &mut self.conns[idx];
        if c.idle {
            self.fail(idx, ClientError::IdleClosed);
            return;
        }
        if churn {
            let recorded = c.churn_reply.take();
            match churn::at_eof(recorded, &mut c.proto) {
                churn::Outcome::Complete(err) => {
                    if let Some(p) = c.inflight.pop_front() {
                        self.inflight_total -= 1;
                        let open = self.sched.is_some();
                        complete(&mut self.r, p, err, now, open, &mut self.last_completion);
                    }
                    if err.is_none() {
                        self.conns[idx].backoff = 0;
                    }
                    self.close(idx);
                    self.kick(idx);
                }
                churn::Outcome::Cut => self.fail(idx, ClientError::ShortReply),
            }
            return;
        }
        let eof = c.proto.on_eof();
        if let Ok(true) = eof {
            // A reply whose body ran to EOF just completed.
            let err = c.proto.take_status_error();
            if let Some(p) = c.inflight.pop_front() {
                self.inflight_total -= 1;
                let open = self.sched.is_some();
                complete(&mut self.r, p, err, now, open, &mut self.last_completion);
            }
        }
        let c = &mut self.conns[idx];
        if eof.is_ok() && c.proto.server_closing() {
            // The server said `Connection: close`: not an error. Requests it will not
            // answer are sent again on a new connection, keeping their intended times.
            self.r.server_closes += 1;
            let open = self.sched.is_some();
            let c = &mut self.conns[idx];
            for p in c.inflight.drain(..) {
                self.inflight_total -= 1;
                self.r.requeued += 1;
                if p.measured {
                    self.r.sent -= 1;
                }
                self.r.total_sent -= 1;
                if open {
                    c.requeue.push_back(p.intended);
                } else if p.measured {
                    if let Some(q) = &mut self.quota_left {
                        *q += 1;
                    }
                }
            }
            self.close(idx);
            if self.sending {
                self.r.reconnects += 1;
                self.start_connect(idx);
            }
            return;
        }
        let err = match eof {
            Err(e) => e,
            Ok(_) if !c.inflight.is_empty() => ClientError::ShortReply,
            Ok(_) => ClientError::ClosedByServer,
        };
        self.fail(idx, err);
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
                *self.r.errors.entry(ClientError::Unanswered).or_insert(0) += unanswered;
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

/// Accounts for one completed reply.
#[inline]
fn complete(
    r: &mut ThreadResult,
    p: Pending,
    err: Option<ClientError>,
    now: u64,
    open: bool,
    last_completion: &mut u64,
) {
    r.total_completed += 1;
    if let Some(e) = err {
        *r.errors.entry(e).or_insert(0) += 1;
        if p.measured {
            r.failed += 1;
        }
        return;
    }
    if !p.measured {
        return;
    }
    r.completed += 1;
    *last_completion = now;
    if open {
        r.latency.record(now.saturating_sub(p.intended));
        r.latency_uncorrected.record(now.saturating_sub(p.sent));
    } else {
        r.latency.record(now.saturating_sub(p.sent));
    }
}
