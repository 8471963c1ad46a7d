//! The io_uring feature ladder: for each workload shape, every step from one-shot `uring`
//! up, one feature at a time, with its server CPU µs per request and syscalls per request
//! (median, bootstrap 95% interval) and its marginal change to the step before.
//!
//! Steps are found by name, so no backend crate is needed here: `uring+a+b` is the set
//! {a, b}, and the ladder is the longest chain from `uring` in which each backend adds
//! exactly one feature to the one before (ties go to the order the run planned its
//! backends). Backends that add one feature to a chain step but are not on the chain
//! (a branch such as a toggle that excludes a later step) are drawn after it, each
//! compared to its own parent step. A shape gets a chart when at least three steps have
//! data there.

use std::collections::BTreeSet;

use super::axis::{Axis, Unit};
use super::common::{bar_values, cores_slug, shape_slug, CLIENT_BOUND_KEY};
use super::figure::{bar_span, Bar, ChartKind, Figure, KeyItem, Panel, Segment};
use crate::analysis::stats::{self, Estimate, Metric};
use crate::analysis::{
    connections, describe_repeats, describe_timing, describe_workload, fmt_si, Index, Shape,
};

/// The fewest steps with data that make a ladder chart.
const MIN_STEPS: usize = 3;

/// One bar position: a backend and the step it is compared to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    pub backend: String,
    /// The feature it adds ("" for the baseline).
    pub adds: String,
    /// Index (into the step list) of the step it adds to.
    pub parent: Option<usize>,
    /// Off the main chain.
    pub branch: bool,
}

/// The feature set of a uring backend name; `None` for any other name.
fn features(name: &str) -> Option<BTreeSet<&str>> {
    if name == "uring" {
        return Some(BTreeSet::new());
    }
    let rest = name.strip_prefix("uring+")?;
    let set: BTreeSet<&str> = rest.split('+').filter(|p| !p.is_empty()).collect();
    (!set.is_empty()).then_some(set)
}

/// The ladder among `backends` (in plan order): the chain first, then its branches.
pub(crate) fn steps(backends: &[&str]) -> Vec<Step> {
    let sets: Vec<(&str, BTreeSet<&str>)> = backends
        .iter()
        .filter_map(|b| features(b).map(|f| (*b, f)))
        .collect();
    let child = |parent: &BTreeSet<&str>, c: &BTreeSet<&str>| {
        c.len() == parent.len() + 1 && parent.is_subset(c)
    };
    // Longest chain from each set, computed from the largest sets down.
    let mut order: Vec<usize> = (0..sets.len()).collect();
    order.sort_by_key(|i| std::cmp::Reverse(sets[*i].1.len()));
    let mut best: Vec<(usize, Option<usize>)> = vec![(1, None); sets.len()];
    for &i in &order {
        for j in 0..sets.len() {
            if child(&sets[i].1, &sets[j].1) && best[j].0 + 1 > best[i].0 {
                best[i] = (best[j].0 + 1, Some(j));
            }
        }
    }
    let Some(root) = sets.iter().position(|(_, f)| f.is_empty()) else {
        return Vec::new();
    };
    let mut chain = vec![root];
    while let Some(next) = best[*chain.last().unwrap_or(&root)].1 {
        chain.push(next);
    }
    let added = |parent: &BTreeSet<&str>, c: &BTreeSet<&str>| {
        c.difference(parent)
            .next()
            .map_or(String::new(), |f| f.to_string())
    };
    let mut out: Vec<Step> = chain
        .iter()
        .enumerate()
        .map(|(k, &i)| Step {
            backend: sets[i].0.to_string(),
            adds: if k == 0 {
                String::new()
            } else {
                added(&sets[chain[k - 1]].1, &sets[i].1)
            },
            parent: k.checked_sub(1),
            branch: false,
        })
        .collect();
    for (j, (name, set)) in sets.iter().enumerate() {
        if chain.contains(&j) {
            continue;
        }
        if let Some(k) = chain.iter().position(|&p| child(&sets[p].1, set)) {
            out.push(Step {
                backend: name.to_string(),
                adds: added(&sets[chain[k]].1, set),
                parent: Some(k),
                branch: true,
            });
        }
    }
    out
}

