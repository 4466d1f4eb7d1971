//! The CAM methods: each file defines only how (A, G) of one image become a low-resolution map; the pipeline
//! around them is in `cam`. A new method is one file and one line in [`method`].

mod eigencam;
mod eigengradcam;
mod gradcam;
mod gradcam_elementwise;
mod gradcam_plusplus;
mod hirescam;
mod layercam;
mod xgradcam;

use crate::error::{Error, Result};

/// A CAM method.
pub trait Method: Send + Sync {
    fn name(&self) -> &'static str;
    /// Whether the map depends on dY/dA (EigenCAM's does not).
    fn uses_gradients(&self) -> bool {
        true
    }
    /// The map (h·w values, before ReLU) of one image from its activations `a` and gradients `g`, both
    /// K×(h·w) row-major.
    fn map(&self, a: &[f32], g: &[f32], k: usize, hw: usize) -> Vec<f32>;
}

/// The methods by name, as in the golden files and pytorch-grad-cam.
pub const METHODS: &[&str] = &[
    "gradcam",
    "hirescam",
    "gradcam-elementwise",
    "gradcam++",
    "xgradcam",
    "layercam",
    "eigencam",
    "eigengradcam",
];

pub fn method(name: &str) -> Result<Box<dyn Method>> {
    Ok(match name {
        "gradcam" => Box::new(gradcam::GradCam),
        "hirescam" => Box::new(hirescam::HiResCam),
        "gradcam-elementwise" => Box::new(gradcam_elementwise::GradCamElementWise),
        "gradcam++" => Box::new(gradcam_plusplus::GradCamPlusPlus),
        "xgradcam" => Box::new(xgradcam::XGradCam),
        "layercam" => Box::new(layercam::LayerCam),
        "eigencam" => Box::new(eigencam::EigenCam),
        "eigengradcam" => Box::new(eigengradcam::EigenGradCam),
        other => {
            return Err(Error::invalid(format!(
                "unknown method `{other}`; methods: {}, guided-backprop, guided-gradcam",
                METHODS.join(", ")
            )))
        }
    })
}

/// Σ_k w_k·A_k for channel weights `w`.
pub(crate) fn weighted_sum(a: &[f32], w: &[f32], hw: usize) -> Vec<f32> {
    let mut cam = vec![0f32; hw];
    for (ak, wk) in a.chunks_exact(hw).zip(w) {
        for (c, v) in cam.iter_mut().zip(ak) {
            *c += wk * v;
        }
    }
    cam
}

/// Σ_k f(A_k, G_k) element-wise.
pub(crate) fn elementwise_sum(
    a: &[f32],
    g: &[f32],
    hw: usize,
    f: impl Fn(f32, f32) -> f32,
) -> Vec<f32> {
    let mut cam = vec![0f32; hw];
    for (ak, gk) in a.chunks_exact(hw).zip(g.chunks_exact(hw)) {
        for ((c, av), gv) in cam.iter_mut().zip(ak).zip(gk) {
            *c += f(*av, *gv);
        }
    }
    cam
}

/// The projection of the hw×K matrix Xᵀ (X = `x`, K×hw, centred over positions) on its first principal
/// component: X·v₁ = s₁·u₁, with u₁ the top eigenvector of the hw×hw Gram matrix (power iteration in f64).
/// Sign convention (the SVD's is arbitrary): the entry of largest magnitude is positive.
pub(crate) fn first_component_projection(x: &[f32], k: usize, hw: usize) -> Vec<f32> {
    let mut xc = vec![0f64; k * hw];
    // centre each channel (column of Xᵀ) over the hw positions
    for c in 0..k {
        let row = &x[c * hw..(c + 1) * hw];
        let clean = |v: f32| if v.is_nan() { 0.0 } else { v as f64 };
        let m = row.iter().map(|v| clean(*v)).sum::<f64>() / hw as f64;
        for p in 0..hw {
            xc[c * hw + p] = clean(row[p]) - m;
        }
    }
    // Gram matrix G[p][q] = Σ_c X[c][p]·X[c][q]
    let mut gram = vec![0f64; hw * hw];
    for c in 0..k {
        let r = &xc[c * hw..(c + 1) * hw];
        for p in 0..hw {
            let rp = r[p];
            if rp == 0.0 {
                continue;
            }
            for q in 0..hw {
                gram[p * hw + q] += rp * r[q];
            }
        }
    }
    let mut v: Vec<f64> = (0..hw)
        .map(|i| 1.0 + (i as f64 * 0.618).sin() * 0.1)
        .collect();
    let mut lambda = 0.0;
    for _ in 0..2000 {
        let mut nv = vec![0f64; hw];
        for p in 0..hw {
            nv[p] = (0..hw).map(|q| gram[p * hw + q] * v[q]).sum();
        }
        let norm = nv.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm == 0.0 {
            return vec![0.0; hw];
        }
        nv.iter_mut().for_each(|x| *x /= norm);
        let diff = nv
            .iter()
            .zip(&v)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        v = nv;
        lambda = norm;
        if diff < 1e-12 {
            break;
        }
    }
    let s = lambda.sqrt();
    let imax = (0..hw)
        .max_by(|&a, &b| v[a].abs().total_cmp(&v[b].abs()))
        .unwrap_or(0);
    let sign = if v[imax] < 0.0 { -1.0 } else { 1.0 };
    v.iter().map(|x| (x * s * sign) as f32).collect()
}
