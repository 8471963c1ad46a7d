//! Servers in a child process, for cases that measure the server process itself
//! (descriptors, memory, CPU) or shrink its limits.
//!
//! The parent re-executes the current test binary, running only the macro-generated
//! `child_server_entry` test with `RINGSIDE_CONFORMANCE_CHILD=1`. The child starts the
//! backend, prints `RINGSIDE-READY <addr>`, serves until its stdin closes, stops the
//! server and prints `RINGSIDE-STOPPED <stop ms> <fds before start> <fds after stop>
//! <known leaks> <report json>`, where the descriptors after the stop do not count the
//! known leaks: those the backend recorded in [`backend_api::known_leaks`] during the run
//! that are still the same file.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_api::runner::{self, ServerConfig};
use backend_api::{Backend, RunReport, Service};

use crate::util::STOP_TIMEOUT;

const ENV_CHILD: &str = "RINGSIDE_CONFORMANCE_CHILD";
const ENV_SERVICE: &str = "RINGSIDE_CHILD_SERVICE";
const ENV_NOFILE: &str = "RINGSIDE_CHILD_NOFILE";
const ENV_MAX_CONNECTIONS: &str = "RINGSIDE_CHILD_MAX_CONNECTIONS";
const READY: &str = "RINGSIDE-READY ";
const STOPPED: &str = "RINGSIDE-STOPPED ";

/// How long a child may take to start serving (a fresh process on a loaded machine).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the child entry test lives in the current test binary.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    test_name: String,
    env: Vec<(String, String)>,
}

/// Limits a child server runs with, beyond the defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChildOptions {
    /// RLIMIT_NOFILE lowered to this.
    pub nofile: Option<u64>,
    /// `limits.max_connections` of its one shard.
    pub max_connections: Option<usize>,
}

impl ChildSpec {
    /// `module_path` is the `module_path!()` of the macro-generated module.
    pub fn new(module_path: &str) -> ChildSpec {
        // Test names omit the crate name: "conformance::child_server_entry".
        let within = module_path.split_once("::").map_or("", |(_, rest)| rest);
        let test_name = if within.is_empty() {
            "child_server_entry".to_string()
        } else {
            format!("{within}::child_server_entry")
        };
        ChildSpec {
            test_name,
            env: Vec::new(),
        }
    }

