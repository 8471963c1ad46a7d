//! Axes: which scale each chart uses, where its ticks go and how they read.
//!
//! Every chart is drawn in plotters' plain f64 coordinates; an [`Axis`] maps data values
//! into them (identity, log10, or log10 with a slot for zero) and carries its own tick
//! positions and labels. One coordinate type for every chart keeps the renderer generic,
//! and choosing ticks ourselves is what makes a log axis read "1k 10k 100k" instead of
//! "10^3.0".

/// How tick values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Counts and rates: 950, 1.2k, 40k, 1.5M.
    Si,
    /// Microseconds, shown as µs, ms or s.
    Micros,
    /// A plain number with up to three significant digits.
    Plain,
}

/// Data value → chart coordinate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Transform {
    /// Identity.
    Linear,
    /// log10; values ≤ 0 cannot be shown.
    Log10,
    /// log10 for positive values, zero drawn at `zero_at` (one step left of the smallest
    /// positive value): a sweep such as 0, 1k, 10k, 100k idle connections.
    ZeroLog {
        /// Coordinate of the value 0.
        zero_at: f64,
    },
}

/// One axis of one panel.
#[derive(Debug, Clone)]
pub(crate) struct Axis {
    /// Description with unit, e.g. "throughput (req/s)".
    pub label: String,
    /// How data values map to coordinates.
    pub transform: Transform,
    /// Coordinate range shown.
    pub lo: f64,
    /// Coordinate range shown.
    pub hi: f64,
    /// Labelled ticks (coordinate, text).
    pub ticks: Vec<(f64, String)>,
    /// Unlabelled minor grid lines (coordinates).
    pub minor: Vec<f64>,
}

/// Ratio of largest to smallest value from which a value axis goes logarithmic: two bars
/// or curves 50× apart are unreadable on a linear axis.
const LOG_RATIO: f64 = 50.0;
/// Ratio from which a parameter sweep (connections, idle connections, rate) is spaced
/// logarithmically: 1, 10, 100, 1000 connections are evenly apart.
const SWEEP_LOG_RATIO: f64 = 10.0;

impl Axis {
    /// Coordinate of data value `v`, or `None` when this axis cannot show it (≤ 0 on a log
    /// axis, NaN): such points are left out, never drawn at the edge.
    pub(crate) fn map(&self, v: f64) -> Option<f64> {
        if !v.is_finite() {
            return None;
        }
        match self.transform {
            Transform::Linear => Some(v),
            Transform::Log10 => (v > 0.0).then(|| v.log10()),
            Transform::ZeroLog { zero_at } => {
                if v == 0.0 {
                    Some(zero_at)
                } else {
                    (v > 0.0).then(|| v.log10())
                }
            }
        }
    }

    /// Whether the axis is logarithmic (said in the axis label).
    pub(crate) fn is_log(&self) -> bool {
        !matches!(self.transform, Transform::Linear)
    }

    /// Label of the tick at coordinate `t`, empty when there is none.
    pub(crate) fn label_at(&self, t: f64) -> String {
        let eps = (self.hi - self.lo).abs() * 1e-6;
        self.ticks
            .iter()
            .find(|(p, _)| (p - t).abs() <= eps)
            .map(|(_, l)| l.clone())
            .unwrap_or_default()
    }

    /// A value axis (y) over `values`. Linear from zero unless the values span
    /// [`LOG_RATIO`] and `allow_log`; then logarithmic over whole decades.
    pub(crate) fn value(label: &str, unit: Unit, values: &[f64], allow_log: bool) -> Axis {
        let vals: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let min = vals.iter().copied().fold(f64::INFINITY, f64::min);
        let max = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if vals.is_empty() {
            return Axis::linear(label, unit, 0.0, 1.0);
        }
        if allow_log && min > 0.0 && max / min >= LOG_RATIO {
            return Axis::log(label, unit, min, max);
        }
        Axis::linear(label, unit, min.min(0.0), max)
    }

    /// A logarithmic value axis over `values` whatever their spread (linear from zero if
    /// any value is not positive).
    pub(crate) fn log_value(label: &str, unit: Unit, values: &[f64]) -> Axis {
        let vals: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let min = vals.iter().copied().fold(f64::INFINITY, f64::min);
        let max = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if vals.is_empty() || min <= 0.0 {
            return Axis::value(label, unit, values, false);
        }
        Axis::log(label, unit, min, max)
    }

    fn linear(label: &str, unit: Unit, lo: f64, max: f64) -> Axis {
        let hi = if max > lo { max * 1.08 } else { lo + 1.0 };
        let step = nice_step((hi - lo) / 5.0);
        let lo = (lo / step).floor() * step;
        let hi = (hi / step).ceil() * step;
        let mut ticks = Vec::new();
        let mut i = 0;
        loop {
            let t = lo + step * f64::from(i);
            if t > hi + step * 1e-9 {
                break;
            }
            ticks.push((t, fmt_unit(unit, t)));
            i += 1;
        }
        Axis {
            label: label.to_string(),
            transform: Transform::Linear,
            lo,
            hi,
            ticks,
            minor: Vec::new(),
        }
    }

