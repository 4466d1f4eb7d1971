//! Running a graph: a [`Plan`]'s steps in order, untracked where no gradient is asked for, taped beyond the
//! first target; then the ops' own backward passes in reverse, gradients summed where a value fans out (in
//! reverse step order, so always in the same order), handing over dY/dA at every target.
//!
//! Batching policy (one place): a batch goes image by image through the first steps, whose outputs are
//! large (a whole batch of them would spill out of the caches between one step and the next), then on together
//! from the first point where a single value of [`BATCH_FROM`] pixels or fewer is all that is live, where one
//! gemm for several images keeps the cores busier.

use super::{Ctx, Graph, NodeId, Op};
use crate::error::{Error, Result};
use crate::ops::act::Backprop;
use crate::ops::Grad;
use candle_core::Tensor;
use std::sync::Arc;

/// Output size (pixels per channel) from which a batch's images run together.
pub const BATCH_FROM: usize = 196;

/// One step: an op (a node's, or several nodes' fused) whose output is node `out`'s value.
pub struct Step {
    pub op: Arc<dyn Op>,
    pub inputs: Vec<NodeId>,
    pub out: NodeId,
}

/// The steps that compute a graph with some nodes kept (see `passes`).
pub struct Plan {
    pub steps: Vec<Step>,
    /// The step whose output each node's value is (None for the input and for nodes fused away).
    producer: Vec<Option<usize>>,
}

impl Plan {
    pub(crate) fn new(steps: Vec<Step>, nodes: usize) -> Self {
        let mut producer = vec![None; nodes];
        for (i, s) in steps.iter().enumerate() {
            producer[s.out.0] = Some(i);
        }
        Plan { steps, producer }
    }
    pub fn producer(&self, id: NodeId) -> Option<usize> {
        self.producer[id.0]
    }
}

/// Values by node.
pub(crate) type Values = Vec<Option<Tensor>>;

/// Pixels per channel of a (N, C, H, W) tensor; 1 for anything else.
fn spatial(t: &Tensor) -> usize {
    match t.dims() {
        [_, _, h, w] => h * w,
        _ => 1,
    }
}

fn missing(g: &Graph, id: NodeId) -> Error {
    Error::invalid(format!("internal: the value of node `{}` is missing", g.node(id).name))
}

fn get<'v>(g: &Graph, vals: &'v Values, id: NodeId) -> Result<&'v Tensor> {
    vals[id.0].as_ref().ok_or_else(|| missing(g, id))
}

/// Image `i`'s part of a value of a batch of `n`: its share of the first dimension (one row in a graph that
/// runs batched; the rows one image made in a graph that runs image by image).
pub(crate) fn image_part(t: &Tensor, n: usize, i: usize) -> Result<Tensor> {
    let d = t.dim(0)?;
    if n == 0 || d % n != 0 {
        return Err(Error::invalid(format!("internal: a value of {d} rows is not a batch of {n} images")));
    }
    Ok(t.narrow(0, i * (d / n), d / n)?)
}

