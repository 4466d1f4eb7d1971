//! Mean over some axes (ONNX `ReduceMean`): the gradient is dy/count spread over each reduced group.

use crate::graph::{Ctx, Op, Saves};
use crate::ops::Grad;
use candle_core::{Result, Tensor};

/// Mean over `axes` (empty: over every axis, ONNX's default); `keepdims` keeps them as size 1.
#[derive(Clone, Debug)]
pub struct ReduceMean {
    pub axes: Vec<usize>,
    pub keepdims: bool,
}

impl ReduceMean {
    /// The axes reduced (sorted, deduplicated; all of them when `axes` is empty), checked against the rank.
    fn axes_of(&self, rank: usize) -> Result<Vec<usize>> {
        let mut axes = if self.axes.is_empty() { (0..rank).collect() } else { self.axes.clone() };
        axes.sort_unstable();
        axes.dedup();
        if let Some(a) = axes.iter().find(|&&a| a >= rank) {
            candle_core::bail!("ReduceMean over axis {a} of a rank-{rank} tensor")
        }
        Ok(axes)
    }
    fn kept_dims(dims: &[usize], axes: &[usize]) -> Vec<usize> {
        dims.iter().enumerate().map(|(i, &d)| if axes.contains(&i) { 1 } else { d }).collect()
    }
}

impl Op for ReduceMean {
    fn kind(&self) -> &'static str {
        "ReduceMean"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        let dims = x[0].dims();
        let axes = self.axes_of(dims.len())?;
        let y = x[0].mean_keepdim(axes.clone())?;
        if self.keepdims {
            Ok(y)
        } else {
            let out: Vec<usize> = dims.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect();
            y.reshape(out)
        }
    }
    fn saves(&self) -> Saves {
        Saves::NOTHING
    }
    fn backward(&self, ctx: &Ctx, dy: Grad) -> Result<Vec<Option<Grad>>> {
        let dims = &ctx.input_dims[0];
        let axes = self.axes_of(dims.len())?;
        let count: usize = axes.iter().map(|&a| dims[a]).product();
        let kept = Self::kept_dims(dims, &axes);
        if dy.data.len() != kept.iter().product::<usize>() {
            candle_core::bail!("ReduceMean backward: gradient {:?} for an input of shape {dims:?}", dy.dims)
        }
        let g = Tensor::from_vec(dy.data, kept, &candle_core::Device::Cpu)?;
        let dx = (g.broadcast_as(dims.as_slice())? * (1.0 / count.max(1) as f64))?;
        Ok(vec![Some(Grad::from_tensor(&dx)?)])
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
    fn means_against_f64_loops_and_finite_differences() {
        let dims = [2usize, 3, 4, 5];
        let x = rand(&dims, 1);
        let xv = v(&x);
        for (axes, keepdims) in [
            (vec![3], true),
            (vec![3], false),
            (vec![1, 2], true),
            (vec![2, 1], false),
            (vec![], false),
            (vec![0], true),
        ] {
            let op = ReduceMean { axes: axes.clone(), keepdims };
            let y = op.forward(&[&x]).unwrap();
            let all = if axes.is_empty() { vec![0, 1, 2, 3] } else { axes.clone() };
            let kept = ReduceMean::kept_dims(&dims, &all);
            let want_dims: Vec<usize> = if keepdims {
                kept.clone()
            } else {
                dims.iter().enumerate().filter(|(i, _)| !all.contains(i)).map(|(_, &d)| d).collect()
            };
            assert_eq!(y.dims(), want_dims.as_slice(), "{axes:?}");
            // f64 sums into the kept shape
            let n: usize = kept.iter().product();
            let mut s = vec![0f64; n];
            for (flat, &val) in xv.iter().enumerate() {
                let (mut rem, mut o, mut stride) = (flat, 0, 1);
                for d in (0..4).rev() {
                    let id = rem % dims[d];
                    rem /= dims[d];
                    o += if kept[d] == 1 { 0 } else { id * stride };
                    stride *= kept[d];
                }
                s[o] += val as f64;
            }
            let count = (xv.len() / n) as f64;
            let want: Vec<f32> = s.iter().map(|s| (s / count) as f32).collect();
            assert!(max_diff(&v(&y), &want) < 1e-6, "{axes:?}");
            let w = fd_inputs(&op, std::slice::from_ref(&x), 40, 1e-2);
            assert!(w[0] < 1e-3, "{axes:?}: {w:?}");
        }
        assert!(ReduceMean { axes: vec![4], keepdims: true }.forward(&[&x]).is_err());
    }
}