    fn log(label: &str, unit: Unit, min: f64, max: f64) -> Axis {
        // Ends on the nearest 1, 2 or 5 × 10^k outside the data, so no near-empty decade
        // is wasted; labelled ticks on every decade (and on 2 and 5 when few decades show).
        let nice_below = |v: f64| {
            let base = 10f64.powf(v.log10().floor());
            [5.0, 2.0, 1.0]
                .into_iter()
                .map(|m| m * base)
                .find(|c| *c <= v * (1.0 + 1e-9))
                .unwrap_or(base)
        };
        let nice_above = |v: f64| {
            let base = 10f64.powf(v.log10().floor());
            [1.0, 2.0, 5.0, 10.0]
                .into_iter()
                .map(|m| m * base)
                .find(|c| *c >= v * (1.0 - 1e-9))
                .unwrap_or(base * 10.0)
        };
        let lo = nice_below(min).log10();
        let hi = nice_above(max).log10().max(lo + 1.0);
        let few_decades = hi - lo <= 2.5;
        let mut ticks = Vec::new();
        let mut minor = Vec::new();
        let mut d = lo.floor();
        while d <= hi + 1e-9 {
            let base = 10f64.powf(d);
            for m in 1..10 {
                let v = base * f64::from(m);
                let t = v.log10();
                if t < lo - 1e-9 || t > hi + 1e-9 {
                    continue;
                }
                let at_end = (t - lo).abs() < 1e-9 || (t - hi).abs() < 1e-9;
                if m == 1 || at_end || (few_decades && (m == 2 || m == 5)) {
                    ticks.push((t, fmt_unit(unit, v)));
                } else {
                    minor.push(t);
                }
            }
            d += 1.0;
        }
        Axis {
            label: format!("{label}, log scale"),
            transform: Transform::Log10,
            lo,
            hi,
            ticks,
            minor,
        }
    }

    /// The x axis of a parameter sweep: ticks exactly at the swept values, spaced
    /// logarithmically when they span a decade or more (with a slot for 0).
    pub(crate) fn sweep(label: &str, unit: Unit, values: &[f64]) -> Axis {
        let mut vals: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        vals.sort_by(f64::total_cmp);
        vals.dedup();
        let positive: Vec<f64> = vals.iter().copied().filter(|v| *v > 0.0).collect();
        let has_zero = vals.contains(&0.0);
        let (pmin, pmax) = match (positive.first(), positive.last()) {
            (Some(a), Some(b)) => (*a, *b),
            _ => (0.0, 0.0),
        };
        let transform = if positive.len() >= 2 && pmax / pmin >= SWEEP_LOG_RATIO {
            if has_zero {
                let span = pmax.log10() - pmin.log10();
                let step = (span / (positive.len() - 1) as f64).clamp(0.5, 1.0);
                Transform::ZeroLog {
                    zero_at: pmin.log10() - step,
                }
            } else if vals.iter().all(|v| *v > 0.0) {
                Transform::Log10
            } else {
                Transform::Linear
            }
        } else {
            Transform::Linear
        };
        let mut axis = Axis {
            label: label.to_string(),
            transform,
            lo: 0.0,
            hi: 1.0,
            ticks: Vec::new(),
            minor: Vec::new(),
        };
        let coords: Vec<(f64, f64)> = vals
            .iter()
            .filter_map(|v| axis.map(*v).map(|t| (t, *v)))
            .collect();
        let (tmin, tmax) = match (coords.first(), coords.last()) {
            (Some(a), Some(b)) => (a.0, b.0),
            _ => (0.0, 1.0),
        };
        let pad = if tmax > tmin {
            (tmax - tmin) * 0.06
        } else {
            0.5_f64.max(tmin.abs() * 0.1)
        };
        axis.lo = tmin - pad;
        axis.hi = tmax + pad;
        // Thin the labels of long sweeps so they never overlap.
        let every = coords.len().div_ceil(10).max(1);
        axis.ticks = coords
            .iter()
            .enumerate()
            .map(|(i, (t, v))| {
                let text = if i % every == 0 || i + 1 == coords.len() {
                    fmt_unit(unit, *v)
                } else {
                    String::new()
                };
                (*t, text)
            })
            .collect();
        if axis.is_log() {
            axis.label = format!("{}, log scale", axis.label);
        }
        axis
    }

