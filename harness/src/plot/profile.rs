//! The profile chart: server CPU per request by category, one stacked bar per backend
//! (`harness profile`). Categories keep one colour each, in the category table's order, with
//! the network stack in blues, io_uring in oranges, user space in reds.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::font::{self, FAMILY};

/// What the chart shows: categories (bottom of the stack first) by backend.
#[derive(Debug, Clone)]
pub struct StackedCategories {
    /// Title.
    pub title: String,
    /// Subtitle: how it was measured.
    pub subtitle: String,
    /// Category labels, bottom of the stack first.
    pub categories: Vec<String>,
    /// Per backend, µs per request of each category (same order as `categories`).
    pub backends: Vec<(String, Vec<f64>)>,
}

const INK: RGBColor = RGBColor(0x22, 0x22, 0x22);
const MUTED: RGBColor = RGBColor(0x55, 0x55, 0x55);

/// Category colours in table order (categories.toml), the last one for "unmatched".
const PALETTE: &[RGBColor] = &[
    RGBColor(0x8E, 0x6C, 0xC8), // copies
    RGBColor(0x9C, 0x75, 0x5F), // memory allocation
    RGBColor(0x1F, 0x4E, 0x9A), // TCP/IP transmit
    RGBColor(0x6A, 0xA6, 0xDA), // TCP/IP receive and softirq
    RGBColor(0x2C, 0xA0, 0x6E), // epoll
    RGBColor(0xD5, 0x5E, 0x00), // io_uring submission
    RGBColor(0xF2, 0xA6, 0x4B), // io_uring completion
    RGBColor(0xE8, 0xC5, 0x3A), // scheduler
    RGBColor(0x7F, 0x7F, 0x7F), // syscall entry and exit
    RGBColor(0xC2, 0x1E, 0x56), // user: session
    RGBColor(0xE6, 0x6F, 0x8C), // user: backend loop
    RGBColor(0xF3, 0xB5, 0xC4), // user: runtime
    RGBColor(0x4D, 0xB6, 0xAC),
    RGBColor(0x55, 0x6B, 0x2F),
];
const UNMATCHED_COLOR: RGBColor = RGBColor(0xD0, 0xD0, 0xD0);

fn color(i: usize, n: usize) -> RGBColor {
    if i + 1 == n {
        UNMATCHED_COLOR
    } else {
        PALETTE[i % PALETTE.len()]
    }
}

const W: u32 = 1280;
const H: u32 = 800;

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn font_of(size: f64, c: RGBColor) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&c)
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &StackedCategories,
    footer: &str,
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let (header, rest) = root.split_vertically(78);
    let (body, foot) = rest.split_vertically(H - 78 - 34);
    let (plot, legend) = body.split_horizontally(W - 330);
    header.draw(&Text::new(
        chart.title.clone(),
        (18, 12),
        font_of(24.0, INK),
    ))?;
    header.draw(&Text::new(
        chart.subtitle.clone(),
        (18, 48),
        font_of(14.0, MUTED),
    ))?;
    foot.draw(&Text::new(
        footer.to_string(),
        (18, 8),
        font_of(12.0, MUTED),
    ))?;

    let totals: Vec<f64> = chart
        .backends
        .iter()
        .map(|(_, v)| v.iter().filter(|x| x.is_finite()).sum())
        .collect();
    let top = totals.iter().copied().fold(0.0, f64::max).max(1e-3) * 1.12;
    let n = chart.backends.len().max(1);
    let mut c = ChartBuilder::on(&plot)
        .margin(18)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5..n as f64 - 0.5, 0.0..top)?;
    c.configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_desc("server CPU per request (µs)")
        .label_style(font_of(14.0, INK))
        .axis_desc_style(font_of(15.0, INK))
        .light_line_style(BLACK.mix(0.05))
        .bold_line_style(BLACK.mix(0.12))
        .draw()?;
    let k = chart.categories.len();
    for (i, (name, values)) in chart.backends.iter().enumerate() {
        let (x0, x1) = (i as f64 - 0.32, i as f64 + 0.32);
        let mut base = 0.0;
        for (j, v) in values.iter().enumerate() {
            if !(v.is_finite() && *v > 0.0) {
                continue;
            }
            c.draw_series(std::iter::once(Rectangle::new(
                [(x0, base), (x1, base + v)],
                color(j, k).filled(),
            )))?;
            c.draw_series(std::iter::once(Rectangle::new(
                [(x0, base), (x1, base + v)],
                WHITE.stroke_width(1),
            )))?;
            base += v;
        }
        let (cx, cy) = c.backend_coord(&(i as f64, totals[i]));
        root.draw(&Text::new(
            format!("{:.2}", totals[i]),
            (cx, cy - 6),
            font_of(14.0, INK).pos(Pos::new(HPos::Center, VPos::Bottom)),
        ))?;
        let (lx, ly) = c.backend_coord(&(i as f64, 0.0));
        root.draw(&Text::new(
            name.clone(),
            (lx, ly + 8),
            font_of(15.0, INK).pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
    }
    // Legend: top of the stack first, as the bars read.
    let mut y = 24;
    for j in (0..k).rev() {
        legend.draw(&Rectangle::new(
            [(10, y), (30, y + 14)],
            color(j, k).filled(),
        ))?;
        legend.draw(&Text::new(
            chart.categories[j].clone(),
            (40, y),
            font_of(13.5, INK),
        ))?;
        y += 26;
    }
    Ok(())
}

/// The chart as SVG.
pub fn svg(chart: &StackedCategories, footer: &str) -> anyhow::Result<Vec<u8>> {
    font::ensure_registered()?;
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, (W, H)).into_drawing_area();
        draw(&root, chart, footer)
            .map_err(|e| anyhow::anyhow!("drawing the profile chart: {e}"))?;
        root.present()
            .map_err(|e| anyhow::anyhow!("finishing the profile chart: {e}"))?;
    }
    Ok(s.into_bytes())
}

/// The chart as PNG.
pub fn png(chart: &StackedCategories, footer: &str) -> anyhow::Result<Vec<u8>> {
    font::ensure_registered()?;
    let mut rgb = vec![0u8; W as usize * H as usize * 3];
    {
        let face = font::face()?;
        let root = super::text::CrispText::new(BitMapBackend::with_buffer(&mut rgb, (W, H)), face)
            .into_drawing_area();
        draw(&root, chart, footer)
            .map_err(|e| anyhow::anyhow!("drawing the profile chart: {e}"))?;
        root.present()
            .map_err(|e| anyhow::anyhow!("finishing the profile chart: {e}"))?;
    }
    super::encode_png(&rgb, W, H, "profile-categories")
}
