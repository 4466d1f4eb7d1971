//! Slicing along one axis (ONNX `Slice` with one axis, steps ≥ 1, bounds already clamped by the importer) and
//! picking indices along one axis (ONNX `Gather` with a scalar or 1-D constant index). Forward passes take any
//! dtype (the importer's constant folder runs them on I64 and U8 tensors); gradients are f32: the slice's is dy
//! scattered into zeros, the gather's dy scatter-added (an index may repeat).

use super::split_at_axis;
use crate::graph::{Ctx, Op, Saves};
use crate::ops::Grad;
use candle_core::{Result, Tensor};

/// Elements `start, start + step, …` (below `end`) of dimension `axis`.
#[derive(Clone, Debug)]
pub struct Slice {
    pub axis: usize,
    pub start: usize,
    pub end: usize,
    pub step: usize,
}

impl Slice {
    /// A slice of at least one element: `step ≥ 1` and `start < end` (an empty slice is an error).
    pub fn new(axis: usize, start: usize, end: usize, step: usize) -> Result<Self> {
        if step == 0 {
            candle_core::bail!("Slice: step 0 along axis {axis}")
        }
        if end <= start {
            candle_core::bail!("Slice: {start}..{end} along axis {axis} is empty")
        }
        Ok(Slice { axis, start, end, step })
    }
    /// How many elements the slice takes.
    pub fn len(&self) -> usize {
        if self.end <= self.start || self.step == 0 {
            0
        } else {
            (self.end - self.start).div_ceil(self.step)
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn check(&self, dims: &[usize]) -> Result<()> {
        if self.axis >= dims.len() || self.end > dims[self.axis] || self.is_empty() {
            candle_core::bail!(
                "Slice {}..{} step {} along axis {} of a tensor of shape {dims:?}",
                self.start,
                self.end,
                self.step,
                self.axis
            )
        }
        Ok(())
    }
}

/// The positions along the axis as an index tensor.
fn ids(idx: impl Iterator<Item = usize>) -> Result<Tensor> {
    let v: Vec<u32> = idx.map(|i| i as u32).collect();
    let n = v.len();
    Tensor::from_vec(v, n, &candle_core::Device::Cpu)
}

/// dx (shape `dims`) from dy: for each output row `k` along `axis`, dx's row `pos[k]` gets dy's row added.
fn scatter_add(dy: &[f32], dims: &[usize], axis: usize, pos: &[usize]) -> Vec<f32> {
    let (outer, len, inner) = split_at_axis(dims, axis);
    let mut dx = vec![0f32; outer * len * inner];
    let m = pos.len();
    for o in 0..outer {
        for (k, &p) in pos.iter().enumerate() {
            let src = &dy[(o * m + k) * inner..(o * m + k + 1) * inner];
            let dst = &mut dx[(o * len + p) * inner..(o * len + p + 1) * inner];
            dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
        }
    }
    dx
}

impl Op for Slice {
    fn kind(&self) -> &'static str {
        "Slice"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        self.check(x[0].dims())?;
        if self.step == 1 {
            return x[0].narrow(self.axis, self.start, self.end - self.start)?.contiguous();
        }
        let idx = ids((self.start..self.end).step_by(self.step))?;
        x[0].contiguous()?.index_select(&idx, self.axis)?.contiguous()
    }
    fn saves(&self) -> Saves {
        Saves::NOTHING
    }
    fn backward(&self, ctx: &Ctx, dy: Grad) -> Result<Vec<Option<Grad>>> {
        let dims = &ctx.input_dims[0];
        self.check(dims)?;
        let pos: Vec<usize> = (self.start..self.end).step_by(self.step).collect();
        let (outer, _, inner) = split_at_axis(dims, self.axis);
        if dy.data.len() != outer * pos.len() * inner {
            candle_core::bail!("Slice backward: gradient {:?} for an input of shape {dims:?}", dy.dims)
        }
        Ok(vec![Some(Grad { data: scatter_add(&dy.data, dims, self.axis, &pos), dims: dims.clone() })])
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Elements `indices` of dimension `axis`, in that order (repeats allowed). `keep_axis = false`: one scalar
/// index (`indices.len() == 1`) and the axis is removed, as ONNX `Gather` with a 0-D index does.
#[derive(Clone, Debug)]
pub struct Gather {
    pub axis: usize,
    pub indices: Vec<usize>,
    pub keep_axis: bool,
}

impl Gather {
    fn check(&self, dims: &[usize]) -> Result<()> {
        if self.axis >= dims.len() {
            candle_core::bail!("Gather along axis {} of a tensor of shape {dims:?}", self.axis)
        }
        if !self.keep_axis && self.indices.len() != 1 {
            candle_core::bail!("Gather: a removed axis takes one index, got {}", self.indices.len())
        }
        if let Some(i) = self.indices.iter().find(|&&i| i >= dims[self.axis]) {
            candle_core::bail!("Gather: index {i} along axis {} of a tensor of shape {dims:?}", self.axis)
        }
        Ok(())
    }
}

impl Op for Gather {
    fn kind(&self) -> &'static str {
        "Gather"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        self.check(x[0].dims())?;
        let y = x[0].contiguous()?.index_select(&ids(self.indices.iter().copied())?, self.axis)?.contiguous()?;
        if self.keep_axis {
            Ok(y)
        } else {
            y.squeeze(self.axis)
        }
    }
    fn saves(&self) -> Saves {
        Saves::NOTHING
    }
    fn backward(&self, ctx: &Ctx, dy: Grad) -> Result<Vec<Option<Grad>>> {
        let dims = &ctx.input_dims[0];
        self.check(dims)?;
        let (outer, _, inner) = split_at_axis(dims, self.axis);
        if dy.data.len() != outer * self.indices.len() * inner {
            candle_core::bail!("Gather backward: gradient {:?} for an input of shape {dims:?}", dy.dims)
        }
        Ok(vec![Some(Grad { data: scatter_add(&dy.data, dims, self.axis, &self.indices), dims: dims.clone() })])
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

    /// Reference: plain loops over the multi-index.
    fn slice_ref(x: &[f32], dims: &[usize], axis: usize, pos: &[usize]) -> Vec<f32> {
        let (outer, len, inner) = split_at_axis(dims, axis);
        let mut out = vec![];
        for o in 0..outer {
            for &p in pos {
                for i in 0..inner {
                    out.push(x[(o * len + p) * inner + i]);
                }
            }
        }
        out
    }

    #[test]
    fn slices_against_loops_with_gradients() {
        let dims = [2usize, 7, 3, 5];
        let x = rand(&dims, 1);
        let xv = v(&x);
        for (axis, start, end, step) in
            [(1, 1, 6, 2), (1, 0, 7, 1), (3, 2, 5, 1), (0, 1, 2, 1), (2, 0, 3, 3), (3, 0, 5, 4)]
        {
            let op = Slice::new(axis, start, end, step).unwrap();
            let pos: Vec<usize> = (start..end).step_by(step).collect();
            assert_eq!(op.len(), pos.len());
            let y = op.forward(&[&x]).unwrap();
            let mut want_dims = dims.to_vec();
            want_dims[axis] = pos.len();
            assert_eq!(y.dims(), want_dims.as_slice());
            assert_eq!(v(&y), slice_ref(&xv, &dims, axis, &pos), "{axis} {start} {end} {step}");
            let w = fd_inputs(&op, std::slice::from_ref(&x), 60, 1e-2);
            assert!(w[0] < 1e-3, "{w:?}");
        }
        assert!(Slice::new(0, 3, 3, 1).is_err());
        assert!(Slice::new(0, 0, 3, 0).is_err());
        assert!(Slice::new(1, 0, 8, 1).unwrap().forward(&[&x]).is_err());
        // I64 and U8 (the constant folder), a step
        let i = Tensor::arange(0i64, 10, &Device::Cpu).unwrap().reshape((2, 5)).unwrap();
        let y = Slice::new(1, 1, 5, 2).unwrap().forward(&[&i]).unwrap();
        assert_eq!(y.to_vec2::<i64>().unwrap(), vec![vec![1, 3], vec![6, 8]]);
        let u = i.to_dtype(DType::U8).unwrap();
        let y = Slice::new(1, 2, 4, 1).unwrap().forward(&[&u]).unwrap();
        assert_eq!(y.to_vec2::<u8>().unwrap(), vec![vec![2, 3], vec![7, 8]]);
    }

    #[test]
    fn gathers_against_loops_with_gradients() {
        let dims = [2usize, 6, 4];
        let x = rand(&dims, 2);
        let xv = v(&x);
        // repeated indices: the gradient adds up
        let op = Gather { axis: 1, indices: vec![4, 0, 4, 5], keep_axis: true };
        let y = op.forward(&[&x]).unwrap();
        assert_eq!(y.dims(), &[2, 4, 4]);
        assert_eq!(v(&y), slice_ref(&xv, &dims, 1, &op.indices));
        assert!(fd_inputs(&op, std::slice::from_ref(&x), 48, 1e-2)[0] < 1e-3);
        // a scalar index: the axis goes
        let op = Gather { axis: 2, indices: vec![3], keep_axis: false };
        let y = op.forward(&[&x]).unwrap();
        assert_eq!(y.dims(), &[2, 6]);
        assert_eq!(v(&y), slice_ref(&xv, &dims, 2, &[3]));
        assert!(fd_inputs(&op, std::slice::from_ref(&x), 48, 1e-2)[0] < 1e-3);
        let op = Gather { axis: 0, indices: vec![1], keep_axis: false };
        assert_eq!(op.forward(&[&x]).unwrap().dims(), &[6, 4]);
        assert!(Gather { axis: 1, indices: vec![6], keep_axis: true }.forward(&[&x]).is_err());
        assert!(Gather { axis: 1, indices: vec![1, 2], keep_axis: false }.forward(&[&x]).is_err());
        // a shape vector (I64), as the constant folder gathers one dimension of `Shape`'s output
        let s = Tensor::new(&[1i64, 3, 224, 224], &Device::Cpu).unwrap();
        let y = Gather { axis: 0, indices: vec![2], keep_axis: false }.forward(&[&s]).unwrap();
        assert_eq!(y.dims(), &[] as &[usize]);
        assert_eq!(y.to_scalar::<i64>().unwrap(), 224);
        let u = s.to_dtype(DType::U8).unwrap();
        let y = Gather { axis: 0, indices: vec![3, 0], keep_axis: true }.forward(&[&u]).unwrap();
        assert_eq!(y.to_vec1::<u8>().unwrap(), vec![224, 1]);
    }
}
