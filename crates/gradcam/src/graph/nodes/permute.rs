//! `torch.permute` as a module (torchvision's `Permute([0, 2, 3, 1])` and `Permute([0, 3, 1, 2])` around
//! ConvNeXt's channels-last layers): the values are moved (a blocked, parallel transpose), so the ops after it
//! read a contiguous channels-last tensor, as PyTorch's kernels do after their own `.contiguous()`.

use crate::graph::{Ctx, Op, Saves};
use crate::ops::Grad;
use candle_core::{Result, Tensor};
use rayon::prelude::*;

/// Output dimension `i` is input dimension `dims[i]`.
#[derive(Clone, Debug)]
pub struct Permute {
    pub dims: Vec<usize>,
}

impl Permute {
    pub fn new(dims: &[usize]) -> Self {
        Permute { dims: dims.to_vec() }
    }
}

/// `batch` row-major `rows`×`cols` matrices, each transposed (to `cols`×`rows`).
pub(crate) fn transpose_batched(src: &[f32], batch: usize, rows: usize, cols: usize) -> Vec<f32> {
    const B: usize = 32;
    let plane = rows * cols;
    let mut dst = vec![0f32; src.len()];
    if plane == 0 {
        return dst;
    }
    // a task: one batch item's block of B destination rows (source columns)
    let blocks = cols.div_ceil(B);
    let tasks: Vec<(usize, usize)> = (0..batch).flat_map(|n| (0..blocks).map(move |b| (n, b))).collect();
    let ptr = SendPtr(dst.as_mut_ptr());
    tasks.par_iter().for_each(|&(n, b)| {
        let p = &ptr;
        let (j0, j1) = (b * B, ((b + 1) * B).min(cols));
        let s = &src[n * plane..(n + 1) * plane];
        // SAFETY: tasks write disjoint destination rows j0..j1 of item n, within dst's bounds
        let d = unsafe { std::slice::from_raw_parts_mut(p.0.add(n * plane + j0 * rows), (j1 - j0) * rows) };
        for i0 in (0..rows).step_by(B) {
            let i1 = (i0 + B).min(rows);
            for i in i0..i1 {
                let row = &s[i * cols + j0..i * cols + j1];
                for (jj, v) in row.iter().enumerate() {
                    d[jj * rows + i] = *v;
                }
            }
        }
    });
    dst
}

pub(crate) struct SendPtr(pub *mut f32);
// SAFETY: used only for disjoint writes from parallel tasks
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

/// When `perm` moves one block of dimensions past another (`[0, 2, 3, 1]`: (C)(H W) → (H W)(C) per item),
/// the (batch, rows, cols) of the equivalent batched transpose of a contiguous tensor of shape `dims`.
fn as_transpose(perm: &[usize], dims: &[usize]) -> Option<(usize, usize, usize)> {
    let r = perm.len();
    if r != dims.len() || r < 2 {
        return None;
    }
    // a leading identity part, then two runs of consecutive dimensions swapped: perm = [0..a, b..r, a..b]
    let a = perm.iter().enumerate().take_while(|(i, p)| *i == **p).count();
    if a >= r - 1 {
        return None;
    }
    let b = perm[a];
    let second: Vec<usize> = (b..r).chain(a..b).collect();
    if perm[a..] != second[..] || b <= a {
        return None;
    }
    let prod = |s: &[usize]| s.iter().product::<usize>();
    Some((prod(&dims[..a]), prod(&dims[a..b]), prod(&dims[b..])))
}

fn inverse(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (i, p) in perm.iter().enumerate() {
        inv[*p] = i;
    }
    inv
}

/// The values of a contiguous tensor of shape `dims` permuted by `perm`, and the new shape.
fn permute_values(x: &[f32], dims: &[usize], perm: &[usize]) -> Result<(Vec<f32>, Vec<usize>)> {
    let out_dims: Vec<usize> = perm.iter().map(|p| dims[*p]).collect();
    if let Some((batch, rows, cols)) = as_transpose(perm, dims) {
        return Ok((transpose_batched(x, batch, rows, cols), out_dims));
    }
    let t = Tensor::from_slice(x, dims, &candle_core::Device::Cpu)?.permute(perm)?;
    Ok((super::values(&t.contiguous()?)?, out_dims))
}

