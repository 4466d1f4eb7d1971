//! ONNX ops onto the graph's ops: each node whose inputs depend on the image becomes one or more graph nodes
//! (constants held by the ops), with the shapes known from the probe run. Ops that map onto the fused kernels
//! use them: Conv (+ BatchNormalization folded by the passes, + Relu/Clip fused), Add of two equal shapes
//! (+ Relu fused), GlobalAveragePool, Gemm.

use super::attrs::Attrs;
use super::fold::{self, axis};
use super::names::Names;
use super::{Importer, Val};
use crate::error::Result;
use crate::graph::nodes::{
    self, Act, AddAct, BatchNorm, Binary, BinaryKind, Concat, Conv, GlobalAvgPool, Linear, Padding, Unary, UnaryKind,
};
use crate::graph::{Ctx, Graph, NodeId, Op, Saves};
use crate::ops::act::Activation;
use crate::ops::conv::Pad;
use crate::ops::Grad;
use candle_core::{DType, Tensor};

/// The op types lowered onto the graph when they depend on the image.
#[rustfmt::skip]
pub(crate) const LOWERED: &[&str] = &[
    "Conv", "BatchNormalization", "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Add",
    "Sub", "Mul", "Div", "Concat", "Split", "Slice", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze",
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "Gemm", "MatMul", "Softmax",
    "LayerNormalization", "Erf", "Gelu", "Pow", "Sqrt", "Pad", "Gather", "Expand", "Identity", "Dropout", "Constant",
    "Neg", "Exp", "Reciprocal", "Abs", "Cast", "Shape", "Size", "ReduceL2", "Einsum",
];

/// A constant made a graph value (a class token concatenated to the patches).
#[derive(Clone, Debug)]
pub(crate) struct ConstValue(pub Tensor);

impl Op for ConstValue {
    fn kind(&self) -> &'static str {
        "Constant"
    }
    fn forward(&self, _: &[&Tensor]) -> candle_core::Result<Tensor> {
        Ok(self.0.clone())
    }
    fn saves(&self) -> Saves {
        Saves::NOTHING
    }
    fn backward(&self, _: &Ctx, _: Grad) -> candle_core::Result<Vec<Option<Grad>>> {
        Ok(vec![])
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

fn f32t(t: &Tensor) -> Result<Tensor> {
    Ok(t.to_dtype(DType::F32)?.contiguous()?)
}

impl Importer<'_> {
    fn var(&self, v: &Option<Val>, what: &str) -> Result<NodeId> {
        match v {
            Some(Val::Node(id)) => Ok(*id),
            Some(Val::Const(_)) => Err(self.error(format!("{what} is a constant; gradcam expects the image's values"))),
            None => Err(self.error(format!("{what} is missing"))),
        }
    }
    fn konst(&self, v: &Option<Val>, what: &str) -> Result<Tensor> {
        match v {
            Some(Val::Const(t)) => Ok(t.clone()),
            Some(Val::Node(_)) => Err(self.error(format!(
                "{what} depends on the input image; gradcam needs it to be a constant (a weight or a fixed shape)"
            ))),
            None => Err(self.error(format!("{what} is missing"))),
        }
    }
    fn opt_konst(&self, v: Option<&Option<Val>>, what: &str) -> Result<Option<Tensor>> {
        match v {
            None | Some(None) => Ok(None),
            Some(v) => self.konst(v, what).map(Some),
        }
    }
    /// A value as a graph node (a constant becomes a [`ConstValue`] node).
    fn node_of(&mut self, v: &Option<Val>, what: &str) -> Result<NodeId> {
        match v {
            Some(Val::Node(id)) => Ok(*id),
            Some(Val::Const(t)) => self.add(ConstValue(f32t(t)?), &[]),
            None => Err(self.error(format!("{what} is missing"))),
        }
    }
    fn rank(&self, id: NodeId) -> usize {
        self.dims[id.0].len()
    }
}

