//! The ops of the graphs, one file per family: convolution (with a folded batch-norm and a fused activation
//! once the passes have run), normalisation, activations, element-wise joins, pooling, linear layers and shape
//! changes. Each op's forward and input gradient live together; the kernels are in `ops/`.

pub mod act;
pub mod binary;
pub mod concat;
pub mod conv;
pub mod layer_norm;
pub mod linear;
pub mod linear_nd;
pub mod norm;
pub mod permute;
pub mod pool;
pub mod scale;
pub mod shape;
pub mod unary;

pub use act::{Act, AddAct};
pub use binary::{Binary, BinaryKind};
pub use concat::Concat;
pub use conv::{Conv, ConvSpec, Padding};
pub use linear::Linear;
pub use norm::BatchNorm;
pub use pool::{AdaptiveAvgPool, AvgPool, GlobalAvgPool, MaxPool};
pub use shape::Flatten;
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
