//! The `perf` tool: whether it runs here (and if not, the package or sysctl that fixes it),
//! recording a process's CPU samples with call chains, and turning them into folded stacks
//! with inferno.

use std::fs;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use inferno::collapse::Collapse;

/// Sampling period of the cpu-clock event, in ns of CPU time: one sample per 250 µs that a
/// thread of the server is on a CPU (4 kHz), light enough to leave the server's cost per
/// request nearly as it is.
pub const PERIOD_NS: u64 = 250_000;

/// How long perf may take to write its file after being asked to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `perf script` may run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

const PARANOID: &str = "/proc/sys/kernel/perf_event_paranoid";

/// A perf that was checked to record kernel call chains here.
#[derive(Debug, Clone)]
pub struct Perf {
    exe: PathBuf,
    /// `perf --version`.
    pub version: String,
}

/// Why profiling cannot run here, with the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// No perf binary.
    #[error(
        "perf is not installed (or not on PATH): install Debian's linux-perf package \
         (apt-get install linux-perf, or scripts/install-deps.sh)"
    )]
    Missing,
    /// The sysctl forbids it.
    #[error(
        "kernel.perf_event_paranoid is {0}: sampling kernel call chains of the server needs 1 \
         or lower when not root: sudo sysctl -w kernel.perf_event_paranoid=1"
    )]
    Paranoid(i64),
    /// perf ran but could not record.
    #[error(
        "perf cannot record here ({0}); kernel.perf_event_paranoid is {1} (sampling needs 1 or \
         lower, or root: sudo sysctl -w kernel.perf_event_paranoid=1)"
    )]
    Refused(String, String),
}

fn paranoid_level() -> Option<i64> {
    fs::read_to_string(PARANOID).ok()?.trim().parse().ok()
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs `cmd` to completion within `timeout`, returning (success, stdout, stderr).
fn run_bounded(cmd: &mut Command, timeout: Duration) -> anyhow::Result<(bool, String, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let out = child.stdout.take().context("child stdout")?;
    let err = child.stderr.take().context("child stderr")?;
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let (o, e) = (read_all(Box::new(out)), read_all(Box::new(err)));
    let ok = wait_deadline(&mut child, timeout)?;
    Ok((
        ok,
        o.join().unwrap_or_default(),
        e.join().unwrap_or_default(),
    ))
}

/// Waits for `child` until `timeout`; kills it past that. True for a successful exit.
fn wait_deadline(child: &mut Child, timeout: Duration) -> anyhow::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.success());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("did not finish within {timeout:.0?}; killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn last_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("no message")
        .to_string()
}

