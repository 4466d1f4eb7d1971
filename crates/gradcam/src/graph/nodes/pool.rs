//! Pooling: max-pool with padding (argmax backward), and global average pooling (`AdaptiveAvgPool2d(1)`).

use crate::graph::{Ctx, Op, Saves};
use crate::ops::pool::{max_pool2d, max_pool2d_input_grad, PoolConfig};
use crate::ops::Grad;
use candle_core::{Result, Tensor};

#[derive(Clone, Copy, Debug)]
pub struct MaxPool(pub PoolConfig);

impl Op for MaxPool {
    fn kind(&self) -> &'static str {
        "MaxPool2d"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        max_pool2d(x[0], self.0)
    }
    fn backward(&self, ctx: &Ctx, dy: Grad) -> Result<Vec<Option<Grad>>> {
        Ok(vec![Some(max_pool2d_input_grad(&dy, ctx.input(0, "max-pool")?, self.0)?)])
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// (N, C, H, W) → (N, C, 1, 1), the mean of each plane.
#[derive(Clone, Copy, Debug)]
pub struct GlobalAvgPool;

impl Op for GlobalAvgPool {
    fn kind(&self) -> &'static str {
        "AdaptiveAvgPool2d"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        x[0].mean_keepdim((2, 3))
    }
    fn saves(&self) -> Saves {
        Saves::NOTHING
    }
    fn backward(&self, ctx: &Ctx, dy: Grad) -> Result<Vec<Option<Grad>>> {
        let (n, c, h, w) = ctx.dims4(0)?;
        let hw = h * w;
        if dy.data.len() != n * c {
            candle_core::bail!("global average pool backward: gradient {:?} for input {:?}", dy.dims, (n, c, h, w))
        }
        let mut dx = vec![0f32; n * c * hw];
        for (plane, g) in dx.chunks_mut(hw.max(1)).zip(&dy.data) {
            plane.fill(g / hw as f32);
        }
        Ok(vec![Some(Grad { data: dx, dims: vec![n, c, h, w] })])
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
