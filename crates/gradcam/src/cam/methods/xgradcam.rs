//! XGrad-CAM: w_k = Σ (G_k·A_k) / (Σ A_k + 1e-7).
use super::{scale_channels, Layer, Method, Scorer};
use crate::error::Result;

pub struct XGradCam;

impl Method for XGradCam {
    fn contributions(&self, l: &Layer, _: &dyn Scorer) -> Result<Vec<f32>> {
        let w: Vec<f32> =
            l.a.chunks_exact(l.hw)
                .zip(l.g.chunks_exact(l.hw))
                .map(|(ak, gk)| {
                    let s: f32 = ak.iter().sum::<f32>() + 1e-7;
                    ak.iter().zip(gk).map(|(a, g)| g * a / s).sum()
                })
                .collect();
        Ok(scale_channels(l.a, &w, l.hw))
    }
}
