//! Send bundles (`send-bundle`): each connection with output queues it into a small
//! provided buffer ring of its own, and one `Send` with `IORING_RECVSEND_BUNDLE` sends
//! whatever the ring holds, picking up buffers queued while it runs.
//!
//! A send ring's buffers are consumed in ring order by whichever send selects from it, so
//! one ring serves one connection at a time: a connection takes a ring from the shard's
//! [`SendRings`] pool when it has output and gives it back once its output drained and no
//! send is in flight. An idle connection holds no ring, so its memory stays what it was
//! without send bundles; the pool grows to the most connections sending at once.
//!
//! The ring's entries point straight into the connection's output chunks (no copy): a chunk
//! is the connection's `out` buffer frozen when it was queued. From [`SendQueue::queue`]
//! until a completion accounts for all of its bytes the kernel may read it, so nothing
//! appends to, moves the heap buffer of, or drops a queued chunk. Sends carry
//! `MSG_WAITALL`: the kernel retries a short send itself, so every completion covers whole
//! chunks from the head of the ring. A completion that does not (an error after partial
//! progress, a cancel) leaves the ring's head where only the kernel knows it: the queue is
//! then *broken*, its connection aborts, and the ring is unregistered instead of reused.

use std::collections::VecDeque;
use std::io;

use backend_api::OutBuf;
use io_uring::Submitter;

use crate::bufring::DescRing;

/// Entries of one connection's send ring: output chunks queued at once.
pub(crate) const SEND_RING_ENTRIES: u16 = 16;

/// One registered send ring (its descriptors; the data lives in the connection's chunks).
pub(crate) struct SendRing {
    ring: DescRing,
    /// Our tail: one past the last entry written and published.
    tail: u16,
}

impl SendRing {
    fn new(bgid: u16) -> io::Result<SendRing> {
        Ok(SendRing {
            ring: DescRing::new(SEND_RING_ENTRIES, bgid)?,
            tail: 0,
        })
    }

    fn register(&mut self, submitter: &Submitter<'_>) -> io::Result<()> {
        self.ring.register(submitter, 0)
    }

    fn unregister(&mut self, submitter: &Submitter<'_>) -> io::Result<()> {
        self.ring.unregister(submitter)
    }

    /// The buffer group id a bundle send names.
    pub(crate) fn bgid(&self) -> u16 {
        self.ring.bgid()
    }

    /// Writes `data` at the tail and publishes it.
    ///
    /// # Safety
    ///
    /// `data` must stay valid and unmodified until a completion accounts for it; the
    /// caller keeps fewer than [`SEND_RING_ENTRIES`] entries unaccounted.
    unsafe fn push(&mut self, data: &[u8]) {
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        // SAFETY: the entry is past the published tail (published only below), the ring is
        // not full (the caller's promise), and `data` outlives the send (the caller's).
        unsafe {
            self.ring.write(
                self.tail,
                data.as_ptr() as u64,
                len,
                self.tail & (SEND_RING_ENTRIES - 1),
            )
        };
        self.tail = self.tail.wrapping_add(1);
        self.ring.publish(self.tail);
    }
}

/// Why a send completion cannot be applied to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mismatch {
    /// It names a buffer other than the head, or none.
    WrongBuffer,
    /// It reports more bytes than are queued, or ends inside a chunk.
    WrongLength,
}

/// A connection's send ring and the output chunks its entries point into, oldest first.
pub(crate) struct SendQueue {
    ring: SendRing,
    chunks: VecDeque<OutBuf>,
    /// Bytes in `chunks`.
    queued: usize,
    /// The ring's head is not where our accounting says (see the module docs).
    broken: bool,
    /// The head chunk was sent in part.
    partial: bool,
}

impl SendQueue {
    fn new(ring: SendRing) -> SendQueue {
        SendQueue {
            ring,
            chunks: VecDeque::with_capacity(SEND_RING_ENTRIES as usize),
            queued: 0,
            broken: false,
            partial: false,
        }
    }

    /// The buffer group id a bundle send names.
    pub(crate) fn bgid(&self) -> u16 {
        self.ring.bgid()
    }

