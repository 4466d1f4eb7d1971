//! ONNX import: a classifier exported from any framework becomes a [`Network`] over the same graph of ops as
//! the zoo's, so every method, pass, kernel, batch, picture and JSON works unchanged.
//!
//! `.onnx` file → protobuf ([`onnx_protobuf`]) → initializers as constants → each node in order: folded to a
//! constant when none of its inputs depends on the image ([`fold`]), else lowered onto the graph's ops
//! ([`lower`]), each new op run once on a zero image of the model's size so every value's shape is known when
//! the next node is lowered. Module paths ([`names`]) become the layers' names.
//!
//! An imported graph runs image by image ([`crate::graph::Builder::per_image`]): its shapes were fixed for a
//! batch of one.

pub(crate) mod attrs;
pub(crate) mod fold;
pub(crate) mod lower;
pub(crate) mod names;
pub(crate) mod tensor;

use crate::error::{Error, Result};
use crate::graph::{Builder, NodeId};
use crate::models::{Network, Normalization};
use attrs::Attrs;
use candle_core::Tensor;
use fold::Arr;
use onnx_protobuf::{Message, ModelProto, NodeProto};
use std::collections::HashMap;
use std::path::Path;
use tensor::Source;

/// The opsets of the default domain gradcam reads.
pub const OPSETS: std::ops::RangeInclusive<i64> = 7..=23;

/// How to read a model.
#[derive(Clone, Debug)]
pub struct OnnxOptions {
    /// Height and width of the input, for a model whose input size is not fixed (and checked against one that
    /// is).
    pub input_size: Option<(usize, usize)>,
    pub normalization: Normalization,
}

impl Default for OnnxOptions {
    fn default() -> Self {
        OnnxOptions { input_size: None, normalization: Normalization::IMAGENET }
    }
}

/// Whether a `--model` value names an ONNX file rather than a zoo model.
pub fn is_onnx_path(model: &str) -> bool {
    model.to_ascii_lowercase().ends_with(".onnx")
}

/// A value while importing: a constant (weights, shapes, anything independent of the image) or a node's output.
#[derive(Clone, Debug)]
pub(crate) enum Val {
    Const(Tensor),
    Node(NodeId),
}

/// Every op type gradcam imports: those it lowers onto the graph (also folded when constant) and those it only
/// folds.
pub fn supported_ops() -> Vec<&'static str> {
    let mut v: Vec<&str> = lower::LOWERED.iter().chain(fold::FOLD_ONLY).copied().collect();
    v.sort();
    v.dedup();
    v
}

/// Read and parse an ONNX file, with errors that name it.
fn read_model(path: &Path) -> Result<ModelProto> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.is_empty() {
        return Err(Error::checkpoint(path, "the file is empty; expected an ONNX model (a protobuf ModelProto)"));
    }
    let m = ModelProto::parse_from_bytes(&bytes).map_err(|e| {
        Error::checkpoint(
            path,
            format!("not a readable ONNX model ({e}); the file may be truncated, or not an ONNX file at all"),
        )
    })?;
    if m.ir_version <= 0 || m.graph.as_ref().is_none_or(|g| g.node.is_empty()) {
        return Err(Error::checkpoint(
            path,
            "not an ONNX model: it has no IR version or no graph nodes (expected a ModelProto written by an ONNX \
             exporter)",
        ));
    }
    Ok(m)
}

/// Load an ONNX classifier as a [`Network`].
pub fn load(path: &Path, opts: &OnnxOptions) -> Result<Network> {
    crate::ops::isa::init()?;
    let model = read_model(path)?;
    let src = Source { file: path, dir: path.parent().map(Path::to_path_buf).unwrap_or_else(|| ".".into()) };
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| src.error("the model imports no opset of the default ONNX domain"))?;
    if !OPSETS.contains(&opset) {
        return Err(src.error(format!(
            "opset {opset}: gradcam reads opsets {} to {} (re-export with `opset_version` in that range)",
            OPSETS.start(),
            OPSETS.end()
        )));
    }
    let graph = model.graph.as_ref().ok_or_else(|| src.error("no graph"))?;
    // refuse an op gradcam cannot handle before anything else is done
    let supported = supported_ops();
    for n in &graph.node {
        let custom = !(n.domain.is_empty() || n.domain == "ai.onnx");
        if custom || !supported.contains(&n.op_type.as_str()) {
            let d = if custom { format!(" of domain `{}`", n.domain) } else { String::new() };
            return Err(src.error(format!(
                "op `{}`{d} (node `{}`) is not supported; gradcam imports: {}",
                n.op_type,
                node_label(n),
                supported.join(", ")
            )));
        }
    }
    for n in &graph.node {
        attrs::check_types(n).map_err(|e| src.error(format!("node `{}`: {e}", node_label(n))))?;
    }
    check_single_producers(graph, &src)?;
    Importer::run(&model, graph, &src, opset, opts)
}

