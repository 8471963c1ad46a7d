//! `--topology ssh` against a local sshd these tests start (their own host and user keys
//! in a temporary directory, 127.0.0.1 only): `harness load`'s agents started over ssh
//! merge to the sum of their parts and record their host's facts; `harness compare` starts
//! its server over ssh on --server-host, reads its ledger there, and leaves no process
//! behind on a normal exit or a SIGINT. Without sshd the tests fail with the install hint
//! (CI installs it with scripts/install-deps.sh --ci).

mod util;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backend_api::Service;
use harness::load::read_report;
use harness::results::CellStatus;
use util::run::{eventually, results_in, run_bounded, wait_with_timeout};
use util::*;

/// One sshd test at a time: the leftover-process checks look at every process of this
/// test binary's harness.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd, killed on drop.
struct Sshd {
    child: Child,
    port: u16,
    key: PathBuf,
}

impl Sshd {
    /// The `--ssh-opt` values that reach it.
    fn opts(&self) -> Vec<String> {
        vec![
            format!("Port={}", self.port),
            format!("IdentityFile={}", self.key.display()),
            "UserKnownHostsFile=/dev/null".to_string(),
            "StrictHostKeyChecking=no".to_string(),
            "LogLevel=ERROR".to_string(),
        ]
    }

    /// `--ssh-opt` flags for every option.
    fn opt_args(&self) -> Vec<String> {
        self.opts()
            .into_iter()
            .flat_map(|o| ["--ssh-opt".to_string(), o])
            .collect()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen (openssh-client) is missing: scripts/install-deps.sh --ci");
    assert!(ok.success(), "ssh-keygen failed");
}

fn start_sshd(dir: &Path) -> Sshd {
    assert!(
        Path::new(SSHD).exists(),
        "{SSHD} is missing: install openssh-server (scripts/install-deps.sh --ci installs it)"
    );
    keygen(&dir.join("host_key"));
    keygen(&dir.join("user_key"));
    std::fs::copy(dir.join("user_key.pub"), dir.join("authorized_keys")).unwrap();
    // sshd refuses to start without its privilege separation directory.
    std::fs::create_dir_all("/run/sshd").unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "ListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nStrictModes no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
             PermitRootLogin prohibit-password\nPidFile {}\n",
            dir.join("host_key").display(),
            dir.join("authorized_keys").display(),
            dir.join("sshd.pid").display(),
        ),
    )
    .unwrap();
    let child = Command::new(SSHD)
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .args(["-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sshd = Sshd {
        child,
        port,
        key: dir.join("user_key"),
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let t0 = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "sshd did not listen on {addr} within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    sshd
}

#[test]
fn load_over_ssh_agents_merges_exactly_and_records_their_hosts() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let sshd = start_sshd(dir.path());
    let server = start(epoll_et(), Service::Echo);
    let json = dir.path().join("r.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harness"));
    cmd.args(["load", "--workload", "echo", "-c", "5", "-d", "1s"])
        .args([
            "--warmup",
            "200ms",
            "--topology",
            "ssh",
            "--client-hosts",
            "127.0.0.1",
        ])
        .args(["--client-procs", "2", "--cores", &client_core().to_string()])
        .args([
            "--remote-harness",
            env!("CARGO_BIN_EXE_harness"),
            "--target",
        ])
        .arg(server.local_addr().to_string())
        .arg("--json")
        .arg(&json)
        .args(sshd.opt_args());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_with_timeout(&mut child, Duration::from_secs(60));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{err}");
    let r = read_report(&json).unwrap();
    let counted = stop(server).total;
    assert_eq!(r.agents.len(), 2);
    assert!(r.requests.completed > 0);
    assert_eq!(
        r.requests.completed,
        r.agents.iter().map(|a| a.completed).sum::<u64>()
    );
    assert_eq!(
        r.latency.count,
        r.agents.iter().map(|a| a.latency_count).sum::<u64>()
    );
    assert_eq!(
        counted.accepted,
        r.connections.connects_ok + r.connections.preflight
    );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    for a in &r.agents {
        assert!(a.label.starts_with("ssh 127.0.0.1"), "{}", a.label);
        assert_eq!(a.host.kernel, kernel.trim(), "host facts came back");
        assert!(a.host.online_cores >= 1 && !a.host.cpu_model.is_empty());
        assert!(a.host.pid != 0);
    }
    let pids: std::collections::BTreeSet<u32> = r.agents.iter().map(|a| a.host.pid).collect();
    assert_eq!(pids.len(), 2, "two agent processes behind sshd");
    drop(sshd);
}

/// `harness serve` and `harness agent` processes of this test binary's harness, wherever
/// they were started from (sshd gives them a fresh environment, so no tag reaches them).
fn harness_processes() -> Vec<(u32, String)> {
    let exe = env!("CARGO_BIN_EXE_harness").as_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let argv: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
            let mode = argv.get(1).copied()?;
            (argv[0] == exe && (mode == b"serve" || mode == b"agent"))
                .then(|| (pid, String::from_utf8_lossy(&cmd).replace('\0', " ")))
        })
        .collect()
}

fn assert_no_harness_left() {
    let mut left = Vec::new();
    eventually(
        "no harness serve or agent process left",
        Duration::from_secs(10),
        || {
            left = harness_processes();
            left.is_empty()
        },
    );
    assert!(left.is_empty(), "{left:?}");
}

