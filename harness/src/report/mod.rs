//! `harness report`: a results file as a markdown write-up (environment, one table per
//! workload group, failures, links to the charts), a self-contained HTML page with the
//! charts inline, CSV or JSON with one row per cell, or one `.hgrm` percentile
//! distribution per cell.

mod claims;
mod csv;
pub mod hgrm;
mod html;
mod markdown;
mod verdicts;

use std::fs;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::Context;

pub use csv::csv;
pub use html::html;
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
    /// One self-contained page: the write-up, every chart inline, a sortable table of
    /// every cell. Fetches nothing.
    Html,
    /// The CSV's rows as a JSON array of objects (numbers as numbers, absent as null).
    Json,
    /// One HdrHistogram percentile distribution (`.hgrm`, milliseconds, as wrk2 prints)
    /// per measured cell, into the directory given by --out.
    Hgrm,
}

/// `harness report` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Results file written by `harness compare`.
    pub results: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Markdown)]
    pub format: ReportFormat,
    /// Write to FILE instead of standard output (`-` is standard output); with
    /// `--format hgrm`, the directory for the files.
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Shorthand for `--format json --out FILE` (`-` for standard output).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["format", "out"])]
    pub json: Option<PathBuf>,
    /// Where the charts are, for the markdown links [default: `plots/` beside RESULTS, as
    /// `harness plot` writes them]. Links are relative to the report's own location.
    #[arg(long, value_name = "DIR")]
    pub plots: Option<PathBuf>,
    /// Backend the verdicts compare every other backend to.
    #[arg(long, value_name = "BACKEND", default_value = crate::analysis::stats::DEFAULT_REFERENCE)]
    pub reference: String,
}

/// `harness report`.
pub fn run(mut args: ReportArgs) -> anyhow::Result<()> {
    if let Some(json) = args.json.take() {
        args.format = ReportFormat::Json;
        args.out = Some(json);
    }
    // `-` is standard output, as for every file option of the harness.
    if args.out.as_deref() == Some(Path::new("-")) {
        args.out = None;
    }
    let results = read_results(&args.results)?;
    let text = match args.format {
        ReportFormat::Csv => csv(&results),
        ReportFormat::Html => html(&results)?,
        ReportFormat::Json => json_rows(&results)?,
        ReportFormat::Hgrm => {
            let dir = args.out.as_deref().context(
                "--format hgrm writes one file per cell: give the directory with --out DIR",
            )?;
            let paths = hgrm::write_hgrm_dir(&results, dir)?;
            if !crate::cli::quiet() {
                eprintln!("{} .hgrm files in {}", paths.len(), dir.display());
            }
            return Ok(());
        }
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

/// The CSV's rows as JSON objects in column order: numbers and booleans typed, empty
/// fields null.
fn json_rows(results: &crate::results::ResultsFile) -> anyhow::Result<String> {
    use serde_json::{Number, Value};
    let names = csv::columns();
    let mut out = String::from("[");
    for (n, row) in csv::rows(results).into_iter().enumerate() {
        out.push_str(if n == 0 { "\n  {" } else { ",\n  {" });
        for (i, (name, v)) in names.iter().zip(row).enumerate() {
            let value = match v.as_str() {
                "" => Value::Null,
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                // Names and core lists ("0 1") stay text even when they look numeric.
                _ if matches!(*name, "group" | "backend" | "server_cores" | "client_cores") => {
                    Value::String(v)
                }
                _ => match v
                    .parse::<i64>()
                    .ok()
                    .map(Number::from)
                    .or_else(|| v.parse::<f64>().ok().and_then(Number::from_f64))
                {
                    Some(num) => Value::Number(num),
                    None => Value::String(v),
                },
            };
            let sep = if i == 0 { "" } else { ", " };
            out.push_str(sep);
            out.push_str(&serde_json::to_string(name).context("encoding a column name")?);
            out.push_str(": ");
            out.push_str(&serde_json::to_string(&value).context("encoding a value")?);
        }
        out.push('}');
    }
    out.push_str(if out.len() > 1 { "\n]\n" } else { "]\n" });
    Ok(out)
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
