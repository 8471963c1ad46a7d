//! The markdown write-up.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use crate::analysis::{
    self, cpu_sys, cpu_total, cpu_user, ctx_switches, describe_workload, fmt_bytes, fmt_cores,
    fmt_si, fmt_us, p99, short_shape_in, status_reason, status_word, syscalls, Group, Index, Shape,
};
use crate::plot::{plan, Figure};
use crate::results::{Cell, ResultsFile, RunState, WorkloadKind};

/// Where the report's chart links point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlotLinks {
    /// Directory of the charts as written in links, "/"-separated ("plots", "../plots").
    pub dir: String,
    /// Which image the links name: "svg" or "png".
    pub ext: String,
}

impl PlotLinks {
    /// Links into `dir` naming `ext` files.
    pub fn new(dir: &str, ext: &str) -> PlotLinks {
        PlotLinks {
            dir: dir.trim_end_matches('/').to_string(),
            ext: ext.to_string(),
        }
    }

    /// Links written as `rel`, to SVGs if `actual` holds any of this run's charts as SVG,
    /// else to PNGs if it holds PNGs, else to SVGs (the charts may be rendered later).
    pub fn detect(rel: &Path, actual: &Path, results: &ResultsFile) -> PlotLinks {
        let (figs, _) = plan(results);
        let has = |ext: &str| {
            figs.iter()
                .any(|f| actual.join(format!("{}.{ext}", f.name)).is_file())
        };
        let ext = if has("svg") || !has("png") {
            "svg"
        } else {
            "png"
        };
        let dir: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        PlotLinks::new(&dir.join("/"), ext)
    }

    fn link(&self, name: &str) -> String {
        if self.dir.is_empty() || self.dir == "." {
            format!("{name}.{}", self.ext)
        } else {
            format!("{}/{name}.{}", self.dir, self.ext)
        }
    }
}

/// The markdown report of `results`.
pub fn markdown(results: &ResultsFile, links: &PlotLinks) -> String {
    markdown_with_reference(results, links, crate::analysis::stats::DEFAULT_REFERENCE)
}

/// The markdown report of `results`, verdicts taken against `reference`.
pub fn markdown_with_reference(
    results: &ResultsFile,
    links: &PlotLinks,
    reference: &str,
) -> String {
    let index = Index::new(results);
    let (figs, _) = plan(results);
    let mut md = String::new();
    header(&mut md, results);
    environment(&mut md, results);

    md.push_str("## Results\n\n");
    md.push_str(
        "Each row is one backend on one workload. req/s is the median of the repeats, \
         with their min–max beside it; p99 is the median of the repeats' p99 latency \
         (corrected for coordinated omission under open loop); CPU is the server's time per \
         request in µs, counted in nanoseconds over the measured window for every task of \
         the server (its cgroup; the ledger's method is in the verdicts section), split into \
         user + system by the shares of its 10 ms tick samples. ⚠ marks client-bound repeats: a load-generator \
         thread was ≥ 90% busy, so the number may measure the client rather than the \
         server. Failed and unsupported cells are counted, never averaged in.\n\n",
    );
    calibration(&mut md, results);
    for (group, shapes) in groups(results) {
        table(&mut md, &index, &group, &shapes, &figs, links);
    }
    super::verdicts::section(&mut md, &index, results, reference);
    if let Some(claims) = super::claims::section(results) {
        md.push_str(&claims);
    }
    failures(&mut md, &index, results);
    plot_list(&mut md, &figs, links);
    md
}

