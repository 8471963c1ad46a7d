//! Pieces every chart builder shares: lines over a parameter sweep, bars over workload
//! categories, the words for cores and categories, and the legend keys.

use super::figure::{bar_span, Bar, KeyItem, Line, Markers, Point, Segment};
pub(crate) use crate::analysis::short_shape_in;
use crate::analysis::{fmt_bytes, fmt_conns, Group, Index, Shape};
use crate::results::{Cell, WorkloadKind};

/// Legend text for hollow markers.
pub(crate) const CLIENT_BOUND_KEY: &str =
    "hollow marker: client-bound (a load-generator thread was ≥ 90% busy); the server \
     may have had more to give";

/// For each backend, one line of `metric` (median of repeats) over `shapes` ordered by
/// `x`. A backend missing a point in the middle gets a gap, not a line drawn through it.
pub(crate) fn sweep_lines(
    index: &Index<'_>,
    shapes: &[Shape],
    backends: &[&str],
    x: impl Fn(&Shape) -> f64,
    metric: impl Fn(&Cell) -> Option<f64>,
    band: bool,
    dashed: bool,
) -> Vec<Line> {
    let mut sorted = shapes.to_vec();
    sorted.sort_by(|a, b| x(a).total_cmp(&x(b)));
    backends
        .iter()
        .filter_map(|b| {
            let mut points: Vec<Point> = Vec::new();
            let mut gap = false;
            for s in &sorted {
                let found = index
                    .get(s, b)
                    .and_then(|g| g.stat(&metric).map(|st| (g, st)));
                match found {
                    Some((g, st)) => {
                        let spread = band && st.n > 1;
                        points.push(Point {
                            x: x(s),
                            y: st.median,
                            lo: spread.then_some(st.min),
                            hi: spread.then_some(st.max),
                            hollow: g.client_bound(),
                            break_before: gap,
                        });
                        gap = false;
                    }
                    None => gap = !points.is_empty(),
                }
            }
            (!points.is_empty()).then(|| Line {
                backend: (*b).to_string(),
                dashed,
                markers: Markers::All,
                band,
                points,
            })
        })
        .collect()
}

/// Every y value of `lines`, bands included, for sizing an axis.
pub(crate) fn line_values(lines: &[Line]) -> Vec<f64> {
    lines
        .iter()
        .flat_map(|l| l.points.iter())
        .flat_map(|p| [Some(p.y), p.lo, p.hi])
        .flatten()
        .collect()
}

/// Every bar top and whisker end, for sizing an axis.
pub(crate) fn bar_values(bars: &[Bar]) -> Vec<f64> {
    let mut v = Vec::new();
    for b in bars {
        if b.overlay {
            v.extend(b.segments.iter().map(|s| s.value));
        } else {
            v.push(b.segments.iter().map(|s| s.value).sum());
        }
        if let Some((lo, hi)) = b.whisker {
            v.extend([lo, hi]);
        }
    }
    v
}

