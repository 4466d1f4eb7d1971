//! y = x·Wᵀ + b on (N, C) inputs.

use crate::graph::{Ctx, Op, Saves};
use crate::ops::{with_f32, Grad};
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Clone, Debug)]
pub struct Linear {
    /// Wᵀ, (C, K).
    pub weight_t: Tensor,
    pub bias: Tensor,
}

impl Linear {
    pub fn new(vb: VarBuilder, cin: usize, cout: usize) -> Result<Self> {
        let w = vb.get((cout, cin), "weight")?;
        Ok(Linear { weight_t: w.t()?.contiguous()?, bias: vb.get(cout, "bias")? })
    }
    /// From W (K, C) and an optional b (K) (zeros without).
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (k, _) = weight.dims2()?;
        let bias = match bias {
            Some(b) => b.flatten_all()?,
            None => Tensor::zeros(k, weight.dtype(), weight.device())?,
        };
        if bias.elem_count() != k {
            candle_core::bail!("Linear: weight {:?} with {} biases", weight.dims(), bias.elem_count())
        }
        Ok(Linear { weight_t: weight.t()?.contiguous()?, bias })
    }
    pub fn out_features(&self) -> usize {
        self.bias.dims().first().copied().unwrap_or(0)
    }
}

impl Op for Linear {
    fn kind(&self) -> &'static str {
        "Linear"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        x[0].matmul(&self.weight_t)?.broadcast_add(&self.bias)
    }
    fn saves(&self) -> Saves {
        Saves::NOTHING
    }
    fn backward(&self, _ctx: &Ctx, dy: Grad) -> Result<Vec<Option<Grad>>> {
        let (c, k) = self.weight_t.dims2()?;
        let n = match dy.dims[..] {
            [n, k2] if k2 == k => n,
            _ => candle_core::bail!("linear backward: gradient {:?} for a weight {c}x{k}", dy.dims),
        };
        // dxᵀ (C×N) = Wᵀ (C×K) · dyᵀ (K×N), one gemm
        let mut dyt = vec![0f32; k * n];
        for (i, row) in dy.data.chunks(k).enumerate() {
            for (j, v) in row.iter().enumerate() {
                dyt[j * n + i] = *v;
            }
        }
        let mut dxt = vec![0f32; c * n];
        with_f32(&self.weight_t, "linear backward", |wt| {
            crate::ops::conv::matmul(&mut dxt, false, wt, k, 1, &dyt, c, n, k);
            Ok(())
        })?;
        let mut dx = vec![0f32; n * c];
        for i in 0..n {
            for ch in 0..c {
                dx[i * c + ch] = dxt[ch * n + i];
            }
        }
        Ok(vec![Some(Grad { data: dx, dims: vec![n, c] })])
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{fd_inputs, max_diff, v};
    use super::*;
    use crate::ops::testutil::rand;

    #[test]
    fn from_tensors_matches_candle_matmul() {
        let (c, k) = (12, 7);
        let w = rand(&[k, c], 1);
        let b = rand(&[k], 2);
        let x = rand(&[3, c], 3);
        let want = x.matmul(&w.t().unwrap()).unwrap().broadcast_add(&b).unwrap();
        let op = Linear::from_tensors(w.clone(), Some(b)).unwrap();
        assert!(max_diff(&v(&op.forward(&[&x]).unwrap()), &v(&want)) < 1e-5);
        assert!(fd_inputs(&op, std::slice::from_ref(&x), 36, 1e-2)[0] < 1e-3);
        let op = Linear::from_tensors(w.clone(), None).unwrap();
        assert!(max_diff(&v(&op.forward(&[&x]).unwrap()), &v(&x.matmul(&w.t().unwrap()).unwrap())) < 1e-5);
        // LinearNd on (1, 17, c)
        let x3 = rand(&[1, 17, c], 4);
        let op = crate::graph::nodes::LinearNd::from_tensors(w.clone(), Some(rand(&[k], 2))).unwrap();
        let y = op.forward(&[&x3]).unwrap();
        assert_eq!(y.dims(), &[1, 17, k]);
        let want = x3.reshape((17, c)).unwrap().matmul(&w.t().unwrap()).unwrap().broadcast_add(&rand(&[k], 2)).unwrap();
        assert!(max_diff(&v(&y), &v(&want)) < 1e-5);
        assert!(fd_inputs(&op, &[x3], 40, 1e-2)[0] < 1e-3);
        assert!(Linear::from_tensors(w, Some(rand(&[k + 1], 2))).is_err());
    }
}
