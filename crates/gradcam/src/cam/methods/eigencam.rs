//! EigenCAM: the projection of A on its first principal component (no gradient).
use super::{Layer, Method, Scorer};
use crate::error::Result;

pub struct EigenCam;

impl Method for EigenCam {
    fn uses_gradients(&self) -> bool {
        false
    }
    fn always_project(&self) -> bool {
        true
    }
    fn contributions(&self, l: &Layer, _: &dyn Scorer) -> Result<Vec<f32>> {
        Ok(l.a.to_vec())
    }
}
