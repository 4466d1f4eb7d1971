//! Class activation maps. The base ([`Explainer`]) runs the network split at the target layer(s) and captures
//! activations A and gradients dY/dA; a [`Method`] (one file each in `methods/`) only turns (A, G) into a
//! low-resolution map; the base then applies the reference pipeline: ReLU, min-max, bilinear resize with
//! half-pixel centres, and the multi-layer combination (ReLU, mean, min-max).
//!
//! The split ("Grad-CAM the cheap way"): stages up to the first target layer run without gradient tracking;
//! its output becomes a `Var`; the rest runs tracked. Later target layers get a zero `Var` added to their
//! output, whose gradient is dY/d(output). The cost is one forward plus a backward through the layers after
//! the first target only, with no weight gradients.

pub mod guided;
pub mod methods;
pub mod postprocess;

use crate::error::{Error, Result};
use crate::models::Network;
use crate::ops::act::Backprop;
use candle_core::{DType, Tensor, Var};
pub use methods::{method, Method, METHODS};

/// What is backpropagated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Score {
    /// The raw logit y_c (the paper's and the reference's default).
    #[default]
    Logit,
    /// The softmax probability of the class.
    Softmax,
}

/// A and dY/dA at one layer, for a batch.
#[derive(Debug)]
pub struct Capture {
    pub layer: String,
    /// (N, K, h, w)
    pub activations: Tensor,
    /// (N, K, h, w)
    pub gradients: Tensor,
}

/// Everything one forward/backward gives.
#[derive(Debug)]
pub struct Captured {
    /// (N, classes)
    pub logits: Tensor,
    /// One per target layer, in the order asked.
    pub layers: Vec<Capture>,
}

/// Runs a network for explanations at fixed target layers.
pub struct Explainer<'a> {
    pub net: &'a Network,
    layer_names: Vec<String>,
    stages: Vec<usize>,
}

/// The one-hot-weighted score Σ_n s(y)[n, class_n] whose gradient gives each image its own class's gradient.
pub(crate) fn class_score(logits: &Tensor, classes: &[usize], score: Score) -> Result<Tensor> {
    let (n, k) = logits.dims2()?;
    if classes.len() != n {
        return Err(Error::invalid(format!(
            "{} target classes for a batch of {n}",
            classes.len()
        )));
    }
    let mut mask = vec![0f32; n * k];
    for (i, &c) in classes.iter().enumerate() {
        if c >= k {
            return Err(Error::invalid(format!(
                "class {c} is out of range: the model has {k} classes"
            )));
        }
        mask[i * k + c] = 1.0;
    }
    let mask = Tensor::from_vec(mask, (n, k), logits.device())?;
    let s = match score {
        Score::Logit => logits.clone(),
        Score::Softmax => candle_nn::ops::softmax(logits, 1)?,
    };
    Ok((s * mask)?.sum_all()?)
}

impl<'a> Explainer<'a> {
    /// Target layers by name (several are combined into one map, as the reference does).
    pub fn new(net: &'a Network, layers: &[String]) -> Result<Self> {
        if layers.is_empty() {
            return Err(Error::invalid("no target layer"));
        }
        let stages = layers
            .iter()
            .map(|l| net.layer(l))
            .collect::<Result<Vec<_>>>()?;
        Ok(Explainer {
            net,
            layer_names: layers.to_vec(),
            stages,
        })
    }

    pub fn layer_names(&self) -> &[String] {
        &self.layer_names
    }

    /// The first target stage: everything up to and including it runs without gradient tracking.
    fn first_stage(&self) -> usize {
        *self.stages.iter().min().unwrap_or(&0)
    }