fn compare_over_ssh(sshd: &Sshd, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harness"));
    cmd.args(["compare", "--no-plots", "--backends", "epoll-et"])
        .args(["--topology", "ssh", "--server-host", "127.0.0.1"])
        .args(["--client-hosts", "127.0.0.1", "--remote-harness"])
        .arg(env!("CARGO_BIN_EXE_harness"))
        .args(sshd.opt_args())
        .arg("--out")
        .arg(out)
        .args(extra)
        .stdin(Stdio::null());
    cmd
}

#[test]
fn compare_over_ssh_measures_the_server_on_its_host() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let sshd = start_sshd(dir.path());
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let ran = run_bounded(
        &mut compare_over_ssh(&sshd, &out, &["--quick"]),
        Duration::from_secs(240),
    );
    assert!(ran.status.success(), "{}", ran.stderr);
    let r = results_in(&out);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let topo = r
        .manifest
        .topology
        .as_ref()
        .expect("topology in the manifest");
    assert_eq!(topo.server_host.as_deref(), Some("127.0.0.1"));
    assert_eq!(topo.client_hosts, vec!["127.0.0.1".to_string()]);
    assert!(!r.cells.is_empty());
    for c in &r.cells {
        assert_eq!(c.status, CellStatus::Ok, "{} {}", c.group, ran.stderr);
        let ledger = c.ledger.as_ref().expect("a ledger");
        assert!(ledger.server_cpu_ns.unwrap_or(0) > 0, "{}", c.group);
        assert!(
            ledger.server_cpu_method.starts_with("remote ")
                && ledger.server_cpu_method.ends_with(" via ssh"),
            "{}: {}",
            c.group,
            ledger.server_cpu_method
        );
        assert_eq!(
            ledger.server_cores.len(),
            c.server_cores.len(),
            "{}: the server host's per-core breakdown",
            c.group
        );
        assert!(ledger.window_s > 0.0, "{}", c.group);
        let client = c.client.as_ref().unwrap();
        assert!(client.requests > 0, "{}", c.group);
        assert!(!c.agents.is_empty());
        assert_eq!(
            client.requests,
            c.agents.iter().map(|a| a.completed).sum::<u64>(),
            "{}: merged requests are the agents' sum",
            c.group
        );
        let server = c.server.as_ref().expect("server cost");
        assert!(server.rss_peak_bytes > 0, "{}", c.group);
        let host = c.server_host.as_ref().expect("the server host's facts");
        assert_eq!(host.label, "127.0.0.1");
        assert_eq!(host.host.kernel, kernel.trim(), "{}", c.group);
        assert!(host.host.online_cores >= 1 && !host.host.cpu_model.is_empty());
        assert!(host.host.pid != 0 && host.host.pid != ran.pid);
        assert!(host.edge_round_trip_ns > 0);
        // One host, one clock: the offset is within its uncertainty (and some slack).
        assert!(
            host.clock_offset_ns.unsigned_abs() <= host.clock_uncertainty_ns + 5_000_000,
            "{host:?}"
        );
    }
    assert_no_harness_left();
    drop(sshd);
}

#[test]
fn compare_over_ssh_interrupted_leaves_no_process() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let sshd = start_sshd(dir.path());
    let mut child = compare_over_ssh(
        &sshd,
        dir.path(),
        &[
            "--workloads",
            "echo",
            "--duration",
            "20s",
            "--warmup",
            "100ms",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let pid = child.id();
    eventually(
        "the server and an agent are up over ssh",
        Duration::from_secs(60),
        || {
            let p = harness_processes();
            p.iter().any(|(_, c)| c.contains(" serve "))
                && p.iter().any(|(_, c)| c.contains(" agent"))
        },
    );
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let status = wait_with_timeout(&mut child, Duration::from_secs(30));
    assert!(!status.success(), "an interrupted compare exits 1");
    assert_no_harness_left();
    drop(sshd);
}

#[test]
fn compare_over_ssh_without_server_host_names_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let ran = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_harness"))
            .args(["compare", "--quick", "--no-plots", "--backends", "epoll-et"])
            .args(["--topology", "ssh", "--client-hosts", "127.0.0.1", "--out"])
            .arg(dir.path())
            .stdin(Stdio::null()),
        Duration::from_secs(30),
    );
    assert!(!ran.status.success());
    assert!(ran.stderr.contains("--server-host"), "{}", ran.stderr);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn compare_over_ssh_calibrates_a_ladder_through_the_remote_server() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let sshd = start_sshd(dir.path());
    let suite = dir.path().join("ladder.toml");
    std::fs::write(
        &suite,
        "name = \"ladder\"\nrepeats = 1\nduration = 0.4\nwarmup = 0.1\n[[block]]\n\
         group = \"echo-fixed\"\nworkload = \"echo\"\nconnections = 4\nladder = [0.3]\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let suite = suite.to_str().unwrap();
    let ran = run_bounded(
        &mut compare_over_ssh(&sshd, &out, &["--suite", suite]),
        Duration::from_secs(120),
    );
    assert!(ran.status.success(), "{}", ran.stderr);
    let r = results_in(&out);
    let cal = &r.plan.calibration;
    assert_eq!(cal.len(), 1, "{cal:?}");
    assert!(
        cal[0].ceilings.get("epoll-et").is_some_and(|&c| c > 0.0),
        "{cal:?}"
    );
    assert_eq!(r.cells.len(), 1);
    let c = &r.cells[0];
    assert_eq!(c.status, CellStatus::Ok, "{}", ran.stderr);
    assert!(c
        .ledger
        .as_ref()
        .unwrap()
        .server_cpu_method
        .starts_with("remote "));
    assert!(c
        .client
        .as_ref()
        .unwrap()
        .target_rate
        .is_some_and(|t| t > 0.0));
    assert!(c.server_host.is_some());
    assert_no_harness_left();
    drop(sshd);
}
