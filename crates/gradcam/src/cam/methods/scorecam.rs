//! ScoreCAM: each channel's map, upsampled to the input (bilinear, align_corners=True) and min-max scaled to
//! [0, 1], masks the input; w = softmax over channels of the masked inputs' class scores. The masked inputs go
//! through the network in batches; constant channels (all-zero masks) share one pass.
use super::{scale_channels, Layer, Method, Scorer};
use crate::error::Result;
use candle_core::Tensor;

pub struct ScoreCam;

/// Bilinear resize with align_corners=True (PyTorch's `UpsamplingBilinear2d`).
fn upsample_align_corners(src: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
    let axis = |o: usize, i: usize| -> Vec<(usize, usize, f32)> {
        (0..o)
            .map(|d| {
                let f = if o > 1 { d as f64 * (i - 1) as f64 / (o - 1) as f64 } else { 0.0 };
                let s = (f.floor() as usize).min(i - 1);
                (s, (s + 1).min(i - 1), (f - s as f64) as f32)
            })
            .collect()
    };
    let (ys, xs) = (axis(oh, h), axis(ow, w));
    let mut out = Vec::with_capacity(oh * ow);
    for &(y0, y1, ty) in &ys {
        for &(x0, x1, tx) in &xs {
            let top = src[y0 * w + x0] * (1.0 - tx) + src[y0 * w + x1] * tx;
            let bot = src[y1 * w + x0] * (1.0 - tx) + src[y1 * w + x1] * tx;
            out.push(top * (1.0 - ty) + bot * ty);
        }
    }
    out
}

impl Method for ScoreCam {
    fn uses_gradients(&self) -> bool {
        false
    }
    fn contributions(&self, l: &Layer, s: &dyn Scorer) -> Result<Vec<f32>> {
        let x = s.input();
        let (_, _, ih, iw) = x.dims4()?;
        let bs = s.batch_size().max(1);
        // A channel whose map is constant (a dead channel after a ReLU, typically) masks the whole input to
        // zero: all of them score the same all-zero input, which runs once.
        let constant: Vec<bool> = l.a.chunks_exact(l.hw).map(|ak| ak.iter().all(|v| *v == ak[0])).collect();
        let live: Vec<usize> = (0..l.k).filter(|&k| !constant[k]).collect();
        let mut scores = vec![0f32; l.k];
        if live.len() < l.k {
            let zero = s.score_inputs(&x.zeros_like()?)?[0];
            (0..l.k).filter(|&k| constant[k]).for_each(|k| scores[k] = zero);
        }
        for chunk in live.chunks(bs) {
            let mut masks = Vec::with_capacity(chunk.len() * ih * iw);
            for &k in chunk {
                let u = upsample_align_corners(&l.a[k * l.hw..(k + 1) * l.hw], l.h, l.w, ih, iw);
                let (mn, mx) = u.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
                masks.extend(u.iter().map(|v| (v - mn) / (mx - mn + 1e-8)));
            }
            let masks = Tensor::from_vec(masks, (chunk.len(), 1, ih, iw), x.device())?;
            for (k, v) in chunk.iter().zip(s.score_inputs(&masks.broadcast_mul(x)?)?) {
                scores[*k] = v;
            }
        }
        // softmax over the channels
        let m = scores.iter().fold(f32::NEG_INFINITY, |a, b| a.max(*b));
        let e: Vec<f32> = scores.iter().map(|v| (v - m).exp()).collect();
        let z: f32 = e.iter().sum();
        let w: Vec<f32> = e.iter().map(|v| v / z).collect();
        Ok(scale_channels(l.a, &w, l.hw))
    }
}
