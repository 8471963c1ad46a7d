//! The server under test as a child process: `harness serve`, pinned to the server cores.
//!
//! A crash, a hang or a backend that never becomes ready cannot take the harness down:
//! every wait here has a deadline, after which the child is killed and the cell is marked
//! failed with the tail of its stderr. An external server (a user's command) is started
//! the same way, pinned, in a process group of its own, and stopped with SIGTERM to the
//! group. Under `--topology ssh` the child is the `ssh` that runs `harness serve
//! --ledger-stdin` on the server host: the same pipes, READY line and stop, plus the
//! ledger's marks ([`super::remote`]).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use backend_api::RunReport;

use super::cgroup::{self, CpuCgroup};
use super::external::External;

/// Lines of stderr kept for a failure report.
const STDERR_TAIL_LINES: usize = 40;

/// What the server is asked to run.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// Binary that implements `serve` (normally this harness's own executable).
    pub exe: PathBuf,
    /// Backend name.
    pub backend: String,
    /// "echo" or "http".
    pub service: String,
    /// Server cores as a CPU list.
    pub cores: String,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Network namespace to run in (`--topology netns`): the server then listens on every
    /// address of that namespace instead of 127.0.0.1.
    pub netns: Option<String>,
    /// The server host (`--topology ssh`): the server runs there, started over ssh, listens
    /// on every address and measures itself.
    pub ssh: Option<crate::topology::SshServer>,
}

/// A running server child.
pub struct ServerProcess {
    child: Child,
    /// Shared with the ledger's [`super::remote::Link`] under ssh.
    stdin: Arc<Mutex<Option<ChildStdin>>>,
    lines: Receiver<String>,
    /// The server's `LEDGER` lines (ssh), until [`ServerProcess::ledger_link`] takes them.
    ledger: Option<Receiver<String>>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    /// Disconnects when the stderr reader reached end of file.
    stderr_eof: Receiver<()>,
    /// An external server's process group (its id): stopped by SIGTERM to the group.
    group: Option<i32>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The server's own cgroup (its CPU time, every task included), or why there is none.
    /// Declared last: it is removed after the child has been reaped.
    pub cgroup: Result<CpuCgroup, String>,
}

