//! Softmax along one axis (attention weights): y = e^(x − max) / Σ e^(x − max) in f32, rows in parallel.
//! Backward from the output: dx = y·(g − Σ g·y).

use super::split_at_axis;
use super::unary::exp_f32;
use crate::graph::{Ctx, Op, Saves};
use crate::ops::{with_f32, Grad};
use candle_core::{Result, Tensor};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug)]
pub struct Softmax {
    pub axis: usize,
}

/// Blocks of `len·inner` values per parallel task: about 16K values.
fn blocks_per_task(block: usize) -> usize {
    (16384 / block.max(1)).max(1)
}

/// Softmax of each of the `inner` strided rows of a (len, inner) block.
fn softmax_block(x: &[f32], y: &mut [f32], len: usize, inner: usize) {
    for i in 0..inner {
        let m = (0..len).map(|k| x[k * inner + i]).fold(f32::NEG_INFINITY, f32::max);
        let mut s = 0f32;
        for k in 0..len {
            let e = exp_f32(x[k * inner + i] - m);
            y[k * inner + i] = e;
            s += e;
        }
        let inv = 1.0 / s;
        for k in 0..len {
            y[k * inner + i] *= inv;
        }
    }
}

/// dx = y·(g − Σ g·y) for each strided row of a (len, inner) block.
fn softmax_block_backward(y: &[f32], g: &mut [f32], len: usize, inner: usize) {
    for i in 0..inner {
        let s: f32 = (0..len).map(|k| g[k * inner + i] * y[k * inner + i]).sum();
        for k in 0..len {
            let j = k * inner + i;
            g[j] = y[j] * (g[j] - s);
        }
    }
}

impl Softmax {
    fn geometry(&self, dims: &[usize]) -> Result<(usize, usize)> {
        if self.axis >= dims.len() {
            candle_core::bail!("Softmax along axis {} of a tensor of shape {dims:?}", self.axis)
        }
        let (_, len, inner) = split_at_axis(dims, self.axis);
        Ok((len, inner))
    }
}

impl Op for Softmax {
    fn kind(&self) -> &'static str {
        "Softmax"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        let (len, inner) = self.geometry(x[0].dims())?;
        let block = len * inner;
        let y = with_f32(x[0], "softmax", |x| {
            let mut y = vec![0f32; x.len()];
            if block > 0 {
                let k = blocks_per_task(block) * block;
                y.par_chunks_mut(k).zip(x.par_chunks(k)).for_each(|(y, x)| {
                    for (y, x) in y.chunks_mut(block).zip(x.chunks(block)) {
                        softmax_block(x, y, len, inner);
                    }
                });
            }
            Ok(y)
        })?;
        Tensor::from_vec(y, x[0].dims(), x[0].device())
    }
    fn saves(&self) -> Saves {
        Saves::OUTPUT
    }
    fn backward(&self, ctx: &Ctx, mut dy: Grad) -> Result<Vec<Option<Grad>>> {
        let (len, inner) = self.geometry(&dy.dims)?;
        let block = len * inner;
        with_f32(ctx.output("Softmax")?, "softmax backward", |y| {
            if y.len() != dy.data.len() {
                candle_core::bail!("Softmax backward: gradient {:?} for {} outputs", dy.dims, y.len())
            }
            if block > 0 {
                let k = blocks_per_task(block) * block;
                dy.data.par_chunks_mut(k).zip(y.par_chunks(k)).for_each(|(g, y)| {
                    for (g, y) in g.chunks_mut(block).zip(y.chunks(block)) {
                        softmax_block_backward(y, g, len, inner);
                    }
                });
            }
            Ok(())
        })?;
        Ok(vec![Some(dy)])
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
    fn matches_f64_softmax_and_finite_differences() {
        let dims = [2usize, 3, 5, 7];
        let x = (rand(&dims, 1) * 6.0).unwrap();
        let xv = v(&x);
        for axis in 0..4 {
            let op = Softmax { axis };
            let y = v(&op.forward(&[&x]).unwrap());
            // reference: f64 loops over the multi-index
            let (outer, len, inner) = split_at_axis(&dims, axis);
            let mut want = vec![0f32; xv.len()];
            for o in 0..outer {
                for i in 0..inner {
                    let at = |k: usize| (o * len + k) * inner + i;
                    let m = (0..len).map(|k| xv[at(k)] as f64).fold(f64::NEG_INFINITY, f64::max);
                    let s: f64 = (0..len).map(|k| (xv[at(k)] as f64 - m).exp()).sum();
                    for k in 0..len {
                        want[at(k)] = ((xv[at(k)] as f64 - m).exp() / s) as f32;
                    }
                }
            }
            assert!(max_diff(&y, &want) < 1e-6, "axis {axis}: {}", max_diff(&y, &want));
            let w = fd_inputs(&op, std::slice::from_ref(&x), 80, 1e-2);
            assert!(w[0] < 2e-3, "axis {axis}: {w:?}");
        }
        // large values do not overflow
        let big = Tensor::new(&[[1000f32, 1001.0, 999.0]], &candle_core::Device::Cpu).unwrap();
        let y = v(&Softmax { axis: 1 }.forward(&[&big]).unwrap());
        assert!(y.iter().all(|v| v.is_finite()) && (y.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(Softmax { axis: 4 }.forward(&[&x]).is_err());
    }
}
