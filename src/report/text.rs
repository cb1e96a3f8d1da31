//! Text in pictures, in the built-in font: DejaVu Sans (`assets/fonts`, Bitstream Vera
//! license), since a machine may have no fonts. Class names are any UTF-8 text; one too wide
//! for its place is cut with an ellipsis.

use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use anyhow::Result;

pub const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

fn font() -> Result<&'static FontRef<'static>> {
    static PARSED: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    PARSED
        .get_or_init(|| FontRef::try_from_slice(FONT).ok())
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the built-in font cannot be read"))
}

/// How wide `text` is at `px` pixels a line.
pub fn width(text: &str, px: f32) -> Result<f32> {
    let font = font()?.as_scaled(PxScale::from(px));
    let mut previous = None;
    let mut width = 0.0;
    for c in text.chars() {
        let glyph = font.glyph_id(c);
        if let Some(previous) = previous {
            width += font.kern(previous, glyph);
        }
        width += font.h_advance(glyph);
        previous = Some(glyph);
    }
    Ok(width)
}

/// `text`, cut with an ellipsis to at most `max` pixels wide at `px`.
pub fn fit(text: &str, px: f32, max: f32) -> Result<String> {
    if width(text, px)? <= max {
        return Ok(text.to_owned());
    }
    let chars: Vec<char> = text.chars().collect();
    for keep in (0..chars.len()).rev() {
        let cut = format!("{}…", chars[..keep].iter().collect::<String>().trim_end());
        if width(&cut, px)? <= max {
            return Ok(cut);
        }
    }
    Ok("…".into())
}

/// Draws `text` at `px` pixels a line, its top-left corner at the origin: `ink(x, y)` for
/// each pixel the glyphs cover by a third or more (at half, a one-pixel stem that straddles two
/// pixels goes missing).
pub fn draw(text: &str, px: f32, mut ink: impl FnMut(u32, u32)) -> Result<()> {
    let font = font()?;
    let scaled = font.as_scaled(PxScale::from(px));
    let mut x = 0.0;
    let mut previous = None;
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(previous) = previous {
            x += scaled.kern(previous, id);
        }
        let glyph = id.with_scale_and_position(px, ab_glyph::point(x, scaled.ascent()));
        x += scaled.h_advance(id);
        previous = Some(id);
        if let Some(outline) = font.outline_glyph(glyph) {
            let bounds = outline.px_bounds();
            outline.draw(|gx, gy, coverage| {
                let (px, py) = (bounds.min.x + gx as f32, bounds.min.y + gy as f32);
                if coverage >= 0.3 && px >= 0.0 && py >= 0.0 {
                    ink(px as u32, py as u32);
                }
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_measured_cut_and_drawn() {
        let wide = width("T-shirt/top", 14.0).unwrap();
        assert!(wide > width("Bag", 14.0).unwrap() && wide > 50.0, "{wide}");
        assert_eq!(fit("Bag", 14.0, 100.0).unwrap(), "Bag");
        let cut = fit("T-shirt/top", 14.0, 40.0).unwrap();
        assert!(
            cut.ends_with('…') && width(&cut, 14.0).unwrap() <= 40.0,
            "{cut}"
        );
        let mut inked = 0;
        draw("Ankle boot, Ω", 14.0, |_, _| inked += 1).unwrap();
        assert!(inked > 100, "{inked} pixels inked");
    }
}
