//! `harness compare` end to end: the real binary, real backends in child processes, the
//! real load generator; outputs validated against the committed JSON Schema.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use harness::results::{read_results, CellStatus, ResultsFile, RunState};

fn harness() -> Command {
    Command::new(env!("CARGO_BIN_EXE_harness"))
}

fn schema_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/results.schema.json")
}

fn results_in(dir: &Path) -> PathBuf {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(
        files.len(),
        1,
        "expected one results file in {}: {files:?}",
        dir.display()
    );
    files.pop().unwrap()
}

/// Validates a results file against the committed schema and parses it.
fn validated(path: &Path) -> ResultsFile {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path()).unwrap()).unwrap();
    let instance: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the committed schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{} does not match the schema:\n{}",
        path.display(),
        errors.join("\n")
    );
    read_results(path).expect("results file parses")
}

fn suite(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("suite.toml");
    std::fs::write(&p, body).unwrap();
    p
}

fn show(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn committed_schema_matches_the_types() {
    let generated = serde_json::to_string_pretty(&harness::results::json_schema()).unwrap() + "\n";
    if std::env::var("UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
        std::fs::write(schema_path(), &generated).unwrap();
    }
    let committed = std::fs::read_to_string(schema_path()).unwrap_or_default();
    assert!(committed == generated, "harness/schema/results.schema.json is stale; regenerate with UPDATE_SNAPSHOTS=1 cargo test -p harness --test compare_e2e");
}

#[test]
fn quick_compare_of_both_epoll_backends_is_complete_and_valid() {
    let dir = tempfile::tempdir().unwrap();
    let out = harness()
        .args([
            "compare",
            "--quick",
            "--backends",
            "epoll-et,epoll-lt",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let path = results_in(dir.path());
    let r = validated(&path);
    assert_eq!(r.state, RunState::Complete);
    assert_eq!(r.plan.backends, ["epoll-et", "epoll-lt"]);
    assert_eq!(r.cells.len(), r.plan.cells_planned);
    assert!(
        r.cells.len() >= 12,
        "quick suite ran only {} cells",
        r.cells.len()
    );
    assert!(
        !r.manifest.kernel.is_empty()
            && !r.manifest.argv.is_empty()
            && !r.manifest.sysctls.is_empty()
    );
    // The libc copy check ran, and servers got the tunable exactly when it mattered.
    let mc = r.manifest.memcpy.as_ref().expect("memcpy check recorded");
    assert!(mc.near_gbps > 0.0 && mc.far_gbps > 0.0, "{mc:?}");
    if let Some(t) = &mc.server_glibc_tunables {
        assert!(
            mc.slowdown >= 3.0 && t.contains("x86_rep_movsb_threshold="),
            "{mc:?}"
        );
    }
    for c in &r.cells {
        assert_eq!(
            c.status,
            CellStatus::Ok,
            "{} {} failed: {:?}",
            c.backend,
            c.group,
            c.status
        );
        let m = c.client.as_ref().unwrap();
        assert!(
            m.throughput_rps > 0.0 && m.requests > 0,
            "{} {}: no throughput",
            c.backend,
            c.group
        );
        let s = c.server.as_ref().expect("server cost");
        assert!(
            s.cpu_user_us_per_req + s.cpu_sys_us_per_req > 0.0,
            "{} {}: no server CPU",
            c.backend,
            c.group
        );
        assert!(
            s.syscalls_per_req.is_some_and(|v| v > 0.0) || s.syscalls_absent.is_some(),
            "{} {}: syscalls neither counted nor explained",
            c.backend,
            c.group
        );
        assert!(
            s.stats.is_some_and(|st| st.accepted > 0),
            "{} {}: server stats missing",
            c.backend,
            c.group
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("== echo-64B") && stdout.contains("epoll-lt"),
        "summary table missing:\n{stdout}"
    );
    let plots = dir.path().join("plots");
    let n = std::fs::read_dir(&plots).map(|d| d.count()).unwrap_or(0);
    assert!(n > 0, "no plots rendered in {}", plots.display());
}

#[test]
fn crashing_and_hanging_backends_fail_their_cells_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let s = suite(dir.path(), "name = \"faults\"\nrepeats = 1\nduration = 0.5\nwarmup = 0.1\n[[block]]\ngroup = \"echo\"\nworkload = \"echo\"\nconnections = 16\n");
    let out = harness()
        .env("RINGSIDE_TEST_BACKENDS", "1")
        .args([
            "compare",
            "--no-plots",
            "--ready-timeout",
            "2",
            "--backends",
            "test-panic,epoll-et,test-never-ready",
            "--suite",
        ])
        .arg(&s)
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    // The run goes on past failed cells, writes everything, and then says it failed.
    assert!(
        !out.status.success(),
        "failed cells, yet exit 0:\n{}",
        show(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("2 of 3 cells failed") && stderr.contains("test-panic echo"),
        "the error does not name the failed cells:\n{stderr}"
    );
    let r = validated(&results_in(dir.path()));
    assert_eq!(r.state, RunState::Complete);
    let cell = |b: &str| {
        r.cells
            .iter()
            .find(|c| c.backend == b)
            .unwrap_or_else(|| panic!("no cell for {b}"))
    };
    match &cell("test-panic").status {
        CellStatus::Failed { stderr_tail, .. } => assert!(
            stderr_tail.contains("deliberate panic"),
            "stderr tail lacks the panic: {stderr_tail}"
        ),
        other => panic!("crashing backend's cell is {other:?}"),
    }
    match &cell("test-never-ready").status {
        CellStatus::Failed { reason, .. } => assert!(reason.contains("READY"), "{reason}"),
        other => panic!("never-ready backend's cell is {other:?}"),
    }
    let ok = cell("epoll-et");
    assert_eq!(ok.status, CellStatus::Ok);
    assert!(ok.client.as_ref().unwrap().throughput_rps > 0.0);
}

#[test]
fn sigint_mid_run_keeps_every_finished_cell() {
    let dir = tempfile::tempdir().unwrap();
    let s = suite(dir.path(), "name = \"long\"\nrepeats = 5\nduration = 1.0\nwarmup = 0.1\n[[block]]\ngroup = \"echo\"\nworkload = \"echo\"\nconnections = 8\n");
    let child = harness()
        .args([
            "compare",
            "--no-plots",
            "--backends",
            "epoll-et,epoll-lt",
            "--suite",
        ])
        .arg(&s)
        .arg("--out")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (bounded) until at least one cell is on disk, then interrupt.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = std::fs::read_dir(dir.path())
            .ok()
            .and_then(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .find(|p| p.extension().is_some_and(|e| e == "json"))
            })
            .and_then(|p| read_results(&p).ok())
            .is_some_and(|r| !r.cells.is_empty());
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "no cell finished within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: sends SIGINT to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "an interrupted run must exit non-zero:\n{}",
        show(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("results so far are in"),
        "no pointer to the results:\n{stderr}"
    );
    let r = validated(&results_in(dir.path()));
    assert!(
        matches!(r.state, RunState::Interrupted { .. }),
        "{:?}",
        r.state
    );
    assert!(!r.cells.is_empty() && r.cells.len() < r.plan.cells_planned);
    assert!(
        r.cells.iter().all(|c| c.status == CellStatus::Ok),
        "an interrupted cell was kept as a failure"
    );
}

#[test]
fn bad_arguments_name_the_fix() {
    let cases: [(&[&str], &str); 9] = [
        (
            &["compare", "--backends", "nope"],
            "known backends: epoll-et",
        ),
        (
            &["compare", "--workloads", "ftp"],
            "valid workloads: echo, http, churn, stream, idle",
        ),
        (
            &["compare", "--server-cores", "0", "--client-cores", "0"],
            "both --server-cores and --client-cores",
        ),
        (
            &["compare", "--server-cores", "0", "--client-cores", "4096"],
            "usable cores",
        ),
        (
            &["compare", "--server-cores", "0-4000000000"],
            "past the highest CPU number",
        ),
        (&["compare", "--ready-timeout", "-1"], "--ready-timeout -1"),
        (&["compare", "--ready-timeout", "NaN"], "more than 0"),
        (&["compare", "--ready-timeout", "1e300"], "at most 3600"),
        (
            &["doctor", "--cores", "4096"],
            "--cores: core 4096 is not usable",
        ),
    ];
    for (args, want) in cases {
        let out = harness().args(args).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// Pids of the live (not zombie) children of `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        if fields.len() > 1 && fields[0] != "Z" && fields[1] == parent.to_string() {
            out.push(pid);
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

#[test]
fn a_second_sigint_exits_at_once_and_takes_the_server_along() {
    let dir = tempfile::tempdir().unwrap();
    let s = suite(dir.path(), "name = \"hang\"\nrepeats = 1\nduration = 0.5\nwarmup = 0.1\n[[block]]\ngroup = \"echo\"\nworkload = \"echo\"\nconnections = 4\n");
    // The server never prints READY and the ready wait is long, so the first SIGINT cannot
    // end the run by itself: only the second one can.
    let mut child = harness()
        .env("RINGSIDE_TEST_BACKENDS", "1")
        .args([
            "compare",
            "--no-plots",
            "--ready-timeout",
            "600",
            "--backends",
            "test-never-ready",
            "--suite",
        ])
        .arg(&s)
        .arg("--out")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut seen = String::new();
    let mut wait_for = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !seen.contains(what) {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(l) => {
                    seen.push_str(&l);
                    seen.push('\n');
                }
                Err(_) => panic!("no {what:?} on stderr within 60 s:\n{seen}"),
            }
        }
    };
    let pid = child.id() as i32;
    wait_for("writing results to");
    // Once the cell's server runs, compare waits for its READY line, which never comes.
    let deadline = Instant::now() + Duration::from_secs(30);
    let servers = loop {
        let c = children_of(child.id());
        if !c.is_empty() {
            break c;
        }
        assert!(Instant::now() < deadline, "no server child within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: sends SIGINT to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    wait_for("Ctrl-C again exits at once");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("a second SIGINT did not end compare within 30 s:\n{seen}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    wait_for("exiting now");
    assert_eq!(status.code(), Some(130), "{seen}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while servers.iter().any(|&p| alive(p)) {
        assert!(
            Instant::now() < deadline,
            "servers {servers:?} outlived their compare"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // What was written before stays a valid results file.
    let r = validated(&results_in(dir.path()));
    assert!(r.cells.is_empty());
}

#[test]
fn a_calibrated_ladder_gives_every_backend_the_same_rates_below_the_slowest_ceiling() {
    let dir = tempfile::tempdir().unwrap();
    // test-slow answers each request after 2 ms: with 4 connections its ceiling is about
    // 2,000 req/s, far below epoll-et's, so it decides the rates.
    let s = suite(
        dir.path(),
        "name = \"ladder\"\nrepeats = 1\nduration = 0.5\nwarmup = 0.1\n[[block]]\ngroup = \"echo-fixed\"\nworkload = \"echo\"\nconnections = 4\nladder = [0.3, 0.6]\n",
    );
    let out = harness()
        .env("RINGSIDE_TEST_BACKENDS", "1")
        .args([
            "compare",
            "--no-plots",
            "--backends",
            "epoll-et,test-slow",
            "--suite",
        ])
        .arg(&s)
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("calibrated echo-fixed: slowest test-slow"),
        "no calibration line:\n{stderr}"
    );
    let r = validated(&results_in(dir.path()));
    let cal = &r.plan.calibration;
    assert_eq!(cal.len(), 1, "{cal:?}");
    let cal = &cal[0];
    assert_eq!(cal.slowest.as_deref(), Some("test-slow"));
    let slow = cal.ceilings["test-slow"];
    assert!(slow > 0.0 && slow < cal.ceilings["epoll-et"], "{cal:?}");
    let rates: Vec<f64> = cal.rates.iter().map(|r| r.rate).collect();
    assert_eq!(rates.len(), 2, "{cal:?}");
    for r in &cal.rates {
        assert!(
            r.rate <= r.fraction * slow && r.rate > 0.8 * r.fraction * slow,
            "{r:?} of {slow}"
        );
    }
    assert_eq!(r.cells.len(), 4, "2 rates x 2 backends");
    for rate in &rates {
        let at: Vec<_> = r
            .cells
            .iter()
            .filter(|c| c.workload.rate == Some(*rate))
            .collect();
        assert_eq!(at.len(), 2, "every backend at {rate} req/s");
        for c in at {
            assert_eq!(c.status, CellStatus::Ok, "{c:?}");
            let client = c.client.as_ref().unwrap();
            // Below the slowest ceiling, the slow server keeps up.
            assert!(!client.saturated, "{} at {rate}: {client:?}", c.backend);
        }
    }
}
