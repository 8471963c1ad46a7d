//! One colour and one marker per backend, the same on every chart and in every run, so a
//! write-up's figures read together. Known backends have fixed entries; a backend added
//! later gets a deterministic pick from its name (FNV-1a, not the std hasher, whose output
//! may change between Rust releases).

use backend_api::Family;
use plotters::style::RGBColor;

/// Marker shapes, drawn as polygons so each can be filled or hollow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// ●
    Circle,
    /// ■
    Square,
    /// ▲
    TriangleUp,
    /// ◆
    Diamond,
    /// ▼
    TriangleDown,
    /// ⬟
    Pentagon,
    /// ⬢
    Hexagon,
    /// ★
    Star,
    /// ◀
    TriangleLeft,
    /// ▶
    TriangleRight,
}

const MARKERS: [Marker; 10] = [
    Marker::Circle,
    Marker::Square,
    Marker::TriangleUp,
    Marker::Diamond,
    Marker::TriangleDown,
    Marker::Pentagon,
    Marker::Hexagon,
    Marker::Star,
    Marker::TriangleLeft,
    Marker::TriangleRight,
];

/// How one backend looks on every chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendStyle {
    /// Line, marker and bar colour.
    pub color: RGBColor,
    /// Point marker.
    pub marker: Marker,
}

/// Hues per family of strategies: colour-blind-safe (Okabe–Ito first, then Tableau),
/// families kept near each other (the epolls blue, the io_urings warm, the runtime over
/// io_uring green, the runtimes over epoll purple/brown, the rest grey/olive). A backend
/// takes its family's next hue in registry order. No entry is black or the grid's grey,
/// so a test can tell series from axes by colour.
fn palette(family: Family) -> &'static [(u8, u8, u8)] {
    match family {
        Family::Epoll => &[(0x00, 0x72, 0xB2), (0x56, 0xB4, 0xE9)],
        Family::IoUring => &[(0xD5, 0x5E, 0x00), (0xE6, 0x9F, 0x00), (0xCC, 0x79, 0xA7)],
        Family::IoUringRuntime => &[(0x00, 0x9E, 0x73)],
        Family::EpollRuntime => &[(0x94, 0x67, 0xBD), (0x8C, 0x56, 0x4B)],
        Family::Other => &[(0x7F, 0x7F, 0x7F), (0x9A, 0x9A, 0x1F)],
    }
}

#[cfg(test)]
const FAMILIES: [Family; 5] = [
    Family::Epoll,
    Family::IoUring,
    Family::IoUringRuntime,
    Family::EpollRuntime,
    Family::Other,
];

/// Colours for backends without a fixed style: distinct from every palette entry.
const FALLBACK: &[(u8, u8, u8)] = &[
    (0x17, 0xBE, 0xCF),
    (0xA6, 0x1C, 0x3C),
    (0x2E, 0x4A, 0x8C),
    (0x55, 0x6B, 0x2F),
    (0xB8, 0x86, 0x0B),
    (0x6A, 0x3D, 0x9A),
    (0x00, 0x80, 0x80),
    (0xE7, 0x29, 0x8A),
];

/// The style of backend `name`: a registered backend takes its family's next hue and the
/// marker of its registry position, so its look never depends on which backends a run
/// measured; any other (or one past its family's palette) a stable hash pick.
pub fn backend_style(name: &str) -> BackendStyle {
    let all = crate::registry::all();
    if let Some(pos) = all.iter().position(|b| b.name() == name) {
        let family = all[pos].traits().family;
        let nth = all[..pos]
            .iter()
            .filter(|b| b.traits().family == family)
            .count();
        if let (Some(&(r, g, b)), Some(&marker)) = (palette(family).get(nth), MARKERS.get(pos)) {
            return BackendStyle {
                color: RGBColor(r, g, b),
                marker,
            };
        }
    }
    let h = fnv1a(name.as_bytes());
    let (r, g, b) = FALLBACK[(h % FALLBACK.len() as u64) as usize];
    BackendStyle {
        color: RGBColor(r, g, b),
        marker: MARKERS[((h >> 32) % MARKERS.len() as u64) as usize],
    }
}

