//! The stop signal: an eventfd every kind of event loop can wait on.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Fires once; stays fired. Cloning shares the same signal.
///
/// The eventfd becomes readable when the signal fires and stays readable forever, because
/// nobody reads it: epoll (either trigger mode), poll, an io_uring `PollAdd` and a glommio
/// reactor all see it. **Never read the fd**: one shard's read would hide the signal from
/// the others. Loops that cannot wait on an fd check [`StopSignal::is_fired`].
#[derive(Debug, Clone)]
pub struct StopSignal {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    fd: OwnedFd,
    fired: AtomicBool,
}

impl StopSignal {
    /// A new, unfired signal.
    pub fn new() -> io::Result<StopSignal> {
        // SAFETY: eventfd takes no pointers.
        let fd = unsafe { crate::syscall!(eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)) }?;
        // SAFETY: eventfd just returned this descriptor and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(StopSignal {
            inner: Arc::new(Inner {
                fd,
                fired: AtomicBool::new(false),
            }),
        })
    }

    /// Fires the signal. Safe to call any number of times, from any thread, including a
    /// signal-handling thread.
    pub fn fire(&self) {
        if self.inner.fired.swap(true, Ordering::SeqCst) {
            return;
        }
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd we own. The counter starts at
        // 0 and is written once, so it cannot overflow (EAGAIN); nothing else can fail here.
        let _ = unsafe {
            libc::write(
                self.inner.fd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// True once [`StopSignal::fire`] was called.
    #[inline]
    pub fn is_fired(&self) -> bool {
        self.inner.fired.load(Ordering::Relaxed)
    }
}

impl AsRawFd for StopSignal {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fired_signal_is_pollable_by_many_waiters() {
        let stop = StopSignal::new().unwrap();
        let mut pfd = libc::pollfd {
            fd: stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is a live pollfd for the call (count 1); the kernel writes only revents.
        assert_eq!(unsafe { crate::syscall!(poll(&mut pfd, 1, 0)) }.unwrap(), 0);
        stop.clone().fire();
        stop.fire();
        assert!(stop.is_fired());
        for _ in 0..3 {
            pfd.revents = 0;
            // SAFETY: `pfd` is a live pollfd for the call (count 1); the kernel writes only revents.
            assert_eq!(unsafe { crate::syscall!(poll(&mut pfd, 1, 0)) }.unwrap(), 1);
        }
    }
}
