//! `harness compare --external`: a server the test builds (a forking C HTTP server) run
//! as a backend beside a built-in one, measured by the same ledger and shown in the
//! reports, and the ways an external command goes wrong.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use harness::results::{read_results, CellStatus};

fn harness() -> Command {
    Command::new(env!("CARGO_BIN_EXE_harness"))
}

fn show(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn results_in(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

/// Compiles the fixture server into `dir` with the system C compiler.
fn build_server(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/external/forking-http.c");
    let bin = dir.join("forking-http");
    let out = Command::new("cc")
        .args(["-O2", "-Wall", "-Werror", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("running cc: install a C compiler (build-essential; scripts/install-deps.sh --ci)");
    assert!(out.status.success(), "cc failed: {}", show(&out));
    bin
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) {
            found.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
        }
    }
    found
}

#[test]
fn an_external_server_is_measured_and_reported_beside_a_backend() {
    let dir = tempfile::tempdir().unwrap();
    let bin = build_server(dir.path());
    let suite = dir.path().join("suite.toml");
    std::fs::write(
        &suite,
        "name = \"ext\"\nrepeats = 2\nduration = 0.5\nwarmup = 0.25\n\
         [[block]]\ngroup = \"http\"\nworkload = \"http\"\nconnections = 8\n\
         [[block]]\ngroup = \"echo\"\nworkload = \"echo\"\nconnections = 4\n",
    )
    .unwrap();
    let out = harness()
        .args(["compare", "--no-plots", "--backends", "epoll-et", "--suite"])
        .arg(&suite)
        .arg("--external")
        .arg(format!("cfork:http={} {{port}}", bin.display()))
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let path = results_in(dir.path());
    let r = read_results(&path).unwrap();
    assert_eq!(r.plan.backends, ["epoll-et", "cfork"]);
    assert_eq!(r.plan.externals.len(), 1);
    let ext: Vec<_> = r.cells.iter().filter(|c| c.backend == "cfork").collect();
    assert_eq!(ext.len(), 4, "2 shapes x 2 repeats");
    assert!(ext.iter().all(|c| c.external));
    assert!(r
        .cells
        .iter()
        .filter(|c| c.backend == "epoll-et")
        .all(|c| !c.external));
    for c in ext.iter().filter(|c| c.group == "http") {
        assert_eq!(c.status, CellStatus::Ok, "{:?}", c.status);
        let m = c.client.as_ref().unwrap();
        assert!(m.requests > 0);
        let l = c.ledger.as_ref().expect("ledger");
        // All the work is in the forked child; its parent only waits for SIGTERM. A
        // ledger that missed the child would see next to nothing per request.
        let us = l.server_cpu_us_per_req.expect("server CPU measured");
        assert!(
            us >= 1.0,
            "server CPU {us} µs/req: the forked child was not counted"
        );
        assert!(c.server.is_some());
    }
    // The service it does not speak: unsupported, said once for both repeats.
    for c in ext.iter().filter(|c| c.group == "echo") {
        match &c.status {
            CellStatus::Unsupported { reason } => {
                assert!(reason.contains("speaks http only"), "{reason}")
            }
            s => panic!("echo on an http-only external server: {s:?}"),
        }
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("speaks http only").count(), 1, "{stderr}");
    // The summary and the markdown report mark it.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("cfork (external)"), "{stdout}");
    let md = harness().arg("report").arg(&path).output().unwrap();
    assert!(md.status.success(), "{}", show(&md));
    let md = String::from_utf8_lossy(&md.stdout);
    assert!(md.contains("cfork (external)"), "{md}");
    let plots = dir.path().join("plots");
    let p = harness()
        .arg("plot")
        .arg(&path)
        .args(["--format", "svg", "--out"])
        .arg(&plots)
        .output()
        .unwrap();
    assert!(p.status.success(), "{}", show(&p));
    let svg = std::fs::read_to_string(plots.join("cpu-per-request-http.svg")).unwrap();
    assert!(svg.contains("cfork (external)"), "legend lacks the mark");
    // Master and worker are gone.
    let left = processes_with(&bin.display().to_string());
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_bad_placeholder_is_an_error_naming_the_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = harness()
        .args([
            "compare",
            "--quick",
            "--no-plots",
            "--backends",
            "epoll-et",
            "--external",
            "x=/bin/true {prot}",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("unknown placeholder {prot}") && e.contains("{addr}, {port}, {cores}"),
        "{e}"
    );
    let out = harness()
        .args(["compare", "--quick", "--external", "epoll-lt=/bin/true"])
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("built-in backend"));
    // An external would be started outside the namespaces: refused, before any is made.
    let out = harness()
        .args(["compare", "--quick", "--topology", "netns", "--external"])
        .arg("x=/bin/true {port}")
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("cannot run under --topology netns") && e.contains("--topology loopback"),
        "{e}"
    );
}

#[test]
fn a_command_that_never_listens_fails_its_cell_with_its_stderr_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("suite.toml");
    std::fs::write(
        &suite,
        "name = \"deaf\"\nrepeats = 1\nduration = 0.3\nwarmup = 0.1\n\
         [[external]]\nname = \"deaf\"\n\
         command = \"sh -c 'echo deaf-server-says-hi >&2; exec sleep 37.25'\"\n\
         [[block]]\ngroup = \"http\"\nworkload = \"http\"\nconnections = 2\n",
    )
    .unwrap();
    let t0 = Instant::now();
    let out = harness()
        .args(["compare", "--no-plots", "--backends", "deaf", "--suite"])
        .arg(&suite)
        .args(["--ready-timeout", "2", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    let took = t0.elapsed();
    assert!(!out.status.success(), "{}", show(&out));
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let r = read_results(&results_in(dir.path())).unwrap();
    assert_eq!(r.cells.len(), 1);
    match &r.cells[0].status {
        CellStatus::Failed {
            reason,
            stderr_tail,
        } => {
            assert!(reason.contains("did not accept"), "{reason}");
            assert!(stderr_tail.contains("deaf-server-says-hi"), "{stderr_tail}");
        }
        s => panic!("a server that never listens: {s:?}"),
    }
    assert!(r.cells[0].wall_s < 10.0, "{}", r.cells[0].wall_s);
    let left = processes_with("sleep 37.25");
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn what_a_killed_run_left_of_an_external_server_dies_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let bin = build_server(dir.path());
    let suite = dir.path().join("suite.toml");
    std::fs::write(
        &suite,
        "name = \"long\"\nrepeats = 50\nduration = 1.0\nwarmup = 0.1\n\
         [[block]]\ngroup = \"http\"\nworkload = \"http\"\nconnections = 4\n",
    )
    .unwrap();
    let mut run = harness()
        .args([
            "compare",
            "--no-plots",
            "-q",
            "--backends",
            "cfork",
            "--suite",
        ])
        .arg(&suite)
        .arg("--external")
        .arg(format!("cfork:http={} {{port}}", bin.display()))
        .arg("--out")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The server's parent and the child it forked (which serves) are both up.
    let needle = bin.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while processes_with(&needle).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the external server never forked"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Killed outright: the parent dies with the harness (PDEATHSIG), its child does not.
    run.kill().unwrap();
    run.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with(&needle).len() > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let orphans = processes_with(&needle);
    assert_eq!(
        orphans.len(),
        1,
        "expected the forked child to outlive its harness: {orphans:?}"
    );
    // The next compare finds the dead run's cgroup and kills what is left in it.
    let next = dir.path().join("next.toml");
    std::fs::write(
        &next,
        "name = \"next\"\nrepeats = 1\nduration = 0.2\nwarmup = 0.1\n\
         [[block]]\ngroup = \"echo\"\nworkload = \"echo\"\nconnections = 2\n",
    )
    .unwrap();
    let out = harness()
        .args(["compare", "--no-plots", "--backends", "epoll-et", "--suite"])
        .arg(&next)
        .arg("--out")
        .arg(dir.path().join("next"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_with(&needle).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = processes_with(&needle);
    assert!(
        left.is_empty(),
        "left behind after the next start: {left:?}\n{}",
        show(&out)
    );
}
