//! Pictures: heat colour maps, the overlay over the photo, the threshold view, gradient images; PNG files
//! written whole or not at all.

use crate::cam::postprocess::{BBox, Map, StreamingBox};
use crate::colormaps;
use crate::error::{Error, Result};
use crate::output::{FileSet, PngCompression, PngRows};
use image::{Rgb, RgbImage};
use std::path::{Path, PathBuf};

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

/// `x.round().clamp(0.0, 255.0) as u8`, the same value for every f32 (NaN gives 0), without a call to libm's
/// `roundf` per byte (x86-64's baseline has no rounding instruction: 3% of a folder run's time went there).
#[inline]
pub fn round_u8(x: f32) -> u8 {
    if x.is_nan() || x < 0.5 {
        return 0;
    }
    if x >= 254.5 {
        return 255;
    }
    // 0.5 ≤ x < 254.5: the fraction x - trunc(x) is exact, and round() takes halves away from zero
    let t = x as u32;
    (t + (x - t as f32 >= 0.5) as u32) as u8
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
        Rgb([0, 1, 2].map(|c| round_u8(a * h[c] as f32 + (1.0 - a) * p[c] as f32)))
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
        Rgb([0, 1, 2].map(|c| round_u8(chans[c].data[i] * 255.0)))
    })
}

/// Encode a PNG and write it whole or not at all.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    let mut set = FileSet::new();
    save_png_in(&mut set, img, path)?;
    set.commit()
}

/// Encode a PNG as a file of `set`.
pub fn save_png_in(set: &mut FileSet, img: &RgbImage, path: &Path) -> Result<()> {
    save_png_with(set, img, path, PngCompression::default())
}

/// Encode a PNG as a file of `set`, compressed as `c` says.
pub fn save_png_with(set: &mut FileSet, img: &RgbImage, path: &Path, c: PngCompression) -> Result<()> {
    set.create(path, |out| {
        let mut png = PngRows::with(out, path, img.width(), img.height(), c)?;
        for row in img.as_raw().chunks_exact(img.width() as usize * 3) {
            png.row(row)?;
        }
        png.finish()
    })
}

/// How a map is drawn.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    pub colormap: Colormap,
    /// Weight of the heat map in the overlay.
    pub alpha: f32,
    /// The threshold view keeps the pixels whose map value exceeds this.
    pub threshold: f32,
    /// How the PNG files are compressed.
    pub png: PngCompression,
}

/// The pictures of a map: overlay, heat map, threshold view (in that order in `paths`), each where its path is
/// given.
pub struct MapPictures {
    pub paths: [Option<PathBuf>; 3],
    pub style: Style,
}

/// The map enlarged to the photo's size, row by row: its pictures (those asked) written into `set` as they
/// are made, and the paper's box (15% of the maximum) and the (row, column) of the peak, as
/// [`crate::cam::postprocess::bounding_box`] and [`Map::argmax`] give them on the enlarged map. The enlarged
/// map and the pictures never exist whole in memory (a 100-megapixel photo would need 1.3 GB for them).
pub fn write_map_pictures(
    set: &mut FileSet,
    photo: &RgbImage,
    map: &Map,
    pictures: Option<&MapPictures>,
) -> Result<(Option<BBox>, (usize, usize))> {
    let (pw, ph) = (photo.width() as usize, photo.height() as usize);
    let rows = map.rows(ph, pw);
    let mut r = vec![0f32; pw];
    let mut max = f32::NEG_INFINITY;
    for y in 0..ph {
        rows.row(y, &mut r);
        max = r.iter().fold(max, |a, b| a.max(*b));
    }
    let mut sb = StreamingBox::new(pw, max, 0.15);
    let mut line = vec![0u8; pw * 3];
    let photo_row = |y: usize| &photo.as_raw()[y * pw * 3..(y + 1) * pw * 3];
    match pictures {
        None => {
            for y in 0..ph {
                rows.row(y, &mut r);
                sb.push(&r);
            }
        }
        Some(MapPictures { paths: [o, h, k], style }) => {
            let a = style.alpha.clamp(0.0, 1.0);
            // the box is found on the first picture's pass, or on a pass of its own when none is asked
            let mut boxed = false;
            if let Some(o) = o {
                set.create(o, |out| {
                    let mut png = PngRows::with(out, o, pw as u32, ph as u32, style.png)?;
                    for y in 0..ph {
                        rows.row(y, &mut r);
                        sb.push(&r);
                        for ((px, v), dst) in photo_row(y).chunks_exact(3).zip(&r).zip(line.chunks_exact_mut(3)) {
                            let heat = style.colormap.color(*v);
                            for c in 0..3 {
                                dst[c] = round_u8(a * heat[c] as f32 + (1.0 - a) * px[c] as f32);
                            }
                        }
                        png.row(&line)?;
                    }
                    png.finish()
                })?;
                boxed = true;
            }
            if let Some(h) = h {
                set.create(h, |out| {
                    let mut png = PngRows::with(out, h, pw as u32, ph as u32, style.png)?;
                    for y in 0..ph {
                        rows.row(y, &mut r);
                        if !boxed {
                            sb.push(&r);
                        }
                        for (v, dst) in r.iter().zip(line.chunks_exact_mut(3)) {
                            dst.copy_from_slice(&style.colormap.color(*v));
                        }
                        png.row(&line)?;
                    }
                    png.finish()
                })?;
                boxed = true;
            }
            if let Some(k) = k {
                set.create(k, |out| {
                    let mut png = PngRows::with(out, k, pw as u32, ph as u32, style.png)?;
                    for y in 0..ph {
                        rows.row(y, &mut r);
                        if !boxed {
                            sb.push(&r);
                        }
                        for ((px, v), dst) in photo_row(y).chunks_exact(3).zip(&r).zip(line.chunks_exact_mut(3)) {
                            if *v > style.threshold {
                                dst.copy_from_slice(px);
                            } else {
                                dst.fill(0);
                            }
                        }
                        png.row(&line)?;
                    }
                    png.finish()
                })?;
                boxed = true;
            }
            if !boxed {
                for y in 0..ph {
                    rows.row(y, &mut r);
                    sb.push(&r);
                }
            }
        }
    }
    let peak = sb.argmax();
    Ok((sb.finish(), peak))
}

