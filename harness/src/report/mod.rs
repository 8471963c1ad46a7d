//! `harness report`: a results file as a markdown write-up (environment, one table per
//! workload group, failures, links to the charts) or as CSV with one row per cell.

mod csv;
mod markdown;
mod verdicts;

use std::fs;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::Context;

pub use csv::csv;
pub use markdown::{markdown, markdown_with_reference, PlotLinks};

use crate::results::read_results;

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// A write-up: environment, tables per workload group, failures, chart links.
    Markdown,
    /// One row per cell, every figure, for spreadsheets and scripts.
    Csv,
    /// The terminal table `harness compare` prints at the end of a run.
    Summary,
}

/// `harness report` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Results file written by `harness compare`.
    pub results: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Markdown)]
    pub format: ReportFormat,
    /// Write to FILE instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Where the charts are, for the markdown links [default: `plots/` beside RESULTS, as
    /// `harness plot` writes them]. Links are relative to the report's own location.
    #[arg(long, value_name = "DIR")]
    pub plots: Option<PathBuf>,
    /// Backend the verdicts compare every other backend to.
    #[arg(long, value_name = "BACKEND", default_value = crate::analysis::stats::DEFAULT_REFERENCE)]
    pub reference: String,
}

/// `harness report`.
pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let results = read_results(&args.results)?;
    let text = match args.format {
        ReportFormat::Csv => csv(&results),
        ReportFormat::Summary => {
            let mut buf = Vec::new();
            crate::compare::summary::print_with_reference(&results, &args.reference, &mut buf)?;
            String::from_utf8_lossy(&buf).into_owned()
        }
        ReportFormat::Markdown => {
            let plots = args
                .plots
                .clone()
                .unwrap_or_else(|| crate::plot::default_out_dir(&args.results));
            // The report is read from where it is written (or, on stdout, from beside the
            // results file), so its links start there.
            let from = match &args.out {
                Some(f) => parent_dir(f),
                None => parent_dir(&args.results),
            };
            let links = PlotLinks::detect(&relative_path(&plots, &from)?, &plots, &results);
            markdown_with_reference(&results, &links, &args.reference)
        }
    };
    match &args.out {
        Some(path) => fs::write(path, text).with_context(|| {
            format!(
                "writing the report to {} (choose another file with --out, or omit it for \
                 standard output)",
                path.display()
            )
        })?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|_| out.flush())
                .context("writing the report to standard output")?;
        }
    }
    Ok(())
}

fn parent_dir(p: &Path) -> PathBuf {
    p.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `target` as seen from directory `from`, both taken from the current directory when
/// relative; lexical (".." is resolved by name, links are not followed).
fn relative_path(target: &Path, from: &Path) -> anyhow::Result<PathBuf> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let abs = |p: &Path| -> Vec<String> {
        let full = if p.is_absolute() {
            p.to_path_buf()
        } else {
            cwd.join(p)
        };
        let mut parts: Vec<String> = Vec::new();
        for c in full.components() {
            match c {
                Component::ParentDir => {
                    parts.pop();
                }
                Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
                _ => {}
            }
        }
        parts
    };
    let (t, f) = (abs(target), abs(from));
    let common = t.iter().zip(&f).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..f.len() {
        rel.push("..");
    }
    for part in &t[common..] {
        rel.push(part);
    }
    if rel.as_os_str().is_empty() {
        rel.push(".");
    }
    Ok(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        let r = relative_path(Path::new("results/plots"), Path::new("results")).unwrap();
        assert_eq!(r, PathBuf::from("plots"));
        let r = relative_path(Path::new("plots"), Path::new("results")).unwrap();
        assert_eq!(r, PathBuf::from("../plots"));
        let r = relative_path(Path::new("/a/b/c"), Path::new("/a/d")).unwrap();
        assert_eq!(r, PathBuf::from("../b/c"));
        let r = relative_path(Path::new("x"), Path::new("x")).unwrap();
        assert_eq!(r, PathBuf::from("."));
    }
}
