//! Statistics every consumer shares: medians with bootstrap confidence intervals, ratios to
//! a reference backend with theirs, and the verdict words they earn.
//!
//! Bootstraps use a fixed seed, so the same results file always prints the same intervals.

use crate::results::Cell;

/// Resamples per bootstrap: enough for stable 2.5% and 97.5% percentiles.
pub const RESAMPLES: usize = 2000;
/// The bootstraps' seed.
pub const SEED: u64 = 0x7269_6e67_7369_6465;
/// Relative half-width of a ratio's interval under which a comparison has converged.
pub const DEFAULT_CI_TARGET: f64 = 0.03;
/// The reference backend ratios are taken to, unless told otherwise (`--reference`).
pub const DEFAULT_REFERENCE: &str = "epoll-et";

/// A small deterministic generator (SplitMix64): reproducible intervals without a
/// dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * n as f64) as usize % n.max(1)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Median of finite values; `None` when there are none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// A point estimate with its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// The median (or the ratio of medians, or the median of paired ratios).
    pub value: f64,
    /// Lower end of the 95% bootstrap interval.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
    /// Samples behind it (pairs for a paired ratio, the smaller side otherwise).
    pub n: usize,
}

impl Estimate {
    /// Half the interval's width relative to the value: 0.03 is ±3%.
    pub fn half_width_rel(&self) -> f64 {
        if self.value == 0.0 {
            return f64::INFINITY;
        }
        (self.hi - self.lo) / 2.0 / self.value.abs()
    }

    /// Whether the interval is only the point (a single sample).
    pub fn is_point(&self) -> bool {
        self.n < 2
    }
}

/// 2.5th and 97.5th percentiles of `stats` (sorted here).
fn interval(mut stats: Vec<f64>) -> (f64, f64) {
    stats.retain(|x| x.is_finite());
    if stats.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    stats.sort_by(f64::total_cmp);
    let at = |q: f64| stats[((q * (stats.len() - 1) as f64).round() as usize).min(stats.len() - 1)];
    (at(0.025), at(0.975))
}

fn resample(rng: &mut Rng, v: &[f64], buf: &mut Vec<f64>) -> f64 {
    buf.clear();
    buf.extend((0..v.len()).map(|_| v[rng.below(v.len())]));
    median(buf).unwrap_or(f64::NAN)
}

/// Median of `values` with its percentile-bootstrap 95% interval.
pub fn bootstrap_median(values: &[f64]) -> Option<Estimate> {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    let value = median(&v)?;
    let mut rng = Rng::new(SEED);
    let mut buf = Vec::with_capacity(v.len());
    let (lo, hi) = interval(
        (0..RESAMPLES)
            .map(|_| resample(&mut rng, &v, &mut buf))
            .collect(),
    );
    Some(Estimate {
        value,
        lo: lo.min(value),
        hi: hi.max(value),
        n: v.len(),
    })
}

/// median(a) / median(b), each side resampled on its own (independent runs).
pub fn ratio_unpaired(a: &[f64], b: &[f64]) -> Option<Estimate> {
    let a: Vec<f64> = a.iter().copied().filter(|x| x.is_finite()).collect();
    let b: Vec<f64> = b.iter().copied().filter(|x| x.is_finite()).collect();
    let value = median(&a)? / median(&b)?;
    if !value.is_finite() {
        return None;
    }
    let mut rng = Rng::new(SEED);
    let (mut ba, mut bb) = (Vec::new(), Vec::new());
    let (lo, hi) = interval(
        (0..RESAMPLES)
            .map(|_| resample(&mut rng, &a, &mut ba) / resample(&mut rng, &b, &mut bb))
            .collect(),
    );
    Some(Estimate {
        value,
        lo: lo.min(value),
        hi: hi.max(value),
        n: a.len().min(b.len()),
    })
}

/// Median of the per-round ratios a_i / b_i, resampling the rounds: drift that hits both
/// sides of a round alike cancels.
pub fn ratio_paired(pairs: &[(f64, f64)]) -> Option<Estimate> {
    let r: Vec<f64> = pairs
        .iter()
        .map(|(a, b)| a / b)
        .filter(|x| x.is_finite())
        .collect();
    bootstrap_median(&r)
}

/// What a metric is and which way is better.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Short name for tables: "CPU/req".
    pub name: &'static str,
    /// Whether a smaller value is better.
    pub lower_is_better: bool,
    /// The verdict word when the ratio is on the better side of 1.
    pub better: &'static str,
    /// The verdict word when it is on the worse side.
    pub worse: &'static str,
    /// The metric of one cell.
    pub of: fn(&Cell) -> Option<f64>,
}