/// A 3×H×W image with values in [0, 1] as an RGB PNG of (out_w, out_h) in `set`, as [`chw_to_image`] draws it,
/// row by row.
#[allow(clippy::too_many_arguments)]
pub fn write_chw_png(
    set: &mut FileSet,
    x: &[f32],
    h: usize,
    w: usize,
    out_w: u32,
    out_h: u32,
    path: &Path,
    compression: PngCompression,
) -> Result<()> {
    let chans: Vec<Map> = (0..3).map(|c| Map::new(h, w, x[c * h * w..(c + 1) * h * w].to_vec())).collect();
    let rows: Vec<_> = chans.iter().map(|m| m.rows(out_h as usize, out_w as usize)).collect();
    let ow = out_w as usize;
    let mut r = vec![vec![0f32; ow]; 3];
    let mut line = vec![0u8; ow * 3];
    set.create(path, |out| {
        let mut png = PngRows::with(out, path, out_w, out_h, compression)?;
        for y in 0..out_h as usize {
            for c in 0..3 {
                rows[c].row(y, &mut r[c]);
            }
            for (i, dst) in line.chunks_exact_mut(3).enumerate() {
                for c in 0..3 {
                    dst[c] = round_u8(r[c][i] * 255.0);
                }
            }
            png.row(&line)?;
        }
        png.finish()
    })
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

/// [`grid`] under a header line (the image, the class, its probability), so that a grid saved alone still
/// says what it shows.
pub fn grid_with_header(header: &str, tiles: &[(String, RgbImage)], tile_w: u32) -> RgbImage {
    let g = grid(tiles, tile_w);
    let room = g.width().saturating_sub(12);
    let n = header.chars().count() as u32;
    // large letters where the line fits, else small ones on as many lines as it takes
    let scale = if n * 16 <= room { 2 } else { 1 };
    let per_line = (room / (8 * scale)).max(1) as usize;
    let chars: Vec<char> = header.chars().collect();
    let lines: Vec<String> = chars.chunks(per_line).map(|c| c.iter().collect()).collect();
    let line_h = 8 * scale + 4;
    let bar = lines.len() as u32 * line_h + 8;
    let mut out = RgbImage::from_pixel(g.width(), g.height() + bar, Rgb([16, 16, 16]));
    image::imageops::overlay(&mut out, &g, 0, bar as i64);
    for (i, l) in lines.iter().enumerate() {
        draw_text(&mut out, l, 6, 6 + i as u32 * line_h, scale, [255, 255, 255]);
    }
    out
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

#[cfg(test)]
mod round_tests {
    use super::round_u8;

    /// Equal to the formula on every f32 from -2 to 258 (each bit pattern there), the infinities and NaN.
    #[test]
    fn round_u8_equals_round_clamp_cast() {
        let want = |x: f32| x.round().clamp(0.0, 255.0) as u8;
        for x in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0, f32::MAX, f32::MIN, 1e-45] {
            assert_eq!(round_u8(x), want(x), "{x}");
        }
        for sign in [false, true] {
            let (lo, hi) = if sign { ((-0.0f32).to_bits(), (-2.0f32).to_bits()) } else { (0, 258.0f32.to_bits()) };
            for b in lo..=hi {
                let x = f32::from_bits(b);
                assert_eq!(round_u8(x), want(x), "{x} ({b:#x})");
            }
        }
    }
}
