//! Constant padding of any rank (ONNX `Pad`, mode `constant`): `before[d]` and `after[d]` values of `value`
//! around dimension `d`. The gradient crops dy back to the input.

use crate::graph::{Ctx, Op, Saves};
use crate::ops::{with_f32, Grad};
use candle_core::{Result, Tensor};
use rayon::prelude::*;

/// Not to be confused with [`crate::ops::geom::Pad`] (a convolution's four pads).
#[derive(Clone, Debug)]
pub struct Pad {
    pub before: Vec<usize>,
    pub after: Vec<usize>,
    pub value: f32,
}

impl Pad {
    fn out_dims(&self, dims: &[usize]) -> Result<Vec<usize>> {
        if self.before.len() != dims.len() || self.after.len() != dims.len() {
            candle_core::bail!("Pad: pads {:?} / {:?} for a tensor of shape {dims:?}", self.before, self.after)
        }
        Ok(dims.iter().zip(&self.before).zip(&self.after).map(|((d, b), a)| d + b + a).collect())
    }
}

/// For each row (last dimension) of a tensor of shape `dims`, the offset of its first value in the padded
/// tensor of shape `out`, with `before` the leading pads.
fn row_offsets(dims: &[usize], out: &[usize], before: &[usize]) -> Vec<usize> {
    let r = dims.len();
    if r == 0 {
        return vec![0];
    }
    let rows: usize = dims[..r - 1].iter().product();
    let mut strides = vec![1usize; r];
    for d in (0..r - 1).rev() {
        strides[d] = strides[d + 1] * out[d + 1];
    }
    (0..rows)
        .map(|row| {
            let mut rem = row;
            let mut off = before[r - 1];
            for d in (0..r - 1).rev() {
                let i = rem % dims[d];
                rem /= dims[d];
                off += (i + before[d]) * strides[d];
            }
            off
        })
        .collect()
}

impl Op for Pad {
    fn kind(&self) -> &'static str {
        "Pad"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        let dims = x[0].dims();
        let out = self.out_dims(dims)?;
        let w = dims.last().copied().unwrap_or(1);
        let offsets = row_offsets(dims, &out, &self.before);
        let y = with_f32(x[0], "pad", |xv| {
            let mut y = vec![self.value; out.iter().product()];
            if w > 0 {
                let ptr = super::permute::SendPtr(y.as_mut_ptr());
                offsets.par_iter().zip(xv.par_chunks(w)).for_each(|(&o, row)| {
                    let p = &ptr;
                    // SAFETY: distinct input rows land on disjoint ranges of y, within its bounds
                    let dst = unsafe { std::slice::from_raw_parts_mut(p.0.add(o), w) };
                    dst.copy_from_slice(row);
                });
            }
            Ok(y)
        })?;
        Tensor::from_vec(y, out, x[0].device())
    }
    fn saves(&self) -> Saves {
        Saves::NOTHING
    }
    fn backward(&self, ctx: &Ctx, dy: Grad) -> Result<Vec<Option<Grad>>> {
        let dims = &ctx.input_dims[0];
        let out = self.out_dims(dims)?;
        if dy.dims != out {
            candle_core::bail!("Pad backward: gradient {:?} for an output of shape {out:?}", dy.dims)
        }
        let w = dims.last().copied().unwrap_or(1);
        let offsets = row_offsets(dims, &out, &self.before);
        let mut dx = vec![0f32; dims.iter().product()];
        if w > 0 {
            dx.par_chunks_mut(w).zip(offsets.par_iter()).for_each(|(d, &o)| d.copy_from_slice(&dy.data[o..o + w]));
        }
        Ok(vec![Some(Grad { data: dx, dims: dims.clone() })])
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
    fn pads_as_candle_and_crops_back() {
        let x = rand(&[2, 3, 4, 5], 1);
        for (before, after, value) in [
            (vec![0, 0, 1, 2], vec![0, 0, 3, 0], 0.0f32),
            (vec![1, 0, 0, 0], vec![0, 2, 0, 1], -1.5),
            (vec![0, 0, 0, 0], vec![0, 0, 0, 0], 7.0),
        ] {
            let op = Pad { before: before.clone(), after: after.clone(), value };
            let y = op.forward(&[&x]).unwrap();
            // reference: blocks of `value` concatenated around each dimension in turn (candle's `cat`)
            let mut want = x.clone();
            for d in 0..4 {
                let mut parts = vec![];
                let mut s = want.dims().to_vec();
                let fill = |s: &[usize]| Tensor::full(value, s, &candle_core::Device::Cpu).unwrap();
                if before[d] > 0 {
                    s[d] = before[d];
                    parts.push(fill(&s));
                }
                parts.push(want.clone());
                if after[d] > 0 {
                    s[d] = after[d];
                    parts.push(fill(&s));
                }
                want = Tensor::cat(&parts, d).unwrap();
            }
            assert_eq!(y.dims(), want.dims());
            assert_eq!(v(&y), v(&want), "{before:?} {after:?}");
            let w = fd_inputs(&op, std::slice::from_ref(&x), 60, 1e-2);
            assert!(w[0] < 1e-3, "{w:?}");
        }
        // rank 1 and 3
        let x1 = rand(&[4], 2);
        let y = Pad { before: vec![2], after: vec![1], value: 9.0 }.forward(&[&x1]).unwrap();
        let xv = v(&x1);
        assert_eq!(v(&y), [vec![9.0, 9.0], xv, vec![9.0]].concat());
        let x3 = rand(&[2, 3, 2], 3);
        let op = Pad { before: vec![0, 1, 1], after: vec![1, 0, 2], value: 0.5 };
        assert_eq!(op.forward(&[&x3]).unwrap().dims(), &[3, 4, 5]);
        assert!(fd_inputs(&op, &[x3], 12, 1e-2)[0] < 1e-3);
        assert!(Pad { before: vec![1], after: vec![1], value: 0.0 }.forward(&[&x]).is_err());
    }
}
