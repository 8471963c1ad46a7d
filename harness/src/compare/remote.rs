//! A server measured on its own host (`compare --topology ssh`): both ends of the ledger
//! exchange over the server's stdin and stdout.
//!
//! `harness serve --ledger-stdin` moves itself into a cgroup of its own before its backend
//! starts a thread ([`SelfMeter`]), opens its perf counters on itself once the shards
//! exist, and answers each `mark N` line on stdin with one line `LEDGER {json}` (a
//! [`LedgerReading`] of its host and itself, cumulative counters and the host's wall
//! clock). `stop` or the end of stdin stops it as before. The coordinator ([`Link`]) sends
//! a mark at each edge of the measured window and takes differences, exactly as it does
//! with its local readings of a child server.
//!
//! The marks travel over ssh: each edge is read about one one-way latency after the
//! coordinator's edge. Both edges shift alike, so the window's length holds; the server
//! host's own clock gives it ([`LedgerReading::unix_ns`]).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::process::ChildStdin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::topology::{clock_offset_ns, unix_ns};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::cgroup::OwnGroup;
use super::cost::{self, CoreTicks, CpuClock, KernelMem, ProcSnapshot, SyscallCounter};
use crate::topology::agent::HostFacts;

/// The prefix of an answer line.
pub const LEDGER_PREFIX: &str = "LEDGER ";

/// What a server reports of itself and its host at one mark. Counters are cumulative
/// (since the serve process started them); the coordinator takes differences.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LedgerReading {
    /// The mark's number, echoed.
    pub seq: u64,
    /// The server host's wall clock at the reading, ns since the Unix epoch.
    pub unix_ns: u64,
    /// On-CPU ns of every task that ever ran in the server's own cgroup.
    pub cgroup_ns: Option<u64>,
    /// How the cgroup counts ("cgroup cpuacct.usage", "cgroup cpu.stat usage_usec").
    pub cgroup_method: Option<String>,
    /// Why there is no cgroup.
    pub cgroup_absent: Option<String>,
    /// On-CPU ns of the server's live tasks, /proc/self/task/*/schedstat.
    pub schedstat_ns: Option<u64>,
    /// perf task-clock ns of the server's tasks since the counters started.
    pub task_clock_ns: Option<u64>,
    /// Why there is no task-clock.
    pub task_clock_absent: Option<String>,
    /// Syscalls the server entered since the counters started.
    pub syscalls: Option<u64>,
    /// Why syscalls are not counted.
    pub syscalls_absent: Option<String>,
    /// Every core of the server host, /proc/stat ticks.
    pub cores: Option<BTreeMap<usize, CoreTicks>>,
    /// /proc/self: tick-sampled user and system time, context switches, memory.
    pub proc: Option<ProcSnapshot>,
    /// The server host's kernel memory.
    pub kmem: KernelMem,
    /// The server host.
    pub host: HostFacts,
}

/// The serve process's measurement of itself.
pub struct SelfMeter {
    group: Result<OwnGroup, String>,
    counter: Result<SyscallCounter, String>,
    clock: Result<CpuClock, String>,
}

impl SelfMeter {
    /// Moves this process into a cgroup of its own where it can (else the readings fall
    /// back to schedstat). Call it before any thread is started.
    pub fn enter() -> SelfMeter {
        let group = OwnGroup::enter();
        if let Err(why) = &group {
            eprintln!("warning: no cgroup of its own ({why}); the ledger falls back to schedstat");
        }
        SelfMeter {
            group,
            counter: Err("not opened yet".into()),
            clock: Err("not opened yet".into()),
        }
    }

    /// Opens and starts the perf counters on every task of this process: call it once the
    /// backend's threads exist (each gets a counter; later ones inherit).
    pub fn open_counters(&mut self) {
        let pid = std::process::id();
        self.counter = SyscallCounter::open(pid)
            .and_then(|c| c.start().map(|()| c).map_err(|e| e.to_string()));
        self.clock =
            CpuClock::open(pid).and_then(|c| c.start().map(|()| c).map_err(|e| e.to_string()));
    }

    /// A reading now.
    pub fn read(&self, seq: u64) -> LedgerReading {
        let pid = std::process::id();
        let cores = cost::core_ticks().ok();
        let (cgroup_ns, cgroup_method, cgroup_absent) = match &self.group {
            Ok(g) => {
                let u = g.usage();
                match u.read_ns() {
                    Ok(ns) => (Some(ns), Some(u.method().to_string()), None),
                    Err(e) => (None, None, Some(format!("reading the cgroup: {e}"))),
                }
            }
            Err(why) => (None, None, Some(why.clone())),
        };
        let schedstat_ns = cost::schedstat_ns(pid).ok();
        let (task_clock_ns, task_clock_absent) = read_counter(&self.clock, CpuClock::read);
        let (syscalls, syscalls_absent) = read_counter(&self.counter, SyscallCounter::read);
        LedgerReading {
            seq,
            unix_ns: unix_ns(SystemTime::now()),
            cgroup_ns,
            cgroup_method,
            cgroup_absent,
            schedstat_ns,
            task_clock_ns,
            task_clock_absent,
            syscalls,
            syscalls_absent,
            cores,
            proc: cost::snapshot(pid).ok(),
            kmem: cost::kernel_mem(),
            host: HostFacts::here(),
        }
    }
}