impl Graph {
    /// The plan that keeps `protect` (sorted, deduplicated) as values: made once per set.
    pub fn plan(&self, protect: &[NodeId]) -> Result<Arc<Plan>> {
        let mut key = protect.to_vec();
        key.sort();
        key.dedup();
        if let Some(p) = self.plans.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(p.clone());
        }
        let p = Arc::new(self.make_plan(&key)?);
        self.plans.lock().unwrap_or_else(|e| e.into_inner()).insert(key, p.clone());
        Ok(p)
    }

    /// The output (logits) of a batch, untracked.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let plan = self.plan(&[])?;
        let mut vals: Values = vec![None; self.nodes().len()];
        vals[0] = Some(x.clone());
        let all: Vec<usize> = (0..plan.steps.len()).collect();
        crate::ops::in_pool(|| self.run_untracked(&plan, &mut vals, &all, &[self.output()], x.dim(0)?))?;
        vals[self.output().0].take().ok_or_else(|| missing(self, self.output()))
    }

    /// Run `steps` (indices into `plan`, in order) without tracking, for a batch of `n` images; values no later
    /// step reads and not in `keep` are dropped as soon as they are read for the last time.
    pub(crate) fn run_untracked(
        &self,
        plan: &Plan,
        vals: &mut Values,
        steps: &[usize],
        keep: &[NodeId],
        n: usize,
    ) -> Result<()> {
        let mut uses = vec![0usize; vals.len()];
        for &s in steps {
            for i in &plan.steps[s].inputs {
                uses[i.0] += 1;
            }
        }
        for k in keep {
            uses[k.0] += 1;
        }
        let mut at = 0;
        if n > 1 {
            at = self.run_per_image(plan, vals, steps, &mut uses, n)?;
        }
        for &s in &steps[at..] {
            self.step(plan, s, vals, &mut uses)?;
        }
        Ok(())
    }

    fn step(&self, plan: &Plan, s: usize, vals: &mut Values, uses: &mut [usize]) -> Result<()> {
        let st = &plan.steps[s];
        let y = {
            let xs = st.inputs.iter().map(|i| get(self, vals, *i)).collect::<Result<Vec<_>>>()?;
            st.op.forward(&xs).map_err(|e| self.op_error(st, e))?
        };
        for i in &st.inputs {
            uses[i.0] -= 1;
            if uses[i.0] == 0 {
                vals[i.0] = None;
            }
        }
        vals[st.out.0] = Some(y);
        Ok(())
    }

    fn op_error(&self, st: &Step, e: candle_core::Error) -> Error {
        Error::invalid(format!("node `{}` ({}): {e}", self.node(st.out).name, st.op.kind()))
    }

    /// The batching policy's first part: image by image through the steps up to the first point where one
    /// value of at most [`BATCH_FROM`] pixels is all that is live (found on image 0; every step in a graph that
    /// runs image by image), then the values concatenated. Returns how many of `steps` ran.
    fn run_per_image(
        &self,
        plan: &Plan,
        vals: &mut Values,
        steps: &[usize],
        uses: &mut [usize],
        n: usize,
    ) -> Result<usize> {
        let image = |vals: &Values, i: usize| -> Result<Values> {
            vals.iter().map(|v| v.as_ref().map(|t| image_part(t, n, i)).transpose()).collect::<Result<_>>()
        };
        let live_small =
            vals.iter().zip(uses.iter()).all(|(v, u)| v.as_ref().is_none_or(|t| *u == 0 || spatial(t) <= BATCH_FROM));
        if live_small && !self.per_image {
            return Ok(0);
        }
        let mut first = image(vals, 0)?;
        let mut u0 = uses.to_vec();
        let mut cut = 0;
        for (k, &s) in steps.iter().enumerate() {
            self.step(plan, s, &mut first, &mut u0)?;
            cut = k + 1;
            let y = plan.steps[s].out;
            let live: Vec<usize> = (0..first.len()).filter(|&i| first[i].is_some() && u0[i] > 0).collect();
            if !self.per_image
                && live == [y.0]
                && spatial(first[y.0].as_ref().ok_or_else(|| missing(self, y))?) <= BATCH_FROM
            {
                break;
            }
        }
        if cut == 0 {
            return Ok(0);
        }
        let mut per = vec![first];
        for i in 1..n {
            let mut v = image(vals, i)?;
            let mut u = uses.to_vec();
            for &s in &steps[..cut] {
                self.step(plan, s, &mut v, &mut u)?;
            }
            per.push(v);
        }
        for &s in &steps[..cut] {
            for inp in &plan.steps[s].inputs {
                uses[inp.0] -= 1;
            }
        }
        for (id, slot) in vals.iter_mut().enumerate() {
            *slot = if per[0][id].is_some() {
                let parts = per
                    .iter()
                    .map(|v| v[id].as_ref().ok_or_else(|| missing(self, NodeId(id))))
                    .collect::<Result<Vec<_>>>()?;
                Some(Tensor::cat(&parts, 0)?)
            } else {
                None
            };
        }
        Ok(cut)
    }

    /// Run `steps` taped: every value their backward passes read is kept (with those in `keep`).
    pub(crate) fn run_taped(
        &self,
        plan: &Plan,
        vals: &mut Values,
        steps: &[usize],
        keep: &[NodeId],
    ) -> Result<Vec<Vec<usize>>> {
        let mut needed = vec![false; vals.len()];
        for k in keep {
            needed[k.0] = true;
        }
        for &s in steps {
            let st = &plan.steps[s];
            let sv = st.op.saves();
            if sv.inputs {
                st.inputs.iter().for_each(|i| needed[i.0] = true);
            }
            if sv.output {
                needed[st.out.0] = true;
            }
        }
        let mut uses = vec![0usize; vals.len()];
        for &s in steps {
            for i in &plan.steps[s].inputs {
                uses[i.0] += 1;
            }
        }
        for (i, n) in needed.iter().enumerate() {
            if *n {
                uses[i] += 1;
            }
        }
        let mut dims: Vec<Vec<usize>> = vals.iter().map(|v| v.as_ref().map_or(vec![], |t| t.dims().to_vec())).collect();
        for &s in steps {
            self.step(plan, s, vals, &mut uses)?;
            let out = plan.steps[s].out;
            dims[out.0] = get(self, vals, out)?.dims().to_vec();
        }
        Ok(dims)
    }

    /// Back through `steps` (taped by [`Graph::run_taped`]) from d/d(output): the gradient at each node of
    /// `want`, in that order. Steps are walked in reverse; where a value fans out its gradients are summed in
    /// that order.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward(
        &self,
        plan: &Plan,
        vals: &Values,
        dims: &[Vec<usize>],
        steps: &[usize],
        dout: Grad,
        bp: Backprop,
        want: &[NodeId],
    ) -> Result<Vec<Grad>> {
        let mut on_path = vec![false; vals.len()];
        for w in want {
            on_path[w.0] = true;
        }
        for &s in steps {
            on_path[plan.steps[s].out.0] = true;
        }
        let mut grads: Vec<Option<Grad>> = vec![None; vals.len()];
        grads[self.output().0] = Some(dout);
        let mut got: Vec<Option<Grad>> = vec![None; want.len()];
        for &s in steps.iter().rev() {
            let st = &plan.steps[s];
            let Some(dy) = grads[st.out.0].take() else { continue };
            for (k, w) in want.iter().enumerate() {
                if *w == st.out {
                    got[k] = Some(dy.clone());
                }
            }
            let need: Vec<bool> = st.inputs.iter().map(|i| on_path[i.0]).collect();
            if !need.iter().any(|n| *n) {
                continue;
            }
            let sv = st.op.saves();
            let inputs: Vec<Option<Tensor>> =
                st.inputs.iter().map(|i| if sv.inputs { vals[i.0].clone() } else { None }).collect();
            let input_dims: Vec<Vec<usize>> = st.inputs.iter().map(|i| dims[i.0].clone()).collect();
            let output = if sv.output { vals[st.out.0].as_ref() } else { None };
            let ctx = Ctx { inputs: &inputs, input_dims: &input_dims, output, bp, need: &need };
            let dxs = st.op.backward(&ctx, dy).map_err(|e| self.op_error(st, e))?;
            for ((i, dx), need) in st.inputs.iter().zip(dxs).zip(&need) {
                if let (Some(dx), true) = (dx, need) {
                    match &mut grads[i.0] {
                        Some(g) => g.add_assign(&dx)?,
                        slot => *slot = Some(dx),
                    }
                }
            }
        }
        for (k, w) in want.iter().enumerate() {
            if got[k].is_none() {
                got[k] = grads[w.0].take();
            }
        }
        got.into_iter()
            .zip(want)
            .map(|(g, w)| g.ok_or_else(|| Error::invalid(format!("no gradient reached `{}`", self.node(*w).name))))
            .collect()
    }
}

