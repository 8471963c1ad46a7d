//! Servers in a child process, for cases that measure the server process itself
//! (descriptors, memory, CPU) or shrink its limits.
//!
//! The parent re-executes the current test binary, running only the macro-generated
//! `child_server_entry` test with `RINGSIDE_CONFORMANCE_CHILD=1`. The child starts the
//! backend, prints `RINGSIDE-READY <addr>`, serves until its stdin closes, stops the
//! server and prints `RINGSIDE-STOPPED <stop ms> <fds before start> <fds after stop> <report json>`.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use backend_api::runner::{self, ServerConfig};
use backend_api::{Backend, RunReport, Service};

const ENV_CHILD: &str = "RINGSIDE_CONFORMANCE_CHILD";
const ENV_SERVICE: &str = "RINGSIDE_CHILD_SERVICE";
const ENV_NOFILE: &str = "RINGSIDE_CHILD_NOFILE";
const READY: &str = "RINGSIDE-READY ";
const STOPPED: &str = "RINGSIDE-STOPPED ";

/// Where the child entry test lives in the current test binary.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    test_name: String,
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
        ChildSpec { test_name }
    }

    /// Starts a child server running `service`, optionally with RLIMIT_NOFILE lowered.
    pub fn spawn(&self, service: Service, nofile: Option<u64>) -> ChildServer {
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
        if let Some(n) = nofile {
            cmd.env(ENV_NOFILE, n.to_string());
        }
        let mut child = cmd.spawn().expect("spawning the child server");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("child stdout"));
        let addr = loop {
            let mut line = String::new();
            if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                let _ = child.kill();
                panic!("child server exited before printing RINGSIDE-READY (see its stderr above)");
            }
            // libtest prints "test name ... " without a newline first: find the marker.
            if let Some(rest) = line.find(READY).map(|i| line[i + READY.len()..].trim()) {
                break rest.parse::<SocketAddr>().expect("child READY address");
            }
        };
        ChildServer {
            pid: child.id(),
            child,
            stdin,
            stdout,
            addr,
        }
    }
}

/// A server running in a child process.
pub struct ChildServer {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
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
    /// Descriptors open after it stopped.
    pub fds_after: usize,
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

    /// Closes the child's stdin (its stop signal) and collects what it reports.
    pub fn finish(mut self) -> ChildOutcome {
        drop(self.stdin.take());
        let mut out = String::new();
        let _ = self.stdout.read_to_string(&mut out);
        let status = self.child.wait().expect("waiting for the child server");
        let line = out
            .lines()
            .find_map(|l| l.find(STOPPED).map(|i| &l[i + STOPPED.len()..]))
            .unwrap_or_else(|| {
                panic!("child server did not report a clean stop ({status}); its output:\n{out}")
            });
        let mut parts = line.splitn(4, ' ');
        let mut num = || {
            parts
                .next()
                .expect("stop line")
                .parse::<u64>()
                .expect("stop line number")
        };
        let (stop_ms, fds_before, fds_after) = (num(), num() as usize, num() as usize);
        let report = serde_json::from_str(parts.next().expect("stop line report"))
            .expect("child report json");
        assert!(status.success(), "child server exited with {status}");
        ChildOutcome {
            stop_ms,
            fds_before,
            fds_after,
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
    let fds_before = count_own_fds();
    let server = runner::start(backend, ServerConfig::new(service, crate::util::cores(1)))
        .expect("child: starting server");
    println!("\n{READY}{}", server.local_addr());
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    let t0 = Instant::now();
    let report = server
        .stop()
        .unwrap_or_else(|e| panic!("child: server did not stop cleanly: {e}"));
    let stop_ms = t0.elapsed().as_millis() as u64;
    let fds_after = count_own_fds();
    println!(
        "\n{STOPPED}{stop_ms} {fds_before} {fds_after} {}",
        serde_json::to_string(&report).expect("report json")
    );
}
