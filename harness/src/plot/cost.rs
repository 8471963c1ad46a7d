//! Charts 4 and 5: what each request costs the server, fair on any box because it does
//! not depend on who saturated first. Bars per backend, one category per workload shape,
//! one figure per workload kind; closed-loop cells only (an open-loop cell at low load
//! also pays for idle wake-ups, which is another question).

use std::collections::BTreeMap;

use super::axis::{Axis, Unit};
use super::common::{bar_values, category_bars, category_labels, short_shape_in, standard_keys};
use super::figure::{ChartKind, Figure, KeyItem, Panel, Segment};
use crate::analysis::{
    cpu_sys, cpu_total, cpu_user, ctx_switches, describe_repeats, describe_timing, syscalls, Index,
    Shape,
};
use crate::results::WorkloadKind;

/// Closed-loop shapes by kind, each kind's shapes sorted, at the run's core layout when
/// the kind was measured there.
fn by_kind(index: &Index<'_>) -> BTreeMap<WorkloadKind, Vec<Shape>> {
    let mut kinds: BTreeMap<WorkloadKind, Vec<Shape>> = BTreeMap::new();
    for s in index.shapes(|s| s.rate_milli.is_none()) {
        kinds.entry(s.kind).or_default().push(s);
    }
    // Per-request cost at the run's own core layout: a cores sweep is chart 6's business,
    // and mixing layouts in one bar chart would compare unlike things.
    for shapes in kinds.values_mut() {
        let default: Vec<Shape> = shapes
            .iter()
            .filter(|s| (s.server_cores, s.client_cores) == index.default_cores)
            .copied()
            .collect();
        if !default.is_empty() {
            *shapes = default;
        }
    }
    kinds
}

fn kind_title(kind: WorkloadKind) -> &'static str {
    kind.facts().title
}

fn subtitle(index: &Index<'_>, shapes: &[Shape], extra: &str) -> String {
    let mut parts = vec!["closed loop".to_string()];
    parts.extend(describe_timing(index, shapes));
    let mut cores: Vec<usize> = shapes.iter().map(|s| s.server_cores).collect();
    cores.sort_unstable();
    cores.dedup();
    if cores.len() == 1 {
        parts.push(format!("server cores: {}", cores[0]));
    }
    parts.push(describe_repeats(index, shapes));
    parts.push(extra.to_string());
    parts.join(" · ")
}

/// Keeps only the categories where some backend measured `metric`.
fn with_data(
    index: &Index<'_>,
    shapes: &[Shape],
    metric: impl Fn(&crate::results::Cell) -> Option<f64>,
) -> Vec<Shape> {
    shapes
        .iter()
        .filter(|s| index.of_shape(s).any(|g| g.stat(&metric).is_some()))
        .copied()
        .collect()
}

/// Chart 4: server CPU µs per request, user and system stacked.
pub(super) fn cpu(index: &Index<'_>) -> Vec<Figure> {
    let mut figs = Vec::new();
    for (kind, shapes) in by_kind(index) {
        let cats = with_data(index, &shapes, cpu_total);
        let backends = index.measured_backends(&cats);
        if cats.is_empty() || backends.is_empty() {
            continue;
        }
        // One panel per pipeline depth, each on its own linear axis: depth 16 costs a
        // tenth of depth 1, and on a shared axis its bars would be a few pixels tall.
        let mut depths: Vec<u32> = cats.iter().map(|s| s.depth).collect();
        depths.sort_unstable();
        depths.dedup();
        let split = depths.len() > 1;
        let mut panels = Vec::new();
        let mut all_bars = Vec::new();
        for depth in &depths {
            let part: Vec<Shape> = if split {
                cats.iter().filter(|s| s.depth == *depth).copied().collect()
            } else {
                cats.clone()
            };
            let bars = category_bars(index, &part, &backends, false, |g| {
                let user = g.stat(cpu_user)?;
                let sys = g.stat(cpu_sys)?;
                let total = g.stat(cpu_total)?;
                Some((
                    vec![
                        Segment {
                            value: user.median,
                            light: false,
                        },
                        Segment {
                            value: sys.median,
                            light: true,
                        },
                    ],
                    (total.n > 1).then_some((total.min, total.max)),
                ))
            });
            let labels = category_labels(&part);
            // Stacked bars only read right on a linear axis from zero.
            let y = Axis::value(
                "server CPU per request (µs)",
                Unit::Plain,
                &bar_values(&bars),
                false,
            );
            let title = if split {
                match depth {
                    1 => "depth 1 (one request in flight per connection)".to_string(),
                    d => format!("depth {d} (pipelined)"),
                }
            } else {
                String::new()
            };
            all_bars.extend(bars.iter().cloned());
            panels.push(
                Panel::of_bars(title, Axis::categories("", &labels), y, bars).with_value_labels(),
            );
            if !split {
                break;
            }
        }
        let bars = all_bars;
        let mut keys = vec![
            KeyItem::Swatch {
                light: false,
                text: "user CPU".to_string(),
            },
            KeyItem::Swatch {
                light: true,
                text: "system CPU (stacked on user)".to_string(),
            },
        ];
        keys.extend(standard_keys(&[], &bars));
        figs.push(Figure {
            name: format!("cpu-per-request-{}", kind.as_str()),
            kind: ChartKind::CpuPerRequest,
            title: format!("Server CPU time per request: {}", kind_title(kind)),
            subtitle: subtitle(
                index,
                &cats,
                "ns ledger, split into user (dark) and system by sampled ticks · whisker: min–max",
            ),
            panels,
            backends: backends.iter().map(|b| b.to_string()).collect(),
            externals: Vec::new(),
            keys,
            notes: index
                .left_out_note(&shapes, |s| short_shape_in(index, s))
                .into_iter()
                .collect(),
            shapes,
        });
    }
    figs
}

