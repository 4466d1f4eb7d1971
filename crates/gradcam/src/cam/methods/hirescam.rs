//! HiResCAM: contributions G_k ⊙ A_k (no spatial averaging).
use super::{Layer, Method, Scorer};
use crate::error::Result;

pub struct HiResCam;

impl Method for HiResCam {
    fn contributions(&self, l: &Layer, _: &dyn Scorer) -> Result<Vec<f32>> {
        Ok(l.a.iter().zip(l.g).map(|(a, g)| a * g).collect())
    }
}
