//! Ring setup for a feature set: the builder (the one place setup flags are chosen), what
//! is registered after it (ring fd, NAPI, the fixed file table), and errors that say what is
//! missing, which Linux added it, and how to fix limits.
//!
//! # Locked memory
//!
//! Which io_uring memory counts against `RLIMIT_MEMLOCK` changed twice:
//! - up to Linux 5.11 the SQ/CQ rings and the SQE array were charged to `RLIMIT_MEMLOCK`;
//! - Linux 5.12 to 6.13 charged them to the memory cgroup instead (`GFP_KERNEL_ACCOUNT`),
//!   so only registered fixed buffers (which these backends do not use) counted;
//! - since Linux 6.14 rings, SQEs and provided-buffer rings are io_uring "memory regions",
//!   and `io_create_region()` charges their pages to `RLIMIT_MEMLOCK` again (as well as to
//!   the memory cgroup). Verified on 6.18: as an unprivileged user with `ulimit -l 64`, a
//!   1024-entry ring fails with `ENOMEM` and a 256-entry one succeeds.
//!
//! The charge is per *user* (all that user's rings in all processes), is skipped for
//! processes with `CAP_IPC_LOCK` (root has it), and is released asynchronously after a
//! ring is closed. The buffers a provided-buffer ring points at are plain memory, not
//! locked. [`locked_bytes`] estimates one shard's charge.

use std::io;

use backend_api::Limits;
use io_uring::{types, Builder, IoUring, Submitter};

use crate::features::{Feature, Features};
use crate::{SqThread, Tuning};

/// The ring builder for `features`: the one place setup flags are chosen. `core` is the
/// shard's core (for SQ thread placement); `None` leaves the SQ thread unbound.
pub(crate) fn builder(features: Features, tuning: &Tuning, core: Option<usize>) -> Builder {
    let mut b = IoUring::builder();
    b.setup_cqsize(tuning.cq_entries.max(tuning.sq_entries));
    if features.has(Feature::Coop) {
        b.setup_coop_taskrun();
    }
    if features.has(Feature::Single) {
        b.setup_single_issuer();
    }
    if features.has(Feature::Defer) {
        // Completion work runs only when we enter the kernel to wait, batched, never
        // interrupting the loop (it subsumes COOP_TASKRUN).
        b.setup_defer_taskrun();
    }
    if features.has(Feature::Sqpoll) {
        b.setup_sqpoll(tuning.sq_thread_idle_ms);
        let cpu = match tuning.sq_thread {
            SqThread::SameCore => core.map(|c| c as u32),
            SqThread::Cpu(c) => Some(c),
            SqThread::Unbound => None,
        };
        if let Some(cpu) = cpu {
            b.setup_sqpoll_cpu(cpu);
        }
    }
    b
}

/// Most fixed file slots a shard registers (`fixed`): its connection limit, capped by the
/// descriptor limit (the kernel refuses a table larger than `RLIMIT_NOFILE`).
pub(crate) fn fixed_slots(limits: &Limits) -> u32 {
    let nofile = backend_api::rlimit::nofile().map_or(1024, |(soft, _)| soft);
    let want = limits.max_connections.saturating_add(16) as u64;
    want.min(nofile).clamp(1, u32::MAX as u64) as u32
}

/// What a feature set registers on a new ring: the ring fd (`ringfd`), NAPI busy polling
/// (`napi`), the fixed file table (`fixed`).
pub(crate) fn register(
    submitter: &mut Submitter<'_>,
    features: Features,
    limits: &Limits,
    napi_usec: Option<u32>,
) -> io::Result<()> {
    let context = |what: &'static str| {
        move |e: io::Error| io::Error::new(e.kind(), format!("registering {what}: {e}"))
    };
    if features.has(Feature::RingFd) {
        submitter.register_ring_fd().map_err(context(
            "the ring fd (IORING_REGISTER_RING_FDS, Linux 5.18)",
        ))?;
    }
    if let Some(usec) = napi_usec {
        let mut napi = types::Napi::new()
            .set_busy_poll_timeout(usec)
            .set_prefer_busy_poll(true);
        submitter.register_napi(&mut napi).map_err(context(
            "NAPI busy polling (IORING_REGISTER_NAPI, Linux 6.9)",
        ))?;
    }
    if features.has(Feature::Fixed) {
        submitter
            .register_files_sparse(fixed_slots(limits))
            .map_err(context(
                "a sparse fixed file table (Linux 5.19); raise ulimit -n",
            ))?;
    }
    Ok(())
}

/// Estimated bytes one shard's rings pin and charge to `RLIMIT_MEMLOCK` (where the kernel
/// charges them, see the module docs): SQE array, SQ/CQ rings, buffer ring descriptors.
pub fn locked_bytes(features: impl Into<Features>, tuning: &Tuning) -> usize {
    let features = features.into();
    let page = 4096usize;
    let round = |n: usize| n.div_ceil(page) * page;
    let sq = tuning.sq_entries.next_power_of_two() as usize;
    let cq = (tuning.cq_entries.max(tuning.sq_entries)).next_power_of_two() as usize;
    // struct io_rings is a few hundred bytes before the CQE array; the SQ index array
    // follows the CQEs.
    let rings = round(512 + cq * 16 + sq * 4);
    let sqes = round(sq * 64);
    let bufring = if features.buffer_ring() {
        round(tuning.buf_ring_entries as usize * 16)
    } else {
        0
    };
    rings + sqes + bufring
}

/// The running kernel's release string and `(major, minor)`.
pub(crate) fn kernel() -> (String, Option<(u32, u32)>) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().ok());
    let version = match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => Some((a, b)),
        _ => None,
    };
    (release, version)
}

