//! `harness diff A.json B.json`: what changed between two results files (two kernels, two
//! commits, two machines). Cells are matched by workload shape and backend; each metric
//! reads as B over A with its bootstrap interval, and `--fail-above` turns a regression
//! whose interval is clear of the threshold into a non-zero exit for CI.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::bail;

use crate::analysis::stats::{self, Estimate, Metric};
use crate::analysis::{describe_workload, Index, Shape};
use crate::results::{read_results, ResultsFile};

/// Output formats of `harness diff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DiffFormat {
    /// Aligned columns for the terminal.
    Terminal,
    /// A markdown table.
    Markdown,
}

/// `harness diff` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DiffArgs {
    /// The baseline results file.
    pub a: PathBuf,
    /// The results file compared with it.
    pub b: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = DiffFormat::Terminal)]
    pub format: DiffFormat,
    /// Exit non-zero when any metric of B is worse than A's by more than PCT percent, with
    /// its whole 95% interval beyond that (CPU/req, syscalls/req or p99 higher,
    /// throughput lower).
    #[arg(long, value_name = "PCT")]
    pub fail_above: Option<f64>,
}

/// The metrics compared, in column order.
const METRICS: [Metric; 4] = [
    stats::THROUGHPUT,
    stats::CPU_PER_REQ,
    stats::SYSCALLS_PER_REQ,
    stats::P99,
];

/// One metric of one matched cell.
#[derive(Debug, Clone)]
pub enum Change {
    /// B over A, with its interval.
    Ratio(Estimate),
    /// One side fell short of its open-loop target: not compared.
    Saturated,
    /// A side lacks the metric.
    Missing,
}

/// One backend on one workload shape, present in both files.
#[derive(Debug, Clone)]
pub struct Row {
    /// What the workload was, for headings.
    pub workload: String,
    /// Backend.
    pub backend: String,
    /// One change per entry of the metrics, in column order.
    pub changes: Vec<Change>,
}

/// Everything `diff` found.
#[derive(Debug, Clone, Default)]
pub struct Diff {
    /// Matched cells.
    pub rows: Vec<Row>,
    /// "backend on workload" measured only in A.
    pub only_a: Vec<String>,
    /// Measured only in B.
    pub only_b: Vec<String>,
}

fn workload_name(shape: &Shape) -> String {
    let mut s = format!("{}, {} conns", describe_workload(shape), shape.connections);
    if let Some(r) = shape.rate() {
        let _ = write!(s, ", {} req/s", crate::plot::axis::fmt_si(r));
    }
    if shape.idle > 0 {
        let _ = write!(s, ", {} idle", shape.idle);
    }
    if shape.server_cores != 1 {
        let _ = write!(s, ", {} server cores", shape.server_cores);
    }
    s
}

/// Matches the measured cells of `a` and `b` and takes B / A for every metric.
pub fn diff(a: &ResultsFile, b: &ResultsFile) -> Diff {
    let (ia, ib) = (Index::new(a), Index::new(b));
    let mut d = Diff::default();
    for shape in ia.shapes(|_| true) {
        for ga in ia.of_shape(&shape).filter(|g| !g.ok.is_empty()) {
            let Some(gb) = ib.get(&shape, ga.backend).filter(|g| !g.ok.is_empty()) else {
                d.only_a
                    .push(format!("{} on {}", ga.backend, workload_name(&shape)));
                continue;
            };
            let saturated = ga.ok.iter().chain(&gb.ok).any(|c| stats::is_saturated(c));
            let changes = METRICS
                .iter()
                .map(|m| {
                    if saturated {
                        return Change::Saturated;
                    }
                    match stats::ratio(&gb.ok, &ga.ok, m) {
                        Some(r) => Change::Ratio(r),
                        None => Change::Missing,
                    }
                })
                .collect();
            d.rows.push(Row {
                workload: workload_name(&shape),
                backend: ga.backend.to_string(),
                changes,
            });
        }
    }
    for shape in ib.shapes(|_| true) {
        for gb in ib.of_shape(&shape).filter(|g| !g.ok.is_empty()) {
            if ia.get(&shape, gb.backend).is_none_or(|g| g.ok.is_empty()) {
                d.only_b
                    .push(format!("{} on {}", gb.backend, workload_name(&shape)));
            }
        }
    }
    d
}