/// A request's split of a plan: the steps that do not depend on any target (run untracked, once per batch,
/// shared by every class) and those that do (run taped when gradients are asked for).
pub struct Split {
    pub plan: Arc<Plan>,
    pub targets: Vec<NodeId>,
    /// Values kept besides the targets (what hooks on the targets see, see [`Graph::hook_value`]).
    pub also: Vec<NodeId>,
    pub before: Vec<usize>,
    pub after: Vec<usize>,
    /// Values the `after` steps read from before the split, and the targets: what a [`Prefix`] holds.
    pub boundary: Vec<NodeId>,
}

impl Split {
    /// What a taped run keeps besides what its ops save: the targets, the values hooks see, the output.
    fn kept(&self, output: NodeId) -> Vec<NodeId> {
        let mut keep = self.targets.clone();
        keep.extend(&self.also);
        keep.push(output);
        keep
    }

    pub fn new(g: &Graph, targets: &[NodeId]) -> Result<Self> {
        Self::keeping(g, targets, &[])
    }

    /// A split at `targets` that also keeps the values of `also`.
    pub fn keeping(g: &Graph, targets: &[NodeId], also: &[NodeId]) -> Result<Self> {
        let protect: Vec<NodeId> = targets.iter().chain(also).copied().collect();
        let plan = g.plan(&protect)?;
        let mut down = vec![false; g.nodes().len()];
        let (mut before, mut after) = (vec![], vec![]);
        for (k, st) in plan.steps.iter().enumerate() {
            if st.inputs.iter().any(|i| down[i.0] || targets.contains(i)) {
                down[st.out.0] = true;
                after.push(k);
            } else {
                before.push(k);
            }
        }
        let mut boundary: Vec<NodeId> = protect.iter().copied().filter(|t| !down[t.0]).collect();
        boundary.dedup();
        for &k in &after {
            for i in &plan.steps[k].inputs {
                if !down[i.0] && !boundary.contains(i) {
                    boundary.push(*i);
                }
            }
        }
        Ok(Split { plan, targets: targets.to_vec(), also: also.to_vec(), before, after, boundary })
    }
}

