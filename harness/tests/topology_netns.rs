//! `compare --topology netns`: the quick suite over two client namespaces merges its
//! agents' counts exactly; nothing it creates (namespaces, veths, processes, temporary
//! files) outlives a normal run, a SIGINT mid-run, or a SIGKILL followed by the next run;
//! a tbf link rate bounds throughput; netem's absence is a clear error.
//!
//! These need root and iproute2 (`ip`, `tc`); CI runs as root. Elsewhere they fail with
//! that reason rather than skip.

mod util;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::results::CellStatus;
use util::run::{eventually, results_in, run_bounded, wait_with_timeout};

/// One test at a time: they share the host's namespace list, and the box is small.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn require_root() -> std::sync::MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests create network namespaces: run them as root (CI does), with iproute2 installed"
    );
    let ip = Command::new("ip").arg("-V").output();
    assert!(
        ip.is_ok_and(|o| o.status.success()),
        "`ip` is missing: apt-get install iproute2"
    );
    guard
}

/// What a bounded run of a command left.
fn compare(out: &Path, tag: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harness"));
    cmd.args(["compare", "--quick", "--backends", "epoll-et", "--no-plots"])
        .args(["--topology", "netns", "--out"])
        .arg(out)
        .args(extra)
        // Every process of the run inherits the tag: the leak check finds them by it.
        .env("RINGSIDE_TEST_TAG", tag)
        .stdin(Stdio::null());
    cmd
}

fn namespaces_of(pid: u32) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("rs-{pid}-")))
        .map(str::to_string)
        .collect()
}

fn links_of(pid: u32) -> Vec<String> {
    let out = Command::new("ip").args(["-o", "link"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!(" rs{pid}s")) || l.contains(&format!(" rs{pid}c")))
        .map(str::to_string)
        .collect()
}

