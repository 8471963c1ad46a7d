//! A libc copy slowdown that would rank backends by heap-address luck.
//!
//! On some CPUs with fast `rep movsb` (AMD Zen 3 and later seen here: "AMD EPYC" with
//! `erms` and `fsrm`, glibc 2.36), glibc's `memcpy` uses `rep movsb` for copies of a few
//! KiB and up, and `rep movsb` runs about 30 times slower when the destination lies just
//! above the source modulo the page size: `(dst - src) mod 4096` in 1..=31 (sourceware
//! bug 30994, Launchpad bug 2030515). Measured on the reference VM for a 16 KiB copy:
//! 2.2–2.9 GB/s at those distances, 54–94 GB/s at every other one.
//!
//! A backend's echo copies each read from its read buffer into an output buffer. Whether
//! those two allocations land at an unlucky distance is an accident of its allocation
//! order. In the reference run before this check, epoll-et spent 99 µs of user CPU per
//! 256 KiB stream message where uring spent 16, and tokio 97 where tokio-tpc, the same
//! code in another layout, spent 6: the comparison measured malloc's layout, not the I/O
//! strategy.
//!
//! [`probe`] measures the slowdown on this machine. When it is present, `harness compare`
//! starts its servers with [`TUNABLE`] raised (glibc then copies with vector loops, at full
//! speed at any distance) and records that in the manifest; `harness doctor` reports it
//! with the same setting for programs it does not start, and `harness serve` started
//! without it warns on stderr.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// The glibc tunable that decides from what size `memcpy` uses `rep movsb`.
pub const TUNABLE: &str = "glibc.cpu.x86_rep_movsb_threshold";
/// The value [`TUNABLE`] is raised to: above any copy a server makes.
pub const TUNABLE_VALUE: u64 = 2_147_483_647;
/// Slowdown from which the distance matters enough to distort a comparison.
pub const SIGNIFICANT: f64 = 3.0;

/// How fast this process copies at a distance that triggers the slowdown and at one that
/// does not.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    /// GB/s copying 16 KiB to 16 bytes above the source modulo 4096.
    pub near_gbps: f64,
    /// GB/s copying 16 KiB to 256 bytes above the source modulo 4096.
    pub far_gbps: f64,
}

impl Probe {
    /// How many times slower the near distance copies.
    pub fn slowdown(&self) -> f64 {
        self.far_gbps / self.near_gbps.max(1e-9)
    }

    /// True when the slowdown is large enough to distort a comparison.
    pub fn significant(&self) -> bool {
        self.slowdown() >= SIGNIFICANT
    }
}

/// Measures [`Probe`] in this process (about 30 ms).
pub fn probe() -> Probe {
    const LEN: usize = 16 << 10;
    const PAGE: usize = 4096;
    // One allocation holds a page-aligned source and both destinations, so the distances
    // are exact whatever the allocator does.
    let mut arena = vec![1u8; 4 * LEN + 2 * PAGE];
    let base = arena.as_ptr().align_offset(PAGE);
    let src = base;
    let time = |arena: &mut Vec<u8>, distance: usize| -> f64 {
        let dst = src + 2 * LEN + distance;
        let (head, tail) = arena.split_at_mut(dst);
        let (from, to) = (&head[src..src + LEN], &mut tail[..LEN]);
        let mut best = Duration::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            for _ in 0..200 {
                to.copy_from_slice(black_box(from));
                black_box(&mut *to);
            }
            best = best.min(t.elapsed());
        }
        (200 * LEN) as f64 / best.as_secs_f64().max(1e-9) / 1e9
    };
    Probe {
        near_gbps: time(&mut arena, 16),
        far_gbps: time(&mut arena, 256),
    }
}

/// The `GLIBC_TUNABLES` value that raises [`TUNABLE`], keeping whatever `current` sets;
/// `None` when `current` already sets [`TUNABLE`] (the user's choice stands).
pub fn tunables_with_fix(current: Option<&str>) -> Option<String> {
    let fix = format!("{TUNABLE}={TUNABLE_VALUE}");
    match current.map(str::trim).filter(|c| !c.is_empty()) {
        None => Some(fix),
        Some(c) if c.split(':').any(|kv| kv.split('=').next() == Some(TUNABLE)) => None,
        Some(c) => Some(format!("{c}:{fix}")),
    }
}

/// A warning for a server about to start in an environment that leaves the slowdown in
/// place; `None` without probing when GLIBC_TUNABLES already sets [`TUNABLE`] (as
/// `harness compare` does for its servers), or when the probe finds no slowdown.
pub fn unfixed_warning() -> Option<String> {
    let current = std::env::var("GLIBC_TUNABLES").ok();
    tunables_with_fix(current.as_deref())?;
    let p = probe();
    p.significant().then(|| {
        format!(
            "this machine's memcpy is {:.0}x slower when the destination lies 1-31 bytes above \
             the source modulo 4096 (glibc rep movsb); copies of 2 KiB and more (large echo \
             messages, streams) then cost what the buffers' placement decides. To avoid it: {}",
            p.slowdown(),
            export_line()
        )
    })
}

/// The shell line that applies the fix to programs started by hand.
pub fn export_line() -> String {
    format!("export GLIBC_TUNABLES={TUNABLE}={TUNABLE_VALUE}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunables_are_merged_not_overwritten() {
        assert_eq!(
            tunables_with_fix(None).unwrap(),
            format!("{TUNABLE}={TUNABLE_VALUE}")
        );
        assert_eq!(
            tunables_with_fix(Some("glibc.malloc.arena_max=2")).unwrap(),
            format!("glibc.malloc.arena_max=2:{TUNABLE}={TUNABLE_VALUE}")
        );
        assert_eq!(
            tunables_with_fix(Some(&format!("glibc.malloc.arena_max=2:{TUNABLE}=4096"))),
            None,
            "a threshold the user chose is kept"
        );
        assert!(tunables_with_fix(Some("  ")).is_some());
    }

    #[test]
    fn probe_measures_both_distances() {
        let p = probe();
        assert!(p.near_gbps > 0.0 && p.far_gbps > 0.0, "{p:?}");
        assert!(p.slowdown().is_finite());
    }
}
