//! What happens to the kernel's view of the shard's memory when the loop ends: a last check
//! that nothing is in flight, and a `Drop` that frees only what the kernel cannot touch.

use std::io;

use io_uring::{cqueue, opcode, types};

use super::io::Io;
use super::Shard;
use crate::conn::Sock;
use crate::token::{Op, Token};

/// How a shard that could not reap everything left the ring.
pub(super) struct Abandoned {
    /// SQEs were still queued in the SQ, unsubmitted: with SQPOLL the kernel may still
    /// pick them up, and they name descriptors by number.
    pub(super) queued: bool,
}

/// After the count reached zero, asks the kernel to cancel anything still in flight: a
/// count that was too low would otherwise let teardown free buffers the kernel still writes
/// into. Fails (and the caller abandons the ring) if something was found.
pub(super) fn verify_nothing_in_flight(io: &mut Io<'_>) -> io::Result<()> {
    let mine = Token::shard(Op::Ignore).encode();
    let entry = opcode::AsyncCancel2::new(types::CancelBuilder::any())
        .build()
        .user_data(mine);
    // SAFETY: AsyncCancel2 carries no pointer.
    unsafe { io.push(&entry) }?;
    loop {
        io.enter(1, None, None)?;
        io.cq.sync();
        if let Some(cqe) = io.cq.next() {
            if !cqueue::more(cqe.flags()) {
                io.inflight = io.inflight.saturating_sub(1);
            }
            io.cq.sync();
            if cqe.user_data() != mine {
                return Err(io::Error::other(format!(
                    "io_uring bookkeeping bug: a completion ({:#x}) arrived after the in-flight \
                     count reached zero; leaking the shard's buffers",
                    cqe.user_data()
                )));
            }
            return match cqe.result() {
                // CANCEL_ANY returns how many it cancelled. EINVAL: a kernel without
                // CANCEL_ANY (added in 5.19), which cannot check.
                r if r > 0 => Err(io::Error::other(format!(
                    "io_uring bookkeeping bug: {r} operations were still in flight when the \
                     count reached zero; leaking the shard's buffers"
                ))),
                _ => Ok(()),
            };
        }
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        let Some(abandoned) = self.abandoned.take() else {
            for conn in self.table.drain() {
                if conn.phase == crate::conn::Phase::Closed {
                    continue;
                }
                if let Sock::Fd(fd) = conn.sock {
                    // SAFETY: nothing is in flight (the count reached zero and the kernel
                    // confirmed it), so no SQE names this descriptor of ours.
                    unsafe { libc::close(fd) };
                }
            }
            return;
        };
        for conn in self.table.drain() {
            let open = conn.phase != crate::conn::Phase::Closed;
            if let (false, true, Sock::Fd(fd)) = (abandoned.queued, open, conn.sock) {
                // SAFETY: the descriptor is ours and no unsubmitted SQE names it; closing
                // it is memory-safe even if a submitted operation still holds the file (the
                // kernel keeps its own reference).
                unsafe { libc::close(fd) };
            }
            // Queued SQEs may still name the descriptor (so its number must not be reused)
            // and the kernel may still write into the connection's buffers. Fixed files
            // belong to the ring and close with it.
            std::mem::forget(conn);
        }
        if let Some(ring) = self.bufring.take() {
            std::mem::forget(ring);
        }
        if let Some(rings) = self.send_rings.take() {
            std::mem::forget(rings); // still registered: the kernel may read them
        }
        // Unsubmitted timeouts and setsockopts point at these.
        let boxes = (
            std::mem::take(&mut self.pause_ts),
            std::mem::take(&mut self.linger_ts),
            std::mem::replace(
                &mut self.sockopts,
                Box::new(super::SockOpts {
                    nodelay: 0,
                    send_buffer: 0,
                    linger: libc::linger {
                        l_onoff: 0,
                        l_linger: 0,
                    },
                }),
            ),
        );
        std::mem::forget(boxes);
    }
}