/// The values at a [`Split`]: computed once per batch, shared by every class explained.
#[derive(Clone, Debug)]
pub struct Prefix {
    pub values: Vec<(NodeId, Tensor)>,
    /// The batch's images.
    pub n: usize,
}

impl Prefix {
    /// The images `idx` of the batch.
    pub fn index_select(&self, idx: &Tensor) -> Result<Prefix> {
        let idx: Vec<u32> = idx.to_dtype(candle_core::DType::U32)?.to_vec1()?;
        let values = self
            .values
            .iter()
            .map(|(id, t)| {
                let parts = idx.iter().map(|&i| image_part(t, self.n, i as usize)).collect::<Result<Vec<_>>>()?;
                Ok((*id, Tensor::cat(&parts, 0)?))
            })
            .collect::<Result<_>>()?;
        Ok(Prefix { values, n: idx.len() })
    }
    /// Image `i`, repeated `times` (a batch of one image's variations).
    pub fn repeat_image(&self, i: usize, times: usize) -> Result<Prefix> {
        let values = self
            .values
            .iter()
            .map(|(id, t)| {
                let one = image_part(t, self.n, i)?;
                let rep: Vec<&Tensor> = std::iter::repeat_n(&one, times).collect();
                Ok((*id, Tensor::cat(&rep, 0)?))
            })
            .collect::<Result<_>>()?;
        Ok(Prefix { values, n: times })
    }
    /// Image `i` alone.
    pub fn image(&self, i: usize) -> Result<Prefix> {
        let values = self.values.iter().map(|(id, t)| Ok((*id, image_part(t, self.n, i)?))).collect::<Result<_>>()?;
        Ok(Prefix { values, n: 1 })
    }
    pub fn get(&self, id: NodeId) -> Option<&Tensor> {
        self.values.iter().find(|(i, _)| *i == id).map(|(_, t)| t)
    }
}

impl Graph {
    fn values_from(&self, p: &Prefix) -> Values {
        let mut vals: Values = vec![None; self.nodes().len()];
        for (id, t) in &p.values {
            vals[id.0] = Some(t.clone());
        }
        vals
    }

    /// The untracked steps before a split, for a batch `x`.
    pub fn prefix(&self, split: &Split, x: &Tensor) -> Result<Prefix> {
        let mut vals: Values = vec![None; self.nodes().len()];
        vals[0] = Some(x.clone());
        let n = x.dim(0)?;
        crate::ops::in_pool(|| self.run_untracked(&split.plan, &mut vals, &split.before, &split.boundary, n))?;
        let values =
            split.boundary.iter().map(|id| Ok((*id, get(self, &vals, *id)?.clone()))).collect::<Result<_>>()?;
        Ok(Prefix { values, n })
    }

    /// The steps after a split, untracked: the output, and the values of `keep`.
    pub fn finish(&self, split: &Split, p: &Prefix, keep: &[NodeId]) -> Result<(Tensor, Vec<Tensor>)> {
        let mut vals = self.values_from(p);
        let mut k = keep.to_vec();
        k.push(self.output());
        crate::ops::in_pool(|| self.run_untracked(&split.plan, &mut vals, &split.after, &k, p.n))?;
        let kept = keep.iter().map(|id| Ok(get(self, &vals, *id)?.clone())).collect::<Result<_>>()?;
        Ok((get(self, &vals, self.output())?.clone(), kept))
    }