/// `#rrggbb`, as plotters writes colours into SVG.
pub fn hex(c: RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
}

/// `c` mixed towards white by `amount` (0 = unchanged, 1 = white): the lighter shade of
/// stacked and overlaid bars (system CPU over user CPU, p99 behind p50).
pub fn tint(c: RGBColor, amount: f64) -> RGBColor {
    let mix = |v: u8| (f64::from(v) + (255.0 - f64::from(v)) * amount).round() as u8;
    RGBColor(mix(c.0), mix(c.1), mix(c.2))
}

/// Shade used for the lighter half of two-tone bars.
pub const TINT: f64 = 0.55;

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Marker {
    /// The marker's outline around (0, 0), `r` pixels in radius, as a polygon.
    pub(crate) fn outline(self, r: f64) -> Vec<(i32, i32)> {
        let regular = |n: usize, start_deg: f64, r: f64| -> Vec<(f64, f64)> {
            (0..n)
                .map(|i| {
                    let a = (start_deg + 360.0 * i as f64 / n as f64).to_radians();
                    (r * a.cos(), -r * a.sin())
                })
                .collect()
        };
        let pts: Vec<(f64, f64)> = match self {
            Marker::Circle => regular(20, 0.0, r),
            Marker::Square => regular(4, 45.0, r * 1.25),
            Marker::Diamond => regular(4, 90.0, r * 1.3),
            Marker::TriangleUp => regular(3, 90.0, r * 1.35),
            Marker::TriangleDown => regular(3, 270.0, r * 1.35),
            Marker::TriangleLeft => regular(3, 180.0, r * 1.35),
            Marker::TriangleRight => regular(3, 0.0, r * 1.35),
            Marker::Pentagon => regular(5, 90.0, r * 1.2),
            Marker::Hexagon => regular(6, 0.0, r * 1.15),
            Marker::Star => {
                let outer = regular(5, 90.0, r * 1.45);
                let inner = regular(5, 126.0, r * 0.62);
                outer
                    .into_iter()
                    .zip(inner)
                    .flat_map(|(o, i)| [o, i])
                    .collect()
            }
        };
        pts.into_iter()
            .map(|(x, y)| (x.round() as i32, y.round() as i32))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_backends_are_distinct_and_fixed() {
        let styles: Vec<_> = crate::registry::all()
            .iter()
            .map(|b| backend_style(b.name()))
            .collect();
        assert_eq!(styles.len(), 10);
        for (i, a) in styles.iter().enumerate() {
            for b in &styles[i + 1..] {
                assert_ne!(a.color, b.color);
                assert_ne!(a.marker, b.marker);
            }
        }
        assert_eq!(hex(backend_style("epoll-et").color), "#0072B2");
        assert_eq!(backend_style("uring").marker, Marker::TriangleUp);
    }

    #[test]
    fn unknown_backends_hash_stably_off_the_fixed_table() {
        let a = backend_style("my-new-backend");
        assert_eq!(a, backend_style("my-new-backend"));
        // Pinned: a change here recolours every published chart of that backend.
        assert_eq!(fnv1a(b"my-new-backend"), 0x535d_8aef_b80e_28f9);
        assert_eq!(a.color, RGBColor(0xA6, 0x1C, 0x3C));
        assert_eq!(a.marker, Marker::Diamond);
        for (r, g, b) in FAMILIES.iter().flat_map(|f| palette(*f)) {
            assert_ne!(a.color, RGBColor(*r, *g, *b));
        }
    }

    #[test]
    fn no_backend_colour_is_black_or_white() {
        for c in FAMILIES.iter().flat_map(|f| palette(*f)) {
            assert_ne!(*c, (0, 0, 0));
            assert_ne!(*c, (255, 255, 255));
        }
        for c in FALLBACK {
            assert_ne!(*c, (0, 0, 0));
        }
    }
}
