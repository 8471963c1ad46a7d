//! What each variant needs from the kernel, checked for real, and errors that say what is
//! missing, which Linux added it, and how to fix limits.
//!
//! [`check`] never trusts the version string alone: it reads
//! `/proc/sys/kernel/io_uring_disabled`, creates a ring, asks `IORING_REGISTER_PROBE`
//! for every opcode used, reads the feature bits, sets up a trial ring with exactly the
//! variant's flags and sizes (one trial per flag when that fails, to name the culprit),
//! and for the multishot variants registers a buffer ring and runs a multishot accept and
//! a multishot receive on a loopback connection. The kernel version appears only in the
//! messages, as "added in Linux X".
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
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use backend_api::Unsupported;
use io_uring::{cqueue, opcode, squeue, types, Builder, IoUring, Probe};

use crate::bufring::BufRing;
use crate::{SqThread, Tuning, Variant};

/// The ring builder for `variant`: the one place its setup flags are chosen. `core` is the
/// shard's core (for SQ thread placement); `None` leaves the SQ thread unbound.
pub(crate) fn builder(variant: Variant, tuning: &Tuning, core: Option<usize>) -> Builder {
    let mut b = IoUring::builder();
    b.setup_cqsize(tuning.cq_entries.max(tuning.sq_entries));
    match variant {
        Variant::OneShot => {}
        Variant::Multishot => {
            // DEFER_TASKRUN: completion work runs only when we enter the kernel to wait,
            // batched, never interrupting the loop (it subsumes COOP_TASKRUN).
            b.setup_single_issuer().setup_defer_taskrun();
        }
        Variant::Sqpoll => {
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
    }
    b
}

/// Estimated bytes one shard's rings pin and charge to `RLIMIT_MEMLOCK` (where the kernel
/// charges them, see the module docs): SQE array, SQ/CQ rings, buffer ring descriptors.
pub fn locked_bytes(variant: Variant, tuning: &Tuning) -> usize {
    let page = 4096usize;
    let round = |n: usize| n.div_ceil(page) * page;
    let sq = tuning.sq_entries.next_power_of_two() as usize;
    let cq = (tuning.cq_entries.max(tuning.sq_entries)).next_power_of_two() as usize;
    // struct io_rings is a few hundred bytes before the CQE array; the SQ index array
    // follows the CQEs.
    let rings = round(512 + cq * 16 + sq * 4);
    let sqes = round(sq * 64);
    let bufring = if variant.multishot() {
        round(tuning.buf_ring_entries as usize * 16)
    } else {
        0
    };
    rings + sqes + bufring
}

/// The running kernel's release string and `(major, minor)`.
fn kernel() -> (String, Option<(u32, u32)>) {
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
fn kernel_charges_memlock(version: Option<(u32, u32)>) -> bool {
    match version {
        Some(v) => !((5, 12)..(6, 14)).contains(&v),
        None => true,
    }
}

/// True when the process has `CAP_IPC_LOCK` (exempt from the memlock charge).
fn has_cap_ipc_lock() -> bool {
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
fn memlock_limit() -> Option<u64> {
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
    variant: Variant,
    tuning: &Tuning,
    shards: usize,
) -> io::Error {
    let (release, version) = kernel();
    let msg = match e.raw_os_error() {
        Some(libc::ENOMEM) => {
            let need = locked_bytes(variant, tuning);
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
            variant.name(),
            flags_description(variant)
        ),
        _ => format!("creating the io_uring for {} failed: {e}", variant.name()),
    };
    io::Error::new(e.kind(), msg)
}

fn flags_description(variant: Variant) -> &'static str {
    match variant {
        Variant::OneShot => "IORING_SETUP_CQSIZE",
        Variant::Multishot => {
            "IORING_SETUP_CQSIZE | SINGLE_ISSUER (Linux 6.0) | DEFER_TASKRUN (Linux 6.1)"
        }
        Variant::Sqpoll => "IORING_SETUP_CQSIZE | SQPOLL | SQ_AFF",
    }
}

/// A setup flag to try alone: its name, the Linux release that added it, and how to set
/// it on a builder (given the CPU for `SQ_AFF`).
type FlagTrial = (&'static str, &'static str, fn(&mut Builder, u32));

/// One thing a variant needs, and the Linux release that added it.
struct Need {
    what: &'static str,
    since: &'static str,
}

const OPCODES: [(u8, Need); 7] = [
    (
        opcode::PollAdd::CODE,
        Need {
            what: "IORING_OP_POLL_ADD",
            since: "5.1",
        },
    ),
    (
        opcode::Timeout::CODE,
        Need {
            what: "IORING_OP_TIMEOUT",
            since: "5.4",
        },
    ),
    (
        opcode::Accept::CODE,
        Need {
            what: "IORING_OP_ACCEPT",
            since: "5.5",
        },
    ),
    (
        opcode::AsyncCancel::CODE,
        Need {
            what: "IORING_OP_ASYNC_CANCEL",
            since: "5.5",
        },
    ),
    (
        opcode::Recv::CODE,
        Need {
            what: "IORING_OP_RECV",
            since: "5.6",
        },
    ),
    (
        opcode::Send::CODE,
        Need {
            what: "IORING_OP_SEND",
            since: "5.6",
        },
    ),
    (
        opcode::Close::CODE,
        Need {
            what: "IORING_OP_CLOSE",
            since: "5.6",
        },
    ),
];

fn missing(need: &Need) -> String {
    format!("{} (added in Linux {})", need.what, need.since)
}

/// Checks everything `variant` (as tuned) needs. `Err` says exactly what is missing.
///
/// The trials run on a short-lived thread of their own: when a ring that ran requests is
/// closed, the kernel's ring teardown queues task work on every thread that submitted to
/// it, which interrupts that thread's next blocking call with `EINTR` (a socket read with a
/// timeout, say). A thread that has exited cannot be interrupted.
pub fn check(variant: Variant, tuning: &Tuning) -> Result<(), Unsupported> {
    let tuning = tuning.clone();
    std::thread::Builder::new()
        .name("uring-probe".into())
        .spawn(move || check_here(variant, &tuning))
        .map_err(|e| Unsupported::new(format!("spawning the io_uring probe thread: {e}")))?
        .join()
        .unwrap_or_else(|_| Err(Unsupported::new("the io_uring probe panicked")))
}

fn check_here(variant: Variant, tuning: &Tuning) -> Result<(), Unsupported> {
    let (release, _) = kernel();
    let name = variant.name();
    let fail = |items: Vec<String>| {
        let alternative = if variant == Variant::OneShot {
            "epoll-et".to_string()
        } else {
            "uring".to_string()
        };
        Unsupported::new(format!(
            "{name} needs {}; this kernel is {release}. Upgrade the kernel or use {alternative}",
            items.join(", ")
        ))
    };

    if let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        if s.trim() == "2" {
            return Err(Unsupported::new(
                "io_uring is disabled system-wide (kernel.io_uring_disabled = 2). \
                 Fix: sysctl -w kernel.io_uring_disabled=0",
            ));
        }
    }

    // A plain ring first: if even that fails, nothing else can be learned.
    let plain: IoUring = IoUring::new(8)
        .map_err(|e| Unsupported::new(explain_setup_error(e, variant, tuning, 1).to_string()))?;
    let mut items = Vec::new();
    let mut probe = Probe::new();
    match plain.submitter().register_probe(&mut probe) {
        Ok(()) => {
            for (code, need) in &OPCODES {
                if !probe.is_supported(*code) {
                    items.push(missing(need));
                }
            }
        }
        Err(_) => items.push("IORING_REGISTER_PROBE (added in Linux 5.6)".into()),
    }
    let params = plain.params();
    if !params.is_feature_nodrop() {
        items.push("IORING_FEAT_NODROP (added in Linux 5.5)".into());
    }
    if !params.is_feature_fast_poll() {
        // Without it every socket operation that would block goes to an io-wq thread.
        items.push("IORING_FEAT_FAST_POLL (added in Linux 5.7)".into());
    }
    if !params.is_feature_ext_arg() {
        // The stop's drain waits with a deadline (a timeout argument to io_uring_enter).
        items.push("IORING_FEAT_EXT_ARG (added in Linux 5.11)".into());
    }
    if variant.sqpoll() && !params.is_feature_sqpoll_nonfixed() {
        items.push(
            "IORING_FEAT_SQPOLL_NONFIXED: SQPOLL without registered files (added in Linux 5.11)"
                .into(),
        );
    }
    drop(plain);

    // Setup flags, one trial each so the message names the one that is missing.
    let trials: &[FlagTrial] = match variant {
        Variant::OneShot => &[],
        Variant::Multishot => &[
            ("IORING_SETUP_SINGLE_ISSUER", "6.0", |b, _| {
                b.setup_single_issuer();
            }),
            ("IORING_SETUP_DEFER_TASKRUN", "6.1", |b, _| {
                b.setup_single_issuer().setup_defer_taskrun();
            }),
        ],
        Variant::Sqpoll => &[
            (
                "IORING_SETUP_SQPOLL for unprivileged users",
                "5.11",
                |b, _| {
                    b.setup_sqpoll(10);
                },
            ),
            ("IORING_SETUP_SQ_AFF", "5.11", |b, cpu| {
                b.setup_sqpoll(10).setup_sqpoll_cpu(cpu);
            }),
        ],
    };
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    let core = (cpu >= 0).then_some(cpu as usize);
    for (what, since, set) in trials {
        let mut b = IoUring::<squeue::Entry, cqueue::Entry>::builder();
        set(&mut b, core.unwrap_or(0) as u32);
        if let Err(e) = b.build(8) {
            if e.raw_os_error() == Some(libc::EINVAL) {
                items.push(format!("{what} (added in Linux {since})"));
            } else {
                return Err(Unsupported::new(
                    explain_setup_error(e, variant, tuning, 1).to_string(),
                ));
            }
        }
    }
    if !items.is_empty() {
        return Err(fail(items));
    }

    // The exact ring a shard builds (sizes included: this is where RLIMIT_MEMLOCK bites).
    // SQ_AFF is tried with the CPU this thread runs on.
    let mut ring = builder(variant, tuning, core)
        .build(tuning.sq_entries)
        .map_err(|e| Unsupported::new(explain_setup_error(e, variant, tuning, 1).to_string()))?;
    if variant.multishot() {
        if let Err(items) = trial_multishot(&mut ring, tuning) {
            return Err(fail(items));
        }
    }
    Ok(())
}

/// Runs a multishot accept and a multishot receive through a registered buffer ring on a
/// loopback connection. Returns what did not work.
fn trial_multishot(ring: &mut IoUring, tuning: &Tuning) -> Result<(), Vec<String>> {
    let io_err = |what: &str, e: io::Error| vec![format!("{what} (trial failed: {e})")];
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| io_err("a loopback listener", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| io_err("a loopback listener", e))?;
    let mut bufring = BufRing::new(2, 64, 1).map_err(|e| io_err("a buffer ring", e))?;
    let mut trial = Trial {
        ring,
        inflight: 0,
        accepted: None,
        more: [false; 3],
    };
    let result = trial.run(&listener, addr, &mut bufring, tuning);
    // Cancel and reap everything before the buffer ring may be unmapped.
    let drained = trial.drain();
    if drained {
        let _ = bufring.unregister(&trial.ring.submitter());
    } else {
        std::mem::forget(bufring); // the kernel may still use it
    }
    result
}

struct Trial<'r> {
    ring: &'r mut IoUring,
    inflight: u32,
    accepted: Option<OwnedFd>,
    /// Whether the accept (1) and the receive (2) are still armed.
    more: [bool; 3],
}

