//! `harness report`: the markdown write-up is snapshot-tested against the committed
//! fixture, the CSV has one well-formed row per cell, and the CLI's chart links resolve.
//! Regenerate the snapshots with `UPDATE_SNAPSHOTS=1 cargo test -p harness --test report_markdown`.

mod plot_util;

use std::fs;
use std::path::PathBuf;

use harness::report::{csv, markdown, PlotLinks};
use plot_util::*;

fn snapshot(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if updating() {
        fs::write(&path, actual).unwrap();
        return;
    }
    let expected = fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing: run with UPDATE_SNAPSHOTS=1", path.display()));
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the snapshot at line {}:\n  expected: {:?}\n  actual:   {:?}\n\
             rerun with UPDATE_SNAPSHOTS=1 if the change is intended",
            name,
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first)
        );
    }
}

#[test]
fn markdown_matches_the_snapshot() {
    let md = markdown(&load_fixture(), &PlotLinks::new("plots", "svg"));
    snapshot("report.md", &md);
}

#[test]
fn markdown_names_failures_and_marks_client_bound_cells() {
    let md = markdown(&load_fixture(), &PlotLinks::new("../plots/", "png"));
    assert!(md.contains("| uring | echo-64B | echo 64 B, 256 conns | 1 | failed | server exited with signal 11 (SIGSEGV)"));
    assert!(
        md.contains("| glommio | idle-sweep | idle 64 B, 64 conns, 50k idle | 0 | unsupported |")
    );
    assert!(md.contains("⚠ 3/3"));
    assert!(md.contains("| 1 failed |"));
    assert!(md.contains("](../plots/churn.png)"));
    // One table per group, in run order.
    let groups: Vec<&str> = md.lines().filter_map(|l| l.strip_prefix("### ")).collect();
    assert_eq!(
        groups,
        [
            "echo-64B",
            "echo-16KiB",
            "http-d16",
            "stream-1MiB",
            "churn",
            "echo-64B-open-loop",
            "echo-64B-cores",
            "idle-sweep"
        ]
    );
}

/// Splits one CSV record (RFC 4180 quoting).
fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

#[test]
fn csv_has_one_row_per_cell() {
    let results = load_fixture();
    let text = csv(&results);
    snapshot("report.csv", &text);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), results.cells.len() + 1);
    let header = fields(lines[0]);
    for (line, cell) in lines[1..].iter().zip(&results.cells) {
        let row = fields(line);
        assert_eq!(row.len(), header.len(), "{line}");
        let get = |name: &str| &row[header.iter().position(|h| h == name).unwrap()];
        assert_eq!(get("backend"), &cell.backend);
        match &cell.client {
            Some(m) => assert_eq!(
                get("throughput_rps").parse::<f64>().unwrap(),
                m.throughput_rps
            ),
            // Not measured is empty, never zero.
            None => assert_eq!(get("throughput_rps"), ""),
        }
    }
    assert!(text.contains(",failed,server exited with signal 11"));
}

#[test]
fn the_cli_links_to_the_charts_it_rendered() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results").join("run.json");
    fs::create_dir_all(results.parent().unwrap()).unwrap();
    fs::copy(fixture_path(), &results).unwrap();
    let run = |args: &[&str]| {
        <harness::cli::Cli as clap::Parser>::try_parse_from(args)
            .unwrap()
            .run()
    };
    let r = results.to_str().unwrap();
    run(&["harness", "plot", r, "--format", "png"]).unwrap();
    let report = dir.path().join("report.md");
    run(&["harness", "report", r, "--out", report.to_str().unwrap()]).unwrap();
    let md = fs::read_to_string(&report).unwrap();
    let mut links = 0;
    for target in md.split("](").skip(1).filter_map(|s| s.split(')').next()) {
        assert!(
            target.starts_with("results/plots/") && target.ends_with(".png"),
            "{target}"
        );
        assert!(dir.path().join(target).is_file(), "{target} does not exist");
        links += 1;
    }
    assert!(links > 30, "{links} links");

    let out = dir.path().join("cells.csv");
    run(&[
        "harness",
        "report",
        r,
        "--format",
        "csv",
        "-o",
        out.to_str().unwrap(),
    ])
    .unwrap();
    assert!(fs::read_to_string(out)
        .unwrap()
        .starts_with("group,backend,workload,"));

    let err = run(&["harness", "report", "/nonexistent/run.json"]).unwrap_err();
    assert!(format!("{err:#}").contains("/nonexistent/run.json"));
}
