//! Every chart kind rendered from the committed fixture into a temp dir: each SVG parses
//! and shows the expected series, each PNG decodes at the requested size, and results
//! with failed, unsupported and client-bound cells (or nothing at all) never panic.

mod plot_util;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::Command;

use harness::plot::{render, ChartKind, Format, RenderOptions, RenderedChart};
use harness::results::{CellStatus, ResultsFile};
use plot_util::*;

const W: u32 = 1000;
const H: u32 = 640;

/// Every chart the fixture supports, in plan order, with the backends it must show.
fn expected() -> Vec<(String, ChartKind, Vec<&'static str>)> {
    use ChartKind::*;
    let all = BACKENDS.to_vec();
    let mut v: Vec<(&str, ChartKind, Vec<&str>)> = vec![
        (
            "throughput-echo-64B-d1",
            ThroughputVsConnections,
            all.clone(),
        ),
        (
            "throughput-echo-16KiB-d1",
            ThroughputVsConnections,
            all.clone(),
        ),
        (
            "throughput-stream-1MiB-d1",
            ThroughputVsConnections,
            all.clone(),
        ),
    ];
    for name in [
        "latency-spectrum-echo-64B-d1-c1",
        "latency-spectrum-echo-64B-d1-c16",
        "latency-spectrum-echo-64B-d1-c64",
        "latency-spectrum-echo-64B-d1-c64-s2",
        "latency-spectrum-echo-64B-d1-c64-s3",
        "latency-spectrum-echo-64B-d1-c64-r20000",
        "latency-spectrum-echo-64B-d1-c64-r60000",
        "latency-spectrum-echo-64B-d1-c64-r100000",
        "latency-spectrum-echo-64B-d1-c64-r140000",
        "latency-spectrum-echo-64B-d1-c256",
        "latency-spectrum-echo-16KiB-d1-c16",
        "latency-spectrum-echo-16KiB-d1-c64",
        "latency-spectrum-http-d16-c64",
        "latency-spectrum-churn-c50",
    ] {
        v.push((name, LatencySpectrum, all.clone()));
    }
    v.push((
        "latency-vs-load-echo-64B-d1-c64",
        LatencyVsLoad,
        all.clone(),
    ));
    v.push(("cost-vs-load-echo-64B-d1-c64", CostVsLoad, all.clone()));
    let mut v: Vec<(String, ChartKind, Vec<&str>)> = v
        .into_iter()
        .map(|(n, k, b)| (n.to_string(), k, b))
        .collect();
    for (prefix, kind) in [
        ("cpu-per-request", CpuPerRequest),
        ("syscalls-per-request", SyscallsPerRequest),
    ] {
        for workload in ["echo", "http", "churn", "stream", "idle"] {
            v.push((format!("{prefix}-{workload}"), kind, all.clone()));
        }
    }
    v.push((
        "throughput-vs-cores-echo-64B-d1-c64".into(),
        ThroughputVsCores,
        all.clone(),
    ));
    v.push(("idle-effect-64B-d1-c64".into(), IdleEffect, all.clone()));
    v.push(("churn".into(), Churn, all));
    v
}

fn render_fixture(dir: &Path, formats: Vec<Format>) -> Vec<RenderedChart> {
    let results = load_fixture();
    let opts = RenderOptions {
        formats,
        width: W,
        height: H,
    };
    let rendered = render(&results, dir, &opts).unwrap();
    assert!(rendered.warnings.is_empty(), "{:?}", rendered.warnings);
    rendered.charts
}

#[test]
fn fixture_is_reproducible() {
    let generated = fixture_json();
    if updating() {
        fs::write(fixture_path(), &generated).unwrap();
        return;
    }
    let committed = fs::read_to_string(fixture_path())
        .expect("tests/fixtures/results.json missing: run with UPDATE_SNAPSHOTS=1");
    let a: ResultsFile = serde_json::from_str(&committed).unwrap();
    let b: ResultsFile = serde_json::from_str(&generated).unwrap();
    // Compare histograms decoded: deflate output may differ between flate2 backends.
    let strip = |mut r: ResultsFile| {
        let mut hists = Vec::new();
        for c in &mut r.cells {
            if let Some(m) = &mut c.client {
                for h in [m.histogram.take(), m.histogram_uncorrected.take()] {
                    hists.push(h.map(|s| decode(&s)));
                }
            }
        }
        (r, hists)
    };
    let (a, ha) = strip(a);
    let (b, hb) = strip(b);
    assert_eq!(
        a, b,
        "the fixture generator changed: rerun with UPDATE_SNAPSHOTS=1"
    );
    assert_eq!(
        ha, hb,
        "the fixture's histograms changed: rerun with UPDATE_SNAPSHOTS=1"
    );
}