impl Trial<'_> {
    fn push(&mut self, entry: squeue::Entry) -> Result<(), Vec<String>> {
        // SAFETY: the trial's entries carry no pointers (multishot operations select
        // buffers from the registered ring, which outlives them: see `trial_multishot`).
        unsafe { self.ring.submission().push(&entry) }
            .map_err(|_| vec!["a free SQE (trial ring full)".to_string()])?;
        self.inflight += 1;
        Ok(())
    }

    /// Waits (at most a second) for one CQE; returns (user_data, res, flags).
    fn wait(&mut self) -> Option<(u64, i32, u32)> {
        let ts = types::Timespec::new().sec(1);
        let args = types::SubmitArgs::new().timespec(&ts);
        loop {
            if let Some(cqe) = self.ring.completion().next() {
                if !cqueue::more(cqe.flags()) {
                    self.inflight = self.inflight.saturating_sub(1);
                }
                return Some((cqe.user_data(), cqe.result(), cqe.flags()));
            }
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(_) => {
                    // ETIME or worse: look once more, then give up.
                    return self.ring.completion().next().map(|cqe| {
                        if !cqueue::more(cqe.flags()) {
                            self.inflight = self.inflight.saturating_sub(1);
                        }
                        (cqe.user_data(), cqe.result(), cqe.flags())
                    });
                }
            }
        }
    }

    fn run(
        &mut self,
        listener: &TcpListener,
        addr: std::net::SocketAddr,
        bufring: &mut BufRing,
        tuning: &Tuning,
    ) -> Result<(), Vec<String>> {
        let _ = tuning;
        let accept = Need {
            what: "multishot accept (IORING_ACCEPT_MULTISHOT)",
            since: "5.19",
        };
        self.push(
            opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
                .flags(libc::SOCK_CLOEXEC)
                .build()
                .user_data(1),
        )?;
        self.more[1] = true;
        let mut client =
            TcpStream::connect(addr).map_err(|e| vec![format!("a loopback connection ({e})")])?;
        match self.wait() {
            Some((1, res, flags)) if res >= 0 => {
                // SAFETY: the kernel installed this descriptor for us.
                self.accepted = Some(unsafe { OwnedFd::from_raw_fd(res) });
                self.more[1] = cqueue::more(flags);
                if !self.more[1] {
                    return Err(vec![format!(
                        "{} (the accept completed as one-shot)",
                        missing(&accept)
                    )]);
                }
            }
            Some((1, res, _)) => {
                self.more[1] = false;
                return Err(vec![if res == -libc::EINVAL {
                    missing(&accept)
                } else {
                    format!(
                        "{} (trial failed: {})",
                        accept.what,
                        io::Error::from_raw_os_error(-res)
                    )
                }]);
            }
            _ => return Err(vec![format!("{} (trial got no completion)", accept.what)]),
        }

        if let Err(e) = bufring.register(&self.ring.submitter()) {
            return Err(vec![if e.raw_os_error() == Some(libc::EINVAL) {
                "provided buffer rings (IORING_REGISTER_PBUF_RING, added in Linux 5.19)".into()
            } else {
                format!("provided buffer rings (registration failed: {e})")
            }]);
        }
        let recv = Need {
            what: "multishot recv (IORING_RECV_MULTISHOT)",
            since: "6.0",
        };
        std::io::Write::write_all(&mut client, b"x")
            .map_err(|e| vec![format!("a loopback write ({e})")])?;
        let fd = self.accepted.as_ref().map_or(-1, |f| f.as_raw_fd());
        self.push(
            opcode::RecvMulti::new(types::Fd(fd), bufring.bgid())
                .build()
                .user_data(2),
        )?;
        self.more[2] = true;
        match self.wait() {
            Some((2, 1, flags)) if cqueue::buffer_select(flags).is_some() => {
                self.more[2] = cqueue::more(flags);
                if !self.more[2] {
                    return Err(vec![format!(
                        "{} (the receive completed as one-shot)",
                        missing(&recv)
                    )]);
                }
                Ok(())
            }
            Some((2, res, _)) => {
                self.more[2] = false;
                Err(vec![if res == -libc::EINVAL {
                    missing(&recv)
                } else {
                    format!(
                        "{} (trial returned {res} without a provided buffer)",
                        recv.what
                    )
                }])
            }
            _ => Err(vec![format!("{} (trial got no completion)", recv.what)]),
        }
    }

    /// Cancels the armed multishot operations and reaps every CQE. True when nothing is
    /// left in flight.
    fn drain(&mut self) -> bool {
        for target in [1u64, 2] {
            if self.more[target as usize]
                && self
                    .push(
                        opcode::AsyncCancel::new(target)
                            .build()
                            .user_data(10 + target),
                    )
                    .is_err()
            {
                return false;
            }
        }
        while self.inflight > 0 {
            if self.wait().is_none() {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let t = Tuning::for_variant(Variant::Multishot);
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
            Variant::Multishot,
            &Tuning::for_variant(Variant::Multishot),
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
