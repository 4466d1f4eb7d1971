//! Pictures: heat colour maps, the overlay over the photo, the threshold view, gradient images; PNG files
//! written whole or not at all.

use crate::cam::postprocess::Map;
use crate::colormaps;
use crate::error::{Error, Result};
use image::{Rgb, RgbImage};
use std::path::Path;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Colormap {
    /// matplotlib's jet (the tutorial's, and the default).
    #[default]
    Jet,
    Turbo,
    Viridis,
    Inferno,
}

impl Colormap {
    pub const NAMES: &'static [&'static str] = &["jet", "turbo", "viridis", "inferno"];

    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "jet" => Colormap::Jet,
            "turbo" => Colormap::Turbo,
            "viridis" => Colormap::Viridis,
            "inferno" => Colormap::Inferno,
            _ => {
                return Err(Error::invalid(format!(
                    "unknown colour map `{s}`; choose one of {}",
                    Self::NAMES.join(", ")
                )))
            }
        })
    }

    fn table(self) -> &'static [[u8; 3]; 256] {
        match self {
            Colormap::Jet => &colormaps::JET,
            Colormap::Turbo => &colormaps::TURBO,
            Colormap::Viridis => &colormaps::VIRIDIS,
            Colormap::Inferno => &colormaps::INFERNO,
        }
    }

    /// The colour of v in [0, 1] (uint8(255·v), as the reference).
    pub fn color(self, v: f32) -> [u8; 3] {
        self.table()[(v.clamp(0.0, 1.0) * 255.0) as usize]
    }
}

/// The map as colours, at the map's size.
pub fn heatmap(map: &Map, cmap: Colormap) -> RgbImage {
    RgbImage::from_fn(map.w as u32, map.h as u32, |x, y| Rgb(cmap.color(map.data[y as usize * map.w + x as usize])))
}

/// alpha·heat + (1 − alpha)·photo; `map` must have the photo's size.
pub fn overlay(photo: &RgbImage, map: &Map, cmap: Colormap, alpha: f32) -> RgbImage {
    let a = alpha.clamp(0.0, 1.0);
    RgbImage::from_fn(photo.width(), photo.height(), |x, y| {
        let p = photo.get_pixel(x, y).0;
        let h = cmap.color(map.data[y as usize * map.w + x as usize]);
        Rgb([0, 1, 2].map(|c| (a * h[c] as f32 + (1.0 - a) * p[c] as f32).round().clamp(0.0, 255.0) as u8))
    })
}

/// The photo where the map exceeds `threshold`, black elsewhere (the tutorial's second view).
pub fn threshold_view(photo: &RgbImage, map: &Map, threshold: f32) -> RgbImage {
    RgbImage::from_fn(photo.width(), photo.height(), |x, y| {
        if map.data[y as usize * map.w + x as usize] > threshold {
            *photo.get_pixel(x, y)
        } else {
            Rgb([0, 0, 0])
        }
    })
}

/// A 3×H×W image with values in [0, 1] (already normalised) as RGB, resized to (w, h).
pub fn chw_to_image(x: &[f32], h: usize, w: usize, out_w: u32, out_h: u32) -> RgbImage {
    let chans: Vec<Map> = (0..3)
        .map(|c| Map::new(h, w, x[c * h * w..(c + 1) * h * w].to_vec()).resize(out_h as usize, out_w as usize))
        .collect();
    RgbImage::from_fn(out_w, out_h, |xx, yy| {
        let i = yy as usize * out_w as usize + xx as usize;
        Rgb([0, 1, 2].map(|c| (chans[c].data[i] * 255.0).round().clamp(0.0, 255.0) as u8))
    })
}

/// Encode a PNG and write it whole or not at all.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png).map_err(|e| Error::image(path, format!("cannot encode: {e}")))?;
    crate::util::write_atomic(path, buf.get_ref())
}

/// Draw `text` with the bundled 8×8 bitmap font (font8x8), each font pixel `scale`×`scale`.
pub fn draw_text(img: &mut RgbImage, text: &str, x: u32, y: u32, scale: u32, color: [u8; 3]) {
    use font8x8::UnicodeFonts;
    let mut cx = x;
    for ch in text.chars() {
        let glyph = font8x8::BASIC_FONTS.get(ch).or_else(|| font8x8::BASIC_FONTS.get('?')).unwrap_or([0; 8]);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8u32 {
                if bits >> col & 1 == 1 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            let (px, py) = (cx + col * scale + dx, y + row as u32 * scale + dy);
                            if px < img.width() && py < img.height() {
                                img.put_pixel(px, py, Rgb(color));
                            }
                        }
                    }
                }
            }
        }
        cx += 8 * scale;
    }
}

/// A comparison picture: the tiles (e.g. each method's overlay) side by side, up to 4 a row, each under a bar
/// with its label. Tiles are scaled to `tile_w` pixels wide, keeping their aspect.
pub fn grid(tiles: &[(String, RgbImage)], tile_w: u32) -> RgbImage {
    if tiles.is_empty() {
        return RgbImage::new(1, 1);
    }
    let (w0, h0) = tiles[0].1.dimensions();
    let tile_h = ((tile_w as f64 * h0 as f64 / w0.max(1) as f64).round() as u32).max(1);
    let scale = 2;
    let bar = 8 * scale + 8;
    let gap = 4;
    let cols = tiles.len().min(4) as u32;
    let rows = (tiles.len() as u32).div_ceil(cols);
    let (cw, ch) = (tile_w + gap, tile_h + bar + gap);
    let mut out = RgbImage::from_pixel(cols * cw + gap, rows * ch + gap, Rgb([32, 32, 32]));
    for (i, (label, img)) in tiles.iter().enumerate() {
        let (c, r) = (i as u32 % cols, i as u32 / cols);
        let (x, y) = (gap + c * cw, gap + r * ch);
        let fitted = image::imageops::resize(img, tile_w, tile_h, image::imageops::FilterType::Triangle);
        image::imageops::overlay(&mut out, &fitted, x as i64, (y + bar) as i64);
        let max_chars = (tile_w / (8 * scale)) as usize;
        let text: String = label.chars().take(max_chars).collect();
        draw_text(&mut out, &text, x + 2, y + 4, scale, [240, 240, 240]);
    }
    out
}
