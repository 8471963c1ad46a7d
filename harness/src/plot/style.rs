//! One colour and one marker per backend, the same on every chart and in every run, so a
//! write-up's figures read together. A backend's look comes from what it says of itself
//! (its [`Family`]) and its place in the registry: the registered backends of a family take
//! that family's shades in order; a backend found by name beyond those (an io_uring
//! feature set, a claim variant) takes a shade of its family's hue picked by a stable hash
//! of its name (FNV-1a, not the std hasher, whose output may change between Rust
//! releases); an unknown name a colour of its own.

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

/// Each family's shades, in registry order: the epolls blue, the io_urings orange to
/// red, the runtime over io_uring green, the runtimes over epoll purple, the rest grey and
/// magenta. Every pair is at least [`MIN_DISTANCE`] apart in CIELAB, so no two backends look
/// alike on a chart or in print. No entry is black or the grid's grey, so a test can tell
/// series from axes by colour.
fn palette(family: Family) -> &'static [(u8, u8, u8)] {
    match family {
        Family::Epoll => &[(0x08, 0x45, 0x94), (0x42, 0x92, 0xC6)],
        Family::IoUring => &[(0xB3, 0x30, 0x00), (0xF0, 0x7C, 0x0C), (0xE8, 0xB0, 0x20)],
        Family::IoUringRuntime => &[(0x1B, 0x9E, 0x5A)],
        Family::EpollRuntime => &[(0x54, 0x27, 0x8F), (0xA6, 0x7D, 0xD4)],
        Family::Other => &[(0x80, 0x80, 0x80), (0xD0, 0x2F, 0x7E)],
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

/// Smallest CIELAB distance (ΔE*76) between any two registered backends' colours.
pub const MIN_DISTANCE: f64 = 20.0;

/// Colours for backends of no known family: distinct from every palette entry.
const FALLBACK: &[(u8, u8, u8)] = &[
    (0x17, 0xBE, 0xCF),
    (0x6B, 0x3A, 0x1E),
    (0x2E, 0x4A, 0x8C),
    (0x55, 0x6B, 0x2F),
    (0x9A, 0x9A, 0x1F),
    (0x00, 0x80, 0x80),
    (0x8B, 0x00, 0x3A),
    (0x00, 0x3C, 0x30),
];

/// The style of backend `name`: a registered backend takes its family's next shade and
/// the marker of its registry position, so its look never depends on which backends a
/// run measured; a backend the registry finds by name beyond those, a hashed shade of its
/// family's hue; anything else a stable hash pick.
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
    let marker = MARKERS[((h >> 32) % MARKERS.len() as u64) as usize];
    if let Ok(b) = crate::registry::find(name) {
        let (r, g, bl) = palette(b.traits().family)[0];
        return BackendStyle {
            color: family_shade(RGBColor(r, g, bl), h),
            marker,
        };
    }
    let (r, g, b) = FALLBACK[(h % FALLBACK.len() as u64) as usize];
    BackendStyle {
        color: RGBColor(r, g, b),
        marker,
    }
}

/// The family backend `name` belongs to, as the backend says of itself; `Other` for a
/// name the registry does not know.
pub fn family(name: &str) -> Family {
    crate::registry::find(name)
        .map(|b| b.traits().family)
        .unwrap_or_default()
}

/// One of five shades of `base`'s hue, from darker to lighter, chosen by `h`.
fn family_shade(base: RGBColor, h: u64) -> RGBColor {
    const SHADES: [f64; 5] = [-0.45, -0.25, 0.2, 0.38, 0.55];
    let amount = SHADES[(h % SHADES.len() as u64) as usize];
    if amount < 0.0 {
        let mix = |v: u8| (f64::from(v) * (1.0 + amount)).round() as u8;
        RGBColor(mix(base.0), mix(base.1), mix(base.2))
    } else {
        tint(base, amount)
    }
}

/// CIELAB (D65) of an sRGB colour.
pub fn lab(c: RGBColor) -> (f64, f64, f64) {
    let lin = |v: u8| {
        let v = f64::from(v) / 255.0;
        if v <= 0.04045 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    let (r, g, b) = (lin(c.0), lin(c.1), lin(c.2));
    let x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047;
    let y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    let z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883;
    let f = |t: f64| {
        if t > 0.008856 {
            t.cbrt()
        } else {
            7.787 * t + 16.0 / 116.0
        }
    };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    (116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz))
}