/// Server CPU µs per request: nanosecond ledger where the cell has one, else the
/// tick-sampled user + system.
pub fn cpu_us_per_req(cell: &Cell) -> Option<f64> {
    if let Some(v) = cell.ledger.as_ref().and_then(|l| l.server_cpu_us_per_req) {
        return Some(v);
    }
    let s = cell.server.as_ref()?;
    Some(s.cpu_user_us_per_req + s.cpu_sys_us_per_req)
}

/// Throughput: req/s, MB/s received for the stream workload.
pub fn throughput(cell: &Cell) -> Option<f64> {
    let c = cell.client.as_ref()?;
    Some(
        if cell.workload.kind == crate::results::WorkloadKind::Stream {
            c.mbps_in
        } else {
            c.throughput_rps
        },
    )
}

/// Syscalls per request, when counted.
pub fn syscalls_per_req(cell: &Cell) -> Option<f64> {
    cell.server.as_ref()?.syscalls_per_req
}

/// p99 latency, µs.
pub fn p99_us(cell: &Cell) -> Option<f64> {
    cell.client.as_ref().map(|c| c.latency_us.p99)
}

/// Server CPU per request.
pub const CPU_PER_REQ: Metric = Metric {
    name: "CPU/req",
    lower_is_better: true,
    better: "cheaper",
    worse: "costlier",
    of: cpu_us_per_req,
};
/// Throughput.
pub const THROUGHPUT: Metric = Metric {
    name: "throughput",
    lower_is_better: false,
    better: "faster",
    worse: "slower",
    of: throughput,
};
/// Syscalls per request.
pub const SYSCALLS_PER_REQ: Metric = Metric {
    name: "syscalls/req",
    lower_is_better: true,
    better: "fewer",
    worse: "more",
    of: syscalls_per_req,
};
/// p99 latency.
pub const P99: Metric = Metric {
    name: "p99",
    lower_is_better: true,
    better: "lower",
    worse: "higher",
    of: p99_us,
};

/// The metric's median over `cells` with its interval.
pub fn estimate(cells: &[&Cell], m: &Metric) -> Option<Estimate> {
    bootstrap_median(&cells.iter().filter_map(|c| (m.of)(c)).collect::<Vec<_>>())
}

/// `cells` over `reference` for metric `m`: paired by repeat round where at least two
/// rounds have both sides, else the ratio of medians.
pub fn ratio(cells: &[&Cell], reference: &[&Cell], m: &Metric) -> Option<Estimate> {
    let pairs: Vec<(f64, f64)> = cells
        .iter()
        .filter_map(|c| {
            let r = reference.iter().find(|r| r.repeat == c.repeat)?;
            Some(((m.of)(c)?, (m.of)(r)?))
        })
        .collect();
    if pairs.len() >= 2 {
        return ratio_paired(&pairs);
    }
    let of = |cs: &[&Cell]| cs.iter().filter_map(|c| (m.of)(c)).collect::<Vec<_>>();
    ratio_unpaired(&of(cells), &of(reference))
}

/// What a comparison of two groups of cells concludes.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A ratio with its interval and the word it earns.
    Ratio {
        /// The ratio to the reference.
        ratio: Estimate,
        /// "cheaper", "costlier", "≈ same", … .
        word: &'static str,
    },
    /// An open-loop side fell short of its target rate: its cost is not of that rate.
    Saturated,
    /// A side has no value of this metric.
    Missing,
}

impl Verdict {
    /// `0.82× [0.79–0.85] cheaper`, `1.01× [0.97–1.05] ≈ same`, `saturated`, `-`.
    pub fn text(&self) -> String {
        match self {
            Verdict::Ratio { ratio, word } => format_ratio(ratio, word),
            Verdict::Saturated => "saturated".to_string(),
            Verdict::Missing => "-".to_string(),
        }
    }
}

/// `0.82× [0.79–0.85] cheaper`; a single pair prints without an interval or a word: one
/// run cannot tell.
pub fn format_ratio(r: &Estimate, word: &str) -> String {
    if r.is_point() {
        format!("{:.2}× (1 run)", r.value)
    } else {
        format!("{:.2}× [{:.2}–{:.2}] {word}", r.value, r.lo, r.hi)
    }
}

/// The verdict word for ratio `r`: `≈ same` when its interval spans 1 (or it is one run
/// that cannot tell), else the metric's better or worse word.
pub fn word(r: &Estimate, m: &Metric) -> &'static str {
    if r.is_point() || (r.lo <= 1.0 && r.hi >= 1.0) {
        "≈ same"
    } else if (r.value < 1.0) == m.lower_is_better {
        m.better
    } else {
        m.worse
    }
}

/// Shortfall of the achieved rate below an open-loop target past which a cell is
/// `saturated`.
pub const SATURATION_SHORTFALL: f64 = 0.01;

