//! Batch-norm with inference statistics: y = x·s + t per channel, s = γ/√(σ²+ε), t = β − μ·s. The passes
//! fold it into the convolution before it where that convolution's output is not a target.

use super::{per_channel, values};
use crate::graph::{Ctx, Op, Saves};
use crate::ops::Grad;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Clone, Debug)]
pub struct BatchNorm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
    pub eps: f64,
    scale: Vec<f32>,
    shift: Vec<f32>,
}

impl BatchNorm {
    /// From `vb` holding `weight`, `bias`, `running_mean`, `running_var`.
    pub fn new(vb: VarBuilder, c: usize, eps: f64) -> Result<Self> {
        let v = |n: &str| -> Result<Vec<f32>> { vb.get(c, n)?.to_vec1::<f32>() };
        Ok(Self::from_stats(v("weight")?, v("bias")?, v("running_mean")?, v("running_var")?, eps))
    }

    pub fn from_stats(gamma: Vec<f32>, beta: Vec<f32>, mean: Vec<f32>, var: Vec<f32>, eps: f64) -> Self {
        let scale64 = Self::scale_of(&gamma, &var, eps);
        let scale: Vec<f32> = scale64.iter().map(|s| *s as f32).collect();
        let shift = (0..gamma.len()).map(|o| (beta[o] as f64 - mean[o] as f64 * scale64[o]) as f32).collect();
        BatchNorm { gamma, beta, mean, var, eps, scale, shift }
    }

    /// From γ, β, the running mean and variance (C values each, any shape).
    pub fn from_tensors(gamma: Tensor, beta: Tensor, mean: Tensor, var: Tensor, eps: f64) -> Result<Self> {
        let v =
            |t: Tensor| -> Result<Vec<f32>> { t.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>() };
        let (g, b, m, s) = (v(gamma)?, v(beta)?, v(mean)?, v(var)?);
        let c = g.len();
        if b.len() != c || m.len() != c || s.len() != c {
            candle_core::bail!("BatchNorm: {c} scales, {} biases, {} means, {} variances", b.len(), m.len(), s.len())
        }
        Ok(Self::from_stats(g, b, m, s, eps))
    }

    /// γ/√(σ²+ε) in f64 (what folding multiplies the weights by).
    pub fn scale_of(gamma: &[f32], var: &[f32], eps: f64) -> Vec<f64> {
        gamma.iter().zip(var).map(|(g, v)| *g as f64 / (*v as f64 + eps).sqrt()).collect()
    }

    pub fn channels(&self) -> usize {
        self.gamma.len()
    }
}

impl Op for BatchNorm {
    fn kind(&self) -> &'static str {
        "BatchNorm2d"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        let (_, c, h, w) = x[0].dims4()?;
        if c != self.channels() {
            candle_core::bail!("batch-norm of {} channels on an input of {c}", self.channels())
        }
        let y = per_channel(&values(x[0])?, c, h * w, |ch, x, y| {
            let (s, t) = (self.scale[ch], self.shift[ch]);
            y.iter_mut().zip(x).for_each(|(y, x)| *y = x * s + t);
        });
        Tensor::from_vec(y, x[0].dims(), x[0].device())
    }
    fn saves(&self) -> Saves {
        Saves::NOTHING
    }
    fn backward(&self, ctx: &Ctx, dy: Grad) -> Result<Vec<Option<Grad>>> {
        let (_, c, h, w) = ctx.dims4(0)?;
        Ok(vec![Some(super::scale_channels(dy, c, h * w, &self.scale))])
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{fd_inputs, v};
    use super::*;
    use crate::ops::testutil::rand;

    #[test]
    fn from_tensors_matches_the_f64_formula() {
        let c = 5;
        let g = rand(&[c], 1);
        let b = rand(&[c], 2);
        let m = rand(&[c], 3);
        let s = (rand(&[c], 4).abs().unwrap() + 0.1).unwrap();
        let op = BatchNorm::from_tensors(g.clone(), b.clone(), m.clone(), s.clone(), 1e-5).unwrap();
        let x = rand(&[2, c, 3, 4], 5);
        let y = v(&op.forward(&[&x]).unwrap());
        let (gv, bv, mv, sv, xv) = (v(&g), v(&b), v(&m), v(&s), v(&x));
        for (i, (yi, xi)) in y.iter().zip(&xv).enumerate() {
            let ch = (i / 12) % c;
            let want = (*xi as f64 - mv[ch] as f64) / (sv[ch] as f64 + 1e-5).sqrt() * gv[ch] as f64 + bv[ch] as f64;
            assert!((*yi as f64 - want).abs() < 1e-5 * want.abs().max(1.0), "{i}");
        }
        assert!(fd_inputs(&op, &[x], 40, 1e-2)[0] < 1e-3);
        assert!(BatchNorm::from_tensors(g, b, m, rand(&[4], 6), 1e-5).is_err());
    }
}
