//! Exports and command-line conventions: `.hgrm` per cell and from `harness load`, JSON on
//! standard output, the CSV's percentiles, durations with units, short flags,
//! completions and the man page.

mod plot_util;
mod util;

use std::fs;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use backend_api::Service;
use clap::Parser;
use harness::cli::{Cli, Command as Sub};
use plot_util::*;
use util::*;

/// Runs the harness binary with `args`, killed after 60 s.
fn harness(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("harness {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: fs::read(out).unwrap(),
        stderr: fs::read(err).unwrap(),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The data rows of an `.hgrm`: value, percentile, total count.
fn hgrm_rows(t: &str) -> Vec<(f64, f64, u64)> {
    t.lines()
        .skip(2)
        .take_while(|l| !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn hgrm_per_cell_matches_each_histogram() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hgrm");
    let fixture = fixture_path();
    let o = harness(&[
        "report",
        fixture.to_str().unwrap(),
        "--format",
        "hgrm",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let results = load_fixture();
    let mut expected = 0;
    for c in results.cells.iter().filter(|c| c.client.is_some()) {
        let m = c.client.as_ref().unwrap();
        expected +=
            usize::from(m.histogram.is_some()) + usize::from(m.histogram_uncorrected.is_some());
    }
    let names: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(expected > 10);
    assert_eq!(names.len(), expected, "{names:?}");
    assert!(names.iter().any(|n| n.ends_with("-uncorrected.hgrm")));
    // Every file: values and percentiles rise to exactly 1; its count and max are one
    // histogram's (µs in the results, ms in the file).
    let mut found: Vec<(u64, f64)> = Vec::new();
    for n in &names {
        let rows = hgrm_rows(&fs::read_to_string(out.join(n)).unwrap());
        let last = rows.last().unwrap();
        assert_eq!(last.1, 1.0, "{n}");
        assert!(
            rows.windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1),
            "{n}"
        );
        found.push((last.2, last.0));
    }
    for c in &results.cells {
        let Some(m) = &c.client else { continue };
        for h in [&m.histogram, &m.histogram_uncorrected]
            .into_iter()
            .flatten()
        {
            let bytes =
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, h).unwrap();
            let h: hdrhistogram::Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
                .deserialize(&mut bytes.as_slice())
                .unwrap();
            let want = h.max() as f64 / 1000.0;
            // Within the histogram's 3 significant digits.
            assert!(
                found
                    .iter()
                    .any(|(n, max)| *n == h.len() && (max - want).abs() <= want * 0.002 + 0.001),
                "no .hgrm with {} values up to {want} ms",
                h.len()
            );
        }
    }

    let o = harness(&["report", fixture.to_str().unwrap(), "--format", "hgrm"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("--out DIR"), "{}", text(&o.stderr));
}

#[test]
fn json_goes_to_standard_output_in_column_order() {
    let fixture = fixture_path();
    let o = harness(&["report", fixture.to_str().unwrap(), "--json", "-"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let results = load_fixture();
    assert_eq!(rows.len(), results.cells.len());
    assert!(
        out.trim_start().starts_with("[\n  {\"group\": "),
        "{}",
        &out[..80]
    );
    for (row, cell) in rows.iter().zip(&results.cells) {
        assert_eq!(row["backend"], cell.backend.as_str());
        match &cell.client {
            Some(m) => {
                assert_eq!(row["p90_us"].as_f64().unwrap(), m.latency_us.p90);
                assert_eq!(row["p999_us"].as_f64().unwrap(), m.latency_us.p999);
                assert_eq!(row["client_bound"], m.client_bound);
            }
            None => assert!(row["p99_us"].is_null()),
        }
    }
    let csv = text(
        &harness(&[
            "report",
            fixture.to_str().unwrap(),
            "--format",
            "csv",
            "-o",
            "-",
        ])
        .stdout,
    );
    let header = csv.lines().next().unwrap();
    assert!(
        header.contains(",p50_us,p90_us,p99_us,p999_us,max_us,"),
        "{header}"
    );
}

#[test]
fn load_writes_json_to_stdout_and_an_hgrm() {
    let server = start(epoll_lt(), Service::Echo);
    let dir = tempfile::tempdir().unwrap();
    let hgrm = dir.path().join("run.hgrm");
    let target = server.local_addr().to_string();
    let core = client_core().to_string();
    let o = harness(&[
        "load",
        "--target",
        &target,
        "--workload",
        "echo",
        "-c",
        "2",
        "-d",
        "300ms",
        "--warmup",
        "100ms",
        "--cores",
        &core,
        "--json",
        "-",
        "--hgrm",
        hgrm.to_str().unwrap(),
    ]);
    stop(server);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // Standard output is the JSON alone; the summary went to standard error.
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["schema_version"], 1);
    assert_eq!(report["config"]["connections"], 2);
    let measured = report["measured_s"].as_f64().unwrap();
    assert!((0.25..1.5).contains(&measured), "{measured}");
    assert!(text(&o.stderr).contains("echo"), "{}", text(&o.stderr));
    let completed = report["requests"]["completed"].as_u64().unwrap();
    assert!(completed > 0);
    let rows = hgrm_rows(&fs::read_to_string(&hgrm).unwrap());
    assert_eq!(rows.last().unwrap().2, completed);
    assert_eq!(rows.last().unwrap().1, 1.0);
}

#[test]
fn durations_take_units_and_load_has_short_flags() {
    let cli = Cli::try_parse_from([
        "harness",
        "load",
        "--target",
        "127.0.0.1:1",
        "--workload",
        "http",
        "-c",
        "8",
        "-d",
        "500ms",
        "-R",
        "1000",
        "--warmup",
        "2s",
        "--drain",
        "250ms",
        "--connect-timeout",
        "1m",
    ])
    .unwrap();
    let Sub::Load(a) = cli.command else {
        panic!("not load")
    };
    assert_eq!(a.connections, Some(8));
    assert_eq!(a.duration, 0.5);
    assert_eq!(a.rate, Some(1000.0));
    assert_eq!(a.warmup, 2.0);
    assert_eq!(a.drain, 0.25);
    assert_eq!(a.connect_timeout, 60.0);
    let cfg = a.to_config().unwrap();
    assert_eq!(cfg.workload.duration, Duration::from_millis(500));

    let cli = Cli::try_parse_from([
        "harness",
        "--quiet",
        "compare",
        "--duration",
        "30s",
        "--warmup",
        "500ms",
    ])
    .unwrap();
    assert!(cli.quiet);
    let Sub::Compare(a) = cli.command else {
        panic!("not compare")
    };
    assert_eq!((a.duration, a.warmup), (Some(30.0), Some(0.5)));

    let e = Cli::try_parse_from(["harness", "compare", "--duration", "30 sec"]).unwrap_err();
    assert!(e.to_string().contains("500ms, 30s"), "{e}");
}

#[test]
fn completions_and_man_pages() {
    let o = harness(&["completions", "bash"]);
    assert!(o.status.success());
    let bash = text(&o.stdout);
    assert!(
        bash.contains("_harness()") && bash.contains("--hgrm"),
        "{}",
        &bash[..200.min(bash.len())]
    );
    let o = harness(&["completions", "zsh"]);
    assert!(text(&o.stdout).starts_with("#compdef harness"));

    let o = harness(&["man"]);
    assert!(o.status.success());
    let man = text(&o.stdout);
    assert!(
        man.starts_with(".ie") || man.contains(".TH harness"),
        "{}",
        &man[..200.min(man.len())]
    );
    assert!(man.contains("completions"));
    let o = harness(&["man", "load"]);
    let man = text(&o.stdout);
    assert!(
        man.contains(".TH harness-load 1"),
        "{}",
        &man[..300.min(man.len())]
    );
    assert!(man.contains("\\-\\-hgrm"));
    let o = harness(&["man", "nope"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("one of: list, serve"));

    // Colour follows --color; never is plain text even when asked for help.
    let o = harness(&["--color", "always", "load", "--bogus"]);
    assert!(text(&o.stderr).contains('\u{1b}'), "{}", text(&o.stderr));
    let o = harness(&["--color", "never", "load", "--bogus"]);
    assert!(!text(&o.stderr).contains('\u{1b}'));
    // Not a terminal: no colour by default.
    let o = harness(&["load", "--bogus"]);
    assert!(!text(&o.stderr).contains('\u{1b}'));
}
