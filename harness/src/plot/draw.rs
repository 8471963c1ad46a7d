//! Draws a [`Figure`] on any plotters backend (SVG string, RGB buffer).
//!
//! Layout, top to bottom: title and subtitle; the panels side by side with the legend in a
//! column on the right; a footer with the machine. Sizes scale with the image so a small
//! PNG stays legible.

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axis::{fmt_sig, Axis};
use super::figure::{Bar, Figure, KeyItem, Line, Markers, Panel};
use super::font::FAMILY;
use super::style::{backend_style, tint, Marker, TINT};

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Neutral colour of axes text and style keys; not a backend colour.
const INK: RGBColor = RGBColor(0x22, 0x22, 0x22);
const MUTED: RGBColor = RGBColor(0x55, 0x55, 0x55);
const KEY_GREY: RGBColor = RGBColor(0x44, 0x44, 0x44);

/// Draws `fig` filling `root`; `footer` is the machine line.
pub(crate) fn draw_figure<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    fig: &Figure,
    footer: &str,
) -> DrawResult<DB> {
    let (w, h) = root.dim_in_pixel();
    let s = (f64::from(w) / 1280.0)
        .min(f64::from(h) / 800.0)
        .clamp(0.35, 4.0);
    let px = |v: f64| (v * s).round().max(1.0) as i32;
    root.fill(&WHITE)?;

    let header_h = px(78.0) as u32;
    let footer_lines = wrap(root, footer, f64::from(w) - 32.0 * s, &font(12.0, s, MUTED));
    let footer_h = (px(12.0) as u32 + footer_lines.len() as u32 * px(16.0) as u32).min(h / 4);
    let body_h = h.saturating_sub(header_h + footer_h).max(1);
    let (header, rest) = root.split_vertically(header_h);
    let (body, foot) = rest.split_vertically(body_h);
    let legend_w = px(250.0) as u32;
    let (plots, legend) = body.split_horizontally(w.saturating_sub(legend_w).max(1));

    header.draw(&Text::new(
        fig.title.clone(),
        (px(18.0), px(12.0)),
        font(24.0, s, INK),
    ))?;
    header.draw(&Text::new(
        fig.subtitle.clone(),
        (px(18.0), px(48.0)),
        font(15.0, s, MUTED),
    ))?;

    // Side by side up to three panels; small multiples go on a grid.
    let n = fig.panels.len().max(1);
    let cols = if n <= 3 {
        n
    } else {
        (n as f64).sqrt().ceil() as usize
    };
    let areas = plots.split_evenly((n.div_ceil(cols), cols));
    for (panel, area) in fig.panels.iter().zip(&areas) {
        draw_panel(root, area, panel, s)?;
    }
    draw_legend(&legend, fig, s)?;

    for (i, line) in footer_lines.iter().enumerate() {
        foot.draw(&Text::new(
            line.clone(),
            (px(18.0), px(4.0) + i as i32 * px(16.0)),
            font(12.0, s, MUTED),
        ))?;
    }
    Ok(())
}

fn font(size: f64, s: f64, color: RGBColor) -> TextStyle<'static> {
    (FAMILY, size * s).into_font().color(&color)
}

