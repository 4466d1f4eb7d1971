//! ONNX's element-wise operators with parameters (and the plain ones the zoo's activations do not cover):
//! Clip, LeakyRelu, HardSigmoid, HardSwish, Pow (constant exponent), Sqrt, Erf, Neg, Exp, Reciprocal, Abs. f32,
//! in parallel chunks, one loop per kind (so that each vectorises).
//!
//! At the kinks, PyTorch's conventions (torch 2.x, checked with
//! `x = torch.tensor([-1., 0., 1., 2., 3.], requires_grad=True)`):
//! - Clip: `torch.clamp(x, 0., 2.).sum().backward()` gives `[0, 0, 1, 0, 0]` (as `hardtanh`): the gradient
//!   passes only strictly inside (min, max), 0 at the bounds themselves;
//! - LeakyRelu: `leaky_relu(x, 0.1)` gives `[0.1, 0.1, 1, 1, 1]`: α at x = 0;
//! - HardSigmoid: `hardsigmoid` of `[-3, 0, 3]` gives `[0, 1/6, 0]`: α strictly inside (0 < αx + β < 1);
//! - HardSwish: as `torch.nn.functional.hardswish` (`UnaryKind::Hardswish`): 0 below -3, x/3 + 1/2 on [-3, 3],
//!   1 above;
//! - Abs: `abs` of `[0, 1, -1]` gives `[0, 1, -1]`: 0 at 0;
//! - Pow: `pow(x, 2.)` at 0 gives 0; exponent 0 gives 0 everywhere (PyTorch special-cases it); elsewhere
//!   e·x^(e−1) (inf or NaN where PyTorch's are: `pow(x, .5)` at 0 gives inf);
//! - Sqrt at 0: inf (as `sqrt`).

use super::unary::{erf_f32, exp_f32, UnaryKind};
use crate::graph::{Ctx, Op, Saves};
use crate::ops::{with_f32, Grad};
use candle_core::{Result, Tensor};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Elementwise {
    /// y = min(max(x, min), max).
    Clip {
        min: f32,
        max: f32,
    },
    /// y = x for x ≥ 0, αx below.
    LeakyRelu {
        alpha: f32,
    },
    /// y = max(0, min(1, αx + β)).
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    /// y = x·max(0, min(1, x/6 + 1/2)).
    HardSwish,
    /// y = x^e.
    Pow {
        exponent: f32,
    },
    Sqrt,
    Erf,
    Neg,
    Exp,
    Reciprocal,
    Abs,
}

const CHUNK: usize = 1 << 14;

#[inline(always)]
fn pow(x: f32, e: f32) -> f32 {
    if e == 2.0 {
        x * x
    } else if e == 1.0 {
        x
    } else if e == 3.0 {
        x * x * x
    } else if e == 0.5 {
        x.sqrt()
    } else {
        x.powf(e)
    }
}

impl Elementwise {
    pub fn f(self, x: f32) -> f32 {
        match self {
            Elementwise::Clip { min, max } => x.max(min).min(max),
            Elementwise::LeakyRelu { alpha } => {
                if x >= 0.0 {
                    x
                } else {
                    alpha * x
                }
            }
            Elementwise::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Elementwise::HardSwish => x * (x * (1.0 / 6.0) + 0.5).clamp(0.0, 1.0),
            Elementwise::Pow { exponent } => pow(x, exponent),
            Elementwise::Sqrt => x.sqrt(),
            Elementwise::Erf => erf_f32(x),
            Elementwise::Neg => -x,
            Elementwise::Exp => exp_f32(x),
            Elementwise::Reciprocal => 1.0 / x,
            Elementwise::Abs => x.abs(),
        }
    }
    /// d f / d x at x, with PyTorch's choices at the kinks (see the module's notes).
    pub fn df(self, x: f32) -> f32 {
        match self {
            Elementwise::Clip { min, max } => {
                if x > min && x < max {
                    1.0
                } else {
                    0.0
                }
            }
            Elementwise::LeakyRelu { alpha } => {
                if x > 0.0 {
                    1.0
                } else {
                    alpha
                }
            }
            Elementwise::HardSigmoid { alpha, beta } => {
                let v = alpha * x + beta;
                if v > 0.0 && v < 1.0 {
                    alpha
                } else {
                    0.0
                }
            }
            Elementwise::HardSwish => UnaryKind::Hardswish.df(x),
            Elementwise::Pow { exponent: e } => {
                if e == 0.0 {
                    0.0
                } else if e == 2.0 {
                    2.0 * x
                } else if e == 1.0 {
                    1.0
                } else {
                    e * pow(x, e - 1.0)
                }
            }
            Elementwise::Sqrt => 0.5 / x.sqrt(),
            Elementwise::Erf => std::f32::consts::FRAC_2_SQRT_PI * exp_f32(-x * x),
            Elementwise::Neg => -1.0,
            Elementwise::Exp => exp_f32(x),
            Elementwise::Reciprocal => -1.0 / (x * x),
            Elementwise::Abs => {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }
        }
    }