fn header(md: &mut String, r: &ResultsFile) {
    let _ = writeln!(md, "# ringside results: `{}` suite\n", r.plan.suite);
    let state = match &r.state {
        RunState::Complete => "complete".to_string(),
        RunState::Running => "still running (or its writer died)".to_string(),
        RunState::Interrupted { reason } => format!("interrupted: {}", inline(reason)),
    };
    let finished = r
        .finished_at
        .as_deref()
        .map(|f| format!(", finished {f}"))
        .unwrap_or_default();
    let _ = writeln!(
        md,
        "Run {state}: started {}{finished}, {} of {} planned cells recorded, {} repeats \
         per cell. Written by {}.\n",
        r.started_at,
        r.cells.len(),
        r.plan.cells_planned,
        r.plan.repeats,
        r.tool
    );
    let names: Vec<String> = r
        .plan
        .backends
        .iter()
        .map(|b| crate::analysis::label(b, r.plan.externals.iter().any(|e| &e.name == b)))
        .collect();
    let _ = writeln!(md, "Backends: {}.", names.join(", "));
    for e in &r.plan.externals {
        let _ = writeln!(
            md,
            "External server {} ({}): `{}`.",
            e.name,
            e.services.join(", "),
            e.command
        );
    }
    let _ = writeln!(
        md,
        "Topology: {}.",
        topology_line(r.manifest.topology.as_ref())
    );
    if !r.plan.skipped_backends.is_empty() {
        let skipped: Vec<String> = r
            .plan
            .skipped_backends
            .iter()
            .map(|s| format!("{} ({})", s.name, inline(&s.reason)))
            .collect();
        let _ = writeln!(md, "Skipped: {}.", skipped.join("; "));
    }
    md.push('\n');
}

/// How the fixed rates of `ladder` blocks were chosen: each backend's closed-loop ceiling
/// in the calibration, the slowest, and the rates its fractions became.
fn calibration(md: &mut String, r: &ResultsFile) {
    if r.plan.calibration.is_empty() {
        return;
    }
    md.push_str(
        "Fixed rates were calibrated: before the cells ran, every backend ran each shape \
         closed loop for a moment; the fractions apply to the slowest one's throughput \
         (also at most what the load generator can send), rounded down to two significant \
         figures, and every backend then ran at the same rates.\n\n\
         | group | slowest | ceiling req/s | fractions → req/s | other ceilings |\n\
         | --- | --- | ---: | --- | --- |\n",
    );
    for cal in &r.plan.calibration {
        let Some(slowest) = &cal.slowest else {
            let why: Vec<String> = cal
                .failed
                .iter()
                .map(|(b, w)| format!("{b}: {}", cell_text(w)))
                .collect();
            let _ = writeln!(
                md,
                "| {} | none completed | – | cells left out | {} |",
                inline(&cal.group),
                why.join("; ")
            );
            continue;
        };
        let rates: Vec<String> = cal
            .rates
            .iter()
            .map(|l| format!("{} → {}", l.fraction, num(l.rate)))
            .collect();
        let others: Vec<String> = cal
            .ceilings
            .iter()
            .filter(|(b, _)| *b != slowest)
            .map(|(b, v)| format!("{b} {}", num(*v)))
            .chain(cal.failed.keys().map(|b| format!("{b} failed")))
            .collect();
        let _ = writeln!(
            md,
            "| {} | {slowest}{} | {} | {} | {} |",
            inline(&cal.group),
            if cal.client_bound {
                " (client-bound)"
            } else {
                ""
            },
            num(cal.ceilings.get(slowest).copied().unwrap_or(0.0)),
            rates.join(", "),
            others.join(", ")
        );
    }
    md.push('\n');
}

/// "netns: server in rs-1-srv, 2 client namespaces, 1 agent process each; links tbf …".
fn topology_line(t: Option<&crate::results::TopologyManifest>) -> String {
    let Some(t) = t else {
        return "loopback, load generated in the harness process".to_string();
    };
    let procs = |n: usize| format!("{n} agent process{}", if n == 1 { "" } else { "es" });
    let mut line = match t.topology {
        crate::topology::Topology::Loopback | crate::topology::Topology::Ssh => {
            format!("{}, {}", t.topology.as_str(), procs(t.client_procs))
        }
        crate::topology::Topology::Netns => format!(
            "netns: server in {}, {} client namespace{} ({}), {} each",
            t.server_namespace.as_deref().unwrap_or("?"),
            t.client_namespaces.len(),
            if t.client_namespaces.len() == 1 {
                ""
            } else {
                "s"
            },
            t.client_namespaces.join(", "),
            procs(t.client_procs)
        ),
    };
    if let Some(link) = &t.link {
        line.push_str(&format!("; every veth link shaped: {link}"));
    }
    line
}

