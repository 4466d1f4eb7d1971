//! Activations (ReLU, ReLU6) and the residual sum, with the sum's activation fused by the passes.
//!
//! Guided Backprop (pytorch-grad-cam's) replaces the ReLU *modules* of a network: an activation node made for
//! a module takes the guided rule, one made for a functional call (`F.relu` in a forward) does not.

use crate::graph::{Ctx, Op, Saves};
use crate::ops::act::{activation, add_activation, mask_from_output, Activation, Backprop};
use crate::ops::Grad;
use candle_core::{Result, Tensor};

/// An activation; `guided`: whether Guided Backprop's rule applies to it (a module, not a functional call).
#[derive(Clone, Copy, Debug)]
pub struct Act {
    pub act: Activation,
    pub guided: bool,
}

impl Act {
    pub fn module(act: Activation) -> Self {
        Act { act, guided: true }
    }
    pub fn functional(act: Activation) -> Self {
        Act { act, guided: false }
    }
    pub(crate) fn bp(&self, bp: Backprop) -> Backprop {
        if self.guided {
            bp
        } else {
            Backprop::Plain
        }
    }
}

impl Op for Act {
    fn kind(&self) -> &'static str {
        match self.act {
            Activation::Relu => "ReLU",
            Activation::Relu6 => "ReLU6",
        }
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        activation(x[0], self.act, Backprop::Plain)
    }
    fn saves(&self) -> Saves {
        Saves::OUTPUT
    }
    fn backward(&self, ctx: &Ctx, mut dy: Grad) -> Result<Vec<Option<Grad>>> {
        mask_from_output(&mut dy, ctx.output("activation")?, self.act, self.bp(ctx.bp))?;
        Ok(vec![Some(dy)])
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// act(a + b) for two inputs of one shape; `act` is set by the passes (None in a built graph).
#[derive(Clone, Copy, Debug, Default)]
pub struct AddAct {
    pub act: Option<Act>,
}

impl AddAct {
    pub fn add() -> Self {
        AddAct { act: None }
    }
}

impl Op for AddAct {
    fn kind(&self) -> &'static str {
        "Add"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        if x[0].dims() != x[1].dims() {
            candle_core::bail!("add: shapes {:?} and {:?} differ", x[0].dims(), x[1].dims())
        }
        add_activation(x[0], x[1], self.act.map(|a| a.act), Backprop::Plain)
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
            mask_from_output(&mut dy, ctx.output("add")?, a.act, a.bp(ctx.bp))?;
        }
        Ok(match (ctx.need[0], ctx.need[1]) {
            (true, true) => vec![Some(dy.clone()), Some(dy)],
            (true, false) => vec![Some(dy), None],
            (false, true) => vec![None, Some(dy)],
            (false, false) => vec![None, None],
        })
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
