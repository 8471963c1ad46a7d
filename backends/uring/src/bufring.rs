//! The provided buffer ring of the multishot variants (`IORING_REGISTER_PBUF_RING`).
//!
//! Owns two anonymous mappings: the ring of buffer descriptors the kernel reads (pinned by
//! the kernel while registered) and the buffers themselves (plain memory, faulted in when
//! first written, so RSS grows only with what receives actually touched).
//!
//! Ownership of a buffer alternates: from [`BufRing::publish`] it belongs to the kernel,
//! which may write into it at any time; a CQE carrying `IORING_CQE_F_BUFFER` with its id
//! hands it back, and [`BufRing::recycle`] + [`BufRing::publish`] give it to the kernel
//! again. The mappings are freed only after [`BufRing::unregister`] and after every
//! receive that could select a buffer has completed (the shard guarantees both).
//!
//! A receive bundle names only its first buffer; the rest are the ones the kernel took from
//! the following ring entries, so [`BufRing`] remembers which buffer it wrote at which ring
//! ring position, counted without wrapping at the ring size (`seq`, `pos`): the entry a
//! consumed buffer sat in may be rewritten before its completion is read, its position in
//! the sequence is not (the 16-bit tail wraps only after 65,536 writes, more than any
//! buffer can stay lent). Completions can arrive in another order than the kernel selected
//! their buffers, so nothing assumes an order between completions. An incrementally consumed
//! buffer (`IOU_PBUF_RING_INC`, flagged `IORING_CQE_F_BUF_MORE` while the kernel keeps
//! filling it) has its fill offset tracked until it is handed back whole.

use std::io;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::Submitter;

/// One descriptor, laid out as the kernel's `struct io_uring_buf`. The `resv` field of
/// entry 0 doubles as the ring's tail.
#[repr(C)]
pub(crate) struct RawBuf {
    pub(crate) addr: u64,
    pub(crate) len: u32,
    pub(crate) bid: u16,
    pub(crate) resv: u16,
}

const _: () = assert!(std::mem::size_of::<RawBuf>() == 16);

/// An anonymous private mapping, unmapped on drop.
pub(crate) struct Mapping {
    pub(crate) ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    pub(crate) fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing
        // aliases nothing; the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(ptr.cast())
            .map(|ptr| Mapping { ptr, len })
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, unmapped once. Owners drop a
        // Mapping only when the kernel no longer uses it (see the module docs).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// The descriptor ring of one buffer group (`IORING_REGISTER_PBUF_RING`): `entries`
/// `io_uring_buf`s in a page-aligned mapping the kernel reads once registered. Both the
/// receive ring ([`BufRing`]) and the send rings (`sendring.rs`) are one of these plus
/// what they point at; only this type writes descriptors or the tail.
pub(crate) struct DescRing {
    ring: Mapping,
    entries: u16,
    bgid: u16,
    registered: bool,
}

impl DescRing {
    /// Maps a ring of `entries` descriptors (a power of two) for buffer group `bgid`.
    pub(crate) fn new(entries: u16, bgid: u16) -> io::Result<DescRing> {
        let page = page_size();
        let len = (entries as usize * std::mem::size_of::<RawBuf>()).div_ceil(page) * page;
        Ok(DescRing {
            ring: Mapping::new(len)?,
            entries,
            bgid,
            registered: false,
        })
    }

    /// Registers the ring with `submitter`'s io_uring as buffer group `bgid`, with the
    /// kernel's ring `flags` (`IOU_PBUF_RING_INC` or 0).
    pub(crate) fn register(&mut self, submitter: &Submitter<'_>, flags: u16) -> io::Result<()> {
        // SAFETY: the mapping is page aligned, holds `entries` descriptors and stays mapped
        // until after `unregister` (or, on an abandoned shard, forever: the owner leaks it
        // rather than unmapping memory the kernel may still read).
        unsafe {
            submitter.register_buf_ring_with_flags(
                self.ring.ptr.as_ptr() as u64,
                self.entries,
                self.bgid,
                flags,
            )
        }?;
        self.registered = true;
        Ok(())
    }

    /// Unregisters the ring, if it was. The caller guarantees no operation that selects
    /// from it is in flight.
    pub(crate) fn unregister(&mut self, submitter: &Submitter<'_>) -> io::Result<()> {
        if self.registered {
            submitter.unregister_buf_ring(self.bgid)?;
            self.registered = false;
        }
        Ok(())
    }

    /// The buffer group id operations name.
    pub(crate) fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Writes the descriptor at ring position `tail` (taken modulo the ring size).
    ///
    /// # Safety
    ///
    /// The position must be at or past the published tail (the kernel does not read it),
    /// and `addr..addr + len` must stay valid memory the kernel may read or write until a
    /// completion hands buffer `bid` back.
    pub(crate) unsafe fn write(&mut self, tail: u16, addr: u64, len: u32, bid: u16) {
        let idx = (tail & (self.entries - 1)) as usize;
        // SAFETY: `idx < entries`, inside the mapping; only addr/len/bid are written: entry
        // 0's `resv` is the tail, written only by `publish`. The caller keeps the kernel
        // from reading the slot (above).
        unsafe {
            let desc = self.ring.ptr.as_ptr().cast::<RawBuf>().add(idx);
            ptr::addr_of_mut!((*desc).addr).write(addr);
            ptr::addr_of_mut!((*desc).len).write(len);
            ptr::addr_of_mut!((*desc).bid).write(bid);
        }
    }

