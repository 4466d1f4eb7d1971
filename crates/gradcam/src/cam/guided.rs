//! Guided Backprop: the gradient of the class score with respect to the input image, every ReLU/ReLU6
//! passing back only positive gradients through positive inputs. Guided Grad-CAM multiplies it by the map.

use super::{dscore_dlogits, Score};
use crate::error::{Error, Result};
use crate::graph::exec::Split;
use crate::models::Network;
use crate::ops::act::Backprop;
use candle_core::Tensor;

/// d score / d input with guided activations: (N, 3, H, W), image i for `classes[i]`, through the ops' own
/// backward passes.
pub fn guided_backprop(net: &Network, x: &Tensor, classes: &[usize], score: Score) -> Result<Tensor> {
    input_gradient(net, x, classes, score, Backprop::Guided)
}

/// d score / d input through the ops' own backward passes.
///
/// Image by image: each image's gradient depends on that image alone, and a whole batch's taped activations
/// would spill out of the caches (measured: batch 8 took 64 ms per image, one at a time 58).
pub fn input_gradient(net: &Network, x: &Tensor, classes: &[usize], score: Score, bp: Backprop) -> Result<Tensor> {
    let n = x.dim(0)?;
    if classes.len() != n {
        return Err(Error::invalid(format!("{} target classes for a batch of {n}", classes.len())));
    }
    let g = &net.graph;
    let split = Split::new(g, &[g.input()])?;
    let per: Vec<Tensor> = (0..n)
        .map(|i| {
            let xi = x.narrow(0, i, 1)?;
            // (steps that read no input, an imported graph's constants, run here)
            let p = g.prefix(&split, &xi)?;
            let (_, got, _) =
                g.finish_with_gradients(&split, &p, |l| dscore_dlogits(l, &classes[i..i + 1], score), bp)?;
            match got.into_iter().next() {
                Some((_, d)) => Ok(d.into_tensor(x.device())?),
                None => Err(Error::invalid("no gradient reached the input")),
            }
        })
        .collect::<Result<_>>()?;
    Ok(Tensor::cat(&per, 0)?)
}

/// Guided Grad-CAM: the Guided Backprop gradient `gb` (3, H, W) weighted, pixel by pixel, by a Grad-CAM map
/// of the input's size (`cam`, H×W).
pub fn guided_gradcam(gb: &[f32], cam: &[f32]) -> Vec<f32> {
    let hw = cam.len().max(1);
    gb.iter().enumerate().map(|(i, g)| g * cam[i % hw]).collect()
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

/// The same through candle's autograd over the same fused steps (the reference the own backward passes are
/// tested against): each step's forward op is differentiable there; the activations take the guided rule
/// in their candle backward where `bp` asks for it and the node is a module.
pub fn input_gradient_autograd(
    net: &Network,
    x: &Tensor,
    classes: &[usize],
    score: Score,
    bp: Backprop,
) -> Result<Tensor> {
    use crate::graph::nodes::{Act, AddAct, Conv};
    use crate::ops::act::{activation, add_activation};
    let g = &net.graph;
    let plan = g.plan(&[])?;
    let v = candle_core::Var::from_tensor(x)?;
    let mut vals: Vec<Option<Tensor>> = vec![None; g.nodes().len()];
    vals[0] = Some(v.as_tensor().clone());
    for st in &plan.steps {
        let xs = st
            .inputs
            .iter()
            .map(|i| vals[i.0].as_ref().ok_or_else(|| Error::invalid("internal: a value is missing")))
            .collect::<Result<Vec<_>>>()?;
        let op = st.op.as_any();
        let y = if let Some(a) = op.downcast_ref::<Act>() {
            activation(xs[0], a.act, a.bp(bp))?
        } else if let Some(a) = op.downcast_ref::<AddAct>() {
            add_activation(xs[0], xs[1], a.act.map(|a| a.act), a.act.map_or(bp, |a| a.bp(bp)))?
        } else if let Some(c) = op.downcast_ref::<Conv>() {
            let (_, _, h, w) = xs[0].dims4()?;
            let act = c.act.map(|a| (a.act, a.bp(bp)));
            crate::ops::conv::conv2d_act(xs[0], &c.weight, &c.bias, c.config(h, w)?, act)?
        } else {
            st.op.forward(&xs)?
        };
        vals[st.out.0] = Some(y);
    }
    let logits = vals[g.output().0].clone().ok_or_else(|| Error::invalid("internal: no logits"))?;
    let grads = super::class_score(&logits, classes, score)?.backward()?;
    match grads.get(v.as_tensor()) {
        Some(g) => Ok(g.clone()),
        None => Err(Error::invalid("no gradient reached the input")),
    }
}
