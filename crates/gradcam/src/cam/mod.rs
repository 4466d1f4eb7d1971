//! Class activation maps. The base ([`Explainer`]) runs the network split at the target layer(s) and captures
//! activations A and gradients dY/dA; a [`Method`] (one file each in `methods/`) only turns (A, G) into a
//! low-resolution map; the base then applies the reference pipeline: ReLU, min-max, bilinear resize with
//! half-pixel centres, and the multi-layer combination (ReLU, mean, min-max).
//!
//! The split ("Grad-CAM the cheap way", see `graph::exec::Split`): the steps that do not depend on a target
//! run without gradient tracking, once per batch, shared by every class; the rest runs taped, and the ops' own
//! backward passes carry d score / d logits back to the targets, handing over dY/dA at each. The cost is one
//! forward plus a backward through what lies after the first target, with no weight gradients.

pub mod guided;
pub mod layout;
pub mod methods;
pub mod postprocess;

use crate::error::{Error, Result};
use crate::graph::exec::{Prefix, Split};
use crate::graph::NodeId;
use crate::models::Network;
use crate::ops::act::Backprop;
use candle_core::{Tensor, Var};
pub use methods::{method, Method, Scorer, METHODS};

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
    /// The node whose output the layer is.
    pub node: NodeId,
    /// (N, K, h, w)
    pub activations: Tensor,
    /// (N, K, h, w)
    pub gradients: Tensor,
    /// How the layer's own values were turned into these maps.
    pub layout: layout::Layout,
}

/// Everything one forward/backward gives.
#[derive(Debug)]
pub struct Captured {
    /// (N, classes)
    pub logits: Tensor,
    /// The input batch (N, 3, H, W), the class explained for each image, and the score backpropagated.
    pub input: Tensor,
    pub classes: Vec<usize>,
    pub score: Score,
    /// One per target layer, in the order asked.
    pub layers: Vec<Capture>,
}

/// Runs a network for explanations at fixed target layers.
pub struct Explainer<'a> {
    pub net: &'a Network,
    layer_names: Vec<String>,
    nodes: Vec<NodeId>,
    /// What a forward hook on each target sees (itself unless a module overwrites it in place).
    seen: Vec<NodeId>,
    /// How each target's values become channel maps.
    layouts: Vec<layout::Layout>,
    split: Split,
}

/// d score / d logits (the score is a function of the logits alone: cheap with candle's autograd).
pub(crate) fn dscore_dlogits(logits: &Tensor, classes: &[usize], score: Score) -> Result<crate::ops::Grad> {
    let l = Var::from_tensor(&logits.detach())?;
    let grads = class_score(l.as_tensor(), classes, score)?.backward()?;
    match grads.get(l.as_tensor()) {
        Some(g) => Ok(crate::ops::Grad::from_tensor(g)?),
        None => Err(Error::invalid("no gradient reached the logits")),
    }
}

