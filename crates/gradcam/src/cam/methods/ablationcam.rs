//! AblationCAM: w_k = (y_c − y_c with channel k ablated) / y_c. Only the layers after the target run again, from
//! the cached activations, a batch of ablated copies at a time. The ablated value is 0 when the activations'
//! minimum is 0 (after a ReLU), else min − 1e7, as the reference.
use super::{scale_channels, Layer, Method, Scorer};
use crate::error::Result;
use candle_core::Tensor;

pub struct AblationCam;

impl Method for AblationCam {
    fn uses_gradients(&self) -> bool {
        false
    }
    fn contributions(&self, l: &Layer, s: &dyn Scorer) -> Result<Vec<f32>> {
        let dev = s.input().device().clone();
        let original = s.score_activations(&Tensor::from_slice(l.a, (1, l.k, l.h, l.w), &dev)?)?[0];
        let min = l.a.iter().fold(f32::INFINITY, |a, b| a.min(*b));
        let value = if min == 0.0 { 0.0 } else { min - 1e7 };
        let mut ablated = Vec::with_capacity(l.k);
        let per = l.k * l.hw;
        for start in (0..l.k).step_by(s.batch_size().max(1)) {
            let end = (start + s.batch_size().max(1)).min(l.k);
            let mut batch = Vec::with_capacity((end - start) * per);
            for k in start..end {
                let at = batch.len();
                batch.extend_from_slice(l.a);
                batch[at + k * l.hw..at + (k + 1) * l.hw].fill(value);
            }
            let batch = Tensor::from_vec(batch, (end - start, l.k, l.h, l.w), &dev)?;
            ablated.extend(s.score_activations(&batch)?);
        }
        let w: Vec<f32> = ablated.iter().map(|v| (original - v) / original).collect();
        Ok(scale_channels(l.a, &w, l.hw))
    }
}
