//! `harness plot`: every chart a results file can support, as SVG and/or PNG.
//!
//! Results become [`Figure`]s (one builder per chart kind: `throughput`, `latency`,
//! `cost`, `idle`, `churn`), and `draw` renders any figure on any plotters backend. A
//! chart is made only when the results hold its data; failed and unsupported cells are
//! left out of every chart (and named in its notes), never drawn as zero. Each backend
//! keeps one colour and marker everywhere (`style`), and the text is set in an embedded
//! font (`font`), so a headless box renders the same images as a desktop.

pub(crate) mod axis;
mod churn;
pub(crate) mod common;
mod cost;
mod draw;
mod figure;
mod font;
mod idle;
mod ladder;
mod latency;
mod offered_load;
pub mod profile;
pub mod style;
mod text;
mod throughput;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context};
use plotters::prelude::*;

pub use figure::{ChartKind, Figure};

use crate::results::{read_results, ResultsFile};

/// Image formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Format {
    /// Scalable vector graphics: crisp in a browser or a paper.
    Svg,
    /// Portable network graphics at `--size`.
    Png,
}

impl Format {
    /// File extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Svg => "svg",
            Format::Png => "png",
        }
    }
}

/// `harness plot` options.
#[derive(Debug, Clone, clap::Args)]
pub struct PlotArgs {
    /// Results file written by `harness compare`.
    pub results: PathBuf,
    /// Directory for the charts [default: a `plots/` directory beside RESULTS, e.g.
    /// results/plots/ for results/run.json]. Existing charts of the same name are replaced.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Image formats, comma separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "svg,png")]
    pub format: Vec<Format>,
    /// Image size in pixels, WIDTHxHEIGHT (PNG pixels; the SVG's nominal size).
    #[arg(long, default_value = "1280x800", value_parser = parse_size)]
    pub size: (u32, u32),
    /// Only these backends, comma separated (e.g. epoll-et,uring-multishot): fewer
    /// curves per latency spectrum, one comparison per chart.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub backends: Option<Vec<String>>,
}

/// Keeps only the cells of `wanted` backends; every name must be in the results.
pub fn filter_backends(results: &mut ResultsFile, wanted: &[String]) -> anyhow::Result<()> {
    let present: Vec<&str> = {
        let mut v: Vec<&str> = Vec::new();
        for c in &results.cells {
            if !v.contains(&c.backend.as_str()) {
                v.push(&c.backend);
            }
        }
        v
    };
    for w in wanted {
        if !present.contains(&w.as_str()) {
            bail!(
                "--backends: `{w}` has no cells in this results file; it has {}",
                present.join(", ")
            );
        }
    }
    results.cells.retain(|c| wanted.contains(&c.backend));
    results.plan.backends.retain(|b| wanted.contains(b));
    Ok(())
}

/// Parses "1280x800".
fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("`{s}` is not WIDTHxHEIGHT, e.g. 1280x800"))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<u32>()
            .map_err(|_| format!("`{s}` is not WIDTHxHEIGHT, e.g. 1280x800"))
    };
    let (w, h) = (parse(w)?, parse(h)?);
    if !(320..=8000).contains(&w) || !(200..=8000).contains(&h) {
        return Err(format!(
            "{w}x{h} is outside 320x200 … 8000x8000; pick a size in that range"
        ));
    }
    Ok((w, h))
}

/// How to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    /// One file per format per chart.
    pub formats: Vec<Format>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            formats: vec![Format::Svg, Format::Png],
            width: 1280,
            height: 800,
        }
    }
}

/// One chart written.
#[derive(Debug, Clone)]
pub struct RenderedChart {
    /// File stem.
    pub name: String,
    /// Chart kind.
    pub kind: ChartKind,
    /// Title drawn on the chart.
    pub title: String,
    /// Backends it shows, in legend order.
    pub backends: Vec<String>,
    /// Files written, one per format.
    pub files: Vec<PathBuf>,
}

/// What a render produced.
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    /// Charts, in plan order.
    pub charts: Vec<RenderedChart>,
    /// Data left out, e.g. a histogram that did not decode.
    pub warnings: Vec<String>,
}

/// The default chart directory for a results file: `plots/` beside it.
pub fn default_out_dir(results_path: &Path) -> PathBuf {
    results_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("plots")
}

