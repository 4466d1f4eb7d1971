//! NumPy broadcasting to a shape (ONNX `Expand`): the output's shape is the broadcast of the input's shape and
//! `dims` (so a 1 in `dims` keeps the input's size). Any dtype forward; the gradient sums over the broadcast
//! dimensions.

use super::binary::reduce_to;
use crate::graph::{Ctx, Op, Saves};
use crate::ops::Grad;
use candle_core::{Result, Tensor};

#[derive(Clone, Debug)]
pub struct Expand {
    pub dims: Vec<usize>,
}

/// NumPy's broadcast of two shapes (aligned on the right; each pair equal or one of them 1).
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let at = |s: &[usize], i: usize| if i + s.len() >= r { s[i + s.len() - r] } else { 1 };
    (0..r)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => candle_core::bail!("shapes {a:?} and {b:?} do not broadcast"),
        })
        .collect()
}

impl Op for Expand {
    fn kind(&self) -> &'static str {
        "Expand"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        let out =
            broadcast_shape(x[0].dims(), &self.dims).map_err(|e| candle_core::Error::Msg(format!("Expand: {e}")))?;
        if out == x[0].dims() {
            return Ok(x[0].clone());
        }
        x[0].broadcast_as(out)?.contiguous()
    }
    fn saves(&self) -> Saves {
        Saves::NOTHING
    }
    fn backward(&self, ctx: &Ctx, dy: Grad) -> Result<Vec<Option<Grad>>> {
        let dims = &ctx.input_dims[0];
        if &dy.dims == dims {
            return Ok(vec![Some(dy)]);
        }
        let g = dy.into_tensor(&candle_core::Device::Cpu)?;
        Ok(vec![Some(Grad::from_tensor(&reduce_to(&g, dims)?)?)])
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
    use candle_core::{DType, Device};

    #[test]
    fn broadcasts_as_numpy_with_summed_gradients() {
        // (input, dims, expected output shape)
        let cases: &[(&[usize], &[usize], &[usize])] = &[
            (&[3, 1], &[2, 3, 4], &[2, 3, 4]),
            (&[1, 4], &[3, 1], &[3, 4]),
            (&[2, 1, 5], &[1], &[2, 1, 5]),
            (&[2, 3], &[2, 3], &[2, 3]),
            (&[1, 1, 3], &[2, 2, 1, 1], &[2, 2, 1, 3]),
        ];
        for (i, &(din, dims, want)) in cases.iter().enumerate() {
            let x = rand(din, i as u64 + 1);
            let op = Expand { dims: dims.to_vec() };
            let y = op.forward(&[&x]).unwrap();
            assert_eq!(y.dims(), want, "case {i}");
            // reference: every output element reads the input at its index with broadcast dims at 0
            let xv = v(&x);
            let yv = v(&y);
            let r = want.len();
            let pad: Vec<usize> = std::iter::repeat_n(1, r - din.len()).chain(din.iter().copied()).collect();
            for (flat, got) in yv.iter().enumerate() {
                let mut rem = flat;
                let mut src = 0;
                let mut stride = 1;
                for d in (0..r).rev() {
                    let id = rem % want[d];
                    rem /= want[d];
                    let si = if pad[d] == 1 { 0 } else { id };
                    src += si * stride;
                    stride *= pad[d];
                }
                assert_eq!(*got, xv[src], "case {i} at {flat}");
            }
            let w = fd_inputs(&op, &[x], 40, 1e-2);
            assert!(w[0] < 1e-3, "case {i}: {w:?}");
        }
        assert!(Expand { dims: vec![2, 4] }.forward(&[&rand(&[3, 1], 0)]).is_err());
        let i = Tensor::new(&[[7i64], [8]], &Device::Cpu).unwrap();
        let y = Expand { dims: vec![2, 3] }.forward(&[&i]).unwrap();
        assert_eq!(y.to_vec2::<i64>().unwrap(), vec![vec![7, 7, 7], vec![8, 8, 8]]);
        let u = i.to_dtype(DType::U8).unwrap();
        assert_eq!(Expand { dims: vec![1, 2] }.forward(&[&u]).unwrap().to_vec2::<u8>().unwrap()[1], vec![8, 8]);
    }
}