/// The one-hot-weighted score Σ_n s(y)[n, class_n] whose gradient gives each image its own class's gradient.
pub(crate) fn class_score(logits: &Tensor, classes: &[usize], score: Score) -> Result<Tensor> {
    let (n, k) = logits.dims2()?;
    if classes.len() != n {
        return Err(Error::invalid(format!("{} target classes for a batch of {n}", classes.len())));
    }
    let mut mask = vec![0f32; n * k];
    for (i, &c) in classes.iter().enumerate() {
        if c >= k {
            return Err(Error::invalid(format!("class {c} is out of range: the model has {k} classes")));
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
        let nodes = layers.iter().map(|l| net.layer(l)).collect::<Result<Vec<_>>>()?;
        let mut layouts = vec![];
        let orders = if net.onnx.is_some() {
            let full = net.layer_shapes()?;
            layout::orders(&net.graph, full)
        } else {
            vec![layout::Order::ChannelsFirst; net.graph.nodes().len()]
        };
        for (l, id) in layers.iter().zip(&nodes) {
            let shape = net.layer_shape(*id)?;
            let token_model = net.onnx.as_ref().is_some_and(|o| o.token_model);
            let lay = layout::resolve(l, &shape, net.reshape, token_model, orders[id.0], net.input_size)
                .map_err(|e| Error::invalid(format!("{} (model {})", e, net.name)))?;
            if net.graph.is_per_image() && lay != layout::Layout::Channels {
                // an imported graph's values are one image's each: check the batch is the first dimension
                let full = &net.layer_shapes_batch1()?[id.0];
                if full.first() != Some(&1) {
                    return Err(Error::invalid(format!(
                        "layer `{l}` of {} holds values of shape {full:?} for one image: not one row per image",
                        net.name
                    )));
                }
            }
            layouts.push(lay);
        }
        let mut unique = nodes.clone();
        unique.sort();
        unique.dedup();
        let seen: Vec<NodeId> = nodes.iter().map(|n| net.graph.hook_value(*n)).collect();
        let mut also: Vec<NodeId> = seen.iter().copied().filter(|s| !unique.contains(s)).collect();
        also.sort();
        also.dedup();
        let split = Split::keeping(&net.graph, &unique, &also)?;
        Ok(Explainer { net, layer_names: layers.to_vec(), nodes, seen, layouts, split })
    }

    /// The untracked steps up to the target layers, for a batch `x` (N, 3, H, W). It can be shared by every
    /// class explained (see [`Explainer::capture_from`]).
    pub fn prefix(&self, x: &Tensor) -> Result<Prefix> {
        self.net.graph.prefix(&self.split, x)
    }

    /// The logits from a [`Explainer::prefix`] (the rest of the forward pass, untracked).
    pub fn logits_from(&self, prefix: &Prefix) -> Result<Tensor> {
        Ok(self.net.graph.finish(&self.split, prefix, &[])?.0)
    }

    /// Forward the batch `x` (N, 3, H, W) and backpropagate, for image i, the score of `classes[i]`.
    pub fn capture(&self, x: &Tensor, classes: &[usize], score: Score) -> Result<Captured> {
        self.capture_from(x, &self.prefix(x)?, classes, score)
    }

    /// [`Explainer::capture`] from a ready [`Explainer::prefix`].
    pub fn capture_from(&self, x: &Tensor, prefix: &Prefix, classes: &[usize], score: Score) -> Result<Captured> {
        let (logits, got, also) = self.net.graph.finish_with_gradients(
            &self.split,
            prefix,
            |l| dscore_dlogits(l, classes, score),
            Backprop::Plain,
        )?;
        let mut layers = vec![];
        for (((name, id), seen), lay) in self.layer_names.iter().zip(&self.nodes).zip(&self.seen).zip(&self.layouts) {
            let k = self.split.targets.iter().position(|t| t == id).ok_or_else(lost)?;
            let (a, g) = &got[k];
            let a = match self.split.also.iter().position(|t| t == seen) {
                Some(j) => also[j].clone(),
                None => a.clone(),
            };
            let gradients = lay.to_maps(&g.clone().into_tensor(x.device())?)?;
            let activations = lay.to_maps(&a)?;
            layers.push(Capture { layer: name.clone(), node: *id, activations, gradients, layout: *lay });
        }
        Ok(Captured { logits, input: x.clone(), classes: classes.to_vec(), score, layers })
    }

    /// [`Explainer::capture_from`] without the backward pass, for methods that use no gradient (EigenCAM,
    /// ScoreCAM, AblationCAM): the same logits and activations; every `gradients` is zeros.
    pub fn capture_forward_only(
        &self,
        x: &Tensor,
        prefix: &Prefix,
        classes: &[usize],
        score: Score,
    ) -> Result<Captured> {
        let (logits, acts) = self.net.graph.finish(&self.split, prefix, &self.seen)?;
        let mut layers = vec![];
        for (k, (name, id)) in self.layer_names.iter().zip(&self.nodes).enumerate() {
            let lay = self.layouts[k];
            let a = lay.to_maps(&acts[k])?;
            let gradients = a.zeros_like()?;
            layers.push(Capture { layer: name.clone(), node: *id, activations: a, gradients, layout: lay });
        }
        Ok(Captured { logits, input: x.clone(), classes: classes.to_vec(), score, layers })
    }
}

fn lost() -> Error {
    Error::invalid("internal: a target layer's capture was lost")
}

/// How maps are made from a capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapOptions {
    /// The paper's counterfactual explanation: negated gradients.
    pub counterfactual: bool,
    /// The reference's `eigen_smooth`: the first principal component of the contributions, not their sum.
    pub eigen_smooth: bool,
    /// Batch of masked inputs (ScoreCAM) or ablated activations (AblationCAM) per network run.
    pub batch_size: usize,
}

impl Default for MapOptions {
    fn default() -> Self {
        MapOptions { counterfactual: false, eigen_smooth: false, batch_size: 4 }
    }
}

