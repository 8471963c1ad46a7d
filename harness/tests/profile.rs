//! `harness profile`: the category table on committed stacks (hand-written cases, folded
//! stacks of real perf runs, a `perf script` excerpt through inferno), and one short real
//! profile where perf may sample here (skipped with the reason where it may not).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::profile::categories::Table;
use harness::profile::{perf, ProfileReport, UNMATCHED};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/profile")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixtures().join(name)).unwrap()
}

#[test]
fn hand_written_stacks_get_their_categories() {
    let table = Table::default_table().unwrap();
    let mut wrong = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for line in read("cases.txt").lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (want, stack) = line.split_once('\t').expect("CATEGORY<TAB>STACK");
        let frames: Vec<&str> = stack.split(';').collect();
        let got = table.classify(&frames);
        if got.category != want {
            wrong.push(format!(
                "{stack}\n  want {want}, got {} (decided by {})",
                got.category, got.frame
            ));
        }
        seen.insert(want.to_string());
    }
    assert!(wrong.is_empty(), "misclassified:\n{}", wrong.join("\n"));
    // Every category of the table has at least one case.
    for id in table.ids() {
        assert!(seen.contains(&id), "no case in cases.txt for category {id}");
    }
}

/// Samples by category of a committed folded fixture.
fn counts(name: &str) -> harness::profile::Counts {
    Table::default_table()
        .unwrap()
        .count_folded(&read(name))
        .unwrap()
}

#[test]
fn real_epoll_stacks_have_epoll_and_no_io_uring() {
    let c = counts("epoll-et.folded");
    let sum: u64 = c.by_category.iter().map(|(_, n)| n).sum();
    assert_eq!(sum, c.total, "every sample is counted once");
    assert!(c.get("epoll") > 0, "{c:?}");
    assert_eq!(c.get("uring_submit") + c.get("uring_complete"), 0, "{c:?}");
    // TCP dominates a loopback HTTP server; unmatched samples stay a minority.
    assert!(c.get("tcp_tx") + c.get("tcp_rx") > c.total / 4, "{c:?}");
    assert!(c.get(UNMATCHED) < c.total / 10, "{c:?}");
    assert!(c.get("user_backend") > 0, "{c:?}");
}

#[test]
fn real_io_uring_stacks_have_io_uring_and_no_epoll() {
    let c = counts("uring-multishot.folded");
    assert!(
        c.get("uring_submit") > 0 && c.get("uring_complete") > 0,
        "{c:?}"
    );
    assert_eq!(c.get("epoll"), 0, "{c:?}");
    assert!(c.get(UNMATCHED) < c.total / 10, "{c:?}");
}

#[test]
fn real_tokio_stacks_have_runtime_time() {
    let c = counts("tokio.folded");
    assert!(c.get("user_runtime") > 0, "{c:?}");
    assert!(c.get("epoll") > 0, "tokio runs on mio's epoll: {c:?}");
    assert!(c.get(UNMATCHED) < c.total / 10, "{c:?}");
}

#[test]
fn perf_script_output_folds_with_kernel_frames_marked() {
    let folded = perf::fold_script(read("epoll-et.perf-script.txt").as_bytes()).unwrap();
    let lines: Vec<&str> = folded.lines().collect();
    assert!(!lines.is_empty());
    let samples: u64 = lines
        .iter()
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    // The excerpt holds this many samples (count the "cpu-clock:" headers).
    let headers = read("epoll-et.perf-script.txt")
        .lines()
        .filter(|l| l.contains("cpu-clock:"))
        .count() as u64;
    // inferno weighs each sample by its period (250 µs of cpu-clock, as recorded).
    assert_eq!(samples, headers * perf::PERIOD_NS);
    assert!(
        lines.iter().all(|l| l.starts_with("epoll-et-shard0;")),
        "the root frame is the thread's command: {lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("tcp_sendmsg_[k]")),
        "{lines:?}"
    );
    let c = Table::default_table()
        .unwrap()
        .count_folded(&folded)
        .unwrap();
    assert_eq!(c.total, headers * perf::PERIOD_NS);
}

/// inferno's SVGs carry a DOCTYPE, which roxmltree refuses unless asked.
fn parse_svg(text: &str) -> Result<roxmltree::Document<'_>, roxmltree::Error> {
    roxmltree::Document::parse_with_options(
        text,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
}