/// Every value has one producer (ONNX graphs are in single static assignment form): no node output repeats
/// another's, a graph input's or an initializer's name, which would make later readers see another value.
fn check_single_producers(graph: &onnx_protobuf::GraphProto, src: &Source) -> Result<()> {
    let mut made: HashMap<&str, String> = HashMap::new();
    for i in &graph.initializer {
        made.insert(i.name.as_str(), format!("the initializer `{}`", i.name));
    }
    for i in &graph.input {
        made.entry(i.name.as_str()).or_insert_with(|| format!("the graph input `{}`", i.name));
    }
    for n in &graph.node {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            if let Some(before) = made.get(o.as_str()) {
                return Err(src.error(format!(
                    "node `{}` writes `{o}`, which is already {before}; an ONNX value has one producer",
                    node_label(n)
                )));
            }
            made.insert(o.as_str(), format!("the output of node `{}`", node_label(n)));
        }
    }
    Ok(())
}

fn node_label(n: &NodeProto) -> String {
    if n.name.is_empty() {
        format!("{} → {}", n.op_type, n.output.first().map(String::as_str).unwrap_or("?"))
    } else {
        n.name.clone()
    }
}

/// The model's image input: its name, size and layout.
struct InputSpec {
    name: String,
    size: (usize, usize),
    channels_last: bool,
}

fn input_spec(graph: &onnx_protobuf::GraphProto, src: &Source, opts: &OnnxOptions) -> Result<InputSpec> {
    let inits: std::collections::HashSet<&str> = graph.initializer.iter().map(|i| i.name.as_str()).collect();
    let inputs: Vec<&onnx_protobuf::ValueInfoProto> =
        graph.input.iter().filter(|i| !inits.contains(i.name.as_str())).collect();
    let input = match inputs[..] {
        [i] => i,
        [] => return Err(src.error("the graph has no input")),
        _ => {
            return Err(src.error(format!(
                "the graph has {} inputs ({}); gradcam explains models with one image input",
                inputs.len(),
                inputs.iter().map(|i| format!("`{}`", i.name)).collect::<Vec<_>>().join(", ")
            )))
        }
    };
    let tt = input.type_.tensor_type();
    {
        use onnx_protobuf::tensor_proto::DataType as D;
        use protobuf::Enum;
        // 0: not recorded
        if !matches!(D::from_i32(tt.elem_type), Some(D::UNDEFINED | D::FLOAT | D::FLOAT16 | D::DOUBLE | D::BFLOAT16)) {
            let t = D::from_i32(tt.elem_type).map(|d| format!("{d:?}")).unwrap_or_else(|| "unknown".into());
            return Err(src.error(format!(
                "input `{}` has element type {} ({t}); expected a floating-point image tensor",
                input.name, tt.elem_type
            )));
        }
    }
    let dims: Vec<Option<i64>> = tt
        .shape
        .dim
        .iter()
        .map(|d| if d.has_dim_value() && d.dim_value() > 0 { Some(d.dim_value()) } else { None })
        .collect();
    let shown: Vec<String> = tt
        .shape
        .dim
        .iter()
        .map(|d| if d.has_dim_value() { d.dim_value().to_string() } else { format!("`{}`", d.dim_param()) })
        .collect();
    let shown = format!("[{}]", shown.join(", "));
    if dims.len() != 4 {
        return Err(src.error(format!(
            "input `{}` has shape {shown}; expected an image batch (N, 3, H, W), or (N, H, W, 3)",
            input.name
        )));
    }
    if matches!(dims[0], Some(n) if n != 1) {
        return Err(src.error(format!(
            "input `{}` has shape {shown}: a fixed batch of {}; export with a batch of 1 (or a dynamic one)",
            input.name,
            dims[0].unwrap_or(0)
        )));
    }
    let channels_last = dims[1] != Some(3) && dims[3] == Some(3);
    let (c, h, w) = if channels_last { (dims[3], dims[1], dims[2]) } else { (dims[1], dims[2], dims[3]) };
    if c != Some(3) {
        return Err(src.error(format!(
            "input `{}` has shape {shown}; expected 3 colour channels, first (N, 3, H, W) or last (N, H, W, 3)",
            input.name
        )));
    }
    let size = match (h, w, opts.input_size) {
        (Some(h), Some(w), None) => (h as usize, w as usize),
        (Some(h), Some(w), Some(s)) if s == (h as usize, w as usize) => s,
        (Some(h), Some(w), Some((a, b))) => {
            return Err(src
                .error(format!("the model's input is fixed to {h}x{w} pixels; --input-size {a}x{b} cannot change it")))
        }
        (_, _, Some(s)) => s,
        _ => {
            return Err(src.error(format!(
                "input `{}` has shape {shown}: its height and width are not fixed; give them with --input-size \
                 (e.g. --input-size 224)",
                input.name
            )))
        }
    };
    if !(8..=4096).contains(&size.0) || !(8..=4096).contains(&size.1) {
        return Err(src.error(format!("input size {}x{}: expected 8 to 4096 pixels a side", size.0, size.1)));
    }
    Ok(InputSpec { name: input.name.clone(), size, channels_last })
}

