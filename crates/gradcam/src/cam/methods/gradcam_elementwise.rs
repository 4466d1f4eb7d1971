//! Grad-CAM element-wise: cam = Σ_k ReLU(G_k ⊙ A_k).
pub struct GradCamElementWise;

impl super::Method for GradCamElementWise {
    fn name(&self) -> &'static str {
        "gradcam-elementwise"
    }
    fn map(&self, a: &[f32], g: &[f32], _k: usize, hw: usize) -> Vec<f32> {
        super::elementwise_sum(a, g, hw, |a, g| (a * g).max(0.0))
    }
}
