//! What every node of a graph is: an [`Op`] with a forward pass, what its backward pass reads, and the
//! gradient for each of its inputs.

use crate::ops::act::Backprop;
use crate::ops::Grad;
use candle_core::{Result, Tensor};

/// What an op's backward pass reads besides the output gradient. The executor keeps exactly these values of a
/// taped pass (and the captured ones), so an op that needs nothing keeps nothing alive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Saves {
    /// The input values (the shapes of the inputs are always given).
    pub inputs: bool,
    /// The output value.
    pub output: bool,
}

impl Saves {
    pub const NOTHING: Saves = Saves { inputs: false, output: false };
    pub const INPUTS: Saves = Saves { inputs: true, output: false };
    pub const OUTPUT: Saves = Saves { inputs: false, output: true };
}

/// What a backward pass gets.
pub struct Ctx<'a> {
    /// The input values when the op [`Saves::inputs`], else `None`s.
    pub inputs: &'a [Option<Tensor>],
    /// The inputs' shapes (always).
    pub input_dims: &'a [Vec<usize>],
    /// The output value when the op [`Saves::output`].
    pub output: Option<&'a Tensor>,
    /// Plain gradients, or Guided Backprop's rule at the activations that take it.
    pub bp: Backprop,
    /// Which inputs need a gradient: an op may return `None` for the others.
    pub need: &'a [bool],
}

impl Ctx<'_> {
    /// Input `i`'s value, or an error naming the op if it was not saved.
    pub fn input(&self, i: usize, op: &str) -> Result<&Tensor> {
        match self.inputs.get(i) {
            Some(Some(t)) => Ok(t),
            _ => candle_core::bail!("{op} backward: input {i} was not kept (the op's `saves` must say inputs)"),
        }
    }
    pub fn output(&self, op: &str) -> Result<&Tensor> {
        self.output.ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "{op} backward: the output was not kept (the op's `saves` must say output)"
            ))
        })
    }
    pub fn dims4(&self, i: usize) -> Result<(usize, usize, usize, usize)> {
        match self.input_dims.get(i).map(|d| &d[..]) {
            Some(&[a, b, c, d]) => Ok((a, b, c, d)),
            d => candle_core::bail!("expected a 4-D input {i}, got {d:?}"),
        }
    }
}

/// One operation of a graph. Weights are constants held by the op: no weight gradient is ever computed.
pub trait Op: Send + Sync {
    /// The type shown to users (`Conv2d`, `ReLU`, …), PyTorch's module name where there is one.
    fn kind(&self) -> &'static str;

    /// The output from the inputs' values.
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor>;

    /// What [`Op::backward`] reads.
    fn saves(&self) -> Saves {
        Saves::INPUTS
    }

    /// d(loss)/d(input) for each input from d(loss)/d(output) (`dy`, owned so it may be masked in place).
    fn backward(&self, ctx: &Ctx, dy: Grad) -> Result<Vec<Option<Grad>>>;

    /// Downcasting, for the passes that fuse ops.
    fn as_any(&self) -> &dyn std::any::Any;
}