    /// y = f(x) over a slice, in parallel chunks; one loop per kind.
    fn map(self, x: &[f32]) -> Vec<f32> {
        #[inline(always)]
        fn go(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
            let mut y = vec![0f32; x.len()];
            y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(y, x)| {
                y.iter_mut().zip(x).for_each(|(y, x)| *y = f(*x));
            });
            y
        }
        match self {
            Elementwise::Clip { .. } => go(x, |x| self.f(x)),
            Elementwise::LeakyRelu { .. } => go(x, |x| self.f(x)),
            Elementwise::HardSigmoid { .. } => go(x, |x| self.f(x)),
            Elementwise::HardSwish => go(x, |x| Elementwise::HardSwish.f(x)),
            Elementwise::Pow { .. } => go(x, |x| self.f(x)),
            Elementwise::Sqrt => go(x, f32::sqrt),
            Elementwise::Erf => go(x, erf_f32),
            Elementwise::Neg => go(x, |x| -x),
            Elementwise::Exp => go(x, exp_f32),
            Elementwise::Reciprocal => go(x, |x| 1.0 / x),
            Elementwise::Abs => go(x, f32::abs),
        }
    }

    /// g ← g·f′(x) in place.
    fn scale_by_df(self, x: &[f32], g: &mut [f32]) {
        #[inline(always)]
        fn go(x: &[f32], g: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
            g.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(g, x)| {
                g.iter_mut().zip(x).for_each(|(g, x)| *g *= f(*x));
            });
        }
        match self {
            Elementwise::Clip { .. } => go(x, g, |x| self.df(x)),
            Elementwise::LeakyRelu { .. } => go(x, g, |x| self.df(x)),
            Elementwise::HardSigmoid { .. } => go(x, g, |x| self.df(x)),
            Elementwise::HardSwish => go(x, g, |x| UnaryKind::Hardswish.df(x)),
            Elementwise::Pow { .. } => go(x, g, |x| self.df(x)),
            Elementwise::Sqrt => go(x, g, |x| Elementwise::Sqrt.df(x)),
            Elementwise::Erf => go(x, g, |x| Elementwise::Erf.df(x)),
            Elementwise::Neg => go(x, g, |_| -1.0),
            Elementwise::Exp => go(x, g, exp_f32),
            Elementwise::Reciprocal => go(x, g, |x| -1.0 / (x * x)),
            Elementwise::Abs => go(x, g, |x| Elementwise::Abs.df(x)),
        }
    }
}