/// The import of one model.
pub(crate) struct Importer<'a> {
    pub b: Builder,
    /// Each node's value for a zero image (batch 1), while some node still reads it.
    probe: Vec<Option<Tensor>>,
    /// Each node's output shape (batch 1).
    pub dims: Vec<Vec<usize>>,
    /// Remaining reads of each node's value.
    uses: Vec<usize>,
    /// The ONNX node being lowered (names the graph nodes it makes, and errors).
    cur: String,
    made: Vec<NodeId>,
    /// How many nodes read each input of the node being lowered (1: this one alone).
    pub input_reads: Vec<usize>,
    /// The op types of the nodes that read the first output of the node being lowered.
    pub output_readers: Vec<String>,
    pub src: &'a Source<'a>,
    pub opset: i64,
}

impl<'a> Importer<'a> {
    /// Add an op reading `inputs` for the current ONNX node; it runs at once on the probe values.
    pub fn add(&mut self, op: impl crate::graph::Op + 'static, inputs: &[NodeId]) -> Result<NodeId> {
        let y = {
            let xs = inputs
                .iter()
                .map(|i| {
                    self.probe[i.0]
                        .as_ref()
                        .ok_or_else(|| self.error(format!("internal: value {} of the import was dropped", i.0)))
                })
                .collect::<Result<Vec<_>>>()?;
            op.forward(&xs)
                .map_err(|e| self.src.error(format!("node `{}`: {}", self.cur, crate::error::strip_backtrace(e))))?
        };
        let name = if self.made.is_empty() { self.cur.clone() } else { format!("{}#{}", self.cur, self.made.len()) };
        let id = self.b.add(&name, op, inputs);
        self.dims.push(y.dims().to_vec());
        self.probe.push(Some(y));
        self.uses.push(0);
        self.made.push(id);
        Ok(id)
    }

    /// [`Importer::add`] for an activation that overwrites its input in place, as PyTorch's `inplace=True`
    /// activations do (see [`crate::graph::Graph::hook_value`]).
    pub fn add_inplace(&mut self, op: impl crate::graph::Op + 'static, x: NodeId) -> Result<NodeId> {
        let id = self.add(op, &[x])?;
        self.b.set_inplace(id);
        Ok(id)
    }

    pub fn error(&self, msg: impl std::fmt::Display) -> Error {
        self.src.error(format!("node `{}`: {msg}", self.cur))
    }

