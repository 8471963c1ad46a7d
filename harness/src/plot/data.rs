//! Results → what charts and the report show: cells grouped by backend and workload
//! shape, repeats reduced to median and range, histograms decoded and merged.
//!
//! Only cells with status `ok` and client measurements count; failed and unsupported
//! cells are kept beside them so every chart and table can say what it left out.

use std::collections::BTreeMap;

use anyhow::Context;
use base64::Engine;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;

use crate::results::{Cell, CellStatus, ResultsFile, WorkloadKind, WorkloadSpec};

/// The parameters that make cells comparable: same shape, same experiment. The `group`
/// label is not part of it, so a chart never depends on how a suite names its groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Shape {
    pub kind: WorkloadKind,
    pub size: u32,
    pub depth: u32,
    pub connections: u32,
    /// Open-loop rate in milli-requests/s (an integer so shapes can be keys).
    pub rate_milli: Option<u64>,
    pub idle: u32,
    pub server_cores: usize,
    pub client_cores: usize,
}

impl Shape {
    pub(crate) fn of(cell: &Cell) -> Shape {
        let w = &cell.workload;
        Shape {
            kind: w.kind,
            size: w.size,
            depth: w.depth,
            connections: w.connections,
            rate_milli: w
                .rate
                .filter(|r| r.is_finite() && *r >= 0.0)
                .map(|r| (r * 1000.0).round() as u64),
            idle: w.idle.unwrap_or(0),
            server_cores: cell.server_cores.len(),
            client_cores: cell.client_cores.len(),
        }
    }

    /// Open-loop target rate, req/s.
    pub(crate) fn rate(&self) -> Option<f64> {
        self.rate_milli.map(|m| m as f64 / 1000.0)
    }

    /// Whether message size means something for this kind.
    pub(crate) fn sized(&self) -> bool {
        matches!(
            self.kind,
            WorkloadKind::Echo | WorkloadKind::Stream | WorkloadKind::Idle
        )
    }
}

/// Every repeat of one backend on one shape.
#[derive(Debug, Clone)]
pub(crate) struct Group<'a> {
    pub shape: Shape,
    pub backend: &'a str,
    pub ok: Vec<&'a Cell>,
    pub bad: Vec<&'a Cell>,
}

impl Group<'_> {
    /// Median and range of `f` over the measured repeats that have it.
    pub(crate) fn stat(&self, f: impl Fn(&Cell) -> Option<f64>) -> Option<Stat> {
        Stat::of(self.ok.iter().filter_map(|c| f(c)))
    }

    /// Whether any measured repeat was limited by the load generator.
    pub(crate) fn client_bound(&self) -> bool {
        self.ok
            .iter()
            .any(|c| c.client.as_ref().is_some_and(|m| m.client_bound))
    }

    /// Measured repeats limited by the load generator.
    pub(crate) fn client_bound_count(&self) -> usize {
        self.ok
            .iter()
            .filter(|c| c.client.as_ref().is_some_and(|m| m.client_bound))
            .count()
    }
}

/// Median, minimum and maximum of a set of repeats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stat {
    pub(crate) fn of(values: impl Iterator<Item = f64>) -> Option<Stat> {
        let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stat {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }
}

/// The results, grouped.
#[derive(Debug)]
pub(crate) struct Index<'a> {
    /// The run's own core layout (server, client counts), from the manifest.
    pub default_cores: (usize, usize),
    /// Backends in legend order: the plan's order, then any others in order of appearance.
    pub backends: Vec<&'a str>,
    groups: BTreeMap<(Shape, usize), Group<'a>>,
}

impl<'a> Index<'a> {
    pub(crate) fn new(results: &'a ResultsFile) -> Index<'a> {
        let mut backends: Vec<&str> = Vec::new();
        for name in results
            .plan
            .backends
            .iter()
            .chain(results.cells.iter().map(|c| &c.backend))
        {
            if !backends.contains(&name.as_str()) {
                backends.push(name);
            }
        }
        let mut groups: BTreeMap<(Shape, usize), Group<'a>> = BTreeMap::new();
        for cell in &results.cells {
            let shape = Shape::of(cell);
            let b = backends
                .iter()
                .position(|n| *n == cell.backend)
                .unwrap_or(0);
            let g = groups.entry((shape, b)).or_insert_with(|| Group {
                shape,
                backend: backends[b],
                ok: Vec::new(),
                bad: Vec::new(),
            });
            if is_ok(cell) {
                g.ok.push(cell);
            } else {
                g.bad.push(cell);
            }
        }
        Index {
            default_cores: (
                results.manifest.server_cores.len(),
                results.manifest.client_cores.len(),
            ),
            backends,
            groups,
        }
    }

    /// Distinct shapes that pass `keep`, sorted.
    pub(crate) fn shapes(&self, keep: impl Fn(&Shape) -> bool) -> Vec<Shape> {
        let mut v: Vec<Shape> = self.groups.keys().map(|(s, _)| *s).filter(keep).collect();
        v.dedup();
        v
    }

    /// Groups of `shape`, in legend order.
    pub(crate) fn of_shape(&self, shape: &Shape) -> impl Iterator<Item = &Group<'a>> {
        let shape = *shape;
        self.groups
            .range((shape, 0)..=(shape, usize::MAX))
            .map(|(_, g)| g)
    }