/// Every chart the results support, in the order of [`ChartKind::ALL`], with warnings about
/// data that had to be left out.
pub fn plan(results: &ResultsFile) -> (Vec<Figure>, Vec<String>) {
    let index = crate::analysis::Index::new(results);
    let mut warnings = Vec::new();
    let mut figs = Vec::new();
    figs.extend(throughput::vs_connections(&index));
    figs.extend(latency::spectra(&index, &mut warnings));
    figs.extend(latency::vs_load(&index));
    figs.extend(offered_load::cost_vs_load(&index));
    figs.extend(cost::cpu(&index));
    figs.extend(cost::syscalls_and_switches(&index));
    figs.extend(throughput::vs_cores(&index));
    figs.extend(idle::idle_effect(&index));
    figs.extend(churn::churn(&index));
    figs.extend(ladder::ladder(&index));
    // Names are unique by construction; keep the first should two ever collide.
    let mut seen = std::collections::HashSet::new();
    figs.retain(|f| seen.insert(f.name.clone()));
    let externals: Vec<String> = results
        .plan
        .externals
        .iter()
        .map(|e| e.name.clone())
        .chain(
            results
                .cells
                .iter()
                .filter(|c| c.external)
                .map(|c| c.backend.clone()),
        )
        .collect();
    for f in &mut figs {
        f.externals = f
            .backends
            .iter()
            .filter(|b| externals.contains(b))
            .cloned()
            .collect();
    }
    (figs, warnings)
}

/// Renders every chart of `results` into `out_dir` in each of `formats` at the default
/// size, and returns the files written. This is what `harness compare` calls at the end
/// of a run.
pub fn render_all(
    results: &ResultsFile,
    out_dir: &Path,
    formats: &[Format],
) -> anyhow::Result<Vec<PathBuf>> {
    let opts = RenderOptions {
        formats: formats.to_vec(),
        ..RenderOptions::default()
    };
    let rendered = render(results, out_dir, &opts)?;
    for w in &rendered.warnings {
        eprintln!("warning: {w}");
    }
    Ok(rendered.charts.into_iter().flat_map(|c| c.files).collect())
}

/// Renders every chart of `results` into `out_dir`.
pub fn render(
    results: &ResultsFile,
    out_dir: &Path,
    opts: &RenderOptions,
) -> anyhow::Result<Rendered> {
    font::ensure_registered()?;
    let (figs, warnings) = plan(results);
    let mut formats: Vec<Format> = Vec::new();
    for f in &opts.formats {
        if !formats.contains(f) {
            formats.push(*f);
        }
    }
    if formats.is_empty() {
        bail!("no image format chosen: pass --format svg, png or svg,png");
    }
    fs::create_dir_all(out_dir).with_context(|| {
        format!(
            "creating the plot directory {} (choose another with --out)",
            out_dir.display()
        )
    })?;
    let footer = footer(results);

    // Charts are independent: spread them over the cores.
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<anyhow::Result<Vec<PathBuf>>>>> =
        Mutex::new((0..figs.len()).map(|_| None).collect());
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(figs.len().max(1))
        .min(8);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(fig) = figs.get(i) else { break };
                // A drawing bug must not take `harness compare` down with it.
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    render_one(fig, &footer, out_dir, &formats, opts)
                }))
                .unwrap_or_else(|_| {
                    Err(anyhow!(
                        "drawing chart {} panicked (a bug in harness plot; the results file \
                         is intact)",
                        fig.name
                    ))
                });
                if let Ok(mut d) = done.lock() {
                    d[i] = Some(r);
                }
            });
        }
    });
    let done = done
        .into_inner()
        .map_err(|_| anyhow!("a chart renderer panicked"))?;
    let mut charts = Vec::new();
    for (fig, r) in figs.iter().zip(done) {
        let files = r.ok_or_else(|| anyhow!("chart {} was not rendered", fig.name))??;
        charts.push(RenderedChart {
            name: fig.name.clone(),
            kind: fig.kind,
            title: fig.title.clone(),
            backends: fig.backends.clone(),
            files,
        });
    }
    Ok(Rendered { charts, warnings })
}

fn render_one(
    fig: &Figure,
    footer: &str,
    out_dir: &Path,
    formats: &[Format],
    opts: &RenderOptions,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for &format in formats {
        let path = out_dir.join(format!("{}.{}", fig.name, format.extension()));
        let bytes = match format {
            Format::Svg => svg_bytes(fig, footer, opts.width, opts.height)?,
            Format::Png => png_bytes(fig, footer, opts.width, opts.height)?,
        };
        fs::write(&path, bytes).with_context(|| {
            format!(
                "writing {} (is the disk full or the directory read-only? choose another \
                 with --out)",
                path.display()
            )
        })?;
        files.push(path);
    }
    Ok(files)
}

/// `fig` as an SVG document.
pub fn svg_bytes(fig: &Figure, footer: &str, w: u32, h: u32) -> anyhow::Result<Vec<u8>> {
    font::ensure_registered()?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        draw::draw_figure(&root, fig, footer)
            .map_err(|e| anyhow!("drawing {} as SVG: {e}", fig.name))?;
        root.present()
            .map_err(|e| anyhow!("finishing {}.svg: {e}", fig.name))?;
    }
    Ok(svg.into_bytes())
}

