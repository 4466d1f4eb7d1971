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
    /// Whether the gradient passes, judged from the output y = f(x): y > 0 (and y < 6) exactly when x is.
    #[inline]
    pub(crate) fn passes_out(self, y: f32) -> bool {
        match self {
            Activation::Relu => y > 0.0,
            Activation::Relu6 => y > 0.0 && y < 6.0,
        }
    }
    #[inline]
    pub(crate) fn apply(self, x: f32) -> f32 {
        self.f(x)
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

/// dy ← dy · 1[the activation passes at y] (· 1[dy > 0] when guided), in place: the backward pass of an
/// activation known by its output y, for the stages' own backward pass.
pub fn mask_from_output(dy: &mut super::Grad, y: &Tensor, a: Activation, bp: Backprop) -> Result<()> {
    super::with_f32(y, "activation backward", |y| mask_in_place(&mut dy.data, y, a, bp))
}

/// g ← g · 1[the activation passes at y] (· 1[g > 0] when guided).
fn mask_in_place(g: &mut [f32], y: &[f32], a: Activation, bp: Backprop) -> Result<()> {
    if y.len() != g.len() {
        candle_core::bail!("activation backward: {} outputs, {} gradients", y.len(), g.len())
    }
    let guided = bp == Backprop::Guided;
    g.par_chunks_mut(1 << 14).zip(y.par_chunks(1 << 14)).for_each(|(g, y)| {
        for (g, y) in g.iter_mut().zip(y) {
            // `&`, not `&&`: no branch, so that the loop vectorises
            let keep = a.passes_out(*y) & (!guided | (*g > 0.0));
            *g = if keep { *g } else { 0.0 };
        }
    });
    Ok(())
}

/// (y, dy) → dx for an activation known by its output (fused ops keep only y).
pub(crate) struct MaskFromOutput(pub Activation, pub Backprop);

impl CustomOp2 for MaskFromOutput {
    fn name(&self) -> &'static str {
        "gradcam-activation-backward-from-output"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (y, g) = (f32_slice(s1, l1, "activation backward")?, f32_slice(s2, l2, "activation backward")?);
        let mut d = g.to_vec();
        mask_in_place(&mut d, y, self.0, self.1)?;
        Ok((CpuStorage::F32(d), l1.shape().clone()))
    }
}

/// a + b, then the activation if any, in one pass (the residual joins of ResNet and EfficientNet). On the CPU
/// this avoids candle's element-wise ops, whose spinning thread pool competes with the kernels' threads.
struct AddAct(Option<Activation>, Backprop);

impl CustomOp2 for AddAct {
    fn name(&self) -> &'static str {
        "gradcam-add-activation"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (f32_slice(s1, l1, "add")?, f32_slice(s2, l2, "add")?);
        if l1.dims() != l2.dims() {
            candle_core::bail!("add: shapes {:?} and {:?} differ", l1.dims(), l2.dims())
        }
        let act = self.0;
        let mut y = vec![0f32; a.len()];
        y.par_chunks_mut(1 << 14).zip(a.par_chunks(1 << 14).zip(b.par_chunks(1 << 14))).for_each(|(y, (a, b))| {
            for ((y, a), b) in y.iter_mut().zip(a).zip(b) {
                let s = a + b;
                *y = match act {
                    Some(f) => f.f(s),
                    None => s,
                };
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(&self, _a: &Tensor, _b: &Tensor, res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = match self.0 {
            Some(act) => super::backward_op(res, grad, &MaskFromOutput(act, self.1))?,
            None => grad.clone(),
        };
        Ok((Some(g.clone()), Some(g)))
    }
}

/// act(a + b) (or a + b), differentiable in both (the CPU kernels; gradcam runs on the CPU).
pub fn add_activation(a: &Tensor, b: &Tensor, act: Option<Activation>, bp: Backprop) -> Result<Tensor> {
    a.contiguous()?.apply_op2(&b.contiguous()?, AddAct(act, bp))
}

/// Apply the activation, with the chosen backward.
pub fn activation(x: &Tensor, a: Activation, bp: Backprop) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Act(a, bp))
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
    fn fused_add_matches_add_then_activation() -> Result<()> {
        for act in [Some(Activation::Relu), Some(Activation::Relu6), None] {
            for bp in [Backprop::Plain, Backprop::Guided] {
                let a = (rand(&[2, 3, 5, 4], 1) * 8.0)?;
                let b = (rand(&[2, 3, 5, 4], 2) * 8.0)?;
                let r = rand(&[2, 3, 5, 4], 3);
                let (va, vb) = (Var::from_tensor(&a)?, Var::from_tensor(&b)?);
                let fused = add_activation(va.as_tensor(), vb.as_tensor(), act, bp)?;
                let (wa, wb) = (Var::from_tensor(&a)?, Var::from_tensor(&b)?);
                let s = (wa.as_tensor() + wb.as_tensor())?;
                let plain = match act {
                    Some(f) => activation(&s, f, bp)?,
                    None => s,
                };
                assert_eq!(fused.flatten_all()?.to_vec1::<f32>()?, plain.flatten_all()?.to_vec1::<f32>()?);
                let g1 = (fused * &r)?.sum_all()?.backward()?;
                let g2 = (plain * &r)?.sum_all()?.backward()?;
                for (x, y) in [(&va, &wa), (&vb, &wb)] {
                    let p = g1.get(x.as_tensor()).unwrap().flatten_all()?.to_vec1::<f32>()?;
                    let q = g2.get(y.as_tensor()).unwrap().flatten_all()?.to_vec1::<f32>()?;
                    assert_eq!(p, q, "{act:?} {bp:?}");
                }
            }
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
