//! Charts 2 and 3: the latency percentile spectrum from the recorded histograms, and
//! latency against offered load from the open-loop sweep (where the knee shows).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use super::axis::{fmt_si, Axis, Unit};
use super::common::{
    cores_phrase, cores_slug, line_values, shape_slug, standard_keys, sweep_lines, CLIENT_BOUND_KEY,
};
use super::figure::{ChartKind, Figure, KeyItem, Line, Markers, Panel, Point};
use super::style::family;
use crate::analysis::{
    connections, describe_repeats, describe_timing, describe_workload, merged_histogram, p50, p99,
    Index, Shape, Which,
};
use crate::results::WorkloadKind;

/// Spectrum resolution: points per nine.
const STEPS_PER_NINE: f64 = 20.0;

/// The HdrHistogram percentile curve: x in nines (−log10(1 − q)), y in µs, ending at the
/// max, placed at the last quantile the sample count can resolve (1 − 1/n).
fn spectrum_points(h: &Histogram<u64>) -> Vec<Point> {
    let n = h.len().max(1) as f64;
    let end = n.log10();
    let mut pts = Vec::new();
    let mut i = 0.0;
    loop {
        let x = i / STEPS_PER_NINE;
        if x >= end {
            break;
        }
        let q = 1.0 - 10f64.powf(-x);
        pts.push(Point::at(x, h.value_at_quantile(q) as f64));
        i += 1.0;
    }
    pts.push(Point::at(end, h.max() as f64));
    pts
}

/// Most backends one spectrum panel shows; more become small multiples.
const SMALL_MULTIPLES_ABOVE: usize = 5;

/// Backends split into panels: each family of variants (the epolls, the io_urings, the
/// runtimes over epoll) together, the backends without siblings pooled, no panel over
/// [`SMALL_MULTIPLES_ABOVE`].
fn small_multiples(backends: &[String]) -> Vec<Vec<String>> {
    let mut families: Vec<(backend_api::Family, Vec<String>)> = Vec::new();
    let mut singles: Vec<String> = Vec::new();
    for b in backends {
        let fam = family(b);
        // Backends of no family (poll, thread per connection) are no one's siblings.
        if fam == backend_api::Family::Other {
            singles.push(b.clone());
            continue;
        }
        match families.iter_mut().find(|(f, _)| *f == fam) {
            Some((_, members)) => members.push(b.clone()),
            None => families.push((fam, vec![b.clone()])),
        }
    }
    let mut groups: Vec<Vec<String>> = Vec::new();
    for (_, members) in families {
        if members.len() == 1 {
            singles.extend(members);
        } else {
            groups.extend(
                members
                    .chunks(SMALL_MULTIPLES_ABOVE)
                    .map(<[String]>::to_vec),
            );
        }
    }
    // In the order they were given.
    singles.sort_by_key(|s| backends.iter().position(|b| b == s));
    let per = SMALL_MULTIPLES_ABOVE.min(3);
    groups.extend(singles.chunks(per).map(<[String]>::to_vec));
    groups
}

