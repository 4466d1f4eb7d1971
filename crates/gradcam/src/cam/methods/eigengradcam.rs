//! EigenGradCAM: the projection of G ⊙ A on its first principal component.
pub struct EigenGradCam;

impl super::Method for EigenGradCam {
    fn name(&self) -> &'static str {
        "eigengradcam"
    }
    fn map(&self, a: &[f32], g: &[f32], k: usize, hw: usize) -> Vec<f32> {
        let ga: Vec<f32> = a.iter().zip(g).map(|(a, g)| a * g).collect();
        super::first_component_projection(&ga, k, hw)
    }
}