impl ServerProcess {
    /// Starts the server and waits up to `ready_timeout` for its `READY` line.
    pub fn start(spec: &ServerSpec, ready_timeout: Duration) -> anyhow::Result<ServerProcess> {
        // `ip netns exec` execs the server in place: the pid measured stays the server's.
        let mut cmd = match (&spec.netns, &spec.ssh) {
            (_, Some(ssh)) => {
                let (prog, rest) = ssh.ssh.split_first().context("empty ssh command line")?;
                let mut c = Command::new(prog);
                c.args(rest);
                c
            }
            (Some(ns), None) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&spec.exe);
                c
            }
            (None, None) => Command::new(&spec.exe),
        };
        let listen = if spec.netns.is_some() || spec.ssh.is_some() {
            "0.0.0.0:0"
        } else {
            "127.0.0.1:0"
        };
        // Measured on its host, by itself: there is no local group to put it in.
        let cgroup = match &spec.ssh {
            Some(ssh) => Err(format!(
                "the server runs on {} and is measured there",
                ssh.label
            )),
            None => CpuCgroup::create(),
        };
        let cgroup_fd = cgroup.as_ref().ok().map(CpuCgroup::procs_fd);
        // The whole server process on its cores: compare itself runs on the client cores,
        // and a child would inherit that mask. Not the ssh client of a remote server: its
        // cores are the server host's, and ssh stays on the client cores.
        let set = match &spec.ssh {
            Some(_) => None,
            None => Some(crate::cores::cpu_set(
                &crate::cores::parse_core_list(&spec.cores).context("the server's core list")?,
            )),
        };
        // No server outlives its compare: should compare die (or leave at a second Ctrl-C),
        // the kernel kills the server instead of leaving it on its cores.
        // SAFETY: the closure runs in the forked child before exec and only calls prctl,
        // sched_setaffinity and one write(2) to an inherited descriptor, all
        // async-signal-safe, allocating nothing; `set` is a plain value copied in.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1
                    || set.is_some_and(|set| {
                        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
                            == -1
                    })
                {
                    return Err(std::io::Error::last_os_error());
                }
                // Joined before exec, so every task the server ever creates is counted.
                if let Some(fd) = cgroup_fd {
                    cgroup::join_current(fd)?;
                }
                Ok(())
            });
        }
        let serve = [
            "serve",
            "--backend",
            &spec.backend,
            "--service",
            &spec.service,
            "--cores",
            &spec.cores,
            "--listen",
            listen,
        ];
        match &spec.ssh {
            // One command line for the remote shell; the environment goes through env(1).
            Some(ssh) => {
                let mut words = Vec::new();
                if !spec.env.is_empty() {
                    words.push("env".to_string());
                    for (k, v) in &spec.env {
                        words.push(crate::topology::shell_word(&format!("{k}={v}")));
                    }
                }
                words.push(ssh.remote_exe.to_string_lossy().into_owned());
                words.extend(serve.iter().map(|w| crate::topology::shell_word(w)));
                words.push("--ledger-stdin".into());
                cmd.arg(words.join(" "));
            }
            None => {
                cmd.args(serve).envs(spec.env.iter().map(|(k, v)| (k, v)));
            }
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "starting {} serve{}",
                spec.exe.display(),
                cgroup.as_ref().map_or(String::new(), |g| format!(
                    " in cgroup {}",
                    g.dir().display()
                ))
            )
        })?;
        let stdin = Arc::new(Mutex::new(child.stdin.take()));
        let stdout = child.stdout.take().context("server stdout")?;
        let stderr_pipe = child.stderr.take().context("server stderr")?;
        let (tx, lines) = mpsc::channel();
        let (ledger_tx, ledger) = mpsc::channel();
        std::thread::Builder::new()
            .name("server-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let sent = if line.starts_with(super::remote::LEDGER_PREFIX) {
                        // Nobody listening (yet, or any more) is no reason to stop reading.
                        let _ = ledger_tx.send(line);
                        Ok(())
                    } else {
                        tx.send(line)
                    };
                    if sent.is_err() {
                        break;
                    }
                }
            })
            .context("spawning the stdout reader")?;
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let stderr_eof = keep_tail(stderr_pipe, &stderr)?;
        let mut proc = ServerProcess {
            child,
            stdin,
            lines,
            ledger: spec.ssh.is_some().then_some(ledger),
            stderr,
            stderr_eof,
            group: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            cgroup,
        };
        let deadline = Instant::now() + ready_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match proc.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("READY ") {
                        let bound: SocketAddr = addr
                            .trim()
                            .parse()
                            .with_context(|| format!("server printed a bad READY line: {line}"))?;
                        // It listens on every address there: the agents aim at the host's.
                        proc.addr = match &spec.ssh {
                            Some(ssh) => ssh.address(bound.port())?,
                            None => bound,
                        };
                        return Ok(proc);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    proc.kill();
                    bail!(
                        "server did not print READY within {:.0?}; killed",
                        ready_timeout
                    );
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = proc.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    bail!("server exited before READY ({status})");
                }
            }
        }
    }

    /// The ledger's link to a server that measures itself (`--topology ssh`); None for a
    /// local server, or once taken.
    pub fn ledger_link(&mut self) -> Option<super::remote::Link> {
        let answers = self.ledger.take()?;
        Some(super::remote::Link::new(Arc::clone(&self.stdin), answers))
    }

    /// The server's process id (under ssh, that of the local ssh client).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the child has not exited.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Last lines of the server's stderr. Once the server has exited, waits (briefly) for
    /// its last lines to be read: the reason it died is usually the very last one.
    pub fn stderr_tail(&mut self) -> String {
        if !self.is_alive() {
            let _ = self.stderr_eof.recv_timeout(Duration::from_secs(2));
        }
        let tail = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Asks the server to stop (closes its stdin), waits up to `timeout` for its stats line
    /// and a clean exit; kills it otherwise. An external server is sent SIGTERM instead
    /// (its whole process group) and has no stats line: `None`.
    pub fn stop(mut self, timeout: Duration) -> anyhow::Result<Option<RunReport>> {
        if let Some(group) = self.group {
            return self.stop_group(group, timeout).map(|()| None);
        }
        drop(self.stdin.lock().unwrap_or_else(|p| p.into_inner()).take());
        let deadline = Instant::now() + timeout;
        let mut report = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with('{') => {
                    report = Some(
                        serde_json::from_str::<RunReport>(&line)
                            .with_context(|| format!("server stats line is not valid: {line}"))?,
                    );
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    self.kill();
                    bail!(
                        "server did not stop within {:.0?} of being asked; killed",
                        timeout
                    );
                }
            }
        }
        let status = self.child.wait().context("waiting for the server")?;
        if !status.success() {
            return Err(anyhow!("server exited with {status}"));
        }
        report
            .map(Some)
            .ok_or_else(|| anyhow!("server exited without printing its stats"))
    }

    /// Kills the server at once (SIGKILL; an external server's whole group) and reaps it.
    pub fn kill(&mut self) {
        drop(self.stdin.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(group) = self.group {
            // SAFETY: kill has no memory-safety preconditions; the group is the one
            // setpgid made for this child, so no other process is signalled.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts an external server: the command's words with the placeholders filled in,
    /// pinned to `cores` (the affinity is set before exec and inherited by every process
    /// it forks), in a process group of its own, killed should the harness die. Waits up
    /// to `ready_timeout` until it accepts a connection on the port chosen here.
    pub fn start_external(
        ext: &External,
        cores: &[usize],
        env: &[(String, String)],
        ready_timeout: Duration,
    ) -> Result<ServerProcess, StartFailed> {
        let failed = |reason: String, stderr_tail: String| StartFailed {
            reason,
            stderr_tail,
        };
        let addr = free_port().map_err(|e| failed(format!("{e:#}"), String::new()))?;
        let list = crate::cores::format_core_list(cores);
        let argv = ext
            .argv(addr, &list)
            .map_err(|e| failed(format!("{e:#}"), String::new()))?;
        let set = crate::cores::cpu_set(cores);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its own cgroup, as for a built-in backend: every process it forks is counted, and
        // one left behind by a killed harness is found there and killed at the next start.
        let cgroup = CpuCgroup::create();
        let cgroup_fd = cgroup.as_ref().ok().map(CpuCgroup::procs_fd);
        // SAFETY: the closure runs in the forked child before exec and calls only setpgid,
        // sched_setaffinity, prctl and one write(2) to an inherited descriptor, which are
        // async-signal-safe and allocate nothing; `set` is a plain value copied into the
        // closure.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setpgid(0, 0) == -1
                    || libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
                        == -1
                    || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1
                {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(fd) = cgroup_fd {
                    cgroup::join_current(fd)?;
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            failed(
                format!(
                    "starting external server {} (`{}`): {e}; check the command exists and is executable",
                    ext.name,
                    argv.join(" ")
                ),
                String::new(),
            )
        })?;
        let group = child.id() as i32;
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let readers = child
            .stdout
            .take()
            .zip(child.stderr.take())
            .context("external server pipes")
            .and_then(|(out, err)| {
                // Its stdout joins the tail: a program's complaint may go to either.
                let out_eof = keep_tail(out, &stderr)?;
                let err_eof = keep_tail(err, &stderr)?;
                Ok((out_eof, err_eof))
            });
        let (_out_eof, stderr_eof) = match readers {
            Ok(r) => r,
            Err(e) => {
                // SAFETY: as in `kill`.
                unsafe { libc::kill(-group, libc::SIGKILL) };
                let _ = child.wait();
                return Err(failed(format!("{e:#}"), String::new()));
            }
        };
        let (_never, lines) = mpsc::channel();
        let mut proc = ServerProcess {
            child,
            stdin: Arc::new(Mutex::new(None)),
            lines,
            ledger: None,
            stderr,
            stderr_eof,
            group: Some(group),
            addr,
            cgroup,
        };
        let deadline = Instant::now() + ready_timeout;
        loop {
            if let Ok(Some(status)) = proc.child.try_wait() {
                let tail = proc.stderr_tail();
                proc.kill();
                return Err(failed(
                    format!(
                        "external server {} exited ({status}) before accepting on {addr}",
                        ext.name
                    ),
                    tail,
                ));
            }
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(proc);
            }
            if Instant::now() >= deadline {
                let tail = proc.stderr_tail();
                proc.kill();
                return Err(failed(
                    format!(
                        "external server {} did not accept on {addr} within {ready_timeout:.0?} (`{}`; does it listen on {{port}} or {{addr}}?); killed",
                        ext.name,
                        argv.join(" ")
                    ),
                    tail,
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM to the group, then waits up to `timeout` until every process of it is
    /// gone; SIGKILL to the group after that.
    fn stop_group(&mut self, group: i32, timeout: Duration) -> anyhow::Result<()> {
        // SAFETY: kill has no memory-safety preconditions; the group is this child's own.
        unsafe { libc::kill(-group, libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        let mut status = None;
        loop {
            if status.is_none() {
                status = self.child.try_wait().ok().flatten();
            }
            // SAFETY: signal 0 only checks that some process of the group exists.
            let group_left = unsafe { libc::kill(-group, 0) } == 0;
            if status.is_some() && !group_left {
                break;
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!(
                    "external server did not stop within {timeout:.0?} of SIGTERM; its process                      group was killed"
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        match status {
            // Killed by the SIGTERM, or a shell reporting it was (128 + the signal).
            Some(s)
                if s.success()
                    || s.signal() == Some(libc::SIGTERM)
                    || s.code() == Some(128 + libc::SIGTERM) =>
            {
                Ok(())
            }
            Some(s) => Err(anyhow!("external server exited with {s} on SIGTERM")),
            None => Ok(()),
        }
    }
}

/// Why a server did not come up, with what it said.
#[derive(Debug)]
pub struct StartFailed {
    /// What went wrong.
    pub reason: String,
    /// Last lines of its output.
    pub stderr_tail: String,
}

/// A port on 127.0.0.1 that is free now: bound without SO_REUSEPORT and released, so no
/// other server was listening on it (a second listener with SO_REUSEPORT would share it).
fn free_port() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("choosing a free port")?;
    l.local_addr().context("choosing a free port")
}

/// Keeps the last [`STDERR_TAIL_LINES`] lines of `pipe` in `tail`; the receiver
/// disconnects at end of file.
fn keep_tail(
    pipe: impl std::io::Read + Send + 'static,
    tail: &Arc<Mutex<VecDeque<String>>>,
) -> anyhow::Result<Receiver<()>> {
    let (eof_tx, eof) = mpsc::channel::<()>();
    let tail = Arc::clone(tail);
    std::thread::Builder::new()
        .name("server-stderr".into())
        .spawn(move || {
            let _eof = eof_tx;
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                if tail.len() == STDERR_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        })
        .context("spawning the stderr reader")?;
    Ok(eof)
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // An external server's group may outlive its first process (orphaned workers).
        if self.group.is_some() || matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}
