//! What each feature set needs from the kernel, checked for real, and errors that say what
//! is missing and which Linux added it.
//!
//! [`check`] never trusts the version string alone: it reads
//! `/proc/sys/kernel/io_uring_disabled`, creates a ring, asks `IORING_REGISTER_PROBE`
//! for every opcode used, reads the feature bits, sets up a trial ring per setup flag (to
//! name the culprit), then the exact ring a shard builds, registers what the set registers
//! (ring fd, fixed file table, NAPI), runs a setsockopt through `IORING_OP_URING_CMD` for
//! fixed files, and for multishot sets registers a buffer ring (incremental if asked) and
//! runs a multishot accept and a multishot receive on a loopback connection. The kernel
//! version appears only in the messages, as "added in Linux X".
//!
//! NAPI busy polling needs sockets whose packets arrive through a NAPI device; loopback and
//! veth connections carry no NAPI id (`SO_INCOMING_NAPI_ID` reads 0), so on a box that
//! benchmarks over loopback `napi` is reported unsupported even where the kernel has it.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use backend_api::Unsupported;
use io_uring::{cqueue, opcode, squeue, types, Builder, IoUring, Probe};

use crate::bufring::BufRing;
use crate::features::{Feature, Features};
use crate::sendring::SendRings;
use crate::setup::{builder, explain_setup_error, kernel};
use crate::Tuning;

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

/// Checks everything `features` (as tuned) need. `Err` says exactly what is missing.
///
/// The trials run on a short-lived thread of their own: when a ring that ran requests is
/// closed, the kernel's ring teardown queues task work on every thread that submitted to
/// it, which interrupts that thread's next blocking call with `EINTR` (a socket read with a
/// timeout, say). A thread that has exited cannot be interrupted.
pub fn check(features: impl Into<Features>, tuning: &Tuning) -> Result<(), Unsupported> {
    let features = features.into();
    let tuning = tuning.clone();
    std::thread::Builder::new()
        .name("uring-probe".into())
        .spawn(move || check_here(features, &tuning))
        .map_err(|e| Unsupported::new(format!("spawning the io_uring probe thread: {e}")))?
        .join()
        .unwrap_or_else(|_| Err(Unsupported::new("the io_uring probe panicked")))
}

/// Opcodes only some feature sets use.
const FEATURE_OPCODES: [(Feature, u8, Need); 2] = [
    (
        Feature::SendZc,
        opcode::SendZc::CODE,
        Need {
            what: "IORING_OP_SEND_ZC",
            since: "6.0",
        },
    ),
    (
        Feature::Fixed,
        opcode::UringCmd16::CODE,
        Need {
            what: "IORING_OP_URING_CMD",
            since: "5.19",
        },
    ),
];

