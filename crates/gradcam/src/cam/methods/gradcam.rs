//! Grad-CAM: w_k = mean over positions of dY/dA_k; contributions w_k·A_k.
use super::{scale_channels, Layer, Method, Scorer};
use crate::error::Result;

pub struct GradCam;

impl Method for GradCam {
    fn contributions(&self, l: &Layer, _: &dyn Scorer) -> Result<Vec<f32>> {
        let w: Vec<f32> = l.g.chunks_exact(l.hw).map(|gk| gk.iter().sum::<f32>() / l.hw as f32).collect();
        Ok(scale_channels(l.a, &w, l.hw))
    }
}