/// The class score of each row of `logits`.
fn scores_of(logits: &Tensor, class: usize, score: Score) -> Result<Vec<f32>> {
    let s = match score {
        Score::Logit => logits.clone(),
        Score::Softmax => candle_nn::ops::softmax(logits, 1)?,
    };
    Ok(s.narrow(1, class, 1)?.flatten_all()?.to_vec1::<f32>()?)
}

/// The network as a [`Scorer`] for one image, class and layer.
struct NetScorer<'a> {
    net: &'a Network,
    node: NodeId,
    layout: layout::Layout,
    input: Tensor,
    class: usize,
    score: Score,
    batch: usize,
    /// The split at this layer alone and the image's values there (made on first use).
    at_layer: std::cell::OnceCell<(Split, Prefix)>,
}

impl Scorer for NetScorer<'_> {
    fn input(&self) -> &Tensor {
        &self.input
    }
    fn score_inputs(&self, x: &Tensor) -> Result<Vec<f32>> {
        scores_of(&self.net.forward(x)?, self.class, self.score)
    }
    fn score_activations(&self, a: &Tensor) -> Result<Vec<f32>> {
        let g = &self.net.graph;
        let (split, prefix) = match self.at_layer.get() {
            Some(v) => v,
            None => {
                let split = Split::new(g, &[self.node])?;
                let prefix = g.prefix(&split, &self.input)?;
                self.at_layer.get_or_init(|| (split, prefix))
            }
        };
        let mut p = prefix.repeat_image(0, a.dim(0)?)?;
        let original = prefix.get(self.node).ok_or_else(lost)?;
        let a = self.layout.from_maps(a, original)?;
        for (id, t) in p.values.iter_mut() {
            if *id == self.node {
                *t = a.clone();
            }
        }
        scores_of(&g.finish(split, &p, &[])?.0, self.class, self.score)
    }
    fn batch_size(&self) -> usize {
        self.batch
    }
}

/// Per-image maps of a method from a capture: `raw[layer][image]` (h×w, before ReLU) — what the reference
/// calls `get_cam_image`.
pub fn raw_maps(net: &Network, cap: &Captured, m: &dyn Method, o: MapOptions) -> Result<Vec<Vec<postprocess::Map>>> {
    let mut out = vec![];
    for c in &cap.layers {
        let (n, k, h, w) = c.activations.dims4()?;
        let a = c.activations.flatten_all()?.to_vec1::<f32>()?;
        let mut g = c.gradients.flatten_all()?.to_vec1::<f32>()?;
        if o.counterfactual {
            g.iter_mut().for_each(|v| *v = -*v);
        }
        let per = k * h * w;
        let mut maps = Vec::with_capacity(n);
        for i in 0..n {
            let layer =
                methods::Layer { a: &a[i * per..(i + 1) * per], g: &g[i * per..(i + 1) * per], k, h, w, hw: h * w };
            let scorer = NetScorer {
                net,
                node: c.node,
                layout: c.layout,
                input: cap.input.narrow(0, i, 1)?,
                class: cap.classes[i],
                score: cap.score,
                batch: o.batch_size,
                at_layer: Default::default(),
            };
            let contrib = m.contributions(&layer, &scorer)?;
            let map = if o.eigen_smooth || m.always_project() {
                methods::first_component_projection(&contrib, k, h * w)
            } else {
                methods::sum_channels(&contrib, h * w)
            };
            maps.push(postprocess::Map::new(h, w, map));
        }
        out.push(maps);
    }
    Ok(out)
}

/// The final maps (one per image, at `size`), as the reference computes them from the raw maps.
pub fn final_maps(raw: &[Vec<postprocess::Map>], size: (usize, usize)) -> Vec<postprocess::Map> {
    let n = raw.first().map_or(0, Vec::len);
    (0..n)
        .map(|i| {
            let per_layer: Vec<postprocess::Map> =
                raw.iter().map(|layer| layer[i].relu().min_max().resize(size.0, size.1)).collect();
            postprocess::combine_layers(&per_layer)
        })
        .collect()
}

