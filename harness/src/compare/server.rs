//! The server under test as a child process: `harness serve`, pinned to the server cores.
//!
//! A crash, a hang or a backend that never becomes ready cannot take the harness down:
//! every wait here has a deadline, after which the child is killed and the cell is marked
//! failed with the tail of its stderr.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use backend_api::RunReport;

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
}

/// A running server child.
pub struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    /// Disconnects when the stderr reader reached end of file.
    stderr_eof: Receiver<()>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts the server and waits up to `ready_timeout` for its `READY` line.
    pub fn start(spec: &ServerSpec, ready_timeout: Duration) -> anyhow::Result<ServerProcess> {
        // `ip netns exec` execs the server in place: the pid measured stays the server's.
        let mut cmd = match &spec.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&spec.exe);
                c
            }
            None => Command::new(&spec.exe),
        };
        let listen = if spec.netns.is_some() {
            "0.0.0.0:0"
        } else {
            "127.0.0.1:0"
        };
        // No server outlives its compare: should compare die (or leave at a second Ctrl-C),
        // the kernel kills the server instead of leaving it on its cores.
        // SAFETY: the closure runs in the forked child before exec and only calls prctl,
        // which is async-signal-safe and allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.args([
            "serve",
            "--backend",
            &spec.backend,
            "--service",
            &spec.service,
            "--cores",
            &spec.cores,
            "--listen",
            listen,
        ])
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {} serve", spec.exe.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("server stdout")?;
        let stderr_pipe = child.stderr.take().context("server stderr")?;
        let (tx, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name("server-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .context("spawning the stdout reader")?;
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let (eof_tx, stderr_eof) = mpsc::channel::<()>();
        {
            let stderr = Arc::clone(&stderr);
            std::thread::Builder::new()
                .name("server-stderr".into())
                .spawn(move || {
                    let _eof = eof_tx;
                    for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
                        let mut tail = stderr.lock().unwrap_or_else(|p| p.into_inner());
                        if tail.len() == STDERR_TAIL_LINES {
                            tail.pop_front();
                        }
                        tail.push_back(line);
                    }
                })
                .context("spawning the stderr reader")?;
        }
        let mut proc = ServerProcess {
            child,
            stdin,
            lines,
            stderr,
            stderr_eof,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let deadline = Instant::now() + ready_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match proc.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("READY ") {
                        proc.addr = addr
                            .trim()
                            .parse()
                            .with_context(|| format!("server printed a bad READY line: {line}"))?;
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

    /// The server's process id.
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
    /// and a clean exit; kills it otherwise.
    pub fn stop(mut self, timeout: Duration) -> anyhow::Result<RunReport> {
        drop(self.stdin.take());
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
        report.ok_or_else(|| anyhow!("server exited without printing its stats"))
    }

    /// Kills the server at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}
