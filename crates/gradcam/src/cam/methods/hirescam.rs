//! HiResCAM: cam = Σ_k G_k ⊙ A_k (no spatial averaging).
pub struct HiResCam;

impl super::Method for HiResCam {
    fn name(&self) -> &'static str {
        "hirescam"
    }
    fn map(&self, a: &[f32], g: &[f32], _k: usize, hw: usize) -> Vec<f32> {
        super::elementwise_sum(a, g, hw, |a, g| a * g)
    }
}
