//! Accepting: the listener's accept (one-shot or multishot, into a descriptor or a fixed
//! file slot), the pause after `EMFILE`, the stop at `max_connections`, and taking a new
//! socket into the table.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};

use backend_api::listener::{is_accept_exhaustion, is_accept_transient, prepare_accepted};
use backend_api::syscall;
use io_uring::{opcode, types};

use super::io::Io;
use super::{drive, Shard};
use crate::conn::Sock;
use crate::features::Feature;
use crate::token::{Op, Token};

/// Whether the shard takes new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// Below `max_connections`.
    Open,
    /// At `max_connections`: no accepting until a connection closes.
    Full,
}

impl Shard {
    pub(super) fn maybe_arm_accept(&mut self, io: &mut Io<'_>) -> io::Result<()> {
        if self.stopping
            || !self.accept.can_arm()
            || self.pause.in_flight()
            || self.admission == Admission::Full
        {
            return Ok(());
        }
        let fd = types::Fd(self.listener.as_raw_fd());
        let user_data = Token::shard(Op::Accept).encode();
        let fixed = self.features.has(Feature::Fixed);
        // A fixed file has no close-on-exec flag: the kernel refuses SOCK_CLOEXEC with it.
        let flags = if fixed { 0 } else { libc::SOCK_CLOEXEC };
        let entry = if self.features.has(Feature::AcceptMulti) {
            opcode::AcceptMulti::new(fd)
                .allocate_file_index(fixed)
                .flags(flags)
                .build()
                .user_data(user_data)
        } else {
            opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
                .file_index(fixed.then(types::DestinationSlot::auto_target))
                .flags(flags)
                .build()
                .user_data(user_data)
        };
        // SAFETY: no address is asked for (null pointers); the listener lives as long as
        // the shard.
        unsafe { io.push(&entry) }?;
        if self.accept.armed() {
            self.counters.accept_rearms += 1;
        }
        Ok(())
    }

    pub(super) fn cancel_accept(&mut self, io: &mut Io<'_>) -> io::Result<()> {
        if self.accept == crate::conn::OpState::Armed {
            drive::cancel(
                io,
                Token::shard(Op::Accept).encode(),
                Token::shard(Op::AcceptCancel).encode(),
            )?;
            self.accept.cancelling();
            self.counters.cancels += 1;
        }
        Ok(())
    }

    pub(super) fn on_accept(&mut self, io: &mut Io<'_>, res: i32, more: bool) -> io::Result<()> {
        if !more {
            self.accept.finished(true);
        }
        if res >= 0 {
            let sock = if self.features.has(Feature::Fixed) {
                Sock::Fixed(res as u32)
            } else {
                Sock::Fd(res)
            };
            return self.admit(sock, io);
        }
        let err = io::Error::from_raw_os_error(-res);
        if -res == libc::ECANCELED || -res == libc::EAGAIN || is_accept_transient(&err) {
            return Ok(()); // re-armed at the end of the turn unless stopping or paused
        }
        if is_accept_exhaustion(&err) {
            // Out of descriptors (or fixed file slots): retrying now would spin on a
            // listener that stays readable. Wait ACCEPT_PAUSE with a Timeout SQE, then
            // re-arm.
            if !self.pause.in_flight() && !self.stopping {
                let entry = opcode::Timeout::new(&*self.pause_ts)
                    .build()
                    .user_data(Token::shard(Op::AcceptPause).encode());
                // SAFETY: `pause_ts` is boxed and lives as long as the shard, which
                // outlives every in-flight operation.
                unsafe { io.push(&entry) }?;
                self.pause.armed();
                self.stats.accept_pauses += 1;
            }
            return self.cancel_accept(io);
        }
        Err(io::Error::new(
            err.kind(),
            format!("accept on the shard's listener failed: {err}"),
        ))
    }

    /// Takes a newly accepted socket into the table.
    fn admit(&mut self, sock: Sock, io: &mut Io<'_>) -> io::Result<()> {
        self.stats.accepted += 1;
        let sock = match sock {
            Sock::Fd(fd) => {
                // SAFETY: the kernel just installed this descriptor for us; nothing else
                // owns it.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                if self.stopping || self.setup_socket(&fd).is_err() {
                    // Shutting down, or the connection died before we could configure it.
                    self.stats.closed += 1;
                    return Ok(());
                }
                Sock::Fd(fd.into_raw_fd())
            }
            Sock::Fixed(_) => sock,
        };
        let recv_buf = self.pool.as_mut().map(|p| {
            let size = p.initial();
            p.get(size)
        });
        let (slot, gen) = self.table.insert(sock, self.service.session(), recv_buf);
        if let Sock::Fixed(index) = sock {
            self.setup_fixed(io, slot, gen, index)?;
        }
        let live = self.table.live() as u64;
        self.stats.peak_connections = self.stats.peak_connections.max(live);
        self.mark_dirty(slot);
        if self.stopping {
            if let Some(conn) = self.table.get_mut(slot, gen) {
                conn.abort();
            }
        }
        if self.table.live() >= self.limits.max_connections && self.admission == Admission::Open {
            self.admission = Admission::Full;
            self.stats.accept_pauses += 1;
            self.cancel_accept(io)?;
        }
        Ok(())
    }

    fn setup_socket(&self, fd: &OwnedFd) -> io::Result<()> {
        prepare_accepted(fd)?;
        if let Some(size) = self.send_buffer {
            let size = size as libc::c_int;
            // SAFETY: the option value points at `size`, a live c_int, with its size; the
            // kernel copies it.
            unsafe {
                syscall!(setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_SNDBUF,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                ))
            }?;
        }
        Ok(())
    }

    /// A fixed file has no descriptor for `setsockopt(2)`: the same options go through
    /// `IORING_OP_URING_CMD` setsockopt SQEs, counted on the connection.
    fn setup_fixed(&mut self, io: &mut Io<'_>, slot: u32, gen: u32, index: u32) -> io::Result<()> {
        let len = std::mem::size_of::<libc::c_int>() as u32;
        let mut opts = vec![(
            libc::IPPROTO_TCP as u32,
            libc::TCP_NODELAY as u32,
            &self.sockopts.nodelay as *const libc::c_int,
        )];
        if self.send_buffer.is_some() {
            opts.push((
                libc::SOL_SOCKET as u32,
                libc::SO_SNDBUF as u32,
                &self.sockopts.send_buffer as *const libc::c_int,
            ));
        }
        for (level, name, value) in opts {
            let entry =
                opcode::SetSockOpt::new(types::Fixed(index), level, name, value.cast(), len)
                    .build()
                    .user_data(Token::conn(Op::SockOpt, slot, gen).encode());
            // SAFETY: the option value lives in `sockopts`, boxed and owned by the shard,
            // which outlives every in-flight operation.
            unsafe { io.push(&entry) }?;
            if let Some(conn) = self.table.get_mut(slot, gen) {
                conn.inflight += 1;
            }
        }
        Ok(())
    }
}
