//! Grad-CAM++: α = g² / (2g² + S_k·g³ + 1e-6) (0 where g = 0), S_k = Σ A_k; w_k = Σ α·ReLU(g).
use super::{scale_channels, Layer, Method, Scorer};
use crate::error::Result;

pub struct GradCamPlusPlus;

impl Method for GradCamPlusPlus {
    fn contributions(&self, l: &Layer, _: &dyn Scorer) -> Result<Vec<f32>> {
        let w: Vec<f32> =
            l.a.chunks_exact(l.hw)
                .zip(l.g.chunks_exact(l.hw))
                .map(|(ak, gk)| {
                    let s: f32 = ak.iter().sum();
                    gk.iter()
                        .map(|&g| {
                            if g == 0.0 {
                                return 0.0;
                            }
                            let g2 = g * g;
                            let alpha = g2 / (2.0 * g2 + s * g2 * g + 1e-6);
                            alpha * g.max(0.0)
                        })
                        .sum()
                })
                .collect();
        Ok(scale_channels(l.a, &w, l.hw))
    }
}