/// `fig` as a PNG image.
pub fn png_bytes(fig: &Figure, footer: &str, w: u32, h: u32) -> anyhow::Result<Vec<u8>> {
    font::ensure_registered()?;
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let face = font::face()?;
        let root = text::CrispText::new(BitMapBackend::with_buffer(&mut rgb, (w, h)), face)
            .into_drawing_area();
        draw::draw_figure(&root, fig, footer)
            .map_err(|e| anyhow!("drawing {} as PNG: {e}", fig.name))?;
        root.present()
            .map_err(|e| anyhow!("finishing {}.png: {e}", fig.name))?;
    }
    encode_png(&rgb, w, h, &fig.name)
}

/// Encodes an RGB buffer of `w`×`h` pixels as PNG; `name` is for the error.
pub(crate) fn encode_png(rgb: &[u8], w: u32, h: u32, name: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(rgb.len() / 8);
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Fast);
    let mut writer = enc
        .write_header()
        .with_context(|| format!("encoding {name}.png"))?;
    writer
        .write_image_data(rgb)
        .with_context(|| format!("encoding {name}.png"))?;
    writer
        .finish()
        .with_context(|| format!("encoding {name}.png"))?;
    Ok(out)
}

/// The machine line every chart carries: host, kernel, CPU, cores, date, commit.
pub fn footer(results: &ResultsFile) -> String {
    let m = &results.manifest;
    let mut parts = Vec::new();
    if !m.hostname.is_empty() {
        parts.push(m.hostname.clone());
    }
    if !m.kernel.is_empty() {
        parts.push(format!("Linux {}", m.kernel));
    }
    if !m.cpu_model.is_empty() {
        parts.push(m.cpu_model.clone());
    }
    parts.push(format!(
        "{} online cores (server {}, client {})",
        m.online_cores,
        fmt_cores(&m.server_cores),
        fmt_cores(&m.client_cores)
    ));
    let date = results.started_at.get(..10).unwrap_or(&results.started_at);
    if !date.is_empty() {
        parts.push(date.to_string());
    }
    if let Some(c) = &m.git_commit {
        let short: String = c.chars().take(12).collect();
        let dirty = if c.ends_with("-dirty") && !short.ends_with("-dirty") {
            "-dirty"
        } else {
            ""
        };
        parts.push(format!("git {short}{dirty}"));
    }
    parts.push(format!("{}, suite {}", results.tool, results.plan.suite));
    parts.join(" · ")
}

pub(crate) use crate::analysis::fmt_cores;

/// `harness plot`.
pub fn run(args: PlotArgs) -> anyhow::Result<()> {
    let mut results = read_results(&args.results)?;
    if let Some(list) = &args.backends {
        let list: Vec<String> = list.iter().map(|b| b.trim().to_string()).collect();
        filter_backends(&mut results, &list)?;
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out_dir(&args.results));
    let opts = RenderOptions {
        formats: args.format.clone(),
        width: args.size.0,
        height: args.size.1,
    };
    let started = std::time::Instant::now();
    let rendered = render(&results, &out, &opts)?;
    for w in &rendered.warnings {
        eprintln!("warning: {w}");
    }
    let files: Vec<&PathBuf> = rendered.charts.iter().flat_map(|c| &c.files).collect();
    if !crate::cli::quiet() {
        for f in &files {
            println!("{}", f.display());
        }
    }
    if rendered.charts.is_empty() {
        eprintln!(
            "no charts: {} has no measured cells (failed or unsupported cells are never drawn)",
            args.results.display()
        );
    } else if !crate::cli::quiet() {
        eprintln!(
            "{} charts, {} files in {} ({:.2} s)",
            rendered.charts.len(),
            files.len(),
            out.display(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_are_bounded() {
        assert_eq!(parse_size("1280x800"), Ok((1280, 800)));
        assert_eq!(parse_size("640X400"), Ok((640, 400)));
        assert!(parse_size("1280").is_err());
        assert!(parse_size("10x10").is_err());
        assert!(parse_size("axb").is_err());
    }

    #[test]
    fn core_lists_compress() {
        assert_eq!(fmt_cores(&[0, 1, 2, 3, 8]), "0-3,8");
        assert_eq!(fmt_cores(&[1]), "1");
        assert_eq!(fmt_cores(&[]), "none");
    }

    #[test]
    fn default_dir_is_beside_the_results() {
        assert_eq!(
            default_out_dir(Path::new("results/run.json")),
            PathBuf::from("results/plots")
        );
        assert_eq!(
            default_out_dir(Path::new("run.json")),
            PathBuf::from("./plots")
        );
    }
}
