//! The agent protocol: `harness agent` runs one share of a load in its own process (on
//! this host, in a client namespace, or on another host over ssh), and the coordinator
//! here starts the agents, starts their load at one wall-clock instant, opens and closes
//! the measured window by the clock, and merges their reports exactly.
//!
//! The protocol is line-delimited JSON, one message a line:
//! 1. coordinator → agent on stdin: `{"hello":{"unix_ns":T1}}`; agent → stdout:
//!    `{"hello":{"unix_ns":T2,"host":{...}}}` (its host facts). The coordinator reads it at
//!    T3 and takes the agent's clock offset as T2 - (T1+T3)/2, ± (T3-T1)/2. It repeats
//!    the exchange and keeps the one with the shortest round trip.
//! 2. coordinator → agent: `{"run":{"config":{LoadConfig},"start_at_unix_ns":S}}`, S in the
//!    agent's clock. The agent establishes its connections, starts its measured clock at S,
//!    and answers `{"report":{"report":{LoadReport},"start_late_ns":N}}` (histograms
//!    serialized losslessly) or `{"error":{"message":"..."}}`.
//! 3. The end of the agent's stdin (or SIGINT/SIGTERM) stops its run early; it still
//!    reports, marked interrupted.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use backend_api::StopSignal;
use clap::Args;
use serde::{Deserialize, Serialize};

use super::merge::merge_reports;
use super::{clock_offset_ns, unix_ns};
use crate::load::{Flag, LoadConfig, LoadReport, WindowObserver};

/// Hello exchanges per agent: the offset is taken from the shortest round trip.
const CLOCK_ROUNDS: usize = 4;

/// Lines of an agent's stderr kept for a failure report.
const STDERR_TAIL_LINES: usize = 30;

/// The long help of `harness agent`: the protocol.
pub const PROTOCOL_HELP: &str = "Run one share of a load for a coordinating harness (compare or load \
with --client-procs, --topology netns or ssh); not meant to be run by hand.\n\n\
Protocol: one JSON message per line. Stdin first carries {\"hello\":{\"unix_ns\":T}}, answered \
on stdout with {\"hello\":{\"unix_ns\":T,\"host\":{hostname,kernel,cpu_model,online_cores,\
nofile_soft,nofile_hard,pid}}} (any number of times: a clock exchange); then {\"run\":{\"config\":LoadConfig,\"start_at_unix_ns\":S}}, \
answered with {\"report\":{\"report\":LoadReport,\"start_late_ns\":N}} or \
{\"error\":{\"message\":M}}. The load's measured clock starts at wall-clock time S, once every \
connection is established. End of stdin, SIGINT or SIGTERM stop the run early (it still \
reports, marked interrupted).";

/// Options of `harness agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Longest wait for each coordinator message before the agent gives up (30s, 2m).
    #[arg(long, default_value = "60", value_parser = crate::duration::parse_secs)]
    pub wait: f64,
}

/// What a host says about itself, recorded per agent in the results.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HostFacts {
    /// Host name.
    pub hostname: String,
    /// `uname -r`.
    pub kernel: String,
    /// CPU model name from /proc/cpuinfo.
    pub cpu_model: String,
    /// Online CPUs.
    pub online_cores: usize,
    /// RLIMIT_NOFILE soft limit of the agent process.
    pub nofile_soft: u64,
    /// RLIMIT_NOFILE hard limit.
    pub nofile_hard: u64,
    /// The agent's process id on its host.
    pub pid: u32,
}

impl HostFacts {
    /// This host and process.
    pub fn here() -> HostFacts {
        let sys = crate::sysinfo::SysRoot::default();
        let (soft, hard) = backend_api::rlimit::nofile().unwrap_or((0, 0));
        HostFacts {
            hostname: sys.read("proc/sys/kernel/hostname").unwrap_or_default(),
            kernel: sys.read("proc/sys/kernel/osrelease").unwrap_or_default(),
            cpu_model: sys.cpu_model(),
            online_cores: sys.online_cpus().len(),
            nofile_soft: soft,
            nofile_hard: hard,
            pid: std::process::id(),
        }
    }
}