/// Splits `text` into lines no wider than `width` pixels in `style`.
fn wrap<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    width: f64,
    style: &TextStyle<'_>,
) -> Vec<String> {
    let fits = |t: &str| {
        area.estimate_text_size(t, style)
            .map(|(tw, _)| f64::from(tw) <= width)
            .unwrap_or(true)
    };
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in text.split(' ') {
        let candidate = if cur.is_empty() {
            word.to_string()
        } else {
            format!("{cur} {word}")
        };
        if fits(&candidate) || cur.is_empty() {
            cur = candidate;
        } else {
            lines.push(std::mem::take(&mut cur));
            cur = word.to_string();
        }
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

fn draw_panel<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    s: f64,
) -> DrawResult<DB> {
    let px = |v: f64| (v * s).round().max(1.0) as i32;
    let categorical = !panel.bars.is_empty();
    // The caption sits in its own strip, clear of the top tick label.
    let area = if panel.title.is_empty() {
        area.clone()
    } else {
        let (w, h) = area.dim_in_pixel();
        let strip = (px(30.0) as u32).min(h / 4);
        let (top, rest) = area.split_vertically(strip);
        top.draw(&Text::new(
            panel.title.clone(),
            ((w / 2) as i32, px(10.0)),
            font(15.0, s, INK).pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
        rest
    };
    let mut builder = ChartBuilder::on(&area);
    builder
        .margin_top(px(10.0))
        .margin_bottom(px(6.0))
        .margin_left(px(10.0))
        .margin_right(px(18.0))
        .x_label_area_size(px(if categorical { 64.0 } else { 54.0 }))
        .y_label_area_size(px(76.0));
    let (x, y) = (&panel.x, &panel.y);
    let mut chart = builder.build_cartesian_2d(Ticked::of(x), Ticked::of(y))?;

    // Category names are drawn below, wrapped; plotters' labels are single lines.
    let x_fmt = |v: &f64| {
        if categorical {
            String::new()
        } else {
            x.label_at(*v)
        }
    };
    let y_fmt = |v: &f64| y.label_at(*v);
    let mut mesh = chart.configure_mesh();
    if !x.label.is_empty() {
        mesh.x_desc(x.label.clone());
    }
    mesh.y_desc(y.label.clone())
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style(font(13.0, s, INK))
        .axis_desc_style(font(14.0, s, INK))
        .axis_style(INK.mix(0.8))
        .bold_line_style(BLACK.mix(0.13))
        .light_line_style(BLACK.mix(0.05));
    if categorical {
        mesh.disable_x_mesh();
    }
    mesh.draw()?;
    if categorical {
        draw_categories(root, &chart, x, y, s)?;
    }

    let base = if y.is_log() { Some(y.lo) } else { y.map(0.0) }.unwrap_or(y.lo);
    for bar in &panel.bars {
        if y.is_log() {
            draw_dot(root, &mut chart, bar, y, panel.value_labels, s)?;
        } else {
            draw_bar(root, &mut chart, bar, y, base, panel.value_labels, s)?;
        }
    }
    // Bands first so every line sits on top of every band.
    for line in panel.lines.iter().filter(|l| l.band) {
        draw_band(&mut chart, line, x, y, s)?;
    }
    for line in &panel.lines {
        draw_line(root, &mut chart, line, x, y, s)?;
    }
    Ok(())
}

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<Ticked, Ticked>>;

/// A linear f64 coordinate whose grid lines and labels sit exactly at an [`Axis`]'s ticks
/// (plotters' own `WithKeyPoints` cannot take a label formatter on f64).
#[derive(Clone)]
struct Ticked {
    inner: RangedCoordf64,
    lo: f64,
    hi: f64,
    bold: Vec<f64>,
    light: Vec<f64>,
}

impl Ticked {
    fn of(axis: &Axis) -> Ticked {
        let (lo, hi) = if axis.hi > axis.lo {
            (axis.lo, axis.hi)
        } else {
            (axis.lo, axis.lo + 1.0)
        };
        Ticked {
            inner: (lo..hi).into(),
            lo,
            hi,
            bold: axis.ticks.iter().map(|t| t.0).collect(),
            light: axis.minor.clone(),
        }
    }
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.light.clone()
        } else {
            self.bold.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// Category names under a bar chart, one parameter per line ("64 B" / "16 conns"),
/// shrunk until the widest line fits its category.
fn draw_categories<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &Chart<'_, DB>,
    x: &Axis,
    y: &Axis,
    s: f64,
) -> DrawResult<DB> {
    let px = |v: f64| (v * s).round().max(1.0) as i32;
    let left = chart.backend_coord(&(x.lo, y.lo));
    let right = chart.backend_coord(&(x.hi, y.lo));
    let per_category = f64::from(right.0 - left.0) / (x.hi - x.lo).max(1e-9);
    let lines: Vec<(f64, Vec<&str>)> = x
        .ticks
        .iter()
        .map(|(t, l)| (*t, l.split(", ").collect()))
        .collect();
    let mut size = 13.0;
    let style = loop {
        let style = font(size, s, INK).pos(Pos::new(HPos::Center, VPos::Top));
        let widest = lines
            .iter()
            .flat_map(|(_, ls)| ls.iter())
            .filter_map(|l| root.estimate_text_size(l, &style).ok())
            .map(|(w, _)| f64::from(w))
            .fold(0.0, f64::max);
        if widest <= per_category * 0.94 || size <= 8.0 {
            break style;
        }
        size -= 0.5;
    };
    let line_h = (size * 1.25 * s).round() as i32;
    for (t, ls) in &lines {
        let (cx, cy) = chart.backend_coord(&(*t, y.lo));
        for (i, l) in ls.iter().enumerate() {
            root.draw(&Text::new(
                l.to_string(),
                (cx, cy + px(8.0) + i as i32 * line_h),
                style.clone(),
            ))?;
        }
    }
    Ok(())
}

/// The line's points in chart coordinates, split where a value is missing.
fn runs(line: &Line, x: &Axis, y: &Axis) -> Vec<Vec<(f64, f64, usize)>> {
    let mut out: Vec<Vec<(f64, f64, usize)>> = Vec::new();
    let mut cur = Vec::new();
    for (i, p) in line.points.iter().enumerate() {
        match (x.map(p.x), y.map(p.y)) {
            (Some(tx), Some(ty)) => {
                if p.break_before && !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                cur.push((tx, ty, i));
            }
            _ => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn draw_band<DB: DrawingBackend>(
    chart: &mut Chart<'_, DB>,
    line: &Line,
    x: &Axis,
    y: &Axis,
    s: f64,
) -> DrawResult<DB> {
    let color = backend_style(&line.backend).color;
    for run in runs(line, x, y) {
        let spans: Vec<(f64, f64, f64)> = run
            .iter()
            .filter_map(|&(tx, _, i)| {
                let p = &line.points[i];
                Some((tx, y.map(p.lo?)?, y.map(p.hi?)?))
            })
            .collect();
        // Two points make a band a pair of trapezoids that hide each other; from three
        // on it reads as a spread.
        if spans.len() >= 3 {
            let mut poly: Vec<(f64, f64)> = spans.iter().map(|&(tx, _, hi)| (tx, hi)).collect();
            poly.extend(spans.iter().rev().map(|&(tx, lo, _)| (tx, lo)));
            chart.draw_series(std::iter::once(Polygon::new(
                poly,
                color.mix(0.16).filled(),
            )))?;
        } else {
            // Too few points for a band: whiskers instead.
            let cap = (x.hi - x.lo) * 0.008;
            let st = ShapeStyle::from(color).stroke_width(px_w(1.5, s));
            for (tx, lo, hi) in spans {
                draw_whisker(chart, tx, lo, hi, cap, st)?;
            }
        }
    }
    Ok(())
}

/// A vertical min–max whisker at `x` with caps `cap` wide on each side.
fn draw_whisker<DB: DrawingBackend>(
    chart: &mut Chart<'_, DB>,
    x: f64,
    lo: f64,
    hi: f64,
    cap: f64,
    st: ShapeStyle,
) -> DrawResult<DB> {
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(x, lo), (x, hi)],
        st,
    )))?;
    for v in [lo, hi] {
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(x - cap, v), (x + cap, v)],
            st,
        )))?;
    }
    Ok(())
}