/// Checks that perf exists and may sample kernel call chains: the sysctl first, then a real
/// recording of `true` (containers and seccomp can refuse what the sysctl allows).
pub fn check() -> Result<Perf, Unavailable> {
    let exe = find_on_path("perf").ok_or(Unavailable::Missing)?;
    let version = match run_bounded(Command::new(&exe).arg("--version"), Duration::from_secs(20)) {
        Ok((true, out, _)) => out.trim().to_string(),
        // Debian's /usr/bin/perf is a wrapper that fails when no perf of a matching
        // version is installed.
        Ok((false, _, err)) => {
            return Err(Unavailable::Refused(
                format!("perf --version failed: {}", last_line(&err)),
                paranoid_text(),
            ))
        }
        Err(_) => return Err(Unavailable::Missing),
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if let Some(level) = paranoid_level() {
        if level > 1 && !root {
            return Err(Unavailable::Paranoid(level));
        }
    }
    let tmp = std::env::temp_dir().join(format!("ringside-perf-check-{}.data", std::process::id()));
    let probe = run_bounded(
        Command::new(&exe)
            .args(["record", "-q", "-N", "-e", "cpu-clock", "-g", "-o"])
            .arg(&tmp)
            .args(["--", "true"]),
        Duration::from_secs(30),
    );
    let _ = fs::remove_file(&tmp);
    let _ = fs::remove_file(tmp.with_extension("data.old"));
    match probe {
        Ok((true, _, _)) => Ok(Perf { exe, version }),
        Ok((false, _, err)) => Err(Unavailable::Refused(last_line(&err), paranoid_text())),
        Err(e) => Err(Unavailable::Refused(format!("{e:#}"), paranoid_text())),
    }
}

fn paranoid_text() -> String {
    paranoid_level().map_or_else(|| "unknown".to_string(), |l| l.to_string())
}

/// CLOCK_MONOTONIC now, in seconds: the clock perf stamps samples with (`-k monotonic`),
/// so a window measured here selects the same samples in `perf script --time`.
pub fn monotonic_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// A running `perf record -p PID`.
pub struct Recording {
    child: Child,
    data: PathBuf,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Perf {
    /// Starts sampling every thread of `pid` (those that exist now and those they create,
    /// io_uring's io-wq workers included) on cpu-clock with kernel and user call chains,
    /// into `data`.
    pub fn record(&self, pid: u32, data: &Path) -> anyhow::Result<Recording> {
        let mut child = Command::new(&self.exe)
            .args(["record", "-q", "-N", "-e", "cpu-clock", "-c"])
            .arg(PERIOD_NS.to_string())
            .args(["-g", "-k", "monotonic", "-p"])
            .arg(pid.to_string())
            .arg("-o")
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} record", self.exe.display()))?;
        let mut err = child.stderr.take().context("perf stderr")?;
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Ok(Recording {
            child,
            data: data.to_path_buf(),
            stderr: Some(stderr),
        })
    }

    /// Folds the samples of `data` taken between `from_s` and `to_s` (CLOCK_MONOTONIC
    /// seconds) into inferno's folded format, kernel frames suffixed `_[k]`.
    pub fn fold(&self, data: &Path, from_s: f64, to_s: f64) -> anyhow::Result<String> {
        let mut child = Command::new(&self.exe)
            .arg("script")
            .arg("-i")
            .arg(data)
            // Inline frames come from addr2line and take minutes on a large binary.
            .args(["--no-inline", "--time"])
            .arg(format!("{from_s:.6},{to_s:.6}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} script", self.exe.display()))?;
        let out = child.stdout.take().context("perf script stdout")?;
        let mut err = child.stderr.take().context("perf script stderr")?;
        let err_thread = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        // perf script writes as it goes; the deadline kills it should it hang.
        let pid = child.id();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if done_rx.recv_timeout(SCRIPT_TIMEOUT)
                == Err(std::sync::mpsc::RecvTimeoutError::Timeout)
            {
                // SAFETY: kill has no memory-safety preconditions; pid is our unreaped child.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        });
        let folding = fold_script(BufReader::new(out));
        let status = child.wait().context("waiting for perf script")?;
        drop(done_tx);
        let _ = watchdog.join();
        let err = err_thread.join().unwrap_or_default();
        if !status.success() {
            bail!(
                "perf script -i {} failed ({status}): {}",
                data.display(),
                last_line(&err)
            );
        }
        folding.with_context(|| format!("folding the samples of {}", data.display()))
    }
}

/// Folds `perf script` output with inferno: one line per distinct stack, root (the thread's
/// command) first, kernel frames suffixed `_[k]`.
pub fn fold_script<R: std::io::BufRead>(script: R) -> anyhow::Result<String> {
    let mut folded = Vec::new();
    let mut opts = inferno::collapse::perf::Options::default();
    opts.annotate_kernel = true;
    opts.nthreads = 1;
    inferno::collapse::perf::Folder::from(opts)
        .collapse(script, &mut folded)
        .context("folding perf script output")?;
    String::from_utf8(folded).context("folded stacks are not UTF-8")
}

impl Recording {
    /// Stops recording (SIGINT, as Ctrl-C would) and waits for perf to write its file.
    pub fn stop(mut self) -> anyhow::Result<PathBuf> {
        // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let ok = wait_deadline(&mut self.child, STOP_TIMEOUT).context("perf record")?;
        let err = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        // perf exits 0 or with SIGINT's status after a clean stop; the file tells.
        let written = fs::metadata(&self.data)
            .map(|m| m.len() > 0)
            .unwrap_or(false);
        if !written {
            bail!(
                "perf record wrote no samples to {} ({}): {}",
                self.data.display(),
                if ok { "exit 0" } else { "failed" },
                last_line(&err)
            );
        }
        Ok(self.data.clone())
    }

    /// True while perf runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