/// Coordinator to agent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToAgent {
    /// Clock exchange; answered with the agent's hello.
    Hello {
        /// Coordinator's wall clock when sent, ns since the Unix epoch.
        unix_ns: u64,
    },
    /// Run this share of the load.
    Run {
        /// The agent's share.
        config: Box<LoadConfig>,
        /// When the measured clock starts, in the agent's wall clock.
        start_at_unix_ns: u64,
    },
}

/// Agent to coordinator.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromAgent {
    /// The answer to the coordinator's hello.
    Hello {
        /// Agent's wall clock when it read the hello.
        unix_ns: u64,
        /// Its host.
        host: HostFacts,
    },
    /// The run's report.
    Report {
        /// What the agent measured.
        report: Box<LoadReport>,
        /// How far past the common start its clock actually started (connections took
        /// longer to establish than the lead time), ns.
        start_late_ns: u64,
    },
    /// The run failed.
    Error {
        /// Why.
        message: String,
    },
}

/// One agent's part of a run, recorded in the cell so merged figures can be checked
/// against their parts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AgentRecord {
    /// "proc 0", "netns rs-123-c0", "ssh host-a".
    pub label: String,
    /// Its host.
    pub host: HostFacts,
    /// Its wall clock minus the coordinator's, ns (from the hello exchange).
    pub clock_offset_ns: i64,
    /// Half the hello round trip: the offset's uncertainty, ns.
    pub clock_uncertainty_ns: u64,
    /// How far past the common start it started, ns.
    pub start_late_ns: u64,
    /// Its active connections.
    pub connections: usize,
    /// Its idle connections.
    pub idle: usize,
    /// Its share of the rate, requests/s.
    pub rate: Option<f64>,
    /// Connections it established.
    pub established: u64,
    /// Requests it sent in the measured window.
    pub sent: u64,
    /// Requests it completed in the measured window.
    pub completed: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Values in its latency histogram.
    pub latency_count: u64,
    /// Bytes it wrote in the window.
    pub bytes_out: u64,
    /// Bytes it read in the window.
    pub bytes_in: u64,
    /// Its errors, all kinds.
    pub errors_total: u64,
    /// Its client threads were the bottleneck.
    pub client_bound: bool,
}

/// Spawns a thread sending every line of `input` to the returned channel; the channel
/// disconnects at end of input.
fn line_reader<R: std::io::Read + Send + 'static>(
    input: R,
    name: &str,
) -> std::io::Result<Receiver<String>> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            for line in BufReader::new(input).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}

fn say(msg: &FromAgent) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, msg).context("writing to the coordinator")?;
    out.write_all(b"\n")
        .and_then(|_| out.flush())
        .context("writing to the coordinator")
}

struct Quiet;

impl WindowObserver for Quiet {
    fn window_start(&self) {}
    fn window_end(&self) {}
}

/// Runs `harness agent`.
pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let wait = Duration::try_from_secs_f64(args.wait)
        .ok()
        .filter(|w| !w.is_zero())
        .with_context(|| format!("--wait {}: give a time above 0", args.wait))?;
    let lines = line_reader(std::io::stdin(), "agent-stdin").context("reading stdin")?;
    let next = |what: &str| -> anyhow::Result<ToAgent> {
        let line = lines.recv_timeout(wait).map_err(|e| match e {
            RecvTimeoutError::Timeout => {
                anyhow::anyhow!("no {what} from the coordinator within {wait:.0?}")
            }
            RecvTimeoutError::Disconnected => {
                anyhow::anyhow!("standard input ended before the coordinator's {what}")
            }
        })?;
        serde_json::from_str(&line)
            .with_context(|| format!("bad message (expected {what}): {line}"))
    };
    // Any number of hellos (the coordinator keeps the exchange with the shortest round
    // trip), then the run.
    let (config, start_at) = loop {
        match next("hello or run")? {
            ToAgent::Hello { .. } => say(&FromAgent::Hello {
                unix_ns: unix_ns(SystemTime::now()),
                host: HostFacts::here(),
            })?,
            ToAgent::Run {
                config,
                start_at_unix_ns,
            } => break (*config, UNIX_EPOCH + Duration::from_nanos(start_at_unix_ns)),
        }
    };
    let stop = StopSignal::new().context("creating the stop eventfd")?;
    {
        // Whatever comes next, or the end of input, means stop.
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("agent-stop".into())
            .spawn(move || {
                let _ = lines.recv();
                stop.fire();
            })
            .context("spawning the stdin watcher")?;
    }
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("installing SIGINT/SIGTERM handlers")?;
    {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("agent-signals".into())
            .spawn(move || {
                if signals.forever().next().is_some() {
                    stop.fire();
                }
            })
            .context("spawning the signal thread")?;
    }
    match crate::load::run_load_at(&config, &stop, &Quiet, Some(start_at)) {
        Ok(report) => {
            let started = UNIX_EPOCH + Duration::from_secs_f64(report.started_at_unix_s.max(0.0));
            let late = started.duration_since(start_at).unwrap_or_default();
            say(&FromAgent::Report {
                report: Box::new(report),
                start_late_ns: late.as_nanos() as u64,
            })
        }
        Err(e) => {
            say(&FromAgent::Error {
                message: e.to_string(),
            })?;
            Err(e.into())
        }
    }
}

