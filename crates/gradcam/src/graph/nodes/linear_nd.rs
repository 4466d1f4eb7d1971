//! `nn.Linear` over the last dimension of an N-D input (…, C) → (…, K): ConvNeXt's channels-last layers. The
//! rows of the contiguous input are one matrix X (M×C), so y = X·Wᵀ + b is one product of the project's gemm
//! (`ops::gemm`: X read in place through its strides, Wᵀ row-major), started from the bias rows; the input
//! gradient dX = dY·W likewise, with no transposed copies.

use crate::graph::{Ctx, Op, Saves};
use crate::ops::conv::matmul;
use crate::ops::{with_f32, Grad};
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

#[derive(Clone, Debug)]
pub struct LinearNd {
    /// W, (K, C) row-major.
    pub weight: Vec<f32>,
    /// Wᵀ, (C, K) row-major.
    pub weight_t: Vec<f32>,
    pub bias: Vec<f32>,
    pub cin: usize,
    pub cout: usize,
}

impl LinearNd {
    /// From `vb` holding `weight` (cout × cin) and `bias`.
    pub fn new(vb: VarBuilder, cin: usize, cout: usize) -> Result<Self> {
        let w = vb.get((cout, cin), "weight")?;
        let weight = w.flatten_all()?.to_vec1::<f32>()?;
        let weight_t = w.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        Ok(LinearNd { weight, weight_t, bias: vb.get(cout, "bias")?.to_vec1::<f32>()?, cin, cout })
    }
}

impl LinearNd {
    /// From W (K, C) and an optional b (K) (zeros without).
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (cout, cin) = weight.dims2()?;
        let w = weight.to_dtype(candle_core::DType::F32)?;
        let bias = match bias {
            Some(b) => b.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?,
            None => vec![0f32; cout],
        };
        if bias.len() != cout {
            candle_core::bail!("Linear: weight {:?} with {} biases", weight.dims(), bias.len())
        }
        let weight = w.flatten_all()?.to_vec1::<f32>()?;
        let weight_t = w.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        Ok(LinearNd { weight, weight_t, bias, cin, cout })
    }
}

impl Op for LinearNd {
    fn kind(&self) -> &'static str {
        "Linear"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        let dims = x[0].dims();
        if dims.last() != Some(&self.cin) {
            candle_core::bail!("linear of {} inputs on a tensor of shape {dims:?}", self.cin)
        }
        let (c, k) = (self.cin, self.cout);
        let m = x[0].elem_count() / c.max(1);
        let mut y = vec![0f32; m * k];
        y.par_chunks_mut(k.max(1) * 256).for_each(|rows| {
            for row in rows.chunks_mut(k.max(1)) {
                row.copy_from_slice(&self.bias);
            }
        });
        with_f32(x[0], "linear", |xv| {
            matmul(&mut y, true, xv, c, 1, &self.weight_t, m, k, c);
            Ok(())
        })?;
        let mut out = dims.to_vec();
        *out.last_mut().unwrap() = k;
        Tensor::from_vec(y, out, x[0].device())
    }
    fn saves(&self) -> Saves {
        Saves::NOTHING
    }
    fn backward(&self, ctx: &Ctx, dy: Grad) -> Result<Vec<Option<Grad>>> {
        if !ctx.need[0] {
            return Ok(vec![None]);
        }
        let (c, k) = (self.cin, self.cout);
        if dy.dims.last() != Some(&k) {
            candle_core::bail!("linear backward: gradient {:?} for {k} outputs", dy.dims)
        }
        let m = dy.data.len() / k.max(1);
        let mut dx = vec![0f32; m * c];
        matmul(&mut dx, false, &dy.data, k, 1, &self.weight, m, c, k);
        Ok(vec![Some(Grad { data: dx, dims: ctx.input_dims[0].clone() })])
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::rand;

    fn op(c: usize, k: usize) -> LinearNd {
        let w = rand(&[k, c], 11);
        LinearNd {
            weight: w.flatten_all().unwrap().to_vec1().unwrap(),
            weight_t: w.t().unwrap().contiguous().unwrap().flatten_all().unwrap().to_vec1().unwrap(),
            bias: rand(&[k], 12).to_vec1().unwrap(),
            cin: c,
            cout: k,
        }
    }

    #[test]
    fn forward_matches_candle_matmul() {
        let (c, k) = (24, 40);
        let l = op(c, k);
        let x = rand(&[2, 7, 9, c], 2);
        let y = l.forward(&[&x]).unwrap();
        assert_eq!(y.dims(), &[2, 7, 9, k]);
        let w = Tensor::from_vec(l.weight.clone(), (k, c), &candle_core::Device::Cpu).unwrap();
        let b = Tensor::from_vec(l.bias.clone(), k, &candle_core::Device::Cpu).unwrap();
        let want = x.reshape((2 * 7 * 9, c)).unwrap().matmul(&w.t().unwrap()).unwrap().broadcast_add(&b).unwrap();
        let d = (y.reshape((2 * 7 * 9, k)).unwrap() - want).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-5);
    }

    #[test]
    fn backward_matches_central_differences() {
        let x = rand(&[2, 3, 5, 24], 3);
        let worst = crate::graph::nodes::layer_norm::tests::fd_op(&op(24, 40), &x, 60, 1e-2);
        assert!(worst < 1e-3, "{worst}");
    }
}