/// Processes whose environment carries `tag` (the run's servers and agents).
fn tagged_processes(tag: &str) -> Vec<u32> {
    let needle = format!("RINGSIDE_TEST_TAG={tag}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .collect()
}

/// Waits (bounded) until `f` holds.
fn assert_nothing_left(pid: u32, tag: &str, out: &Path) {
    assert_eq!(namespaces_of(pid), Vec::<String>::new(), "namespaces left");
    assert_eq!(links_of(pid), Vec::<String>::new(), "veths left");
    eventually("no process of the run left", Duration::from_secs(5), || {
        tagged_processes(tag).is_empty()
    });
    let stray: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(stray.is_empty(), "temporary files left: {stray:?}");
}

fn tag(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

#[test]
fn quick_suite_over_two_client_namespaces_merges_to_the_sum_of_its_agents() {
    let _serial = require_root();
    let dir = tempfile::tempdir().unwrap();
    let t = tag("quick");
    let ran = run_bounded(
        &mut compare(
            dir.path(),
            &t,
            &["--clients", "2", "--duration", "300ms", "--warmup", "100ms"],
        ),
        Duration::from_secs(120),
    );
    let pid = ran.pid;
    assert!(ran.status.success(), "{}", ran.stderr);
    let r = results_in(dir.path());
    let topo = r
        .manifest
        .topology
        .as_ref()
        .expect("topology in the manifest");
    assert_eq!(topo.topology, harness::topology::Topology::Netns);
    assert_eq!(topo.client_namespaces.len(), 2);
    assert_eq!(
        topo.server_namespace.as_deref(),
        Some(format!("rs-{pid}-srv").as_str())
    );
    assert_eq!(r.cells.len(), 6, "every workload of the quick suite");
    for c in &r.cells {
        assert_eq!(c.status, CellStatus::Ok, "{}: {:?}", c.group, c.status);
        let client = c.client.as_ref().unwrap();
        assert_eq!(c.agents.len(), 2, "{}", c.group);
        let completed: u64 = c.agents.iter().map(|a| a.completed).sum();
        assert!(client.requests > 0, "{}", c.group);
        assert_eq!(client.requests, completed, "{}: merged == sum", c.group);
        let established: u64 = c.agents.iter().map(|a| a.established).sum();
        assert_eq!(client.connections_established, established, "{}", c.group);
        for (a, ns) in c.agents.iter().zip(&topo.client_namespaces) {
            assert!(a.label.contains(ns.as_str()), "{} in {ns}", a.label);
        }
        let ledger = c.ledger.as_ref().unwrap();
        assert!(ledger.server_cpu_ns.unwrap_or(0) > 0, "{}", c.group);
        assert!(
            ledger.client_cpu_ns.unwrap_or(0) > 0,
            "{}: agents' CPU",
            c.group
        );
    }
    assert_nothing_left(pid, &t, dir.path());
}

/// A 5 s echo run over the namespaces, returned once its agents are up (bounded).
fn start_long_run(out: &Path, t: &str) -> std::process::Child {
    let child = compare(
        out,
        t,
        &[
            "--workloads",
            "echo",
            "--duration",
            "5s",
            "--warmup",
            "100ms",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    eventually("the run's agents are up", Duration::from_secs(30), || {
        tagged_processes(t).len() >= 3
    });
    child
}

#[test]
fn sigint_mid_run_leaves_nothing_behind() {
    let _serial = require_root();
    let dir = tempfile::tempdir().unwrap();
    let t = tag("sigint");
    let mut child = start_long_run(dir.path(), &t);
    let pid = child.id();
    assert!(!namespaces_of(pid).is_empty());
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let status = wait_with_timeout(&mut child, Duration::from_secs(30));
    assert!(!status.success(), "an interrupted compare exits 1");
    assert_nothing_left(pid, &t, dir.path());
}

#[test]
fn after_sigkill_the_next_run_removes_what_the_killed_one_left() {
    let _serial = require_root();
    let dir = tempfile::tempdir().unwrap();
    let t = tag("sigkill");
    let mut child = start_long_run(dir.path(), &t);
    let pid = child.id();
    child.kill().unwrap();
    child.wait().unwrap();
    // Its children die with it (PDEATHSIG); its namespaces cannot.
    eventually(
        "the killed run's processes die",
        Duration::from_secs(5),
        || tagged_processes(&t).is_empty(),
    );
    assert_eq!(
        namespaces_of(pid).len(),
        2,
        "server and one client namespace stay"
    );
    let dir2 = tempfile::tempdir().unwrap();
    let t2 = tag("after-sigkill");
    let ran = run_bounded(
        &mut compare(
            dir2.path(),
            &t2,
            &[
                "--workloads",
                "echo",
                "--duration",
                "200ms",
                "--warmup",
                "50ms",
            ],
        ),
        Duration::from_secs(60),
    );
    assert!(ran.status.success(), "{}", ran.stderr);
    let err = &ran.stderr;
    assert!(
        err.contains(&format!("rs-{pid}-srv")),
        "says what it removed: {err}"
    );
    assert_nothing_left(ran.pid, &t2, dir2.path());
    assert_eq!(namespaces_of(pid), Vec::<String>::new());
    assert_eq!(links_of(pid), Vec::<String>::new());
}

#[test]
fn a_tbf_link_rate_bounds_stream_throughput() {
    let _serial = require_root();
    let dir = tempfile::tempdir().unwrap();
    let t = tag("tbf");
    // 16 Mbit/s each way is 2 MB/s: far below what loopback veths carry unshaped.
    let ran = run_bounded(
        &mut compare(
            dir.path(),
            &t,
            &[
                "--workloads",
                "stream",
                "--link-rate",
                "16mbit",
                "--duration",
                "1s",
                "--warmup",
                "300ms",
            ],
        ),
        Duration::from_secs(60),
    );
    assert!(ran.status.success(), "{}", ran.stderr);
    let r = results_in(dir.path());
    assert_eq!(
        r.manifest.topology.as_ref().unwrap().link.as_deref(),
        Some("tbf rate 16000000bit")
    );
    let c = r.cells[0].client.as_ref().unwrap();
    assert_eq!(r.cells[0].status, CellStatus::Ok, "{:?}", r.cells[0].status);
    let limit_mb_s = 16e6 / 8.0 / 1e6;
    assert!(c.mbps_in > 0.0 && c.mbps_out > 0.0);
    assert!(
        c.mbps_in <= limit_mb_s * 1.1 && c.mbps_out <= limit_mb_s * 1.1,
        "in {:.2} / out {:.2} MB/s through a {limit_mb_s} MB/s link",
        c.mbps_in,
        c.mbps_out
    );
}

#[test]
fn link_delay_needs_netem_and_says_so_where_it_is_missing() {
    let _serial = require_root();
    let dir = tempfile::tempdir().unwrap();
    let t = tag("netem");
    let mut cmd = compare(
        dir.path(),
        &t,
        &[
            "--workloads",
            "echo",
            "--link-delay",
            "1ms",
            "--duration",
            "200ms",
        ],
    );
    let ran = run_bounded(cmd.args(["--warmup", "50ms"]), Duration::from_secs(60));
    let err = &ran.stderr;
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    if ran.status.success() {
        // A kernel with sch_netem: the delay is applied and recorded.
        let r = results_in(dir.path());
        let link = r.manifest.topology.unwrap().link.unwrap();
        assert!(link.contains("netem delay 1ms"), "{link}");
    } else {
        assert!(
            err.contains(harness::topology::netns::NETEM_UNSUPPORTED),
            "the error names the missing qdisc and its config option: {err}"
        );
        assert!(files.is_empty(), "nothing measured without the delay");
    }
    assert_nothing_left(ran.pid, &t, dir.path());
}
