//! glommio 0.9.0 leaks one eventfd per executor (DataDog/glommio#448): identified exactly
//! and recorded as a known leak, never closed.
//!
//! Every glommio task header holds an `Arc` of its executor's sleep notifier, and glommio's
//! `RawTask::destroy` frees a task without dropping its header. Each task ever spawned thus
//! leaks one strong count of the notifier, so after the first task (`LocalExecutor::run`
//! spawns one) the notifier, and the eventfd it owns, outlive the executor forever: one
//! descriptor per shard per server. A server runs in its own process and starts its shards
//! once, so that is one descriptor per shard for the life of the process.
//!
//! Closing it ourselves is not safe. glommio still references the descriptor number: a
//! late wake-up (a waker of this executor's tasks, glommio's blocking thread finishing a
//! call) would `write()` 8 bytes into whatever file next got that number, likely a client
//! socket, and a glommio that fixed the leak would close it again, possibly another
//! thread's eventfd. So the descriptor stays open, and the process's descriptor-leak
//! checks account for it through [`backend_api::known_leaks`]:
//!
//! * **Identity.** The notifier's eventfd is the one eventfd `LocalExecutorBuilder::make`
//!   creates. The open eventfds are listed, by the kernel's `eventfd-id` (unique among open
//!   eventfds) from `/proc/self/fdinfo`, before and after `make`, with glommio executor
//!   creation serialised in this process. Exactly one new id is the notifier; anything else (another thread
//!   created an eventfd meanwhile, or a kernel without `eventfd-id`) records nothing, and
//!   the leak checks then report the descriptor.
//! * **Still leaked.** After the executor is dropped, the descriptor is recorded only if it
//!   still carries the same `eventfd-id`: a glommio that closes it is not excused.
//!
//! The glommio dependency is pinned to `=0.9.0` because this reasons about its internals.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::Mutex;

/// Serialises executor creation so that two shards starting at once do not see each
/// other's notifier.
static MAKE: Mutex<()> = Mutex::new(());

/// What the record says about the descriptor.
const WHY: &str = "glommio 0.9.0 executor sleep-notifier eventfd, never closed by glommio \
                   (DataDog/glommio#448); still referenced by glommio, so not closed here";

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
    /// Records the notifier as a known leak if it outlived its executor. Call after the
    /// executor was dropped. Returns whether it recorded it.
    pub(crate) fn record_if_leaked(self) -> bool {
        eventfd_id(self.fd) == Some(self.id) && backend_api::known_leaks::record(self.fd, WHY)
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