/// Whether `r` is a regression of metric `m` beyond `pct` percent with its interval clear
/// of the threshold.
pub fn regressed(r: &Estimate, m: &Metric, pct: f64) -> bool {
    let t = pct / 100.0;
    if m.lower_is_better {
        r.lo > 1.0 + t
    } else {
        r.hi < 1.0 - t
    }
}

fn text(c: &Change) -> String {
    match c {
        Change::Ratio(r) if r.is_point() => format!("{:.2}×", r.value),
        Change::Ratio(r) => format!("{:.2}× [{:.2}–{:.2}]", r.value, r.lo, r.hi),
        Change::Saturated => "saturated".to_string(),
        Change::Missing => "-".to_string(),
    }
}

/// The diff as text in `format`, with regressions beyond `fail_above` marked.
pub fn render(d: &Diff, format: DiffFormat, fail_above: Option<f64>) -> String {
    let mark = |c: &Change, m: &Metric| match (c, fail_above) {
        (Change::Ratio(r), Some(p)) if regressed(r, m, p) => " ✗",
        _ => "",
    };
    let mut s = String::new();
    match format {
        DiffFormat::Markdown => {
            s.push_str("| workload | backend |");
            for m in &METRICS {
                let _ = write!(s, " {} |", m.name);
            }
            s.push_str("\n| --- | --- |");
            for _ in &METRICS {
                s.push_str(" --- |");
            }
            s.push('\n');
            for r in &d.rows {
                let _ = write!(s, "| {} | {} |", r.workload, r.backend);
                for (c, m) in r.changes.iter().zip(&METRICS) {
                    let _ = write!(s, " {}{} |", text(c), mark(c, m));
                }
                s.push('\n');
            }
        }
        DiffFormat::Terminal => {
            let mut last = "";
            for r in &d.rows {
                if r.workload != last {
                    let _ = writeln!(s, "\n== {}", r.workload);
                    let _ = write!(s, "{:<16}", "backend");
                    for m in &METRICS {
                        let _ = write!(s, " {:<22}", m.name);
                    }
                    s.push('\n');
                    last = &r.workload;
                }
                let _ = write!(s, "{:<16}", r.backend);
                for (c, m) in r.changes.iter().zip(&METRICS) {
                    let _ = write!(s, " {:<22}", format!("{}{}", text(c), mark(c, m)));
                }
                s.push('\n');
            }
        }
    }
    let _ = writeln!(
        s,
        "\nB over A: below 1.00× means B has less (faster for throughput); intervals are \
         bootstrap 95%, paired by repeat round where both files ran the same rounds."
    );
    for (side, list) in [("A", &d.only_a), ("B", &d.only_b)] {
        if !list.is_empty() {
            let _ = writeln!(s, "Only in {side}: {}.", list.join("; "));
        }
    }
    s
}

/// The regressions beyond `pct`, one phrase each.
pub fn regressions(d: &Diff, pct: f64) -> Vec<String> {
    let mut out = Vec::new();
    for r in &d.rows {
        for (c, m) in r.changes.iter().zip(&METRICS) {
            if let Change::Ratio(e) = c {
                if regressed(e, m, pct) {
                    out.push(format!(
                        "{} {} on {}: {}",
                        r.backend,
                        m.name,
                        r.workload,
                        text(c)
                    ));
                }
            }
        }
    }
    out
}

/// Runs `harness diff`.
pub fn run(args: DiffArgs) -> anyhow::Result<()> {
    let a = read_results(&args.a)?;
    let b = read_results(&args.b)?;
    let d = diff(&a, &b);
    if d.rows.is_empty() {
        bail!(
            "{} and {} share no measured cell (same workload and backend): nothing to compare",
            args.a.display(),
            args.b.display()
        );
    }
    print!("{}", render(&d, args.format, args.fail_above));
    if let Some(pct) = args.fail_above {
        let bad = regressions(&d, pct);
        if !bad.is_empty() {
            bail!(
                "{} metric(s) regressed by more than {pct}% with the interval clear of it: {}",
                bad.len(),
                bad.join("; ")
            );
        }
    }
    Ok(())
}
