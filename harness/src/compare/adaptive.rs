//! Adaptive repeats: after a shape's planned repeats, `compare` runs further rounds
//! (every backend again, interleaved, each with a fresh server) until each backend's CPU
//! per request ratio to the reference has an interval within the target half-width, or
//! the cap is reached. Shapes that stop at the cap are named in the summary and report.

use crate::analysis::stats;
use crate::results::{Cell, CellStatus, WorkloadSpec};

/// The widest relative half-width of the CPU/req ratio to `reference` among the
/// backends measured on this group and workload; `None` when nothing can be said yet
/// (no reference, fewer than two rounds, or a saturated side, which no repeat can fix).
pub fn widest_half_width(
    cells: &[Cell],
    group: &str,
    workload: &WorkloadSpec,
    backends: &[String],
    reference: &str,
) -> Option<f64> {
    let of = |b: &str| -> Vec<&Cell> {
        cells
            .iter()
            .filter(|c| {
                c.backend == b
                    && c.group == group
                    && c.workload == *workload
                    && c.status == CellStatus::Ok
                    && c.client.is_some()
            })
            .collect()
    };
    let r = of(reference);
    if r.len() < 2 || r.iter().any(|c| stats::is_saturated(c)) {
        return None;
    }
    backends
        .iter()
        .filter(|b| b.as_str() != reference)
        .filter_map(|b| {
            let cs = of(b);
            if cs.len() < 2 || cs.iter().any(|c| stats::is_saturated(c)) {
                return None;
            }
            stats::ratio(&cs, &r, &stats::CPU_PER_REQ).map(|e| e.half_width_rel())
        })
        .max_by(f64::total_cmp)
}

/// Whether another round is worth running: the widest interval is wider than `target`
/// and the cap allows it.
pub fn another_round(widest: Option<f64>, target: f64, done: u32, cap: u32) -> bool {
    done < cap && widest.is_some_and(|w| w > target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_continue_only_while_wide_and_under_the_cap() {
        assert!(another_round(Some(0.10), 0.03, 3, 6));
        assert!(!another_round(Some(0.02), 0.03, 3, 6), "converged");
        assert!(!another_round(Some(0.10), 0.03, 6, 6), "at the cap");
        assert!(!another_round(None, 0.03, 3, 6), "nothing to converge");
    }
}