fn px_w(v: f64, s: f64) -> u32 {
    (v * s).round().max(1.0) as u32
}

fn draw_line<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &mut Chart<'_, DB>,
    line: &Line,
    x: &Axis,
    y: &Axis,
    s: f64,
) -> DrawResult<DB> {
    let st = backend_style(&line.backend);
    let stroke = ShapeStyle::from(st.color).stroke_width(px_w(2.2, s));
    for run in runs(line, x, y) {
        let pts: Vec<(f64, f64)> = run.iter().map(|&(tx, ty, _)| (tx, ty)).collect();
        if pts.len() >= 2 {
            if line.dashed {
                let dash = px_w(9.0, s);
                let gap = px_w(6.0, s);
                chart.draw_series(std::iter::once(DashedPathElement::new(
                    pts.clone(),
                    dash,
                    gap,
                    stroke,
                )))?;
            } else {
                chart.draw_series(std::iter::once(PathElement::new(pts.clone(), stroke)))?;
            }
        }
        for &(tx, ty, i) in &run {
            let show = match line.markers {
                Markers::All => true,
                Markers::Last => i + 1 == line.points.len(),
            };
            if show {
                let at = chart.backend_coord(&(tx, ty));
                draw_marker(root, st.marker, at, st.color, line.points[i].hollow, s)?;
            }
        }
    }
    Ok(())
}

