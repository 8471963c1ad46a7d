//! Chart 8: connection churn, a new connection per request. Connections completed per
//! second, and how long connecting took (p50 solid inside p99 light).

use super::axis::{Axis, Unit};
use super::common::{bar_values, category_bars, category_labels, short_shape_in, standard_keys};
use super::figure::{ChartKind, Figure, KeyItem, Panel, Segment};
use crate::analysis::{
    connect_p50, connect_p99, conns_per_s, describe_repeats, describe_timing, Index, Shape,
};
use crate::results::{Cell, WorkloadKind};

/// Connections per second; the request rate when the generator did not report it
/// separately (one request per connection).
fn rate(cell: &Cell) -> Option<f64> {
    conns_per_s(cell).or_else(|| cell.client.as_ref().map(|c| c.throughput_rps))
}

/// One figure for every closed-loop churn cell, one category per churn shape.
pub(super) fn churn(index: &Index<'_>) -> Vec<Figure> {
    let shapes: Vec<Shape> =
        index.shapes(|s| s.kind == WorkloadKind::Churn && s.rate_milli.is_none());
    let cats: Vec<Shape> = shapes
        .iter()
        .filter(|s| index.of_shape(s).any(|g| g.stat(rate).is_some()))
        .copied()
        .collect();
    let backends = index.measured_backends(&cats);
    if cats.is_empty() || backends.is_empty() {
        return Vec::new();
    }
    let labels = category_labels(&cats);
    let rate_bars = category_bars(index, &cats, &backends, false, |g| {
        let st = g.stat(rate)?;
        Some((
            vec![Segment {
                value: st.median,
                light: false,
            }],
            (st.n > 1).then_some((st.min, st.max)),
        ))
    });
    let lat_bars = category_bars(index, &cats, &backends, true, |g| {
        let p99 = g.stat(connect_p99)?;
        let p50 = g.stat(connect_p50)?;
        Some((
            vec![
                Segment {
                    value: p99.median,
                    light: true,
                },
                Segment {
                    value: p50.median,
                    light: false,
                },
            ],
            None,
        ))
    });
    let mut panels = vec![Panel::of_bars(
        "connections per second",
        Axis::categories("", &labels),
        Axis::value(
            "connections per second",
            Unit::Si,
            &bar_values(&rate_bars),
            true,
        ),
        rate_bars.clone(),
    )];
    let mut keys = Vec::new();
    let mut notes = Vec::new();
    if lat_bars.is_empty() {
        notes.push("Connect latency was not recorded.".to_string());
    } else {
        panels.push(Panel::of_bars(
            "connect latency",
            Axis::categories("", &labels),
            Axis::value(
                "connect latency",
                Unit::Micros,
                &bar_values(&lat_bars),
                true,
            ),
            lat_bars.clone(),
        ));
        keys.push(KeyItem::Swatch {
            light: false,
            text: "connect latency p50".to_string(),
        });
        keys.push(KeyItem::Swatch {
            light: true,
            text: "connect latency p99".to_string(),
        });
    }
    let mut all = rate_bars;
    all.extend(lat_bars);
    keys.extend(standard_keys(&[], &all));
    notes.extend(index.left_out_note(&shapes, |s| short_shape_in(index, s)));
    let mut subtitle = vec!["closed loop".to_string()];
    subtitle.extend(describe_timing(index, &cats));
    let mut cores: Vec<usize> = cats.iter().map(|s| s.server_cores).collect();
    cores.sort_unstable();
    cores.dedup();
    if cores.len() == 1 {
        subtitle.push(format!("server cores: {}", cores[0]));
    }
    subtitle.push(describe_repeats(index, &cats));
    vec![Figure {
        name: "churn".to_string(),
        kind: ChartKind::Churn,
        title: "Connection churn: connect, one request, close".to_string(),
        subtitle: subtitle.join(" · "),
        panels,
        backends: backends.iter().map(|b| b.to_string()).collect(),
        externals: Vec::new(),
        keys,
        notes,
        shapes,
    }]
}