fn decode(b64: &str) -> hdrhistogram::Histogram<u64> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .unwrap()
}

#[test]
fn every_chart_kind_renders_with_the_expected_series() {
    let dir = tempfile::tempdir().unwrap();
    let charts = render_fixture(dir.path(), vec![Format::Svg, Format::Png]);
    let expected = expected();
    let got: Vec<(&str, ChartKind)> = charts.iter().map(|c| (c.name.as_str(), c.kind)).collect();
    let want: Vec<(&str, ChartKind)> = expected.iter().map(|(n, k, _)| (n.as_str(), *k)).collect();
    assert_eq!(got, want);
    for kind in ChartKind::ALL {
        if kind == ChartKind::UringLadder {
            continue; // the fixture has no io_uring ladder: see the ladder test below
        }
        assert!(charts.iter().any(|c| c.kind == kind), "no {kind:?} chart");
    }
    for (chart, (_, _, backends)) in charts.iter().zip(&expected) {
        assert_eq!(chart.backends, *backends, "{}", chart.name);
        assert_eq!(chart.files.len(), 2);
        let svg = fs::read_to_string(&chart.files[0]).unwrap();
        check_svg(&svg, chart);
        check_png(&chart.files[1], W, H);
    }
}

/// Parses the SVG and checks its series: the backends drawn are the chart's, and every
/// one of them is drawn (lines as open polylines, bars as filled rects).
fn check_svg(svg: &str, chart: &RenderedChart) {
    let doc = roxmltree::Document::parse(svg)
        .unwrap_or_else(|e| panic!("{} is not XML: {e}", chart.name));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(root.attribute("width"), Some(W.to_string().as_str()));
    assert_eq!(root.attribute("height"), Some(H.to_string().as_str()));
    let texts: String = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        texts.contains(&chart.title),
        "{}: title missing",
        chart.name
    );
    assert!(texts.contains("bench-1"), "{}: footer missing", chart.name);
    assert!(
        texts.contains("6.1.0-31-amd64"),
        "{}: kernel missing",
        chart.name
    );
    let names: Vec<&str> = BACKENDS.to_vec();
    let lines = series_lines(&doc, &names);
    let bars = series_bars(&doc, &names);
    let marks = series_marks(&doc, &names);
    let want: BTreeSet<String> = chart.backends.iter().cloned().collect();
    // Two connection counts make bars, not a band chart.
    let few_points = chart.kind == ChartKind::ThroughputVsConnections && lines.is_empty();
    match chart.kind {
        ChartKind::CpuPerRequest | ChartKind::SyscallsPerRequest | ChartKind::Churn => {
            let got: BTreeSet<String> = bars.keys().cloned().collect();
            assert_eq!(got, want, "{}: bar series", chart.name);
            // Legend swatch plus at least one bar (or, on a log axis, a dot) per backend.
            for b in &want {
                let n = bars.get(b).copied().unwrap_or(0) + marks.get(b).copied().unwrap_or(0);
                assert!(n >= 2, "{}: {b}: {bars:?} {marks:?}", chart.name);
            }
        }
        _ if few_points => {
            let got: BTreeSet<String> = bars.keys().cloned().collect();
            assert_eq!(got, want, "{}: bar series", chart.name);
            assert!(bars.values().all(|n| *n >= 3), "{}: {bars:?}", chart.name);
        }
        _ => {
            let got: BTreeSet<String> = lines.keys().cloned().collect();
            assert_eq!(got, want, "{}: line series", chart.name);
        }
    }
    if matches!(
        chart.kind,
        ChartKind::CpuPerRequest | ChartKind::SyscallsPerRequest
    ) {
        // The headline charts carry their values: a number per backend and category.
        let labels = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text())
            .filter(|t| t.trim().parse::<f64>().is_ok())
            .count();
        assert!(
            labels > chart.backends.len(),
            "{}: {labels} value labels",
            chart.name
        );
    }
    if chart.kind == ChartKind::LatencySpectrum {
        let open_loop = chart.name.contains("-r");
        for (b, n) in &lines {
            if open_loop {
                // Corrected solid plus uncorrected dashed (many dash segments).
                assert!(*n > 2, "{}: {b} has {n} paths", chart.name);
            } else {
                assert_eq!(*n, 1, "{}: {b}", chart.name);
            }
        }
    }
    if chart.kind == ChartKind::IdleEffect {
        // Three panels: throughput, p99, memory (RSS solid, kernel slab dashed).
        assert!(lines.values().all(|n| *n > 3), "{}: {lines:?}", chart.name);
        assert!(texts.contains("memory per connection"));
        assert!(
            texts.contains("kernel slab growth"),
            "{}: the dashed line's key names slab growth",
            chart.name
        );
    }
}

