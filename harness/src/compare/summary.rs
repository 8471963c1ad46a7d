//! The table printed at the end of `harness compare` (and by `harness report --format
//! summary`): one block per workload shape, one row per backend. Grouping and medians come
//! from the same index the plots and the markdown report use.

use std::io::Write;

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

fn line(g: &Group<'_>) -> String {
    let failures = match g.bad.first() {
        Some(c) => format!(
            " ({} of {} {}: {})",
            g.bad.len(),
            g.ok.len() + g.bad.len(),
            analysis::status_word(c),
            analysis::status_reason(c)
        ),
        None => String::new(),
    };
    let Some(tp) = g.stat(analysis::throughput) else {
        return format!("{:<16}{failures}", g.backend);
    };
    let med = |f: fn(&crate::results::Cell) -> Option<f64>| g.stat(f).map(|s| s.median);
    format!(
        "{:<16} {:>8} [{:>7}–{:<7}] {:>9} {:>6.2}+{:<6.2} {:>8} {}{failures}",
        g.backend,
        fmt_rate(tp.median),
        fmt_rate(tp.min),
        fmt_rate(tp.max),
        med(analysis::p99)
            .map(|v| format!("{v:.0}µs"))
            .unwrap_or_else(|| "-".into()),
        med(analysis::cpu_user).unwrap_or(0.0),
        med(analysis::cpu_sys).unwrap_or(0.0),
        med(analysis::syscalls)
            .map(|v| format!("{v:.2}"))
            .unwrap_or_else(|| "absent".into()),
        if g.client_bound() { "client-bound" } else { "" },
    )
}

/// Prints the summary of `results`.
pub fn print(results: &ResultsFile, out: &mut impl Write) -> std::io::Result<()> {
    let index = Index::new(results);
    for shape in index.shapes(|_| true) {
        // The suite's own label for these cells, then what they measured.
        let group = index
            .of_shape(&shape)
            .flat_map(|g| g.ok.iter().chain(&g.bad))
            .map(|c| c.group.as_str())
            .next()
            .unwrap_or("");
        writeln!(out, "\n== {group}: {}", heading(&shape))?;
        writeln!(
            out,
            "{:<16} {:>8} {:^17} {:>9} {:>13} {:>8}",
            "backend", "req/s", "[min–max]", "p99", "CPU µs/req", "sys/req"
        )?;
        for g in index.of_shape(&shape) {
            writeln!(out, "{}", line(g))?;
        }
    }
    Ok(())
}
