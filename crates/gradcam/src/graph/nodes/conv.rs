//! 2-D convolution, with its batch-norm folded in and an activation fused into the kernel once
//! [`crate::graph::passes`] have run.

use super::Act;
use crate::graph::{Ctx, Op, Saves};
use crate::ops::act::{mask_from_output, Backprop};
use crate::ops::conv::{conv2d_act, conv2d_input_grad, ConvConfig, Pad};
use crate::ops::Grad;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// How a convolution pads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    Fixed(Pad),
    /// TensorFlow 'SAME', resolved from the input's size at run time.
    TfSame,
}

impl Padding {
    /// The same padding on every side.
    pub fn same(p: usize) -> Self {
        Padding::Fixed(Pad::same(p))
    }
}

/// Shape and geometry of a convolution.
#[derive(Clone, Copy, Debug)]
pub struct ConvSpec {
    pub cin: usize,
    pub cout: usize,
    pub kernel: usize,
    pub stride: usize,
    pub groups: usize,
    pub padding: Padding,
    pub bias: bool,
}

impl ConvSpec {
    /// A convolution without bias (the usual one before a batch-norm).
    pub fn new(cin: usize, cout: usize, kernel: usize, stride: usize, padding: Padding) -> Self {
        ConvSpec { cin, cout, kernel, stride, groups: 1, padding, bias: false }
    }
    pub fn depthwise(c: usize, kernel: usize, stride: usize, padding: Padding) -> Self {
        ConvSpec { cin: c, cout: c, kernel, stride, groups: c, padding, bias: false }
    }
    pub fn groups(self, groups: usize) -> Self {
        ConvSpec { groups, ..self }
    }
    pub fn with_bias(self) -> Self {
        ConvSpec { bias: true, ..self }
    }
}

/// y = act(conv(x, weight) + bias).
#[derive(Clone, Debug)]
pub struct Conv {
    pub weight: Tensor,
    /// Zeros when the module has none (the kernel always adds one).
    pub bias: Tensor,
    pub stride: usize,
    pub groups: usize,
    pub padding: Padding,
    /// Fused by the passes; None in a built graph.
    pub act: Option<Act>,
    /// Whether a batch-norm was folded in (shown in listings).
    pub folded: bool,
}

impl Conv {
    /// From `vb` holding `weight` (and `bias` if the spec says so).
    pub fn new(vb: VarBuilder, s: ConvSpec) -> Result<Self> {
        let weight = vb.get((s.cout, s.cin / s.groups, s.kernel, s.kernel), "weight")?;
        let bias =
            if s.bias { vb.get(s.cout, "bias")? } else { Tensor::zeros(s.cout, weight.dtype(), weight.device())? };
        Ok(Conv { weight, bias, stride: s.stride, groups: s.groups, padding: s.padding, act: None, folded: false })
    }

    pub fn config(&self, h: usize, w: usize) -> Result<ConvConfig> {
        let (_, _, kh, kw) = self.weight.dims4()?;
        Ok(match self.padding {
            Padding::Fixed(p) => ConvConfig::new(self.stride, p, self.groups),
            Padding::TfSame => ConvConfig::tf_same(h, w, (kh, kw), self.stride, self.groups),
        })
    }

    pub fn out_channels(&self) -> usize {
        self.weight.dims().first().copied().unwrap_or(0)
    }
}

impl Op for Conv {
    fn kind(&self) -> &'static str {
        "Conv2d"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        let (_, _, h, w) = x[0].dims4()?;
        conv2d_act(x[0], &self.weight, &self.bias, self.config(h, w)?, self.act.map(|a| (a.act, Backprop::Plain)))
    }
    fn saves(&self) -> Saves {
        if self.act.is_some() {
            Saves::OUTPUT
        } else {
            Saves::NOTHING
        }
    }
    fn backward(&self, ctx: &Ctx, mut dy: Grad) -> Result<Vec<Option<Grad>>> {
        if let Some(a) = self.act {
            // a fused activation takes the guided rule as its module would
            mask_from_output(&mut dy, ctx.output("conv2d")?, a.act, a.bp(ctx.bp))?;
        }
        if !ctx.need[0] {
            return Ok(vec![None]);
        }
        let x = ctx.dims4(0)?;
        Ok(vec![Some(conv2d_input_grad(&dy, x, &self.weight, self.config(x.2, x.3)?)?)])
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
