//! The CAM methods: each file defines only how (A, G) of one image become a low-resolution map; the pipeline
//! around them is in `cam`. A new method is one file and one row in [`crate::registry::ALL`].

pub(crate) mod ablationcam;
pub(crate) mod eigencam;
pub(crate) mod eigengradcam;
pub(crate) mod gradcam;
pub(crate) mod gradcam_elementwise;
pub(crate) mod gradcam_plusplus;
pub(crate) mod hirescam;
pub(crate) mod layercam;
pub(crate) mod scorecam;
pub(crate) mod xgradcam;

use crate::error::Result;
use candle_core::Tensor;

/// One image's activations and gradients at one layer, both K×(h·w) row-major.
pub struct Layer<'a> {
    pub a: &'a [f32],
    pub g: &'a [f32],
    pub k: usize,
    pub h: usize,
    pub w: usize,
    pub hw: usize,
}

/// What a method may ask of the network, for one image, one class and one target layer.
pub trait Scorer {
    /// The image's input tensor, (1, 3, H, W).
    fn input(&self) -> &Tensor;
    /// The class score of each image of a batch of inputs (B, 3, H, W).
    fn score_inputs(&self, x: &Tensor) -> Result<Vec<f32>>;
    /// The class score of each of a batch of replacement activations (B, K, h, w) of the target layer, the
    /// network run on from there.
    fn score_activations(&self, a: &Tensor) -> Result<Vec<f32>>;
    /// How many inputs or activations go through the network at once.
    fn batch_size(&self) -> usize;
}

/// A CAM method.
pub trait Method: Send + Sync {
    /// Whether the map depends on dY/dA (EigenCAM's does not; ScoreCAM's and AblationCAM's neither).
    fn uses_gradients(&self) -> bool {
        true
    }
    /// The map is the first principal component of the contributions, not their sum (EigenCAM).
    fn always_project(&self) -> bool {
        false
    }
    /// Per-channel contributions (K×(h·w)); their sum over channels is the map before ReLU (the reference's
    /// `get_cam_image`), or, with eigen-smooth, their first principal component.
    fn contributions(&self, l: &Layer, s: &dyn Scorer) -> Result<Vec<f32>>;
}

/// The CAM methods by name, as in the golden files and pytorch-grad-cam (the rows of [`crate::registry::ALL`]
/// that draw a map).
pub const METHODS: &[&str] = crate::registry::CAM_METHODS;

/// The CAM method called `name` (see [`crate::registry`]).
pub fn method(name: &str) -> Result<Box<dyn Method>> {
    crate::registry::find(name).and_then(|m| m.cam()).ok_or_else(|| crate::registry::unknown(name))
}

/// w_k·A_k for channel weights `w`.
pub(crate) fn scale_channels(a: &[f32], w: &[f32], hw: usize) -> Vec<f32> {
    a.chunks_exact(hw).zip(w).flat_map(|(ak, wk)| ak.iter().map(move |v| wk * v)).collect()
}

/// Σ_k of the contributions, in channel order (as the reference's sum over axis 1).
pub(crate) fn sum_channels(c: &[f32], hw: usize) -> Vec<f32> {
    let mut cam = vec![0f32; hw];
    for ck in c.chunks_exact(hw) {
        for (m, v) in cam.iter_mut().zip(ck) {
            *m += v;
        }
    }
    cam
}

/// The projection of the hw×K matrix Xᵀ (X = `x`, K×hw, centred over positions) on its first principal
/// component: Xᵀ·v₁ = s₁·u₁. Found by power iteration in f64 on the smaller of the two Gram matrices: the
/// hw×hw one (u₁, then scaled by s₁) when there are fewer positions than channels, else the K×K one (v₁, then
/// projected). An early layer (12,544 positions, 32 channels) thus needs a 32×32 matrix, not 1.2 GB.
/// Sign convention (the SVD's is arbitrary): the entry of largest magnitude is positive.
pub(crate) fn first_component_projection(x: &[f32], k: usize, hw: usize) -> Vec<f32> {
    let xc = centred(x, k, hw);
    if hw <= k {
        projection_by_positions(&xc, k, hw)
    } else {
        projection_by_channels(&xc, k, hw)
    }
}

