//! CPU lists as users write them (`0,2-4`), checked against what this process may use.

use anyhow::{bail, Context};

/// Highest CPU number Linux can have (NR_CPUS is at most 8192).
pub const MAX_CORE: usize = 8191;

/// Parses a CPU list like `0`, `0,2`, `1-3` or `0-1,4`. Duplicates are an error: a core
/// given twice would run two shards (or client threads) on one CPU and skew the numbers.
pub fn parse_core_list(s: &str) -> anyhow::Result<Vec<usize>> {
    let mut cores = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (parse_one(a, s)?, parse_one(b, s)?),
            None => {
                let c = parse_one(part, s)?;
                (c, c)
            }
        };
        if lo > hi {
            bail!("core range '{part}' in '{s}' runs backwards; write it as {hi}-{lo}");
        }
        for c in lo..=hi {
            if !seen.insert(c) {
                bail!("core {c} appears twice in '{s}'; list each core once");
            }
            cores.push(c);
        }
    }
    if cores.is_empty() {
        bail!("empty core list '{s}'; give cores like 0 or 0,2-3");
    }
    Ok(cores)
}

/// Checks that every core in `cores` (given with `flag`) is one this process may run on.
pub fn check_usable(flag: &str, cores: &[usize], usable: &[usize]) -> anyhow::Result<()> {
    if let Some(c) = cores.iter().find(|c| !usable.contains(c)) {
        bail!(
            "{flag}: core {c} is not usable by this process; usable cores: {}",
            format_core_list(usable)
        );
    }
    Ok(())
}

fn parse_one(n: &str, whole: &str) -> anyhow::Result<usize> {
    let c: usize = n.trim().parse().with_context(|| {
        format!("'{n}' in core list '{whole}' is not a core number; give cores like 0 or 0,2-3")
    })?;
    if c > MAX_CORE {
        bail!(
            "core {c} does not exist: '{whole}' goes past the highest CPU number Linux has \
             ({MAX_CORE})"
        );
    }
    Ok(c)
}

/// The affinity mask of `cores`, built before a fork so the child only installs it.
pub fn cpu_set(cores: &[usize]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain bits, valid all-zero; CPU_ZERO and CPU_SET write inside
    // the set they are given, and CPU_SET ignores a core beyond the set's size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &c in cores {
            libc::CPU_SET(c, &mut set);
        }
        set
    }
}

/// Restricts the calling thread (and the threads and children it creates from now on) to
/// `cores`.
pub fn pin_current_thread(cores: &[usize]) -> anyhow::Result<()> {
    let set = cpu_set(cores);
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } == -1 {
        bail!(
            "pinning to cores {} failed: {}; check they are online and allowed (taskset -p $$)",
            format_core_list(cores),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Formats a core list compactly (`0-3,6`).
pub fn format_core_list(cores: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cores.len() {
        let mut j = i;
        while j + 1 < cores.len() && cores[j + 1] == cores[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            cores[i].to_string()
        } else {
            format!("{}-{}", cores[i], cores[j])
        });
        i = j + 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_ranges() {
        assert_eq!(parse_core_list("0").unwrap(), vec![0]);
        assert_eq!(parse_core_list("0-1,4").unwrap(), vec![0, 1, 4]);
        assert_eq!(format_core_list(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
    }

    #[test]
    fn rejects_bad_lists_with_the_fix() {
        for (bad, want) in [
            ("1,1", "appears twice"),
            ("3-1", "runs backwards"),
            ("x", "not a core number"),
            ("", "empty core list"),
            ("0-4000000000", "past the highest CPU number"),
            ("18446744073709551616", "not a core number"),
        ] {
            let e = parse_core_list(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn the_widest_list_parses_at_once() {
        // Every CPU Linux can have, and a duplicate found at the far end of it.
        let all = format!("0-{MAX_CORE}");
        assert_eq!(parse_core_list(&all).unwrap().len(), MAX_CORE + 1);
        let e = parse_core_list(&format!("{all},{MAX_CORE}")).unwrap_err();
        assert!(e.to_string().contains("appears twice"), "{e}");
    }

    #[test]
    fn unusable_cores_are_named_with_the_usable_ones() {
        assert!(check_usable("--cores", &[0, 1], &[0, 1, 2]).is_ok());
        let e = check_usable("--cores", &[1, 7], &[0, 1, 2])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--cores: core 7") && e.contains("usable cores: 0-2"),
            "{e}"
        );
    }
}
