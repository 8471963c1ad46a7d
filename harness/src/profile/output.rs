//! What a profile writes: `profile.json`, `profile.md`, one flamegraph per backend,
//! differential flamegraphs, and the stacked chart of categories (SVG and PNG).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::categories::{parse_folded_line, Table};
use super::{BackendProfile, ProfileReport};

/// Files written.
#[derive(Debug, Default)]
pub struct Written {
    /// Every file, in the order written.
    pub files: Vec<PathBuf>,
}

/// Writes every output of `report` into `out`; the folded stacks `<backend>.folded` must be
/// there already.
pub fn write_outputs(
    report: &ProfileReport,
    table: &Table,
    diffs: &[(String, String)],
    out: &Path,
) -> anyhow::Result<Written> {
    let mut w = Written::default();
    let mut put = |name: String, bytes: &[u8]| -> anyhow::Result<()> {
        let p = out.join(name);
        fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
        w.files.push(p);
        Ok(())
    };
    put(
        "profile.json".into(),
        &serde_json::to_vec_pretty(report).context("encoding profile.json")?,
    )?;
    put("profile.md".into(), markdown(report, table).as_bytes())?;
    for b in &report.backends {
        let folded = read_folded(out, &b.backend)?;
        put(
            format!("{}.svg", b.backend),
            &flamegraph(report, b, &folded)?,
        )?;
    }
    for (a, b) in diffs {
        let (Some(pa), Some(pb)) = (find(report, a), find(report, b)) else {
            continue;
        };
        let svg = differential(pa, &read_folded(out, a)?, pb, &read_folded(out, b)?, report)?;
        put(format!("diff-{a}-vs-{b}.svg"), &svg)?;
    }
    let chart = chart_data(report, table);
    let footer = format!(
        "{} · Linux {} · {} · {}",
        report.tool, report.kernel, report.perf_version, report.started_at
    );
    put(
        "profile-categories.svg".into(),
        &crate::plot::profile::svg(&chart, &footer)?,
    )?;
    put(
        "profile-categories.png".into(),
        &crate::plot::profile::png(&chart, &footer)?,
    )?;
    Ok(w)
}

fn find<'a>(report: &'a ProfileReport, name: &str) -> Option<&'a BackendProfile> {
    report.backends.iter().find(|b| b.backend == name)
}

fn read_folded(out: &Path, backend: &str) -> anyhow::Result<String> {
    let p = out.join(format!("{backend}.folded"));
    fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
}

/// Nanoseconds of CPU per request that one unit of `b`'s folded counts (one ns of sampled
/// cpu-clock) stands for.
fn ns_per_unit(b: &BackendProfile) -> f64 {
    b.total_us_per_req * 1000.0 / b.sampled_ns.max(1) as f64
}

fn flamegraph(report: &ProfileReport, b: &BackendProfile, folded: &str) -> anyhow::Result<Vec<u8>> {
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = format!(
        "{}: server CPU at {:.0} req/s",
        b.backend, report.shape.rate
    );
    opts.subtitle = Some(format!(
        "{} · {} conns · {:.2} µs/request on CPU · {} samples of {} µs",
        report.shape.workload,
        report.shape.connections,
        b.total_us_per_req,
        b.samples,
        report.period_ns / 1000
    ));
    opts.count_name = "ns/request".into();
    opts.factor = ns_per_unit(b);
    opts.deterministic = true;
    let mut svg = Vec::new();
    inferno::flamegraph::from_lines(
        &mut opts,
        folded.lines().filter(|l| !l.trim().is_empty()),
        &mut svg,
    )
    .with_context(|| format!("drawing the flamegraph of {}", b.backend))?;
    Ok(svg)
}

/// Folded stacks with counts in picoseconds per request, so that two backends' stacks
/// compare per request whatever their sample counts.
fn per_request(b: &BackendProfile, folded: &str) -> anyhow::Result<String> {
    let ps = ns_per_unit(b) * 1000.0;
    let mut out = String::new();
    for line in folded.lines().filter(|l| !l.trim().is_empty()) {
        let (stack, n) = parse_folded_line(line)?;
        let _ = writeln!(out, "{stack} {}", (n as f64 * ps).round() as u64);
    }
    Ok(out)
}

fn differential(
    a: &BackendProfile,
    folded_a: &str,
    b: &BackendProfile,
    folded_b: &str,
    report: &ProfileReport,
) -> anyhow::Result<Vec<u8>> {
    let (pa, pb) = (per_request(a, folded_a)?, per_request(b, folded_b)?);
    let mut diff = Vec::new();
    inferno::differential::from_readers(
        inferno::differential::Options::default(),
        pa.as_bytes(),
        pb.as_bytes(),
        &mut diff,
    )
    .context("folding the differential")?;
    let diff = String::from_utf8(diff).context("differential stacks are not UTF-8")?;
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = format!(
        "{} vs {}: server CPU per request at {:.0} req/s",
        b.backend, a.backend, report.shape.rate
    );
    opts.subtitle = Some(format!(
        "widths: {} ({:.2} µs/request); red: more time per request than in {} ({:.2}), blue: less",
        b.backend, b.total_us_per_req, a.backend, a.total_us_per_req
    ));
    opts.count_name = "ns/request".into();
    opts.factor = 0.001;
    opts.deterministic = true;
    let mut svg = Vec::new();
    inferno::flamegraph::from_lines(&mut opts, diff.lines(), &mut svg)
        .with_context(|| format!("drawing the differential {} vs {}", b.backend, a.backend))?;
    Ok(svg)
}