fn run_bounded(mut cmd: Command, limit: Duration) -> (bool, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("harness profile ran past {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_real_profile_writes_its_breakdown_and_flamegraphs() {
    if let Err(why) = perf::check() {
        eprintln!("skipping the real profile: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harness"));
    cmd.args([
        "profile",
        "--backend",
        "epoll-et",
        "--backend",
        "epoll-lt",
        "--workload",
        "http",
        "--rate",
        "2000",
        "--connections",
        "16",
        "--duration",
        if ci { "1" } else { "2" },
        "--warmup",
        "0.5",
        "--out",
    ])
    .arg(dir.path());
    let (ok, out) = run_bounded(cmd, Duration::from_secs(240));
    assert!(ok, "harness profile failed:\n{out}");
    let report: ProfileReport =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("profile.json")).unwrap())
            .unwrap();
    assert_eq!(report.backends.len(), 2);
    for b in &report.backends {
        assert!(b.samples > 0, "{}: no samples", b.backend);
        assert!(b.profiled.requests > 0, "{}", b.backend);
        let sum: f64 = b.categories.iter().map(|c| c.us_per_req).sum();
        assert!(
            (sum - b.total_us_per_req).abs() <= 1e-6 * b.total_us_per_req.max(1.0),
            "{}: categories add up to {sum}, total {}",
            b.backend,
            b.total_us_per_req
        );
        assert!(
            b.categories
                .iter()
                .any(|c| c.id == "epoll" && c.samples > 0),
            "{}: an epoll server spends time in epoll: {:?}",
            b.backend,
            b.categories
        );
        let flame = std::fs::read_to_string(dir.path().join(format!("{}.svg", b.backend))).unwrap();
        parse_svg(&flame).expect("the flamegraph is well-formed SVG");
        assert!(flame.contains("ns/request"));
    }
    for f in ["diff-epoll-et-vs-epoll-lt.svg", "profile-categories.svg"] {
        let svg = std::fs::read_to_string(dir.path().join(f)).unwrap();
        parse_svg(&svg).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    let png = std::fs::read(dir.path().join("profile-categories.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let md = std::fs::read_to_string(dir.path().join("profile.md")).unwrap();
    assert!(
        md.contains("| epoll |") && md.contains("ledger CPU/req"),
        "{md}"
    );
}

fn suite(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("suite.toml");
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn compare_profile_refuses_a_suite_without_a_fixed_rate() {
    let dir = tempfile::tempdir().unwrap();
    let s = suite(
        dir.path(),
        "name = \"closed\"\nrepeats = 1\nduration = 0.2\nwarmup = 0.1\n\n[[block]]\ngroup = \"http\"\nworkload = \"http\"\nconnections = 4\n",
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harness"));
    cmd.args(["compare", "--backends", "epoll-et", "--no-plots", "--suite"])
        .arg(&s)
        .arg("--out")
        .arg(dir.path())
        .arg("--profile")
        .arg(dir.path().join("profiles"));
    let (ok, out) = run_bounded(cmd, Duration::from_secs(60));
    assert!(!ok, "{out}");
    assert!(out.contains("--profile needs a fixed-rate cell"), "{out}");
    // Refused before any cell ran: no results file.
    let json = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .count();
    assert_eq!(json, 0, "{out}");
}

#[test]
fn compare_profile_profiles_the_fixed_rate_shapes() {
    if let Err(why) = perf::check() {
        eprintln!("skipping compare --profile: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = suite(
        dir.path(),
        "name = \"open\"\nrepeats = 1\nduration = 0.5\nwarmup = 0.2\n\n[[block]]\ngroup = \"http-open\"\nworkload = \"http\"\nconnections = 8\nrate = 1000\n",
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harness"));
    cmd.args(["compare", "--backends", "epoll-et", "--no-plots", "--suite"])
        .arg(&s)
        .arg("--out")
        .arg(dir.path())
        .arg("--profile")
        .arg(dir.path().join("profiles"));
    let (ok, out) = run_bounded(cmd, Duration::from_secs(180));
    assert!(ok, "{out}");
    let shape = dir.path().join("profiles/http-c8-d1-1000rps");
    let report: ProfileReport =
        serde_json::from_str(&std::fs::read_to_string(shape.join("profile.json")).unwrap())
            .unwrap();
    assert_eq!(report.backends.len(), 1);
    assert_eq!(report.backends[0].backend, "epoll-et");
    assert!(report.backends[0].samples > 0);
    assert!((report.shape.rate - 1000.0).abs() < 1e-9);
    assert!(shape.join("epoll-et.svg").is_file() && shape.join("profile-categories.png").is_file());
}

#[test]
fn a_rate_the_server_cannot_keep_is_flagged() {
    if let Err(why) = perf::check() {
        eprintln!("skipping the saturated profile: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harness"));
    cmd.args([
        "profile",
        "--backend",
        "epoll-et",
        "--rate",
        "1000000",
        "--connections",
        "4",
        "--duration",
        "0.5",
        "--warmup",
        "0.2",
        "--out",
    ])
    .arg(dir.path());
    let (ok, out) = run_bounded(cmd, Duration::from_secs(120));
    assert!(ok, "{out}");
    let report: ProfileReport =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("profile.json")).unwrap())
            .unwrap();
    let flags = &report.backends[0].flags;
    assert!(
        flags.iter().any(|f| f.contains("rate_not_met")),
        "a million requests/s on 4 connections cannot be met here: {flags:?}"
    );
    let md = std::fs::read_to_string(dir.path().join("profile.md")).unwrap();
    assert!(md.contains("rate_not_met"), "{md}");
}