fn environment(md: &mut String, r: &ResultsFile) {
    let m = &r.manifest;
    md.push_str("## Environment\n\n| | |\n| --- | --- |\n");
    let mut row = |k: &str, v: String| {
        if !v.is_empty() {
            let _ = writeln!(md, "| {k} | {} |", cell_text(&v));
        }
    };
    row("host", m.hostname.clone());
    row("kernel", m.kernel.clone());
    row("OS", m.os.clone());
    row(
        "CPU",
        format!("{}, {} online cores", m.cpu_model, m.online_cores),
    );
    if !m.smt_siblings.is_empty() {
        let groups: Vec<String> = m.smt_siblings.iter().map(|g| fmt_cores(g)).collect();
        row("SMT siblings", groups.join(" · "));
    }
    row("server cores", fmt_cores(&m.server_cores));
    row("client cores", fmt_cores(&m.client_cores));
    row("CPU governor", m.cpu_governor.clone().unwrap_or_default());
    row("rustc", m.rustc.clone());
    row("git commit", m.git_commit.clone().unwrap_or_default());
    if !m.argv.is_empty() {
        row("command", format!("`{}`", m.argv.join(" ")));
    }
    let kv = |map: &BTreeMap<String, String>, sep: &str| -> String {
        map.iter()
            .map(|(k, v)| format!("{k}{sep}{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    row("sysctls", kv(&m.sysctls, " = "));
    row("rlimits (soft/hard)", kv(&m.rlimits, " "));
    row("io_uring", kv(&m.io_uring, ": "));
    row("crates", kv(&m.crate_versions, " "));
    if let Some(mc) = &m.memcpy {
        row(
            "libc memcpy",
            format!(
                "16 KiB: {:.1} GB/s at a 16 B page distance, {:.1} GB/s at 256 B ({:.1}x); servers: {}",
                mc.near_gbps,
                mc.far_gbps,
                mc.slowdown,
                match &mc.server_glibc_tunables {
                    Some(t) => format!("GLIBC_TUNABLES={t}"),
                    None => "environment unchanged".to_string(),
                }
            ),
        );
    }
    md.push('\n');
}

/// Cells' group labels in order of first appearance, each with its shapes.
fn groups(r: &ResultsFile) -> Vec<(String, Vec<Shape>)> {
    let mut out: Vec<(String, Vec<Shape>)> = Vec::new();
    for cell in &r.cells {
        let shape = Shape::of(cell);
        match out.iter_mut().find(|(g, _)| *g == cell.group) {
            Some((_, shapes)) => {
                if !shapes.contains(&shape) {
                    shapes.push(shape);
                }
            }
            None => out.push((cell.group.clone(), vec![shape])),
        }
    }
    for (_, shapes) in &mut out {
        shapes.sort();
    }
    out
}

/// A column of a group's table.
struct Column {
    head: &'static str,
    right: bool,
    value: Box<dyn Fn(&Group<'_>) -> String>,
}

fn col(head: &'static str, value: impl Fn(&Group<'_>) -> String + 'static) -> Column {
    Column {
        head,
        right: true,
        value: Box::new(value),
    }
}

fn stat_text(g: &Group<'_>, f: fn(&Cell) -> Option<f64>, fmt: fn(f64) -> String) -> String {
    g.stat(f).map(|s| fmt(s.median)).unwrap_or_default()
}

/// Whole numbers from 100 up, 3 significant digits below: MB/s reads "2760", not "2.76k".
fn plain(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        analysis::fmt_sig(v, 3)
    }
}

/// 3 significant digits, k/M/G above a thousand: tables compare, they do not audit (the
/// CSV has every digit).
fn num(v: f64) -> String {
    fmt_si(v)
}

fn table(
    md: &mut String,
    index: &Index<'_>,
    group: &str,
    shapes: &[Shape],
    figs: &[Figure],
    links: &PlotLinks,
) {
    let _ = writeln!(md, "### {}\n", inline(group));
    let varies =
        |f: &dyn Fn(&Shape) -> u64| shapes.iter().map(f).collect::<BTreeSet<_>>().len() > 1;
    let kinds: BTreeSet<WorkloadKind> = shapes.iter().map(|s| s.kind).collect();
    // What all rows share goes above the table; what varies becomes a column.
    let mut common = Vec::new();
    if let (1, Some(first)) = (kinds.len(), shapes.first()) {
        let mut what = describe_workload(first);
        if varies(&|s| u64::from(s.size)) || varies(&|s| u64::from(s.depth)) {
            what = first.kind.as_str().to_string();
        }
        common.push(what);
    }
    if let Some(first) = shapes.first() {
        if !varies(&|s| u64::from(s.connections)) {
            common.push(analysis::connections(first.connections));
        }
        if !varies(&|s| s.rate_milli.unwrap_or(0)) {
            common.push(match first.rate() {
                Some(r) => format!("open loop at {} req/s", num(r)),
                None => "closed loop".to_string(),
            });
        } else if shapes.iter().all(|s| s.rate_milli.is_some()) {
            common.push("open loop, offered rate per row".to_string());
        }
        if !varies(&|s| s.server_cores as u64) {
            common.push(format!("server cores: {}", first.server_cores));
        }
    }
    common.extend(analysis::describe_timing(index, shapes));
    let _ = writeln!(md, "{}\n", common.join(" · "));

    let mut cols: Vec<Column> = Vec::new();
    cols.push(Column {
        head: "backend",
        right: false,
        value: Box::new(|g| g.label()),
    });
    if kinds.len() > 1 {
        cols.push(Column {
            head: "workload",
            right: false,
            value: Box::new(|g| g.shape.kind.as_str().to_string()),
        });
    }
    if varies(&|s| u64::from(s.size)) {
        cols.push(col("size", |g| fmt_bytes(g.shape.size)));
    }
    if varies(&|s| u64::from(s.depth)) {
        cols.push(col("depth", |g| g.shape.depth.to_string()));
    }
    if varies(&|s| u64::from(s.connections)) {
        cols.push(col("conns", |g| g.shape.connections.to_string()));
    }
    if varies(&|s| u64::from(s.idle)) {
        cols.push(col("idle conns", |g| g.shape.idle.to_string()));
    }
    if varies(&|s| s.rate_milli.unwrap_or(0)) {
        cols.push(col("offered req/s", |g| {
            g.shape.rate().map(num).unwrap_or_else(|| "closed".into())
        }));
    }
    if varies(&|s| s.server_cores as u64) {
        cols.push(col("server cores", |g| g.shape.server_cores.to_string()));
    }
    let stream = kinds.contains(&WorkloadKind::Stream);
    cols.push(col("req/s", |g| stat_text(g, req_s, num)));
    cols.push(col("min–max", |g| {
        g.stat(req_s)
            .filter(|s| s.n > 1)
            .map(|s| format!("{}–{}", num(s.min), num(s.max)))
            .unwrap_or_default()
    }));
    if stream {
        cols.push(col("MB/s in / out", |g| {
            match (
                g.stat(|c| c.client.as_ref().map(|m| m.mbps_in)),
                g.stat(|c| c.client.as_ref().map(|m| m.mbps_out)),
            ) {
                (Some(a), Some(b)) => format!("{} / {}", plain(a.median), plain(b.median)),
                _ => String::new(),
            }
        }));
    }
    cols.push(col("p99", |g| stat_text(g, p99, fmt_us)));
    if shapes.iter().any(|s| s.rate_milli.is_some()) {
        cols.push(col("p99 uncorrected", |g| {
            stat_text(
                g,
                |c| Some(c.client.as_ref()?.latency_uncorrected_us?.p99),
                fmt_us,
            )
        }));
    }
    cols.push(col("CPU µs/req (user + sys, split sampled)", |g| {
        match (g.stat(cpu_user), g.stat(cpu_sys), g.stat(cpu_total)) {
            (Some(u), Some(s), Some(t)) => {
                format!("{} + {} = {}", num(u.median), num(s.median), num(t.median))
            }
            _ => String::new(),
        }
    }));
    cols.push(col("syscalls/req", |g| {
        if g.ok.is_empty() {
            String::new()
        } else {
            g.stat(syscalls)
                .map(|s| num(s.median))
                .unwrap_or_else(|| "absent".to_string())
        }
    }));
    cols.push(col("ctx sw/req", |g| stat_text(g, ctx_switches, num)));
    if kinds.contains(&WorkloadKind::Churn) {
        cols.push(col("connect p99", |g| {
            stat_text(g, analysis::connect_p99, fmt_us)
        }));
    }
    if kinds.contains(&WorkloadKind::Idle) {
        cols.push(col("RSS/conn", |g| {
            stat_text(g, analysis::rss_per_conn_kib, |v| format!("{} KiB", num(v)))
        }));
        cols.push(col("kernel slab/conn", |g| {
            stat_text(g, analysis::slab_per_conn_kib, |v| {
                format!("{} KiB", num(v))
            })
        }));
    }
    cols.push(Column {
        head: "client-bound",
        right: false,
        value: Box::new(|g| match g.client_bound_count() {
            0 => String::new(),
            n => format!("⚠ {n}/{}", g.ok.len()),
        }),
    });
    cols.push(Column {
        head: "failures",
        right: false,
        value: Box::new(|g| {
            let mut by: BTreeMap<&str, usize> = BTreeMap::new();
            for c in &g.bad {
                *by.entry(status_word(c)).or_default() += 1;
            }
            by.iter()
                .map(|(w, n)| format!("{n} {w}"))
                .collect::<Vec<_>>()
                .join(", ")
        }),
    });

    let heads: Vec<&str> = cols.iter().map(|c| c.head).collect();
    let _ = writeln!(md, "| {} |", heads.join(" | "));
    let aligns: Vec<&str> = cols
        .iter()
        .map(|c| if c.right { "---:" } else { "---" })
        .collect();
    let _ = writeln!(md, "| {} |", aligns.join(" | "));
    for shape in shapes {
        for g in index.of_shape(shape) {
            // Only this group's cells: another group may share the shape.
            let own = Group {
                shape: g.shape,
                backend: g.backend,
                external: g.external,
                ok: g.ok.iter().copied().filter(|c| c.group == group).collect(),
                bad: g.bad.iter().copied().filter(|c| c.group == group).collect(),
            };
            if own.ok.is_empty() && own.bad.is_empty() {
                continue;
            }
            let cells: Vec<String> = cols.iter().map(|c| cell_text(&(c.value)(&own))).collect();
            let _ = writeln!(md, "| {} |", cells.join(" | "));
        }
    }
    md.push('\n');
    let related: Vec<&Figure> = figs
        .iter()
        .filter(|f| f.shapes.iter().any(|s| shapes.contains(s)))
        .collect();
    let related: Vec<String> = related
        .iter()
        .map(|f| {
            // Several charts of one kind (one spectrum per workload): say which.
            let same_kind = related.iter().filter(|g| g.kind == f.kind).count();
            let text = match f.shapes.as_slice() {
                [only] if same_kind > 1 => {
                    format!("{} ({})", f.kind.describe(), short_shape_in(index, only))
                }
                _ => f.kind.describe().to_string(),
            };
            format!("[{text}]({})", links.link(&f.name))
        })
        .collect();
    if !related.is_empty() {
        let _ = writeln!(md, "Charts: {}\n", related.join(" · "));
    }
}

/// Requests per second (MB/s for stream is in its own column).
fn req_s(c: &Cell) -> Option<f64> {
    c.client.as_ref().map(|m| m.throughput_rps)
}

fn failures(md: &mut String, index: &Index<'_>, r: &ResultsFile) {
    let bad: Vec<&Cell> = r.cells.iter().filter(|c| !analysis::is_ok(c)).collect();
    md.push_str("## Failed and unsupported cells\n\n");
    if bad.is_empty() {
        md.push_str("None: every cell measured.\n\n");
        return;
    }
    md.push_str("| backend | group | workload | repeat | status | reason |\n");
    md.push_str("| --- | --- | --- | ---: | --- | --- |\n");
    for c in bad {
        let shape = Shape::of(c);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            cell_text(&crate::analysis::label(&c.backend, c.external)),
            cell_text(&c.group),
            cell_text(&format!(
                "{} {}",
                shape.kind.as_str(),
                short_shape_in(index, &shape)
            )),
            c.repeat,
            status_word(c),
            cell_text(&status_reason(c))
        );
    }
    md.push('\n');
}

fn plot_list(md: &mut String, figs: &[Figure], links: &PlotLinks) {
    md.push_str("## Charts\n\n");
    if figs.is_empty() {
        md.push_str("No charts: no cell measured anything.\n");
        return;
    }
    for f in figs {
        let _ = writeln!(md, "- [{}]({})", inline(&f.title), links.link(&f.name));
    }
}

/// Text safe inside a table cell: no pipes, no line breaks.
fn cell_text(s: &str) -> String {
    inline(s).replace('|', "\\|")
}

/// One line.
fn inline(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
