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

use std::io;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::Submitter;

/// One descriptor, laid out as the kernel's `struct io_uring_buf`. The `resv` field of
/// entry 0 doubles as the ring's tail.
#[repr(C)]
struct RawBuf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

const _: () = assert!(std::mem::size_of::<RawBuf>() == 16);

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
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

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// A registered (or about to be registered) provided buffer ring.
pub(crate) struct BufRing {
    ring: Mapping,
    bufs: Mapping,
    entries: u16,
    buf_size: u32,
    /// Our copy of the tail; the kernel sees it after [`BufRing::publish`].
    tail: u16,
    published: u16,
    bgid: u16,
    registered: bool,
}

impl BufRing {
    /// Maps a ring of `entries` buffers of `buf_size` bytes, every buffer in the ring.
    pub(crate) fn new(entries: u16, buf_size: u32, bgid: u16) -> io::Result<BufRing> {
        if !entries.is_power_of_two() || entries > 32768 || buf_size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "buffer ring needs a power-of-two entry count ≤ 32768 and buffers of at \
                     least one byte (got {entries} × {buf_size})"
                ),
            ));
        }
        let page = page_size();
        let ring_len = (entries as usize * std::mem::size_of::<RawBuf>()).div_ceil(page) * page;
        let bufs_len = entries as usize * buf_size as usize;
        let mut ring = BufRing {
            ring: Mapping::new(ring_len)?,
            bufs: Mapping::new(bufs_len)?,
            entries,
            buf_size,
            tail: 0,
            published: 0,
            bgid,
            registered: false,
        };
        for bid in 0..entries {
            ring.recycle(bid);
        }
        ring.publish();
        Ok(ring)
    }

    /// Registers the ring with `submitter`'s io_uring as buffer group `bgid`.
    pub(crate) fn register(&mut self, submitter: &Submitter<'_>) -> io::Result<()> {
        // SAFETY: the ring mapping is page aligned, holds `entries` descriptors and stays
        // mapped until after `unregister` (or, on an abandoned shard, forever: the owner
        // leaks it rather than unmapping memory the kernel may still read).
        unsafe {
            submitter.register_buf_ring_with_flags(
                self.ring.ptr.as_ptr() as u64,
                self.entries,
                self.bgid,
                0,
            )
        }?;
        self.registered = true;
        Ok(())
    }

    /// Unregisters the ring. The caller guarantees no receive that selects from it is in
    /// flight, so the kernel holds no buffer.
    pub(crate) fn unregister(&mut self, submitter: &Submitter<'_>) -> io::Result<()> {
        if self.registered {
            submitter.unregister_buf_ring(self.bgid)?;
            self.registered = false;
        }
        Ok(())
    }

    /// The buffer group id receives name.
    pub(crate) fn bgid(&self) -> u16 {
        self.bgid
    }

    /// The first `len` bytes of buffer `bid`, which a completion just handed back.
    ///
    /// Returns `None` for an id or length the ring never handed out (a kernel bug or a
    /// misrouted completion): the caller drops the data rather than reading out of bounds.
    pub(crate) fn data(&self, bid: u16, len: usize) -> Option<&[u8]> {
        if bid >= self.entries || len > self.buf_size as usize {
            return None;
        }
        // SAFETY: in bounds of the buffers mapping (checked above). A completion named
        // `bid`, so the kernel finished writing it and will not select it again until it
        // is recycled and published, which needs `&mut self` and so ends this borrow.
        Some(unsafe {
            std::slice::from_raw_parts(
                self.bufs
                    .ptr
                    .as_ptr()
                    .add(bid as usize * self.buf_size as usize),
                len,
            )
        })
    }

    /// Puts buffer `bid` back at the tail. The kernel sees it after [`BufRing::publish`].
    pub(crate) fn recycle(&mut self, bid: u16) {
        if bid >= self.entries {
            return; // never ours: publishing it would hand the kernel a wild address
        }
        let mask = self.entries - 1;
        let idx = (self.tail & mask) as usize;
        let addr = self.bufs.ptr.as_ptr() as u64 + bid as u64 * self.buf_size as u64;
        // SAFETY: `idx < entries`, so the descriptor is inside the ring mapping. Slots at or
        // past the published tail are not read by the kernel, and only addr/len/bid are
        // written: entry 0's `resv` is the tail, written only by `publish`.
        unsafe {
            let desc = self.ring.ptr.as_ptr().cast::<RawBuf>().add(idx);
            ptr::addr_of_mut!((*desc).addr).write(addr);
            ptr::addr_of_mut!((*desc).len).write(self.buf_size);
            ptr::addr_of_mut!((*desc).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every recycled buffer visible to the kernel.
    pub(crate) fn publish(&mut self) {
        if self.published == self.tail {
            return;
        }
        // SAFETY: entry 0's `resv` is the ring tail, a u16 aligned to 2 inside the mapping;
        // the kernel only reads it (with acquire semantics) so an atomic release store is
        // the required publication of the descriptors written before it.
        let tail = unsafe {
            AtomicU16::from_ptr(ptr::addr_of_mut!(
                (*self.ring.ptr.as_ptr().cast::<RawBuf>()).resv
            ))
        };
        tail.store(self.tail, Ordering::Release);
        self.published = self.tail;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycles_in_order_and_bounds_checks() {
        let mut r = BufRing::new(4, 64, 0).unwrap();
        assert_eq!(r.tail, 4);
        assert!(r.data(4, 1).is_none());
        assert!(r.data(0, 65).is_none());
        assert_eq!(r.data(3, 64).unwrap().len(), 64);
        r.recycle(2);
        r.publish();
        assert_eq!(r.published, 5);
        assert!(BufRing::new(3, 64, 0).is_err());
    }
}
