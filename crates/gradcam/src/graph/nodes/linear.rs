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
