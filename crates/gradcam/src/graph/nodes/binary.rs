//! Element-wise products and sums with broadcasting (NumPy's rules): the squeeze-excitation product
//! x (N, C, H, W) · s (N, C, 1, 1), a layer scale γ (C, 1, 1) · x, sums of different shapes. The gradient of a
//! broadcast input is summed over the dimensions it was broadcast along. (Equal-shape residual sums take
//! `AddAct`, whose activation fuses.)

use crate::graph::{Ctx, Op, Saves};
use crate::ops::with_f32;
use crate::ops::Grad;
use candle_core::{Result, Tensor};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryKind {
    Add,
    Sub,
    Mul,
    Div,
}

/// `a ∘ b`; `constant` holds b when it is a weight (a layer scale), else b is the second input. With
/// `constant_first`, `constant` holds a instead and the one input is b (`1 - x`, `1 / x`).
#[derive(Clone, Debug)]
pub struct Binary {
    pub kind: BinaryKind,
    pub constant: Option<Tensor>,
    /// The constant is the first operand (only with `constant` set).
    pub constant_first: bool,
}

impl Binary {
    pub fn new(kind: BinaryKind) -> Self {
        Binary { kind, constant: None, constant_first: false }
    }
    pub fn with_constant(kind: BinaryKind, b: Tensor) -> Self {
        Binary { kind, constant: Some(b), constant_first: false }
    }
    /// `a ∘ x` with `a` a constant and x the one input (ONNX's `Sub(1, x)`, `Div(1, x)`).
    pub fn with_constant_first(kind: BinaryKind, a: Tensor) -> Self {
        Binary { kind, constant: Some(a), constant_first: true }
    }
    fn operands<'a>(&'a self, x: &'a [&'a Tensor]) -> Result<(&'a Tensor, &'a Tensor)> {
        match (&self.constant, x) {
            (Some(a), [b]) if self.constant_first => Ok((a, b)),
            (Some(b), [a]) => Ok((a, b)),
            (None, [a, b]) => Ok((a, b)),
            _ => candle_core::bail!("{}: wrong number of inputs", self.kind()),
        }
    }
}

/// The shapes with a plain loop instead of candle's general broadcast (about 40× faster): equal shapes, and one
/// operand (N, C, H, W) with the other one value per plane, (N, C, 1, 1) or (C, 1, 1) / (1, C, 1, 1) (the
/// squeeze-excitation product, a per-channel constant).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fast {
    Same,
    /// `big` is input 0 or 1 (the other the per-plane one); `c` channels of `hw` values; `per_image`: the small
    /// operand has a value for every (n, c) plane, else one per channel shared by the images.
    Planes {
        big: usize,
        c: usize,
        hw: usize,
        per_image: bool,
    },
}

fn fast_layout(kind: BinaryKind, a: &[usize], b: &[usize]) -> Option<Fast> {
    if !matches!(kind, BinaryKind::Add | BinaryKind::Mul) {
        return None;
    }
    if a == b {
        return Some(Fast::Same);
    }
    let planes = |big: &[usize], small: &[usize]| -> Option<(usize, usize, bool)> {
        let [n, c, h, w] = *big else { return None };
        match *small {
            [sn, sc, 1, 1] if sc == c && (sn == n || sn == 1) => Some((c, h * w, sn == n)),
            [sc, 1, 1] if sc == c => Some((c, h * w, n == 1)),
            _ => None,
        }
    };
    if let Some((c, hw, per_image)) = planes(a, b) {
        return Some(Fast::Planes { big: 0, c, hw, per_image });
    }
    if let Some((c, hw, per_image)) = planes(b, a) {
        return Some(Fast::Planes { big: 1, c, hw, per_image });
    }
    None
}

/// Σ x·y, eight running sums (so that it vectorises).
fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (x, y) in xc.zip(yc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in xr.iter().zip(yr) {
        s += x * y;
    }
    s
}

