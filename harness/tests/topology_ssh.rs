//! `harness load --topology ssh`: agents started over ssh, against a local sshd this test
//! starts (its own host and user keys in a temporary directory, 127.0.0.1 only), merge to
//! the sum of their parts and record their host's facts. Without sshd the test fails with
//! the install hint (CI installs it with scripts/install-deps.sh --ci).

mod util;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backend_api::Service;
use harness::load::read_report;
use util::*;

const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd, killed on drop.
struct Sshd {
    child: Child,
    port: u16,
    key: PathBuf,
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
    let dir = tempfile::tempdir().unwrap();
    let sshd = start_sshd(dir.path());
    let server = start(epoll_et(), Service::Echo);
    let json = dir.path().join("r.json");
    let opts = [
        format!("Port={}", sshd.port),
        format!("IdentityFile={}", sshd.key.display()),
        "UserKnownHostsFile=/dev/null".to_string(),
        "StrictHostKeyChecking=no".to_string(),
        "LogLevel=ERROR".to_string(),
    ];
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
        .arg(&json);
    for o in &opts {
        cmd.args(["--ssh-opt", o]);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("load over ssh did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
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
