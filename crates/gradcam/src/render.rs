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
    RgbImage::from_fn(map.w as u32, map.h as u32, |x, y| {
        Rgb(cmap.color(map.data[y as usize * map.w + x as usize]))
    })
}

/// alpha·heat + (1 − alpha)·photo; `map` must have the photo's size.
pub fn overlay(photo: &RgbImage, map: &Map, cmap: Colormap, alpha: f32) -> RgbImage {
    let a = alpha.clamp(0.0, 1.0);
    RgbImage::from_fn(photo.width(), photo.height(), |x, y| {
        let p = photo.get_pixel(x, y).0;
        let h = cmap.color(map.data[y as usize * map.w + x as usize]);
        Rgb([0, 1, 2].map(|c| {
            (a * h[c] as f32 + (1.0 - a) * p[c] as f32)
                .round()
                .clamp(0.0, 255.0) as u8
        }))
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
        .map(|c| {
            Map::new(h, w, x[c * h * w..(c + 1) * h * w].to_vec())
                .resize(out_h as usize, out_w as usize)
        })
        .collect();
    RgbImage::from_fn(out_w, out_h, |xx, yy| {
        let i = yy as usize * out_w as usize + xx as usize;
        Rgb([0, 1, 2].map(|c| (chans[c].data[i] * 255.0).round().clamp(0.0, 255.0) as u8))
    })
}

/// Encode a PNG and write it whole or not at all.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png)
        .map_err(|e| Error::image(path, format!("cannot encode: {e}")))?;
    crate::util::write_atomic(path, buf.get_ref())
}
