//! What glommio needs from the machine: io_uring allowed and enough `RLIMIT_MEMLOCK`.
//!
//! Every check says what is missing and the command that fixes it.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use backend_api::Unsupported;

use crate::{IO_MEMORY, RING_DEPTH};

/// glommio's reactor refuses to start below this `RLIMIT_MEMLOCK` (its own check, applied
/// even to root).
pub const GLOMMIO_MEMLOCK_FLOOR: u64 = 512 * 1024;

/// io_uring rings each glommio executor creates: main, latency and poll.
const RINGS_PER_EXECUTOR: u64 = 3;

/// Bytes io_uring charges for one ring of [`RING_DEPTH`] = 128 entries: the SQ/CQ ring
/// (256 CQEs of 16 bytes plus the SQ index array, 2 pages) and 128 SQEs of 64 bytes
/// (2 pages). Measured on 6.18 as non-root: 64 such rings fit in 1 MiB. Kernels before 5.12
/// charge rings to `RLIMIT_MEMLOCK`, and so do recent ones again (rings became "regions");
/// counting them everywhere errs on the safe side.
const RING_BYTES: u64 = 16 * 1024;

/// `RLIMIT_MEMLOCK` bytes one shard pins without `CAP_IPC_LOCK`: 3 rings × 16 KiB plus its
/// [`IO_MEMORY`] registered once per ring, 3 × 64 KiB: 240 KiB.
pub const MEMLOCK_PER_SHARD: u64 = RINGS_PER_EXECUTOR * (RING_BYTES + IO_MEMORY as u64);

/// `CAP_IPC_LOCK`: with it io_uring charges nothing to `RLIMIT_MEMLOCK`.
const CAP_IPC_LOCK: u32 = 14;

/// The oldest kernel glommio 0.9 supports.
const MIN_KERNEL: (u32, u32) = (5, 8);

/// Where Linux 6.6+ can switch io_uring off.
const IO_URING_DISABLED: &str = "/proc/sys/kernel/io_uring_disabled";

/// Bytes of `RLIMIT_MEMLOCK` a server of `shards` glommio shards needs.
///
/// glommio insists on at least [`GLOMMIO_MEMLOCK_FLOOR`] in every case. Without
/// `CAP_IPC_LOCK` each shard also pins [`MEMLOCK_PER_SHARD`] (240 KiB). The limit applies
/// per process, but the kernel counts pinned pages per user, across all of that user's
/// processes, and releases a ring's pages only some time after it is closed. The default
/// 8 MiB limit covers 34 shards.
pub fn memlock_need(shards: usize, cap_ipc_lock: bool) -> u64 {
    if cap_ipc_lock {
        return GLOMMIO_MEMLOCK_FLOOR;
    }
    (shards.max(1) as u64 * MEMLOCK_PER_SHARD).max(GLOMMIO_MEMLOCK_FLOOR)
}

/// The `ulimit -l` argument (KiB, rounded up) that grants `bytes`.
pub fn ulimit_kib(bytes: u64) -> u64 {
    bytes.div_ceil(1024)
}

/// True when this process has `CAP_IPC_LOCK` in its effective set.
pub fn has_cap_ipc_lock() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// Runs every check for a server using as many shards as this process has usable cores.
pub(crate) fn probe() -> Result<(), Unsupported> {
    let kernel = kernel_version().map_err(|e| Unsupported::new(format!("uname failed: {e}")))?;
    if kernel < MIN_KERNEL {
        return Err(Unsupported::new(format!(
            "glommio needs Linux {}.{} or newer; this kernel is {}.{}",
            MIN_KERNEL.0, MIN_KERNEL.1, kernel.0, kernel.1
        )));
    }
    check_io_uring_disabled()?;
    // A server may use every usable core; the need is for that many shards.
    let shards = backend_api::runner::usable_cores().len();
    let need = memlock_need(shards, has_cap_ipc_lock());
    let limit = memlock_limit();
    trial_io_uring_setup(limit, need)?;
    check_memlock(limit, need, shards)
}

/// `kernel.io_uring_disabled`: 0 allows io_uring, 1 only for `kernel.io_uring_group`
/// members and CAP_SYS_ADMIN (the trial setup finds out which we are), 2 for nobody.
fn check_io_uring_disabled() -> Result<(), Unsupported> {
    // Kernels before 6.6 have no such switch: io_uring is allowed.
    let Ok(value) = std::fs::read_to_string(IO_URING_DISABLED) else {
        return Ok(());
    };
    if value.trim() == "2" {
        return Err(Unsupported::new(
            "io_uring is disabled on this machine (kernel.io_uring_disabled = 2). \
             Fix: sysctl -w kernel.io_uring_disabled=0",
        ));
    }
    Ok(())
}

/// `struct io_uring_params`: 10 words of parameters, then the SQ and CQ ring offsets.
#[repr(C)]
struct IoUringParams {
    words: [u32; 30],
}