fn draw_marker<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    marker: Marker,
    (cx, cy): (i32, i32),
    color: RGBColor,
    hollow: bool,
    s: f64,
) -> DrawResult<DB> {
    let pts: Vec<(i32, i32)> = marker
        .outline(5.0 * s.max(0.6))
        .into_iter()
        .map(|(x, y)| (cx + x, cy + y))
        .collect();
    if hollow {
        area.draw(&Polygon::new(pts.clone(), WHITE.filled()))?;
        let mut closed = pts;
        if let Some(first) = closed.first().copied() {
            closed.push(first);
        }
        area.draw(&PathElement::new(
            closed,
            ShapeStyle::from(color).stroke_width(px_w(2.0, s)),
        ))?;
    } else {
        area.draw(&Polygon::new(pts, color.filled()))?;
    }
    Ok(())
}

/// A bar's value written above `top` (chart coordinates), small enough to fit its width.
fn draw_value_label<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &Chart<'_, DB>,
    bar: &Bar,
    value: f64,
    top: f64,
    lift: i32,
    s: f64,
) -> DrawResult<DB> {
    let text = fmt_sig(value, 3);
    let left = chart.backend_coord(&(bar.x0, top));
    let right = chart.backend_coord(&(bar.x1, top));
    let width = f64::from((right.0 - left.0).max(1));
    let mut size = 11.5;
    let style = loop {
        let st = font(size, s, INK).pos(Pos::new(HPos::Center, VPos::Bottom));
        let fits = root
            .estimate_text_size(&text, &st)
            .map(|(w, _)| f64::from(w) <= width * 1.15)
            .unwrap_or(true);
        if fits || size <= 7.0 {
            break st;
        }
        size -= 0.5;
    };
    root.draw(&Text::new(
        text,
        ((left.0 + right.0) / 2, left.1 - lift),
        style,
    ))
}

/// A bar on a log axis: a marker at each value (the total of a stack; every value of an
/// overlay, the light ones hollow), joined by a thin stem, with its whisker.
fn draw_dot<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &mut Chart<'_, DB>,
    bar: &Bar,
    y: &Axis,
    labels: bool,
    s: f64,
) -> DrawResult<DB> {
    let st = backend_style(&bar.backend);
    let xc = (bar.x0 + bar.x1) / 2.0;
    let values: Vec<(f64, bool)> = if bar.overlay {
        bar.segments.iter().map(|g| (g.value, g.light)).collect()
    } else {
        vec![(bar.segments.iter().map(|g| g.value).sum(), false)]
    };
    let mapped: Vec<(f64, bool)> = values
        .iter()
        .filter_map(|&(v, light)| y.map(v).map(|t| (t, light)))
        .collect();
    if mapped.len() >= 2 {
        let lo = mapped.iter().map(|m| m.0).fold(f64::INFINITY, f64::min);
        let hi = mapped.iter().map(|m| m.0).fold(f64::NEG_INFINITY, f64::max);
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(xc, lo), (xc, hi)],
            ShapeStyle::from(st.color).stroke_width(px_w(1.5, s)),
        )))?;
    }
    let mut top = f64::NEG_INFINITY;
    if let Some((lo, hi)) = bar.whisker {
        if let (Some(lo), Some(hi)) = (y.map(lo), y.map(hi)) {
            let cap = (bar.x1 - bar.x0) * 0.25;
            let ws = ShapeStyle::from(INK.mix(0.85)).stroke_width(px_w(1.3, s));
            draw_whisker(chart, xc, lo, hi, cap, ws)?;
            top = top.max(hi);
        }
    }
    for &(t, light) in &mapped {
        top = top.max(t);
        let at = chart.backend_coord(&(xc, t));
        draw_marker(root, st.marker, at, st.color, light || bar.hollow_mark, s)?;
    }
    if labels {
        if let Some(&(v, _)) = values.iter().find(|(_, light)| !light) {
            if top.is_finite() {
                draw_value_label(root, chart, bar, v, top, (9.0 * s) as i32, s)?;
            }
        }
    }
    Ok(())
}

