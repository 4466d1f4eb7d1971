//! Grad-CAM: w_k = mean over positions of dY/dA_k; cam = Σ_k w_k·A_k.
pub struct GradCam;

impl super::Method for GradCam {
    fn name(&self) -> &'static str {
        "gradcam"
    }
    fn map(&self, a: &[f32], g: &[f32], _k: usize, hw: usize) -> Vec<f32> {
        let w: Vec<f32> = g
            .chunks_exact(hw)
            .map(|gk| gk.iter().sum::<f32>() / hw as f32)
            .collect();
        super::weighted_sum(a, &w, hw)
    }
}