/// True when this kernel charges ring memory to `RLIMIT_MEMLOCK` (≤ 5.11, ≥ 6.14).
pub(crate) fn kernel_charges_memlock(version: Option<(u32, u32)>) -> bool {
    match version {
        Some(v) => !((5, 12)..(6, 14)).contains(&v),
        None => true,
    }
}

/// True when the process has `CAP_IPC_LOCK` (exempt from the memlock charge).
pub(crate) fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// The soft `RLIMIT_MEMLOCK` in bytes (`None` when unlimited or unreadable).
pub(crate) fn memlock_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we pass.
    let r = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    (r == 0 && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// Turns a failed ring setup into an error that names the cause and the fix.
pub(crate) fn explain_setup_error(
    e: io::Error,
    features: Features,
    tuning: &Tuning,
    shards: usize,
) -> io::Error {
    let (release, version) = kernel();
    let msg = match e.raw_os_error() {
        Some(libc::ENOMEM) => {
            let need = locked_bytes(features, tuning);
            let limit = memlock_limit().map_or("unlimited".into(), |l| format!("{} KiB", l / 1024));
            if kernel_charges_memlock(version) && !has_cap_ipc_lock() {
                format!(
                    "creating the io_uring failed with ENOMEM: Linux {release} charges ring \
                     memory to RLIMIT_MEMLOCK (about {} KiB per shard, {} KiB for {shards} \
                     shards, shared with this user's other rings), and the limit is {limit}. \
                     Fix: raise it (`ulimit -l unlimited`, LimitMEMLOCK=infinity in a systemd \
                     unit, `memlock` in /etc/security/limits.conf), grant CAP_IPC_LOCK, or \
                     run fewer shards",
                    need / 1024,
                    need * shards / 1024
                )
            } else {
                format!(
                    "creating the io_uring failed with ENOMEM (ring memory about {} KiB per \
                     shard is charged to the memory cgroup on Linux {release}; RLIMIT_MEMLOCK \
                     is {limit}): free memory or raise the cgroup's memory.max",
                    need / 1024
                )
            }
        }
        Some(libc::EPERM) => {
            match std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                .map(|s| s.trim().to_string())
                .as_deref()
            {
                Ok("1") => {
                    let group = std::fs::read_to_string("/proc/sys/kernel/io_uring_group")
                        .map(|s| s.trim().to_string())
                        .unwrap_or_else(|_| "?".into());
                    format!(
                        "io_uring is restricted (kernel.io_uring_disabled = 1): only \
                         CAP_SYS_ADMIN or members of group {group} (kernel.io_uring_group) may \
                         create rings. Fix: sysctl -w kernel.io_uring_disabled=0, or run as a \
                         member of that group"
                    )
                }
                _ => "creating an io_uring was refused (EPERM): a seccomp filter (container \
                      runtimes block io_uring by default) or an LSM forbids it. Fix: allow \
                      io_uring_setup/io_uring_enter/io_uring_register in the profile"
                    .into(),
            }
        }
        Some(libc::ENOSYS) => format!(
            "io_uring_setup does not exist on Linux {release} (io_uring needs Linux 5.1 and \
             CONFIG_IO_URING=y), or a seccomp filter hides it"
        ),
        Some(libc::EINVAL) => format!(
            "Linux {release} refused the io_uring setup flags of {} ({}): {e}",
            features.name(),
            flags_description(features)
        ),
        _ => format!("creating the io_uring for {} failed: {e}", features.name()),
    };
    io::Error::new(e.kind(), msg)
}

fn flags_description(features: Features) -> String {
    let mut flags = vec!["IORING_SETUP_CQSIZE"];
    for (f, flag) in [
        (Feature::Coop, "COOP_TASKRUN (Linux 5.19)"),
        (Feature::Single, "SINGLE_ISSUER (Linux 6.0)"),
        (Feature::Defer, "DEFER_TASKRUN (Linux 6.1)"),
        (Feature::Sqpoll, "SQPOLL | SQ_AFF"),
    ] {
        if features.has(f) {
            flags.push(flag);
        }
    }
    flags.join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Variant;

    #[test]
    fn memlock_charging_follows_kernel_history() {
        assert!(kernel_charges_memlock(Some((5, 11))));
        assert!(!kernel_charges_memlock(Some((5, 12))));
        assert!(!kernel_charges_memlock(Some((6, 13))));
        assert!(kernel_charges_memlock(Some((6, 14))));
        assert!(kernel_charges_memlock(Some((6, 18))));
    }

    #[test]
    fn locked_estimate_counts_rings_and_buffer_ring() {
        let t = Tuning::default();
        let one = locked_bytes(Variant::OneShot, &t);
        let multi = locked_bytes(Variant::Multishot, &t);
        // 1024 SQEs × 64 B = 64 KiB, 8192 CQEs × 16 B = 128 KiB (+ SQ array).
        assert!(one >= (64 + 128) * 1024, "{one}");
        assert_eq!(multi - one, 4096, "256 descriptors × 16 B");
    }

    #[test]
    fn enomem_names_memlock_and_the_fix_where_it_applies() {
        let msg = explain_setup_error(
            io::Error::from_raw_os_error(libc::ENOMEM),
            Variant::Multishot.features(),
            &Tuning::default(),
            4,
        )
        .to_string();
        assert!(msg.contains("ENOMEM"), "{msg}");
        if kernel_charges_memlock(kernel().1) && !has_cap_ipc_lock() {
            assert!(
                msg.contains("RLIMIT_MEMLOCK") && msg.contains("ulimit -l"),
                "{msg}"
            );
        } else {
            assert!(
                msg.contains("memory cgroup") || msg.contains("RLIMIT_MEMLOCK"),
                "{msg}"
            );
        }
    }
}