/// Creates and closes a small ring, which is what every glommio executor does first.
fn trial_io_uring_setup(limit: Option<u64>, need: u64) -> Result<(), Unsupported> {
    let mut params = IoUringParams { words: [0; 30] };
    // SAFETY: io_uring_setup reads and writes exactly one `struct io_uring_params`
    // (120 bytes), which `params` is, and returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_io_uring_setup,
            RING_DEPTH as libc::c_uint,
            &mut params as *mut IoUringParams,
        )
    };
    if fd >= 0 {
        // SAFETY: the syscall just returned this descriptor and nothing else owns it.
        drop(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) });
        return Ok(());
    }
    let err = io::Error::last_os_error();
    let reason = match err.raw_os_error() {
        Some(libc::ENOSYS) => {
            "this kernel has no io_uring (built without CONFIG_IO_URING); glommio cannot run"
                .to_string()
        }
        Some(libc::EPERM) | Some(libc::EACCES) => format!(
            "io_uring_setup was refused ({err}): kernel.io_uring_disabled = 1 and this user is \
             not in kernel.io_uring_group, or a seccomp profile (Docker's default) blocks \
             io_uring. Fix: sysctl -w kernel.io_uring_disabled=0, or run the container with \
             --security-opt seccomp=unconfined"
        ),
        Some(libc::ENOMEM) => format!(
            "a trial io_uring_setup failed with ENOMEM: RLIMIT_MEMLOCK is {} and io_uring \
             charges its rings to it (counted per user, across all of this user's processes). \
             Fix: ulimit -l {}",
            limit.map_or("unlimited".to_string(), |l| format!("{} KiB", l / 1024)),
            ulimit_kib(need)
        ),
        _ => format!("a trial io_uring_setup failed: {err}"),
    };
    Err(Unsupported::new(reason))
}

/// The soft `RLIMIT_MEMLOCK` in bytes, `None` when unlimited or unreadable.
fn memlock_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `struct rlimit` to a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return None;
    }
    (lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// Compares the limit with what `shards` shards need.
pub(crate) fn check_memlock(
    limit: Option<u64>,
    need: u64,
    shards: usize,
) -> Result<(), Unsupported> {
    match limit {
        Some(limit) if limit < need => Err(Unsupported::new(format!(
            "RLIMIT_MEMLOCK is {} KiB but glommio needs {} KiB for a server on all {shards} \
             usable core(s): its reactor refuses to start below {} KiB, and without \
             CAP_IPC_LOCK each shard pins {} KiB of io_uring rings and registered memory. \
             Fix: ulimit -l {}",
            limit / 1024,
            ulimit_kib(need),
            GLOMMIO_MEMLOCK_FLOOR / 1024,
            MEMLOCK_PER_SHARD / 1024,
            ulimit_kib(need)
        ))),
        _ => Ok(()),
    }
}

/// `(major, minor)` of the running kernel.
pub(crate) fn kernel_version() -> io::Result<(u32, u32)> {
    // SAFETY: utsname is plain bytes; all-zero is a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a live utsname the kernel fills; nothing else borrows it.
    unsafe { backend_api::syscall!(uname(&mut uts)) }?;
    let release: String = uts
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8 as char)
        .collect();
    Ok(parse_release(&release))
}

/// "6.18.44-foo" → (6, 18); unparsable parts count as 0.
fn parse_release(release: &str) -> (u32, u32) {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let mut next = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (next(), next())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memlock_need_has_glommios_floor_and_grows_per_shard() {
        assert_eq!(MEMLOCK_PER_SHARD, 240 * 1024);
        assert_eq!(memlock_need(1, false), GLOMMIO_MEMLOCK_FLOOR);
        assert_eq!(memlock_need(2, false), GLOMMIO_MEMLOCK_FLOOR);
        assert_eq!(memlock_need(8, false), 8 * 240 * 1024);
        assert_eq!(memlock_need(64, true), GLOMMIO_MEMLOCK_FLOOR);
        // The default non-root limit covers 34 shards.
        assert!(memlock_need(34, false) <= 8 << 20);
        assert!(memlock_need(35, false) > 8 << 20);
    }

    #[test]
    fn memlock_message_carries_the_exact_fix() {
        let need = memlock_need(16, false);
        let err = check_memlock(Some(64 * 1024), need, 16).unwrap_err();
        assert!(err.reason.contains("Fix: ulimit -l 3840"), "{}", err.reason);
        assert!(
            err.reason.contains("RLIMIT_MEMLOCK is 64 KiB"),
            "{}",
            err.reason
        );
        assert!(check_memlock(None, need, 16).is_ok());
        assert!(check_memlock(Some(8 << 20), need, 16).is_ok());
    }

    #[test]
    fn releases_parse() {
        assert_eq!(parse_release("6.18.44-fc-v782"), (6, 18));
        assert_eq!(parse_release("5.4.0"), (5, 4));
        assert_eq!(parse_release("garbage"), (0, 0));
        assert!(kernel_version().unwrap() >= (3, 0));
    }

    #[test]
    fn probe_passes_here() {
        // This machine runs glommio; if it ever cannot, the reason says why.
        if let Err(u) = probe() {
            panic!("glommio probe failed on the test machine: {}", u.reason);
        }
    }
}
