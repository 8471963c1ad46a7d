//! Cells grouped by backend and workload shape, repeats reduced to median and range.
//!
//! Only cells with status `ok` and client measurements count; failed and unsupported
//! cells are kept beside them so every chart and table can say what it left out.

use std::collections::BTreeMap;

use crate::results::{Cell, CellStatus, ResultsFile, WorkloadKind};

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
            size: w.size as u32,
            depth: w.depth as u32,
            connections: w.connections as u32,
            rate_milli: w
                .rate
                .filter(|r| r.is_finite() && *r >= 0.0)
                .map(|r| (r * 1000.0).round() as u64),
            idle: w.idle as u32,
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
        self.kind.facts().sized
    }
}

/// Every repeat of one backend on one shape.
#[derive(Debug, Clone)]
pub(crate) struct Group<'a> {
    pub shape: Shape,
    pub backend: &'a str,
    /// An external server (a user's command), not a built-in backend.
    pub external: bool,
    pub ok: Vec<&'a Cell>,
    pub bad: Vec<&'a Cell>,
}

impl Group<'_> {
    /// The backend's name as tables show it: "nginx (external)" for an external server.
    pub(crate) fn label(&self) -> String {
        label(self.backend, self.external)
    }

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

/// `name`, with " (external)" when it is an external server.
pub(crate) fn label(name: &str, external: bool) -> String {
    if external {
        format!("{name} (external)")
    } else {
        name.to_string()
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
            let external = cell.external
                || results
                    .plan
                    .externals
                    .iter()
                    .any(|e| e.name == cell.backend);
            let g = groups.entry((shape, b)).or_insert_with(|| Group {
                shape,
                backend: backends[b],
                external,
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
}
