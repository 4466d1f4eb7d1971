//! Grad-CAM++: α = g² / (2g² + S_k·g³ + 1e-6) (0 where g = 0), S_k = Σ A_k; w_k = Σ α·ReLU(g).
pub struct GradCamPlusPlus;

impl super::Method for GradCamPlusPlus {
    fn name(&self) -> &'static str {
        "gradcam++"
    }
    fn map(&self, a: &[f32], g: &[f32], _k: usize, hw: usize) -> Vec<f32> {
        let w: Vec<f32> = a
            .chunks_exact(hw)
            .zip(g.chunks_exact(hw))
            .map(|(ak, gk)| {
                let s: f32 = ak.iter().sum();
                gk.iter()
                    .map(|&g| {
                        if g == 0.0 {
                            return 0.0;
                        }
                        let g2 = g * g;
                        let alpha = g2 / (2.0 * g2 + s * g2 * g + 1e-6);
                        alpha * g.max(0.0)
                    })
                    .sum()
            })
            .collect();
        super::weighted_sum(a, &w, hw)
    }
}
