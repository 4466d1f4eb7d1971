//! The ops of the graphs, one file per family: convolution (with a folded batch-norm and a fused activation
//! once the passes have run), normalisation, activations, element-wise joins, pooling, linear layers and shape
//! changes. Each op's forward and input gradient live together; the kernels are in `ops/`.

pub mod act;
pub mod binary;
pub mod concat;
pub mod conv;
pub mod elementwise;
pub mod expand;
pub mod layer_norm;
pub mod linear;
pub mod linear_nd;
pub mod matmul;
pub mod norm;
pub mod pad;
pub mod permute;
pub mod pool;
pub mod pool2d;
pub mod reduce;
pub mod reshape;
pub mod scale;
pub mod shape;
pub mod slice;
pub mod softmax;
pub mod unary;

pub use act::{Act, AddAct};
pub use binary::{Binary, BinaryKind};
pub use concat::Concat;
pub use conv::{Conv, ConvSpec, Padding};
pub use elementwise::Elementwise;
pub use expand::Expand;
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use linear_nd::LinearNd;
pub use matmul::MatMul;
pub use norm::BatchNorm;
pub use pad::Pad;
pub use permute::Permute;
pub use pool::{AdaptiveAvgPool, AvgPool, GlobalAvgPool, MaxPool};
pub use pool2d::Pool2d;
pub use reduce::ReduceMean;
pub use reshape::Reshape;
pub use shape::Flatten;
pub use slice::{Gather, Slice};
pub use softmax::Softmax;
pub use unary::{Unary, UnaryKind};

use candle_core::{Result, Tensor};

/// Parallel map over the (N·C) planes of a 4-D tensor's values: `f(channel, input plane, output plane)`.
pub(crate) fn per_channel(x: &[f32], c: usize, hw: usize, f: impl Fn(usize, &[f32], &mut [f32]) + Sync) -> Vec<f32> {
    use rayon::prelude::*;
    let mut out = vec![0f32; x.len()];
    if hw == 0 {
        return out;
    }
    out.par_chunks_mut(hw).zip(x.par_chunks(hw)).enumerate().for_each(|(i, (o, x))| f(i % c, x, o));
    out
}

/// `dy` of (…, C, hw) values times a factor per channel: the gradient of a per-channel scale.
pub(crate) fn scale_channels(dy: crate::ops::Grad, c: usize, hw: usize, scale: &[f32]) -> crate::ops::Grad {
    let data = per_channel(&dy.data, c, hw, |ch, g, o| {
        let s = scale[ch];
        o.iter_mut().zip(g).for_each(|(o, g)| *o = g * s);
    });
    crate::ops::Grad { data, dims: dy.dims }
}

/// Parallel map from planes of `inp` values to planes of `out` values (pooling): `f(input plane, output plane)`.
pub(crate) fn per_plane(
    x: &[f32],
    planes: usize,
    inp: usize,
    out: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    use rayon::prelude::*;
    let mut y = vec![0f32; planes * out];
    if inp == 0 || out == 0 {
        return y;
    }
    y.par_chunks_mut(out).zip(x.par_chunks(inp)).for_each(|(o, p)| f(p, o));
    y
}

/// A contiguous f32 tensor's values, as a new vector.
pub(crate) fn values(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

/// (outer, len, inner) of a shape around axis `axis`: the values as `outer` blocks of `len` rows of `inner`.
pub(crate) fn split_at_axis(dims: &[usize], axis: usize) -> (usize, usize, usize) {
    (dims[..axis].iter().product(), dims[axis], dims[axis + 1..].iter().product())
}

#[cfg(test)]
pub(crate) mod testutil {
    use crate::graph::{Ctx, Op};
    use crate::ops::testutil::rand;
    use crate::ops::Grad;
    use candle_core::Tensor;

    /// For each input of `op` (with `xs` as its inputs), the worst error of its gradient of sum(op(xs)·r)
    /// against central differences (f64 sums of f32 evaluations, step `h`) at up to `probes` positions, relative
    /// to the largest |gradient| of that input (at least 1e-6). The op's backward gets every value it may save.
    pub(crate) fn fd_inputs(op: &dyn Op, xs: &[Tensor], probes: usize, h: f32) -> Vec<f32> {
        let refs: Vec<&Tensor> = xs.iter().collect();
        let y = op.forward(&refs).unwrap();
        let r = rand(y.dims(), 77);
        let rv = r.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let inputs: Vec<Option<Tensor>> = xs.iter().map(|x| Some(x.clone())).collect();
        let dims: Vec<Vec<usize>> = xs.iter().map(|x| x.dims().to_vec()).collect();
        let need = vec![true; xs.len()];
        let ctx = Ctx { inputs: &inputs, input_dims: &dims, output: Some(&y), bp: Default::default(), need: &need };
        let gs = op.backward(&ctx, Grad { data: rv.clone(), dims: y.dims().to_vec() }).unwrap();
        assert_eq!(gs.len(), xs.len(), "{}: one gradient per input", op.kind());
        let mut out = vec![];
        for (k, g) in gs.into_iter().enumerate() {
            let g = g.expect("a gradient for every input");
            assert_eq!(g.dims, xs[k].dims(), "{}: gradient shape of input {k}", op.kind());
            let base = xs[k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let gmax = g.data.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
            let mut worst = 0f32;
            let n = base.len();
            for p in 0..probes.min(n) {
                let i = if probes >= n { p } else { (p * 7919 + 13) % n };
                let eval = |d: f32| -> f64 {
                    let mut v = base.clone();
                    v[i] += d;
                    let t = Tensor::from_vec(v, xs[k].dims(), xs[k].device()).unwrap();
                    let mut all: Vec<Tensor> = xs.to_vec();
                    all[k] = t;
                    let refs: Vec<&Tensor> = all.iter().collect();
                    let y = op.forward(&refs).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    y.iter().zip(&rv).map(|(a, b)| *a as f64 * *b as f64).sum()
                };
                let num = ((eval(h) - eval(-h)) / (2.0 * h as f64)) as f32;
                worst = worst.max((num - g.data[i]).abs() / gmax);
            }
            out.push(worst);
        }
        out
    }

    /// A tensor's values as f32.
    pub(crate) fn v(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_dtype(candle_core::DType::F32).unwrap().to_vec1::<f32>().unwrap()
    }

    pub(crate) fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).fold(0f32, |m, (a, b)| m.max((a - b).abs()))
    }
}
