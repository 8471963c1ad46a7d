//! Descriptors a backend knowingly leaves open because a dependency still references them
//! (an upstream bug), each identified exactly, so that a descriptor-leak check can account
//! for those and still catch every other leak.
//!
//! Closing such a descriptor is not safe: the number would be reused by the next socket
//! or eventfd the process opens, and a late use by the dependency (a wake-up `write`, its
//! eventual `close`) would then hit that unrelated file. Leaving it open costs one
//! descriptor; recording it here keeps the leak visible and bounded.
//!
//! A record holds the descriptor's identity when it was recorded: the `/proc/self/fd` link
//! target and, for an eventfd, its kernel `eventfd-id`. [`still_open`] only returns the
//! records whose descriptor still has that identity, so a record does not excuse another
//! file that later got the same number. (The kernel hands a closed eventfd's id to a later
//! eventfd: a record of an eventfd that was closed anyway could excuse a new eventfd that
//! got both its number and its id. For the descriptors recorded here, which stay open for
//! the life of the process, that cannot happen.)

use std::os::fd::RawFd;
use std::sync::Mutex;

/// One descriptor left open on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownLeak {
    /// The descriptor number.
    pub fd: RawFd,
    /// What it was when recorded: link target and, for an eventfd, its `eventfd-id`.
    pub identity: String,
    /// Who holds it and why it cannot be closed (names the upstream bug).
    pub why: &'static str,
}

static RECORDED: Mutex<Vec<KnownLeak>> = Mutex::new(Vec::new());

fn recorded_lock() -> std::sync::MutexGuard<'static, Vec<KnownLeak>> {
    // Every update is one push: a poisoned list is still consistent.
    RECORDED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records `fd` as left open on purpose, for `why`. Returns false (and records nothing)
/// when `fd` is not open or cannot be identified.
pub fn record(fd: RawFd, why: &'static str) -> bool {
    let Some(identity) = identity(fd) else {
        return false;
    };
    recorded_lock().push(KnownLeak { fd, identity, why });
    true
}

/// Every record so far, in the order recorded.
pub fn recorded() -> Vec<KnownLeak> {
    recorded_lock().clone()
}

/// The records whose descriptor is still open and still the same file.
pub fn still_open() -> Vec<KnownLeak> {
    recorded()
        .into_iter()
        .filter(|l| identity(l.fd).as_deref() == Some(l.identity.as_str()))
        .collect()
}

/// What `fd` is: its `/proc/self/fd` link target, plus the `eventfd-id` for an eventfd
/// (every eventfd shares one anonymous inode, so the link alone does not tell two apart).
pub fn identity(fd: RawFd) -> Option<String> {
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    let mut id = target.to_string_lossy().into_owned();
    if id == "anon_inode:[eventfd]" {
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
        let eventfd_id = info
            .lines()
            .find_map(|l| l.strip_prefix("eventfd-id:"))?
            .trim();
        id.push(' ');
        id.push_str(eventfd_id);
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    fn eventfd() -> OwnedFd {
        // SAFETY: eventfd takes no pointers.
        let fd = unsafe { crate::syscall!(eventfd(0, libc::EFD_CLOEXEC)) }.unwrap();
        // SAFETY: eventfd just returned this descriptor and nothing else owns it.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    #[test]
    fn a_record_excuses_only_the_same_file() {
        // A file of its own: whatever takes its number after it closes is another file.
        let path = std::env::temp_dir().join(format!("ringside-known-leak-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let fd = file.as_raw_fd();
        assert!(record(fd, "test"));
        assert!(still_open().iter().any(|l| l.fd == fd));
        drop(file);
        std::fs::remove_file(&path).unwrap();
        assert!(
            !still_open().iter().any(|l| l.fd == fd && l.why == "test"),
            "a closed record is no longer excused"
        );
        assert!(
            !record(-1, "not open"),
            "a descriptor that is not open cannot be recorded"
        );
    }

    #[test]
    fn two_live_eventfds_have_different_identities() {
        let (a, b) = (eventfd(), eventfd());
        let (ia, ib) = (
            identity(a.as_raw_fd()).unwrap(),
            identity(b.as_raw_fd()).unwrap(),
        );
        assert!(ia.starts_with("anon_inode:[eventfd] "), "{ia}");
        assert_ne!(ia, ib);
    }
}