    /// The group of `backend` on `shape`, if any cell ran.
    pub(crate) fn get(&self, shape: &Shape, backend: &str) -> Option<&Group<'a>> {
        let b = self.backends.iter().position(|n| *n == backend)?;
        self.groups.get(&(*shape, b))
    }

    /// Backends with at least one measured cell among `shapes`, in legend order.
    pub(crate) fn measured_backends(&self, shapes: &[Shape]) -> Vec<&'a str> {
        self.backends
            .iter()
            .copied()
            .filter(|b| {
                shapes
                    .iter()
                    .any(|s| self.get(s, b).is_some_and(|g| !g.ok.is_empty()))
            })
            .collect()
    }

    /// A sentence listing the cells of `shapes` that were left out, for a chart's notes.
    pub(crate) fn left_out_note(
        &self,
        shapes: &[Shape],
        what: impl Fn(&Shape) -> String,
    ) -> Option<String> {
        let mut items = Vec::new();
        for s in shapes {
            for g in self.of_shape(s) {
                if g.bad.is_empty() {
                    continue;
                }
                let status = status_word(g.bad[0]);
                let total = g.ok.len() + g.bad.len();
                let which = if g.ok.is_empty() {
                    status.to_string()
                } else {
                    format!("{} of {total} repeats {status}", g.bad.len())
                };
                items.push(format!("{} at {} ({which})", g.backend, what(s)));
            }
        }
        if items.is_empty() {
            return None;
        }
        let n = items.len();
        let shown: Vec<String> = items.into_iter().take(4).collect();
        let more = if n > 4 {
            format!(", and {} more", n - 4)
        } else {
            String::new()
        };
        Some(format!(
            "Not drawn (see the report): {}{more}.",
            shown.join("; ")
        ))
    }
}

/// Whether a cell measured something.
pub(crate) fn is_ok(cell: &Cell) -> bool {
    cell.status == CellStatus::Ok && cell.client.is_some()
}

/// "failed", "unsupported", or "no data" for an ok cell without client measurements.
pub(crate) fn status_word(cell: &Cell) -> &'static str {
    match cell.status {
        CellStatus::Ok => "no data",
        CellStatus::Failed { .. } => "failed",
        CellStatus::Unsupported { .. } => "unsupported",
        CellStatus::Invalid { .. } => "invalid",
    }
}

/// Why a cell has no numbers.
pub(crate) fn status_reason(cell: &Cell) -> String {
    match &cell.status {
        CellStatus::Ok => "status ok but no client measurements recorded".to_string(),
        CellStatus::Failed { reason, .. }
        | CellStatus::Unsupported { reason }
        | CellStatus::Invalid { reason } => reason.clone(),
    }
}

/// Decodes one histogram as stored in the results: base64 of HdrHistogram V2 + deflate.
pub(crate) fn decode_histogram(b64: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .context("histogram is not base64")?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .context("histogram is not HdrHistogram V2 (deflate) data")
}

/// Which of a cell's two histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    /// From the intended send time under open loop; the only one under closed loop.
    Corrected,
    /// Open loop only: from the actual send.
    Uncorrected,
}

