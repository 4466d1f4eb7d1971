//! Concatenation along a dimension (DenseNet's feature maps, along channels).

use crate::graph::{Ctx, Op, Saves};
use crate::ops::Grad;
use candle_core::{Result, Tensor};

#[derive(Clone, Copy, Debug)]
pub struct Concat {
    pub dim: usize,
}

impl Op for Concat {
    fn kind(&self) -> &'static str {
        "Concat"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        Tensor::cat(x, self.dim)
    }
    fn saves(&self) -> Saves {
        Saves::NOTHING
    }
    fn backward(&self, ctx: &Ctx, dy: Grad) -> Result<Vec<Option<Grad>>> {
        // dy as (outer, total, inner): each input takes its slice of the middle dimension
        let d = self.dim;
        let outer: usize = dy.dims[..d].iter().product();
        let inner: usize = dy.dims[d + 1..].iter().product();
        let total = dy.dims[d];
        let mut at = 0;
        let mut out = vec![];
        for (i, dims) in ctx.input_dims.iter().enumerate() {
            let len = dims[d];
            if ctx.need[i] {
                let mut g = Vec::with_capacity(outer * len * inner);
                for o in 0..outer {
                    let base = (o * total + at) * inner;
                    g.extend_from_slice(&dy.data[base..base + len * inner]);
                }
                out.push(Some(Grad { data: g, dims: dims.clone() }));
            } else {
                out.push(None);
            }
            at += len;
        }
        Ok(out)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