fn is_closed(points: &str) -> bool {
    let pts: Vec<&str> = points.split_whitespace().collect();
    pts.len() > 2 && pts.first() == pts.last()
}

/// Backend → number of open polylines in its colour (data lines; markers are closed,
/// legend samples are rects).
fn series_lines(doc: &roxmltree::Document<'_>, names: &[&str]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for n in doc.descendants().filter(|n| n.has_tag_name("polyline")) {
        let (Some(stroke), Some(points)) = (n.attribute("stroke"), n.attribute("points")) else {
            continue;
        };
        if is_closed(points) {
            continue;
        }
        if let Some(b) = backend_of_color(stroke, names) {
            *out.entry(b).or_insert(0) += 1;
        }
    }
    out
}

/// Backend → number of filled polygons (markers) in its colour.
fn series_marks(doc: &roxmltree::Document<'_>, names: &[&str]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for n in doc.descendants().filter(|n| n.has_tag_name("polygon")) {
        if let Some(b) = n.attribute("fill").and_then(|f| backend_of_color(f, names)) {
            *out.entry(b).or_insert(0) += 1;
        }
    }
    out
}

/// Backend → number of filled rects in its colour.
fn series_bars(doc: &roxmltree::Document<'_>, names: &[&str]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for n in doc.descendants().filter(|n| n.has_tag_name("rect")) {
        if let Some(b) = n.attribute("fill").and_then(|f| backend_of_color(f, names)) {
            *out.entry(b).or_insert(0) += 1;
        }
    }
    out
}

/// Decodes the PNG, checks its size, and that it carries text and colour: the title
/// band has dark glyph pixels, the plot has coloured ones.
fn check_png(path: &Path, w: u32, h: u32) {
    let decoder = png::Decoder::new(std::io::BufReader::new(fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (w, h), "{}", path.display());
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let px = |x: u32, y: u32| {
        let i = ((y * w + x) * 3) as usize;
        (buf[i], buf[i + 1], buf[i + 2])
    };
    let title_ink = (0..(h / 12))
        .flat_map(|y| (0..w / 2).map(move |x| (x, y)))
        .filter(|&(x, y)| {
            let (r, g, b) = px(x, y);
            r < 100 && g < 100 && b < 100
        })
        .count();
    assert!(title_ink > 200, "{}: no title text drawn", path.display());
    let colour = (0..h)
        .step_by(2)
        .flat_map(|y| (0..w).step_by(2).map(move |x| (x, y)))
        .filter(|&(x, y)| {
            let (r, g, b) = px(x, y);
            r.max(g).max(b) - r.min(g).min(b) > 60
        })
        .count();
    assert!(colour > 100, "{}: no coloured series", path.display());
}

#[test]
fn png_size_follows_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut results = load_fixture();
    results
        .cells
        .retain(|c| c.group == "churn" || c.group == "echo-64B");
    let opts = RenderOptions {
        formats: vec![Format::Png],
        width: 640,
        height: 400,
    };
    let rendered = render(&results, dir.path(), &opts).unwrap();
    assert!(!rendered.charts.is_empty());
    for c in &rendered.charts {
        assert_eq!(c.files.len(), 1);
        check_png(&c.files[0], 640, 400);
    }
}