    /// The steps after a split, taped, then back from `dout(output)`: the output, and (value, gradient) at
    /// every target, and the values of `split.also`.
    #[allow(clippy::type_complexity)]
    pub fn finish_with_gradients(
        &self,
        split: &Split,
        p: &Prefix,
        dout: impl FnOnce(&Tensor) -> Result<Grad> + Send,
        bp: Backprop,
    ) -> Result<(Tensor, Vec<(Tensor, Grad)>, Vec<Tensor>)> {
        if self.per_image && p.n > 1 {
            return self.finish_with_gradients_per_image(split, p, dout, bp);
        }
        crate::ops::in_pool(|| {
            let mut vals = self.values_from(p);
            let keep = split.kept(self.output());
            let dims = self.run_taped(&split.plan, &mut vals, &split.after, &keep)?;
            let out = get(self, &vals, self.output())?.clone();
            let d = dout(&out)?;
            let grads = self.backward(&split.plan, &vals, &dims, &split.after, d, bp, &split.targets)?;
            let acts = split.targets.iter().map(|t| get(self, &vals, *t).cloned()).collect::<Result<Vec<_>>>()?;
            let also = split.also.iter().map(|t| get(self, &vals, *t).cloned()).collect::<Result<Vec<_>>>()?;
            Ok((out, acts.into_iter().zip(grads).collect(), also))
        })
    }

    /// [`Graph::finish_with_gradients`] for a graph that runs image by image: each image taped, the outputs
    /// joined for `dout`, then each image's backward from its rows of d/d(output).
    #[allow(clippy::type_complexity)]
    fn finish_with_gradients_per_image(
        &self,
        split: &Split,
        p: &Prefix,
        dout: impl FnOnce(&Tensor) -> Result<Grad> + Send,
        bp: Backprop,
    ) -> Result<(Tensor, Vec<(Tensor, Grad)>, Vec<Tensor>)> {
        crate::ops::in_pool(|| {
            let keep = split.kept(self.output());
            let mut taped = vec![];
            for i in 0..p.n {
                let mut vals = self.values_from(&p.image(i)?);
                let dims = self.run_taped(&split.plan, &mut vals, &split.after, &keep)?;
                taped.push((vals, dims));
            }
            let outs = taped.iter().map(|(v, _)| get(self, v, self.output())).collect::<Result<Vec<_>>>()?;
            let out = Tensor::cat(&outs, 0)?;
            let d = dout(&out)?;
            let per = d.data.len() / p.n;
            let mut dims1 = d.dims.clone();
            dims1[0] /= p.n;
            let mut acts: Vec<Vec<Tensor>> = vec![vec![]; split.targets.len()];
            let mut grads: Vec<Vec<Grad>> = vec![vec![]; split.targets.len()];
            let mut also: Vec<Vec<Tensor>> = vec![vec![]; split.also.len()];
            for (i, (vals, dims)) in taped.iter().enumerate() {
                let di = Grad { data: d.data[i * per..(i + 1) * per].to_vec(), dims: dims1.clone() };
                let g = self.backward(&split.plan, vals, dims, &split.after, di, bp, &split.targets)?;
                for (k, (t, g)) in split.targets.iter().zip(g).enumerate() {
                    acts[k].push(get(self, vals, *t)?.clone());
                    grads[k].push(g);
                }
                for (k, t) in split.also.iter().enumerate() {
                    also[k].push(get(self, vals, *t)?.clone());
                }
            }
            let join = |ts: Vec<Tensor>| -> Result<Tensor> { Ok(Tensor::cat(&ts, 0)?) };
            let mut pairs = vec![];
            for (a, g) in acts.into_iter().zip(grads) {
                let mut dims = g[0].dims.clone();
                dims[0] = g.iter().map(|g| g.dims[0]).sum();
                let data = g.into_iter().flat_map(|g| g.data).collect();
                pairs.push((join(a)?, Grad { data, dims }));
            }
            let also = also.into_iter().map(join).collect::<Result<Vec<_>>>()?;
            Ok((out, pairs, also))
        })
    }
}

impl Graph {
    /// Every node's value in turn, unfused (each node its own step), for a batch `x`: shapes, checks.
    pub fn visit(&self, x: &Tensor, f: &mut (dyn FnMut(NodeId, &Tensor) -> Result<()> + Send)) -> Result<()> {
        let all: Vec<NodeId> = (1..self.nodes().len()).map(NodeId).collect();
        let plan = self.plan(&all)?;
        let mut vals: Values = vec![None; self.nodes().len()];
        vals[0] = Some(x.clone());
        let mut uses = vec![0usize; vals.len()];
        for st in &plan.steps {
            for i in &st.inputs {
                uses[i.0] += 1;
            }
        }
        uses[self.output().0] += 1;
        crate::ops::in_pool(|| {
            for k in 0..plan.steps.len() {
                self.step(&plan, k, &mut vals, &mut uses)?;
                let out = plan.steps[k].out;
                f(out, get(self, &vals, out)?)?;
            }
            Ok(())
        })
    }
}
