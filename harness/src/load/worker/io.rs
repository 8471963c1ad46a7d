//! I/O: epoll dispatch, sending (whole requests into the output buffer, or a byte stream
//! straight from the workload's data), receiving into the workload's parser, and EOF.
//!
//! Held connections are level-triggered: one read per readiness event, and one write per
//! connection per turn carrying every request due. Per-request connections are
//! edge-triggered and read until EAGAIN.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use super::conn::{Conn, State};
use super::result::Pending;
use super::{Worker, STOP_TOKEN};
use crate::load::error::ClientError;
use crate::load::sys;
use crate::load::workloads::{Eof, Plugin, Sending};

pub(super) const EV_IN: u32 = libc::EPOLLIN as u32;
pub(super) const EV_OUT: u32 = libc::EPOLLOUT as u32;
pub(super) const EV_ERR: u32 = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
pub(super) const EV_RDHUP: u32 = libc::EPOLLRDHUP as u32;
pub(super) const EV_ET: u32 = libc::EPOLLET as u32;

/// epoll token of slot `idx` in its generation `gen`, so events of a closed connection
/// are not mistaken for its successor's.
pub(super) fn token(idx: usize, gen: u32) -> u64 {
    ((gen as u64) << 32) | idx as u64
}

pub(super) fn errno_of(e: &io::Error) -> ClientError {
    ClientError::Errno(e.raw_os_error().unwrap_or(libc::EIO))
}

impl<P: Plugin> Worker<'_, P> {
    pub(super) fn wait_and_dispatch(&mut self, timeout: Option<Duration>) -> io::Result<()> {
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
                    // Edge-triggered connections: data that came with the connect edge
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

    // ----- sending -----------------------------------------------------------------

    /// Sends every request slot `idx` may send now, in one write.
    pub(super) fn pump(&mut self, idx: usize, now: u64) {
        let c = &self.conns[idx];
        if c.state != State::Open || c.idle {
            return;
        }
        if P::FACTS.sending == Sending::Bytes {
            self.pump_bytes(idx, now);
            return;
        }
        if self.sending && !self.sh.work.server_closing(&c.proto) {
            let depth = self.sh.cfg.workload.depth;
            while self.conns[idx].inflight.len() < depth {
                let Some(p) = self.take_request(idx, now) else {
                    break;
                };
                self.r.total_sent += 1;
                let Worker { conns, sh, .. } = self;
                let c = &mut conns[idx];
                c.inflight.push_back(p);
                sh.work.request(&mut c.proto, &mut c.out);
            }
        }
        self.flush(idx);
    }

    /// Writes the connection's pending output once; asks for EPOLLOUT only if the
    /// kernel would not take it all.
    pub(super) fn flush(&mut self, idx: usize) {
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
        if self.per_request() {
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
        if self.phase == super::clock::Phase::Measure {
            self.r.bytes_out += n as u64;
        }
    }

    /// [`Sending::Bytes`]: writes the workload's bytes straight from its shared data (no
    /// copy) until its window is full or the socket is.
    fn pump_bytes(&mut self, idx: usize, now: u64) {
        let Some(raw) = self.conns[idx].fd.as_ref().map(|f| f.as_raw_fd()) else {
            return;
        };
        let measured = self.phase == super::clock::Phase::Measure;
        let sh = self.sh;
        let mut blocked = false;
        loop {
            let chunk = sh.work.next_bytes(&self.conns[idx].proto, !self.sending);
            if chunk.is_empty() {
                break;
            }
            let want = chunk.len();
            self.sys.write += 1;
            match sys::write(raw, chunk) {
                Ok(n) => {
                    self.count_out(n);
                    let Worker { conns, r, .. } = &mut *self;
                    let c = &mut conns[idx];
                    let done = sh.work.written(&mut c.proto, n);
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
        if P::FACTS.sending == Sending::Bytes {
            self.pump_bytes(idx, now);
        } else {
            self.flush(idx);
        }
    }

    // ----- receiving ---------------------------------------------------------------

    fn on_readable(&mut self, idx: usize) {
        let per_request = self.per_request();
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
                    if self.phase == super::clock::Phase::Measure {
                        self.r.bytes_in += n as u64;
                    }
                    if let Err(e) = self.feed(idx, n, now) {
                        self.fail(idx, e);
                        return;
                    }
                    // Level-triggered: another readiness event brings the rest, unless
                    // the buffer was filled (more is almost surely waiting).
                    if !per_request && n < self.rbuf.len() {
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
        if !per_request {
            let now = self.now();
            self.pump(idx, now);
        }
    }

    /// Hands `n` bytes of the read buffer to the workload and accounts for every reply
    /// they complete.
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
        let Conn {
            proto,
            inflight,
            backoff,
            ..
        } = c;
        let outstanding = inflight.len();
        sh.work.feed(proto, &rbuf[..n], outstanding, |err| {
            let Some(p) = inflight.pop_front() else {
                return;
            };
            *inflight_total -= 1;
            r.complete(p, err, now, open, last_completion);
            if err.is_none() {
                *backoff = 0;
            }
        })
    }

    /// The reply EOF completed, if any: accounted for like any other.
    fn complete_at_eof(&mut self, idx: usize, err: Option<ClientError>, now: u64) {
        if let Some(p) = self.conns[idx].inflight.pop_front() {
            self.inflight_total -= 1;
            let open = self.sched.is_some();
            self.r
                .complete(p, err, now, open, &mut self.last_completion);
        }
    }

    fn on_eof(&mut self, idx: usize) {
        let now = self.now();
        if self.conns[idx].idle {
            self.fail(idx, ClientError::IdleClosed);
            return;
        }
        let eof = self.sh.work.on_eof(&mut self.conns[idx].proto);
        if self.per_request() {
            // The transaction ends at EOF: with its reply, or cut short.
            match eof {
                Ok(Eof::Completed(err)) => {
                    self.complete_at_eof(idx, err, now);
                    if err.is_none() {
                        self.conns[idx].backoff = 0;
                    }
                    self.close(idx);
                    self.kick(idx);
                }
                Ok(Eof::Nothing) => self.fail(idx, ClientError::ShortReply),
                Err(e) => self.fail(idx, e),
            }
            return;
        }
        if let Ok(Eof::Completed(err)) = eof {
            self.complete_at_eof(idx, err, now);
        }
        if eof.is_ok() && self.sh.work.server_closing(&self.conns[idx].proto) {
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
            Ok(_) if !self.conns[idx].inflight.is_empty() => ClientError::ShortReply,
            Ok(_) => ClientError::ClosedByServer,
        };
        self.fail(idx, err);
    }
}