/// Σ x, eight running sums.
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let xc = x.chunks_exact(8);
    let xr = xc.remainder();
    for x in xc {
        for i in 0..8 {
            acc[i] += x[i];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for x in xr {
        s += x;
    }
    s
}

/// Per-plane values summed to the small operand's shape: as they are when it has one per (n, c) plane, else
/// summed over the images.
fn to_small(p: Vec<f32>, c: usize, per_image: bool) -> Vec<f32> {
    if per_image {
        return p;
    }
    let mut s = vec![0f32; c];
    for (i, v) in p.into_iter().enumerate() {
        s[i % c] += v;
    }
    s
}

const CHUNK: usize = 1 << 14;

impl Binary {
    fn fast_forward(&self, fast: Fast, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let mul = self.kind == BinaryKind::Mul;
        let (big, small) = match fast {
            Fast::Planes { big: 1, .. } => (b, a),
            _ => (a, b),
        };
        let y = with_f32(big, "binary", |x| {
            with_f32(small, "binary", |s| {
                let mut y = vec![0f32; x.len()];
                match fast {
                    Fast::Same => y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).zip(s.par_chunks(CHUNK)).for_each(
                        |((y, x), s)| {
                            if mul {
                                y.iter_mut().zip(x).zip(s).for_each(|((y, x), s)| *y = x * s);
                            } else {
                                y.iter_mut().zip(x).zip(s).for_each(|((y, x), s)| *y = x + s);
                            }
                        },
                    ),
                    Fast::Planes { c, hw, per_image, .. } => {
                        if hw > 0 {
                            y.par_chunks_mut(hw).zip(x.par_chunks(hw)).enumerate().for_each(|(p, (y, x))| {
                                let v = s[if per_image { p } else { p % c }];
                                if mul {
                                    y.iter_mut().zip(x).for_each(|(y, x)| *y = x * v);
                                } else {
                                    y.iter_mut().zip(x).for_each(|(y, x)| *y = x + v);
                                }
                            })
                        }
                    }
                }
                Ok(y)
            })
        })?;
        Tensor::from_vec(y, big.dims(), big.device())
    }

    fn fast_backward(&self, fast: Fast, ctx: &Ctx, mut dy: Grad) -> Result<Vec<Option<Grad>>> {
        let n_in = if self.constant.is_some() { 1 } else { 2 };
        let need = |i: usize| i < n_in && ctx.need.get(i).copied().unwrap_or(false);
        let mul = self.kind == BinaryKind::Mul;
        let value = |i: usize| -> Result<Tensor> {
            match (i, &self.constant) {
                (1, Some(b)) => Ok(b.clone()),
                _ => Ok(ctx.input(i, "binary")?.clone()),
            }
        };
        let dims = |i: usize| -> Vec<usize> {
            match (i, &self.constant) {
                (1, Some(b)) => b.dims().to_vec(),
                _ => ctx.input_dims[i].clone(),
            }
        };
        let mut out: Vec<Option<Grad>> = vec![None; n_in];
        match fast {
            Fast::Same => {
                if !mul {
                    if need(1) {
                        out[1] = Some(Grad { data: dy.data.clone(), dims: dims(1) });
                    }
                    if need(0) {
                        out[0] = Some(dy);
                    }
                    return Ok(out);
                }
                // d a = dy·b, d b = dy·a
                for i in [1, 0] {
                    if !need(i) {
                        continue;
                    }
                    let other = value(1 - i)?;
                    let g = with_f32(&other, "binary", |o| {
                        let mut g = if i == 0 { std::mem::take(&mut dy.data) } else { dy.data.clone() };
                        g.par_chunks_mut(CHUNK).zip(o.par_chunks(CHUNK)).for_each(|(g, o)| {
                            g.iter_mut().zip(o).for_each(|(g, o)| *g *= o);
                        });
                        Ok(g)
                    })?;
                    out[i] = Some(Grad { data: g, dims: dims(i) });
                }
            }
            Fast::Planes { big, c, hw, per_image } => {
                let small = 1 - big;
                if hw == 0 {
                    return self.general_backward(ctx, dy);
                }
                if !mul {
                    if need(small) {
                        let p: Vec<f32> = dy.data.par_chunks(hw).map(sum).collect();
                        out[small] = Some(Grad { data: to_small(p, c, per_image), dims: dims(small) });
                    }
                    if need(big) {
                        out[big] = Some(dy);
                    }
                    return Ok(out);
                }
                // d small = Σ_hw dy·big per plane; d big = dy·small
                if need(small) {
                    let x = value(big)?;
                    let p: Vec<f32> = with_f32(&x, "binary", |x| {
                        Ok(dy.data.par_chunks(hw).zip(x.par_chunks(hw)).map(|(g, x)| dot(g, x)).collect())
                    })?;
                    out[small] = Some(Grad { data: to_small(p, c, per_image), dims: dims(small) });
                }
                if need(big) {
                    let s = value(small)?;
                    with_f32(&s, "binary", |s| {
                        dy.data.par_chunks_mut(hw).enumerate().for_each(|(p, g)| {
                            let v = s[if per_image { p } else { p % c }];
                            g.iter_mut().for_each(|g| *g *= v);
                        });
                        Ok(())
                    })?;
                    out[big] = Some(dy);
                }
            }
        }
        Ok(out)
    }
}

