//! LayerCAM: cam = Σ_k ReLU(G_k) ⊙ A_k.
pub struct LayerCam;

impl super::Method for LayerCam {
    fn name(&self) -> &'static str {
        "layercam"
    }
    fn map(&self, a: &[f32], g: &[f32], _k: usize, hw: usize) -> Vec<f32> {
        super::elementwise_sum(a, g, hw, |a, g| g.max(0.0) * a)
    }
}