/// One bar per backend per category; `make` turns a group into segments (bottom first),
/// whether they overlay, and a whisker. Groups without data get no bar (never a zero).
pub(crate) fn category_bars(
    index: &Index<'_>,
    categories: &[Shape],
    backends: &[&str],
    overlay: bool,
    make: impl Fn(&Group<'_>) -> Option<(Vec<Segment>, Option<(f64, f64)>)>,
) -> Vec<Bar> {
    let mut bars = Vec::new();
    for (cat, shape) in categories.iter().enumerate() {
        for (slot, b) in backends.iter().enumerate() {
            let Some(g) = index.get(shape, b) else {
                continue;
            };
            let Some((segments, whisker)) = make(g) else {
                continue;
            };
            let (x0, x1) = bar_span(cat, slot, backends.len());
            bars.push(Bar {
                backend: (*b).to_string(),
                x0,
                x1,
                segments,
                overlay,
                whisker,
                hollow_mark: g.client_bound(),
            });
        }
    }
    bars
}

/// Keys every chart with these lines or bars needs.
pub(crate) fn standard_keys(lines: &[Line], bars: &[Bar]) -> Vec<KeyItem> {
    let mut keys = Vec::new();
    if lines
        .iter()
        .any(|l| l.band && l.points.iter().any(|p| p.lo.is_some()))
    {
        keys.push(KeyItem::Band {
            text: "band: min–max of repeats".to_string(),
        });
    }
    if bars.iter().any(|b| b.whisker.is_some()) {
        keys.push(KeyItem::Whisker {
            text: "whisker: min–max of repeats".to_string(),
        });
    }
    if lines.iter().any(|l| l.points.iter().any(|p| p.hollow)) || bars.iter().any(|b| b.hollow_mark)
    {
        keys.push(KeyItem::Marker {
            hollow: true,
            text: CLIENT_BOUND_KEY.to_string(),
        });
    }
    keys
}

/// "server cores: 1, client cores: 1".
pub(crate) fn cores_phrase(shape: &Shape) -> String {
    format!(
        "server cores: {}, client cores: {}",
        shape.server_cores, shape.client_cores
    )
}

/// Category labels for bar charts: only the parameters that vary among `shapes`, so the
/// axis reads "64 B, 16 conns" rather than repeating what the title says.
pub(crate) fn category_labels(shapes: &[Shape]) -> Vec<String> {
    let varies = |f: &dyn Fn(&Shape) -> u64| {
        shapes
            .iter()
            .map(f)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            > 1
    };
    let kind = varies(&|s| s.kind as u64);
    let size = varies(&|s| u64::from(s.size));
    let depth = varies(&|s| u64::from(s.depth));
    let conns_vary = varies(&|s| u64::from(s.connections));
    let idle = varies(&|s| u64::from(s.idle));
    let rate = varies(&|s| s.rate_milli.unwrap_or(0));
    let cores = varies(&|s| s.server_cores as u64);
    shapes
        .iter()
        .map(|s| {
            let mut parts = Vec::new();
            if kind {
                parts.push(s.kind.as_str().to_string());
            }
            if size && s.sized() {
                parts.push(fmt_bytes(s.size));
            }
            if depth {
                parts.push(format!("depth {}", s.depth));
            }
            if conns_vary || parts.is_empty() && !idle && !rate && !cores {
                parts.push(fmt_conns(s.connections));
            }
            if idle {
                parts.push(format!("{} idle", super::axis::fmt_si(f64::from(s.idle))));
            }
            if rate {
                if let Some(r) = s.rate() {
                    parts.push(format!("{} req/s", super::axis::fmt_si(r)));
                }
            }
            if cores {
                let plural = if s.server_cores == 1 { "" } else { "s" };
                parts.push(format!("{} server core{plural}", s.server_cores));
            }
            parts.join(", ")
        })
        .collect()
}

/// File-name part for a shape: "echo-64B-d1-c64".
pub(crate) fn shape_slug(s: &Shape, with_conns: bool) -> String {
    let mut slug = s.kind.as_str().to_string();
    if s.sized() {
        slug.push('-');
        slug.push_str(&crate::analysis::slug_bytes(s.size));
    }
    if s.kind != WorkloadKind::Churn {
        slug.push_str(&format!("-d{}", s.depth));
    }
    if with_conns {
        slug.push_str(&format!("-c{}", s.connections));
    }
    slug
}

/// Suffix naming the core counts when they differ from the run's own layout, so file
/// names stay unique and the common charts keep the same name whether or not the suite
/// also swept cores.
pub(crate) fn cores_slug(index: &Index<'_>, s: &Shape) -> String {
    let (server, client) = index.default_cores;
    let mut out = String::new();
    if s.server_cores != server {
        out.push_str(&format!("-s{}", s.server_cores));
    }
    if s.client_cores != client {
        out.push_str(&format!("-k{}", s.client_cores));
    }
    out
}
