//! The `.hgrm` export: HdrHistogram's percentile distribution text, as wrk2 prints it and
//! HdrHistogram's plotter reads it. Values are in milliseconds, as in wrk2's output, so
//! ringside's files plot beside wrk2's.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use hdrhistogram::Histogram;

use crate::analysis::{decode_histogram, is_ok, Index, Shape};
use crate::plot::common::{cores_slug, shape_slug};
use crate::results::ResultsFile;

/// Ticks per half distance to 100%: the resolution HdrHistogram and wrk2 print with.
const TICKS_PER_HALF: u32 = 5;

/// `h` as a percentile distribution; `per_ms` is how many of the histogram's units make a
/// millisecond (1000 for µs, 1,000,000 for ns).
pub fn percentile_distribution(h: &Histogram<u64>, per_ms: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(TICKS_PER_HALF) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / per_ms;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:>12.3} {q:>2.12} {total:>10} {:>14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{value:>12.3} {q:>2.12} {total:>10}");
            }
        }
    }
    let (mean, stdev, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (
            h.mean() / per_ms,
            h.stdev() / per_ms,
            h.max() as f64 / per_ms,
        )
    };
    let sub_buckets = (2 * 10u64.pow(u32::from(h.sigfig()))).next_power_of_two();
    let _ = writeln!(
        out,
        "#[Mean    = {mean:>12.3}, StdDeviation   = {stdev:>12.3}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {max:>12.3}, Total count    = {:>12}]",
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {sub_buckets:>12}]",
        h.buckets()
    );
    out
}

/// One `.hgrm` file to write.
#[derive(Debug, Clone)]
pub struct HgrmFile {
    /// File name, unique within the results: "echo-64B-d1-c64-epoll-et-1.hgrm".
    pub name: String,
    /// The file's text.
    pub text: String,
}

/// One `.hgrm` per measured cell with a histogram (and a `-uncorrected` one beside it
/// under open loop), named by workload shape, backend and repeat.
pub fn hgrm_files(results: &ResultsFile) -> anyhow::Result<Vec<HgrmFile>> {
    let index = Index::new(results);
    let mut files = Vec::new();
    let mut seen = BTreeSet::new();
    for cell in results.cells.iter().filter(|c| is_ok(c)) {
        let Some(client) = &cell.client else { continue };
        let shape = Shape::of(cell);
        let mut stem = shape_slug(&shape, true);
        if shape.idle > 0 {
            stem.push_str(&format!("-idle{}", shape.idle));
        }
        if let Some(r) = shape.rate() {
            stem.push_str(&format!("-r{}", r.round() as u64));
        }
        stem.push_str(&cores_slug(&index, &shape));
        stem.push_str(&format!("-{}-{}", cell.backend, cell.repeat));
        // Two groups may run one shape: the group then tells them apart.
        if !seen.insert(stem.clone()) {
            stem = format!("{}-{stem}", cell.group);
            seen.insert(stem.clone());
        }
        for (suffix, encoded) in [
            ("", client.histogram.as_deref()),
            ("-uncorrected", client.histogram_uncorrected.as_deref()),
        ] {
            let Some(encoded) = encoded else { continue };
            let h = decode_histogram(encoded).with_context(|| {
                format!(
                    "{} {} repeat {}: reading its latency histogram",
                    cell.backend, cell.group, cell.repeat
                )
            })?;
            files.push(HgrmFile {
                name: format!("{stem}{suffix}.hgrm"),
                text: percentile_distribution(&h, 1000.0),
            });
        }
    }
    Ok(files)
}

/// Writes every cell's `.hgrm` into `dir` (created if missing); returns the paths.
pub fn write_hgrm_dir(results: &ResultsFile, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let files = hgrm_files(results)?;
    fs::create_dir_all(dir).with_context(|| {
        format!(
            "creating {} for the .hgrm files (choose another with --out DIR)",
            dir.display()
        )
    })?;
    let mut paths = Vec::new();
    for f in files {
        let path = dir.join(&f.name);
        fs::write(&path, f.text).with_context(|| {
            format!(
                "writing {} (choose another directory with --out DIR)",
                path.display()
            )
        })?;
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_ends_at_the_max_with_every_count() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap();
        for v in 1..=1000u64 {
            h.record(v * 10).unwrap();
        }
        let text = percentile_distribution(&h, 1000.0);
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert!(rows.len() > 20, "{text}");
        let last = rows.last().unwrap();
        assert_eq!(last.len(), 3, "the 100% row has no 1/(1-p): {last:?}");
        assert_eq!(last[1], "1.000000000000");
        assert_eq!(last[2], "1000");
        // 10 ms recorded as 10,000 µs.
        assert!((last[0].parse::<f64>().unwrap() - 10.0).abs() < 0.02);
        let mut prev = 0.0;
        for r in &rows {
            let q: f64 = r[1].parse().unwrap();
            assert!(q >= prev);
            prev = q;
        }
        assert!(text.contains("#[Max     =       10.007, Total count    =         1000]"));
        assert!(text.contains("SubBuckets     =         2048]"));
    }
}