    /// Output bytes queued and not yet reported sent.
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// Freezes `out` as a new chunk at the ring's tail, if the ring has room; `out` is left
    /// empty (it keeps `spare`'s allocation, if any). Returns whether it was queued.
    pub(crate) fn queue(&mut self, out: &mut OutBuf, spare: &mut OutBuf) -> bool {
        if out.is_empty() || self.broken || self.chunks.len() >= SEND_RING_ENTRIES as usize {
            return false;
        }
        let chunk = std::mem::replace(out, std::mem::take(spare));
        // SAFETY: the chunk is owned by `chunks` until a completion accounts for all of it
        // (`sent`); nothing appends to it or drops it meanwhile, and moving the OutBuf does
        // not move its heap buffer. The ring has a free entry (checked above).
        unsafe { self.ring.push(chunk.pending()) };
        self.queued += chunk.len();
        self.chunks.push_back(chunk);
        true
    }

    /// Applies a send completion of `n > 0` bytes with CQE `flags`. On `Err` the queue is
    /// broken: the connection must abort. The first chunk freed is kept in `spare`. A
    /// completion may end inside a chunk (the kernel returned a short send despite
    /// `MSG_WAITALL`): the rest of that chunk stays at the head, and if the send ended there
    /// the queue must be [`rebuilt`](SendRings::rebuild) before the next send.
    pub(crate) fn sent(
        &mut self,
        flags: u32,
        n: usize,
        spare: &mut OutBuf,
    ) -> Result<(), Mismatch> {
        let head = self.ring.tail.wrapping_sub(self.chunks.len() as u16) & (SEND_RING_ENTRIES - 1);
        if io_uring::cqueue::buffer_select(flags) != Some(head) {
            self.broken = true;
            return Err(Mismatch::WrongBuffer);
        }
        if n > self.queued {
            self.broken = true;
            return Err(Mismatch::WrongLength);
        }
        let mut left = n;
        while left > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if front.len() > left {
                // The kernel may read the rest of it still: only the position moves.
                front.advance(left);
                self.queued -= left;
                self.partial = true;
                break;
            }
            left -= front.len();
            self.queued -= front.len();
            self.partial = false;
            if let Some(mut chunk) = self.chunks.pop_front() {
                let len = chunk.len();
                chunk.advance(len);
                if spare.capacity() == 0 {
                    *spare = chunk;
                }
            }
        }
        Ok(())
    }

    /// The last send ended inside a chunk: where the kernel's ring head stands is not
    /// ours to know, so the rest must be queued on a fresh ring.
    pub(crate) fn needs_rebuild(&self) -> bool {
        self.partial && !self.broken
    }

    /// A send ended without accounting for its bytes (error, cancel): the ring's head is
    /// unknown.
    pub(crate) fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// Nothing is queued: with no send in flight, the ring may serve another connection.
    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

/// The shard's send rings: buffer group ids from `first_bgid` up, registered on first use
/// and reused while clean.
pub(crate) struct SendRings {
    free: Vec<SendRing>,
    /// Group ids of rings unregistered after breaking, to reuse.
    free_bgids: Vec<u16>,
    next_bgid: u16,
}

impl SendRings {
    pub(crate) fn new(first_bgid: u16) -> SendRings {
        SendRings {
            free: Vec::new(),
            free_bgids: Vec::new(),
            next_bgid: first_bgid,
        }
    }