fn draw_bar<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &mut Chart<'_, DB>,
    bar: &Bar,
    y: &Axis,
    base: f64,
    labels: bool,
    s: f64,
) -> DrawResult<DB> {
    let color = backend_style(&bar.backend).color;
    let light = tint(color, TINT);
    let mut top = base;
    let mut cum = 0.0;
    for seg in &bar.segments {
        let (from, to) = if bar.overlay {
            (base, y.map(seg.value))
        } else {
            let from = if cum > 0.0 { y.map(cum) } else { Some(base) };
            cum += seg.value;
            (from.unwrap_or(base), y.map(cum))
        };
        let Some(to) = to else { continue };
        top = top.max(to);
        let fill = if seg.light { light } else { color };
        chart.draw_series(std::iter::once(Rectangle::new(
            [(bar.x0, from), (bar.x1, to)],
            fill.filled(),
        )))?;
    }
    if let Some((lo, hi)) = bar.whisker {
        if let (Some(lo), Some(hi)) = (y.map(lo), y.map(hi)) {
            let xc = (bar.x0 + bar.x1) / 2.0;
            let cap = (bar.x1 - bar.x0) * 0.25;
            let st = ShapeStyle::from(INK.mix(0.85)).stroke_width(px_w(1.3, s));
            draw_whisker(chart, xc, lo, hi, cap, st)?;
            top = top.max(hi);
        }
    }
    let mut lift = (4.0 * s) as i32;
    if bar.hollow_mark {
        let (cx, cy) = chart.backend_coord(&((bar.x0 + bar.x1) / 2.0, top));
        let marker = backend_style(&bar.backend).marker;
        draw_marker(root, marker, (cx, cy - (10.0 * s) as i32), color, true, s)?;
        lift = (18.0 * s) as i32;
    }
    if labels {
        let value = if bar.overlay {
            bar.segments.iter().map(|g| g.value).fold(0.0, f64::max)
        } else {
            bar.segments.iter().map(|g| g.value).sum()
        };
        draw_value_label(root, chart, bar, value, top, lift, s)?;
    }
    Ok(())
}

fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    fig: &Figure,
    s: f64,
) -> DrawResult<DB> {
    let px = |v: f64| (v * s).round() as i32;
    let (w, h) = area.dim_in_pixel();
    let row = px(24.0);
    let text_x = px(50.0);
    let mut y = px(18.0);
    let has_lines = fig.panels.iter().any(|p| !p.lines.is_empty());
    // A composed name (uring+single+defer+…) breaks before a `+` to stay in the legend,
    // each further line a text line lower; unless the names would then take more than
    // 60% of the legend's height (the keys and notes below need the rest), when each
    // stays on one line, clipped at the edge (a ladder chart's notes name every step).
    let name_font = font(15.0, s, INK);
    let width = f64::from(w) - f64::from(text_x) - 8.0 * s;
    let mut labels: Vec<Vec<String>> = fig
        .backends
        .iter()
        .map(|name| {
            let label = crate::analysis::label(name, fig.externals.contains(name));
            wrap(area, &label.replace('+', " +"), width, &name_font)
                .into_iter()
                .map(|l| l.replace(" +", "+"))
                .collect()
        })
        .collect();
    let extra: usize = labels.iter().map(|l| l.len().saturating_sub(1)).sum();
    if f64::from(row * labels.len() as i32 + px(18.0) * extra as i32) > 0.6 * f64::from(h) {
        for (l, name) in labels.iter_mut().zip(&fig.backends) {
            *l = vec![crate::analysis::label(name, fig.externals.contains(name))];
        }
    }
    for (name, lines) in fig.backends.iter().zip(&labels) {
        let st = backend_style(name);
        let cy = y + row / 2;
        if has_lines {
            // A filled rectangle, not a path: data lines stay the only open paths drawn in
            // a backend's colour, which is what the tests count.
            area.draw(&Rectangle::new(
                [(px(8.0), cy - px(1.2)), (px(40.0), cy + px(1.2))],
                st.color.filled(),
            ))?;
            draw_marker(area, st.marker, (px(24.0), cy), st.color, false, s)?;
        } else {
            area.draw(&Rectangle::new(
                [(px(14.0), cy - px(7.0)), (px(34.0), cy + px(7.0))],
                st.color.filled(),
            ))?;
        }
        for (i, line) in lines.iter().enumerate() {
            area.draw(&Text::new(
                line.clone(),
                (text_x, cy - px(8.0) + i as i32 * px(18.0)),
                name_font.clone(),
            ))?;
        }
        y += row + lines.len().saturating_sub(1) as i32 * px(18.0);
    }
    y += px(10.0);
    let key_font = font(12.5, s, INK);
    let key_width = f64::from(w) - f64::from(text_x) - 8.0 * s;
    for key in &fig.keys {
        // Centred on the first line of the key's text.
        let cy = y + px(6.0);
        let text = match key {
            KeyItem::Line { dashed, text } => {
                let st = ShapeStyle::from(KEY_GREY).stroke_width(px_w(2.2, s));
                if *dashed {
                    area.draw(&DashedPathElement::new(
                        vec![(px(8.0), cy), (px(40.0), cy)],
                        px_w(7.0, s),
                        px_w(5.0, s),
                        st,
                    ))?;
                } else {
                    area.draw(&PathElement::new(vec![(px(8.0), cy), (px(40.0), cy)], st))?;
                }
                text
            }
            KeyItem::Marker { hollow, text } => {
                draw_marker(area, Marker::Circle, (px(24.0), cy), KEY_GREY, *hollow, s)?;
                text
            }
            KeyItem::Swatch { light, text } => {
                let c = if *light {
                    tint(KEY_GREY, TINT)
                } else {
                    KEY_GREY
                };
                area.draw(&Rectangle::new(
                    [(px(14.0), cy - px(7.0)), (px(34.0), cy + px(7.0))],
                    c.filled(),
                ))?;
                text
            }
            KeyItem::Band { text } => {
                area.draw(&Rectangle::new(
                    [(px(8.0), cy - px(7.0)), (px(40.0), cy + px(7.0))],
                    KEY_GREY.mix(0.16).filled(),
                ))?;
                text
            }
            KeyItem::Whisker { text } => {
                let st = ShapeStyle::from(KEY_GREY).stroke_width(px_w(1.3, s));
                area.draw(&PathElement::new(
                    vec![(px(24.0), cy - px(8.0)), (px(24.0), cy + px(8.0))],
                    st,
                ))?;
                for dy in [-8.0, 8.0] {
                    area.draw(&PathElement::new(
                        vec![(px(19.0), cy + px(dy)), (px(29.0), cy + px(dy))],
                        st,
                    ))?;
                }
                text
            }
        };
        let lines = wrap(area, text, key_width, &key_font);
        for (i, l) in lines.iter().enumerate() {
            area.draw(&Text::new(
                l.clone(),
                (text_x, y + i as i32 * px(16.0)),
                key_font.clone(),
            ))?;
        }
        y += (lines.len().max(1) as i32) * px(16.0) + px(8.0);
    }
    if !fig.notes.is_empty() {
        y += px(6.0);
        // The largest size at which every note fits the space left (a ladder of a dozen
        // steps, each with two intervals, needs the smaller ones); at the smallest, what
        // does not fit is left out rather than drawn over the edge.
        let room = f64::from(h) - f64::from(y);
        let layout = |size: f64| {
            let f = font(size, s, MUTED);
            let lines: Vec<Vec<String>> = fig
                .notes
                .iter()
                .map(|n| wrap(area, n, f64::from(w) - 16.0 * s, &f))
                .collect();
            let need: f64 = lines
                .iter()
                .map(|l| (l.len() as f64 * 1.25 + 0.42) * size * s)
                .sum();
            (f, lines, need)
        };
        let (note_font, lines, size) = [12.0, 10.5, 9.0, 8.0]
            .into_iter()
            .map(|size| (layout(size), size))
            .find(|((_, _, need), size)| *need <= room || *size == 8.0)
            .map(|((f, l, _), size)| (f, l, size))
            .expect("the last size is always taken");
        let (line_h, gap) = (px(size * 1.25), px(size * 0.42));
        'notes: for note in lines {
            for l in note {
                if y + line_h > h as i32 {
                    break 'notes;
                }
                area.draw(&Text::new(l, (px(8.0), y), note_font.clone()))?;
                y += line_h;
            }
            y += gap;
        }
    }
    Ok(())
}
