//! Charts 1 and 6: closed-loop throughput against a swept parameter (connections, server
//! cores), one line per backend, median of repeats with the min–max as a band.

use std::collections::BTreeMap;

use super::axis::{Axis, Unit};
use super::common::{
    bar_values, category_bars, category_labels, cores_phrase, cores_slug, line_values, shape_slug,
    standard_keys, sweep_lines,
};
use super::figure::{ChartKind, Figure, Panel, Segment};
use crate::analysis::{
    connections, describe_repeats, describe_timing, describe_workload, throughput,
    throughput_label, Index, Shape,
};
use crate::results::WorkloadKind;

fn y_unit(kind: WorkloadKind) -> Unit {
    if kind == WorkloadKind::Stream {
        Unit::Plain
    } else {
        Unit::Si
    }
}

/// Chart 1, one figure per workload and message size / depth (and core layout).
pub(super) fn vs_connections(index: &Index<'_>) -> Vec<Figure> {
    let shapes = index.shapes(|s| {
        matches!(
            s.kind,
            WorkloadKind::Echo | WorkloadKind::Http | WorkloadKind::Stream
        ) && s.rate_milli.is_none()
            && s.idle == 0
    });
    let mut families: BTreeMap<Shape, Vec<Shape>> = BTreeMap::new();
    for s in shapes {
        families
            .entry(Shape {
                connections: 0,
                ..s
            })
            .or_default()
            .push(s);
    }
    let mut figs = Vec::new();
    for (family, members) in families {
        let backends = index.measured_backends(&members);
        let xs: Vec<f64> = members
            .iter()
            .filter(|s| index.of_shape(s).any(|g| !g.ok.is_empty()))
            .map(|s| f64::from(s.connections))
            .collect();
        if xs.len() < 2 || backends.is_empty() {
            continue;
        }
        let (panel, keys) = if xs.len() <= 2 {
            // Two points make no curve: bars per connection count, min–max as whiskers.
            let mut cats: Vec<Shape> = members
                .iter()
                .filter(|s| index.of_shape(s).any(|g| !g.ok.is_empty()))
                .copied()
                .collect();
            cats.sort_by_key(|s| s.connections);
            let bars = category_bars(index, &cats, &backends, false, |g| {
                let st = g.stat(throughput)?;
                Some((
                    vec![Segment {
                        value: st.median,
                        light: false,
                    }],
                    (st.n > 1).then_some((st.min, st.max)),
                ))
            });
            let y = Axis::value(
                throughput_label(family.kind),
                y_unit(family.kind),
                &bar_values(&bars),
                false,
            );
            let keys = standard_keys(&[], &bars);
            let labels = category_labels(&cats);
            (
                Panel::of_bars("", Axis::categories("", &labels), y, bars),
                keys,
            )
        } else {
            let lines = sweep_lines(
                index,
                &members,
                &backends,
                |s| f64::from(s.connections),
                throughput,
                true,
                false,
            );
            let x = Axis::sweep("connections", Unit::Si, &xs);
            let y = Axis::value(
                throughput_label(family.kind),
                y_unit(family.kind),
                &line_values(&lines),
                true,
            );
            let keys = standard_keys(&lines, &[]);
            (Panel::of_lines("", x, y, lines), keys)
        };
        let notes = index
            .left_out_note(&members, |s| connections(s.connections))
            .into_iter()
            .collect();
        let mut subtitle = vec!["closed loop".to_string()];
        subtitle.extend(describe_timing(index, &members));
        subtitle.push(cores_phrase(&family));
        subtitle.push(describe_repeats(index, &members));
        figs.push(Figure {
            name: format!(
                "throughput-{}{}",
                shape_slug(&family, false),
                cores_slug(index, &family)
            ),
            kind: ChartKind::ThroughputVsConnections,
            title: format!("Throughput vs connections: {}", describe_workload(&family)),
            subtitle: subtitle.join(" · "),
            panels: vec![panel],
            backends: backends.iter().map(|b| b.to_string()).collect(),
            externals: Vec::new(),
            keys,
            notes,
            shapes: members,
        });
    }
    figs
}

/// Chart 6, one figure per workload shape that was run on more than one core count.
pub(super) fn vs_cores(index: &Index<'_>) -> Vec<Figure> {
    let shapes = index.shapes(|s| s.rate_milli.is_none() && s.kind != WorkloadKind::Churn);
    let mut families: BTreeMap<Shape, Vec<Shape>> = BTreeMap::new();
    for s in shapes {
        families
            .entry(Shape {
                server_cores: 0,
                client_cores: 0,
                ..s
            })
            .or_default()
            .push(s);
    }
    let mut figs = Vec::new();
    for (family, members) in families {
        let mut xs: Vec<f64> = members
            .iter()
            .filter(|s| index.of_shape(s).any(|g| !g.ok.is_empty()))
            .map(|s| s.server_cores as f64)
            .collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        let backends = index.measured_backends(&members);
        if xs.len() < 2 || backends.is_empty() {
            continue;
        }
        let lines = sweep_lines(
            index,
            &members,
            &backends,
            |s| s.server_cores as f64,
            throughput,
            true,
            false,
        );
        let x = Axis::sweep("server cores", Unit::Plain, &xs);
        let y = Axis::value(
            throughput_label(family.kind),
            y_unit(family.kind),
            &line_values(&lines),
            true,
        );
        let keys = standard_keys(&lines, &[]);
        let notes = index
            .left_out_note(&members, |s| format!("{} server cores", s.server_cores))
            .into_iter()
            .collect();
        let mut what = format!(
            "{}, {}",
            describe_workload(&family),
            connections(family.connections)
        );
        let mut slug = shape_slug(&family, true);
        if family.idle > 0 {
            what.push_str(&format!(", {} idle", family.idle));
            slug.push_str(&format!("-idle{}", family.idle));
        }
        let mut subtitle = vec!["closed loop".to_string()];
        subtitle.extend(describe_timing(index, &members));
        let mut clients: Vec<usize> = members.iter().map(|s| s.client_cores).collect();
        clients.sort_unstable();
        clients.dedup();
        let clients: Vec<String> = clients.iter().map(|c| c.to_string()).collect();
        subtitle.push(format!("client cores: {}", clients.join(" / ")));
        subtitle.push(describe_repeats(index, &members));
        figs.push(Figure {
            name: format!("throughput-vs-cores-{slug}"),
            kind: ChartKind::ThroughputVsCores,
            title: format!("Throughput vs server cores: {what}"),
            subtitle: subtitle.join(" · "),
            panels: vec![Panel::of_lines("", x, y, lines)],
            backends: backends.iter().map(|b| b.to_string()).collect(),
            externals: Vec::new(),
            keys,
            notes,
            shapes: members,
        });
    }
    figs
}
