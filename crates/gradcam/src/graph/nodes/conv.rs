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

    /// From a weight (O, I/groups, kh, kw) (kh ≠ kw allowed), an optional bias (O) (zeros without), a stride
    /// and four pads (top, left, bottom, right: [`Pad`]).
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>, stride: usize, pads: Pad, groups: usize) -> Result<Conv> {
        let (o, _, _, _) = weight.dims4()?;
        if groups == 0 || o % groups != 0 || stride == 0 {
            candle_core::bail!("Conv: weight {:?} with {groups} groups, stride {stride}", weight.dims())
        }
        let weight = weight.contiguous()?;
        let bias = match bias {
            Some(b) => b.flatten_all()?,
            None => Tensor::zeros(o, weight.dtype(), weight.device())?,
        };
        if bias.elem_count() != o {
            candle_core::bail!("Conv: weight {:?} with {} biases", weight.dims(), bias.elem_count())
        }
        Ok(Conv { weight, bias, stride, groups, padding: Padding::Fixed(pads), act: None, folded: false })
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

#[cfg(test)]
mod tests {
    use super::super::testutil::{fd_inputs, max_diff, v};
    use super::*;
    use crate::ops::testutil::rand;

    /// Non-square kernels with asymmetric pads, grouped or not: against candle's stock convolution of the
    /// explicitly padded input (within 1e-5), and the input gradient against central differences.
    #[test]
    fn from_tensors_non_square_kernels_asymmetric_pads() {
        for (i, (c, o, kh, kw, stride, pad, groups)) in [
            (3usize, 4usize, 3usize, 5usize, 1usize, Pad { top: 1, left: 2, bottom: 0, right: 3 }, 1usize),
            (4, 6, 1, 3, 2, Pad { top: 0, left: 1, bottom: 0, right: 1 }, 2),
            (4, 4, 5, 2, 1, Pad { top: 2, left: 0, bottom: 3, right: 1 }, 4),
        ]
        .into_iter()
        .enumerate()
        {
            let x = rand(&[1, c, 9, 8], i as u64 + 1);
            let w = rand(&[o, c / groups, kh, kw], i as u64 + 10);
            let b = rand(&[o], i as u64 + 20);
            let op = Conv::from_tensors(w.clone(), Some(b.clone()), stride, pad, groups).unwrap();
            let y = op.forward(&[&x]).unwrap();
            let xp = x.pad_with_zeros(2, pad.top, pad.bottom).unwrap().pad_with_zeros(3, pad.left, pad.right).unwrap();
            let want =
                xp.conv2d(&w, 0, stride, 1, groups).unwrap().broadcast_add(&b.reshape((1, o, 1, 1)).unwrap()).unwrap();
            assert_eq!(y.dims(), want.dims(), "case {i}");
            assert!(max_diff(&v(&y), &v(&want)) < 1e-5, "case {i}");
            let e = fd_inputs(&op, &[x], 60, 1e-2);
            assert!(e[0] < 2e-3, "case {i}: {e:?}");
            // no bias: zeros
            let op = Conv::from_tensors(w.clone(), None, stride, pad, groups).unwrap();
            let y0 = op.forward(&[&rand(&[1, c, 9, 8], i as u64 + 1)]).unwrap();
            let want0 = xp.conv2d(&w, 0, stride, 1, groups).unwrap();
            assert!(max_diff(&v(&y0), &v(&want0)) < 1e-5, "case {i} (no bias)");
        }
        assert!(Conv::from_tensors(rand(&[5, 2, 3, 3], 1), None, 1, Pad::default(), 2).is_err());
        assert!(Conv::from_tensors(rand(&[4, 2, 3, 3], 1), Some(rand(&[3], 2)), 1, Pad::default(), 2).is_err());
    }
}
