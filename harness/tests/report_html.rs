//! `harness report --format html` on the committed reference run, opened in headless
//! Chromium: the page renders without a console error or a network request, every chart
//! of the run is on it and visible, the per-cell table sorts, and a screenshot of the
//! first screen is kept under target/test-output/ for review. Skipped, with the reason
//! printed, only where Chromium is not installed; under CI (which installs it through
//! scripts/install-deps.sh --ci) a missing Chromium is a failure.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::results::read_results;

/// Longest one Chromium run may take before the test kills it and fails.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);

fn reference_run() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../results/compare-20261123-055510.json")
}

/// target/test-output/, beside cargo's own per-test temporary directory.
fn output_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp
        .parent()
        .map(|p| p.join("test-output"))
        .unwrap_or_else(|| tmp.join("test-output"));
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Runs Chromium headless on `page` with `extra` flags, stdout into `stdout_file`, killed
/// after [`CHROMIUM_TIMEOUT`]. Returns its standard error.
fn run_chromium(
    bin: &Path,
    profile: &Path,
    page: &Path,
    extra: &[&str],
    stdout_file: &Path,
) -> String {
    let stderr_file = stdout_file.with_extension("stderr");
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "--window-size=1280,900",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(format!("file://{}", page.display()))
    .stdin(Stdio::null())
    // Files, not pipes: a full pipe would stall Chromium while the test waits on it.
    .stdout(fs::File::create(stdout_file).unwrap())
    .stderr(fs::File::create(&stderr_file).unwrap());
    let mut child = cmd.spawn().expect("starting chromium");
    let deadline = Instant::now() + CHROMIUM_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium did not finish within {CHROMIUM_TIMEOUT:?}; stderr:\n{}",
                fs::read_to_string(&stderr_file).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = fs::read_to_string(&stderr_file).unwrap_or_default();
    assert!(status.success(), "chromium exited with {status}:\n{stderr}");
    stderr
}

/// Inserted first in <head>: records every error and console error or warning, then,
/// once the page has loaded, measures each chart, sorts the cell table by req/s, and
/// writes what it found as JSON into <pre id="probe"> for --dump-dom to show.
const PROBE: &str = r#"<script>
window.__problems = [];
window.addEventListener('error', function (e) { window.__problems.push('error: ' + e.message); });
['error', 'warn'].forEach(function (level) {
  var orig = console[level];
  console[level] = function () {
    window.__problems.push(level + ': ' + Array.prototype.join.call(arguments, ' '));
    orig.apply(console, arguments);
  };
});
window.addEventListener('load', function () {
  var charts = Array.prototype.map.call(document.querySelectorAll('figure.chart'), function (f) {
    var svg = f.querySelector('svg');
    var r = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
    var st = svg ? getComputedStyle(svg) : {display: 'none', visibility: 'hidden'};
    return {id: f.id, width: r.width, height: r.height, display: st.display,
            visibility: st.visibility, shapes: svg ? svg.querySelectorAll('*').length : 0,
            caption: (f.querySelector('figcaption') || {textContent: ''}).textContent.length};
  });
  var table = document.getElementById('cells-table');
  var col = Array.prototype.findIndex.call(table.tHead.rows[0].cells,
                                           function (th) { return th.textContent === 'req/s'; });
  table.tHead.rows[0].cells[col].click();
  var sorted = Array.prototype.map.call(table.tBodies[0].rows, function (r) {
    return r.cells[col].getAttribute('data-v');
  });
  var out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({problems: window.__problems, charts: charts,
    sorted: sorted, rows: table.tBodies[0].rows.length,
    requests: performance.getEntriesByType('resource').length});
  document.body.appendChild(out);
});
</script>"#;

