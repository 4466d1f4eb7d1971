//! EigenCAM: the projection of A on its first principal component (no gradient).
pub struct EigenCam;

impl super::Method for EigenCam {
    fn name(&self) -> &'static str {
        "eigencam"
    }
    fn uses_gradients(&self) -> bool {
        false
    }
    fn map(&self, a: &[f32], _g: &[f32], k: usize, hw: usize) -> Vec<f32> {
        super::first_component_projection(a, k, hw)
    }
}