/// Lower one node; returns its outputs.
pub(crate) fn lower(imp: &mut Importer, op: &str, a: &Attrs, ins: &[Option<Val>]) -> Result<Vec<Val>> {
    let none: Option<Val> = None;
    let input = |i: usize| ins.get(i).unwrap_or(&none);
    let one = |id: NodeId| Ok(vec![Val::Node(id)]);
    match op {
        "Identity" | "Dropout" | "Cast" => {
            if op == "Cast" && !matches!(a.int("to", 1), 1 | 10 | 11 | 16) {
                return Err(imp.error("a Cast of the image's values to a non-float type"));
            }
            let x = imp.var(input(0), "input")?;
            one(x)
        }
        "Conv" => {
            let x = imp.var(input(0), "input X")?;
            let w = f32t(&imp.konst(input(1), "weight W")?)?;
            let b = imp.opt_konst(ins.get(2), "bias B")?.map(|b| f32t(&b)).transpose()?;
            conv(imp, a, x, w, b).and_then(one)
        }
        "BatchNormalization" => {
            let x = imp.var(input(0), "input X")?;
            let vec = |i: usize, what: &str| -> Result<Vec<f32>> { super::tensor::floats(&imp.konst(input(i), what)?) };
            let (g, b, m, v) = (vec(1, "scale")?, vec(2, "bias")?, vec(3, "mean")?, vec(4, "var")?);
            let eps = a.float("epsilon", 1e-5) as f64;
            let d = imp.dims[x.0].clone();
            let c = d.get(1).copied().unwrap_or(0);
            if d.len() < 2 || [&g, &b, &m, &v].iter().any(|p| p.len() != c) {
                return Err(imp.error(format!(
                    "BatchNormalization of a value of shape {d:?} with scale, bias, mean and var of {}, {}, {} and {} \
                     values; expected {c} each (one per channel)",
                    g.len(),
                    b.len(),
                    m.len(),
                    v.len()
                )));
            }
            if d.len() == 4 {
                one(imp.add(BatchNorm::from_stats(g, b, m, v, eps), &[x])?)
            } else {
                // y = x·s + (β − μ·s) per channel (dim 1)
                let c = g.len();
                let s = BatchNorm::scale_of(&g, &v, eps);
                let shift: Vec<f32> = (0..c).map(|i| (b[i] as f64 - m[i] as f64 * s[i]) as f32).collect();
                let s: Vec<f32> = s.iter().map(|v| *v as f32).collect();
                let mut shape = vec![c];
                shape.extend(std::iter::repeat_n(1, d.len().saturating_sub(2)));
                let dev = candle_core::Device::Cpu;
                let st = Tensor::from_vec(s, &shape[..], &dev)?;
                let bt = Tensor::from_vec(shift, &shape[..], &dev)?;
                let y = imp.add(Binary::with_constant(BinaryKind::Mul, st), &[x])?;
                one(imp.add(Binary::with_constant(BinaryKind::Add, bt), &[y])?)
            }
        }
        "Relu" => activation(imp, input(0), Act::module(Activation::Relu)).and_then(one),
        "Clip" => {
            let x = imp.var(input(0), "input")?;
            let (lo, hi) = if imp.opset >= 11 {
                let lo = imp.opt_konst(ins.get(1), "min")?.map(|t| super::tensor::floats(&t)).transpose()?;
                let hi = imp.opt_konst(ins.get(2), "max")?.map(|t| super::tensor::floats(&t)).transpose()?;
                (
                    lo.and_then(|v| v.first().copied()).unwrap_or(f32::NEG_INFINITY),
                    hi.and_then(|v| v.first().copied()).unwrap_or(f32::INFINITY),
                )
            } else {
                (a.float("min", f32::NEG_INFINITY), a.float("max", f32::INFINITY))
            };
            let id = if lo == 0.0 && hi == 6.0 {
                activation(imp, input(0), Act::functional(Activation::Relu6))?
            } else if lo == 0.0 && hi == f32::INFINITY {
                activation(imp, input(0), Act::functional(Activation::Relu))?
            } else {
                imp.add(nodes::Elementwise::Clip { min: lo, max: hi }, &[x])?
            };
            one(id)
        }
        "LeakyRelu" => elementwise(imp, input(0), nodes::Elementwise::LeakyRelu { alpha: a.float("alpha", 0.01) }),
        "Sigmoid" => unary(imp, input(0), UnaryKind::Sigmoid),
        "Tanh" => unary(imp, input(0), UnaryKind::Tanh),
        "HardSwish" => activation(imp, input(0), Unary(UnaryKind::Hardswish)).and_then(one),
        "HardSigmoid" => {
            let (al, be) = (a.float("alpha", 0.2), a.float("beta", 0.5));
            if al == 1.0 / 6.0 && be == 0.5 {
                unary(imp, input(0), UnaryKind::Hardsigmoid)
            } else {
                elementwise(imp, input(0), nodes::Elementwise::HardSigmoid { alpha: al, beta: be })
            }
        }
        "Erf" => elementwise(imp, input(0), nodes::Elementwise::Erf),
        "Sqrt" => elementwise(imp, input(0), nodes::Elementwise::Sqrt),
        "Neg" => elementwise(imp, input(0), nodes::Elementwise::Neg),
        "Exp" => elementwise(imp, input(0), nodes::Elementwise::Exp),
        "Reciprocal" => elementwise(imp, input(0), nodes::Elementwise::Reciprocal),
        "Abs" => elementwise(imp, input(0), nodes::Elementwise::Abs),
        "Gelu" => {
            if a.string("approximate").is_some_and(|s| s != "none") {
                return Err(imp.error("Gelu with approximate=tanh is not supported (only the exact, erf form)"));
            }
            unary(imp, input(0), UnaryKind::Gelu)
        }
        "Pow" => {
            let e = imp.konst(input(1), "exponent")?;
            let e = super::tensor::floats(&e)?;
            if e.len() != 1 {
                return Err(imp.error("Pow with an exponent that is not one number"));
            }
            elementwise(imp, input(0), nodes::Elementwise::Pow { exponent: e[0] })
        }
        "Add" | "Sub" | "Mul" | "Div" => {
            let kind = match op {
                "Add" => BinaryKind::Add,
                "Sub" => BinaryKind::Sub,
                "Mul" => BinaryKind::Mul,
                _ => BinaryKind::Div,
            };
            let id = binary(imp, kind, input(0), input(1))?;
            if kind == BinaryKind::Add && residual_in_place(imp, a, input(0)) {
                imp.b.set_inplace(id);
            }
            one(id)
        }
        "ReduceL2" => {
            // √(Σ x²) = √(mean(x²)·count): the ops' own backward passes
            let x = imp.var(input(0), "input")?;
            let d = imp.dims[x.0].clone();
            let Some(ax) = reduced_axes(imp, a, ins, d.len(), "ReduceL2")? else {
                return one(x);
            };
            let count: usize = ax.iter().map(|&i| d[i]).product();
            let sq = imp.add(nodes::Elementwise::Pow { exponent: 2.0 }, &[x])?;
            let m = imp.add(nodes::ReduceMean { axes: ax, keepdims: a.int("keepdims", 1) == 1 }, &[sq])?;
            let c = Tensor::new(count as f32, &candle_core::Device::Cpu)?;
            let s = imp.add(Binary::with_constant(BinaryKind::Mul, c), &[m])?;
            one(imp.add(nodes::Elementwise::Sqrt, &[s])?)
        }
        "Einsum" => einsum(imp, a, ins).and_then(one),
        "Concat" => {
            let first = ins.iter().flatten().find_map(|v| if let Val::Node(id) = v { Some(*id) } else { None });
            let r = first.map(|id| imp.rank(id)).unwrap_or(1);
            let ax = axis(a.int("axis", 0), r, "Concat").map_err(|e| imp.error(e))?;
            let mut ids = vec![];
            for v in ins.iter().filter(|v| v.is_some()) {
                // an empty constant adds nothing
                if let Some(Val::Const(t)) = v {
                    if t.elem_count() == 0 {
                        continue;
                    }
                }
                ids.push(imp.node_of(v, "input")?);
            }
            if ids.len() == 1 {
                return one(ids[0]);
            }
            one(imp.add(Concat { dim: ax }, &ids)?)
        }
        "Split" => {
            let x = imp.var(input(0), "input")?;
            let d = imp.dims[x.0].clone();
            let ax = axis(a.int("axis", 0), d.len(), "Split").map_err(|e| imp.error(e))?;
            let split = imp.opt_konst(ins.get(1), "split")?.map(|t| super::tensor::ints(&t)).transpose()?;
            let sizes = fold::split_sizes(d[ax], split.or(a.ints("split")), a.outputs(), a.int("num_outputs", 0))
                .map_err(|e| imp.error(e))?;
            let mut outs = vec![];
            let mut at = 0;
            for s in sizes {
                let op = nodes::Slice::new(ax, at, at + s, 1).map_err(|e| imp.error(e))?;
                outs.push(Val::Node(imp.add(op, &[x])?));
                at += s;
            }
            Ok(outs)
        }
        "Slice" => {
            let x = imp.var(input(0), "input")?;
            let (starts, ends, axes, steps) = if imp.opset >= 10 {
                let g = |i: usize, w: &str| -> Result<Option<Vec<i64>>> {
                    imp.opt_konst(ins.get(i), w)?.map(|t| super::tensor::ints(&t)).transpose()
                };
                let starts = g(1, "starts")?.unwrap_or_default();
                let ends = g(2, "ends")?.unwrap_or_default();
                let axes = g(3, "axes")?.unwrap_or_else(|| (0..starts.len() as i64).collect());
                let steps = g(4, "steps")?.unwrap_or_else(|| vec![1; starts.len()]);
                (starts, ends, axes, steps)
            } else {
                let starts = a.ints("starts").unwrap_or_default();
                let axes = a.ints("axes").unwrap_or_else(|| (0..starts.len() as i64).collect());
                (starts.clone(), a.ints("ends").unwrap_or_default(), axes, vec![1; starts.len()])
            };
            let mut cur = x;
            for (start, end, ax, step) in fold::slice_args(&starts, &ends, &axes, &steps).map_err(|e| imp.error(e))? {
                let d = imp.dims[cur.0].clone();
                let ax = axis(ax, d.len(), "Slice").map_err(|e| imp.error(e))?;
                if step <= 0 {
                    return Err(imp.error(format!("Slice with step {step} (only positive steps are supported)")));
                }
                let idx = fold::slice_indices(d[ax], start, end, step).map_err(|e| imp.error(e))?;
                if idx.len() == d[ax] {
                    continue;
                }
                let (s, e) = match (idx.first(), idx.last()) {
                    (Some(s), Some(e)) => (*s, *e + 1),
                    _ => return Err(imp.error(format!("Slice leaves nothing of axis {ax} ({} values)", d[ax]))),
                };
                let op = nodes::Slice::new(ax, s, e, step as usize).map_err(|e| imp.error(e))?;
                cur = imp.add(op, &[cur])?;
            }
            one(cur)
        }
        "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => {
            let x = imp.var(input(0), "input")?;
            let d = imp.dims[x.0].clone();
            let axes_of = |imp: &Importer| -> Result<Vec<i64>> {
                match imp.opt_konst(ins.get(1), "axes")? {
                    Some(t) => super::tensor::ints(&t),
                    None => Ok(a.ints("axes").unwrap_or_default()),
                }
            };
            let target = match op {
                "Reshape" => {
                    let s = super::tensor::ints(&imp.konst(input(1), "shape")?)?;
                    fold::reshape_dims(&d, &s, a.int("allowzero", 0) == 1)
                }
                "Flatten" => {
                    let ax = axis(a.int("axis", 1), d.len() + 1, "Flatten").map_err(|e| imp.error(e))?;
                    Ok(vec![d[..ax].iter().product(), d[ax..].iter().product()])
                }
                "Squeeze" => fold::squeeze_dims(&d, &axes_of(imp)?),
                _ => fold::unsqueeze_dims(&d, &axes_of(imp)?),
            }
            .map_err(|e| imp.error(e))?;
            if target == d {
                return one(x);
            }
            one(imp.add(nodes::Reshape { dims: target }, &[x])?)
        }
        "Transpose" => {
            let x = imp.var(input(0), "input")?;
            let r = imp.rank(x);
            let perm: Vec<usize> = match a.ints("perm") {
                Some(p) => fold::permutation(&p, r).map_err(|e| imp.error(e))?,
                None => (0..r).rev().collect(),
            };
            if perm.iter().enumerate().all(|(i, p)| i == *p) {
                return one(x);
            }
            one(imp.add(nodes::permute::Permute::new(&perm), &[x])?)
        }
        "Gather" => {
            let x = imp.var(input(0), "data")?;
            let idx = imp.konst(input(1), "indices")?;
            let d = imp.dims[x.0].clone();
            let ax = axis(a.int("axis", 0), d.len(), "Gather").map_err(|e| imp.error(e))?;
            let n = d[ax] as i64;
            let raw = super::tensor::ints(&idx)?;
            let indices = raw
                .iter()
                .map(|&k| {
                    let k = if k < 0 { k + n } else { k };
                    if (0..n).contains(&k) {
                        Ok(k as usize)
                    } else {
                        Err(imp.error(format!("Gather index {k} is out of range for a dimension of {n}")))
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            match idx.rank() {
                0 => one(imp.add(nodes::Gather { axis: ax, indices, keep_axis: false }, &[x])?),
                1 => one(imp.add(nodes::Gather { axis: ax, indices, keep_axis: true }, &[x])?),
                _ => {
                    let g = imp.add(nodes::Gather { axis: ax, indices, keep_axis: true }, &[x])?;
                    let mut dims = d[..ax].to_vec();
                    dims.extend(idx.dims());
                    dims.extend(&d[ax + 1..]);
                    one(imp.add(nodes::Reshape { dims }, &[g])?)
                }
            }
        }
        "Expand" => {
            let x = imp.var(input(0), "input")?;
            let s: Vec<usize> =
                super::tensor::ints(&imp.konst(input(1), "shape")?)?.iter().map(|v| (*v).max(0) as usize).collect();
            let dims = fold::broadcast_dims(&imp.dims[x.0], &s).map_err(|e| imp.error(e))?;
            fold::checked_count(&dims, "Expand").map_err(|e| imp.error(e))?;
            if dims == imp.dims[x.0] {
                return one(x);
            }
            one(imp.add(nodes::Expand { dims }, &[x])?)
        }
        "MaxPool" | "AveragePool" => pool(imp, op, a, input(0)).and_then(one),
        "GlobalAveragePool" => {
            let x = imp.var(input(0), "input")?;
            if imp.rank(x) != 4 {
                return Err(imp.error("GlobalAveragePool of a value that is not (N, C, H, W)"));
            }
            one(imp.add(GlobalAvgPool, &[x])?)
        }
        "GlobalMaxPool" => {
            let x = imp.var(input(0), "input")?;
            let d = imp.dims[x.0].clone();
            if d.len() != 4 {
                return Err(imp.error("GlobalMaxPool of a value that is not (N, C, H, W)"));
            }
            let p = nodes::Pool2d {
                max: true,
                kernel: (d[2], d[3]),
                stride: (1, 1),
                pads: [0; 4],
                ceil_mode: false,
                count_include_pad: false,
            };
            one(imp.add(p, &[x])?)
        }
        "ReduceMean" => {
            let x = imp.var(input(0), "input")?;
            let d = imp.dims[x.0].clone();
            let Some(ax) = reduced_axes(imp, a, ins, d.len(), "ReduceMean")? else {
                return one(x);
            };
            let keep = a.int("keepdims", 1) == 1;
            if d.len() == 4 && ax == [2, 3] {
                let g = imp.add(GlobalAvgPool, &[x])?;
                if keep {
                    return one(g);
                }
                return one(imp.add(nodes::Reshape { dims: vec![d[0], d[1]] }, &[g])?);
            }
            one(imp.add(nodes::ReduceMean { axes: ax, keepdims: keep }, &[x])?)
        }
        "Gemm" => {
            let x = imp.var(input(0), "input A")?;
            if a.int("transA", 0) != 0 || imp.rank(x) != 2 {
                return Err(imp.error("Gemm with a transposed or non-2-D input A"));
            }
            let w = f32t(&imp.konst(input(1), "weight B")?)?;
            if w.rank() != 2 {
                return Err(imp.error(format!("Gemm weight B of shape {:?}: expected a matrix (rank 2)", w.dims())));
            }
            let (alpha, beta) = (a.float("alpha", 1.0), a.float("beta", 1.0));
            // Wᵀ (C, K)
            let wt = if a.int("transB", 0) != 0 { w.t()?.contiguous()? } else { w };
            let wt = if alpha != 1.0 { (wt * alpha as f64)? } else { wt };
            let k = wt.dim(1)?;
            let bias = match imp.opt_konst(ins.get(2), "bias C")? {
                Some(c) => {
                    let c = f32t(&c)?;
                    let c = if c.elem_count() == 1 { c.flatten_all()?.broadcast_as(k)?.contiguous()? } else { c };
                    let c = c.flatten_all()?;
                    if c.elem_count() != k {
                        return Err(imp.error(format!("Gemm bias of shape {:?} for {k} outputs", c.dims())));
                    }
                    if beta != 1.0 {
                        (c * beta as f64)?
                    } else {
                        c
                    }
                }
                None => Tensor::zeros(k, DType::F32, &candle_core::Device::Cpu)?,
            };
            one(imp.add(Linear { weight_t: wt, bias }, &[x])?)
        }
        "MatMul" => {
            let (l, r) = (input(0), input(1));
            match (l, r) {
                (Some(Val::Node(x)), Some(Val::Const(w))) if w.rank() == 2 => {
                    let x = *x;
                    let w = f32t(w)?;
                    let (c, k) = w.dims2()?;
                    if imp.rank(x) == 2 {
                        let bias = Tensor::zeros(k, DType::F32, &candle_core::Device::Cpu)?;
                        one(imp.add(Linear { weight_t: w, bias }, &[x])?)
                    } else {
                        let weight_t = w.flatten_all()?.to_vec1::<f32>()?;
                        let weight = w.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
                        let op = nodes::linear_nd::LinearNd { weight, weight_t, bias: vec![0.0; k], cin: c, cout: k };
                        one(imp.add(op, &[x])?)
                    }
                }
                (Some(Val::Node(x)), Some(Val::Const(w))) => {
                    let x = *x;
                    one(imp.add(nodes::MatMul { b: Some(f32t(w)?) }, &[x])?)
                }
                _ => {
                    let x = imp.node_of(l, "input A")?;
                    let y = imp.node_of(r, "input B")?;
                    one(imp.add(nodes::MatMul { b: None }, &[x, y])?)
                }
            }
        }
        "Softmax" => {
            let x = imp.var(input(0), "input")?;
            let r = imp.rank(x);
            let default = if imp.opset >= 13 { -1 } else { 1 };
            let ax = axis(a.int("axis", default), r, "Softmax").map_err(|e| imp.error(e))?;
            if imp.opset < 13 && ax != r - 1 {
                return Err(imp.error("Softmax (opset < 13) over more than the last axis"));
            }
            one(imp.add(nodes::Softmax { axis: ax }, &[x])?)
        }
        "LayerNormalization" => {
            let x = imp.var(input(0), "input X")?;
            let r = imp.rank(x);
            let ax = axis(a.int("axis", -1), r, "LayerNormalization").map_err(|e| imp.error(e))?;
            if ax != r - 1 {
                return Err(imp.error("LayerNormalization over more than the last axis"));
            }
            let c = imp.dims[x.0][r - 1];
            let gamma = super::tensor::floats(&imp.konst(input(1), "scale")?)?;
            let beta = match imp.opt_konst(ins.get(2), "bias")? {
                Some(b) => super::tensor::floats(&b)?,
                None => vec![0.0; c],
            };
            if gamma.len() != c || beta.len() != c {
                return Err(imp.error(format!("LayerNormalization weights of {} values for {c} channels", gamma.len())));
            }
            let eps = a.float("epsilon", 1e-5) as f64;
            let ln = nodes::layer_norm::LayerNorm { gamma, beta, eps, channels_first: false };
            one(imp.add(ln, &[x])?)
        }
        "Pad" => {
            let x = imp.var(input(0), "input")?;
            let mode = a.string("mode").unwrap_or_else(|| "constant".into());
            if mode != "constant" {
                return Err(imp.error(format!("Pad mode `{mode}` (only constant padding is supported)")));
            }
            let r = imp.rank(x);
            let pads = if imp.opset >= 11 {
                super::tensor::ints(&imp.konst(input(1), "pads")?)?
            } else {
                a.ints("pads").unwrap_or_default()
            };
            let value = if imp.opset >= 11 {
                match imp.opt_konst(ins.get(2), "constant_value")? {
                    Some(t) => super::tensor::floats(&t)?.first().copied().unwrap_or(0.0),
                    None => 0.0,
                }
            } else {
                a.float("value", 0.0)
            };
            let axes: Vec<usize> = match imp.opt_konst(ins.get(3), "axes")? {
                Some(t) => super::tensor::ints(&t)?
                    .iter()
                    .map(|v| axis(*v, r, "Pad"))
                    .collect::<Result<_>>()
                    .map_err(|e| imp.error(e))?,
                None => (0..r).collect(),
            };
            if pads.len() != 2 * axes.len() || pads.iter().any(|p| *p < 0) {
                return Err(imp.error(format!("Pad with pads {pads:?} (non-negative, two per axis, are supported)")));
            }
            let (mut before, mut after) = (vec![0; r], vec![0; r]);
            for (k, &ax) in axes.iter().enumerate() {
                before[ax] = pads[k] as usize;
                after[ax] = pads[k + axes.len()] as usize;
            }
            let out: Vec<usize> =
                (0..r).map(|i| imp.dims[x.0][i].saturating_add(before[i]).saturating_add(after[i])).collect();
            fold::checked_count(&out, "Pad").map_err(|e| imp.error(e))?;
            if before.iter().chain(&after).all(|p| *p == 0) {
                return one(x);
            }
            one(imp.add(nodes::Pad { before, after, value }, &[x])?)
        }
        _ => Err(imp.error(format!("op `{op}` is not lowered"))),
    }
}

/// A Reduce op's axes (input 1 from opset 18, else the attribute), checked and sorted; every axis when none are
/// given, None when the op then does nothing (`noop_with_empty_axes`).
fn reduced_axes(imp: &Importer, a: &Attrs, ins: &[Option<Val>], rank: usize, op: &str) -> Result<Option<Vec<usize>>> {
    let axes = match (imp.opt_konst(ins.get(1), "axes")?, a.ints("axes")) {
        (Some(t), _) => super::tensor::ints(&t)?,
        (None, Some(v)) => v,
        _ => vec![],
    };
    let mut ax = fold::reduce_axes(&axes, rank, op).map_err(|e| imp.error(e))?;
    if ax.is_empty() {
        if a.int("noop_with_empty_axes", 0) == 1 {
            return Ok(None);
        }
        ax = (0..rank).collect();
    }
    ax.sort();
    Ok(Some(ax))
}

/// Whether an Add overwrites its first input, as PyTorch's `out += identity` does (torchvision's ResNet,
/// MobileNet, EfficientNet, ConvNeXt blocks), so that a hook on the module that made `out` sees the sum: told by
/// the dynamo exporter's stack trace when the file keeps it (the source line has `+=`); else assumed for a
/// residual sum whose first operand nothing else reads and whose only reader is a Relu (ResNet's
/// `out += identity; out = self.relu(out)`).
fn residual_in_place(imp: &Importer, a: &Attrs, first: &Option<Val>) -> bool {
    if !matches!(first, Some(Val::Node(_))) || imp.input_reads.first() != Some(&1) {
        return false;
    }
    let trace = a.node.metadata_props.iter().find(|m| m.key == "pkg.torch.onnx.stack_trace").map(|m| m.value.as_str());
    match trace.and_then(|t| t.lines().rev().map(str::trim).find(|l| !l.is_empty())) {
        Some(line) => line.contains("+="),
        None => imp.output_readers.len() == 1 && imp.output_readers[0] == "Relu",
    }
}

/// Einsum of two operands as a batched product: indices in both inputs and the output are batch dimensions,
/// in both inputs only are summed, in one input and the output are kept (`bghid,bghjd->bghij`, attention's
/// QKᵀ): each operand permuted and reshaped to (batch, rows, k) and (batch, k, columns), one MatMul, then the
/// output's order.
fn einsum(imp: &mut Importer, a: &Attrs, ins: &[Option<Val>]) -> Result<NodeId> {
    let eq: String = a.string("equation").unwrap_or_default().chars().filter(|c| !c.is_whitespace()).collect();
    let bad = |why: &str| crate::error::Error::invalid(format!("Einsum `{eq}`: {why}"));
    let (lhs, out) = eq.split_once("->").ok_or_else(|| bad("no explicit output (`->`)"))?;
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != 2 || ins.len() != 2 || eq.contains("...") {
        return Err(bad("only two operands without `...` are supported"));
    }
    let (ta, tb): (Vec<char>, Vec<char>) = (terms[0].chars().collect(), terms[1].chars().collect());
    let to: Vec<char> = out.chars().collect();
    let unique = |t: &[char]| t.iter().enumerate().all(|(i, c)| !t[..i].contains(c));
    if !unique(&ta) || !unique(&tb) || !unique(&to) {
        return Err(bad("an index repeated within a term (a diagonal) is not supported"));
    }
    let x = imp.node_of(&ins[0], "operand A")?;
    let y = imp.node_of(&ins[1], "operand B")?;
    einsum_product(imp, &eq, (x, &ta), (y, &tb), &to).map_err(|e| imp.error(e))
}

fn einsum_product(
    imp: &mut Importer,
    eq: &str,
    (x, ta): (NodeId, &[char]),
    (y, tb): (NodeId, &[char]),
    to: &[char],
) -> Result<NodeId> {
    let bad = |why: &str| crate::error::Error::invalid(format!("Einsum `{eq}`: {why}"));
    let (da, db) = (imp.dims[x.0].clone(), imp.dims[y.0].clone());
    if da.len() != ta.len() || db.len() != tb.len() {
        return Err(bad(&format!("operands of shapes {da:?} and {db:?}")));
    }
    let size = |c: char| -> usize {
        ta.iter()
            .position(|x| *x == c)
            .map(|i| da[i])
            .or_else(|| tb.iter().position(|x| *x == c).map(|i| db[i]))
            .unwrap_or(1)
    };
    let batch: Vec<char> = to.iter().copied().filter(|c| ta.contains(c) && tb.contains(c)).collect();
    let sum: Vec<char> = ta.iter().copied().filter(|c| tb.contains(c) && !to.contains(c)).collect();
    let fa: Vec<char> = ta.iter().copied().filter(|c| !tb.contains(c)).collect();
    let fb: Vec<char> = tb.iter().copied().filter(|c| !ta.contains(c)).collect();
    if fa.iter().chain(&fb).any(|c| !to.contains(c)) || to.iter().any(|c| !ta.contains(c) && !tb.contains(c)) {
        return Err(bad("an index summed within one operand, or an output index in no operand"));
    }
    for c in batch.iter().chain(&sum) {
        let (i, j) = (ta.iter().position(|x| x == c), tb.iter().position(|x| x == c));
        if let (Some(i), Some(j)) = (i, j) {
            if da[i] != db[j] {
                return Err(bad(&format!("index `{c}` has sizes {} and {}", da[i], db[j])));
            }
        }
    }
    let prod = |cs: &[char]| cs.iter().map(|c| size(*c)).product::<usize>();
    let (nb, m, k, n) = (prod(&batch), prod(&fa), prod(&sum), prod(&fb));
    let perm_of = |t: &[char], order: &[char]| -> Vec<usize> {
        order.iter().map(|c| t.iter().position(|x| x == c).unwrap_or(0)).collect()
    };
    let order_a: Vec<char> = batch.iter().chain(&fa).chain(&sum).copied().collect();
    let order_b: Vec<char> = batch.iter().chain(&sum).chain(&fb).copied().collect();
    let mut xa = x;
    let pa = perm_of(ta, &order_a);
    if pa.iter().enumerate().any(|(i, p)| i != *p) {
        xa = imp.add(nodes::permute::Permute::new(&pa), &[xa])?;
    }
    xa = imp.add(nodes::Reshape { dims: vec![nb, m, k] }, &[xa])?;
    let mut yb = y;
    let pb = perm_of(tb, &order_b);
    if pb.iter().enumerate().any(|(i, p)| i != *p) {
        yb = imp.add(nodes::permute::Permute::new(&pb), &[yb])?;
    }
    yb = imp.add(nodes::Reshape { dims: vec![nb, k, n] }, &[yb])?;
    let p = imp.add(nodes::MatMul { b: None }, &[xa, yb])?;
    let got: Vec<char> = batch.iter().chain(&fa).chain(&fb).copied().collect();
    let p = imp.add(nodes::Reshape { dims: got.iter().map(|c| size(*c)).collect() }, &[p])?;
    let po = perm_of(&got, to);
    if po.iter().enumerate().any(|(i, q)| i != *q) {
        return imp.add(nodes::permute::Permute::new(&po), &[p]);
    }
    Ok(p)
}

/// An activation: in place (PyTorch's `inplace=True`, as torchvision's and timm's activations are) when it is
/// the only reader of its input, so that a hook on the module before it sees what PyTorch's would.
fn activation(imp: &mut Importer, x: &Option<Val>, op: impl Op + 'static) -> Result<NodeId> {
    let x = imp.var(x, "input")?;
    if imp.input_reads.first() == Some(&1) {
        imp.add_inplace(op, x)
    } else {
        imp.add(op, &[x])
    }
}

fn unary(imp: &mut Importer, x: &Option<Val>, k: UnaryKind) -> Result<Vec<Val>> {
    let x = imp.var(x, "input")?;
    Ok(vec![Val::Node(imp.add(Unary(k), &[x])?)])
}

fn elementwise(imp: &mut Importer, x: &Option<Val>, e: nodes::Elementwise) -> Result<Vec<Val>> {
    let x = imp.var(x, "input")?;
    Ok(vec![Val::Node(imp.add(e, &[x])?)])
}

fn binary(imp: &mut Importer, kind: BinaryKind, l: &Option<Val>, r: &Option<Val>) -> Result<NodeId> {
    match (l, r) {
        (Some(Val::Node(x)), Some(Val::Node(y))) => {
            let (x, y) = (*x, *y);
            if kind == BinaryKind::Add && imp.dims[x.0] == imp.dims[y.0] {
                imp.add(AddAct::add(), &[x, y])
            } else {
                imp.add(Binary::new(kind), &[x, y])
            }
        }
        (Some(Val::Node(x)), Some(Val::Const(c))) => {
            let x = *x;
            imp.add(Binary::with_constant(kind, f32t(c)?), &[x])
        }
        (Some(Val::Const(c)), Some(Val::Node(x))) => {
            let x = *x;
            match kind {
                BinaryKind::Add | BinaryKind::Mul => imp.add(Binary::with_constant(kind, f32t(c)?), &[x]),
                _ => imp.add(Binary::with_constant_first(kind, f32t(c)?), &[x]),
            }
        }
        _ => Err(imp.error("an element-wise op with a missing input")),
    }
}

/// Explicit pads (top, left, bottom, right) of a 2-D window op, `auto_pad` resolved for the input's size.
fn pads_2d(
    imp: &Importer,
    a: &Attrs,
    hw: (usize, usize),
    k: (usize, usize),
    s: (usize, usize),
    d: (usize, usize),
) -> Result<[usize; 4]> {
    let auto = a.string("auto_pad").unwrap_or_else(|| "NOTSET".into());
    match auto.as_str() {
        "NOTSET" | "" => {
            let p = a.ints("pads").unwrap_or_else(|| vec![0; 4]);
            if p.len() != 4 || p.iter().any(|v| *v < 0) {
                return Err(imp.error(format!("pads {p:?}: expected four non-negative values")));
            }
            Ok([p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize])
        }
        "VALID" => Ok([0; 4]),
        "SAME_UPPER" | "SAME_LOWER" => {
            let total = |i: usize, k: usize, s: usize, d: usize| {
                let o = i.div_ceil(s);
                ((o - 1).saturating_mul(s))
                    .saturating_add((k - 1).saturating_mul(d))
                    .saturating_add(1)
                    .saturating_sub(i)
            };
            let (ph, pw) = (total(hw.0, k.0, s.0, d.0), total(hw.1, k.1, s.1, d.1));
            Ok(if auto == "SAME_UPPER" {
                [ph / 2, pw / 2, ph - ph / 2, pw - pw / 2]
            } else {
                [ph - ph / 2, pw - pw / 2, ph / 2, pw / 2]
            })
        }
        other => Err(imp.error(format!("auto_pad `{other}` is not an ONNX value"))),
    }
}

fn pair(v: Option<Vec<i64>>, default: usize, what: &str, imp: &Importer) -> Result<(usize, usize)> {
    match v.as_deref() {
        None => Ok((default, default)),
        Some([a, b]) if *a > 0 && *b > 0 => Ok((*a as usize, *b as usize)),
        Some(v) => Err(imp.error(format!("{what} {v:?}: expected two positive values (2-D)"))),
    }
}

/// A window op's sizes, checked before anything is allocated: the dilated kernel within the padded input, the
/// padded input and the output within [`fold::MAX_VALUES`] values.
#[allow(clippy::too_many_arguments)]
fn check_window(
    imp: &Importer,
    op: &str,
    (cin, cout): (usize, usize),
    (h, w): (usize, usize),
    (kh, kw): (usize, usize),
    (dh, dw): (usize, usize),
    (sh, sw): (usize, usize),
    pads: [usize; 4],
) -> Result<()> {
    let padded = |i: usize, a: usize, b: usize| i.checked_add(a)?.checked_add(b);
    let span = |k: usize, d: usize| (k - 1).checked_mul(d)?.checked_add(1);
    let (ph, pw) = match (padded(h, pads[0], pads[2]), padded(w, pads[1], pads[3])) {
        (Some(ph), Some(pw)) if fold::checked_count(&[cin, ph, pw], op).is_ok() => (ph, pw),
        _ => {
            return Err(imp.error(format!(
                "{op} with pads {pads:?} on an input of {h}x{w}: the padded input is too large (more than {} \
                 values)",
                fold::MAX_VALUES
            )))
        }
    };
    let (eh, ew) = match (span(kh, dh), span(kw, dw)) {
        (Some(eh), Some(ew)) if eh <= ph && ew <= pw => (eh, ew),
        _ => {
            return Err(imp.error(format!(
                "{op}: a kernel of {kh}x{kw} with dilations ({dh}, {dw}) is larger than its padded input of \
                 {ph}x{pw}"
            )))
        }
    };
    let (oh, ow) = ((ph - eh) / sh + 1, (pw - ew) / sw + 1);
    fold::checked_count(&[cout, oh, ow], op).map_err(|e| imp.error(e))?;
    Ok(())
}

fn conv(imp: &mut Importer, a: &Attrs, x: NodeId, w: Tensor, b: Option<Tensor>) -> Result<NodeId> {
    let d = imp.dims[x.0].clone();
    let (o, cg, kh, kw) = match (d.len(), w.dims()) {
        (4, &[o, cg, kh, kw]) => (o, cg, kh, kw),
        _ => return Err(imp.error(format!("Conv of input {d:?} with weight {:?}: only 2-D convolutions", w.dims()))),
    };
    if [o, cg, kh, kw].contains(&0) {
        return Err(imp.error(format!("Conv weight of shape {:?}: expected no empty dimension", w.dims())));
    }
    let group = a.int("group", 1);
    if group < 1 {
        return Err(imp.error(format!("Conv with group {group}: expected 1 or more")));
    }
    let groups = group as usize;
    if d[1] != cg.saturating_mul(groups) || o % groups != 0 {
        return Err(imp.error(format!("Conv: input of {} channels, weight {:?}, {groups} groups", d[1], w.dims())));
    }
    let stride = pair(a.ints("strides"), 1, "strides", imp)?;
    let dil = pair(a.ints("dilations"), 1, "dilations", imp)?;
    if stride.0 != stride.1 {
        return Err(imp.error(format!("Conv with strides {stride:?}: only equal strides are supported")));
    }
    let pads = pads_2d(imp, a, (d[2], d[3]), (kh, kw), stride, dil)?;
    check_window(imp, "Conv", (d[1], o), (d[2], d[3]), (kh, kw), dil, stride, pads)?;
    // a dilated kernel is the kernel with zeros between its taps
    let weight = if dil != (1, 1) {
        let (eh, ew) = ((kh - 1) * dil.0 + 1, (kw - 1) * dil.1 + 1);
        let v = w.flatten_all()?.to_vec1::<f32>()?;
        let mut out = vec![0f32; o * cg * eh * ew];
        for p in 0..o * cg {
            for i in 0..kh {
                for j in 0..kw {
                    out[(p * eh + i * dil.0) * ew + j * dil.1] = v[(p * kh + i) * kw + j];
                }
            }
        }
        Tensor::from_vec(out, (o, cg, eh, ew), &candle_core::Device::Cpu)?
    } else {
        w
    };
    let bias = match b {
        Some(b) if b.elem_count() == o => b.flatten_all()?,
        Some(b) => return Err(imp.error(format!("Conv bias of {} values for {o} channels", b.elem_count()))),
        None => Tensor::zeros(o, DType::F32, &candle_core::Device::Cpu)?,
    };
    let pad = Pad { top: pads[0], left: pads[1], bottom: pads[2], right: pads[3] };
    let c = Conv { weight, bias, stride: stride.0, groups, padding: Padding::Fixed(pad), act: None, folded: false };
    imp.add(c, &[x])
}

fn pool(imp: &mut Importer, op: &str, a: &Attrs, x: &Option<Val>) -> Result<NodeId> {
    let x = imp.var(x, "input")?;
    let d = imp.dims[x.0].clone();
    if d.len() != 4 {
        return Err(imp.error(format!("{op} of a value of shape {d:?}: only 2-D pooling")));
    }
    let kernel = pair(a.ints("kernel_shape"), 1, "kernel_shape", imp)?;
    let stride = pair(a.ints("strides"), 1, "strides", imp)?;
    let dil = pair(a.ints("dilations"), 1, "dilations", imp)?;
    if dil != (1, 1) {
        return Err(imp.error("pooling with dilations is not supported"));
    }
    let pads = pads_2d(imp, a, (d[2], d[3]), kernel, stride, dil)?;
    check_window(imp, op, (d[1], d[1]), (d[2], d[3]), kernel, dil, stride, pads)?;
    let ceil_mode = a.int("ceil_mode", 0) == 1;
    let square = kernel.0 == kernel.1 && stride.0 == stride.1 && pads.iter().all(|p| *p == pads[0]);
    if op == "MaxPool" && !ceil_mode && square && pads[0] <= kernel.0 / 2 {
        // PyTorch's own case (every window holds a pixel): the zoo's max pool, ResNet's stem
        let cfg = crate::ops::pool::PoolConfig { kernel: kernel.0, stride: stride.0, pad: pads[0] };
        return imp.add(nodes::MaxPool(cfg), &[x]);
    }
    let p = nodes::Pool2d {
        max: op == "MaxPool",
        kernel,
        stride,
        pads,
        ceil_mode,
        count_include_pad: a.int("count_include_pad", 0) == 1,
    };
    imp.add(p, &[x])
}

/// Whether the graph multiplies two image-dependent values (attention): a transformer.
pub(crate) fn is_token_model(g: &Graph) -> bool {
    g.nodes().iter().any(|n| n.op.kind() == "MatMul" && n.inputs.len() == 2)
}

/// The default target: for a transformer, the first layer norm of the last block (pytorch-grad-cam's advice);
/// else the last value with at least 2×2 pixels before the first op that pools or flattens them away.
pub(crate) fn default_layer(g: &Graph, dims: &[Vec<usize>], names: &Names) -> Option<String> {
    // a node's name for users: its shortest module path (`layer4`), but a direct child rather than a bare top-level
    // container of the same value (`features.6` or `features.norm5` rather than `features`, as pytorch-grad-cam's
    // `features[-1]`)
    let name_of = |id: NodeId| -> String {
        let mine: Vec<&String> = names.aliases.iter().filter(|(_, n)| *n == id).map(|(a, _)| a).collect();
        let Some(short) = mine.iter().min_by_key(|a| a.len()) else { return g.node(id).name.clone() };
        let child = mine
            .iter()
            .filter(|a| a.strip_prefix(&format!("{short}.")).is_some_and(|c| !c.contains('.')))
            .min_by_key(|a| a.len());
        match child {
            Some(c) if !short.contains('.') && !short.chars().any(|ch| ch.is_ascii_digit()) => (*c).clone(),
            _ => (*short).clone(),
        }
    };
    if is_token_model(g) {
        let parent = |p: &str| p.rsplit_once('.').map(|(a, _)| a.to_string()).unwrap_or_default();
        let lns = &names.layer_norms;
        let mut best: Option<&(String, NodeId)> = None;
        for (i, ln) in lns.iter().enumerate() {
            let p = parent(&ln.0);
            let siblings = lns.iter().filter(|l| parent(&l.0) == p).count();
            let first_in_parent = lns[..i].iter().all(|l| parent(&l.0) != p);
            if siblings >= 2 && first_in_parent {
                best = Some(ln);
            }
        }
        if let Some((n, _)) = best {
            return Some(n.clone());
        }
    }
    // the last feature map of at least 2×2 pixels (what global pooling or flattening then reduces)
    // (an average pool that keeps a 7×7 map, VGG's `avgpool`, is the pooling, not the feature map)
    let spatial = |d: &[usize]| d.len() == 4 && d[2] >= 2 && d[3] >= 2;
    let pooling = |id: NodeId| matches!(g.node(id).op.kind(), "AvgPool" | "AdaptiveAvgPool2d" | "ReduceMean");
    let last =
        (1..g.nodes().len()).rev().map(NodeId).find(|id| *id != g.output() && spatial(&dims[id.0]) && !pooling(*id))?;
    // an unnamed in-place activation (DenseNet's `F.relu(features, inplace=True)`): the module it overwrites
    let mut id = last;
    while g.node(id).inplace && !names.aliases.iter().any(|(_, n)| *n == id) {
        id = g.node(id).inputs[0];
    }
    Some(name_of(id))
}