#[test]
fn failed_unsupported_and_client_bound_cells_render_without_panic() {
    let mut results = load_fixture();
    // Fail every repeat of one backend at one point, and a whole workload of another.
    for c in &mut results.cells {
        if c.backend == "epoll-et" && c.group == "echo-64B" && c.workload.connections == 16 {
            c.status = CellStatus::Failed {
                reason: "server never became ready".into(),
                stderr_tail: String::new(),
            };
            c.client = None;
            c.server = None;
        }
        if c.backend == "glommio" && c.group == "churn" {
            c.status = CellStatus::Unsupported {
                reason: "no churn".into(),
            };
        }
        if let Some(m) = &mut c.client {
            m.client_bound = true;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let rendered = render(&results, dir.path(), &RenderOptions::default()).unwrap();
    let tput = rendered
        .charts
        .iter()
        .find(|c| c.name == "throughput-echo-64B-d1")
        .unwrap();
    // epoll-et still has 1, 64 and 256 connections: a line with a gap, not a zero.
    assert!(tput.backends.contains(&"epoll-et".to_string()));
    let svg = fs::read_to_string(&tput.files[0]).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let texts: String = doc
        .descendants()
        .filter_map(|n| n.has_tag_name("text").then(|| n.text()).flatten())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        texts.contains("Not drawn (see the report): epoll-et at 16 connections (failed)"),
        "{texts}"
    );
    assert!(texts.contains("client-bound"));
    // The line breaks at the failed point: no epoll-et path runs through 1, 64 and 256.
    let et = harness::plot::style::hex(harness::plot::style::backend_style("epoll-et").color);
    let longest = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke") == Some(et.as_str()))
        .filter_map(|n| n.attribute("points"))
        .filter(|p| !is_closed(p))
        .map(|p| p.split_whitespace().count())
        .max();
    assert_eq!(longest, Some(2), "the line breaks at the failed point");
    let churn = rendered.charts.iter().find(|c| c.name == "churn").unwrap();
    assert!(!churn.backends.contains(&"glommio".to_string()));
    // No spectrum for a workload nobody measured.
    assert!(!rendered
        .charts
        .iter()
        .any(|c| c.name == "latency-spectrum-echo-64B-d1-c16"
            && c.backends.contains(&"epoll-et".into())));
}

#[test]
fn nothing_measured_means_no_charts_and_no_error() {
    let mut results = load_fixture();
    for c in &mut results.cells {
        c.status = CellStatus::Failed {
            reason: "boom".into(),
            stderr_tail: "panicked".into(),
        };
        c.client = None;
        c.server = None;
    }
    let dir = tempfile::tempdir().unwrap();
    let rendered = render(&results, dir.path(), &RenderOptions::default()).unwrap();
    assert!(rendered.charts.is_empty());
    results.cells.clear();
    let rendered = render(&results, dir.path(), &RenderOptions::default()).unwrap();
    assert!(rendered.charts.is_empty());
}

#[test]
fn a_corrupt_histogram_is_a_warning_not_a_failure() {
    let mut results = load_fixture();
    let cell = results
        .cells
        .iter_mut()
        .find(|c| c.group == "http-d16" && c.backend == "uring")
        .unwrap();
    cell.client.as_mut().unwrap().histogram = Some("definitely not a histogram".into());
    let dir = tempfile::tempdir().unwrap();
    let opts = RenderOptions {
        formats: vec![Format::Svg],
        ..RenderOptions::default()
    };
    let rendered = render(&results, dir.path(), &opts).unwrap();
    assert_eq!(rendered.warnings.len(), 1, "{:?}", rendered.warnings);
    assert!(rendered.warnings[0].contains("uring http-d16 repeat"));
    let spectrum = rendered
        .charts
        .iter()
        .find(|c| c.name == "latency-spectrum-http-d16-c64")
        .unwrap();
    assert!(!spectrum.backends.contains(&"uring".to_string()));
}

#[test]
fn the_cli_renders_next_to_the_results_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("run.json");
    fs::copy(fixture_path(), &results).unwrap();
    let cli = <harness::cli::Cli as clap::Parser>::try_parse_from([
        "harness",
        "plot",
        results.to_str().unwrap(),
        "--format",
        "svg",
    ])
    .unwrap();
    cli.run().unwrap();
    let plots = dir.path().join("plots");
    assert!(plots.join("churn.svg").is_file());
    assert!(!plots.join("churn.png").exists());

    let missing = <harness::cli::Cli as clap::Parser>::try_parse_from([
        "harness",
        "plot",
        dir.path().join("nope.json").to_str().unwrap(),
    ])
    .unwrap()
    .run()
    .unwrap_err();
    assert!(format!("{missing:#}").contains("nope.json"));
    assert!(<harness::cli::Cli as clap::Parser>::try_parse_from([
        "harness", "plot", "x.json", "--size", "12x12"
    ])
    .is_err());
}

