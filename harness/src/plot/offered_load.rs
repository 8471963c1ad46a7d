//! What a request costs the server as the offered load rises: server CPU µs per request
//! and syscalls per request against the open-loop rate, one line per backend with its
//! bootstrap 95% band. Cost per request depends on the load (batching amortises wake-ups
//! at high rates), so backends can rank differently along the axis.

use std::collections::BTreeMap;

use super::axis::{fmt_si, Axis, Unit};
use super::common::{cores_phrase, cores_slug, line_values, shape_slug, CLIENT_BOUND_KEY};
use super::figure::{ChartKind, Figure, KeyItem, Line, Markers, Panel, Point};
use crate::analysis::stats::{self, Metric};
use crate::analysis::{
    connections, describe_repeats, describe_timing, describe_workload, Index, Shape,
};

/// One line per backend of `m` over the family's rates. Saturated points (the backend
/// fell more than 1% short of the rate) are left out: their cost is not of that rate.
fn lines(index: &Index<'_>, members: &[Shape], backends: &[&str], m: &Metric) -> Vec<Line> {
    let mut sorted = members.to_vec();
    sorted.sort_by_key(|s| s.rate_milli);
    backends
        .iter()
        .filter_map(|b| {
            let mut points = Vec::new();
            let mut gap = false;
            for s in &sorted {
                let est = index
                    .get(s, b)
                    .filter(|g| !g.ok.iter().any(|c| stats::is_saturated(c)))
                    .and_then(|g| stats::estimate(&g.ok, m).map(|e| (g, e)));
                match est {
                    Some((g, e)) => {
                        points.push(Point {
                            x: s.rate().unwrap_or(0.0),
                            y: e.value,
                            lo: (!e.is_point()).then_some(e.lo),
                            hi: (!e.is_point()).then_some(e.hi),
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
                dashed: false,
                markers: Markers::All,
                band: true,
                points,
            })
        })
        .collect()
}

/// One figure per open-loop workload measured at two rates or more.
pub(super) fn cost_vs_load(index: &Index<'_>) -> Vec<Figure> {
    let mut families: BTreeMap<Shape, Vec<Shape>> = BTreeMap::new();
    for s in index.shapes(|s| s.rate_milli.is_some()) {
        families
            .entry(Shape {
                rate_milli: None,
                ..s
            })
            .or_default()
            .push(s);
    }
    let mut figs = Vec::new();
    for (family, members) in families {
        let xs: Vec<f64> = members
            .iter()
            .filter(|s| index.of_shape(s).any(|g| !g.ok.is_empty()))
            .filter_map(|s| s.rate())
            .collect();
        let backends = index.measured_backends(&members);
        if xs.len() < 2 || backends.is_empty() {
            continue;
        }
        let cpu = lines(index, &members, &backends, &stats::CPU_PER_REQ);
        let sys = lines(index, &members, &backends, &stats::SYSCALLS_PER_REQ);
        if cpu.is_empty() {
            continue;
        }
        let x = || Axis::sweep("offered load (requests/s)", Unit::Si, &xs);
        let mut panels = vec![Panel::of_lines(
            "server CPU per request",
            x(),
            Axis::value("µs per request", Unit::Plain, &line_values(&cpu), false),
            cpu.clone(),
        )];
        if !sys.is_empty() {
            panels.push(Panel::of_lines(
                "syscalls per request",
                x(),
                Axis::value(
                    "syscalls per request",
                    Unit::Plain,
                    &line_values(&sys),
                    false,
                ),
                sys.clone(),
            ));
        }
        let mut keys = Vec::new();
        if cpu
            .iter()
            .chain(&sys)
            .any(|l| l.points.iter().any(|p| p.lo.is_some()))
        {
            keys.push(KeyItem::Band {
                text: "band: bootstrap 95% interval of the median".to_string(),
            });
        }
        if cpu.iter().any(|l| l.points.iter().any(|p| p.hollow)) {
            keys.push(KeyItem::Marker {
                hollow: true,
                text: CLIENT_BOUND_KEY.to_string(),
            });
        }
        let mut notes: Vec<String> = index
            .left_out_note(&members, |s| {
                format!("{} req/s", fmt_si(s.rate().unwrap_or(0.0)))
            })
            .into_iter()
            .collect();
        let saturated: Vec<String> = members
            .iter()
            .flat_map(|s| index.of_shape(s).map(move |g| (s, g)))
            .filter(|(_, g)| g.ok.iter().any(|c| stats::is_saturated(c)))
            .map(|(s, g)| format!("{} at {}", g.backend, fmt_si(s.rate().unwrap_or(0.0))))
            .collect();
        if !saturated.is_empty() {
            notes.push(format!(
                "Not drawn, fell more than 1% short of the offered rate (saturated): {}.",
                saturated.join("; ")
            ));
        }
        let ns = members
            .iter()
            .flat_map(|s| index.of_shape(s))
            .flat_map(|g| &g.ok)
            .any(|c| c.ledger.as_ref().is_some_and(|l| l.server_cpu_ns.is_some()));
        let mut subtitle = vec![
            "open loop".to_string(),
            if ns {
                "CPU in ns over the measured window (every server thread)".to_string()
            } else {
                "CPU tick-sampled (10 ms)".to_string()
            },
        ];
        subtitle.extend(describe_timing(index, &members));
        subtitle.push(cores_phrase(&family));
        subtitle.push(describe_repeats(index, &members));
        figs.push(Figure {
            name: format!(
                "cost-vs-load-{}{}",
                shape_slug(&family, true),
                cores_slug(index, &family)
            ),
            kind: ChartKind::CostVsLoad,
            title: format!(
                "Cost per request vs offered load: {}, {}",
                describe_workload(&family),
                connections(family.connections)
            ),
            subtitle: subtitle.join(" · "),
            panels,
            backends: backends.iter().map(|b| b.to_string()).collect(),
            externals: Vec::new(),
            keys,
            notes,
            shapes: members,
        });
    }
    figs
}
