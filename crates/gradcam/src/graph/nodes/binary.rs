//! Element-wise products and sums with broadcasting (NumPy's rules): the squeeze-excitation product
//! x (N, C, H, W) · s (N, C, 1, 1), a layer scale γ (C, 1, 1) · x, sums of different shapes. The gradient of a
//! broadcast input is summed over the dimensions it was broadcast along. (Equal-shape residual sums take
//! `AddAct`, whose activation fuses.)

use crate::graph::{Ctx, Op, Saves};
use crate::ops::Grad;
use candle_core::{Result, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryKind {
    Add,
    Sub,
    Mul,
    Div,
}

/// `a ∘ b`; `constant` holds b when it is a weight (a layer scale), else b is the second input.
#[derive(Clone, Debug)]
pub struct Binary {
    pub kind: BinaryKind,
    pub constant: Option<Tensor>,
}

impl Binary {
    pub fn new(kind: BinaryKind) -> Self {
        Binary { kind, constant: None }
    }
    pub fn with_constant(kind: BinaryKind, b: Tensor) -> Self {
        Binary { kind, constant: Some(b) }
    }
    fn operands<'a>(&'a self, x: &'a [&'a Tensor]) -> Result<(&'a Tensor, &'a Tensor)> {
        match (&self.constant, x) {
            (Some(b), [a]) => Ok((a, b)),
            (None, [a, b]) => Ok((a, b)),
            _ => candle_core::bail!("{}: wrong number of inputs", self.kind()),
        }
    }
}

/// The gradient `g` (shape of the broadcast result) summed down to `shape`.
fn reduce_to(g: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let mut g = g.clone();
    let extra = g.rank() - shape.len();
    for _ in 0..extra {
        g = g.sum(0)?;
    }
    for (d, &n) in shape.iter().enumerate() {
        if n == 1 && g.dims()[d] != 1 {
            g = g.sum_keepdim(d)?;
        }
    }
    g.reshape(shape)
}

impl Op for Binary {
    fn kind(&self) -> &'static str {
        match self.kind {
            BinaryKind::Add => "Add",
            BinaryKind::Sub => "Sub",
            BinaryKind::Mul => "Mul",
            BinaryKind::Div => "Div",
        }
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        let (a, b) = self.operands(x)?;
        match self.kind {
            BinaryKind::Add => a.broadcast_add(b),
            BinaryKind::Sub => a.broadcast_sub(b),
            BinaryKind::Mul => a.broadcast_mul(b),
            BinaryKind::Div => a.broadcast_div(b),
        }
    }
    fn saves(&self) -> Saves {
        match self.kind {
            BinaryKind::Add | BinaryKind::Sub => Saves::NOTHING,
            BinaryKind::Mul | BinaryKind::Div => Saves::INPUTS,
        }
    }
    fn backward(&self, ctx: &Ctx, dy: Grad) -> Result<Vec<Option<Grad>>> {
        let dev = candle_core::Device::Cpu;
        let da_shape = &ctx.input_dims[0];
        let b_shape: Vec<usize> = match &self.constant {
            Some(b) => b.dims().to_vec(),
            None => ctx.input_dims[1].clone(),
        };
        let g = dy.into_tensor(&dev)?;
        let (a, b) = match self.kind {
            BinaryKind::Add | BinaryKind::Sub => (None, None),
            _ => {
                let a = ctx.input(0, "binary")?.clone();
                let b = match &self.constant {
                    Some(b) => b.clone(),
                    None => ctx.input(1, "binary")?.clone(),
                };
                (Some(a), Some(b))
            }
        };
        let (ga, gb) = match self.kind {
            BinaryKind::Add => (g.clone(), g),
            BinaryKind::Sub => (g.clone(), g.neg()?),
            BinaryKind::Mul => {
                let (a, b) = (a.unwrap_or_else(|| g.clone()), b.unwrap_or_else(|| g.clone()));
                (g.broadcast_mul(&b)?, g.broadcast_mul(&a)?)
            }
            BinaryKind::Div => {
                let (a, b) = (a.unwrap_or_else(|| g.clone()), b.unwrap_or_else(|| g.clone()));
                let ga = g.broadcast_div(&b)?;
                // d(a/b)/db = -a/b²
                let gb = g.broadcast_mul(&a)?.broadcast_div(&b.sqr()?)?.neg()?;
                (ga, gb)
            }
        };
        let need_b = self.constant.is_none() && ctx.need.get(1).copied().unwrap_or(false);
        let da = if ctx.need[0] { Some(Grad::from_tensor(&reduce_to(&ga, da_shape)?)?) } else { None };
        let mut out = vec![da];
        if self.constant.is_none() {
            out.push(if need_b { Some(Grad::from_tensor(&reduce_to(&gb, &b_shape)?)?) } else { None });
        }
        Ok(out)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