    /// The HdrHistogram "nines" axis: coordinate n is percentile 1 − 10^−n, labelled 0%,
    /// 90%, 99%, 99.9%, …, up to at least `max_nines`.
    pub(crate) fn nines(label: &str, max_nines: f64) -> Axis {
        let last = (max_nines - 1e-6).ceil().clamp(2.0, 7.0);
        let mut ticks = Vec::new();
        let mut n = 0.0;
        while n <= last + 1e-9 {
            ticks.push((n, nines_label(n as u32)));
            n += 1.0;
        }
        Axis {
            label: label.to_string(),
            transform: Transform::Linear,
            lo: 0.0,
            // A little room so the end markers are not cut by the frame.
            hi: last + 0.06,
            ticks,
            minor: Vec::new(),
        }
    }

    /// Categories 0..n at integer coordinates, for bar charts.
    pub(crate) fn categories(label: &str, names: &[String]) -> Axis {
        // A lone category still gets only half the width, so its group of bars does not
        // stretch across the whole panel.
        let pad = (2.0 - names.len() as f64).max(0.0) / 2.0;
        Axis {
            label: label.to_string(),
            transform: Transform::Linear,
            lo: -0.5 - pad,
            hi: names.len() as f64 - 0.5 + pad,
            ticks: names
                .iter()
                .enumerate()
                .map(|(i, n)| (i as f64, n.clone()))
                .collect(),
            minor: Vec::new(),
        }
    }
}

/// "0%", "90%", "99%", "99.9%", … for n nines.
fn nines_label(n: u32) -> String {
    match n {
        0 => "0%".to_string(),
        1 => "90%".to_string(),
        2 => "99%".to_string(),
        _ => format!("99.{}%", "9".repeat(n as usize - 2)),
    }
}

/// Smallest of 1, 2, 5 × 10^k not below `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw.is_nan() || raw <= 0.0 || raw.is_infinite() {
        return 1.0;
    }
    let base = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if base * m >= raw * (1.0 - 1e-9) {
            return base * m;
        }
    }
    base * 10.0
}

pub(crate) use crate::analysis::{fmt_si, fmt_sig, fmt_us};

/// `v` in `unit`.
pub(crate) fn fmt_unit(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Si => fmt_si(v),
        Unit::Micros => fmt_us(v),
        Unit::Plain => fmt_sig(v, 3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(fmt_si(950.0), "950");
        assert_eq!(fmt_si(1234.0), "1.23k");
        assert_eq!(fmt_si(40_000.0), "40k");
        assert_eq!(fmt_si(1_500_000.0), "1.5M");
        assert_eq!(fmt_us(12.0), "12 µs");
        assert_eq!(fmt_us(2500.0), "2.5 ms");
        assert_eq!(fmt_us(1_000_000.0), "1 s");
        assert_eq!(fmt_sig(0.25, 3), "0.25");
        assert_eq!(fmt_sig(0.0, 3), "0");
        assert_eq!(nines_label(4), "99.99%");
    }

    #[test]
    fn value_axis_goes_log_only_across_decades() {
        let lin = Axis::value("y", Unit::Si, &[10_000.0, 50_000.0], true);
        assert!(!lin.is_log());
        assert_eq!(lin.lo, 0.0);
        assert!(lin.hi >= 50_000.0);
        let log = Axis::value("y", Unit::Micros, &[20.0, 150_000.0], true);
        assert!(log.is_log());
        assert_eq!(log.map(100.0), Some(2.0));
        assert_eq!(log.map(0.0), None);
        assert_eq!(log.label_at(3.0), "1 ms");
        assert!((log.lo - 20f64.log10()).abs() < 1e-9);
        assert!((log.hi - 200_000f64.log10()).abs() < 1e-9);
        assert_eq!(log.label_at(log.lo), "20 µs");
        let tight = Axis::value("y", Unit::Micros, &[900.0, 340_000.0], true);
        assert!((tight.lo - 500f64.log10()).abs() < 1e-9);
        assert_eq!(tight.label_at(tight.lo), "500 µs");
        let no_log = Axis::value("y", Unit::Plain, &[0.01, 10.0], false);
        assert!(!no_log.is_log());
    }

    #[test]
    fn sweep_with_zero_keeps_a_slot_for_it() {
        let a = Axis::sweep("idle", Unit::Si, &[0.0, 1000.0, 10_000.0, 100_000.0]);
        assert!(matches!(a.transform, Transform::ZeroLog { .. }));
        let z = a.map(0.0).unwrap();
        assert!(z < 3.0 && z > a.lo);
        assert_eq!(a.label_at(z), "0");
        assert_eq!(a.label_at(5.0), "100k");
        let lin = Axis::sweep("cores", Unit::Plain, &[1.0, 2.0, 4.0]);
        assert_eq!(lin.transform, Transform::Linear);
        assert_eq!(lin.ticks.len(), 3);
    }

    #[test]
    fn nines_axis_reaches_the_data() {
        let a = Axis::nines("percentile", 4.3);
        assert_eq!(a.ticks.len(), 6);
        assert!(a.hi > 5.0 && a.hi < 5.1);
        assert_eq!(Axis::nines("p", 5.0).ticks.len(), 6);
        assert_eq!(a.label_at(3.0), "99.9%");
    }
}
