//! Per-connection receive buffers of one-shot `uring`, sized to what the connection
//! receives and recycled through a per-shard pool.
//!
//! A one-shot `Recv` names its buffer, and the kernel may write into it until the CQE
//! arrives, so every connection with a receive in flight (every idle one included) pins a
//! buffer. Buffers start at `min` bytes, grow ×4 when a receive fills them (up to `max`,
//! which is `limits.read_buffer`) and shrink by halves when receives use an eighth or less.
//! A buffer lives on the heap (`Box<[u8]>`), so moving the connection that owns it never
//! moves the bytes the kernel writes to.

/// Buffers of one size class kept for reuse; larger classes keep fewer.
const POOL_BYTES_PER_CLASS: usize = 1 << 20;

/// The shard's pool of receive buffers, one free list per power-of-two size.
pub(crate) struct RecvPool {
    min: usize,
    max: usize,
    /// `free[i]` holds buffers of `min << i` bytes (the last class may be `max`).
    free: Vec<Vec<Box<[u8]>>>,
}

impl RecvPool {
    /// A pool of sizes from `min` to `max` bytes (`min` is raised to `max` if larger).
    pub(crate) fn new(min: usize, max: usize) -> RecvPool {
        let max = max.max(1);
        let min = min.clamp(1, max);
        let mut classes = 1;
        while (min << (classes - 1)) < max {
            classes += 1;
        }
        RecvPool {
            min,
            max,
            free: (0..classes).map(|_| Vec::new()).collect(),
        }
    }

    /// The size of the buffer a new connection gets.
    pub(crate) fn initial(&self) -> usize {
        self.min
    }

    fn class(&self, size: usize) -> usize {
        let mut c = 0;
        while c + 1 < self.free.len() && (self.min << c) < size {
            c += 1;
        }
        c
    }

    fn class_size(&self, class: usize) -> usize {
        (self.min << class).min(self.max)
    }

    /// A buffer of (at least) `size` bytes, from the pool when one is free.
    pub(crate) fn get(&mut self, size: usize) -> Box<[u8]> {
        let class = self.class(size);
        self.free[class]
            .pop()
            .unwrap_or_else(|| vec![0u8; self.class_size(class)].into_boxed_slice())
    }

    /// Returns a buffer no operation uses any more.
    pub(crate) fn put(&mut self, buf: Box<[u8]>) {
        let class = self.class(buf.len());
        if self.class_size(class) != buf.len() {
            return; // not one of ours: let it go
        }
        if self.free[class].len() * buf.len() < POOL_BYTES_PER_CLASS {
            self.free[class].push(buf);
        }
    }

    /// The size the next receive should use after one that returned `got` bytes into a
    /// buffer of `cap` bytes.
    pub(crate) fn next_size(&self, cap: usize, got: usize) -> usize {
        if got >= cap {
            (cap * 4).min(self.max)
        } else if got <= cap / 8 && cap > self.min {
            (cap / 2).max(self.min)
        } else {
            cap
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_on_full_reads_shrinks_on_small_ones_and_recycles() {
        let mut pool = RecvPool::new(1024, 64 * 1024);
        assert_eq!(pool.initial(), 1024);
        assert_eq!(pool.next_size(1024, 1024), 4096);
        assert_eq!(pool.next_size(16384, 16384), 64 * 1024);
        assert_eq!(pool.next_size(65536, 65536), 65536, "capped at read_buffer");
        assert_eq!(pool.next_size(4096, 100), 2048);
        assert_eq!(pool.next_size(1024, 1), 1024, "never below the minimum");
        assert_eq!(pool.next_size(4096, 3000), 4096);

        let b = pool.get(4096);
        assert_eq!(b.len(), 4096);
        let p = b.as_ptr();
        pool.put(b);
        let again = pool.get(4096);
        assert_eq!(again.as_ptr(), p, "reused from the pool");
        // A maximum that is not a power-of-two multiple of the minimum is its own class.
        let mut odd = RecvPool::new(1000, 3000);
        assert_eq!(odd.get(3000).len(), 3000);
        assert_eq!(odd.next_size(2000, 2000), 3000);
    }
}
