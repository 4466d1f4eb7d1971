//! NumPy `matmul` of inputs of rank ≥ 2 (ONNX `MatMul`): the last two dimensions multiply, the leading (batch)
//! dimensions broadcast. The right operand may be a constant held by the op (a weight: then the op has one
//! input). Gradients: dA = dY·Bᵀ, dB = Aᵀ·dY, each summed over the dimensions its operand was broadcast along.

use super::binary::reduce_to;
use super::expand::broadcast_shape;
use crate::graph::{Ctx, Op, Saves};
use crate::ops::Grad;
use candle_core::{Result, Tensor};

#[derive(Clone, Debug)]
pub struct MatMul {
    /// The constant right operand, or None when it is the second input.
    pub b: Option<Tensor>,
}

impl MatMul {
    pub fn new() -> Self {
        MatMul { b: None }
    }
    pub fn with_constant(b: Tensor) -> Self {
        MatMul { b: Some(b) }
    }
}

impl Default for MatMul {
    fn default() -> Self {
        Self::new()
    }
}

/// The broadcast batch dimensions and (m, k, n) of A·B, or an error naming the shapes.
fn geometry(a: &[usize], b: &[usize]) -> Result<(Vec<usize>, usize, usize, usize)> {
    let bad = || candle_core::Error::Msg(format!("MatMul: shapes {a:?} and {b:?} do not multiply"));
    if a.len() < 2 || b.len() < 2 {
        return Err(candle_core::Error::Msg(format!("MatMul: shapes {a:?} and {b:?}: both need rank 2 or more")));
    }
    let (ab, am) = a.split_at(a.len() - 2);
    let (bb, bm) = b.split_at(b.len() - 2);
    if am[1] != bm[0] {
        return Err(bad());
    }
    let batch = broadcast_shape(ab, bb).map_err(|_| bad())?;
    Ok((batch, am[0], am[1], bm[1]))
}

/// `t` broadcast to `batch ++ [r, c]` and made (B, r, c) contiguous.
fn to_batched(t: &Tensor, batch: &[usize], r: usize, c: usize) -> Result<Tensor> {
    let mut full = batch.to_vec();
    full.extend([r, c]);
    let bsz: usize = batch.iter().product();
    let t = if t.dims() == full.as_slice() { t.clone() } else { t.broadcast_as(full)? };
    t.contiguous()?.reshape((bsz, r, c))
}

/// A·B with broadcast batch dimensions, contiguous.
fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (batch, m, k, n) = geometry(a.dims(), b.dims())?;
    let mut out = batch.clone();
    out.extend([m, n]);
    // a constant matrix on the right: every row of A in one product
    if b.rank() == 2 && a.rank() >= 2 {
        let rows = a.elem_count() / k.max(1);
        return a.contiguous()?.reshape((rows, k))?.matmul(&b.contiguous()?)?.reshape(out);
    }
    let y = to_batched(a, &batch, m, k)?.matmul(&to_batched(b, &batch, k, n)?)?;
    y.contiguous()?.reshape(out)
}

