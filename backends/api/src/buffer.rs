//! Per-connection output buffering shared by the backends that own their write path.

/// Capacity an output buffer may keep after it drains; larger ones are released so that a
/// connection that once streamed megabytes does not hold them while idle.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Bytes a connection still has to write: sessions append at the back, the backend
/// writes from the front.
#[derive(Debug, Default)]
pub struct OutBuf {
    buf: Vec<u8>,
    pos: usize,
}

impl OutBuf {
    /// An empty buffer that has allocated nothing.
    pub const fn new() -> OutBuf {
        OutBuf {
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// The bytes still to write.
    #[inline]
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Number of bytes still to write.
    #[inline]
    pub fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// True when nothing is left to write.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// The vector sessions append to. Compacts first when most of it was already written.
    #[inline]
    pub fn tail(&mut self) -> &mut Vec<u8> {
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        &mut self.buf
    }

    /// Marks `n` bytes as written. Releases large capacity once everything is written.
    #[inline]
    pub fn advance(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf = Vec::new();
            }
        }
    }

    /// Bytes of heap this buffer holds (for memory accounting).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_and_drains_in_order() {
        let mut b = OutBuf::new();
        b.tail().extend_from_slice(b"hello ");
        b.advance(2);
        b.tail().extend_from_slice(b"world");
        assert_eq!(b.pending(), b"llo world");
        b.advance(9);
        assert!(b.is_empty());
        b.tail().extend_from_slice(&vec![7u8; 1 << 20]);
        b.advance(1 << 20);
        assert_eq!(b.capacity(), 0, "large capacity is released once drained");
    }
}
