//! A workaround for glommio 0.9.0 leaking one eventfd per executor (DataDog/glommio#448).
//!
//! Every glommio task header holds an `Arc` of its executor's sleep notifier, and glommio's
//! `RawTask::destroy` frees a task without dropping its header. Each task ever spawned thus
//! leaks one strong count of the notifier, so after the first task (`LocalExecutor::run`
//! spawns one) the notifier, and the eventfd it owns, outlive the executor forever: one
//! descriptor per shard per server. A long-lived `harness serve` would not notice; the
//! conformance suite's descriptor count after a stop does.
//!
//! The workaround closes that eventfd after the shard ends, when nothing can use it any
//! more, and only when it is certainly glommio's:
//!
//! * **Identity.** The notifier's eventfd is the one eventfd `LocalExecutorBuilder::make`
//!   creates. The open eventfds are listed, by the kernel's unique `eventfd-id` from
//!   `/proc/self/fdinfo`, before and after `make`, with glommio executor creation serialised
//!   in this process. Exactly one new id is the notifier; anything else (another thread
//!   created an eventfd meanwhile, or a kernel without `eventfd-id`) skips the workaround
//!   and the descriptor leaks as before.
//! * **No user left.** The notifier is only used by the executor (dropped by then), by
//!   glommio's blocking-pool thread (which notifies after each blocking call and exits once
//!   the executor is gone; the shard waits until that thread has exited), and by wakers of
//!   the executor's tasks held on other threads (this backend never hands one out). Its
//!   `Drop` can never run because of the leaked counts, so nothing else will close it.
//! * **Still the same file.** Right before closing, the descriptor must still carry the
//!   same `eventfd-id`; if glommio ever closed it (a fixed glommio), it is left alone.
//!
//! The glommio dependency is pinned to `=0.9.0` because this reasons about its internals.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Serialises executor creation so that two shards starting at once do not see each
/// other's notifier.
static MAKE: Mutex<()> = Mutex::new(());

/// How long to wait for glommio's blocking thread to exit before giving up the workaround.
const THREAD_EXIT_WAIT: Duration = Duration::from_secs(2);

/// glommio's notifier eventfd, identified at executor creation.
#[derive(Debug)]
pub(crate) struct NotifierFd {
    fd: RawFd,
    id: u64,
}

/// Runs `prepare`, then `make` (which builds the executor), and identifies the eventfd
/// `make` created. Both run under a process-wide lock, so that the eventfds other shards
/// create while starting (`prepare`) never fall into another shard's window.
pub(crate) fn make_identified<P, T>(
    prepare: impl FnOnce() -> P,
    make: impl FnOnce() -> T,
) -> (P, T, Option<NotifierFd>) {
    let _serial = MAKE.lock().unwrap_or_else(|p| p.into_inner());
    let prepared = prepare();
    let before = eventfds();
    let made = make();
    let Some(before) = before else {
        return (prepared, made, None);
    };
    let Some(after) = eventfds() else {
        return (prepared, made, None);
    };
    let mut new = after
        .into_iter()
        .filter(|(_, id)| !before.values().any(|b| b == id));
    let notifier = match (new.next(), new.next()) {
        (Some((fd, id)), None) => Some(NotifierFd { fd, id }),
        _ => None,
    };
    (prepared, made, notifier)
}

impl NotifierFd {
    /// Closes the leaked eventfd once glommio's blocking thread `blocking_tid` has exited.
    /// Call only after the executor was dropped.
    pub(crate) fn close_leaked(self, blocking_tid: Option<libc::pid_t>) {
        let Some(tid) = blocking_tid else {
            return;
        };
        let task = format!("/proc/self/task/{tid}");
        let deadline = Instant::now() + THREAD_EXIT_WAIT;
        let mut pause = Duration::from_micros(50);
        while std::path::Path::new(&task).exists() {
            if Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
        if eventfd_id(self.fd) != Some(self.id) {
            return;
        }
        // SAFETY: `fd` is glommio's sleep-notifier eventfd (same kernel eventfd-id as when
        // `make` created it). Its owner is leaked by glommio 0.9.0 and can never drop or use
        // it again: the executor is dropped, the blocking thread that notifies it has
        // exited, and no waker of this executor's tasks lives on another thread (see the
        // module docs). Closing it releases the descriptor nothing else will ever close.
        unsafe { libc::close(self.fd) };
    }
}

/// Open eventfds of this process by descriptor, with their kernel `eventfd-id`. `None`
/// when /proc is unreadable or the kernel does not report ids.
fn eventfds() -> Option<HashMap<RawFd, u64>> {
    let mut out = HashMap::new();
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        let is_eventfd =
            std::fs::read_link(entry.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:[eventfd]");
        if !is_eventfd {
            continue;
        }
        // Closed meanwhile by another thread: not ours, skip it.
        if let Some(id) = eventfd_id(fd) {
            out.insert(fd, id);
        } else if std::path::Path::new(&format!("/proc/self/fdinfo/{fd}")).exists() {
            // An eventfd without an id: this kernel does not report them.
            return None;
        }
    }
    Some(out)
}

/// The kernel's unique id of the eventfd behind `fd`, if it is one.
fn eventfd_id(fd: RawFd) -> Option<u64> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("eventfd-id:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    fn new_eventfd() -> OwnedFd {
        // SAFETY: eventfd takes no pointers.
        let fd = unsafe { backend_api::syscall!(eventfd(0, libc::EFD_CLOEXEC)) }.unwrap();
        // SAFETY: eventfd just returned this descriptor.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    #[test]
    fn identifies_exactly_one_new_eventfd_and_nothing_else() {
        let _serial = crate::tests::SERIAL
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (before, fd, found) = make_identified(new_eventfd, new_eventfd);
        let found = found.expect("one new eventfd");
        assert_eq!(found.fd, fd.as_raw_fd());
        assert_ne!(
            found.fd,
            before.as_raw_fd(),
            "prepared ones are not candidates"
        );
        assert_eq!(eventfd_id(fd.as_raw_fd()), Some(found.id));
        let (_, (_a, _b), two) = make_identified(|| (), || (new_eventfd(), new_eventfd()));
        assert!(two.is_none(), "two new eventfds are ambiguous");
        let (_, _, none) = make_identified(|| (), || ());
        assert!(none.is_none());
    }
}