    /// Sets an environment variable for every child this spec starts (how a test binary
    /// tells its child entry which backend to build).
    pub fn env(mut self, key: &str, value: &str) -> ChildSpec {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Starts a child server running `service`, optionally with RLIMIT_NOFILE lowered.
    pub fn spawn(&self, service: Service, nofile: Option<u64>) -> ChildServer {
        self.spawn_with(
            service,
            ChildOptions {
                nofile,
                ..ChildOptions::default()
            },
        )
    }

    /// Starts a child server running `service` with `options`.
    pub fn spawn_with(&self, service: Service, options: ChildOptions) -> ChildServer {
        let exe = std::env::current_exe().expect("locating the test binary");
        let mut cmd = Command::new(exe);
        cmd.args([
            self.test_name.as_str(),
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(ENV_CHILD, "1")
        .env(ENV_SERVICE, service.as_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        if let Some(n) = options.nofile {
            cmd.env(ENV_NOFILE, n.to_string());
        }
        if let Some(n) = options.max_connections {
            cmd.env(ENV_MAX_CONNECTIONS, n.to_string());
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawning the child server");
        let stdin = child.stdin.take();
        // A thread reads the child's stdout, so that every wait for a line has a timeout.
        let stdout = BufReader::new(child.stdout.take().expect("child stdout"));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = loop {
            let line = match lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => line,
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    match e {
                        RecvTimeoutError::Timeout => panic!(
                            "child server did not print RINGSIDE-READY within {START_TIMEOUT:?}"
                        ),
                        RecvTimeoutError::Disconnected => panic!(
                            "child server exited before printing RINGSIDE-READY (see its stderr above)"
                        ),
                    }
                }
            };
            // libtest prints "test name ... " without a newline first: find the marker.
            if let Some(rest) = line.find(READY).map(|i| line[i + READY.len()..].trim()) {
                break rest.parse::<SocketAddr>().expect("child READY address");
            }
        };
        ChildServer {
            pid: child.id(),
            child,
            stdin,
            lines,
            addr,
        }
    }
}

/// A server running in a child process.
pub struct ChildServer {
    child: Child,
    stdin: Option<ChildStdin>,
    /// The child's stdout, line by line.
    lines: Receiver<String>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process id.
    pub pid: u32,
}

/// What the child reported when it stopped.
#[derive(Debug)]
pub struct ChildOutcome {
    /// Time from stop signal to every shard joined.
    pub stop_ms: u64,
    /// Descriptors open before the server started.
    pub fds_before: usize,
    /// Descriptors open after it stopped, not counting [`ChildOutcome::known_leaks`].
    pub fds_after: usize,
    /// Descriptors the backend recorded as known leaks during the run (a dependency still
    /// references them) and left open, still the same file when counted.
    pub known_leaks: usize,
    /// The server's stats.
    pub report: RunReport,
}

impl ChildServer {
    /// Resident set size of the child, in bytes.
    pub fn rss(&self) -> u64 {
        proc_status_kib(self.pid, "VmRSS:") * 1024
    }

    /// User plus system CPU time of the child so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .expect("reading child stat");
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let after = &stat[stat.rfind(')').expect("stat format") + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no memory-safety preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        ticks as f64 / hz
    }

    /// Descriptors the child has open now.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// What each of the child's descriptors points at ("socket:[123]",
    /// "anon_inode:[eventfd]"), by descriptor number: for messages that name a leak.
    pub fn fd_targets(&self) -> std::collections::BTreeMap<i32, String> {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{}/fd", self.pid)) else {
            return Default::default();
        };
        dir.flatten()
            .filter_map(|e| {
                let fd = e.file_name().to_string_lossy().parse().ok()?;
                let target = std::fs::read_link(e.path()).ok()?;
                Some((fd, target.to_string_lossy().into_owned()))
            })
            .collect()
    }

    /// Closes the child's stdin (its stop signal) and collects what it reports. Panics
    /// (after killing it) if the child has not reported its stop within [`STOP_TIMEOUT`].
    pub fn finish(mut self) -> ChildOutcome {
        drop(self.stdin.take());
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut out = String::new();
        let line = loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) => {
                    if let Some(i) = l.find(STOPPED) {
                        break l[i + STOPPED.len()..].to_string();
                    }
                    out.push_str(&l);
                    out.push('\n');
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!("child server did not stop within {STOP_TIMEOUT:?} of its stop signal");
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().expect("waiting for the child server");
                    panic!(
                        "child server did not report a clean stop ({status}); its output:\n{out}"
                    );
                }
            }
        };
        // The child prints its stop line last and exits: its stdout closes (bounded too).
        let exited = loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) => out.push_str(&l),
                Err(RecvTimeoutError::Disconnected) => break true,
                Err(RecvTimeoutError::Timeout) => break false,
            }
        };
        if !exited {
            let _ = self.child.kill();
        }
        let status = self.child.wait().expect("waiting for the child server");
        assert!(
            exited,
            "child server did not exit within {STOP_TIMEOUT:?} of its stop"
        );
        let mut parts = line.splitn(5, ' ');
        let mut num = || {
            parts
                .next()
                .expect("stop line")
                .parse::<u64>()
                .expect("stop line number")
        };
        let (stop_ms, fds_before, fds_after, known_leaks) =
            (num(), num() as usize, num() as usize, num() as usize);
        let report = serde_json::from_str(parts.next().expect("stop line report"))
            .expect("child report json");
        assert!(status.success(), "child server exited with {status}");
        ChildOutcome {
            stop_ms,
            fds_before,
            fds_after,
            known_leaks,
            report,
        }
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading child status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn count_own_fds() -> usize {
    // read_dir holds one descriptor of its own while listing.
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count().saturating_sub(1))
        .unwrap_or(0)
}

/// The child side. Returns at once unless started by [`ChildSpec::spawn`].
pub fn child_main(backend: Arc<dyn Backend>) {
    if std::env::var(ENV_CHILD).as_deref() != Ok("1") {
        return;
    }
    let service: Service = std::env::var(ENV_SERVICE)
        .expect("child service")
        .parse()
        .expect("child service name");
    if let Some(n) = std::env::var(ENV_NOFILE)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only touch the struct we own.
        unsafe {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            lim.rlim_cur = n;
            assert_eq!(
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim),
                0,
                "lowering RLIMIT_NOFILE"
            );
        }
    } else {
        crate::util::raise_nofile();
    }
    let leaks_before = backend_api::known_leaks::recorded();
    let fds_before = count_own_fds();
    let mut config = ServerConfig::new(service, crate::util::cores(1));
    if let Some(n) = std::env::var(ENV_MAX_CONNECTIONS)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        config.limits.max_connections = n;
    }
    let server = runner::start(backend, config).expect("child: starting server");
    println!("\n{READY}{}", server.local_addr());
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    let t0 = Instant::now();
    let report = server
        .stop()
        .unwrap_or_else(|e| panic!("child: server did not stop cleanly: {e}"));
    let stop_ms = t0.elapsed().as_millis() as u64;
    let known = backend_api::known_leaks::still_open()
        .into_iter()
        .filter(|l| !leaks_before.contains(l))
        .count();
    let fds_after = count_own_fds().saturating_sub(known);
    println!(
        "\n{STOPPED}{stop_ms} {fds_before} {fds_after} {known} {}",
        serde_json::to_string(&report).expect("report json")
    );
}
