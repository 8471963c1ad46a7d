//! The one font every chart is drawn with, embedded in the binary.
//!
//! plotters is built without its `ttf` feature, so it never asks fontconfig or the file
//! system for fonts: a benchmark box without any font package installed renders the same
//! PNGs as a desktop. DejaVu Sans covers every glyph the charts use (µ, –, ≥, ×, …); its
//! licence sits beside it in `fonts/LICENSE`.

use std::sync::OnceLock;

use ab_glyph::FontRef;
use anyhow::anyhow;
use plotters::style::{register_font, FontStyle};

/// Family name the charts ask for; also what SVG viewers see in `font-family`.
pub(crate) const FAMILY: &str = "sans-serif";

/// DejaVu Sans 2.37, unmodified.
static DEJAVU_SANS: &[u8] = include_bytes!("fonts/DejaVuSans.ttf");

/// Registers the embedded font with plotters, once per process. Every drawing entry point
/// calls this first: plotters' ab_glyph text backend fails on a family nobody registered.
pub(crate) fn ensure_registered() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        // Bold and italic fall back to the regular face; the charts only vary the size.
        register_font(FAMILY, FontStyle::Normal, DEJAVU_SANS).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(anyhow!(
            "the embedded chart font (DejaVuSans.ttf) does not parse: the harness binary is \
             corrupt, rebuild it"
        ))
    }
}

/// The embedded face for drawing PNG text directly (see `text`).
pub(crate) fn face() -> anyhow::Result<&'static FontRef<'static>> {
    static FACE: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FACE.get_or_init(|| FontRef::try_from_slice(DEJAVU_SANS).ok())
        .as_ref()
        .ok_or_else(|| {
            anyhow!(
                "the embedded chart font (DejaVuSans.ttf) does not parse: the harness binary \
                 is corrupt, rebuild it"
            )
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_font_registers() {
        super::ensure_registered().unwrap();
        // Twice is fine: the second call is a no-op.
        super::ensure_registered().unwrap();
    }
}