/// The text is drawn from the embedded font: with fontconfig pointed at nothing, the
/// binary still renders PNGs with glyphs in them, and no font library is loaded.
#[test]
fn renders_with_fontconfig_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let out = dir.path().join("plots");
    let status = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["plot", fixture_path().to_str().unwrap(), "--format", "png"])
        .arg("--out")
        .arg(&out)
        .args(["--size", "800x500"])
        .env("FONTCONFIG_FILE", "/nonexistent/fonts.conf")
        .env("FONTCONFIG_PATH", "/nonexistent")
        .env("FONTCONFIG_SYSROOT", &empty)
        .env("XDG_DATA_HOME", &empty)
        .env("XDG_DATA_DIRS", &empty)
        .env("HOME", &empty)
        .status()
        .unwrap();
    assert!(status.success());
    check_png(&out.join("churn.png"), 800, 500);
    check_png(&out.join("throughput-echo-64B-d1.png"), 800, 500);

    // In this process too: after rendering, no font library is mapped.
    let _ = render_fixture(dir.path(), vec![Format::Png]);
    let maps = fs::read_to_string("/proc/self/maps").unwrap();
    for lib in ["libfontconfig", "libfreetype"] {
        assert!(!maps.contains(lib), "{lib} is loaded");
    }
}

#[test]
fn many_backends_make_small_multiples_and_a_filter_narrows_them() {
    let mut results = load_fixture();
    // Seven backends: the fixture's four plus three variants copied from theirs.
    let extra: Vec<_> = results
        .cells
        .iter()
        .filter(|c| c.backend == "uring" || c.backend == "epoll-lt")
        .flat_map(|c| {
            let names: &[&str] = if c.backend == "uring" {
                &["uring-multishot", "uring-sqpoll"]
            } else {
                &["tokio"]
            };
            names.iter().map(move |n| {
                let mut c = c.clone();
                c.backend = n.to_string();
                c
            })
        })
        .collect();
    results.cells.extend(extra);
    let dir = tempfile::tempdir().unwrap();
    let opts = RenderOptions {
        formats: vec![Format::Svg],
        width: W,
        height: H,
    };
    let rendered = render(&results, dir.path(), &opts).unwrap();
    let spectrum = rendered
        .charts
        .iter()
        .find(|c| c.name == "latency-spectrum-echo-64B-d1-c64")
        .unwrap();
    assert_eq!(spectrum.backends.len(), 7);
    let svg = fs::read_to_string(&spectrum.files[0]).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    for panel in [
        "epoll-et, epoll-lt",
        "uring, uring-multishot, uring-sqpoll",
        "glommio, tokio",
    ] {
        assert!(texts.contains(&panel), "no panel {panel}: {texts:?}");
    }
    // A chart with at most five backends keeps one panel.
    let few = render_fixture(dir.path(), vec![Format::Svg]);
    let one = few
        .iter()
        .find(|c| c.name == "latency-spectrum-echo-64B-d1-c64")
        .unwrap();
    let svg = fs::read_to_string(&one.files[0]).unwrap();
    assert!(!svg.contains("epoll-et, epoll-lt"));

    let mut narrowed = results.clone();
    harness::plot::filter_backends(&mut narrowed, &["epoll-et".into(), "uring".into()]).unwrap();
    let rendered = render(&narrowed, dir.path(), &opts).unwrap();
    assert!(!rendered.charts.is_empty());
    for c in &rendered.charts {
        assert!(
            c.backends.iter().all(|b| b == "epoll-et" || b == "uring"),
            "{}: {:?}",
            c.name,
            c.backends
        );
    }
    let e = harness::plot::filter_backends(&mut results, &["nginx".into()]).unwrap_err();
    assert!(format!("{e}").contains("`nginx` has no cells"), "{e}");
}