/// ΔE*76 between two colours: about 2.3 is just noticeable, 20 clearly different.
pub fn distance(a: RGBColor, b: RGBColor) -> f64 {
    let (p, q) = (lab(a), lab(b));
    ((p.0 - q.0).powi(2) + (p.1 - q.1).powi(2) + (p.2 - q.2).powi(2)).sqrt()
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

    fn registered() -> Vec<(String, RGBColor)> {
        crate::registry::all()
            .iter()
            .map(|b| (b.name().to_string(), backend_style(b.name()).color))
            .collect()
    }

    #[test]
    fn known_backends_are_distinct_and_fixed() {
        let styles: Vec<_> = crate::registry::all()
            .iter()
            .map(|b| backend_style(b.name()))
            .collect();
        for (i, a) in styles.iter().enumerate() {
            for b in &styles[i + 1..] {
                assert_ne!(a.color, b.color);
            }
        }
        // Pinned: a change here recolours every published chart of that backend.
        assert_eq!(hex(backend_style("epoll-et").color), "#084594");
        assert_eq!(hex(backend_style("uring").color), "#B33000");
    }

    #[test]
    fn every_pair_of_backends_is_distinguishable() {
        let all = registered();
        for (i, (a, ca)) in all.iter().enumerate() {
            for (b, cb) in &all[i + 1..] {
                // Beyond its family's palette a backend takes a hashed shade, which only
                // has to stay in the family's hue.
                let within = |n: &str| {
                    let b = crate::registry::find(n).unwrap();
                    let fam = b.traits().family;
                    let nth = crate::registry::all()
                        .iter()
                        .take_while(|x| x.name() != n)
                        .filter(|x| x.traits().family == fam)
                        .count();
                    nth < palette(fam).len()
                };
                if !within(a) || !within(b) {
                    continue;
                }
                let d = distance(*ca, *cb);
                assert!(d >= MIN_DISTANCE, "{a} and {b} are only {d:.1} apart");
            }
        }
    }

    #[test]
    fn variants_keep_their_family_hue() {
        // HSV hue: what "the same colour, lighter or darker" keeps.
        let hue = |c: RGBColor| {
            let (r, g, b) = (f64::from(c.0), f64::from(c.1), f64::from(c.2));
            let (max, min) = (r.max(g).max(b), r.min(g).min(b));
            let d = max - min;
            let h = if d == 0.0 {
                0.0
            } else if max == r {
                (g - b) / d
            } else if max == g {
                (b - r) / d + 2.0
            } else {
                (r - g) / d + 4.0
            };
            (h * 60.0).rem_euclid(360.0)
        };
        let close = |x: f64, y: f64| {
            let d = (x - y).rem_euclid(360.0);
            d.min(360.0 - d)
        };
        for (base, variants, max_spread) in [
            (
                "epoll-et",
                &["epoll-lt", "epoll-toggle", "epoll-lt-me16"][..],
                15.0,
            ),
            (
                "uring",
                &["uring-multishot", "uring+single", "uring+single+defer"][..],
                30.0,
            ),
            ("tokio", &["tokio-tpc"][..], 10.0),
        ] {
            let b = hue(backend_style(base).color);
            for v in variants {
                let c = hue(backend_style(v).color);
                assert!(close(c, b) <= max_spread, "{v} left {base}'s hue");
            }
        }
        // Different families stay apart.
        let (e, u, t) = (
            hue(backend_style("epoll-et").color),
            hue(backend_style("uring").color),
            hue(backend_style("tokio").color),
        );
        assert!(close(e, u) > 90.0 && close(e, t) > 40.0 && close(u, t) > 90.0);
    }

    #[test]
    fn external_servers_are_family_less_singles_in_colours_of_their_own() {
        for name in ["nginx", "cfork"] {
            let st = backend_style(name);
            assert_eq!(family(name), Family::Other, "{name}");
            assert!(
                FALLBACK.contains(&(st.color.0, st.color.1, st.color.2)),
                "{name}"
            );
            for (r, g, b) in FAMILIES.iter().flat_map(|f| palette(*f)) {
                assert_ne!(st.color, RGBColor(*r, *g, *b), "{name}");
            }
        }
    }

    #[test]
    fn unknown_backends_hash_stably_off_the_palettes() {
        let a = backend_style("my-new-backend");
        assert_eq!(a, backend_style("my-new-backend"));
        // Pinned: a change here recolours every published chart of that backend.
        assert_eq!(fnv1a(b"my-new-backend"), 0x535d_8aef_b80e_28f9);
        assert_eq!(a.color, RGBColor(0x6B, 0x3A, 0x1E));
        assert_eq!(a.marker, Marker::Diamond);
        for (r, g, b) in FAMILIES.iter().flat_map(|f| palette(*f)) {
            assert_ne!(a.color, RGBColor(*r, *g, *b));
        }
    }

    #[test]
    fn no_backend_colour_is_black_or_white() {
        for c in FAMILIES.iter().flat_map(|f| palette(*f)).chain(FALLBACK) {
            assert_ne!(*c, (0, 0, 0));
            assert_ne!(*c, (255, 255, 255));
        }
    }
}