    /// The untracked output of the stages up to the first target layer, for a batch `x` (N, 3, H, W). It can be
    /// shared by every class explained (see [`Explainer::capture_from`]).
    pub fn prefix(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self
            .net
            .forward_range(x, 0, self.first_stage() + 1, Backprop::Plain)?
            .detach())
    }

    /// The logits from a [`Explainer::prefix`] output (the rest of the forward pass, untracked).
    pub fn logits_from(&self, prefix: &Tensor) -> Result<Tensor> {
        self.net.forward_range(
            prefix,
            self.first_stage() + 1,
            self.net.num_stages(),
            Backprop::Plain,
        )
    }

    /// Forward the batch `x` (N, 3, H, W) and backpropagate, for image i, the score of `classes[i]`.
    pub fn capture(&self, x: &Tensor, classes: &[usize], score: Score) -> Result<Captured> {
        self.capture_from(&self.prefix(x)?, classes, score)
    }

    /// [`Explainer::capture`] from a ready [`Explainer::prefix`] output.
    pub fn capture_from(
        &self,
        prefix: &Tensor,
        classes: &[usize],
        score: Score,
    ) -> Result<Captured> {
        let net = self.net;
        let first = self.first_stage();
        let a0 = prefix.clone();
        let v0 = Var::from_tensor(&a0)?;
        let mut probes: Vec<(usize, Tensor, Var)> = vec![];
        let mut cur = v0.as_tensor().clone();
        for i in first + 1..net.num_stages() {
            cur = net.forward_range(&cur, i, i + 1, Backprop::Plain)?;
            if self.stages.contains(&i) {
                let z = Var::from_tensor(&cur.zeros_like()?)?;
                probes.push((i, cur.detach(), z.clone()));
                cur = (cur + z.as_tensor())?;
            }
        }
        let logits = cur;
        let grads = class_score(&logits, classes, score)?.backward()?;
        let zero_if_none = |t: Option<&Tensor>, like: &Tensor| -> Result<Tensor> {
            Ok(match t {
                Some(g) => g.clone(),
                None => like.zeros_like()?,
            })
        };
        let mut layers = vec![];
        for (name, &stage) in self.layer_names.iter().zip(&self.stages) {
            let (a, g) = if stage == first {
                (a0.clone(), zero_if_none(grads.get(v0.as_tensor()), &a0)?)
            } else {
                let (_, a, z) = probes
                    .iter()
                    .find(|(s, _, _)| *s == stage)
                    .ok_or_else(|| Error::invalid("internal: probe lost"))?;
                (a.clone(), zero_if_none(grads.get(z.as_tensor()), a)?)
            };
            layers.push(Capture {
                layer: name.clone(),
                activations: a,
                gradients: g,
            });
        }
        Ok(Captured {
            logits: logits.detach(),
            layers,
        })
    }

    /// Forward only, capturing the target layers' activations (for methods that need no gradient).
    pub fn activations(&self, x: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        let mut acts = vec![Tensor::zeros(1, DType::F32, x.device())?; self.stages.len()];
        let mut cur = x.clone();
        for i in 0..self.net.num_stages() {
            cur = self.net.forward_range(&cur, i, i + 1, Backprop::Plain)?;
            for (j, &s) in self.stages.iter().enumerate() {
                if s == i {
                    acts[j] = cur.clone();
                }
            }
        }
        Ok((cur, acts))
    }
}

/// Per-image maps of a method from a capture: `raw[layer][image]` (h×w, before ReLU) — what the reference
/// calls `get_cam_image`.
pub fn raw_maps(
    cap: &Captured,
    m: &dyn Method,
    counterfactual: bool,
) -> Result<Vec<Vec<postprocess::Map>>> {
    let mut out = vec![];
    for c in &cap.layers {
        let (n, k, h, w) = c.activations.dims4()?;
        let a = c.activations.flatten_all()?.to_vec1::<f32>()?;
        let mut g = c.gradients.flatten_all()?.to_vec1::<f32>()?;
        if counterfactual {
            g.iter_mut().for_each(|v| *v = -*v);
        }
        let per = k * h * w;
        let maps = (0..n)
            .map(|i| {
                postprocess::Map::new(
                    h,
                    w,
                    m.map(
                        &a[i * per..(i + 1) * per],
                        &g[i * per..(i + 1) * per],
                        k,
                        h * w,
                    ),
                )
            })
            .collect();
        out.push(maps);
    }
    Ok(out)
}

/// The final maps (one per image, at `size`), as the reference computes them from the raw maps.
pub fn final_maps(raw: &[Vec<postprocess::Map>], size: (usize, usize)) -> Vec<postprocess::Map> {
    let n = raw.first().map_or(0, Vec::len);
    (0..n)
        .map(|i| {
            let per_layer: Vec<postprocess::Map> = raw
                .iter()
                .map(|layer| layer[i].relu().min_max().resize(size.0, size.1))
                .collect();
            postprocess::combine_layers(&per_layer)
        })
        .collect()
}