    fn run(
        model: &ModelProto,
        graph: &onnx_protobuf::GraphProto,
        src: &Source,
        opset: i64,
        opts: &OnnxOptions,
    ) -> Result<Network> {
        let spec = input_spec(graph, src, opts)?;
        let (h, w) = spec.size;
        let mut imp = Importer {
            b: Builder::new(),
            probe: vec![Some(Tensor::zeros((1, 3, h, w), candle_core::DType::F32, &candle_core::Device::Cpu)?)],
            dims: vec![vec![1, 3, h, w]],
            uses: vec![0],
            cur: "input".into(),
            made: vec![],
            input_reads: vec![],
            output_readers: vec![],
            src,
            opset,
        };
        imp.b.per_image();
        // reads of each ONNX value, to drop probe values early
        let mut reads: HashMap<&str, usize> = HashMap::new();
        for n in &graph.node {
            for i in n.input.iter().filter(|i| !i.is_empty()) {
                *reads.entry(i.as_str()).or_default() += 1;
            }
        }
        for o in &graph.output {
            *reads.entry(o.name.as_str()).or_default() += 1;
        }
        let mut readers: HashMap<&str, Vec<String>> = HashMap::new();
        for n in &graph.node {
            for i in n.input.iter().filter(|i| !i.is_empty()) {
                readers.entry(i.as_str()).or_default().push(n.op_type.clone());
            }
        }
        let mut vals: HashMap<String, Val> = HashMap::new();
        for init in &graph.initializer {
            vals.insert(init.name.clone(), Val::Const(tensor::to_tensor(init, src)?));
        }
        let mut input = imp.b.input();
        if spec.channels_last {
            imp.cur = "input (channels last)".into();
            input = imp.add(crate::graph::nodes::permute::Permute::new(&[0, 2, 3, 1]), &[input])?;
            imp.made.clear();
        }
        vals.insert(spec.name.clone(), Val::Node(input));
        imp.uses[input.0] += reads.get(spec.name.as_str()).copied().unwrap_or(0);

        let mut naming = names::Naming::new(src);
        let has_scopes = names::has_scopes(&graph.node);
        for (k, n) in graph.node.iter().enumerate() {
            let a = Attrs { node: n, src: Some(src) };
            imp.cur = if n.name.is_empty() { format!("{}_{k}", n.op_type) } else { n.name.clone() };
            imp.made.clear();
            imp.input_reads = n.input.iter().map(|i| reads.get(i.as_str()).copied().unwrap_or(0)).collect();
            imp.output_readers = n.output.first().and_then(|o| readers.get(o.as_str())).cloned().unwrap_or_default();
            let ins: Vec<Option<Val>> = n
                .input
                .iter()
                .map(|i| {
                    if i.is_empty() {
                        Ok(None)
                    } else {
                        vals.get(i).cloned().map(Some).ok_or_else(|| {
                            imp.error(format!(
                                "input `{i}` is not produced by any earlier node (the graph is not in order?)"
                            ))
                        })
                    }
                })
                .collect::<Result<_>>()?;
            let outs: Vec<Val> = if n.op_type == "Constant" {
                vec![Val::Const(constant_value(&a, src, &imp.cur)?)]
            } else if n.op_type == "Shape" || n.op_type == "Size" {
                let x = ins.first().cloned().flatten().ok_or_else(|| imp.error("no input"))?;
                let d = match x {
                    Val::Const(t) => t.dims().to_vec(),
                    Val::Node(id) => imp.dims[id.0].clone(),
                };
                let arr = if n.op_type == "Shape" {
                    fold::shape_of(&d, &a)
                } else {
                    Arr::new(vec![], vec![d.iter().product::<usize>() as f64], fold::Kind::Int)
                };
                vec![Val::Const(arr.to_tensor()?)]
            } else if ins.iter().flatten().all(|v| matches!(v, Val::Const(_))) {
                let arrs = ins
                    .iter()
                    .map(|v| match v {
                        Some(Val::Const(t)) => Arr::from_tensor(t).map(Some),
                        _ => Ok(None),
                    })
                    .collect::<Result<Vec<_>>>()?;
                let out = fold::eval(&n.op_type, &a, &arrs).map_err(|e| imp.error(e))?;
                out.iter().map(|o| Ok(Val::Const(o.to_tensor()?))).collect::<Result<_>>()?
            } else {
                if !lower::LOWERED.contains(&n.op_type.as_str()) {
                    return Err(imp.error(format!(
                        "op `{}` depends on the input image here; gradcam runs it only on constants (shape \
                         arithmetic), and lowers these ops onto its own: {}",
                        n.op_type,
                        lower::LOWERED.join(", ")
                    )));
                }
                lower::lower(&mut imp, &n.op_type, &a, &ins)?
            };
            if outs.len() < n.output.iter().filter(|o| !o.is_empty()).count() && n.op_type != "Dropout" {
                return Err(imp.error(format!("gave {} outputs, the node declares {}", outs.len(), n.output.len())));
            }
            for (name, v) in n.output.iter().zip(outs) {
                if name.is_empty() {
                    continue;
                }
                if let Val::Node(id) = v {
                    imp.uses[id.0] += reads.get(name.as_str()).copied().unwrap_or(0);
                    naming.tensor(name, id);
                }
                vals.insert(name.clone(), v);
            }
            // drop probe values no later node reads (after the outputs are bound: a node may pass its input on)
            for i in n.input.iter().filter(|i| !i.is_empty()) {
                if let Some(Val::Node(id)) = vals.get(i) {
                    imp.release(*id);
                }
            }
            for o in n.output.iter().filter(|o| !o.is_empty()) {
                if let Some(Val::Node(id)) = vals.get(o) {
                    if imp.uses[id.0] == 0 {
                        imp.probe[id.0] = None;
                    }
                }
            }
            let made = std::mem::take(&mut imp.made);
            if has_scopes {
                naming.lowered(n, &made, &vals, &imp);
            } else if let Some(last) = made.last() {
                naming.node(&imp.cur, *last);
            }
        }
        // the output: the first graph output; a Softmax at the end is stepped over (the logits are explained)
        let out_name =
            graph.output.first().map(|o| o.name.clone()).ok_or_else(|| src.error("the graph has no output"))?;
        let mut out = match vals.get(&out_name) {
            Some(Val::Node(id)) => *id,
            Some(Val::Const(_)) => return Err(src.error(format!("output `{out_name}` does not depend on the input"))),
            None => return Err(src.error(format!("output `{out_name}` is produced by no node"))),
        };
        let mut notes = vec![];
        if graph.output.len() > 1 {
            notes.push(format!(
                "the model has {} outputs; the first, `{out_name}`, is explained as the class scores",
                graph.output.len()
            ));
        }
        let dims = imp.dims;
        let (mut gb, logits, note) = step_over_softmax(imp.b, out, &dims);
        out = logits;
        notes.extend(note);
        let od = &dims[out.0];
        if od.len() != 2 || od[0] != 1 {
            return Err(src.error(format!(
                "output `{out_name}` has shape {od:?} for one image; expected class scores (1, classes)"
            )));
        }
        let num_classes = od[1];
        let names = naming.finish(|n| gb.has_node(n));
        for (alias, id) in &names.aliases {
            gb.alias(alias, *id);
        }
        let g = gb.finish(out)?;
        let stem = src.file.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
        let default = lower::default_layer(&g, &dims, &names);
        let default = default.ok_or_else(|| {
            src.error(
                "no layer to explain by default: no spatial feature map before a global pooling and no \
                 transformer block was found; give one with --layer",
            )
        })?;
        let mut net = Network::new(&stem, spec.size, opts.normalization, num_classes, g, &default)?;
        net.onnx = Some(crate::models::OnnxInfo {
            file: src.file.to_path_buf(),
            opset,
            producer: format!("{} {}", model.producer_name, model.producer_version).trim().to_string(),
            names: names.lookup,
            refused: names.refused,
            notes,
            token_model: lower::is_token_model(&net.graph),
        });
        Ok(net)
    }

