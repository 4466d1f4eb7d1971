//! Passes from a graph to a [`Plan`] (the steps that run): batch-norm folded into the convolution before it,
//! an activation fused into the convolution or the residual sum before it. A node a request targets is never
//! hidden: target `layer4.2.conv2` and the convolution runs alone, its pre-batch-norm output kept, as
//! PyTorch's forward hook on that module would see it.

use super::exec::{Plan, Step};
use super::nodes::{Act, AddAct, BatchNorm, Conv};
use super::{Graph, NodeId};
use candle_core::{Result, Tensor};
use std::sync::Arc;

impl Graph {
    /// The steps that compute the graph with every node of `protect` kept as its own value.
    pub(crate) fn make_plan(&self, protect: &[NodeId]) -> Result<Plan> {
        let nodes = self.nodes();
        let keeps = |id: NodeId| protect.contains(&id) || id == self.output();
        // the one consumer of `id` if it has exactly one and is not kept itself
        let sole = |id: NodeId| -> Option<NodeId> {
            match self.consumers(id) {
                [c] if !keeps(id) => Some(*c),
                _ => None,
            }
        };
        let mut fused = vec![false; nodes.len()];
        let mut steps = vec![];
        for (i, node) in nodes.iter().enumerate().skip(1) {
            if fused[i] {
                continue;
            }
            let id = NodeId(i);
            let mut op = node.op.clone();
            let mut out = id;
            if let Some(conv) = node.op.as_any().downcast_ref::<Conv>() {
                let mut c = conv.clone();
                if let Some(b) = sole(out) {
                    if let Some(bn) = nodes[b.0].op.as_any().downcast_ref::<BatchNorm>() {
                        c = self.folded(id, conv, bn)?;
                        fused[b.0] = true;
                        out = b;
                    }
                }
                if let Some(a) = sole(out) {
                    if let Some(act) = nodes[a.0].op.as_any().downcast_ref::<Act>() {
                        c.act = Some(*act);
                        fused[a.0] = true;
                        out = a;
                    }
                }
                if out != id {
                    op = Arc::new(c);
                }
            } else if let Some(add) = node.op.as_any().downcast_ref::<AddAct>() {
                if let (None, Some(a)) = (add.act, sole(out)) {
                    if let Some(act) = nodes[a.0].op.as_any().downcast_ref::<Act>() {
                        op = Arc::new(AddAct { act: Some(*act) });
                        fused[a.0] = true;
                        out = a;
                    }
                }
            }
            steps.push(Step { op, inputs: node.inputs.clone(), out });
        }
        Ok(Plan::new(steps, nodes.len()))
    }

    /// The convolution `id` with the batch-norm after it folded in (computed once per graph):
    /// w' = w·s, b' = (b − μ)·s + β, s = γ/√(σ²+ε), in f64.
    fn folded(&self, id: NodeId, conv: &Conv, bn: &BatchNorm) -> Result<Conv> {
        let mut cache = self.folds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.get(&id) {
            return Ok(c.clone());
        }
        let cout = conv.out_channels();
        if bn.channels() != cout {
            candle_core::bail!("batch-norm of {} channels after a convolution of {cout}", bn.channels())
        }
        let scale = BatchNorm::scale_of(&bn.gamma, &bn.var, bn.eps);
        let b0 = conv.bias.to_vec1::<f32>()?;
        let bias: Vec<f32> =
            (0..cout).map(|o| ((b0[o] as f64 - bn.mean[o] as f64) * scale[o] + bn.beta[o] as f64) as f32).collect();
        let w = conv.weight.flatten_all()?.to_vec1::<f32>()?;
        let per = w.len() / cout.max(1);
        let wf: Vec<f32> = w.iter().enumerate().map(|(i, v)| (*v as f64 * scale[i / per]) as f32).collect();
        let c = Conv {
            weight: Tensor::from_vec(wf, conv.weight.dims(), conv.weight.device())?,
            bias: Tensor::from_vec(bias, cout, conv.weight.device())?,
            folded: true,
            ..conv.clone()
        };
        cache.insert(id, c.clone());
        Ok(c)
    }
}