/// The final maps of several methods for a batch: `out[method][image]` at the input's size. One forward and
/// one backward serve every method; `trunk` is [`Explainer::prefix`] of `x` when the caller has it already.
pub fn maps_for(
    ex: &Explainer,
    x: &Tensor,
    trunk: Option<&Prefix>,
    classes: &[usize],
    score: Score,
    methods: &[&dyn Method],
    o: MapOptions,
) -> Result<Vec<Vec<postprocess::Map>>> {
    let (_, _, h, w) = x.dims4()?;
    crate::ops::in_pool(|| {
        // gradient-free methods alone (EigenCAM, ScoreCAM, AblationCAM) pay for no backward pass
        let own;
        let prefix = match trunk {
            Some(t) => t,
            None => {
                own = ex.prefix(x)?;
                &own
            }
        };
        let cap = if methods.iter().any(|m| m.uses_gradients()) {
            ex.capture_from(x, prefix, classes, score)?
        } else {
            ex.capture_forward_only(x, prefix, classes, score)?
        };
        methods.iter().map(|m| Ok(final_maps(&raw_maps(ex.net, &cap, *m, o)?, (h, w)))).collect()
    })
}

/// The 6 test-time augmentations of the reference's `aug_smooth` (ttach: horizontal flip × multiply by
/// 0.9, 1, 1.1): each map is computed on the augmented input, mapped back (flipped back), and the maps are
/// averaged. `out[method][image]`.
pub fn maps_aug_smooth(
    ex: &Explainer,
    x: &Tensor,
    classes: &[usize],
    score: Score,
    methods: &[&dyn Method],
    o: MapOptions,
) -> Result<Vec<Vec<postprocess::Map>>> {
    let (n, _, _, w) = x.dims4()?;
    let rev = Tensor::from_iter((0..w as u32).rev(), x.device())?;
    let mut acc: Option<Vec<Vec<postprocess::Map>>> = None;
    let mut count = 0;
    for flip in [false, true] {
        for factor in [0.9f64, 1.0, 1.1] {
            let xf = if flip { x.index_select(&rev, 3)? } else { x.clone() };
            let maps = maps_for(ex, &(xf * factor)?, None, classes, score, methods, o)?;
            let maps: Vec<Vec<postprocess::Map>> = maps
                .into_iter()
                .map(|per| per.into_iter().map(|m| if flip { m.flip_horizontal() } else { m }).collect())
                .collect();
            acc = Some(match acc {
                None => maps,
                Some(mut a) => {
                    for (am, mm) in a.iter_mut().zip(&maps) {
                        for (ai, mi) in am.iter_mut().zip(mm) {
                            ai.data.iter_mut().zip(&mi.data).for_each(|(p, q)| *p += q);
                        }
                    }
                    a
                }
            });
            count += 1;
        }
    }
    let mut out = acc.unwrap_or_default();
    for per in &mut out {
        for m in per.iter_mut() {
            m.data.iter_mut().for_each(|v| *v /= count as f32);
        }
    }
    debug_assert!(out.iter().all(|p| p.len() == n));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference the own backward passes are tested against: the steps after the split run on candle's
    /// autograd (every fused op's forward is differentiable there), a zero `Var` added at each target.
    fn capture_autograd(ex: &Explainer, x: &Tensor, pre: &Prefix, classes: &[usize], score: Score) -> Result<Captured> {
        let (g, split) = (&ex.net.graph, &ex.split);
        let mut vals: Vec<Option<Tensor>> = vec![None; g.nodes().len()];
        let mut probes: Vec<(NodeId, Tensor, Var)> = vec![];
        let probe = |id: NodeId, t: Tensor, probes: &mut Vec<(NodeId, Tensor, Var)>| -> Result<Tensor> {
            if split.targets.contains(&id) {
                let z = Var::from_tensor(&t.zeros_like()?)?;
                let y = (&t + z.as_tensor())?;
                probes.push((id, t, z));
                Ok(y)
            } else {
                Ok(t)
            }
        };
        for (id, t) in &pre.values {
            vals[id.0] = Some(probe(*id, t.clone(), &mut probes)?);
        }
        for &k in &split.after {
            let st = &split.plan.steps[k];
            let xs: Vec<&Tensor> = st.inputs.iter().map(|i| vals[i.0].as_ref().unwrap()).collect();
            let y = st.op.forward(&xs)?;
            vals[st.out.0] = Some(probe(st.out, y, &mut probes)?);
        }
        let logits = vals[g.output().0].clone().unwrap();
        let grads = class_score(&logits, classes, score)?.backward()?;
        let mut layers = vec![];
        for ((name, id), seen) in ex.layer_names.iter().zip(&ex.nodes).zip(&ex.seen) {
            let (_, a, z) = probes.iter().find(|(p, _, _)| p == id).unwrap();
            let gr = grads.get(z.as_tensor()).cloned().unwrap_or(a.zeros_like()?);
            // what a hook on the layer sees (an in-place module after it may have overwritten it)
            let a = if seen == id { a.clone() } else { vals[seen.0].as_ref().unwrap().detach() };
            layers.push(Capture {
                layer: name.clone(),
                node: *id,
                activations: a,
                gradients: gr,
                layout: layout::Layout::Channels,
            });
        }
        Ok(Captured { logits: logits.detach(), input: x.clone(), classes: classes.to_vec(), score, layers })
    }

    /// The taped capture (own backward pass) against candle's autograd, several layers at once.
    #[test]
    fn taped_capture_matches_autograd() -> Result<()> {
        let cases: [(&str, &[&str]); 4] = [
            ("resnet18", &["layer4", "layer3", "layer2.1"]),
            ("resnet18", &["layer4"]),
            ("resnet50", &["layer4.2.relu_2", "layer3.5.add", "layer2"]),
            ("efficientnet_lite0", &["head", "blocks.10"]),
        ];
        for (model, layers) in cases {
            let net = crate::load_model(model, Some("synthetic"), &candle_core::Device::Cpu)?;
            let ex = Explainer::new(&net, &layers.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
            let x = crate::bench::input(&net, 2)?;
            let pre = ex.prefix(&x)?;
            for score in [Score::Logit, Score::Softmax] {
                let a = ex.capture_from(&x, &pre, &[7, 300], score)?;
                let b = capture_autograd(&ex, &x, &pre, &[7, 300], score)?;
                assert_eq!(a.logits.to_vec2::<f32>()?, b.logits.to_vec2::<f32>()?);
                for (p, q) in a.layers.iter().zip(&b.layers) {
                    assert_eq!((&p.layer, p.node), (&q.layer, q.node));
                    let d = (&p.activations - &q.activations)?.abs()?.max_all()?.to_scalar::<f32>()?;
                    assert_eq!(d, 0.0, "{model} {}: activations differ", p.layer);
                    let d = (&p.gradients - &q.gradients)?.abs()?.max_all()?.to_scalar::<f32>()?;
                    let m = q.gradients.abs()?.max_all()?.to_scalar::<f32>()?;
                    assert!(m > 0.0, "{model} {}: zero gradient, nothing checked", p.layer);
                    assert!(d <= 1e-5 * m, "{model} {} {score:?}: gradients differ by {d} (max {m})", p.layer);
                }
            }
        }
        Ok(())
    }

    /// Gradient-free methods run no backward pass: their maps (and the capture's logits and activations) equal,
    /// bit for bit, those from a full capture with its backward pass; a gradient method beside them brings the
    /// backward pass back.
    #[test]
    fn gradient_free_methods_skip_the_backward_pass_with_the_same_maps() -> Result<()> {
        for (model, layers) in [("resnet18", &["layer4", "layer3"][..]), ("efficientnet_lite0", &["head"][..])] {
            let net = crate::load_model(model, Some("synthetic"), &candle_core::Device::Cpu)?;
            let ex = Explainer::new(&net, &layers.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
            let x = crate::bench::input(&net, 2)?;
            let pre = ex.prefix(&x)?;
            let (full, fwd) = (
                ex.capture_from(&x, &pre, &[7, 300], Score::Logit)?,
                ex.capture_forward_only(&x, &pre, &[7, 300], Score::Logit)?,
            );
            assert_eq!(full.logits.to_vec2::<f32>()?, fwd.logits.to_vec2::<f32>()?, "{model}: logits");
            for (p, q) in full.layers.iter().zip(&fwd.layers) {
                let d = (&p.activations - &q.activations)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert_eq!(d, 0.0, "{model} {}: activations differ", p.layer);
            }
            let o = MapOptions { batch_size: 64, ..MapOptions::default() };
            for name in ["eigencam", "ablationcam"] {
                let m = methods::method(name)?;
                assert!(!m.uses_gradients());
                let a = raw_maps(&net, &full, m.as_ref(), o)?;
                let b = raw_maps(&net, &fwd, m.as_ref(), o)?;
                for (la, lb) in a.iter().zip(&b) {
                    for (ma, mb) in la.iter().zip(lb) {
                        assert_eq!(ma.data, mb.data, "{model} {name}: maps differ");
                    }
                }
            }
        }
        Ok(())
    }
}