    fn release(&mut self, id: NodeId) {
        if self.uses[id.0] > 0 {
            self.uses[id.0] -= 1;
            if self.uses[id.0] == 0 {
                self.probe[id.0] = None;
            }
        }
    }
}

/// A model ending in Softmax (probabilities): explain the logits before it, as pytorch-grad-cam would on the
/// model without its last activation.
fn step_over_softmax(b: Builder, out: NodeId, dims: &[Vec<usize>]) -> (Builder, NodeId, Option<String>) {
    match b.node_info(out) {
        Some((kind, inputs)) if (kind == "Softmax" || kind == "LogSoftmax") && inputs.len() == 1 => {
            let before = inputs[0];
            if dims[before.0] == dims[out.0] {
                let note = format!(
                    "the model ends in {kind} (it gives probabilities); the class scores explained are the logits \
                     before it"
                );
                return (b, before, Some(note));
            }
            (b, out, None)
        }
        _ => (b, out, None),
    }
}

/// A `Constant` node's value.
fn constant_value(a: &Attrs, src: &Source, node: &str) -> Result<Tensor> {
    if let Some(t) = a.tensor("value")? {
        return Ok(t);
    }
    let dev = candle_core::Device::Cpu;
    if a.has("value_float") {
        return Ok(Tensor::new(a.float("value_float", 0.0), &dev)?);
    }
    if let Some(v) = a.floats("value_floats") {
        return Ok(Tensor::new(v, &dev)?);
    }
    if a.has("value_int") {
        return Ok(Tensor::new(a.int("value_int", 0), &dev)?);
    }
    if let Some(v) = a.ints("value_ints") {
        return Ok(Tensor::new(v, &dev)?);
    }
    Err(src.error(format!("Constant node `{node}` has no value gradcam reads (value, value_float(s), value_int(s))")))
}