/// The chart's data: categories (table order, unmatched last) × backends.
pub fn chart_data(
    report: &ProfileReport,
    table: &Table,
) -> crate::plot::profile::StackedCategories {
    let ids = table.ids();
    crate::plot::profile::StackedCategories {
        title: format!(
            "Where server CPU goes per request: {} at {:.0} req/s, {} connections",
            report.shape.workload, report.shape.rate, report.shape.connections
        ),
        subtitle: format!(
            "shares of perf cpu-clock samples × on-CPU ns per request of an unprofiled run (schedstat) · server cores {} · client cores {}",
            crate::cores::format_core_list(&report.shape.server_cores),
            crate::cores::format_core_list(&report.shape.client_cores)
        ),
        categories: ids.iter().map(|id| table.label(id)).collect(),
        backends: report
            .backends
            .iter()
            .map(|b| {
                let values = ids
                    .iter()
                    .map(|id| {
                        b.categories
                            .iter()
                            .find(|c| &c.id == id)
                            .map_or(0.0, |c| c.us_per_req)
                    })
                    .collect();
                (b.backend.clone(), values)
            })
            .collect(),
    }
}

/// The breakdown as a markdown table: categories by backend, then the totals and checks.
pub fn markdown(report: &ProfileReport, table: &Table) -> String {
    let mut s = String::new();
    let sh = &report.shape;
    let _ = writeln!(
        s,
        "# Server CPU per request by category\n\n{} at {:.0} req/s offered (open loop), {} connections, depth {}, {} s measured after {} s warmup; server cores {}, client cores {}. {}.\n",
        sh.workload,
        sh.rate,
        sh.connections,
        sh.depth,
        sh.duration_s,
        sh.warmup_s,
        crate::cores::format_core_list(&sh.server_cores),
        crate::cores::format_core_list(&sh.client_cores),
        report.method
    );
    let _ = write!(s, "| µs per request |");
    for b in &report.backends {
        let _ = write!(s, " {} |", b.backend);
    }
    let _ = write!(s, "\n| --- |");
    for _ in &report.backends {
        let _ = write!(s, " ---: |");
    }
    s.push('\n');
    for id in table.ids() {
        let _ = write!(s, "| {} |", table.label(&id));
        for b in &report.backends {
            let v = b
                .categories
                .iter()
                .find(|c| c.id == id)
                .map_or(0.0, |c| c.us_per_req);
            let _ = write!(s, " {v:.2} |");
        }
        s.push('\n');
    }
    let mut row = |name: &str, f: &dyn Fn(&BackendProfile) -> String| {
        let _ = write!(s, "| {name} |");
        for b in &report.backends {
            let _ = write!(s, " {} |", f(b));
        }
        s.push('\n');
    };
    row("**total (on-CPU ns, unprofiled run)**", &|b| {
        format!("**{:.2}**", b.total_us_per_req)
    });
    row("ledger CPU/req (unprofiled run, ticks)", &|b| {
        format!("{:.2}", b.ledger_us_per_req)
    });
    row("total vs ledger", &|b| {
        format!("{:+.1}%", b.ledger_difference * 100.0)
    });
    row("on-CPU ns, profiled run", &|b| {
        format!("{:.2}", b.profiled.cpu_us_per_req())
    });
    row("samples × period ÷ requests (profiled)", &|b| {
        format!("{:.2}", b.sampled_us_per_req)
    });
    row(
        "profiled vs unprofiled on-CPU (perf overhead + run-to-run noise)",
        &|b| format!("{:+.1}%", b.perf_overhead * 100.0),
    );
    row("samples", &|b| b.samples.to_string());
    row("achieved req/s (profiled)", &|b| {
        format!("{:.0}", b.profiled.achieved_rate)
    });
    s.push_str("\nServer threads at the end of the profiled run, all sampled (io_uring's iou-wrk and iou-sqp threads are among them when the kernel started any):\n\n");
    for b in &report.backends {
        let _ = writeln!(s, "- {}: {}", b.backend, b.threads.join(", "));
    }
    let flagged: Vec<&BackendProfile> = report
        .backends
        .iter()
        .filter(|b| !b.flags.is_empty())
        .collect();
    if !flagged.is_empty() {
        s.push_str("\nFlags:\n\n");
        for b in flagged {
            for f in &b.flags {
                let _ = writeln!(s, "- {}: {f}", b.backend);
            }
        }
    }
    let unmatched: Vec<&BackendProfile> = report
        .backends
        .iter()
        .filter(|b| !b.unmatched_leaves.is_empty())
        .collect();
    if !unmatched.is_empty() {
        s.push_str("\nMost frequent unmatched leaf frames (candidates for categories.toml):\n\n");
        for b in unmatched {
            let top: Vec<String> = b
                .unmatched_leaves
                .iter()
                .take(5)
                .map(|(f, n)| format!("{f} ({n})"))
                .collect();
            let _ = writeln!(s, "- {}: {}", b.backend, top.join(", "));
        }
    }
    s
}