/// The fixture with the `uring` cells of one closed-loop shape copied onto a ladder of
/// `steps` (each 10% cheaper and with one syscall per request less than the step before)
/// plus one branch (20% costlier than its parent).
fn ladder_results(steps: &[&str], branch: Option<(&str, usize)>) -> ResultsFile {
    let mut results = load_fixture();
    let base: Vec<harness::results::Cell> = results
        .cells
        .iter()
        .filter(|c| {
            c.backend == "uring"
                && c.workload.kind == harness::results::WorkloadKind::Echo
                && c.status == CellStatus::Ok
                && c.workload.rate.is_none()
                && c.workload.connections == 64
                && c.workload.size == 64
                && c.server_cores.len() == 1
        })
        .cloned()
        .collect();
    assert!(!base.is_empty(), "the fixture has closed-loop uring cells");
    results.cells.retain(|c| c.backend != "uring");
    results.plan.backends.retain(|b| b != "uring");
    let mut add = |name: &str, factor: f64, syscalls: f64| {
        for c in &base {
            let mut c = c.clone();
            c.backend = name.to_string();
            if let Some(s) = c.server.as_mut() {
                s.cpu_user_us_per_req *= factor;
                s.cpu_sys_us_per_req *= factor;
                s.syscalls_per_req = Some(syscalls);
            }
            if let Some(l) = c.ledger.as_mut() {
                l.server_cpu_us_per_req = l.server_cpu_us_per_req.map(|v| v * factor);
            }
            results.cells.push(c);
        }
        results.plan.backends.push(name.to_string());
    };
    for (k, step) in steps.iter().enumerate() {
        add(step, 0.9f64.powi(k as i32), 10.0 - k as f64);
    }
    if let Some((name, parent)) = branch {
        add(name, 0.9f64.powi(parent as i32) * 1.2, 10.0 - parent as f64);
    }
    results
}

#[test]
fn the_uring_ladder_chart_shows_every_step_with_its_marginal_change() {
    let steps = [
        "uring",
        "uring+single",
        "uring+single+defer",
        "uring+single+defer+zc",
    ];
    let results = ladder_results(&steps, Some(("uring+single+defer+send-bundle", 2)));
    let dir = tempfile::tempdir().unwrap();
    let opts = RenderOptions {
        formats: vec![Format::Svg, Format::Png],
        width: W,
        height: H,
    };
    let charts = render(&results, dir.path(), &opts).unwrap().charts;
    let ladders: Vec<&RenderedChart> = charts
        .iter()
        .filter(|c| c.kind == ChartKind::UringLadder)
        .collect();
    let names: Vec<&str> = ladders.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        ladders.len(),
        1,
        "one closed-loop shape has the ladder: {names:?}"
    );
    let chart = ladders[0];
    assert_eq!(chart.name, "uring-ladder-echo-64B-d1-c64");
    let mut want: Vec<&str> = steps.to_vec();
    want.push("uring+single+defer+send-bundle");
    assert_eq!(chart.backends, want, "chain in order, then the branch");
    let svg = fs::read_to_string(&chart.files[0]).unwrap();
    check_png(&chart.files[1], W, H);
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .collect();
    let all = texts.join(" ");
    assert!(all.contains(&chart.title));
    // Step numbers with their change to the step before, in both panels: CPU −10% per
    // step, syscalls one fewer (10 → 9 is −10%, 9 → 8 −11%); the branch +20% CPU.
    for label in [
        "1 −10%",
        "2 −10%",
        "3 −10%",
        "2 −11%",
        "3 −12%",
        "2′ +20%",
        "2′ ±0.0%",
    ] {
        assert!(
            texts.iter().any(|t| t.trim() == label),
            "no label {label:?} in {texts:?}"
        );
    }
    assert!(all.contains("server CPU per request") && all.contains("syscalls per request"));
    assert!(
        all.contains("bootstrap 95% interval"),
        "the whiskers are explained"
    );
    // Bars: one per step per panel in its backend's colour (a branch in the light shade),
    // besides the legend swatches.
    let fills: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("rect"))
        .filter_map(|n| n.attribute("fill"))
        .map(|f| f.to_ascii_lowercase())
        .collect();
    for b in steps {
        let colour = harness::plot::style::hex(harness::plot::style::backend_style(b).color)
            .to_ascii_lowercase();
        assert!(
            fills.iter().filter(|f| **f == colour).count() >= 3,
            "{b}: two bars and a swatch in {colour}"
        );
    }

    // Two steps are not a ladder.
    let results = ladder_results(&steps[..2], None);
    let charts = render(&results, dir.path(), &opts).unwrap().charts;
    assert!(charts.iter().all(|c| c.kind != ChartKind::UringLadder));
}
