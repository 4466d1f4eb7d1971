//! XGrad-CAM: w_k = Σ (G_k·A_k) / (Σ A_k + 1e-7).
pub struct XGradCam;

impl super::Method for XGradCam {
    fn name(&self) -> &'static str {
        "xgradcam"
    }
    fn map(&self, a: &[f32], g: &[f32], _k: usize, hw: usize) -> Vec<f32> {
        let w: Vec<f32> = a
            .chunks_exact(hw)
            .zip(g.chunks_exact(hw))
            .map(|(ak, gk)| {
                let s: f32 = ak.iter().sum::<f32>() + 1e-7;
                ak.iter().zip(gk).map(|(a, g)| g * a / s).sum()
            })
            .collect();
        super::weighted_sum(a, &w, hw)
    }
}
