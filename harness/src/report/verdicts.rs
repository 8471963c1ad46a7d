//! The report's verdicts: each backend against the reference backend, per workload shape,
//! as ratios with bootstrap 95% intervals and the word they earn; with what the cost
//! ledger measured and what it cannot see.

use std::fmt::Write as _;

use crate::analysis::stats::{self, Metric, Verdict};
use crate::analysis::{describe_workload, Index};
use crate::results::ResultsFile;

/// The metrics a verdict row covers, in column order.
const METRICS: [Metric; 4] = [
    stats::CPU_PER_REQ,
    stats::THROUGHPUT,
    stats::SYSCALLS_PER_REQ,
    stats::P99,
];

/// Appends the verdicts section: one table per shape that has the reference and another
/// backend measured.
pub(super) fn section(md: &mut String, index: &Index<'_>, results: &ResultsFile, reference: &str) {
    let _ = writeln!(md, "## Verdicts against {reference}\n");
    md.push_str(&ledger_note(results));
    let mut any = false;
    let mut unconverged = Vec::new();
    for shape in index.shapes(|_| true) {
        let Some(r) = index.get(&shape, reference).filter(|g| !g.ok.is_empty()) else {
            continue;
        };
        let others: Vec<_> = index
            .of_shape(&shape)
            .filter(|g| g.backend != reference && !g.ok.is_empty())
            .collect();
        if others.is_empty() {
            continue;
        }
        any = true;
        let rate = shape
            .rate()
            .map(|r| format!(", {} req/s offered", crate::plot::axis::fmt_si(r)))
            .unwrap_or_default();
        let idle = if shape.idle > 0 {
            format!(", {} idle", shape.idle)
        } else {
            String::new()
        };
        let heading = format!(
            "{}, {} connections{idle}{rate}",
            describe_workload(&shape),
            shape.connections
        );
        let _ = writeln!(md, "**{heading}**\n");
        md.push_str("| backend |");
        for m in &METRICS {
            let _ = write!(md, " {} |", m.name);
        }
        md.push_str(" repeats | notes |\n| --- |");
        for _ in &METRICS {
            md.push_str(" --- |");
        }
        md.push_str(" ---: | --- |\n");
        for g in others {
            let _ = write!(md, "| {} |", g.label());
            for m in &METRICS {
                let _ = write!(md, " {} |", stats::verdict(&g.ok, &r.ok, m).text());
            }
            let mut notes = Vec::new();
            let noisy =
                g.ok.iter()
                    .chain(&r.ok)
                    .filter(|c| stats::is_noisy(c))
                    .count();
            if noisy > 0 {
                notes.push(format!("{noisy} noisy-host repeats"));
            }
            match stats::verdict(&g.ok, &r.ok, &stats::CPU_PER_REQ) {
                Verdict::Saturated => notes.push("fell >1% short of the offered rate".to_string()),
                Verdict::Ratio { ratio, .. }
                    if !ratio.is_point() && ratio.half_width_rel() > stats::DEFAULT_CI_TARGET =>
                {
                    let hw = ratio.half_width_rel() * 100.0;
                    notes.push(format!("not converged: CPU/req ±{hw:.1}%"));
                    unconverged.push(format!("{} ({}, ±{hw:.1}%)", g.backend, heading));
                }
                _ => {}
            }
            if !g.bad.is_empty() {
                notes.push(format!("{} repeats not ok, left out", g.bad.len()));
            }
            let _ = writeln!(md, " {} | {} |", g.ok.len(), notes.join("; "));
        }
        md.push('\n');
    }
    if !unconverged.is_empty() {
        let _ = writeln!(
            md,
            "Not converged (CPU/req ratio interval wider than ±{:.0}%; more repeats with \
             `harness compare --max-repeats N`): {}.\n",
            stats::DEFAULT_CI_TARGET * 100.0,
            unconverged.join("; ")
        );
    }
    if !any {
        let _ = writeln!(
            md,
            "No shape has {reference} and another backend measured: nothing to compare \
             (choose the reference with --reference).\n"
        );
    }
}

/// How CPU was counted, and the loopback caveat.
fn ledger_note(results: &ResultsFile) -> String {
    let ledgers: Vec<_> = results
        .cells
        .iter()
        .filter_map(|c| c.ledger.as_ref())
        .collect();
    let methods: std::collections::BTreeSet<&str> = ledgers
        .iter()
        .filter(|l| l.server_cpu_ns.is_some())
        .map(|l| l.server_cpu_method.as_str())
        .collect();
    let noisy = ledgers.iter().filter(|l| l.noisy_host).count();
    let how = if methods.is_empty() {
        "CPU per request is the tick-sampled user + system time of /proc/PID/stat (10 ms \
         ticks: this file predates the nanosecond ledger)."
            .to_string()
    } else {
        format!(
            "CPU per request is the server's on-CPU time in nanoseconds over exactly the \
             measured window, every thread and child process and the kernel's io-threads \
             included, counted by schedstat and by perf task-clock and the larger taken \
             (each misses something: exited tasks, or time around context switches; here: {}); \
             the user/system split in the tables above is tick-sampled (10 ms ticks).",
            methods.into_iter().collect::<Vec<_>>().join(", ")
        )
    };
    format!(
        "Each cell reads `ratio× [95% interval] word`: the backend's median over the \
         reference's, paired by repeat round where both ran the same rounds, with a \
         bootstrap interval (seeded, so reproducible); `≈ same` when the interval spans 1 \
         or one run cannot tell. Open-loop cells that fell more than 1% short of their \
         offered rate read `saturated`: their cost is not that of the rate. Invalid cells \
         (wrong or missing replies) are never compared. {how} {noisy} of {} cells ran on \
         a noisy host (steal above {:.0}% or foreign work above {:.0}% of the chosen \
         cores).\n\n\
         On loopback the kernel runs each side's receive path in the sender's context, so \
         a server's CPU includes part of its peer's network stack (and the client's part \
         of the server's): the same for every backend, but not the cost behind a NIC.\n\n",
        ledgers.len(),
        crate::compare::cost::NOISY_STEAL * 100.0,
        crate::compare::cost::NOISY_FOREIGN * 100.0,
    )
}