/// Chart 5: syscalls per request and context switches per request, side by side.
pub(super) fn syscalls_and_switches(index: &Index<'_>) -> Vec<Figure> {
    let mut figs = Vec::new();
    for (kind, shapes) in by_kind(index) {
        let cats = with_data(index, &shapes, ctx_switches);
        let backends = index.measured_backends(&cats);
        if cats.is_empty() || backends.is_empty() {
            continue;
        }
        let labels = category_labels(&cats);
        let median_bar = |metric: fn(&crate::results::Cell) -> Option<f64>| {
            category_bars(index, &cats, &backends, false, move |g| {
                let st = g.stat(metric)?;
                Some((
                    vec![Segment {
                        value: st.median,
                        light: false,
                    }],
                    (st.n > 1).then_some((st.min, st.max)),
                ))
            })
        };
        let sys_bars = median_bar(syscalls);
        let ctx_bars = median_bar(ctx_switches);
        let mut panels = Vec::new();
        let mut notes = Vec::new();
        if !sys_bars.is_empty() {
            panels.push(
                Panel::of_bars(
                    "syscalls per request",
                    Axis::categories("", &labels),
                    Axis::value(
                        "syscalls per request",
                        Unit::Plain,
                        &bar_values(&sys_bars),
                        true,
                    ),
                    sys_bars.clone(),
                )
                .with_value_labels(),
            );
        }
        // Say which backends' syscalls were not counted, and why.
        let mut absent: BTreeMap<&str, String> = BTreeMap::new();
        for s in &cats {
            for g in index.of_shape(s) {
                for c in &g.ok {
                    if let Some(server) = &c.server {
                        if server.syscalls_per_req.is_none() {
                            absent.entry(g.backend).or_insert_with(|| {
                                server
                                    .syscalls_absent
                                    .clone()
                                    .unwrap_or_else(|| "no reason recorded".to_string())
                            });
                        }
                    }
                }
            }
        }
        for (backend, why) in &absent {
            notes.push(format!("Syscalls not counted for {backend}: {why}."));
        }
        panels.push(
            Panel::of_bars(
                "context switches per request",
                Axis::categories("", &labels),
                Axis::value(
                    "context switches per request (voluntary + involuntary)",
                    Unit::Plain,
                    &bar_values(&ctx_bars),
                    true,
                ),
                ctx_bars.clone(),
            )
            .with_value_labels(),
        );
        let mut all = sys_bars;
        all.extend(ctx_bars);
        let keys = standard_keys(&[], &all);
        notes.extend(index.left_out_note(&shapes, |s| short_shape_in(index, s)));
        figs.push(Figure {
            name: format!("syscalls-per-request-{}", kind.as_str()),
            kind: ChartKind::SyscallsPerRequest,
            title: format!(
                "Syscalls and context switches per request: {}",
                kind_title(kind)
            ),
            subtitle: subtitle(index, &cats, "server process, all threads"),
            panels,
            backends: backends.iter().map(|b| b.to_string()).collect(),
            externals: Vec::new(),
            keys,
            notes,
            shapes,
        });
    }
    figs
}