fn check_here(features: Features, tuning: &Tuning) -> Result<(), Unsupported> {
    let (release, _) = kernel();
    let name = features.name();
    let fail = |items: Vec<String>| {
        let alternative = if features == Features::NONE {
            "epoll-et"
        } else {
            "uring"
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
        .map_err(|e| Unsupported::new(explain_setup_error(e, features, tuning, 1).to_string()))?;
    let mut items = Vec::new();
    let mut probe = Probe::new();
    match plain.submitter().register_probe(&mut probe) {
        Ok(()) => {
            for (code, need) in &OPCODES {
                if !probe.is_supported(*code) {
                    items.push(missing(need));
                }
            }
            for (feature, code, need) in &FEATURE_OPCODES {
                if features.has(*feature) && !probe.is_supported(*code) {
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
    if features.has(Feature::Sqpoll) && !params.is_feature_sqpoll_nonfixed() {
        items.push(
            "IORING_FEAT_SQPOLL_NONFIXED: SQPOLL without registered files (added in Linux 5.11)"
                .into(),
        );
    }
    if features.has(Feature::MinWait) && !params.is_feature_min_timeout() {
        items.push("IORING_FEAT_MIN_TIMEOUT: min-wait batching (added in Linux 6.12)".into());
    }
    if features.has(Feature::Bundle) && !params.is_feature_recvsend_bundle() {
        items.push("IORING_FEAT_RECVSEND_BUNDLE: receive bundles (added in Linux 6.10)".into());
    }
    if features.has(Feature::SendBundle) && !params.is_feature_recvsend_bundle() {
        items.push(
            "IORING_FEAT_RECVSEND_BUNDLE: send bundles (IORING_RECVSEND_BUNDLE on IORING_OP_SEND, \
             added in Linux 6.10)"
                .into(),
        );
    }
    drop(plain);

    // Setup flags, one trial each so the message names the one that is missing.
    let all: [(Feature, FlagTrial); 4] = [
        (
            Feature::Coop,
            ("IORING_SETUP_COOP_TASKRUN", "5.19", |b, _| {
                b.setup_coop_taskrun();
            }),
        ),
        (
            Feature::Single,
            ("IORING_SETUP_SINGLE_ISSUER", "6.0", |b, _| {
                b.setup_single_issuer();
            }),
        ),
        (
            Feature::Defer,
            ("IORING_SETUP_DEFER_TASKRUN", "6.1", |b, _| {
                b.setup_single_issuer().setup_defer_taskrun();
            }),
        ),
        (
            Feature::Sqpoll,
            (
                "IORING_SETUP_SQPOLL with SQ_AFF for unprivileged users",
                "5.11",
                |b, cpu| {
                    b.setup_sqpoll(10).setup_sqpoll_cpu(cpu);
                },
            ),
        ),
    ];
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    let core = (cpu >= 0).then_some(cpu as usize);
    for (_, (what, since, set)) in all.iter().filter(|(f, _)| features.has(*f)) {
        let mut b = IoUring::<squeue::Entry, cqueue::Entry>::builder();
        set(&mut b, core.unwrap_or(0) as u32);
        if let Err(e) = b.build(8) {
            if e.raw_os_error() == Some(libc::EINVAL) {
                items.push(format!("{what} (added in Linux {since})"));
            } else {
                return Err(Unsupported::new(
                    explain_setup_error(e, features, tuning, 1).to_string(),
                ));
            }
        }
    }
    if !items.is_empty() {
        return Err(fail(items));
    }

    // The exact ring a shard builds (sizes included: this is where RLIMIT_MEMLOCK bites).
    // SQ_AFF is tried with the CPU this thread runs on.
    let mut ring = builder(features, tuning, core)
        .build(tuning.sq_entries)
        .map_err(|e| Unsupported::new(explain_setup_error(e, features, tuning, 1).to_string()))?;
    if let Err(items) = trial_registrations(&mut ring, features) {
        return Err(fail(items));
    }
    if features.has(Feature::Napi) {
        trial_napi(&mut ring)?;
    }
    if features.has(Feature::SendBundle) {
        if let Err(items) = trial_send_bundle(&mut ring) {
            return Err(fail(items));
        }
    }
    if features.has(Feature::AcceptMulti) || features.buffer_ring() {
        if let Err(items) = trial_multishot(&mut ring, features) {
            return Err(fail(items));
        }
    }
    Ok(())
}

/// Registers what `features` register on a shard's ring, and runs a setsockopt through
/// `IORING_OP_URING_CMD` for fixed files.
fn trial_registrations(ring: &mut IoUring, features: Features) -> Result<(), Vec<String>> {
    let einval_means = |e: &io::Error, what: &str, since: &str| {
        if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) {
            vec![format!("{what} (added in Linux {since})")]
        } else {
            vec![format!("{what} (trial failed: {e})")]
        }
    };
    if features.has(Feature::RingFd) {
        let mut submitter = ring.submitter();
        submitter
            .register_ring_fd()
            .map_err(|e| einval_means(&e, "IORING_REGISTER_RING_FDS", "5.18"))?;
        let _ = submitter.unregister_ring_fd();
    }
    if features.has(Feature::Fixed) {
        ring.submitter()
            .register_files_sparse(8)
            .map_err(|e| einval_means(&e, "sparse fixed file tables", "5.19"))?;
        let socket = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| vec![format!("a loopback socket ({e})")])?;
        let one: libc::c_int = 1;
        let entry = opcode::SetSockOpt::new(
            types::Fd(socket.as_raw_fd()),
            libc::SOL_SOCKET as u32,
            libc::SO_KEEPALIVE as u32,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
        .build()
        .user_data(7);
        // SAFETY: `one` outlives the operation: we wait for its completion right here.
        unsafe { ring.submission().push(&entry) }
            .map_err(|_| vec!["a free SQE (trial ring full)".to_string()])?;
        ring.submit_and_wait(1)
            .map_err(|e| vec![format!("io_uring setsockopt (trial failed: {e})")])?;
        let res = ring
            .completion()
            .next()
            .map_or(-libc::EINVAL, |c| c.result());
        if res < 0 {
            let e = io::Error::from_raw_os_error(-res);
            return Err(einval_means(
                &e,
                "setsockopt through IORING_OP_URING_CMD (SOCKET_URING_OP_SETSOCKOPT)",
                "6.7",
            ));
        }
    }
    Ok(())
}

/// NAPI busy polling: the registration, then whether a loopback connection has a NAPI id.
fn trial_napi(ring: &mut IoUring) -> Result<(), Unsupported> {
    let mut napi = types::Napi::new().set_busy_poll_timeout(50);
    if let Err(e) = ring.submitter().register_napi(&mut napi) {
        return Err(Unsupported::new(format!(
            "napi needs IORING_REGISTER_NAPI (added in Linux 6.9): registering failed: {e}"
        )));
    }
    let _ = ring.submitter().unregister_napi(&mut napi);
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Unsupported::new(format!("napi trial: a loopback listener ({e})")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Unsupported::new(format!("napi trial: {e}")))?;
    let client = TcpStream::connect(addr)
        .map_err(|e| Unsupported::new(format!("napi trial: a loopback connection ({e})")))?;
    std::io::Write::write_all(&mut &client, b"x")
        .map_err(|e| Unsupported::new(format!("napi trial: a loopback write ({e})")))?;
    let (server, _) = listener
        .accept()
        .map_err(|e| Unsupported::new(format!("napi trial: accept ({e})")))?;
    let mut buf = [0u8; 1];
    std::io::Read::read_exact(&mut &server, &mut buf)
        .map_err(|e| Unsupported::new(format!("napi trial: a loopback read ({e})")))?;
    let mut id: libc::c_uint = 0;
    let mut len = std::mem::size_of::<libc::c_uint>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `id`, a live c_uint.
    let r = unsafe {
        libc::getsockopt(
            server.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_INCOMING_NAPI_ID,
            (&mut id as *mut libc::c_uint).cast(),
            &mut len,
        )
    };
    if r != 0 || id == 0 {
        return Err(Unsupported::new(
            "napi needs sockets behind a NAPI device (a NIC driver with NAPI, Linux 6.9+ for \
             io_uring's busy poll): loopback connections carry no NAPI id \
             (SO_INCOMING_NAPI_ID = 0), so busy polling would never run here. \
             IORING_REGISTER_NAPI itself works on this kernel",
        ));
    }
    Ok(())
}

/// Registers a send ring, queues one chunk and sends it with a bundle send on a loopback
/// connection; the peer must read exactly it. Returns what did not work.
fn trial_send_bundle(ring: &mut IoUring) -> Result<(), Vec<String>> {
    let io_err =
        |what: &str, e: io::Error| vec![format!("send bundles: {what} (trial failed: {e})")];
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| io_err("a loopback listener", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| io_err("a loopback listener", e))?;
    let mut client = TcpStream::connect(addr).map_err(|e| io_err("a loopback connection", e))?;
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(1)))
        .map_err(|e| io_err("a read timeout", e))?;
    let (server, _) = listener.accept().map_err(|e| io_err("accept", e))?;
    let mut rings = SendRings::new(1);
    let mut q = rings.take(&ring.submitter()).map_err(|e| {
        vec![if e.raw_os_error() == Some(libc::EINVAL) {
            "provided buffer rings (IORING_REGISTER_PBUF_RING, added in Linux 5.19)".to_string()
        } else {
            format!("send bundles: a send buffer ring ({e})")
        }]
    })?;
    let mut out = backend_api::OutBuf::new();
    out.tail().extend_from_slice(b"ping");
    let mut spare = backend_api::OutBuf::new();
    q.queue(&mut out, &mut spare);
    let entry = opcode::SendBundle::new(types::Fd(server.as_raw_fd()), q.bgid())
        .flags(libc::MSG_NOSIGNAL | libc::MSG_WAITALL)
        .build()
        .user_data(9);
    let mut outcome = Err(vec![
        "send bundles (the trial send got no completion)".to_string()
    ]);
    // SAFETY: the SQE carries no pointer; the chunk its ring entry points at lives in `q`,
    // which is dropped only after the send's completion was reaped (or leaked if it never
    // came).
    if unsafe { ring.submission().push(&entry) }.is_err() {
        return Err(vec!["a free SQE (trial ring full)".to_string()]);
    }
    let ts = types::Timespec::new().sec(1);
    let args = types::SubmitArgs::new().timespec(&ts);
    let mut reaped = false;
    for _ in 0..3 {
        let _ = ring.submitter().submit_with_args(1, &args);
        if let Some(cqe) = ring.completion().next() {
            reaped = !cqueue::more(cqe.flags());
            outcome = match cqe.result() {
                4 => q
                    .sent(cqe.flags(), 4, &mut spare)
                    .map_err(|m| vec![format!("send bundles (the trial completion was {m:?})")]),
                r if r == -libc::EINVAL || r == -libc::EOPNOTSUPP => Err(vec![
                    "send bundles (IORING_RECVSEND_BUNDLE on IORING_OP_SEND, added in Linux \
                     6.10)"
                        .to_string(),
                ]),
                r => Err(vec![format!("send bundles (the trial send returned {r})")]),
            };
            break;
        }
    }
    if !reaped {
        std::mem::forget(q); // the kernel may still read the chunk through the ring
        std::mem::forget(rings);
        return outcome;
    }
    let mut got = [0u8; 4];
    if outcome.is_ok() {
        if let Err(e) = std::io::Read::read_exact(&mut client, &mut got) {
            outcome = Err(io_err("reading what was sent", e));
        } else if &got != b"ping" {
            outcome = Err(vec![format!(
                "send bundles (the peer read {got:?}, not the bytes sent)"
            )]);
        }
    }
    let submitter = ring.submitter();
    if let Err(e) = rings
        .give_back(q, &submitter)
        .and_then(|()| rings.unregister_all(&submitter))
    {
        outcome = outcome.and(Err(io_err("unregistering the send ring", e)));
    }
    outcome
}

/// Runs a multishot accept and a multishot receive through a registered buffer ring on a
/// loopback connection. Returns what did not work.
fn trial_multishot(ring: &mut IoUring, features: Features) -> Result<(), Vec<String>> {
    let io_err = |what: &str, e: io::Error| vec![format!("{what} (trial failed: {e})")];
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| io_err("a loopback listener", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| io_err("a loopback listener", e))?;
    let mut bufring = BufRing::new(2, 64, 1, features.has(Feature::Inc))
        .map_err(|e| io_err("a buffer ring", e))?;
    let mut trial = Trial {
        ring,
        inflight: 0,
        accepted: None,
        more: [false; 3],
    };
    let result = trial.run(&listener, addr, &mut bufring, features);
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
        features: Features,
    ) -> Result<(), Vec<String>> {
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
                if features.has(Feature::Inc) {
                    "incremental provided buffer rings (IOU_PBUF_RING_INC, added in Linux 6.12)"
                        .into()
                } else {
                    "provided buffer rings (IORING_REGISTER_PBUF_RING, added in Linux 5.19)".into()
                }
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