    /// A clean ring for one connection: a free one, or a new one registered now.
    pub(crate) fn take(&mut self, submitter: &Submitter<'_>) -> io::Result<SendQueue> {
        if let Some(ring) = self.free.pop() {
            return Ok(SendQueue::new(ring));
        }
        let bgid = match self.free_bgids.pop() {
            Some(b) => b,
            None => {
                let b = self.next_bgid;
                self.next_bgid = b.checked_add(1).ok_or_else(|| {
                    io::Error::other(
                        "send-bundle: every buffer group id is in use (one per connection \
                         sending at once, 65,535 at most per shard); lower max_connections \
                         or spread connections over more shards",
                    )
                })?;
                b
            }
        };
        let mut ring = SendRing::new(bgid)?;
        ring.register(submitter).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("registering a send buffer ring (needs Linux 6.10): {e}"),
            )
        })?;
        Ok(SendQueue::new(ring))
    }

    /// Takes back a connection's queue whose send is not in flight: a clean, empty ring is
    /// reused; any other is unregistered (its head is not where a new owner would start).
    pub(crate) fn give_back(&mut self, q: SendQueue, submitter: &Submitter<'_>) -> io::Result<()> {
        let SendQueue {
            mut ring,
            chunks,
            broken,
            ..
        } = q;
        if !broken && chunks.is_empty() {
            self.free.push(ring);
            return Ok(());
        }
        // The kernel no longer reads the chunks (no send is in flight); drop them only after
        // the ring that points at them is gone.
        ring.unregister(submitter)?;
        self.free_bgids.push(ring.bgid());
        drop(ring);
        drop(chunks);
        Ok(())
    }

    /// Moves `q`'s chunks (the partly sent head first) onto a fresh ring and unregisters
    /// the old one. No send may be in flight on `q`.
    pub(crate) fn rebuild(
        &mut self,
        q: &mut SendQueue,
        submitter: &Submitter<'_>,
    ) -> io::Result<()> {
        let fresh = self.take(submitter)?;
        let mut old_ring = std::mem::replace(&mut q.ring, fresh.ring);
        for chunk in &q.chunks {
            // SAFETY: as in `queue`: the chunk stays in `q.chunks`, unmodified, until a
            // completion accounts for it; there are at most SEND_RING_ENTRIES of them and
            // the fresh ring is empty.
            unsafe { q.ring.push(chunk.pending()) };
        }
        q.partial = false;
        // Nothing reads the old ring any more (no send is in flight), and its entries point
        // into chunks that outlive it.
        old_ring.unregister(submitter)?;
        self.free_bgids.push(old_ring.bgid());
        Ok(())
    }

    /// Unregisters every free ring (teardown, nothing in flight).
    pub(crate) fn unregister_all(&mut self, submitter: &Submitter<'_>) -> io::Result<()> {
        for ring in &mut self.free {
            ring.unregister(submitter)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(bid: u16) -> u32 {
        1 | (u32::from(bid) << 16)
    }

    fn queue() -> SendQueue {
        SendQueue::new(SendRing::new(1).unwrap())
    }

    fn out(bytes: &[u8]) -> OutBuf {
        let mut o = OutBuf::new();
        o.tail().extend_from_slice(bytes);
        o
    }

    #[test]
    fn completions_consume_whole_chunks_from_the_head() {
        let mut q = queue();
        let mut spare = OutBuf::new();
        for chunk in [&b"abc"[..], b"de", b"fghi"] {
            assert!(q.queue(&mut out(chunk), &mut spare));
        }
        assert_eq!(q.queued(), 9);
        q.sent(flag(0), 5, &mut spare).unwrap();
        assert_eq!(q.queued(), 4);
        assert!(spare.capacity() > 0, "a freed chunk is kept as the spare");
        q.sent(flag(2), 4, &mut spare).unwrap();
        assert!(q.is_empty());
    }

    #[test]
    fn a_completion_that_does_not_match_breaks_the_queue() {
        let mut spare = OutBuf::new();
        let mut q = queue();
        q.queue(&mut out(b"abc"), &mut spare);
        assert_eq!(q.sent(flag(1), 3, &mut spare), Err(Mismatch::WrongBuffer));
        assert!(
            !q.queue(&mut out(b"x"), &mut spare),
            "a broken queue takes nothing"
        );
        let mut q = queue();
        q.queue(&mut out(b"abc"), &mut spare);
        q.sent(flag(0), 2, &mut spare).unwrap();
        assert!(q.needs_rebuild(), "a send that ended inside a chunk");
        assert_eq!(q.queued(), 1);
        q.sent(flag(0), 1, &mut spare).unwrap();
        assert!(
            !q.needs_rebuild() && q.is_empty(),
            "the kernel went on inside it"
        );
        let mut q = queue();
        q.queue(&mut out(b"abc"), &mut spare);
        assert_eq!(q.sent(flag(0), 4, &mut spare), Err(Mismatch::WrongLength));
        assert_eq!(q.sent(0, 3, &mut spare), Err(Mismatch::WrongBuffer));
    }

    #[test]
    fn the_ring_holds_at_most_its_entries_and_wraps() {
        let mut spare = OutBuf::new();
        let mut q = queue();
        for _ in 0..SEND_RING_ENTRIES {
            assert!(q.queue(&mut out(b"x"), &mut spare));
        }
        let mut o = out(b"y");
        assert!(
            !q.queue(&mut o, &mut spare),
            "full: the output waits in `out`"
        );
        assert_eq!(o.len(), 1);
        q.sent(flag(0), 3, &mut spare).unwrap();
        for _ in 0..3 {
            assert!(q.queue(&mut out(b"z"), &mut spare));
        }
        q.sent(flag(3), SEND_RING_ENTRIES as usize, &mut spare)
            .unwrap();
        assert!(q.is_empty());
    }
}
