//! The table printed at the end of `harness compare` (and by `harness report --format
//! summary`): one block per workload shape, one row per backend. Grouping and medians come
//! from the same index the plots and the markdown report use.

use std::io::Write;

use crate::analysis::stats;
use crate::analysis::{self, Group, Index, Shape};
use crate::results::ResultsFile;

fn fmt_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn heading(s: &Shape) -> String {
    let mut h = format!(
        "{}, {} conns",
        analysis::describe_workload(s),
        s.connections
    );
    if let Some(r) = s.rate() {
        h.push_str(&format!(", {} req/s offered", fmt_rate(r)));
    }
    if s.kind == crate::results::WorkloadKind::Idle {
        h.push_str(&format!(", {} idle", s.idle));
    }
    h.push_str(&format!(", {} server cores", s.server_cores));
    h
}

/// Reasons cells were left out, printed once each at the end and cited by number.
#[derive(Default)]
struct Reasons(Vec<(String, usize)>);

impl Reasons {
    /// The footnote number of `reason`, counting `cells` more cells under it.
    fn cite(&mut self, reason: String, cells: usize) -> usize {
        if let Some(i) = self.0.iter().position(|(r, _)| *r == reason) {
            self.0[i].1 += cells;
            return i + 1;
        }
        self.0.push((reason, cells));
        self.0.len()
    }
}

fn line(g: &Group<'_>, reference: Option<&Group<'_>>, reasons: &mut Reasons) -> String {
    let failures = match g.bad.first() {
        Some(c) => format!(
            " ({} of {} {} [{}])",
            g.bad.len(),
            g.ok.len() + g.bad.len(),
            analysis::status_word(c),
            reasons.cite(analysis::status_reason(c), g.bad.len())
        ),
        None => String::new(),
    };
    let Some(tp) = stats::estimate(&g.ok, &stats::THROUGHPUT) else {
        return format!("{:<16}{failures}", g.label());
    };
    let med = |f: fn(&crate::results::Cell) -> Option<f64>| g.stat(f).map(|s| s.median);
    let cpu = stats::estimate(&g.ok, &stats::CPU_PER_REQ);
    let verdict = match reference {
        Some(r) if r.backend == g.backend => "reference".to_string(),
        Some(r) => stats::verdict(&g.ok, &r.ok, &stats::CPU_PER_REQ).text(),
        None => "-".to_string(),
    };
    let mut flags = Vec::new();
    if g.client_bound() {
        flags.push("client-bound");
    }
    if g.ok.iter().any(|c| stats::is_saturated(c)) {
        flags.push("saturated");
    }
    if g.ok.iter().any(|c| stats::is_noisy(c)) {
        flags.push("noisy-host");
    }
    format!(
        "{:<16} {:>8} [{:>7}–{:<7}] {:>9} {:>6} [{:>5}–{:<5}] {:>8} {:<28} {}{failures}",
        g.label(),
        fmt_rate(tp.value),
        fmt_rate(tp.lo),
        fmt_rate(tp.hi),
        med(analysis::p99)
            .map(|v| format!("{v:.0}µs"))
            .unwrap_or_else(|| "-".into()),
        cpu.map(|e| format!("{:.2}", e.value))
            .unwrap_or_else(|| "-".into()),
        cpu.map(|e| format!("{:.2}", e.lo)).unwrap_or_default(),
        cpu.map(|e| format!("{:.2}", e.hi)).unwrap_or_default(),
        med(analysis::syscalls)
            .map(|v| format!("{v:.2}"))
            .unwrap_or_else(|| "absent".into()),
        verdict,
        flags.join(" "),
    )
}

/// Prints the summary of `results`, ratios taken to the default reference backend.
pub fn print(results: &ResultsFile, out: &mut impl Write) -> std::io::Result<()> {
    print_with_reference(results, stats::DEFAULT_REFERENCE, out)
}

/// Prints the summary of `results` with CPU verdicts against `reference`: medians with
/// bootstrap 95% intervals, CPU from the nanosecond ledger where the cells have it.
pub fn print_with_reference(
    results: &ResultsFile,
    reference: &str,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let index = Index::new(results);
    let mut reasons = Reasons::default();
    for shape in index.shapes(|_| true) {
        // The suite's own label for these cells, then what they measured.
        let group = index
            .of_shape(&shape)
            .flat_map(|g| g.ok.iter().chain(&g.bad))
            .map(|c| c.group.as_str())
            .next()
            .unwrap_or("");
        writeln!(out, "\n== {group}: {}", heading(&shape))?;
        let reference_group = index.get(&shape, reference).filter(|r| !r.ok.is_empty());
        let groups: Vec<&Group<'_>> = index.of_shape(&shape).collect();
        // A shape no backend could run is one line, not one per backend.
        let first = groups.first().and_then(|g| g.bad.first());
        let same = first.filter(|f| {
            groups.iter().all(|g| {
                g.ok.is_empty()
                    && g.bad.iter().all(|c| {
                        analysis::status_word(c) == analysis::status_word(f)
                            && analysis::status_reason(c) == analysis::status_reason(f)
                    })
            })
        });
        if let (Some(f), true) = (same, groups.len() > 1) {
            let cells = groups.iter().map(|g| g.bad.len()).sum();
            writeln!(
                out,
                "every backend ({}): {} [{}]",
                groups.len(),
                analysis::status_word(f),
                reasons.cite(analysis::status_reason(f), cells)
            )?;
            continue;
        }
        writeln!(
            out,
            "{:<16} {:>8} {:^17} {:>9} {:>21} {:>8} {:<28}",
            "backend",
            "req/s",
            "[95% CI]",
            "p99",
            "CPU µs/req [95% CI]",
            "sys/req",
            format!("CPU vs {reference}")
        )?;
        for g in groups {
            writeln!(out, "{}", line(g, reference_group, &mut reasons))?;
        }
    }
    if !reasons.0.is_empty() {
        writeln!(out)?;
    }
    for (i, (reason, cells)) in reasons.0.iter().enumerate() {
        let plural = if *cells == 1 { "" } else { "s" };
        writeln!(out, "[{}] {reason} ({cells} cell{plural})", i + 1)?;
    }
    Ok(())
}
