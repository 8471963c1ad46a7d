//! The table printed at the end of `harness compare`: one block per workload group.

use std::io::Write;

use crate::results::aggregate::{rows, Row};
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

fn line(r: &Row) -> String {
    let Some((med, lo, hi)) = r.rps else {
        return format!(
            "{:<16} {}",
            r.backend,
            r.failure.as_deref().unwrap_or("no data")
        );
    };
    format!(
        "{:<16} {:>8} [{:>7}–{:<7}] {:>9} {:>6.2}+{:<6.2} {:>8} {}{}",
        r.backend,
        fmt_rate(med),
        fmt_rate(lo),
        fmt_rate(hi),
        r.p99_us
            .map(|v| format!("{v:.0}µs"))
            .unwrap_or_else(|| "-".into()),
        r.cpu_us.map_or(0.0, |c| c.0),
        r.cpu_us.map_or(0.0, |c| c.1),
        r.syscalls
            .map(|v| format!("{v:.2}"))
            .unwrap_or_else(|| "absent".into()),
        if r.client_bound { "client-bound" } else { "" },
        if r.failed > 0 {
            format!(
                " ({} failed: {})",
                r.failed,
                r.failure.as_deref().unwrap_or("")
            )
        } else {
            String::new()
        },
    )
}

/// Prints the summary of `results`.
pub fn print(results: &ResultsFile, out: &mut impl Write) -> std::io::Result<()> {
    let rows = rows(results);
    let mut shape = None;
    for r in &rows {
        if shape != Some((&r.group, &r.shape)) {
            shape = Some((&r.group, &r.shape));
            writeln!(out, "\n== {} ({})", r.group, r.shape)?;
            writeln!(
                out,
                "{:<16} {:>8} {:^17} {:>9} {:>13} {:>8}",
                "backend", "req/s", "[min–max]", "p99", "CPU µs/req", "sys/req"
            )?;
        }
        writeln!(out, "{}", line(r))?;
    }
    Ok(())
}
