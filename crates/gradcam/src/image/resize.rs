//! PIL's bilinear resize reproduced exactly (antialiased when shrinking, fixed-point, two passes), and
//! normalisation into the model's input tensor.

use crate::error::Result;
use crate::models::Normalization;
use candle_core::{Device, Tensor};
use image::RgbImage;

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