/// The gradient `g` (shape of the broadcast result) summed down to `shape`.
pub(crate) fn reduce_to(g: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let mut g = g.clone();
    let extra = g.rank() - shape.len();
    for _ in 0..extra {
        g = g.sum(0)?;
    }
    for (d, &n) in shape.iter().enumerate() {
        if n == 1 && g.dims()[d] != 1 {
            g = g.sum_keepdim(d)?;
        }
    }
    g.reshape(shape)
}

impl Op for Binary {
    fn kind(&self) -> &'static str {
        match self.kind {
            BinaryKind::Add => "Add",
            BinaryKind::Sub => "Sub",
            BinaryKind::Mul => "Mul",
            BinaryKind::Div => "Div",
        }
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        let (a, b) = self.operands(x)?;
        if let Some(fast) = fast_layout(self.kind, a.dims(), b.dims()) {
            return self.fast_forward(fast, a, b);
        }
        match self.kind {
            BinaryKind::Add => a.broadcast_add(b),
            BinaryKind::Sub => a.broadcast_sub(b),
            BinaryKind::Mul => a.broadcast_mul(b),
            BinaryKind::Div => a.broadcast_div(b),
        }
    }
    fn saves(&self) -> Saves {
        match self.kind {
            BinaryKind::Add | BinaryKind::Sub => Saves::NOTHING,
            BinaryKind::Mul if self.constant_first => Saves::NOTHING,
            BinaryKind::Mul | BinaryKind::Div => Saves::INPUTS,
        }
    }
    fn backward(&self, ctx: &Ctx, dy: Grad) -> Result<Vec<Option<Grad>>> {
        if self.constant_first {
            return self.constant_first_backward(ctx, dy);
        }
        let b_dims = match &self.constant {
            Some(b) => b.dims(),
            None => &ctx.input_dims[1][..],
        };
        match fast_layout(self.kind, &ctx.input_dims[0], b_dims) {
            Some(fast) => self.fast_backward(fast, ctx, dy),
            None => self.general_backward(ctx, dy),
        }
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Binary {
    /// d(a ∘ x)/dx for a constant a: dy, −dy, dy·a, −dy·a/x², summed down to x's shape.
    fn constant_first_backward(&self, ctx: &Ctx, dy: Grad) -> Result<Vec<Option<Grad>>> {
        if !ctx.need.first().copied().unwrap_or(false) {
            return Ok(vec![None]);
        }
        let a = match &self.constant {
            Some(a) => a,
            None => candle_core::bail!("{}: a constant first operand is missing", self.kind()),
        };
        let x_shape = &ctx.input_dims[0];
        if dy.dims == *x_shape && matches!(self.kind, BinaryKind::Add) {
            return Ok(vec![Some(dy)]);
        }
        let g = dy.into_tensor(&candle_core::Device::Cpu)?;
        let gx = match self.kind {
            BinaryKind::Add => g,
            BinaryKind::Sub => g.neg()?,
            BinaryKind::Mul => g.broadcast_mul(a)?,
            BinaryKind::Div => {
                let x = ctx.input(0, "binary")?;
                g.broadcast_mul(a)?.broadcast_div(&x.sqr()?)?.neg()?
            }
        };
        Ok(vec![Some(Grad::from_tensor(&reduce_to(&gx, x_shape)?)?)])
    }

    fn general_backward(&self, ctx: &Ctx, dy: Grad) -> Result<Vec<Option<Grad>>> {
        let dev = candle_core::Device::Cpu;
        let da_shape = &ctx.input_dims[0];
        let b_shape: Vec<usize> = match &self.constant {
            Some(b) => b.dims().to_vec(),
            None => ctx.input_dims[1].clone(),
        };
        let g = dy.into_tensor(&dev)?;
        let (a, b) = match self.kind {
            BinaryKind::Add | BinaryKind::Sub => (None, None),
            _ => {
                let a = ctx.input(0, "binary")?.clone();
                let b = match &self.constant {
                    Some(b) => b.clone(),
                    None => ctx.input(1, "binary")?.clone(),
                };
                (Some(a), Some(b))
            }
        };
        let (ga, gb) = match self.kind {
            BinaryKind::Add => (g.clone(), g),
            BinaryKind::Sub => (g.clone(), g.neg()?),
            BinaryKind::Mul => {
                let (a, b) = (a.unwrap_or_else(|| g.clone()), b.unwrap_or_else(|| g.clone()));
                (g.broadcast_mul(&b)?, g.broadcast_mul(&a)?)
            }
            BinaryKind::Div => {
                let (a, b) = (a.unwrap_or_else(|| g.clone()), b.unwrap_or_else(|| g.clone()));
                let ga = g.broadcast_div(&b)?;
                // d(a/b)/db = -a/b²
                let gb = g.broadcast_mul(&a)?.broadcast_div(&b.sqr()?)?.neg()?;
                (ga, gb)
            }
        };
        let need_b = self.constant.is_none() && ctx.need.get(1).copied().unwrap_or(false);
        let da = if ctx.need[0] { Some(Grad::from_tensor(&reduce_to(&ga, da_shape)?)?) } else { None };
        let mut out = vec![da];
        if self.constant.is_none() {
            out.push(if need_b { Some(Grad::from_tensor(&reduce_to(&gb, &b_shape)?)?) } else { None });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::rand;

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).fold(0f32, |m, (a, b)| m.max((a - b).abs()))
    }

    /// The fast paths give the general broadcast's values (forward exactly; the per-plane sums of the
    /// backward up to rounding) for every shape they take, either operand order, with or without a constant.
    #[test]
    fn fast_paths_equal_the_general_broadcast() {
        let cases: &[(&[usize], &[usize])] = &[
            (&[2, 5, 7, 9], &[2, 5, 1, 1]),
            (&[2, 5, 1, 1], &[2, 5, 7, 9]),
            (&[1, 6, 11, 3], &[1, 6, 1, 1]),
            (&[2, 5, 4, 4], &[1, 5, 1, 1]),
            (&[2, 5, 4, 4], &[5, 1, 1]),
            (&[1, 5, 4, 4], &[5, 1, 1]),
            (&[2, 3, 5, 6], &[2, 3, 5, 6]),
            (&[7, 13], &[7, 13]),
        ];
        for kind in [BinaryKind::Mul, BinaryKind::Add] {
            for (i, &(da, db)) in cases.iter().enumerate() {
                let a = rand(da, 2 * i as u64 + 1);
                let b = rand(db, 2 * i as u64 + 2);
                let op = Binary::new(kind);
                let fast = fast_layout(kind, da, db).expect("a fast shape");
                let got = op.forward(&[&a, &b]).unwrap();
                let want = match kind {
                    BinaryKind::Mul => a.broadcast_mul(&b).unwrap(),
                    _ => a.broadcast_add(&b).unwrap(),
                };
                assert_eq!(got.dims(), want.dims());
                let (g, w) = (
                    got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    want.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                );
                assert_eq!(max_diff(&g, &w), 0.0, "{kind:?} {da:?} {db:?}");
                let dy = Grad::from_tensor(&rand(got.dims(), 99)).unwrap();
                let inputs = [Some(a.clone()), Some(b.clone())];
                let dims = [da.to_vec(), db.to_vec()];
                for need in [[true, true], [true, false], [false, true]] {
                    let ctx =
                        Ctx { inputs: &inputs, input_dims: &dims, output: None, bp: Default::default(), need: &need };
                    let f = op.fast_backward(fast, &ctx, dy.clone()).unwrap();
                    let w = op.general_backward(&ctx, dy.clone()).unwrap();
                    for k in 0..2 {
                        match (&f[k], &w[k]) {
                            (Some(f), Some(w)) => {
                                assert_eq!(f.dims, w.dims);
                                assert!(max_diff(&f.data, &w.data) < 1e-5, "{kind:?} {da:?} {db:?} input {k}");
                            }
                            (None, _) => assert!(!need[k]),
                            (Some(_), None) => panic!("a gradient not asked for"),
                        }
                    }
                }
                // b as a constant
                let op = Binary::with_constant(kind, b.clone());
                if da.len() >= db.len() {
                    let got = op.forward(&[&a]).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    assert_eq!(max_diff(&got, &w), 0.0);
                    let ctx = Ctx {
                        inputs: &inputs[..1],
                        input_dims: &dims[..1],
                        output: None,
                        bp: Default::default(),
                        need: &[true],
                    };
                    let f = op.backward(&ctx, dy.clone()).unwrap();
                    let w = op.general_backward(&ctx, dy.clone()).unwrap();
                    assert_eq!(f.len(), 1);
                    assert!(max_diff(&f[0].as_ref().unwrap().data, &w[0].as_ref().unwrap().data) < 1e-5);
                }
            }
        }
        assert_eq!(fast_layout(BinaryKind::Sub, &[2, 3], &[2, 3]), None);
        assert_eq!(fast_layout(BinaryKind::Mul, &[2, 3, 4, 4], &[3, 4, 1]), None);
        assert_eq!(fast_layout(BinaryKind::Mul, &[2, 3, 4, 4], &[2, 1, 1, 1]), None);
    }

    /// Every kind, the second operand a variable or a constant, broadcast either way (and the constant as the
    /// first operand): forward against f64 loops, gradients against central differences (step 1e-2, relative to
    /// the largest gradient: 2e-3). Divisors are kept away from 0 (|b| ≥ 0.5).
    #[test]
    fn all_kinds_broadcast_both_ways_with_correct_gradients() {
        use super::super::testutil::{fd_inputs, v};
        let cases: &[(&[usize], &[usize])] = &[
            (&[2, 3, 4], &[2, 3, 4]),
            (&[2, 3, 4], &[3, 1]),
            (&[1, 4], &[2, 3, 4]),
            (&[2, 1, 4], &[3, 1]),
            (&[2, 3, 4, 5], &[1, 3, 1, 1]),
            (&[3], &[2, 1, 3]),
        ];
        let away = |t: Tensor| -> Tensor {
            // |b| in [0.5, 1.5): sign(b)·(|b| + 0.5)
            let s = t.ge(0f32).unwrap().to_dtype(candle_core::DType::F32).unwrap();
            let sign = ((s * 2.0).unwrap() - 1.0).unwrap();
            ((t.abs().unwrap() + 0.5).unwrap() * sign).unwrap()
        };
        let reference = |kind: BinaryKind, a: &Tensor, b: &Tensor| -> (Vec<usize>, Vec<f32>) {
            let out = super::super::expand::broadcast_shape(a.dims(), b.dims()).unwrap();
            let at = |t: &Tensor| v(&t.broadcast_as(out.as_slice()).unwrap().contiguous().unwrap());
            let (av, bv) = (at(a), at(b));
            let y = av
                .iter()
                .zip(&bv)
                .map(|(&x, &y)| {
                    let (x, y) = (x as f64, y as f64);
                    (match kind {
                        BinaryKind::Add => x + y,
                        BinaryKind::Sub => x - y,
                        BinaryKind::Mul => x * y,
                        BinaryKind::Div => x / y,
                    }) as f32
                })
                .collect();
            (out, y)
        };
        let close =
            |got: &[f32], want: &[f32]| got.iter().zip(want).all(|(g, w)| (g - w).abs() <= 1e-6 * w.abs().max(1.0));
        for kind in [BinaryKind::Add, BinaryKind::Sub, BinaryKind::Mul, BinaryKind::Div] {
            for (i, &(da, db)) in cases.iter().enumerate() {
                let a = rand(da, 10 * i as u64 + 1);
                let b = away(rand(db, 10 * i as u64 + 2));
                let (out, want) = reference(kind, &a, &b);
                // two inputs
                let op = Binary::new(kind);
                let y = op.forward(&[&a, &b]).unwrap();
                assert_eq!(y.dims(), out.as_slice(), "{kind:?} case {i}");
                assert!(close(&v(&y), &want), "{kind:?} case {i}");
                let w = fd_inputs(&op, &[a.clone(), b.clone()], 60, 1e-2);
                assert!(w.iter().all(|w| *w < 2e-3), "{kind:?} case {i}: {w:?}");
                // b constant
                let op = Binary::with_constant(kind, b.clone());
                let y = op.forward(&[&a]).unwrap();
                assert!(close(&v(&y), &want), "{kind:?} case {i} (constant second)");
                let w = fd_inputs(&op, std::slice::from_ref(&a), 60, 1e-2);
                assert!(w[0] < 2e-3, "{kind:?} case {i} (constant second): {w:?}");
                // the constant first: a ∘ x with x = b
                let op = Binary::with_constant_first(kind, a.clone());
                let y = op.forward(&[&b]).unwrap();
                assert_eq!(y.dims(), out.as_slice());
                assert!(close(&v(&y), &want), "{kind:?} case {i} (constant first)");
                let w = fd_inputs(&op, std::slice::from_ref(&b), 60, 1e-2);
                assert!(w[0] < 2e-3, "{kind:?} case {i} (constant first): {w:?}");
            }
        }
        // 1 - x and 1 / x, scalars as ONNX gives them (a 0-D constant)
        let one = Tensor::new(1f32, &candle_core::Device::Cpu).unwrap();
        let x = away(rand(&[2, 3], 5));
        let y = Binary::with_constant_first(BinaryKind::Sub, one.clone()).forward(&[&x]).unwrap();
        assert_eq!(v(&y), v(&x).iter().map(|x| 1.0 - x).collect::<Vec<_>>());
        let y = Binary::with_constant_first(BinaryKind::Div, one).forward(&[&x]).unwrap();
        assert_eq!(v(&y), v(&x).iter().map(|x| 1.0 / x).collect::<Vec<_>>());
    }
}
