//! Images in and out of the network: decoding (PNG, JPEG, GIF first frame, BMP, TIFF, WebP) with EXIF
//! orientation applied and any pixel format converted to 8-bit RGB; a pixel limit checked from the header
//! before decoding; PIL's bilinear resize reproduced exactly (antialiased when shrinking, fixed-point, two
//! passes); and normalisation into the model's input tensor.

use crate::error::{Error, Result};
use crate::models::Normalization;
use candle_core::{Device, Tensor};
use image::{ImageDecoder, ImageReader, RgbImage};
use std::path::Path;

/// Default pixel limit: 100 megapixels.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// Decode an image file to 8-bit RGB, refusing from the header alone one larger than `max_pixels`.
pub fn load_rgb(path: impl AsRef<Path>, max_pixels: u64) -> Result<RgbImage> {
    let path = path.as_ref();
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::image(path, "is a folder, not an image"));
    }
    if meta.len() == 0 {
        return Err(Error::image(path, "the file is empty (0 bytes)"));
    }
    let mut reader = ImageReader::open(path).map_err(|e| Error::io(path, e))?;
    reader = reader.with_guessed_format().map_err(|e| Error::io(path, e))?;
    if reader.format().is_none() {
        return Err(Error::image(path, "unknown format (expected PNG, JPEG, GIF, BMP, TIFF or WebP)"));
    }
    if reader.format() == Some(image::ImageFormat::Png) {
        // the PNG decoder reads on to the first data chunk before it reports a size: check the header here
        let mut head = [0u8; 24];
        use std::io::Read;
        let n = std::fs::File::open(path).and_then(|mut f| f.read(&mut head)).map_err(|e| Error::io(path, e))?;
        if n == 24 && &head[12..16] == b"IHDR" {
            let w = u32::from_be_bytes([head[16], head[17], head[18], head[19]]);
            let h = u32::from_be_bytes([head[20], head[21], head[22], head[23]]);
            check_pixels(path, w, h, max_pixels)?;
        }
    }
    if reader.format() == Some(image::ImageFormat::Jpeg) {
        check_jpeg_complete(path)?;
    }
    reader.no_limits();
    let mut decoder = reader.into_decoder().map_err(|e| Error::image(path, e.to_string()))?;
    let (w, h) = decoder.dimensions();
    check_pixels(path, w, h, max_pixels)?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = image::DynamicImage::from_decoder(decoder).map_err(|e| Error::image(path, e.to_string()))?;
    img.apply_orientation(orientation);
    Ok(img.to_rgb8())
}

fn check_pixels(path: &Path, w: u32, h: u32, max_pixels: u64) -> Result<()> {
    let pixels = w as u64 * h as u64;
    if pixels > max_pixels {
        return Err(Error::image(
            path,
            format!(
                "{w}x{h} is {:.1} megapixels, over the limit of {:.1} (raise it with --max-pixels)",
                pixels as f64 / 1e6,
                max_pixels as f64 / 1e6
            ),
        ));
    }
    if pixels == 0 {
        return Err(Error::image(path, format!("the image is {w}x{h}")));
    }
    Ok(())
}

