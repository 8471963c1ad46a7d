//! Repeats folded into one row per (group, backend): medians and ranges.

use super::{CellStatus, ResultsFile};

/// One backend in one group, over its repeats.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Series group.
    pub group: String,
    /// The parameters that tell cells of one group apart ("64 conns", "rate 40000/s",
    /// "10000 idle"): rows are per group and shape, never across a sweep.
    pub shape: String,
    /// Backend.
    pub backend: String,
    /// Repeats that measured something.
    pub ok: usize,
    /// Repeats that failed.
    pub failed: usize,
    /// Repeats the backend could not run (recorded with a reason, not as zero).
    pub unsupported: usize,
    /// First failure reason, if any.
    pub failure: Option<String>,
    /// Median, min and max throughput (req/s).
    pub rps: Option<(f64, f64, f64)>,
    /// Median p99 latency, µs.
    pub p99_us: Option<f64>,
    /// Median server CPU µs per request (user, system).
    pub cpu_us: Option<(f64, f64)>,
    /// Median syscalls per request.
    pub syscalls: Option<f64>,
    /// Any repeat was client-bound.
    pub client_bound: bool,
    /// Coefficient of variation of throughput across repeats.
    pub cv: Option<f64>,
}

/// Median of a non-empty slice.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// What tells cells of one group apart.
fn shape_of(c: &super::Cell) -> String {
    let w = &c.workload;
    let mut parts = vec![format!("{} conns", w.connections)];
    if w.depth > 1 {
        parts.push(format!("depth {}", w.depth));
    }
    if let Some(r) = w.rate {
        parts.push(format!("rate {r}/s"));
    }
    if let Some(i) = w.idle {
        parts.push(format!("{i} idle"));
    }
    parts.push(format!("{} server cores", c.server_cores.len()));
    parts.join(", ")
}

/// Rows in plan order: shapes as they first appear, backends in legend order.
pub fn rows(results: &ResultsFile) -> Vec<Row> {
    let mut shapes: Vec<(String, String)> = Vec::new();
    for c in &results.cells {
        let key = (c.group.clone(), shape_of(c));
        if !shapes.contains(&key) {
            shapes.push(key);
        }
    }
    let mut backends = results.plan.backends.clone();
    for c in &results.cells {
        if !backends.contains(&c.backend) {
            backends.push(c.backend.clone());
        }
    }
    let mut out = Vec::new();
    for (g, shape) in &shapes {
        for b in &backends {
            let cells: Vec<_> = results
                .cells
                .iter()
                .filter(|c| &c.group == g && &c.backend == b && &shape_of(c) == shape)
                .collect();
            if cells.is_empty() {
                continue;
            }
            let ok: Vec<_> = cells
                .iter()
                .filter(|c| c.status == CellStatus::Ok && c.client.is_some())
                .collect();
            let failure = cells.iter().find_map(|c| match &c.status {
                CellStatus::Ok => None,
                CellStatus::Failed { reason, .. } | CellStatus::Unsupported { reason } => {
                    Some(reason.clone())
                }
            });
            let mut rps: Vec<f64> = ok
                .iter()
                .filter_map(|c| c.client.as_ref())
                .map(|m| m.throughput_rps)
                .collect();
            let mut p99: Vec<f64> = ok
                .iter()
                .filter_map(|c| c.client.as_ref())
                .map(|m| m.latency_us.p99)
                .collect();
            let mut user: Vec<f64> = ok
                .iter()
                .filter_map(|c| c.server.as_ref())
                .map(|s| s.cpu_user_us_per_req)
                .collect();
            let mut sys: Vec<f64> = ok
                .iter()
                .filter_map(|c| c.server.as_ref())
                .map(|s| s.cpu_sys_us_per_req)
                .collect();
            let mut sc: Vec<f64> = ok
                .iter()
                .filter_map(|c| c.server.as_ref()?.syscalls_per_req)
                .collect();
            let cv = (rps.len() >= 2).then(|| {
                let mean = rps.iter().sum::<f64>() / rps.len() as f64;
                let var =
                    rps.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (rps.len() - 1) as f64;
                if mean > 0.0 {
                    var.sqrt() / mean
                } else {
                    0.0
                }
            });
            out.push(Row {
                group: g.clone(),
                shape: shape.clone(),
                unsupported: cells
                    .iter()
                    .filter(|c| matches!(c.status, CellStatus::Unsupported { .. }))
                    .count(),
                backend: b.clone(),
                ok: ok.len(),
                failed: cells
                    .iter()
                    .filter(|c| matches!(c.status, CellStatus::Failed { .. }))
                    .count(),
                failure,
                rps: (!rps.is_empty()).then(|| {
                    let lo = rps.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = rps.iter().copied().fold(0.0, f64::max);
                    (median(&mut rps), lo, hi)
                }),
                p99_us: (!p99.is_empty()).then(|| median(&mut p99)),
                cpu_us: (!user.is_empty()).then(|| (median(&mut user), median(&mut sys))),
                syscalls: (!sc.is_empty()).then(|| median(&mut sc)),
                client_bound: ok
                    .iter()
                    .any(|c| c.client.as_ref().is_some_and(|m| m.client_bound)),
                cv,
            });
        }
    }
    out
}
