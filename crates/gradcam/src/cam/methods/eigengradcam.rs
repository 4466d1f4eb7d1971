//! EigenGradCAM: the projection of G ⊙ A on its first principal component.
use super::{Layer, Method, Scorer};
use crate::error::Result;

pub struct EigenGradCam;

impl Method for EigenGradCam {
    fn always_project(&self) -> bool {
        true
    }
    fn contributions(&self, l: &Layer, _: &dyn Scorer) -> Result<Vec<f32>> {
        Ok(l.a.iter().zip(l.g).map(|(a, g)| a * g).collect())
    }
}