/// The JPEG decoder fills a truncated file with grey without an error: require the end-of-image marker after
/// the start of scan (in entropy-coded data 0xFF is always stuffed, so FF D9 there is the real marker).
fn check_jpeg_complete(path: &Path) -> Result<()> {
    let b = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let sos = b.windows(2).position(|w| w == [0xFF, 0xDA]);
    let complete = sos.is_some_and(|s| b[s..].windows(2).any(|w| w == [0xFF, 0xD9]));
    if complete {
        Ok(())
    } else {
        Err(Error::image(path, format!("truncated JPEG ({} bytes, no end-of-image marker)", b.len())))
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// PIL's coefficients for a bilinear resample of one axis: (first input index, count) per output, and
/// fixed-point weights, `ksize` per output.
fn coeffs(in_size: usize, out_size: usize) -> (usize, Vec<(usize, usize)>, Vec<i32>) {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // bilinear support 1.0
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut kk = vec![0i32; out_size * ksize];
    let tri = |x: f64| {
        let x = x.abs();
        if x < 1.0 {
            1.0 - x
        } else {
            0.0
        }
    };
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut k = vec![0f64; n];
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate() {
            *kx = tri((x as f64 + xmin as f64 - center + 0.5) * ss);
            ww += *kx;
        }
        for (x, kx) in k.iter().enumerate() {
            let v = if ww != 0.0 { kx / ww } else { *kx };
            let f = v * (1u32 << PRECISION_BITS) as f64;
            kk[xx * ksize + x] = if v < 0.0 { (-0.5 + f) as i32 } else { (0.5 + f) as i32 };
        }
        bounds.push((xmin, n));
    }
    (ksize, bounds, kk)
}

#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resize exactly as PIL's `Image.resize((w, h), Image.BILINEAR)` does for an RGB image.
pub fn resize_bilinear_pil(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    let (iw, ih) = img.dimensions();
    let src = img.as_raw();
    let mut cur: Vec<u8>;
    let mut cw = iw as usize;
    let cur_ref: &[u8] = if iw != w {
        let (ks, b, k) = coeffs(iw as usize, w as usize);
        let w = w as usize;
        cur = vec![0u8; w * ih as usize * 3];
        for y in 0..ih as usize {
            let row = &src[y * cw * 3..(y + 1) * cw * 3];
            for (xx, &(xmin, n)) in b.iter().enumerate() {
                let kx = &k[xx * ks..xx * ks + n];
                for c in 0..3 {
                    let mut ss: i32 = 1 << (PRECISION_BITS - 1);
                    for (x, kv) in kx.iter().enumerate() {
                        ss += row[(xmin + x) * 3 + c] as i32 * kv;
                    }
                    cur[(y * w + xx) * 3 + c] = clip8(ss);
                }
            }
        }
        cw = w;
        &cur
    } else {
        src
    };
    let out: Vec<u8> = if ih != h {
        let (ks, b, k) = coeffs(ih as usize, h as usize);
        let mut out = vec![0u8; cw * h as usize * 3];
        for (yy, &(ymin, n)) in b.iter().enumerate() {
            let ky = &k[yy * ks..yy * ks + n];
            for x in 0..cw * 3 {
                let mut ss: i32 = 1 << (PRECISION_BITS - 1);
                for (y, kv) in ky.iter().enumerate() {
                    ss += cur_ref[(ymin + y) * cw * 3 + x] as i32 * kv;
                }
                out[yy * cw * 3 + x] = clip8(ss);
            }
        }
        out
    } else {
        cur_ref.to_vec()
    };
    RgbImage::from_raw(w, h, out).unwrap_or_else(|| RgbImage::new(w, h))
}

/// (1, 3, H, W) tensor of (x/255 − mean)/std, computed in f32 as the reference does.
pub fn to_tensor(img: &RgbImage, norm: &Normalization, dev: &Device) -> Result<Tensor> {
    let (w, h) = img.dimensions();
    let (w, h) = (w as usize, h as usize);
    let mut v = vec![0f32; 3 * w * h];
    for (i, p) in img.as_raw().chunks_exact(3).enumerate() {
        for c in 0..3 {
            v[c * w * h + i] = (p[c] as f32 / 255.0 - norm.mean[c]) / norm.std[c];
        }
    }
    Ok(Tensor::from_vec(v, (1, 3, h, w), dev)?)
}

/// The model's input for an image: PIL bilinear resize to (h, w), no crop, then normalise.
pub fn preprocess(img: &RgbImage, size: (usize, usize), norm: &Normalization, dev: &Device) -> Result<Tensor> {
    let r = resize_bilinear_pil(img, size.1 as u32, size.0 as u32);
    to_tensor(&r, norm, dev)
}

/// Default limit on the decoded size of an image: 400 MB.
pub const DEFAULT_MAX_DECODED_BYTES: u64 = 400_000_000;

/// What an image may cost, checked from its header before decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageLimits {
    pub max_pixels: u64,
    pub max_decoded_bytes: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits { max_pixels: DEFAULT_MAX_PIXELS, max_decoded_bytes: DEFAULT_MAX_DECODED_BYTES }
    }
}

/// [`load_rgb`] within `limits`.
pub fn load_rgb_with(path: impl AsRef<Path>, limits: &ImageLimits) -> Result<RgbImage> {
    load_rgb(path, limits.max_pixels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_resize_keeps_pixels() {
        let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8 * 40, y as u8 * 50, 7]));
        assert_eq!(resize_bilinear_pil(&img, 5, 4), img);
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(37, 23, image::Rgb([200, 10, 99]));
        let r = resize_bilinear_pil(&img, 16, 50);
        assert!(r.pixels().all(|p| p.0 == [200, 10, 99]));
    }

    #[test]
    fn pil_reference_values() {
        // A 4x1 ramp halved: PIL gives [32, 159] for [0, 64, 128, 255] (triangle of support 2, weights
        // 1/8, 3/8, 3/8, 1/8 around centres 1 and 3): (0*3 + 64*3 + 128*1)/7 ... computed by hand below.
        let img = RgbImage::from_fn(4, 1, |x, _| {
            let v = [0u8, 64, 128, 255][x as usize];
            image::Rgb([v, v, v])
        });
        let r = resize_bilinear_pil(&img, 2, 1);
        // centre 1.0, support 2: x in [0, 3): weights tri((x+0.5-1)/2) = 0.75, 0.75, 0.25 → /1.75
        let a = ((0.0 * 0.75 + 64.0 * 0.75 + 128.0 * 0.25) / 1.75f64).round() as u8;
        // centre 3.0: x in [1, 4): weights 0.25, 0.75, 0.75
        let b = ((64.0 * 0.25 + 128.0 * 0.75 + 255.0 * 0.75) / 1.75f64).round() as u8;
        assert_eq!(r.get_pixel(0, 0).0[0], a);
        assert_eq!(r.get_pixel(1, 0).0[0], b);
    }
}
