//! Layer normalisation over the channels, with an affine γ, β: `nn.LayerNorm(C)` on a channels-last tensor
//! (…, C) (ConvNeXt's blocks), and torchvision's `LayerNorm2d` on (N, C, H, W), which normalises over C at
//! each pixel (permute → `F.layer_norm` → permute, one module: here one node, which transposes to channels-last
//! and back around the same row kernel, as PyTorch's kernel reads a contiguous copy).
//!
//! Per row: μ, σ² (biased) over C, r = 1/√(σ² + ε), y = (x·r − μ·r)·γ + β, as PyTorch's CPU kernel forms it.
//! Backward: with g = dy·γ and x̂ = (x − μ)·r, dx = r·(g − mean(g) − x̂·mean(g·x̂)).

use super::permute::transpose_batched;
use crate::graph::{Ctx, Op, Saves};
use crate::ops::{with_f32, Grad};
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub eps: f64,
    /// `LayerNorm2d`: the input is (N, C, H, W) and C is normalised at each pixel; else C is the last dimension.
    pub channels_first: bool,
}

/// Rows per parallel task: about 8K values.
fn rows_per_task(c: usize) -> usize {
    (8192 / c.max(1)).max(1)
}

/// (μ, r) of one row, in f32 over two passes.
fn moments(x: &[f32], eps: f64) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, (1.0 / (var as f64 + eps).sqrt()) as f32)
}

/// y = LayerNorm(x) over rows of `c` values.
pub(crate) fn ln_rows_forward(x: &[f32], c: usize, gamma: &[f32], beta: &[f32], eps: f64) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    let k = rows_per_task(c) * c;
    y.par_chunks_mut(k).zip(x.par_chunks(k)).for_each(|(y, x)| {
        for (y, x) in y.chunks_mut(c).zip(x.chunks(c)) {
            let (m, r) = moments(x, eps);
            let b = -m * r;
            for (((y, x), g), be) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
                *y = (x * r + b) * g + be;
            }
        }
    });
    y
}

/// dx of [`ln_rows_forward`] from x and dy.
pub(crate) fn ln_rows_backward(x: &[f32], dy: &[f32], c: usize, gamma: &[f32], eps: f64) -> Vec<f32> {
    let mut dx = vec![0f32; x.len()];
    let k = rows_per_task(c) * c;
    let inv_c = 1.0 / c as f32;
    dx.par_chunks_mut(k).zip(x.par_chunks(k).zip(dy.par_chunks(k))).for_each(|(dx, (x, dy))| {
        for ((dx, x), dy) in dx.chunks_mut(c).zip(x.chunks(c)).zip(dy.chunks(c)) {
            let (m, r) = moments(x, eps);
            let (mut sg, mut sgx) = (0f32, 0f32);
            for ((x, dy), g) in x.iter().zip(dy).zip(gamma) {
                let gg = dy * g;
                sg += gg;
                sgx += gg * (x - m) * r;
            }
            let (a, b) = (sg * inv_c, sgx * inv_c);
            for (((dx, x), dy), g) in dx.iter_mut().zip(x).zip(dy).zip(gamma) {
                *dx = r * (dy * g - a - (x - m) * r * b);
            }
        }
    });
    dx
}

impl LayerNorm {
    /// `nn.LayerNorm(c)` from `vb` holding `weight` and `bias`.
    pub fn new(vb: VarBuilder, c: usize, eps: f64) -> Result<Self> {
        let gamma = vb.get(c, "weight")?.to_vec1::<f32>()?;
        let beta = vb.get(c, "bias")?.to_vec1::<f32>()?;
        Ok(LayerNorm { gamma, beta, eps, channels_first: false })
    }
    /// Over the last axis of an input of any rank (ONNX `LayerNormalization` with axis −1), from γ and β
    /// (any shape of C values each).
    pub fn from_tensors(gamma: Tensor, beta: Tensor, eps: f64) -> Result<Self> {
        let gamma = gamma.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
        let beta = beta.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
        if gamma.len() != beta.len() || gamma.is_empty() {
            candle_core::bail!("LayerNorm: {} scales and {} biases", gamma.len(), beta.len())
        }
        Ok(LayerNorm { gamma, beta, eps, channels_first: false })
    }
    /// torchvision's `LayerNorm2d(c)`.
    pub fn new_2d(vb: VarBuilder, c: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm { channels_first: true, ..Self::new(vb, c, eps)? })
    }
    fn channels(&self) -> usize {
        self.gamma.len()
    }
    /// (batch, C, pixels) of a channels-first input, or (rows, C, 1).
    fn geometry(&self, dims: &[usize]) -> Result<(usize, usize, usize)> {
        let c = self.channels();
        let ok = |n: usize, got: usize, hw: usize| {
            if got == c {
                Ok((n, c, hw))
            } else {
                candle_core::bail!("{}: {c} channels, input of shape {dims:?}", self.kind())
            }
        };
        if self.channels_first {
            match dims {
                [n, cc, rest @ ..] => ok(*n, *cc, rest.iter().product()),
                _ => candle_core::bail!("LayerNorm2d: input of shape {dims:?}"),
            }
        } else {
            match dims.split_last() {
                Some((cc, rest)) => ok(rest.iter().product(), *cc, 1),
                None => candle_core::bail!("LayerNorm: a scalar input"),
            }
        }
    }
}

