//! Connections: opening them (before the clock, or per request), connect completion and
//! timeouts, failures with reconnect backoff, and closing.

use std::cmp::Reverse;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use super::io::{errno_of, token, EV_ERR, EV_ET, EV_IN, EV_OUT, EV_RDHUP};
use super::result::Pending;
use super::Worker;
use crate::load::error::ClientError;
use crate::load::sys;
use crate::load::workloads::Plugin;
use crate::load::LoadError;

/// Connects in flight at once per client thread while establishing connections, so the
/// server's SYN and accept queues are not flooded.
const CONNECT_WINDOW: usize = 512;
/// First and longest wait before reconnecting after a failure.
const BACKOFF_MIN: u64 = 1_000_000;
const BACKOFF_MAX: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Closed,
    Connecting,
    Open,
}

/// One connection slot; `C` is the workload's per-connection state.
#[derive(Debug)]
pub(super) struct Conn<C> {
    pub fd: Option<OwnedFd>,
    pub gen: u32,
    pub state: State,
    /// Held open and watched, never sent on.
    pub idle: bool,
    pub want_out: bool,
    pub connect_start: u64,
    pub out: Vec<u8>,
    pub out_pos: usize,
    pub inflight: VecDeque<Pending>,
    /// Open loop: intended times of requests to resend after the server closed gracefully.
    pub requeue: VecDeque<u64>,
    pub proto: C,
    /// Open loop: scheduled requests not yet sent, and scheduled requests taken so far.
    pub due: u64,
    pub taken: u64,
    pub backoff: u64,
    /// Connections opened on this slot (varies the echo bytes per connection).
    pub opened: u64,
}

impl<C> Conn<C> {
    pub(super) fn new(idle: bool, proto: C) -> Conn<C> {
        Conn {
            fd: None,
            gen: 0,
            state: State::Closed,
            idle,
            want_out: false,
            connect_start: 0,
            out: Vec::new(),
            out_pos: 0,
            inflight: VecDeque::new(),
            requeue: VecDeque::new(),
            proto,
            due: 0,
            taken: 0,
            backoff: 0,
            opened: 0,
        }
    }
}

impl<P: Plugin> Worker<'_, P> {
    /// Opens idle connections, then active ones (unless they open per request), before
    /// the clock starts.
    pub(super) fn establish(&mut self) -> Result<(), LoadError> {
        let t0 = self.now();
        let active = self.plan.active;
        let total = self.conns.len();
        self.connect_range(active, total)?;
        self.r.idle_establish_ns = self.now() - t0;
        if !self.per_request() {
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

    /// Gives slot `idx` a chance to send: held connections send what is due, per-request
    /// slots start their next transaction.
    pub(super) fn kick(&mut self, idx: usize) {
        let now = self.now();
        if self.per_request() {
            self.start_transaction(idx, now);
        } else {
            self.pump(idx, now);
        }
    }

    /// Per-request: takes the next request and opens its connection; the request is
    /// written once connected.
    fn start_transaction(&mut self, idx: usize, now: u64) {
        if self.conns[idx].state != State::Closed || !self.sending {
            return;
        }
        let Some(p) = self.take_request(idx, now) else {
            return;
        };
        self.conns[idx].inflight.push_back(p);
        self.start_connect(idx);
    }

    /// Starts a nonblocking connect on slot `idx`. Failures are counted and handled.
    pub(super) fn start_connect(&mut self, idx: usize) {
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
        let seed = (self.plan.first_conn + idx) as u64 * 1_000_003 + c.opened;
        c.proto = self.sh.work.conn(seed);
        if let Some(spread) = &mut self.spread {
            self.sys.connection += 2;
            sys::bind_source(raw, spread.next_addr())?;
        }
        let per_request = self.per_request();
        if !per_request {
            self.sys.connection += 1;
            sys::set_nodelay(raw)?;
        }
        self.sys.connection += 1;
        let done = sys::connect(raw, &target)?;
        let gen = self.conns[idx].gen;
        // Per-request: edge-triggered for both directions from the start, so no
        // epoll_ctl is needed after connecting (the connection is read to EOF anyway).
        // Held connections: EPOLLOUT until connected, then EPOLLIN only.
        let events = if per_request {
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

    pub(super) fn on_connect_event(&mut self, idx: usize, bits: u32) {
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
        if !self.per_request() {
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
        let per_request = self.per_request();
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
        if per_request {
            // Connect latency of the measured transactions only.
            if c.inflight.front().is_some_and(|p| p.measured) {
                self.r.connect.record(connect_ns);
            }
            let Worker { conns, sh, .. } = self;
            let c = &mut conns[idx];
            c.out.clear();
            c.out_pos = 0;
            sh.work.request(&mut c.proto, &mut c.out);
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
        if self.conns[idx].idle {
            self.r.idle_failed += 1;
        }
        self.fail(idx, err);
    }

    pub(super) fn expire_connects(&mut self, now: u64) {
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

    pub(super) fn expire_retries(&mut self, now: u64) {
        while let Some(&Reverse((at, idx, gen))) = self.retries.peek() {
            if at > now {
                break;
            }
            self.retries.pop();
            let c = &self.conns[idx as usize];
            if c.gen == gen && c.state == State::Closed && self.sending {
                if self.per_request() {
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
    pub(super) fn fail(&mut self, idx: usize, err: ClientError) {
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

    pub(super) fn close(&mut self, idx: usize) {
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
}