/// Chart 2, one figure per workload shape with histograms (idle-sweep cells are shown by
/// chart 7 instead).
pub(super) fn spectra(index: &Index<'_>, warnings: &mut Vec<String>) -> Vec<Figure> {
    let mut figs = Vec::new();
    for shape in index.shapes(|s| s.kind != WorkloadKind::Idle) {
        let mut lines = Vec::new();
        let mut any_uncorrected = false;
        let mut client_bound = false;
        for g in index.of_shape(&shape) {
            for which in [Which::Corrected, Which::Uncorrected] {
                let h = match merged_histogram(g, which) {
                    Ok(Some(h)) => h,
                    Ok(None) => continue,
                    Err(e) => {
                        warnings.push(format!("{e:#}; that curve is left out"));
                        continue;
                    }
                };
                let mut points = spectrum_points(&h);
                if let Some(last) = points.last_mut() {
                    last.hollow = g.client_bound();
                    client_bound |= last.hollow;
                }
                any_uncorrected |= which == Which::Uncorrected;
                lines.push(Line {
                    backend: g.backend.to_string(),
                    dashed: which == Which::Uncorrected,
                    markers: Markers::Last,
                    band: false,
                    points,
                });
            }
        }
        if lines.is_empty() {
            continue;
        }
        let max_nines = lines
            .iter()
            .filter_map(|l| l.points.last().map(|p| p.x))
            .fold(0.0, f64::max);
        let x = Axis::nines("percentile", max_nines);
        let y = Axis::value("latency", Unit::Micros, &line_values(&lines), true);
        let mut backends: Vec<String> = Vec::new();
        for l in &lines {
            if !backends.contains(&l.backend) {
                backends.push(l.backend.clone());
            }
        }
        let panels = if backends.len() > SMALL_MULTIPLES_ABOVE {
            // One panel per family on a shared axis: many curves in one panel tangle.
            small_multiples(&backends)
                .into_iter()
                .map(|names| {
                    let own: Vec<Line> = lines
                        .iter()
                        .filter(|l| names.contains(&l.backend))
                        .cloned()
                        .collect();
                    Panel::of_lines(names.join(", "), x.clone(), y.clone(), own)
                })
                .collect()
        } else {
            vec![Panel::of_lines("", x, y, lines)]
        };
        let mut keys = Vec::new();
        let open = shape.rate().is_some();
        if open {
            keys.push(KeyItem::Line {
                dashed: false,
                text: "corrected for coordinated omission (from the intended send time)"
                    .to_string(),
            });
            if any_uncorrected {
                keys.push(KeyItem::Line {
                    dashed: true,
                    text: "uncorrected (from the actual send)".to_string(),
                });
            }
        }
        keys.push(KeyItem::Marker {
            hollow: false,
            text: "curve ends at the max: the last percentile the sample count resolves"
                .to_string(),
        });
        if client_bound {
            keys.push(KeyItem::Marker {
                hollow: true,
                text: CLIENT_BOUND_KEY.to_string(),
            });
        }
        let mode = match shape.rate() {
            Some(r) => format!("open loop at {} req/s", fmt_si(r)),
            None => "closed loop (latency from the actual send)".to_string(),
        };
        let mut subtitle = vec![mode];
        subtitle.extend(describe_timing(index, &[shape]));
        subtitle.push(cores_phrase(&shape));
        subtitle.push(
            describe_repeats(index, &[shape])
                .replace("median of", "histograms merged over")
                .replace("one run per point", "one run"),
        );
        let mut what = format!(
            "{}, {}",
            describe_workload(&shape),
            connections(shape.connections)
        );
        if shape.server_cores != index.default_cores.0 {
            what.push_str(&format!(", {} server cores", shape.server_cores));
        }
        let mut slug = shape_slug(&shape, true);
        if let Some(r) = shape.rate() {
            what.push_str(&format!(", {} req/s offered", fmt_si(r)));
            slug.push_str(&format!("-r{}", r.round() as u64));
        }
        figs.push(Figure {
            name: format!("latency-spectrum-{slug}{}", cores_slug(index, &shape)),
            kind: ChartKind::LatencySpectrum,
            title: format!("Latency by percentile: {what}"),
            subtitle: subtitle.join(" · "),
            panels,
            backends,
            externals: Vec::new(),
            keys,
            notes: index
                .left_out_note(&[shape], |_| "this workload".to_string())
                .into_iter()
                .collect(),
            shapes: vec![shape],
        });
    }
    figs
}

/// Chart 3, one figure per open-loop workload swept over at least two rates.
pub(super) fn vs_load(index: &Index<'_>) -> Vec<Figure> {
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
        let rate = |s: &Shape| s.rate().unwrap_or(0.0);
        let mut lines = sweep_lines(index, &members, &backends, rate, p50, false, false);
        lines.extend(sweep_lines(
            index, &members, &backends, rate, p99, false, true,
        ));
        let x = Axis::sweep("offered load (requests/s)", Unit::Si, &xs);
        let y = Axis::value(
            "latency (corrected for coordinated omission)",
            Unit::Micros,
            &line_values(&lines),
            true,
        );
        let mut keys = vec![
            KeyItem::Line {
                dashed: false,
                text: "p50".to_string(),
            },
            KeyItem::Line {
                dashed: true,
                text: "p99".to_string(),
            },
        ];
        keys.extend(standard_keys(&lines, &[]));
        let mut notes: Vec<String> = index
            .left_out_note(&members, |s| format!("{} req/s", fmt_si(rate(s))))
            .into_iter()
            .collect();
        let mut behind = Vec::new();
        for s in &members {
            for g in index.of_shape(s) {
                let achieved = g.stat(|c| c.client.as_ref().map(|m| m.achieved_rate));
                if let Some(a) = achieved {
                    if a.median < rate(s) * 0.95 {
                        behind.push(format!(
                            "{} at {} (achieved {})",
                            g.backend,
                            fmt_si(rate(s)),
                            fmt_si(a.median)
                        ));
                    }
                }
            }
        }
        if !behind.is_empty() {
            notes.push(format!(
                "Below 95% of the offered rate, past the knee: {}.",
                behind.join("; ")
            ));
        }
        let mut subtitle = vec!["open loop".to_string()];
        subtitle.extend(describe_timing(index, &members));
        subtitle.push(cores_phrase(&family));
        subtitle.push(describe_repeats(index, &members));
        figs.push(Figure {
            name: format!(
                "latency-vs-load-{}{}",
                shape_slug(&family, true),
                cores_slug(index, &family)
            ),
            kind: ChartKind::LatencyVsLoad,
            title: format!(
                "Latency vs offered load: {}, {}",
                describe_workload(&family),
                connections(family.connections)
            ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_multiples_keep_families_together() {
        let names: Vec<String> = [
            "epoll-et",
            "epoll-lt",
            "uring",
            "uring-multishot",
            "uring-sqpoll",
            "glommio",
            "tokio",
            "tokio-tpc",
            "poll",
            "blocking",
        ]
        .map(String::from)
        .to_vec();
        let groups = small_multiples(&names);
        let joined: Vec<String> = groups.iter().map(|g| g.join(",")).collect();
        assert_eq!(
            joined,
            [
                "epoll-et,epoll-lt",
                "uring,uring-multishot,uring-sqpoll",
                "tokio,tokio-tpc",
                "glommio,poll,blocking"
            ]
        );
    }
}