/// How to start one agent.
#[derive(Debug, Clone)]
pub struct AgentLaunch {
    /// Names it in results and errors.
    pub label: String,
    /// Its command line: `harness agent`, or that behind `ip netns exec` or `ssh`.
    pub argv: Vec<OsString>,
    /// Its share of the load ([`super::merge::split`]), with its target.
    pub config: LoadConfig,
}

/// Deadlines of a distributed run.
#[derive(Debug, Clone, Copy)]
pub struct AgentTimeouts {
    /// For an agent's hello after it was started.
    pub hello: Duration,
}

impl Default for AgentTimeouts {
    fn default() -> Self {
        AgentTimeouts {
            hello: Duration::from_secs(20),
        }
    }
}

/// Why a distributed run failed: the cell records both.
#[derive(Debug)]
pub struct AgentError {
    /// What went wrong, naming the agent.
    pub reason: String,
    /// The last lines of that agent's stderr.
    pub stderr_tail: String,
}

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)?;
        if !self.stderr_tail.is_empty() {
            write!(f, "; its stderr ends:\n{}", self.stderr_tail)?;
        }
        Ok(())
    }
}

impl std::error::Error for AgentError {}

/// The merged report and each agent's part.
#[derive(Debug, Clone)]
pub struct Distributed {
    /// The merge of every agent's report.
    pub report: LoadReport,
    /// Each agent's part, in launch order.
    pub agents: Vec<AgentRecord>,
}

/// One running agent.
struct AgentProc {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    /// Disconnects once stderr reached end of file.
    stderr_eof: Receiver<()>,
}

