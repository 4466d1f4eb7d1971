//! Guided Backprop: the gradient of the class score with respect to the input image, every ReLU/ReLU6
//! passing back only positive gradients through positive inputs. Guided Grad-CAM multiplies it by the map.

use super::{class_score, dscore_dlogits, Score};
use crate::error::{Error, Result};
use crate::models::{Network, Tape};
use crate::ops::act::Backprop;
use candle_core::{Tensor, Var};

/// d score / d input with guided activations: (N, 3, H, W), image i for `classes[i]`. On the CPU through
/// the stages' own backward pass; elsewhere through candle's autograd.
pub fn guided_backprop(net: &Network, x: &Tensor, classes: &[usize], score: Score) -> Result<Tensor> {
    if x.device().is_cpu() {
        input_gradient(net, x, classes, score, Backprop::Guided)
    } else {
        input_gradient_autograd(net, x, classes, score, Backprop::Guided)
    }
}

/// d score / d input through the stages' own backward pass (CPU).
///
/// Image by image: each image's gradient depends on that image alone, and a whole batch's taped activations
/// would spill out of the caches (measured: batch 8 took 64 ms per image, one at a time 58).
pub fn input_gradient(net: &Network, x: &Tensor, classes: &[usize], score: Score, bp: Backprop) -> Result<Tensor> {
    let n = x.dim(0)?;
    if classes.len() != n {
        return Err(Error::invalid(format!("{} target classes for a batch of {n}", classes.len())));
    }
    if n > 1 {
        let per: Vec<Tensor> = (0..n)
            .map(|i| input_gradient(net, &x.narrow(0, i, 1)?, &classes[i..i + 1], score, bp))
            .collect::<Result<_>>()?;
        return Ok(Tensor::cat(&per, 0)?);
    }
    let mut tape = Tape::default();
    let logits = net.forward_taped(x, &mut tape)?;
    let dlogits = dscore_dlogits(&logits, classes, score)?;
    Ok(net.backward(dlogits, &mut tape, bp)?.into_tensor(x.device())?)
}

/// The same through candle's autograd (any device; the reference the own backward pass is tested against).
pub fn input_gradient_autograd(
    net: &Network,
    x: &Tensor,
    classes: &[usize],
    score: Score,
    bp: Backprop,
) -> Result<Tensor> {
    let v = Var::from_tensor(x)?;
    let logits = net.forward_range(v.as_tensor(), 0, net.num_stages(), bp)?;
    let grads = class_score(&logits, classes, score)?.backward()?;
    match grads.get(v.as_tensor()) {
        Some(g) => Ok(g.clone()),
        None => Err(Error::invalid("no gradient reached the input")),
    }
}

/// pytorch-grad-cam's display normalisation of a gradient image: (x − mean)/(std + 1e-5)·0.1 + 0.5, clipped
/// to [0, 1] (mean and std over all values).
pub fn normalize_for_display(x: &[f32]) -> Vec<f32> {
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|v| *v as f64).sum::<f64>() / n;
    let var = x.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n;
    let std = var.sqrt();
    x.iter().map(|v| ((((*v as f64 - mean) / (std + 1e-5)) * 0.1 + 0.5).clamp(0.0, 1.0)) as f32).collect()
}