impl Op for MatMul {
    fn kind(&self) -> &'static str {
        "MatMul"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        match (&self.b, x) {
            (Some(b), [a]) => matmul(a, b),
            (None, [a, b]) => matmul(a, b),
            _ => candle_core::bail!("MatMul: wrong number of inputs ({})", x.len()),
        }
    }
    fn saves(&self) -> Saves {
        if self.b.is_some() {
            Saves::NOTHING
        } else {
            Saves::INPUTS
        }
    }
    fn backward(&self, ctx: &Ctx, dy: Grad) -> Result<Vec<Option<Grad>>> {
        let dev = candle_core::Device::Cpu;
        let a_dims = &ctx.input_dims[0];
        let b_dims = match &self.b {
            Some(b) => b.dims().to_vec(),
            None => ctx.input_dims[1].clone(),
        };
        let (batch, m, k, n) = geometry(a_dims, &b_dims)?;
        let bsz: usize = batch.iter().product();
        let mut full = batch.clone();
        full.extend([m, n]);
        if dy.dims != full {
            candle_core::bail!("MatMul backward: gradient {:?} for {a_dims:?}·{b_dims:?}", dy.dims)
        }
        let g = dy.into_tensor(&dev)?.reshape((bsz, m, n))?;
        let need = |i: usize| ctx.need.get(i).copied().unwrap_or(false);
        let mut out = vec![None];
        if need(0) {
            // dA = dY·Bᵀ
            let b = match &self.b {
                Some(b) => b.clone(),
                None => ctx.input(1, "MatMul")?.clone(),
            };
            let bt = to_batched(&b, &batch, k, n)?.transpose(1, 2)?.contiguous()?;
            let mut da_dims = batch.clone();
            da_dims.extend([m, k]);
            let da = g.matmul(&bt)?.reshape(da_dims)?;
            out[0] = Some(Grad::from_tensor(&reduce_to(&da, a_dims)?)?);
        }
        if self.b.is_none() {
            out.push(None);
            if need(1) {
                // dB = Aᵀ·dY
                let a = ctx.input(0, "MatMul")?;
                let at = to_batched(a, &batch, m, k)?.transpose(1, 2)?.contiguous()?;
                let mut db_dims = batch.clone();
                db_dims.extend([k, n]);
                let db = at.matmul(&g)?.reshape(db_dims)?;
                out[1] = Some(Grad::from_tensor(&reduce_to(&db, &b_dims)?)?);
            }
        }
        Ok(out)
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

    /// Reference: f64 loops, the batch index of each operand found by NumPy's broadcasting rule.
    fn matmul_ref(a: &Tensor, b: &Tensor) -> (Vec<usize>, Vec<f32>) {
        let (batch, m, k, n) = geometry(a.dims(), b.dims()).unwrap();
        let (av, bv) = (v(a), v(b));
        let r = batch.len();
        let src = |dims: &[usize], idx: &[usize]| -> usize {
            let bd = &dims[..dims.len() - 2];
            let mut off = 0;
            for (j, &d) in bd.iter().enumerate() {
                let i = idx[r - bd.len() + j];
                off = off * d + if d == 1 { 0 } else { i };
            }
            off
        };
        let bsz: usize = batch.iter().product();
        let mut out = vec![];
        for flat in 0..bsz {
            let mut idx = vec![0; r];
            let mut rem = flat;
            for d in (0..r).rev() {
                idx[d] = rem % batch[d];
                rem /= batch[d];
            }
            let (oa, ob) = (src(a.dims(), &idx) * m * k, src(b.dims(), &idx) * k * n);
            for i in 0..m {
                for j in 0..n {
                    let s: f64 = (0..k).map(|l| av[oa + i * k + l] as f64 * bv[ob + l * n + j] as f64).sum();
                    out.push(s as f32);
                }
            }
        }
        let mut dims = batch;
        dims.extend([m, n]);
        (dims, out)
    }

    #[test]
    fn matches_f64_loops_and_finite_differences() {
        let cases: &[(&[usize], &[usize])] = &[
            (&[1, 2, 17, 16], &[1, 2, 16, 17]),
            (&[1, 17, 32], &[32, 64]),
            (&[2, 1, 3, 4], &[3, 4, 5]),
            (&[3, 4], &[2, 4, 6]),
            (&[5, 7], &[7, 3]),
            (&[2, 3, 4], &[1, 4, 2]),
        ];
        for (i, &(da, db)) in cases.iter().enumerate() {
            let a = rand(da, 2 * i as u64 + 1);
            let b = rand(db, 2 * i as u64 + 2);
            let (dims, want) = matmul_ref(&a, &b);
            let op = MatMul::new();
            let y = op.forward(&[&a, &b]).unwrap();
            assert_eq!(y.dims(), dims.as_slice(), "case {i}");
            assert!(y.is_contiguous());
            assert!(max_diff(&v(&y), &want) < 1e-5, "case {i}");
            let w = fd_inputs(&op, &[a.clone(), b.clone()], 60, 1e-2);
            // linear in each input: exact up to f32 rounding
            assert!(w.iter().all(|w| *w < 2e-3), "case {i}: {w:?}");
            // B as a constant
            let op = MatMul::with_constant(b.clone());
            let y = op.forward(&[&a]).unwrap();
            assert_eq!(y.dims(), dims.as_slice(), "case {i}");
            assert!(max_diff(&v(&y), &want) < 1e-5, "case {i} (constant)");
            let w = fd_inputs(&op, std::slice::from_ref(&a), 60, 1e-2);
            assert!(w[0] < 2e-3, "case {i} (constant): {w:?}");
        }
        assert!(MatMul::new().forward(&[&rand(&[2, 3], 1), &rand(&[4, 2], 2)]).is_err());
        assert!(MatMul::new().forward(&[&rand(&[2, 2, 3], 1), &rand(&[3, 3, 2], 2)]).is_err());
        assert!(MatMul::new().forward(&[&rand(&[3], 1), &rand(&[3, 2], 2)]).is_err());
    }
}