/// Whether an open-loop cell fell more than [`SATURATION_SHORTFALL`] short of its target.
pub fn saturated(target: Option<f64>, achieved: f64) -> bool {
    target.is_some_and(|t| t > 0.0 && achieved < t * (1.0 - SATURATION_SHORTFALL))
}

/// Whether a cell fell short of its open-loop target (recomputed for files written before
/// the flag existed).
pub fn is_saturated(cell: &Cell) -> bool {
    cell.client
        .as_ref()
        .is_some_and(|c| c.saturated || saturated(c.target_rate, c.achieved_rate))
}

/// Whether the host disturbed a cell (steal or foreign work on its cores).
pub fn is_noisy(cell: &Cell) -> bool {
    cell.ledger.as_ref().is_some_and(|l| l.noisy_host)
}

/// The verdict of `cells` against `reference` on metric `m`. Saturated open-loop cells are
/// not compared as if they had kept up.
pub fn verdict(cells: &[&Cell], reference: &[&Cell], m: &Metric) -> Verdict {
    if cells.iter().chain(reference).any(|c| is_saturated(c)) {
        return Verdict::Saturated;
    }
    match ratio(cells, reference, m) {
        Some(r) => Verdict::Ratio {
            word: word(&r, m),
            ratio: r,
        },
        None => Verdict::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A standard normal draw (Box–Muller) from the seeded generator.
    fn normal(rng: &mut Rng) -> f64 {
        let (u, v) = (rng.unit().max(1e-12), rng.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    #[test]
    fn bootstrap_interval_covers_the_true_median() {
        // Exponential(1): skewed, true median ln 2.
        let mut rng = Rng::new(42);
        let v: Vec<f64> = (0..400).map(|_| -(1.0 - rng.unit()).ln()).collect();
        let e = bootstrap_median(&v).unwrap();
        let truth = std::f64::consts::LN_2;
        assert!(e.lo < truth && truth < e.hi, "{e:?}");
        assert!(
            e.hi - e.lo < 0.3,
            "interval too wide to mean anything: {e:?}"
        );
        // Over many seeded samples of 30, a 95% interval covers the truth about 95% of the
        // time; an interval that is too narrow (or broken) covers far less.
        let covered = (0..200)
            .filter(|_| {
                let v: Vec<f64> = (0..30).map(|_| 10.0 + normal(&mut rng)).collect();
                let e = bootstrap_median(&v).unwrap();
                e.lo <= 10.0 && 10.0 <= e.hi
            })
            .count();
        assert!((180..=200).contains(&covered), "covered {covered} of 200");
    }

    #[test]
    fn bootstraps_are_reproducible_and_ordered() {
        let v = [5.0, 7.0, 6.0, 9.0, 5.5];
        assert_eq!(bootstrap_median(&v), bootstrap_median(&v));
        let e = bootstrap_median(&v).unwrap();
        assert_eq!(e.value, 6.0);
        assert!(e.lo <= e.value && e.value <= e.hi && e.lo >= 5.0 && e.hi <= 9.0);
        assert_eq!(median(&[1.0, f64::NAN, 3.0]), Some(2.0));
        assert!(bootstrap_median(&[]).is_none());
    }

    #[test]
    fn ratios_and_their_words() {
        // The same values on both sides: exactly 1.00, and the interval spans 1.
        let a = [10.0, 11.0, 12.0];
        let r = ratio_unpaired(&a, &a).unwrap();
        assert_eq!(r.value, 1.0);
        assert_eq!(word(&r, &CPU_PER_REQ), "≈ same");
        // Paired rounds that share drift: each round 0.8×, however much rounds differ.
        let pairs = [(8.0, 10.0), (16.0, 20.0), (4.0, 5.0), (8.8, 11.0)];
        let r = ratio_paired(&pairs).unwrap();
        assert!(
            (r.value - 0.8).abs() < 1e-9 && (r.hi - r.lo) < 1e-9,
            "{r:?}"
        );
        assert_eq!(word(&r, &CPU_PER_REQ), "cheaper");
        assert_eq!(word(&r, &THROUGHPUT), "slower");
        let text = format_ratio(
            &Estimate {
                value: 0.82,
                lo: 0.79,
                hi: 0.85,
                n: 3,
            },
            "cheaper",
        );
        assert_eq!(text, "0.82× [0.79–0.85] cheaper");
        let one = ratio_unpaired(&[2.0], &[1.0]).unwrap();
        assert_eq!(word(&one, &CPU_PER_REQ), "≈ same", "one run cannot tell");
        assert_eq!(format_ratio(&one, "costlier"), "2.00× (1 run)");
    }
}
