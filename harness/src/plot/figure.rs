//! What a chart shows, as plain data: the chart builders (one file per chart kind) turn
//! results into [`Figure`]s, and `draw` turns any figure into SVG or PNG. Keeping the two
//! apart lets tests and the report inspect what a chart will contain without drawing it.

use super::axis::Axis;

/// The kinds of chart ringside draws, in the order they are listed and drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChartKind {
    /// 1. Throughput vs connections, per workload and message size / depth.
    ThroughputVsConnections,
    /// 2. Latency percentile spectrum on a "nines" axis.
    LatencySpectrum,
    /// 3. Latency (p50, p99) vs offered load, from the open-loop sweep.
    LatencyVsLoad,
    /// Server CPU and syscalls per request vs offered load, with confidence bands.
    CostVsLoad,
    /// 4. Server CPU µs per request, user and system stacked.
    CpuPerRequest,
    /// 5. Syscalls and context switches per request.
    SyscallsPerRequest,
    /// 6. Throughput vs server cores.
    ThroughputVsCores,
    /// 7. Idle-connection effect: active throughput, p99 and memory per connection.
    IdleEffect,
    /// 8. Churn: connections per second and connect latency.
    Churn,
    /// The io_uring feature ladder: CPU and syscalls per request per step, with each
    /// step's marginal change (runs with at least three `uring` ladder steps).
    UringLadder,
}

impl ChartKind {
    /// Every kind, in that order.
    pub const ALL: [ChartKind; 10] = [
        ChartKind::ThroughputVsConnections,
        ChartKind::LatencySpectrum,
        ChartKind::LatencyVsLoad,
        ChartKind::CostVsLoad,
        ChartKind::CpuPerRequest,
        ChartKind::SyscallsPerRequest,
        ChartKind::ThroughputVsCores,
        ChartKind::IdleEffect,
        ChartKind::Churn,
        ChartKind::UringLadder,
    ];

    /// Short human name, used in the report's plot list.
    pub fn describe(self) -> &'static str {
        match self {
            ChartKind::ThroughputVsConnections => "throughput vs connections",
            ChartKind::LatencySpectrum => "latency percentile spectrum",
            ChartKind::LatencyVsLoad => "latency vs offered load",
            ChartKind::CostVsLoad => "cost per request vs offered load",
            ChartKind::CpuPerRequest => "server CPU per request",
            ChartKind::SyscallsPerRequest => "syscalls and context switches per request",
            ChartKind::ThroughputVsCores => "throughput vs server cores",
            ChartKind::IdleEffect => "idle-connection effect",
            ChartKind::Churn => "connection churn",
            ChartKind::UringLadder => "io_uring feature ladder",
        }
    }
}

/// One chart file (one or more panels sharing a legend).
#[derive(Debug, Clone)]
pub struct Figure {
    /// File stem, unique within a results file: "throughput-echo-64B-d1".
    pub name: String,
    /// Which kind of chart.
    pub kind: ChartKind,
    /// Title: what is measured, with the workload.
    pub title: String,
    /// The workload's parameters and how numbers were aggregated.
    pub subtitle: String,
    /// Side-by-side panels.
    pub(crate) panels: Vec<Panel>,
    /// Backends drawn, in legend order.
    pub backends: Vec<String>,
    /// Those of them that are external servers: labelled "(external)" in the legend.
    pub externals: Vec<String>,
    /// Explanations of line and marker styles.
    pub(crate) keys: Vec<KeyItem>,
    /// Caveats: cells left out, measurements absent.
    pub notes: Vec<String>,
    /// Workload shapes the chart draws from (the report links charts to its tables).
    pub(crate) shapes: Vec<crate::analysis::Shape>,
}

/// One set of axes.
#[derive(Debug, Clone)]
pub(crate) struct Panel {
    /// Panel caption; empty for single-panel figures.
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub lines: Vec<Line>,
    pub bars: Vec<Bar>,
    /// Write each bar's value (its stack's total) above it: the headline charts are read
    /// for their numbers.
    pub value_labels: bool,
}

impl Panel {
    /// A panel of line series only (`title` empty for a single-panel figure).
    pub(crate) fn of_lines(title: impl Into<String>, x: Axis, y: Axis, lines: Vec<Line>) -> Panel {
        Panel {
            title: title.into(),
            x,
            y,
            lines,
            bars: Vec::new(),
            value_labels: false,
        }
    }

    /// A panel of bars only. On a log axis they are drawn as dots: a bar's length from an
    /// arbitrary floor means nothing there.
    pub(crate) fn of_bars(title: impl Into<String>, x: Axis, y: Axis, bars: Vec<Bar>) -> Panel {
        Panel {
            title: title.into(),
            x,
            y,
            lines: Vec::new(),
            bars,
            value_labels: false,
        }
    }

    /// This panel with value labels on its bars.
    pub(crate) fn with_value_labels(mut self) -> Panel {
        self.value_labels = true;
        self
    }
}

/// A line series of one backend.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub backend: String,
    pub dashed: bool,
    pub markers: Markers,
    /// Draw the points' lo–hi as a band (or whiskers for a lone point).
    pub band: bool,
    pub points: Vec<Point>,
}

/// Where a line shows its backend's marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Markers {
    /// At every point.
    All,
    /// At the last point only (a spectrum ends at the max).
    Last,
}

/// One point of a line, in data units.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Point {
    pub x: f64,
    pub y: f64,
    pub lo: Option<f64>,
    pub hi: Option<f64>,
    /// Client-bound: drawn as a hollow marker.
    pub hollow: bool,
    /// Do not join this point to the previous one (a value is missing between them).
    pub break_before: bool,
}

impl Point {
    pub(crate) fn at(x: f64, y: f64) -> Point {
        Point {
            x,
            y,
            lo: None,
            hi: None,
            hollow: false,
            break_before: false,
        }
    }
}

/// One bar of one backend in one category.
#[derive(Debug, Clone)]
pub(crate) struct Bar {
    pub backend: String,
    /// Left and right edge, in category coordinates.
    pub x0: f64,
    pub x1: f64,
    /// Values from the bottom: stacked, or overlaid (each from the base, drawn in order).
    pub segments: Vec<Segment>,
    pub overlay: bool,
    /// Min–max whisker, in data units.
    pub whisker: Option<(f64, f64)>,
    /// Client-bound: a hollow marker above the bar.
    pub hollow_mark: bool,
}

/// Part of a bar.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment {
    pub value: f64,
    /// Drawn in the backend's lighter shade.
    pub light: bool,
}

/// A legend line explaining a style, drawn in neutral grey.
#[derive(Debug, Clone)]
pub(crate) enum KeyItem {
    Line { dashed: bool, text: String },
    Marker { hollow: bool, text: String },
    Swatch { light: bool, text: String },
    Band { text: String },
    Whisker { text: String },
}

/// Left and right edges of backend `slot`'s bar among `slots` bars in category `cat`.
pub(crate) fn bar_span(cat: usize, slot: usize, slots: usize) -> (f64, f64) {
    let group = 0.8;
    let w = group / slots.max(1) as f64;
    let x0 = cat as f64 - group / 2.0 + w * slot as f64;
    (x0 + w * 0.06, x0 + w * 0.94)
}