#[test]
fn the_html_report_renders_in_chromium_with_every_chart_visible() {
    let Some(bin) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is missing under CI: scripts/install-deps.sh --ci installs it"
        );
        println!("skipped: chromium is not installed (scripts/install-deps.sh installs it)");
        return;
    };
    let out = output_dir();
    let page = out.join("report.html");
    let run = reference_run();
    let argv = [
        "harness",
        "report",
        run.to_str().unwrap(),
        "--format",
        "html",
        "--out",
        page.to_str().unwrap(),
    ];
    <harness::cli::Cli as clap::Parser>::try_parse_from(argv)
        .unwrap()
        .run()
        .unwrap();
    let html = fs::read_to_string(&page).unwrap();
    // Self-contained: nothing to fetch, and the page forbids fetching.
    for needle in ["src=\"http", "href=\"http", "<link", "url(", "@import"] {
        assert!(
            !html.contains(needle),
            "the page refers outside itself: {needle}"
        );
    }
    assert!(html.contains("Content-Security-Policy\" content=\"default-src 'none'"));

    let results = read_results(&run).unwrap();
    let (figs, _) = harness::plot::plan(&results);
    assert!(figs.len() >= 20, "{} charts", figs.len());

    let probed = out.join("report-probe.html");
    fs::write(
        &probed,
        html.replacen("<head>", &format!("<head>\n{PROBE}"), 1),
    )
    .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let dom_file = out.join("report-probe.dom");
    run_chromium(
        &bin,
        profile.path(),
        &probed,
        &["--virtual-time-budget=10000", "--dump-dom"],
        &dom_file,
    );
    let dom = fs::read_to_string(&dom_file).unwrap();
    let json = dom
        .split("<pre id=\"probe\">")
        .nth(1)
        .and_then(|s| s.split("</pre>").next())
        .unwrap_or_else(|| {
            panic!(
                "the probe did not run; page:\n{}",
                &dom[..dom.len().min(2000)]
            )
        });
    let json = json
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    let probe: serde_json::Value = serde_json::from_str(&json).unwrap();

    let problems = probe["problems"].as_array().unwrap();
    assert!(problems.is_empty(), "console errors: {problems:?}");
    assert_eq!(probe["requests"], 0, "the page fetched something");

    let charts = probe["charts"].as_array().unwrap();
    let ids: Vec<&str> = charts.iter().map(|c| c["id"].as_str().unwrap()).collect();
    let want: Vec<String> = figs.iter().map(|f| format!("chart-{}", f.name)).collect();
    assert_eq!(ids, want, "every chart of the run, in plan order");
    for c in charts {
        let (w, h) = (c["width"].as_f64().unwrap(), c["height"].as_f64().unwrap());
        assert!(w > 600.0 && h > 350.0, "chart too small or hidden: {c}");
        assert!((w / h - 1.6).abs() < 0.05, "chart distorted: {c}");
        assert_ne!(c["display"], "none", "{c}");
        assert_eq!(c["visibility"], "visible", "{c}");
        assert!(
            c["shapes"].as_u64().unwrap() > 50,
            "chart drew almost nothing: {c}"
        );
        assert!(
            c["caption"].as_u64().unwrap() > 20,
            "chart without caption: {c}"
        );
    }

    assert_eq!(
        probe["rows"].as_u64().unwrap() as usize,
        results.cells.len()
    );
    let sorted: Vec<Option<f64>> = probe["sorted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().and_then(|s| s.parse().ok()))
        .collect();
    let numbers: Vec<f64> = sorted.iter().flatten().copied().collect();
    assert!(numbers.len() > 100);
    assert!(
        numbers.windows(2).all(|w| w[0] <= w[1]),
        "clicking req/s did not sort ascending"
    );
    // Unmeasured cells sort last.
    let first_empty = sorted
        .iter()
        .position(Option::is_none)
        .unwrap_or(sorted.len());
    assert!(sorted[first_empty..].iter().all(Option::is_none));

    let shot = out.join("report-first-screen.png");
    let _ = fs::remove_file(&shot);
    let shot_arg = format!("--screenshot={}", shot.display());
    run_chromium(
        &bin,
        profile.path(),
        &page,
        &["--virtual-time-budget=5000", &shot_arg],
        &out.join("report-screenshot.out"),
    );
    let png = fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    println!("screenshot of the first screen: {}", shot.display());
}