/// The metric's median with its bootstrap interval on one backend at one shape.
fn estimate(index: &Index<'_>, shape: &Shape, backend: &str, m: &Metric) -> Option<Estimate> {
    let g = index.get(shape, backend)?;
    stats::estimate(&g.ok, m)
}

/// A step's change to its parent, as a ratio with its interval.
fn marginal(
    index: &Index<'_>,
    shape: &Shape,
    step: &Step,
    steps: &[Step],
    m: &Metric,
) -> Option<Estimate> {
    let parent = &steps[step.parent?];
    let a = index.get(shape, &step.backend)?;
    let b = index.get(shape, &parent.backend)?;
    stats::ratio(&a.ok, &b.ok, m)
}

/// "−4.1%" for a ratio of 0.959.
fn pct(r: f64) -> String {
    let p = (r - 1.0) * 100.0;
    let s = if p.abs() < 9.95 {
        format!("{:.1}", p.abs())
    } else {
        format!("{:.0}", p.abs())
    };
    let sign = if s.trim_start_matches(['0', '.']).is_empty() {
        "±"
    } else if p < 0.0 {
        "−"
    } else {
        "+"
    };
    format!("{sign}{s}%")
}

fn panel(
    index: &Index<'_>,
    shape: &Shape,
    steps: &[Step],
    shown: &[usize],
    m: &Metric,
    title: &str,
    y_label: &str,
) -> Option<Panel> {
    let mut bars = Vec::new();
    let mut labels = Vec::new();
    for (cat, &i) in shown.iter().enumerate() {
        let step = &steps[i];
        let change = marginal(index, shape, step, steps, m)
            .map(|r| pct(r.value))
            .unwrap_or_default();
        labels.push(format!("{} {change}", step_label(step, i)));
        let Some(e) = estimate(index, shape, &step.backend, m) else {
            continue;
        };
        let (x0, x1) = bar_span(cat, 0, 1);
        bars.push(Bar {
            backend: step.backend.clone(),
            x0,
            x1,
            segments: vec![Segment {
                value: e.value,
                light: step.branch,
            }],
            overlay: false,
            whisker: (!e.is_point()).then_some((e.lo, e.hi)),
            hollow_mark: index
                .get(shape, &step.backend)
                .is_some_and(|g| g.client_bound()),
        });
    }
    if bars.is_empty() {
        return None;
    }
    let y = Axis::value(y_label, Unit::Plain, &bar_values(&bars), false);
    Some(Panel::of_bars(title, Axis::categories("", &labels), y, bars).with_value_labels())
}

/// The step's number on the chain (a branch: its parent's, marked).
fn step_label(step: &Step, i: usize) -> String {
    match (step.branch, step.parent) {
        (true, Some(p)) => format!("{p}′"),
        _ => i.to_string(),
    }
}