/// The repeats' histograms added together; `None` when no repeat has one. A histogram
/// that does not decode is an error naming the cell.
pub(crate) fn merged_histogram(
    group: &Group<'_>,
    which: Which,
) -> anyhow::Result<Option<Histogram<u64>>> {
    let mut merged: Option<Histogram<u64>> = None;
    for cell in &group.ok {
        let Some(client) = &cell.client else { continue };
        let encoded = match which {
            Which::Corrected => client.histogram.as_deref(),
            Which::Uncorrected => client.histogram_uncorrected.as_deref(),
        };
        let Some(encoded) = encoded else { continue };
        let h = decode_histogram(encoded).with_context(|| {
            format!(
                "{} {} repeat {}: reading its latency histogram",
                cell.backend, cell.group, cell.repeat
            )
        })?;
        match &mut merged {
            None => {
                let mut m = Histogram::<u64>::new(3).context("creating a histogram")?;
                m.add(&h).context("merging latency histograms")?;
                merged = Some(m);
            }
            Some(m) => m.add(&h).context("merging latency histograms")?,
        }
    }
    Ok(merged.filter(|h| !h.is_empty()))
}

/// "64 B", "1 KiB", "16 KiB", "1 MiB".
pub(crate) fn fmt_bytes(n: u32) -> String {
    const KIB: u32 = 1024;
    if n >= KIB * KIB && n % (KIB * KIB) == 0 {
        format!("{} MiB", n / (KIB * KIB))
    } else if n >= KIB && n % KIB == 0 {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} B")
    }
}

/// `fmt_bytes` without the space, for file names.
pub(crate) fn slug_bytes(n: u32) -> String {
    fmt_bytes(n).replace(' ', "")
}

/// "1 connection", "64 connections".
pub(crate) fn connections(n: u32) -> String {
    if n == 1 {
        "1 connection".to_string()
    } else {
        format!("{n} connections")
    }
}

/// Seconds with at most one decimal: "10 s", "2.5 s".
pub(crate) fn fmt_secs(s: f64) -> String {
    format!("{} s", super::axis::fmt_sig(s, 3))
}

/// What the workload does, for titles: "echo, 64 B messages, depth 1".
pub(crate) fn describe_workload(shape: &Shape) -> String {
    match shape.kind {
        WorkloadKind::Echo => format!(
            "echo, {} messages, depth {}",
            fmt_bytes(shape.size),
            shape.depth
        ),
        WorkloadKind::Http => format!("HTTP GET keep-alive, depth {}", shape.depth),
        WorkloadKind::Churn => "churn: a new connection per request".to_string(),
        WorkloadKind::Stream => format!("stream, {} messages both ways", fmt_bytes(shape.size)),
        WorkloadKind::Idle => format!(
            "idle connections held open beside active echo ({}, depth {})",
            fmt_bytes(shape.size),
            shape.depth
        ),
    }
}

/// How long cells of these shapes measured, from the first cell found: "10 s measured
/// after 2 s warmup".
pub(crate) fn describe_timing(index: &Index<'_>, shapes: &[Shape]) -> Option<String> {
    let spec: &WorkloadSpec = shapes
        .iter()
        .flat_map(|s| index.of_shape(s))
        .flat_map(|g| g.ok.iter().chain(&g.bad))
        .map(|c| &c.workload)
        .next()?;
    Some(format!(
        "{} measured after {} warmup",
        fmt_secs(spec.duration_s),
        fmt_secs(spec.warmup_s)
    ))
}

/// "median of 3 repeats" (or "1 run").
pub(crate) fn describe_repeats(index: &Index<'_>, shapes: &[Shape]) -> String {
    let counts: Vec<usize> = shapes
        .iter()
        .flat_map(|s| index.of_shape(s))
        .map(|g| g.ok.len())
        .filter(|n| *n > 0)
        .collect();
    let min = counts.iter().copied().min().unwrap_or(0);
    let max = counts.iter().copied().max().unwrap_or(0);
    match (min, max) {
        (_, 0 | 1) => "one run per point".to_string(),
        (a, b) if a == b => format!("median of {b} repeats"),
        (a, b) => format!("median of {a}–{b} repeats"),
    }
}

/// Throughput of a cell: req/s, or MB/s received by the client for the stream workload.
pub(crate) fn throughput(cell: &Cell) -> Option<f64> {
    let c = cell.client.as_ref()?;
    if cell.workload.kind == WorkloadKind::Stream {
        Some(c.mbps_in)
    } else {
        Some(c.throughput_rps)
    }
}

/// Axis label of [`throughput`] for `kind`.
pub(crate) fn throughput_label(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::Stream => "throughput (MB/s, server → client)",
        WorkloadKind::Churn => "throughput (requests/s, one connection each)",
        _ => "throughput (requests/s)",
    }
}

/// Latency percentile (corrected) of a cell, µs.
pub(crate) fn p50(cell: &Cell) -> Option<f64> {
    cell.client.as_ref().map(|c| c.latency_us.p50)
}