/// X centred: each channel (column of Xᵀ) minus its mean over the hw positions; NaN counted as 0.
fn centred(x: &[f32], k: usize, hw: usize) -> Vec<f64> {
    let mut xc = vec![0f64; k * hw];
    for c in 0..k {
        let row = &x[c * hw..(c + 1) * hw];
        let clean = |v: f32| if v.is_nan() { 0.0 } else { v as f64 };
        let m = row.iter().map(|v| clean(*v)).sum::<f64>() / hw as f64;
        for p in 0..hw {
            xc[c * hw + p] = clean(row[p]) - m;
        }
    }
    xc
}

/// The top eigenvector of the symmetric n×n matrix `g` and its eigenvalue, by power iteration; None for a
/// zero matrix.
fn top_eigen(g: &[f64], n: usize) -> Option<(Vec<f64>, f64)> {
    let mut v: Vec<f64> = (0..n).map(|i| 1.0 + (i as f64 * 0.618).sin() * 0.1).collect();
    let mut lambda = 0.0;
    for _ in 0..2000 {
        let mut nv = vec![0f64; n];
        for p in 0..n {
            nv[p] = (0..n).map(|q| g[p * n + q] * v[q]).sum();
        }
        let norm = nv.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm == 0.0 {
            return None;
        }
        nv.iter_mut().for_each(|x| *x /= norm);
        let diff = nv.iter().zip(&v).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        v = nv;
        lambda = norm;
        if diff < 1e-12 {
            break;
        }
    }
    Some((v, lambda))
}

/// The entry of largest magnitude made positive, as f32.
fn signed(v: &[f64], scale: f64) -> Vec<f32> {
    let imax = (0..v.len()).max_by(|&a, &b| v[a].abs().total_cmp(&v[b].abs())).unwrap_or(0);
    let sign = if v.get(imax).is_some_and(|x| *x < 0.0) { -1.0 } else { 1.0 };
    v.iter().map(|x| (x * scale * sign) as f32).collect()
}

/// s₁·u₁ from the hw×hw Gram matrix G[p][q] = Σ_c X[c][p]·X[c][q].
fn projection_by_positions(xc: &[f64], k: usize, hw: usize) -> Vec<f32> {
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
    match top_eigen(&gram, hw) {
        Some((u, lambda)) => signed(&u, lambda.sqrt()),
        None => vec![0.0; hw],
    }
}

/// Xᵀ·v₁ from the K×K Gram matrix C[a][b] = Σ_p X[a][p]·X[b][p].
fn projection_by_channels(xc: &[f64], k: usize, hw: usize) -> Vec<f32> {
    let mut gram = vec![0f64; k * k];
    for a in 0..k {
        let ra = &xc[a * hw..(a + 1) * hw];
        for b in a..k {
            let rb = &xc[b * hw..(b + 1) * hw];
            let d: f64 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
            gram[a * k + b] = d;
            gram[b * k + a] = d;
        }
    }
    let Some((v, _)) = top_eigen(&gram, k) else {
        return vec![0.0; hw];
    };
    let mut proj = vec![0f64; hw];
    for (c, vc) in v.iter().enumerate() {
        for (p, x) in proj.iter_mut().zip(&xc[c * hw..(c + 1) * hw]) {
            *p += vc * x;
        }
    }
    signed(&proj, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both Gram matrices give the same projection (the SVD's two sides), to 1e-6 of its largest entry; the
    /// reference's tests pin the positions' route on real layers, this pins the channels' route to it.
    #[test]
    fn the_channels_route_equals_the_positions_route() {
        for (k, hw, seed) in [(4, 30, 1), (7, 49, 2), (32, 196, 3), (3, 3, 4)] {
            // a dominant direction plus noise, so that the first component is well separated
            let noise = crate::util::xorshift_unit(seed, k * hw);
            let x: Vec<f32> = (0..k * hw)
                .map(|i| {
                    let (c, p) = (i / hw, i % hw);
                    (c as f32 + 1.0) * ((p as f32) * 0.37).sin() + 0.1 * noise[i]
                })
                .collect();
            let xc = centred(&x, k, hw);
            let a = projection_by_positions(&xc, k, hw);
            let b = projection_by_channels(&xc, k, hw);
            let m = a.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = a.iter().zip(&b).fold(0f32, |d, (x, y)| d.max((x - y).abs()));
            assert!(d <= 1e-6 * m, "k {k} hw {hw}: differ by {d} (max {m})");
        }
    }
}
