//! ReLU and ReLU6 with PyTorch's gradient (0 at the kinks, where candle's relu passes 1 at x = 0), and the
//! guided versions used by Guided Backprop: grad_in = grad_out · 1[x > 0] · 1[grad_out > 0] (ReLU6 also
//! needs x < 6).

use super::f32_slice;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Relu,
    Relu6,
}

/// How gradients pass back through the activations of a network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backprop {
    /// The true gradient.
    #[default]
    Plain,
    /// Guided Backprop: only positive gradients through positive inputs.
    Guided,
}

impl Activation {
    #[inline]
    fn f(self, x: f32) -> f32 {
        match self {
            Activation::Relu => x.max(0.0),
            Activation::Relu6 => x.clamp(0.0, 6.0),
        }
    }
    #[inline]
    fn passes(self, x: f32) -> bool {
        match self {
            Activation::Relu => x > 0.0,
            Activation::Relu6 => x > 0.0 && x < 6.0,
        }
    }
}

struct Act(Activation, Backprop);

impl CustomOp1 for Act {
    fn name(&self) -> &'static str {
        "gradcam-activation"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "activation")?;
        let a = self.0;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(1 << 14).zip(x.par_chunks(1 << 14)).for_each(|(d, s)| {
            for (d, s) in d.iter_mut().zip(s) {
                *d = a.f(*s);
            }
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(super::backward_op(arg, grad, &ActBackward(self.0, self.1))?))
    }
}

struct ActBackward(Activation, Backprop);

impl CustomOp2 for ActBackward {
    fn name(&self) -> &'static str {
        "gradcam-activation-backward"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (f32_slice(s1, l1, "activation backward")?, f32_slice(s2, l2, "activation backward")?);
        if x.len() != g.len() {
            candle_core::bail!("activation backward: {} inputs, {} gradients", x.len(), g.len())
        }
        let (a, guided) = (self.0, self.1 == Backprop::Guided);
        let mut d = vec![0f32; x.len()];
        d.par_chunks_mut(1 << 14).zip(x.par_chunks(1 << 14).zip(g.par_chunks(1 << 14))).for_each(|(d, (x, g))| {
            for ((d, x), g) in d.iter_mut().zip(x).zip(g) {
                *d = if a.passes(*x) && (!guided || *g > 0.0) { *g } else { 0.0 };
            }
        });
        Ok((CpuStorage::F32(d), l1.shape().clone()))
    }
}

/// Apply the activation, with the chosen backward.
pub fn activation(x: &Tensor, a: Activation, bp: Backprop) -> Result<Tensor> {
    if x.device().is_cpu() {
        x.contiguous()?.apply_op1(Act(a, bp))
    } else {
        if bp == Backprop::Guided {
            candle_core::bail!("guided backprop is implemented for the CPU device only")
        }
        match a {
            Activation::Relu => x.relu(),
            Activation::Relu6 => x.clamp(0f32, 6f32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{fd_check, rand};
    use candle_core::{Device, Var};

    #[test]
    fn plain_gradients_match_finite_differences() -> Result<()> {
        for a in [Activation::Relu, Activation::Relu6] {
            let x = (rand(&[2, 3, 5, 4], 11) * 8.0)?; // values in [-8, 8): both kinks of ReLU6 are hit
            let err = fd_check(&x, &|t| activation(t, a, Backprop::Plain), 100, 1e-2);
            assert!(err < 1e-3, "{a:?}: finite-difference error {err}");
        }
        Ok(())
    }

    #[test]
    fn kinks_and_guided_rule() -> Result<()> {
        let x = Tensor::new(&[-1f32, 0.0, 0.5, 3.0, 6.0, 7.0], &Device::Cpu)?;
        let g = Tensor::new(&[1f32, 1.0, -2.0, 4.0, 1.0, 1.0], &Device::Cpu)?;
        let run = |a, bp| -> Result<Vec<f32>> {
            let v = Var::from_tensor(&x)?;
            let y = activation(v.as_tensor(), a, bp)?;
            let gs = (y * &g)?.sum_all()?.backward()?;
            gs.get(v.as_tensor()).unwrap().to_vec1::<f32>()
        };
        assert_eq!(run(Activation::Relu, Backprop::Plain)?, vec![0., 0., -2., 4., 1., 1.]);
        assert_eq!(run(Activation::Relu6, Backprop::Plain)?, vec![0., 0., -2., 4., 0., 0.]);
        assert_eq!(run(Activation::Relu, Backprop::Guided)?, vec![0., 0., 0., 4., 1., 1.]);
        assert_eq!(run(Activation::Relu6, Backprop::Guided)?, vec![0., 0., 0., 4., 0., 0.]);
        Ok(())
    }
}