/// One figure per shape with at least [`MIN_STEPS`] ladder steps measured.
pub(super) fn ladder(index: &Index<'_>) -> Vec<Figure> {
    let steps = steps(&index.backends);
    if steps.iter().filter(|s| !s.branch).count() < MIN_STEPS {
        return Vec::new();
    }
    let mut figs = Vec::new();
    for shape in index.shapes(|_| true) {
        let shown: Vec<usize> = (0..steps.len())
            .filter(|&i| estimate(index, &shape, &steps[i].backend, &stats::CPU_PER_REQ).is_some())
            .collect();
        if shown.len() < MIN_STEPS {
            continue;
        }
        let mut panels = Vec::new();
        panels.extend(panel(
            index,
            &shape,
            &steps,
            &shown,
            &stats::CPU_PER_REQ,
            "server CPU per request",
            "server CPU per request (µs)",
        ));
        panels.extend(panel(
            index,
            &shape,
            &steps,
            &shown,
            &stats::SYSCALLS_PER_REQ,
            "syscalls per request",
            "syscalls per request",
        ));
        let mut notes = vec![
            "x: step number and its marginal change to the step before (the ratio of \
             medians, paired by repeat round)."
                .to_string(),
        ];
        for &i in &shown {
            let step = &steps[i];
            let what = if step.adds.is_empty() {
                format!("{} {}", step_label(step, i), step.backend)
            } else if step.branch {
                format!(
                    "{} +{} (branch off step {})",
                    step_label(step, i),
                    step.adds,
                    step.parent.unwrap_or(0)
                )
            } else {
                format!("{} +{}", step_label(step, i), step.adds)
            };
            let change = |m: &Metric| {
                marginal(index, &shape, step, &steps, m)
                    .map(|r| format!("{} {} [{}, {}]", m.name, pct(r.value), pct(r.lo), pct(r.hi)))
            };
            let parts: Vec<String> = [
                change(&stats::CPU_PER_REQ),
                change(&stats::SYSCALLS_PER_REQ),
            ]
            .into_iter()
            .flatten()
            .collect();
            notes.push(if parts.is_empty() {
                format!("{what}.")
            } else {
                format!("{what}: {}.", parts.join(", "))
            });
        }
        if panels.len() < 2 {
            notes.push("Syscalls were not counted in this run.".to_string());
        }
        let mut what = format!(
            "{}, {}",
            describe_workload(&shape),
            connections(shape.connections)
        );
        let mut slug = shape_slug(&shape, true);
        if let Some(r) = shape.rate() {
            what.push_str(&format!(", {} req/s offered", fmt_si(r)));
            slug.push_str(&format!("-r{}", r.round() as u64));
        }
        let mut subtitle = vec![if shape.rate().is_some() {
            "open loop".to_string()
        } else {
            "closed loop".to_string()
        }];
        subtitle.extend(describe_timing(index, &[shape]));
        subtitle.push(describe_repeats(index, &[shape]));
        let mut keys = vec![KeyItem::Whisker {
            text: "whisker: bootstrap 95% interval of the median".to_string(),
        }];
        if shown.iter().any(|&i| {
            index
                .get(&shape, &steps[i].backend)
                .is_some_and(|g| g.client_bound())
        }) {
            keys.push(KeyItem::Marker {
                hollow: true,
                text: CLIENT_BOUND_KEY.to_string(),
            });
        }
        if shown.iter().any(|&i| steps[i].branch) {
            keys.push(KeyItem::Swatch {
                light: true,
                text: "light: a branch (N′ adds one feature to step N)".to_string(),
            });
        }
        figs.push(Figure {
            name: format!("uring-ladder-{slug}{}", cores_slug(index, &shape)),
            kind: ChartKind::UringLadder,
            title: format!("io_uring feature ladder: {what}"),
            subtitle: subtitle.join(" · "),
            panels,
            backends: shown.iter().map(|&i| steps[i].backend.clone()).collect(),
            keys,
            notes,
            shapes: vec![shape],
            externals: Vec::new(),
        });
    }
    figs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_is_the_longest_and_branches_follow_it() {
        let names = [
            "epoll-et",
            "uring",
            "uring+single",
            "uring+single+defer",
            "uring+single+defer+send-bundle",
            "uring+single+defer+zc",
            "uring+single+defer+zc+fixed",
            "uring+coop",
            "uring-multishot",
        ];
        let s = steps(&names);
        let got: Vec<(&str, &str, Option<usize>, bool)> = s
            .iter()
            .map(|s| (s.backend.as_str(), s.adds.as_str(), s.parent, s.branch))
            .collect();
        assert_eq!(
            got,
            [
                ("uring", "", None, false),
                ("uring+single", "single", Some(0), false),
                ("uring+single+defer", "defer", Some(1), false),
                ("uring+single+defer+zc", "zc", Some(2), false),
                ("uring+single+defer+zc+fixed", "fixed", Some(3), false),
                (
                    "uring+single+defer+send-bundle",
                    "send-bundle",
                    Some(2),
                    true
                ),
                ("uring+coop", "coop", Some(0), true),
            ]
        );
        assert!(
            steps(&["epoll-et", "uring+single"]).is_empty(),
            "no baseline"
        );
    }

    #[test]
    fn changes_read_as_signed_percentages() {
        assert_eq!(pct(0.959), "−4.1%");
        assert_eq!(pct(1.25), "+25%");
        assert_eq!(pct(1.0), "±0.0%");
    }
}
