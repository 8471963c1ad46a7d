//! Cells that must not be compared as if they were fine: a server that answers wrongly
//! makes an invalid cell that no chart draws, and a server that cannot keep up with the
//! offered rate makes a saturated one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use harness::results::{read_results, CellStatus, ResultsFile};

fn compare(dir: &Path, suite: &str, backends: &str) -> (Output, ResultsFile) {
    compare_with(dir, suite, backends, &[])
}

fn compare_with(dir: &Path, suite: &str, backends: &str, extra: &[&str]) -> (Output, ResultsFile) {
    let s = dir.join("suite.toml");
    std::fs::write(&s, suite).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .env("RINGSIDE_TEST_BACKENDS", "1")
        .args(["compare", "--no-plots", "--backends", backends, "--suite"])
        .arg(&s)
        .arg("--out")
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(json.len(), 1, "{json:?}");
    let r = read_results(&json[0]).unwrap();
    (out, r)
}

#[test]
fn corrupted_replies_make_an_invalid_cell_that_no_chart_draws() {
    let dir = tempfile::tempdir().unwrap();
    let (out, r) = compare(
        dir.path(),
        "name = \"corrupt\"\nrepeats = 1\nduration = 0.5\nwarmup = 0.1\n[[block]]\ngroup = \"echo\"\nworkload = \"echo\"\nconnections = 4\n",
        "epoll-et,test-corrupt",
    );
    let bad = r
        .cells
        .iter()
        .find(|c| c.backend == "test-corrupt")
        .unwrap();
    match &bad.status {
        CellStatus::Invalid { reason } => assert!(reason.contains("echo_mismatch"), "{reason}"),
        other => panic!("a corrupting server's cell is {other:?}"),
    }
    let errors = &bad.client.as_ref().expect("its counts are kept").errors;
    assert!(
        errors.get("echo_mismatch").is_some_and(|n| *n > 0),
        "{errors:?}"
    );
    let good = r.cells.iter().find(|c| c.backend == "epoll-et").unwrap();
    assert_eq!(good.status, CellStatus::Ok);
    let (figs, _) = harness::plot::plan(&r);
    assert!(!figs.is_empty());
    assert!(
        figs.iter()
            .any(|f| f.backends.iter().any(|b| b == "epoll-et")),
        "the valid backend is charted"
    );
    for f in &figs {
        assert!(
            !f.backends.iter().any(|b| b == "test-corrupt"),
            "{} draws the invalid cell",
            f.name
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("invalid"), "{stdout}");
    let md = harness::report::markdown(&r, &harness::report::PlotLinks::new("plots", "svg"));
    assert!(
        md.contains("echo_mismatch"),
        "the report shows the error counts"
    );
}

#[test]
fn a_server_that_cannot_keep_up_makes_a_saturated_cell() {
    let dir = tempfile::tempdir().unwrap();
    // test-slow sleeps 2 ms per reply: two connections at depth 1 answer at most ~1000/s.
    let (out, r) = compare(
        dir.path(),
        "name = \"slow\"\nrepeats = 1\nduration = 0.6\nwarmup = 0.1\n[[block]]\ngroup = \"echo-open\"\nworkload = \"echo\"\nconnections = 2\nrate = 2000\n",
        "epoll-et,test-slow",
    );
    let slow = r.cells.iter().find(|c| c.backend == "test-slow").unwrap();
    let m = slow.client.as_ref().unwrap();
    assert!(
        m.saturated,
        "achieved {} of {:?}",
        m.achieved_rate, m.target_rate
    );
    assert!(m.achieved_rate < 0.99 * m.target_rate.unwrap());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let row = stdout
        .lines()
        .find(|l| l.starts_with("test-slow"))
        .unwrap_or_else(|| panic!("no row for test-slow:\n{stdout}"));
    assert!(row.contains("saturated"), "{row}");
    // Its cost is not compared to the reference's as if it had kept up.
    assert!(
        !row.contains("cheaper") && !row.contains("costlier"),
        "{row}"
    );
}

#[test]
fn adaptive_repeats_run_rounds_until_the_target_or_the_cap() {
    let suite = "name = \"adaptive\"\nrepeats = 2\nduration = 0.3\nwarmup = 0.1\n[[block]]\ngroup = \"echo\"\nworkload = \"echo\"\nconnections = 4\n";
    let rounds = |r: &ResultsFile, b: &str| r.cells.iter().filter(|c| c.backend == b).count();
    // A target no interval meets: rounds go on to the cap, every backend alike.
    let dir = tempfile::tempdir().unwrap();
    let (_, r) = compare_with(
        dir.path(),
        suite,
        "epoll-et,epoll-lt",
        &["--max-repeats", "4", "--ci-target", "0"],
    );
    assert_eq!((rounds(&r, "epoll-et"), rounds(&r, "epoll-lt")), (4, 4));
    let repeats: Vec<u32> = r.cells.iter().map(|c| c.repeat).collect();
    assert_eq!(
        repeats,
        [0, 0, 1, 1, 2, 2, 3, 3],
        "rounds interleave backends"
    );
    // A target every interval meets: the planned repeats only.
    let dir = tempfile::tempdir().unwrap();
    let (_, r) = compare_with(
        dir.path(),
        suite,
        "epoll-et,epoll-lt",
        &["--max-repeats", "4", "--ci-target", "1000000"],
    );
    assert_eq!((rounds(&r, "epoll-et"), rounds(&r, "epoll-lt")), (2, 2));
}
