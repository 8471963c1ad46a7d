//! Descriptor limits: every connection costs a descriptor on each side.

use std::io;

/// Where the kernel caps RLIMIT_NOFILE.
const NR_OPEN: &str = "/proc/sys/fs/nr_open";

/// Current (soft, hard) RLIMIT_NOFILE.
pub fn nofile() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a live rlimit the kernel writes; nothing else borrows it.
    unsafe { crate::syscall!(getrlimit(libc::RLIMIT_NOFILE, &mut lim)) }?;
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Raises RLIMIT_NOFILE as far as this process may: the soft limit to the hard limit, and,
/// where the process is privileged (CAP_SYS_RESOURCE), both up to `fs.nr_open`.
/// Returns the soft limit in force afterwards.
pub fn raise_nofile() -> io::Result<u64> {
    let (soft, hard) = nofile()?;
    let nr_open = std::fs::read_to_string(NR_OPEN)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    for target in [nr_open.max(hard), hard] {
        if target <= soft {
            return Ok(soft);
        }
        let lim = libc::rlimit {
            rlim_cur: target,
            rlim_max: target,
        };
        // SAFETY: `lim` is a live, initialised rlimit the kernel only reads.
        if unsafe { crate::syscall!(setrlimit(libc::RLIMIT_NOFILE, &lim)) }.is_ok() {
            return Ok(target);
        }
    }
    Ok(soft)
}