impl AgentProc {
    fn spawn(launch: &AgentLaunch) -> anyhow::Result<AgentProc> {
        let (prog, rest) = launch
            .argv
            .split_first()
            .context("an agent command line is empty")?;
        let mut cmd = Command::new(prog);
        // SAFETY: runs in the forked child before exec and only calls prctl, which is
        // async-signal-safe and allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                // No agent outlives its coordinator.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.args(rest)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting agent {}: {:?}", launch.label, launch.argv))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("agent stdout")?;
        let err_pipe = child.stderr.take().context("agent stderr")?;
        let lines = line_reader(stdout, "agent-stdout").context("spawning the stdout reader")?;
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let (eof_tx, stderr_eof) = mpsc::channel::<()>();
        {
            let stderr = Arc::clone(&stderr);
            std::thread::Builder::new()
                .name("agent-stderr".into())
                .spawn(move || {
                    let _eof = eof_tx;
                    for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
                        let mut tail = stderr.lock().unwrap_or_else(|p| p.into_inner());
                        if tail.len() == STDERR_TAIL_LINES {
                            tail.pop_front();
                        }
                        tail.push_back(line);
                    }
                })
                .context("spawning the stderr reader")?;
        }
        Ok(AgentProc {
            label: launch.label.clone(),
            child,
            stdin,
            lines,
            stderr,
            stderr_eof,
        })
    }

    fn send(&mut self, msg: &ToAgent) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("agent stdin already closed")?;
        let mut line = serde_json::to_vec(msg).context("encoding a message")?;
        line.push(b'\n');
        stdin
            .write_all(&line)
            .and_then(|_| stdin.flush())
            .with_context(|| format!("writing to agent {}", self.label))
    }

    /// The next message, waiting until `deadline`.
    fn recv(&mut self, deadline: Instant) -> anyhow::Result<FromAgent> {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match self.lines.recv_timeout(left) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => bail!("agent {} did not answer in time", self.label),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                bail!("agent {} exited without answering ({status})", self.label)
            }
        };
        serde_json::from_str(&line)
            .with_context(|| format!("agent {} sent a bad message: {line}", self.label))
    }

    fn stderr_tail(&mut self) -> String {
        if !matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.stderr_eof.recv_timeout(Duration::from_secs(2));
        }
        let tail = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn fail(&mut self, e: anyhow::Error) -> AgentError {
        let _ = self.child.kill();
        let _ = self.child.wait();
        AgentError {
            reason: format!("{e:#}"),
            stderr_tail: self.stderr_tail(),
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Time given to agents to establish their connections before the common start.
fn lead_time(launches: &[AgentLaunch]) -> Duration {
    let most = launches
        .iter()
        .map(|l| l.config.workload.total_connections())
        .max()
        .unwrap_or(0);
    Duration::from_millis(500) + Duration::from_micros(100) * most as u32
}

/// Runs `whole` as the agents of `launches` (their shares of it), all starting at one
/// instant; tells `observer` when the measured window opens and closes (by the clock);
/// merges their reports. `stop` ends the run early (each agent still reports).
pub fn run_agents(
    whole: &LoadConfig,
    launches: &[AgentLaunch],
    stop: &StopSignal,
    observer: &dyn WindowObserver,
    timeouts: AgentTimeouts,
) -> Result<Distributed, AgentError> {
    let plain = |reason: String| AgentError {
        reason,
        stderr_tail: String::new(),
    };
    let mut procs = Vec::with_capacity(launches.len());
    for l in launches {
        procs.push(AgentProc::spawn(l).map_err(|e| plain(format!("{e:#}")))?);
    }
    // Clocks and host facts. The first exchange includes the agent's start-up; of the
    // later ones, the shortest round trip bounds the offset best.
    let mut clocks = Vec::with_capacity(procs.len());
    for p in &mut procs {
        let mut best: Option<(HostFacts, i64, u64)> = None;
        for round in 0..CLOCK_ROUNDS {
            let t1 = unix_ns(SystemTime::now());
            let answer = p
                .send(&ToAgent::Hello { unix_ns: t1 })
                .and_then(|_| p.recv(Instant::now() + timeouts.hello));
            let t3 = unix_ns(SystemTime::now());
            match answer {
                Ok(FromAgent::Hello { unix_ns: t2, host }) => {
                    let half = t3.saturating_sub(t1) / 2;
                    let better = best.as_ref().is_none_or(|b| half < b.2);
                    if round > 0 && better || best.is_none() {
                        best = Some((host, clock_offset_ns(t1, t2, t3), half));
                    }
                }
                Ok(other) => return Err(p.fail(anyhow::anyhow!("expected hello, got {other:?}"))),
                Err(e) => return Err(p.fail(e)),
            }
        }
        clocks.extend(best);
    }
    // The common start, in each agent's clock.
    let lead = lead_time(launches);
    let start_wall = SystemTime::now() + lead;
    let start = Instant::now() + lead;
    for ((p, l), (_, offset, _)) in procs.iter_mut().zip(launches).zip(&clocks) {
        let at = unix_ns(start_wall) as i128 + *offset as i128;
        let msg = ToAgent::Run {
            config: Box::new(l.config.clone()),
            start_at_unix_ns: at.max(0) as u64,
        };
        if let Err(e) = p.send(&msg) {
            return Err(p.fail(e));
        }
    }
    // Replies that came early (an agent failed, or a request cap ended its run).
    let mut early: Vec<Option<FromAgent>> = procs.iter().map(|_| None).collect();
    let w = &whole.workload;
    let mut check = |procs: &mut Vec<AgentProc>| -> Result<bool, AgentError> {
        for (i, p) in procs.iter_mut().enumerate() {
            if early[i].is_some() {
                continue;
            }
            match p.lines.try_recv() {
                Ok(line) => match serde_json::from_str::<FromAgent>(&line) {
                    Ok(FromAgent::Error { message }) => {
                        return Err(p.fail(anyhow::anyhow!("agent {}: {message}", p.label)))
                    }
                    Ok(m) => early[i] = Some(m),
                    Err(e) => {
                        return Err(p.fail(anyhow::anyhow!(
                            "agent {} sent a bad message ({e}): {line}",
                            p.label
                        )))
                    }
                },
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => {
                    let e = anyhow::anyhow!("agent {} exited during the run", p.label);
                    return Err(p.fail(e));
                }
            }
        }
        Ok(early.iter().all(Option::is_some))
    };
    // Sleeps until `until`, watching the agents; false when the run ended first.
    let mut wait_until = |procs: &mut Vec<AgentProc>, until: Instant| -> Result<bool, AgentError> {
        loop {
            if check(procs)? || stop.is_fired() {
                return Ok(false);
            }
            let now = Instant::now();
            if now >= until {
                return Ok(true);
            }
            std::thread::sleep((until - now).min(Duration::from_millis(5)));
        }
    };
    let window = wait_until(&mut procs, start + w.warmup);
    let window = match window {
        Ok(true) => {
            observer.window_start();
            let r = wait_until(&mut procs, start + w.warmup + w.duration);
            observer.window_end();
            r.map(|_| ())
        }
        Ok(false) => Ok(()),
        Err(e) => Err(e),
    };
    window?;
    if stop.is_fired() {
        for p in &mut procs {
            drop(p.stdin.take());
        }
    }
    // Reports: every agent has its drain and connect timeouts, then some slack, past the end.
    let slack = whole.drain_timeout + whole.connect_timeout + Duration::from_secs(15) + lead;
    let deadline = start.max(Instant::now()) + w.warmup + w.duration + slack;
    let mut reports = Vec::with_capacity(procs.len());
    let mut records = Vec::with_capacity(procs.len());
    for (i, p) in procs.iter_mut().enumerate() {
        let msg = match early[i].take() {
            Some(m) => m,
            None => match p.recv(deadline) {
                Ok(m) => m,
                Err(e) => return Err(p.fail(e)),
            },
        };
        let (report, late) = match msg {
            FromAgent::Report {
                report,
                start_late_ns,
            } => (*report, start_late_ns),
            FromAgent::Error { message } => {
                return Err(p.fail(anyhow::anyhow!("agent {}: {message}", p.label)))
            }
            other => return Err(p.fail(anyhow::anyhow!("expected a report, got {other:?}"))),
        };
        let (host, offset, uncertainty) = clocks[i].clone();
        records.push(AgentRecord {
            label: p.label.clone(),
            host,
            clock_offset_ns: offset,
            clock_uncertainty_ns: uncertainty,
            start_late_ns: late,
            connections: launches[i].config.workload.connections,
            idle: launches[i].config.workload.idle,
            rate: launches[i].config.workload.rate,
            established: report.connections.established,
            sent: report.requests.sent,
            completed: report.requests.completed,
            failed: report.requests.failed,
            latency_count: report.latency.count,
            bytes_out: report.throughput.bytes_out,
            bytes_in: report.throughput.bytes_in,
            errors_total: report.errors_total,
            client_bound: report.client_bound,
        });
        reports.push(report);
    }
    for p in &mut procs {
        drop(p.stdin.take());
        let _ = p.child.wait();
    }
    let mut merged = merge_reports(whole, &reports).map_err(|e| plain(format!("{e:#}")))?;
    if let Some(worst) = records.iter().max_by_key(|r| r.start_late_ns) {
        if worst.start_late_ns > 50_000_000 {
            merged.flags.push(Flag {
                code: "agents_start_skew".into(),
                message: format!(
                    "agent {} started {} after the common start (its connections took longer \
                     than the lead time); the agents' windows overlap only in part",
                    worst.label,
                    crate::load::fmt_ns(worst.start_late_ns)
                ),
            });
        }
    }
    merged.agents = records.clone();
    Ok(Distributed {
        report: merged,
        agents: records,
    })
}