impl Op for Elementwise {
    fn kind(&self) -> &'static str {
        match self {
            Elementwise::Clip { .. } => "Clip",
            Elementwise::LeakyRelu { .. } => "LeakyRelu",
            Elementwise::HardSigmoid { .. } => "HardSigmoid",
            Elementwise::HardSwish => "HardSwish",
            Elementwise::Pow { .. } => "Pow",
            Elementwise::Sqrt => "Sqrt",
            Elementwise::Erf => "Erf",
            Elementwise::Neg => "Neg",
            Elementwise::Exp => "Exp",
            Elementwise::Reciprocal => "Reciprocal",
            Elementwise::Abs => "Abs",
        }
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        let y = with_f32(x[0], self.kind(), |v| Ok(self.map(v)))?;
        Tensor::from_vec(y, x[0].dims(), x[0].device())
    }
    fn saves(&self) -> Saves {
        match self {
            Elementwise::Neg => Saves::NOTHING,
            _ => Saves::INPUTS,
        }
    }
    fn backward(&self, ctx: &Ctx, mut dy: Grad) -> Result<Vec<Option<Grad>>> {
        if let Elementwise::Neg = self {
            dy.data.par_chunks_mut(CHUNK).for_each(|g| g.iter_mut().for_each(|g| *g = -*g));
            return Ok(vec![Some(dy)]);
        }
        with_f32(ctx.input(0, self.kind())?, self.kind(), |x| {
            if x.len() != dy.data.len() {
                candle_core::bail!("{} backward: gradient {:?} for {} inputs", self.kind(), dy.dims, x.len())
            }
            self.scale_by_df(x, &mut dy.data);
            Ok(())
        })?;
        Ok(vec![Some(dy)])
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{fd_inputs, v};
    use super::*;

    type Reference = fn(f64) -> f64;

    fn all() -> Vec<(Elementwise, Reference)> {
        vec![
            (Elementwise::Clip { min: -0.5, max: 1.25 }, |x| x.clamp(-0.5, 1.25)),
            (Elementwise::LeakyRelu { alpha: 0.1 }, |x| if x >= 0.0 { x } else { 0.1f32 as f64 * x }),
            (Elementwise::HardSigmoid { alpha: 0.2, beta: 0.5 }, |x| (0.2f32 as f64 * x + 0.5).clamp(0.0, 1.0)),
            (Elementwise::HardSwish, |x| x * (x / 6.0 + 0.5).clamp(0.0, 1.0)),
            (Elementwise::Pow { exponent: 2.0 }, |x| x * x),
            (Elementwise::Pow { exponent: 3.0 }, |x| x * x * x),
            (Elementwise::Pow { exponent: 1.7 }, |x| x.abs().powf(1.7f32 as f64)),
            (Elementwise::Sqrt, |x| x.abs().sqrt()),
            (Elementwise::Erf, libm::erf),
            (Elementwise::Neg, |x| -x),
            (Elementwise::Exp, f64::exp),
            (Elementwise::Reciprocal, |x| 1.0 / x),
            (Elementwise::Abs, f64::abs),
        ]
    }

    /// Forward against f64 (relative 1e-6 + absolute 1e-7; positive inputs for the powers with a fractional
    /// exponent and Sqrt, |x| ≥ 0.2 for Reciprocal), backward against central differences (step 1e-3, relative
    /// to the largest gradient: 2e-3) at points away from the kinks.
    #[test]
    fn forward_against_f64_backward_against_finite_differences() {
        for (op, f64f) in all() {
            let positive = op == Elementwise::Sqrt || op == Elementwise::Pow { exponent: 1.7 };
            // points on a grid offset from every kink (0, ±3, −0.5, 1.25, −2.5, 2.5)
            let xs: Vec<f32> = (0..200)
                .map(|i| {
                    let x = -4.0 + i as f32 * 0.0401 + 0.0013;
                    if positive {
                        x.abs() + 0.1
                    } else if op == Elementwise::Reciprocal && x.abs() < 0.2 {
                        x + 0.5
                    } else {
                        x
                    }
                })
                .collect();
            let x = Tensor::from_vec(xs.clone(), (2, 4, 25), &candle_core::Device::Cpu).unwrap();
            let y = v(&op.forward(&[&x]).unwrap());
            for (a, &xi) in y.iter().zip(&xs) {
                let w = f64f(xi as f64);
                assert!((*a as f64 - w).abs() <= 1e-6 * w.abs() + 1e-7, "{op:?} at {xi}: {a} vs {w}");
            }
            let w = fd_inputs(&op, &[x], 200, 1e-3);
            assert!(w[0] < 2e-3, "{op:?}: {w:?}");
        }
    }

    /// The kinks take PyTorch's values (from the snippets in the module's notes).
    #[test]
    fn kinks_follow_pytorch() {
        let clip = Elementwise::Clip { min: 0.0, max: 2.0 };
        assert_eq!([-1.0, 0.0, 1.0, 2.0, 3.0].map(|x| clip.df(x)), [0.0, 0.0, 1.0, 0.0, 0.0]);
        let lr = Elementwise::LeakyRelu { alpha: 0.1 };
        assert_eq!([-1.0, 0.0, 1.0, 2.0, 3.0].map(|x| lr.df(x)), [0.1, 0.1, 1.0, 1.0, 1.0]);
        let hs = Elementwise::HardSigmoid { alpha: 1.0 / 6.0, beta: 0.5 };
        assert_eq!([-3.0f32, 0.0, 3.0].map(|x| hs.df(x)), [0.0, 1.0 / 6.0, 0.0]);
        assert_eq!([0.0, 1.0, -1.0].map(|x| Elementwise::Abs.df(x)), [0.0, 1.0, -1.0]);
        assert_eq!(Elementwise::Pow { exponent: 2.0 }.df(0.0), 0.0);
        assert_eq!(Elementwise::Pow { exponent: 0.0 }.df(0.0), 0.0);
        assert_eq!(Elementwise::Pow { exponent: 0.5 }.df(0.0), f32::INFINITY);
        assert_eq!(Elementwise::Sqrt.df(0.0), f32::INFINITY);
        assert_eq!(Elementwise::HardSwish.df(-3.0), -0.5);
        assert_eq!(Elementwise::HardSwish.df(3.0), 1.5);
        // ONNX's HardSigmoid with its default α = 0.2, β = 0.5
        assert_eq!(Elementwise::HardSigmoid { alpha: 0.2, beta: 0.5 }.f(-3.0), 0.0);
        assert_eq!(Elementwise::HardSigmoid { alpha: 0.2, beta: 0.5 }.f(0.0), 0.5);
        assert_eq!(Elementwise::HardSwish.f(-3.0), 0.0);
        assert_eq!(Elementwise::HardSwish.f(3.0), 3.0);
    }
}
