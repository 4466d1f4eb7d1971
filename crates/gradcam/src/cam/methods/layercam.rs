//! LayerCAM: contributions ReLU(G_k) ⊙ A_k.
use super::{Layer, Method, Scorer};
use crate::error::Result;

pub struct LayerCam;

impl Method for LayerCam {
    fn contributions(&self, l: &Layer, _: &dyn Scorer) -> Result<Vec<f32>> {
        Ok(l.a.iter().zip(l.g).map(|(a, g)| g.max(0.0) * a).collect())
    }
}