/// Latency p99 (corrected) of a cell, µs.
pub(crate) fn p99(cell: &Cell) -> Option<f64> {
    cell.client.as_ref().map(|c| c.latency_us.p99)
}

/// Server user CPU µs per request.
pub(crate) fn cpu_user(cell: &Cell) -> Option<f64> {
    cell.server.as_ref().map(|s| s.cpu_user_us_per_req)
}

/// Server system CPU µs per request.
pub(crate) fn cpu_sys(cell: &Cell) -> Option<f64> {
    cell.server.as_ref().map(|s| s.cpu_sys_us_per_req)
}

/// Server CPU µs per request, user plus system.
pub(crate) fn cpu_total(cell: &Cell) -> Option<f64> {
    Some(cpu_user(cell)? + cpu_sys(cell)?)
}

/// Syscalls per request, when counted.
pub(crate) fn syscalls(cell: &Cell) -> Option<f64> {
    cell.server.as_ref()?.syscalls_per_req
}

/// Context switches per request.
pub(crate) fn ctx_switches(cell: &Cell) -> Option<f64> {
    cell.server.as_ref().map(|s| s.ctx_per_req)
}

/// Server RSS per connection, KiB.
pub(crate) fn rss_per_conn_kib(cell: &Cell) -> Option<f64> {
    Some(cell.server.as_ref()?.rss_per_conn_bytes? / 1024.0)
}

/// Kernel socket memory per open connection (active + idle), KiB. System-wide, so it
/// also counts the client's sockets.
pub(crate) fn sock_mem_per_conn_kib(cell: &Cell) -> Option<f64> {
    let bytes = cell.server.as_ref()?.kernel_sock_mem_bytes? as f64;
    per_open_conn_kib(cell, bytes)
}

/// Kernel slab growth per open connection (active + idle), KiB. System-wide, so on
/// loopback it covers both ends of each connection. Absent below
/// [`SLAB_MIN_CONNECTIONS`]: a few dozen connections' slab is lost in the machine's own
/// allocations.
pub(crate) fn slab_per_conn_kib(cell: &Cell) -> Option<f64> {
    let bytes = cell.server.as_ref()?.kernel_slab_bytes? as f64;
    let conns = u64::from(cell.workload.connections) + u64::from(cell.workload.idle.unwrap_or(0));
    if conns < SLAB_MIN_CONNECTIONS {
        return None;
    }
    per_open_conn_kib(cell, bytes)
}

/// Fewest open connections whose slab growth is reported per connection (~8 MB of slab
/// at ~8 KiB per loopback connection pair).
pub(crate) const SLAB_MIN_CONNECTIONS: u64 = 1000;

fn per_open_conn_kib(cell: &Cell, bytes: f64) -> Option<f64> {
    let conns = f64::from(cell.workload.connections) + f64::from(cell.workload.idle.unwrap_or(0));
    (conns > 0.0).then(|| bytes / conns / 1024.0)
}

/// Churn: connections completed per second.
pub(crate) fn conns_per_s(cell: &Cell) -> Option<f64> {
    cell.client.as_ref()?.connections_per_s
}

/// Churn: connect latency p50, µs.
pub(crate) fn connect_p50(cell: &Cell) -> Option<f64> {
    cell.client.as_ref()?.connect_latency_us.map(|p| p.p50)
}

/// Churn: connect latency p99, µs.
pub(crate) fn connect_p99(cell: &Cell) -> Option<f64> {
    cell.client.as_ref()?.connect_latency_us.map(|p| p.p99)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_takes_the_median_of_repeats() {
        let s = Stat::of([3.0, 1.0, 2.0].into_iter()).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = Stat::of([4.0, 1.0].into_iter()).unwrap();
        assert_eq!(s.median, 2.5);
        assert!(Stat::of([f64::NAN].into_iter()).is_none());
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(fmt_bytes(64), "64 B");
        assert_eq!(fmt_bytes(16 * 1024), "16 KiB");
        assert_eq!(fmt_bytes(1 << 20), "1 MiB");
        assert_eq!(fmt_bytes(1500), "1500 B");
        assert_eq!(slug_bytes(1024), "1KiB");
    }

    #[test]
    fn bad_histograms_are_errors_not_panics() {
        assert!(decode_histogram("not base64 !!").is_err());
        assert!(decode_histogram("aGVsbG8=").is_err());
    }
}
