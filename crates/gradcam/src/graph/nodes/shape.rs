//! Shape changes: flatten.

use crate::graph::{Ctx, Op, Saves};
use crate::ops::Grad;
use candle_core::{Result, Tensor};

/// `torch.flatten(x, 1)`: (N, …) → (N, product of the rest).
#[derive(Clone, Copy, Debug)]
pub struct Flatten;

impl Op for Flatten {
    fn kind(&self) -> &'static str {
        "Flatten"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        x[0].flatten_from(1)
    }
    fn saves(&self) -> Saves {
        Saves::NOTHING
    }
    fn backward(&self, ctx: &Ctx, dy: Grad) -> Result<Vec<Option<Grad>>> {
        Ok(vec![Some(Grad { data: dy.data, dims: ctx.input_dims[0].clone() })])
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