    /// Makes every descriptor written before `tail` visible to the kernel.
    pub(crate) fn publish(&mut self, tail: u16) {
        // SAFETY: entry 0's `resv` is the ring tail, a u16 aligned to 2 inside the mapping;
        // the kernel only reads it (with acquire semantics) so an atomic release store is
        // the required publication of the descriptors written before it.
        let t = unsafe {
            AtomicU16::from_ptr(ptr::addr_of_mut!(
                (*self.ring.ptr.as_ptr().cast::<RawBuf>()).resv
            ))
        };
        t.store(tail, Ordering::Release);
    }
}

/// A registered (or about to be registered) provided buffer ring.
pub(crate) struct BufRing {
    ring: DescRing,
    bufs: Mapping,
    entries: u16,
    buf_size: u32,
    /// Our copy of the tail; the kernel sees it after [`BufRing::publish`].
    tail: u16,
    published: u16,
    /// `IOU_PBUF_RING_INC`: buffers are consumed piece by piece.
    incremental: bool,
    /// The buffer written at each tail value (65,536 entries).
    seq: Vec<u16>,
    /// The tail value each buffer was last written at.
    pos: Vec<u16>,
    /// Incremental mode: bytes of each buffer already handed out.
    filled: Vec<u32>,
    /// Buffers the kernel holds (published or about to be): a completion naming any other
    /// is not ours to read.
    lent: Vec<bool>,
}

/// `IOU_PBUF_RING_INC` (Linux 6.12); the io-uring crate keeps it in its private bindings.
const IOU_PBUF_RING_INC: u16 = 2;
/// `IORING_CQE_F_BUF_MORE`: the kernel keeps filling this buffer (incremental mode).
const IORING_CQE_F_BUF_MORE: u32 = 1 << 4;

impl BufRing {
    /// Maps a ring of `entries` buffers of `buf_size` bytes, every buffer in the ring.
    pub(crate) fn new(
        entries: u16,
        buf_size: u32,
        bgid: u16,
        incremental: bool,
    ) -> io::Result<BufRing> {
        if !entries.is_power_of_two() || entries > 32768 || buf_size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "buffer ring needs a power-of-two entry count ≤ 32768 and buffers of at \
                     least one byte (got {entries} × {buf_size})"
                ),
            ));
        }
        let bufs_len = entries as usize * buf_size as usize;
        let mut ring = BufRing {
            ring: DescRing::new(entries, bgid)?,
            bufs: Mapping::new(bufs_len)?,
            entries,
            buf_size,
            tail: 0,
            published: 0,
            incremental,
            seq: vec![0; 1 << 16],
            pos: vec![0; entries as usize],
            filled: vec![0; entries as usize],
            lent: vec![false; entries as usize],
        };
        for bid in 0..entries {
            ring.recycle(bid);
        }
        ring.publish();
        Ok(ring)
    }

    /// Registers the ring with `submitter`'s io_uring.
    pub(crate) fn register(&mut self, submitter: &Submitter<'_>) -> io::Result<()> {
        let flags = if self.incremental {
            IOU_PBUF_RING_INC
        } else {
            0
        };
        self.ring.register(submitter, flags)
    }

    /// Unregisters the ring. The caller guarantees no receive that selects from it is in
    /// flight, so the kernel holds no buffer.
    pub(crate) fn unregister(&mut self, submitter: &Submitter<'_>) -> io::Result<()> {
        self.ring.unregister(submitter)
    }

    /// The buffer group id receives name.
    pub(crate) fn bgid(&self) -> u16 {
        self.ring.bgid()
    }

    /// `len` bytes at `offset` in buffer `bid`, which a completion just handed back (see
    /// [`BufRing::take`]). `None` for a range outside the buffer.
    pub(crate) fn data(&self, bid: u16, offset: usize, len: usize) -> Option<&[u8]> {
        if bid >= self.entries || offset.checked_add(len)? > self.buf_size as usize {
            return None;
        }
        // SAFETY: in bounds of the buffers mapping (checked above). A completion named
        // `bid`, so the kernel finished writing these bytes and will not write them again
        // until the buffer is recycled and published, which needs `&mut self` and so ends
        // this borrow.
        Some(unsafe {
            std::slice::from_raw_parts(
                self.bufs
                    .ptr
                    .as_ptr()
                    .add(bid as usize * self.buf_size as usize + offset),
                len,
            )
        })
    }

    /// Accounts for a receive completion of `n` bytes with CQE `flags`: fills `segments`
    /// with the `(bid, offset, len)` pieces holding them, in order, and recycles every
    /// buffer the kernel handed back whole (the kernel sees them after the next
    /// [`BufRing::publish`], so the pieces stay readable until then). `None` when the
    /// completion names a buffer that is not at the head, or more bytes than the buffers
    /// hold: the data cannot be found.
    pub(crate) fn take(
        &mut self,
        flags: u32,
        n: usize,
        segments: &mut Vec<(u16, u32, u32)>,
    ) -> Option<()> {
        segments.clear();
        let bid = io_uring::cqueue::buffer_select(flags)?;
        if bid >= self.entries || !self.lent[bid as usize] {
            return None;
        }
        let size = self.buf_size as usize;
        if self.incremental {
            let off = self.filled[bid as usize] as usize;
            if off + n > size {
                return None;
            }
            segments.push((bid, off as u32, n as u32));
            if flags & IORING_CQE_F_BUF_MORE != 0 {
                self.filled[bid as usize] += n as u32;
            } else {
                self.filled[bid as usize] = 0;
                self.recycle(bid);
            }
            return Some(());
        }
        // One buffer, or (a bundle) as many consecutive ring entries as the bytes fill.
        let count = n.div_ceil(size).max(1);
        if count > self.entries as usize {
            return None;
        }
        let first = self.pos[bid as usize];
        for i in 0..count as u16 {
            let b = self.seq[first.wrapping_add(i) as usize];
            if !self.lent[b as usize] || (i > 0 && b == bid) {
                segments.clear();
                return None;
            }
            let done = i as usize * size;
            segments.push((b, 0, (n - done).min(size) as u32));
        }
        for &(b, _, _) in segments.iter() {
            self.recycle(b);
        }
        Some(())
    }

    /// Puts buffer `bid` back at the tail. The kernel sees it after [`BufRing::publish`].
    fn recycle(&mut self, bid: u16) {
        if bid >= self.entries {
            return; // never ours: publishing it would hand the kernel a wild address
        }
        // Handed back: until it is written at the tail below, it is ours.
        self.lent[bid as usize] = false;
        let addr = self.bufs.ptr.as_ptr() as u64 + bid as u64 * self.buf_size as u64;
        // SAFETY: the tail is past the published one (publish catches up to it only
        // below), and buffer `bid` lies inside `bufs`, mapped until the kernel no longer
        // uses the ring (see the module docs).
        unsafe { self.ring.write(self.tail, addr, self.buf_size, bid) };
        self.seq[self.tail as usize] = bid;
        self.pos[bid as usize] = self.tail;
        self.lent[bid as usize] = true;
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every recycled buffer visible to the kernel.
    pub(crate) fn publish(&mut self) {
        if self.published == self.tail {
            return;
        }
        self.ring.publish(self.tail);
        self.published = self.tail;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycles_in_order_and_bounds_checks() {
        let mut r = BufRing::new(4, 64, 0, false).unwrap();
        assert_eq!(r.tail, 4);
        assert!(r.data(4, 0, 1).is_none());
        assert!(r.data(0, 0, 65).is_none());
        assert!(r.data(0, 60, 5).is_none());
        assert_eq!(r.data(3, 0, 64).unwrap().len(), 64);
        assert!(BufRing::new(3, 64, 0, false).is_err());
        let mut seg = Vec::new();
        let sel = |bid: u16| io_uring_buffer_flag(bid);
        r.take(sel(2), 10, &mut seg).unwrap();
        assert_eq!(
            seg,
            [(2, 0, 10)],
            "completions may arrive out of ring order"
        );
        // A bundle of 100 bytes from buffer 0 spans ring entries 0 and 1.
        r.take(sel(0), 100, &mut seg).unwrap();
        assert_eq!(seg, [(0, 0, 64), (1, 0, 36)]);
        assert!(
            r.take(sel(3), 1000, &mut seg).is_none(),
            "more than the ring holds"
        );
        r.publish();
        assert_eq!(r.published, 7);
        // Buffer 2 went back at position 4 (ring entry 0, which buffer 0 sat in), buffer 0
        // at 5: a bundle from buffer 2 continues with buffer 0.
        r.take(sel(2), 128, &mut seg).unwrap();
        assert_eq!(seg, [(2, 0, 64), (0, 0, 64)]);
    }

    fn io_uring_buffer_flag(bid: u16) -> u32 {
        // IORING_CQE_F_BUFFER with the id in the upper 16 bits.
        1 | (u32::from(bid) << 16)
    }

    #[test]
    fn incremental_buffers_stay_at_the_head_until_handed_back() {
        let mut r = BufRing::new(2, 64, 0, true).unwrap();
        let mut seg = Vec::new();
        let more = io_uring_buffer_flag(0) | IORING_CQE_F_BUF_MORE;
        r.take(more, 10, &mut seg).unwrap();
        assert_eq!(seg, [(0, 0, 10)]);
        r.take(more, 20, &mut seg).unwrap();
        assert_eq!(seg, [(0, 10, 20)]);
        r.take(io_uring_buffer_flag(0), 34, &mut seg).unwrap();
        assert_eq!(seg, [(0, 30, 34)]);
        assert_eq!(r.pos[0], 2, "buffer 0 went back to the tail");
        assert!(r
            .take(
                io_uring_buffer_flag(1) | IORING_CQE_F_BUF_MORE,
                65,
                &mut seg
            )
            .is_none());
    }
}