impl Op for Permute {
    fn kind(&self) -> &'static str {
        "Permute"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        if x[0].rank() != self.dims.len() {
            candle_core::bail!("permute {:?} of a tensor of shape {:?}", self.dims, x[0].dims())
        }
        if x[0].dtype() != candle_core::DType::F32 {
            // the importer's constant folder (I64, U8): candle's own copy
            return x[0].permute(self.dims.as_slice())?.contiguous();
        }
        let (v, dims) = crate::ops::with_f32(x[0], "permute", |v| permute_values(v, x[0].dims(), &self.dims))?;
        Tensor::from_vec(v, dims, x[0].device())
    }
    fn saves(&self) -> Saves {
        Saves::NOTHING
    }
    fn backward(&self, _ctx: &Ctx, dy: Grad) -> Result<Vec<Option<Grad>>> {
        let (data, dims) = permute_values(&dy.data, &dy.dims, &inverse(&self.dims))?;
        Ok(vec![Some(Grad { data, dims })])
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutes_as_candle_does_and_back() {
        let dims = [2usize, 5, 7, 3];
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 3.0).collect();
        let t = Tensor::from_vec(v.clone(), &dims, &candle_core::Device::Cpu).unwrap();
        for perm in [[0usize, 2, 3, 1], [0, 3, 1, 2], [0, 1, 3, 2], [1, 0, 2, 3], [0, 2, 1, 3]] {
            let p = Permute::new(&perm);
            let y = p.forward(&[&t]).unwrap();
            let want = t.permute(perm.as_slice()).unwrap().contiguous().unwrap();
            assert_eq!(y.dims(), want.dims());
            assert_eq!(super::super::values(&y).unwrap(), super::super::values(&want).unwrap(), "{perm:?}");
            // the backward of a permutation is the inverse permutation: a gradient equal to y gives back x
            let ctx = Ctx {
                inputs: &[None],
                input_dims: &[dims.to_vec()],
                output: None,
                bp: Default::default(),
                need: &[true],
            };
            let g = p.backward(&ctx, Grad::from_tensor(&y).unwrap()).unwrap().remove(0).unwrap();
            assert_eq!(g.dims, dims.to_vec());
            assert_eq!(g.data, v);
        }
    }

    /// I64 and U8 (the importer's constant folder) go through candle's own permute; Concat likewise.
    #[test]
    fn permutes_and_concatenates_integer_tensors() {
        let dev = candle_core::Device::Cpu;
        let t = Tensor::arange(0i64, 24, &dev).unwrap().reshape((2, 3, 4)).unwrap();
        let y = Permute::new(&[2, 0, 1]).forward(&[&t]).unwrap();
        let want = t.permute((2, 0, 1)).unwrap().contiguous().unwrap();
        assert_eq!(y.dims(), &[4, 2, 3]);
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<i64>().unwrap(),
            want.flatten_all().unwrap().to_vec1::<i64>().unwrap()
        );
        let u = t.to_dtype(candle_core::DType::U8).unwrap();
        let y = Permute::new(&[1, 0, 2]).forward(&[&u]).unwrap();
        assert_eq!(y.dims(), &[3, 2, 4]);
        assert_eq!(y.get(1).unwrap().get(1).unwrap().to_vec1::<u8>().unwrap(), vec![16, 17, 18, 19]);
        let a = Tensor::new(&[1i64, 3], &dev).unwrap();
        let b = Tensor::new(&[-1i64], &dev).unwrap();
        let c = crate::graph::nodes::Concat { dim: 0 }.forward(&[&a, &b]).unwrap();
        assert_eq!(c.to_vec1::<i64>().unwrap(), vec![1, 3, -1]);
    }
}