impl Op for LayerNorm {
    fn kind(&self) -> &'static str {
        if self.channels_first {
            "LayerNorm2d"
        } else {
            "LayerNorm"
        }
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        let (n, c, hw) = self.geometry(x[0].dims())?;
        let y = with_f32(x[0], "layer norm", |v| {
            Ok(if hw == 1 {
                ln_rows_forward(v, c, &self.gamma, &self.beta, self.eps)
            } else {
                let t = transpose_batched(v, n, c, hw);
                transpose_batched(&ln_rows_forward(&t, c, &self.gamma, &self.beta, self.eps), n, hw, c)
            })
        })?;
        Tensor::from_vec(y, x[0].dims(), x[0].device())
    }
    fn saves(&self) -> Saves {
        Saves::INPUTS
    }
    fn backward(&self, ctx: &Ctx, dy: Grad) -> Result<Vec<Option<Grad>>> {
        if !ctx.need[0] {
            return Ok(vec![None]);
        }
        let (n, c, hw) = self.geometry(&dy.dims)?;
        let dx = with_f32(ctx.input(0, self.kind())?, "layer norm backward", |x| {
            Ok(if hw == 1 {
                ln_rows_backward(x, &dy.data, c, &self.gamma, self.eps)
            } else {
                let (xt, gt) = (transpose_batched(x, n, c, hw), transpose_batched(&dy.data, n, c, hw));
                transpose_batched(&ln_rows_backward(&xt, &gt, c, &self.gamma, self.eps), n, hw, c)
            })
        })?;
        Ok(vec![Some(Grad { data: dx, dims: dy.dims })])
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ops::testutil::rand;

    /// The worst error of `op`'s input gradient of sum(op(x)·r) against central differences (f64 over f32
    /// evaluations), relative to max |grad|, at `probes` positions.
    pub(crate) fn fd_op(op: &dyn Op, x: &Tensor, probes: usize, h: f32) -> f32 {
        let y = op.forward(&[x]).unwrap();
        let r = rand(y.dims(), 77);
        let rv = r.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let inputs = [Some(x.clone())];
        let dims = [x.dims().to_vec()];
        let ctx = Ctx { inputs: &inputs, input_dims: &dims, output: Some(&y), bp: Default::default(), need: &[true] };
        let g = op.backward(&ctx, Grad { data: rv.clone(), dims: y.dims().to_vec() }).unwrap().remove(0).unwrap();
        assert_eq!(g.dims, x.dims());
        let base = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let gmax = g.data.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let mut worst = 0f32;
        for p in 0..probes {
            let i = (p * 7919 + 13) % base.len();
            let eval = |d: f32| -> f64 {
                let mut v = base.clone();
                v[i] += d;
                let t = Tensor::from_vec(v, x.dims(), x.device()).unwrap();
                let y = op.forward(&[&t]).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                y.iter().zip(&rv).map(|(a, b)| *a as f64 * *b as f64).sum()
            };
            let num = ((eval(h) - eval(-h)) / (2.0 * h as f64)) as f32;
            worst = worst.max((num - g.data[i]).abs() / gmax);
        }
        worst
    }

    fn ln(c: usize, channels_first: bool) -> LayerNorm {
        let g = rand(&[c], 5).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = rand(&[c], 6).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        LayerNorm { gamma: g.iter().map(|g| 1.0 + 0.5 * g).collect(), beta: b, eps: 1e-6, channels_first }
    }

    #[test]
    fn forward_matches_candle_layer_norm() {
        let x = rand(&[2, 3, 4, 8], 1);
        let op = ln(8, false);
        let y = op.forward(&[&x]).unwrap();
        let g = Tensor::new(op.gamma.as_slice(), &candle_core::Device::Cpu).unwrap();
        let b = Tensor::new(op.beta.as_slice(), &candle_core::Device::Cpu).unwrap();
        let want = candle_nn::ops::layer_norm(&x, &g, &b, 1e-6).unwrap();
        let d = (y - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-5, "{d}");
        // channels-first: the same as permute → layer norm → permute
        let op2 = ln(8, true);
        let xc = x.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap();
        let y2 = op2.forward(&[&xc]).unwrap().permute((0, 2, 3, 1)).unwrap();
        let y1 = op.forward(&[&x]).unwrap();
        let d = (y2 - y1).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(d, 0.0);
    }

    #[test]
    fn backward_matches_central_differences() {
        let x = rand(&[2, 5, 3, 16], 3);
        let worst = fd_op(&ln(16, false), &x, 60, 1e-2);
        assert!(worst < 2e-3, "LayerNorm: {worst}");
        let x = rand(&[2, 16, 3, 5], 4);
        let worst = fd_op(&ln(16, true), &x, 60, 1e-2);
        assert!(worst < 2e-3, "LayerNorm2d: {worst}");
    }

    /// ONNX `LayerNormalization` over the last axis of a rank-3 input (a transformer's (1, tokens, C)):
    /// against candle's layer norm, and the gradient against central differences.
    #[test]
    fn from_tensors_normalises_the_last_axis() {
        let c = 32;
        let g = rand(&[c], 5).affine(0.5, 1.0).unwrap();
        let b = rand(&[c], 6);
        let op = LayerNorm::from_tensors(g.clone(), b.clone(), 1e-5).unwrap();
        assert_eq!(op.kind(), "LayerNorm");
        let x = rand(&[1, 17, c], 7);
        let y = op.forward(&[&x]).unwrap();
        let want = candle_nn::ops::layer_norm(&x, &g, &b, 1e-5).unwrap();
        let d = (y - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-5, "{d}");
        let worst = fd_op(&op, &x, 60, 1e-2);
        assert!(worst < 2e-3, "{worst}");
        assert!(LayerNorm::from_tensors(g, rand(&[c + 1], 1), 1e-5).is_err());
    }
}
