//! Element-wise activations other than ReLU/ReLU6 (which fuse into kernels, see `act.rs`): Sigmoid, SiLU,
//! Hardswish, Hardsigmoid, GELU (erf), Tanh, and Identity (dropout, stochastic depth in eval mode). Each takes
//! its true gradient under Guided Backprop too (pytorch-grad-cam replaces only ReLU modules).
//! Computed in f32 as PyTorch's CPU kernels do (GELU's erf in f64, rounded).

use crate::graph::{Ctx, Op, Saves};
use crate::ops::Grad;
use candle_core::{Result, Tensor};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryKind {
    Sigmoid,
    Silu,
    Hardswish,
    Hardsigmoid,
    Gelu,
    Tanh,
    Identity,
}

#[derive(Clone, Copy, Debug)]
pub struct Unary(pub UnaryKind);

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl UnaryKind {
    pub fn f(self, x: f32) -> f32 {
        match self {
            UnaryKind::Sigmoid => sigmoid(x),
            UnaryKind::Silu => x * sigmoid(x),
            UnaryKind::Hardswish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
            UnaryKind::Hardsigmoid => (x + 3.0).clamp(0.0, 6.0) / 6.0,
            UnaryKind::Gelu => (0.5 * x as f64 * (1.0 + libm::erf(x as f64 / std::f64::consts::SQRT_2))) as f32,
            UnaryKind::Tanh => x.tanh(),
            UnaryKind::Identity => x,
        }
    }
    /// d f / d x at x (PyTorch's choices at the kinks: Hardswish 0 below -3, 1 above 3, x/3 + 1/2 between, the
    /// ends included in the middle piece; Hardsigmoid 1/6 strictly inside (-3, 3)).
    pub fn df(self, x: f32) -> f32 {
        match self {
            UnaryKind::Sigmoid => {
                let s = sigmoid(x);
                s * (1.0 - s)
            }
            UnaryKind::Silu => {
                let s = sigmoid(x);
                s * (1.0 + x * (1.0 - s))
            }
            UnaryKind::Hardswish => {
                if x < -3.0 {
                    0.0
                } else if x <= 3.0 {
                    x / 3.0 + 0.5
                } else {
                    1.0
                }
            }
            UnaryKind::Hardsigmoid => {
                if x > -3.0 && x < 3.0 {
                    1.0 / 6.0
                } else {
                    0.0
                }
            }
            UnaryKind::Gelu => {
                let x = x as f64;
                let cdf = 0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
                let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
                (cdf + x * pdf) as f32
            }
            UnaryKind::Tanh => {
                let t = x.tanh();
                1.0 - t * t
            }
            UnaryKind::Identity => 1.0,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            UnaryKind::Sigmoid => "Sigmoid",
            UnaryKind::Silu => "SiLU",
            UnaryKind::Hardswish => "Hardswish",
            UnaryKind::Hardsigmoid => "Hardsigmoid",
            UnaryKind::Gelu => "GELU",
            UnaryKind::Tanh => "Tanh",
            UnaryKind::Identity => "Identity",
        }
    }
}

impl Op for Unary {
    fn kind(&self) -> &'static str {
        self.0.name()
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        let v = super::values(x[0])?;
        let k = self.0;
        let mut y = vec![0f32; v.len()];
        y.par_chunks_mut(1 << 14).zip(v.par_chunks(1 << 14)).for_each(|(y, x)| {
            y.iter_mut().zip(x).for_each(|(y, x)| *y = k.f(*x));
        });
        Tensor::from_vec(y, x[0].dims(), x[0].device())
    }
    fn saves(&self) -> Saves {
        if self.0 == UnaryKind::Identity {
            Saves::NOTHING
        } else {
            Saves::INPUTS
        }
    }
    fn backward(&self, ctx: &Ctx, mut dy: Grad) -> Result<Vec<Option<Grad>>> {
        if self.0 == UnaryKind::Identity {
            return Ok(vec![Some(dy)]);
        }
        let x = super::values(ctx.input(0, self.0.name())?)?;
        let k = self.0;
        dy.data.par_chunks_mut(1 << 14).zip(x.par_chunks(1 << 14)).for_each(|(g, x)| {
            g.iter_mut().zip(x).for_each(|(g, x)| *g *= k.df(*x));
        });
        Ok(vec![Some(dy)])
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivatives_match_central_differences() {
        for k in [
            UnaryKind::Sigmoid,
            UnaryKind::Silu,
            UnaryKind::Hardswish,
            UnaryKind::Hardsigmoid,
            UnaryKind::Gelu,
            UnaryKind::Tanh,
        ] {
            for i in -80..80 {
                let x = i as f64 * 0.0731 + 0.013;
                let h = 1e-3;
                let num = (k.f((x + h) as f32) as f64 - k.f((x - h) as f32) as f64) / (2.0 * h);
                let d = k.df(x as f32) as f64;
                assert!((num - d).abs() < 2e-3, "{k:?} at {x}: {d} vs numeric {num}");
            }
        }
        // GELU(1) = 0.8413447460685429 (Φ(1))
        assert!((UnaryKind::Gelu.f(1.0) - 0.841_344_7).abs() < 1e-7);
    }
}