fn read_counter<C>(
    c: &Result<C, String>,
    read: fn(&C) -> std::io::Result<u64>,
) -> (Option<u64>, Option<String>) {
    match c {
        Ok(c) => match read(c) {
            Ok(n) => (Some(n), None),
            Err(e) => (None, Some(format!("reading the counter: {e}"))),
        },
        Err(why) => (None, Some(why.clone())),
    }
}

/// The serve side: answers `mark N` lines of `input` on stdout until `stop`, end of input
/// or a read error, then returns (the caller stops the server). Other lines are ignored.
pub fn answer_marks(input: impl BufRead, meter: &Mutex<Option<SelfMeter>>) {
    for line in input.lines() {
        let Ok(line) = line else { break };
        let mut words = line.split_whitespace();
        match words.next() {
            Some("mark") => {
                let seq = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                let reading = meter
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .map(|m| m.read(seq));
                let Some(reading) = reading else { break };
                let Ok(json) = serde_json::to_string(&reading) else {
                    break;
                };
                let mut out = std::io::stdout().lock();
                if writeln!(out, "{LEDGER_PREFIX}{json}")
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    break;
                }
            }
            Some("stop") => break,
            _ => {}
        }
    }
}

/// One answered mark, with the coordinator's clock around it.
#[derive(Debug, Clone)]
pub struct Marked {
    /// What the server read.
    pub reading: LedgerReading,
    /// When the coordinator sent the mark.
    pub sent: Instant,
    /// Its wall clock then, ns.
    pub sent_unix_ns: u64,
    /// Its wall clock when the answer arrived, ns.
    pub received_unix_ns: u64,
}

impl Marked {
    /// The server host's clock minus the coordinator's, ns.
    pub fn clock_offset_ns(&self) -> i64 {
        clock_offset_ns(
            self.sent_unix_ns,
            self.reading.unix_ns,
            self.received_unix_ns,
        )
    }

    /// The round trip, ns.
    pub fn round_trip_ns(&self) -> u64 {
        self.received_unix_ns.saturating_sub(self.sent_unix_ns)
    }
}

/// The coordinator's end: writes marks to the server's stdin, reads their answers.
pub struct Link {
    stdin: Arc<Mutex<Option<ChildStdin>>>,
    answers: Mutex<Receiver<String>>,
    seq: AtomicU64,
}

impl Link {
    /// A link over the server's stdin and the channel its `LEDGER` lines arrive on.
    pub fn new(stdin: Arc<Mutex<Option<ChildStdin>>>, answers: Receiver<String>) -> Link {
        Link {
            stdin,
            answers: Mutex::new(answers),
            seq: AtomicU64::new(1),
        }
    }

    /// Sends a mark and waits up to `timeout` for its answer (answers to earlier marks
    /// that came too late are skipped).
    pub fn mark(&self, timeout: Duration) -> anyhow::Result<Marked> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        let sent = Instant::now();
        let sent_unix_ns = unix_ns(SystemTime::now());
        {
            let mut stdin = self.stdin.lock().unwrap_or_else(|p| p.into_inner());
            let stdin = stdin.as_mut().context("the server's stdin is closed")?;
            writeln!(stdin, "mark {seq}")
                .and_then(|()| stdin.flush())
                .context("writing a mark to the server")?;
        }
        let deadline = sent + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match answers.recv_timeout(left) {
                Ok(l) => l,
                Err(RecvTimeoutError::Timeout) => {
                    bail!("the server did not answer mark {seq} within {timeout:.0?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    bail!("the server's output ended before it answered mark {seq}")
                }
            };
            let received_unix_ns = unix_ns(SystemTime::now());
            let json = line.strip_prefix(LEDGER_PREFIX).unwrap_or(&line);
            let reading: LedgerReading = serde_json::from_str(json)
                .with_context(|| format!("the server's ledger line is not valid: {line}"))?;
            if reading.seq == seq {
                return Ok(Marked {
                    reading,
                    sent,
                    sent_unix_ns,
                    received_unix_ns,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_answered_in_order_and_stop_ends() {
        let meter = Mutex::new(Some(SelfMeter {
            group: Err("test".into()),
            counter: Err("test".into()),
            clock: Err("test".into()),
        }));
        let r = meter.lock().unwrap().as_ref().unwrap().read(7);
        assert_eq!(r.seq, 7);
        assert!(r.schedstat_ns.is_some_and(|ns| ns > 0));
        assert!(r.proc.is_some() && r.cores.is_some());
        assert_eq!(r.cgroup_absent.as_deref(), Some("test"));
        let back: LedgerReading =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back.cores, r.cores);
        // `stop` ends the loop before the last mark: nothing blocks on a closed input.
        answer_marks(std::io::Cursor::new("noise\nstop\nmark 3\n"), &meter);
    }

    #[test]
    fn offset_is_taken_from_the_middle_of_the_round_trip() {
        let m = Marked {
            reading: LedgerReading {
                seq: 1,
                unix_ns: 1_500,
                cgroup_ns: None,
                cgroup_method: None,
                cgroup_absent: None,
                schedstat_ns: None,
                task_clock_ns: None,
                task_clock_absent: None,
                syscalls: None,
                syscalls_absent: None,
                cores: None,
                proc: None,
                kmem: KernelMem::default(),
                host: HostFacts::default(),
            },
            sent: Instant::now(),
            sent_unix_ns: 1_000,
            received_unix_ns: 1_200,
        };
        assert_eq!(m.clock_offset_ns(), 400);
        assert_eq!(m.round_trip_ns(), 200);
    }
}
