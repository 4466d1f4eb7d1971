//! Networks: a [`Graph`] of ops with what a classifier needs around it (input size, normalisation, classes,
//! the default target). One file per architecture, each a forward-only builder; [`zoo`] lists the models by
//! name.

pub mod convnext;
pub mod densenet;
pub mod efficientnet;
pub mod efficientnet_lite;
pub mod mobilenet_v2;
pub mod mobilenet_v3;
pub mod regnet;
pub mod resnet;
pub mod vgg;
pub mod zoo;

use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId};
use candle_core::{Device, Tensor};

/// torchvision's `SqueezeExcitation` `name` on `x` (`c` channels): avgpool → fc1 (to `squeeze`) → `act` (in place
/// where the module is) → fc2 → `gate`, times the input (`mul`). EfficientNet (SiLU in place, Sigmoid),
/// MobileNetV3 (ReLU, Hardsigmoid) and RegNetY (ReLU, Sigmoid) differ only in those two.
#[allow(clippy::too_many_arguments)]
pub(crate) fn squeeze_excitation(
    b: &mut crate::graph::Builder,
    vb: &candle_nn::VarBuilder,
    name: &str,
    c: usize,
    squeeze: usize,
    x: NodeId,
    (act, act_inplace): (impl crate::graph::Op + 'static, bool),
    gate: crate::graph::nodes::UnaryKind,
) -> candle_core::Result<NodeId> {
    use crate::graph::nodes::{Binary, BinaryKind, Conv, ConvSpec, GlobalAvgPool, Padding, Unary};
    let p = |s: &str| format!("{name}.{s}");
    let s = b.add(&p("avgpool"), GlobalAvgPool, &[x]);
    let fc1 = ConvSpec::new(c, squeeze, 1, 1, Padding::same(0)).with_bias();
    let s = b.add(&p("fc1"), Conv::new(vb.pp(p("fc1")), fc1)?, &[s]);
    let s = if act_inplace { b.add_inplace(&p("activation"), act, &[s]) } else { b.add(&p("activation"), act, &[s]) };
    let fc2 = ConvSpec::new(squeeze, c, 1, 1, Padding::same(0)).with_bias();
    let s = b.add(&p("fc2"), Conv::new(vb.pp(p("fc2")), fc2)?, &[s]);
    let s = b.add(&p("scale_activation"), Unary(gate), &[s]);
    // `scale * input`
    let out = b.add(&p("mul"), Binary::new(BinaryKind::Mul), &[s, x]);
    b.alias(name, out);
    Ok(out)
}

/// Input normalisation: (x/255 − mean)/std per channel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalization {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalization {
    pub const IMAGENET: Normalization = Normalization { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
    /// EfficientNet-Lite's own: (x·255 − 127)/128.
    pub const LITE: Normalization = Normalization {
        mean: [127.0 / 255.0, 127.0 / 255.0, 127.0 / 255.0],
        std: [128.0 / 255.0, 128.0 / 255.0, 128.0 / 255.0],
    };
}

/// [`Network::pass_bytes_estimate`]: bytes of a pass with its backward per byte of the values of a forward
/// pass (the fused plan's step outputs). Measured with `gradcam bench --what gradcam,guided-backprop,layercam`.
pub const PASS_BYTES_FACTOR: u64 = 2;

/// What an imported ONNX model adds to a [`Network`].
#[derive(Clone, Debug, Default)]
pub struct OnnxInfo {
    pub file: std::path::PathBuf,
    pub opset: i64,
    /// The exporter, as the file says (`pytorch 2.15.0`).
    pub producer: String,
    /// ONNX node and tensor names → nodes (module paths are the graph's aliases).
    pub names: std::collections::HashMap<String, NodeId>,
    /// Names that cannot be targeted, with the reason.
    pub refused: std::collections::HashMap<String, String>,
    /// Things the user should know about how the model is read (a Softmax stepped over, several outputs).
    pub notes: Vec<String>,
    /// Whether the model is a transformer (token values, attention).
    pub token_model: bool,
}

/// A classifier network.
pub struct Network {
    /// The model's name in the zoo (`resnet50`, `efficientnet_lite0`, …).
    pub name: String,
    /// Input height and width.
    pub input_size: (usize, usize),
    pub normalization: Normalization,
    pub num_classes: usize,
    pub device: Device,
    pub graph: Graph,
    /// The layer a map is made at when none is given, by the name the builder gave (`layer4`, `features.28`).
    default_layer: String,
    /// Bytes of the forward pass's values for one image of the input size (found once, by a pass of zeros).
    value_bytes: std::sync::OnceLock<u64>,
    /// Every node's output shape for one image of the input size, without and with the first dimension.
    shapes: std::sync::OnceLock<Vec<Vec<usize>>>,
    full_shapes: std::sync::OnceLock<Vec<Vec<usize>>>,
    /// Set for a model imported from an ONNX file.
    pub onnx: Option<OnnxInfo>,
    /// How layers' values become channel maps (`--reshape`).
    pub reshape: crate::cam::layout::Reshape,
}

/// A layer a user may target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerName {
    pub name: String,
    pub node: NodeId,
    /// The node's own name when `name` is an alias (a container module).
    pub alias_of: Option<String>,
    /// The op's type (`Conv2d`, `ReLU`, …).
    pub kind: &'static str,
}

impl Network {
    pub fn new(
        name: &str,
        input_size: (usize, usize),
        normalization: Normalization,
        num_classes: usize,
        graph: Graph,
        default_layer: &str,
    ) -> Result<Self> {
        if graph.find(default_layer).is_none() {
            return Err(Error::invalid(format!("{name}: no node `{default_layer}` for the default layer")));
        }
        let default_layer = default_layer.to_string();
        Ok(Network {
            name: name.into(),
            input_size,
            normalization,
            num_classes,
            device: Device::Cpu,
            graph,
            default_layer,
            value_bytes: Default::default(),
            shapes: Default::default(),
            full_shapes: Default::default(),
            onnx: None,
            reshape: Default::default(),
        })
    }

    /// The same network fed `(h, w)` inputs instead of its weights' size (`--input-size`); every architecture here
    /// ends in global pooling, so any size from 32×32 up works.
    pub fn with_input_size(mut self, h: usize, w: usize) -> Result<Self> {
        if !(32..=4096).contains(&h) || !(32..=4096).contains(&w) {
            return Err(Error::invalid(format!("input size {h}x{w}: expected 32 to 4096 pixels a side")));
        }
        if self.graph.is_per_image() && (h, w) != self.input_size {
            return Err(Error::invalid(format!(
                "{}: an imported model's input size is set when it is read ({}x{}); it cannot change to {h}x{w}",
                self.name, self.input_size.0, self.input_size.1
            )));
        }
        self.input_size = (h, w);
        self.value_bytes = Default::default();
        self.shapes = Default::default();
        self.full_shapes = Default::default();
        Ok(self)
    }

    /// The logits of a (N, 3, H, W) batch.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.graph.forward(x)
    }

    /// The values of some layers (by name) for a batch, untracked: what a forward hook on each would see.
    pub fn values_at(&self, x: &Tensor, layers: &[&str]) -> Result<Vec<Tensor>> {
        let ids = layers.iter().map(|l| self.layer(l)).collect::<Result<Vec<_>>>()?;
        let split = crate::graph::exec::Split::new(&self.graph, &ids)?;
        let p = self.graph.prefix(&split, x)?;
        let (_, kept) = self.graph.finish(&split, &p, &ids)?;
        Ok(kept)
    }

    /// The targetable layers: every node but the input and the logits, each container name (alias) after the
    /// node it names, in network order.
    pub fn layers(&self) -> Vec<LayerName> {
        let g = &self.graph;
        let mut out = vec![];
        for (i, n) in g.nodes().iter().enumerate().skip(1) {
            let id = NodeId(i);
            if id == g.output() {
                continue;
            }
            let kind = n.op.kind();
            out.push(LayerName { name: n.name.clone(), node: id, alias_of: None, kind });
            for (a, j) in g.aliases() {
                if *j == id {
                    out.push(LayerName { name: a.clone(), node: id, alias_of: Some(n.name.clone()), kind });
                }
            }
        }
        out
    }

    /// The node of a layer name, or an error listing some of the names.
    pub fn layer(&self, name: &str) -> Result<NodeId> {
        if let Some(info) = &self.onnx {
            if let Some(why) = info.refused.get(name) {
                return Err(Error::invalid(why.clone()));
            }
            if self.graph.find(name).is_none() {
                if let Some(id) = info.names.get(name) {
                    return self.layer_node(name, *id);
                }
            }
        }
        match self.graph.find(name) {
            Some(id) => self.layer_node(name, id),
            None => {
                let first = name.split('.').next().unwrap_or(name);
                let mut near: Vec<String> =
                    self.layers().into_iter().map(|l| l.name).filter(|l| l.starts_with(first)).take(12).collect();
                let what = if near.is_empty() {
                    // the containers (blocks, stages) are what users usually mean
                    near = self.graph.aliases().iter().map(|(a, _)| a.clone()).collect();
                    near.dedup();
                    "its blocks and stages"
                } else {
                    "similar names"
                };
                let hint = if near.is_empty() { String::new() } else { format!(" ({what}: {})", near.join(", ")) };
                Err(Error::invalid(format!(
                    "model {} has no layer `{name}`{hint}; `gradcam layers --model {}` lists every node",
                    self.name, self.name
                )))
            }
        }
    }

    fn layer_node(&self, name: &str, id: NodeId) -> Result<NodeId> {
        if id != self.graph.output() && id != self.graph.input() {
            return Ok(id);
        }
        Err(Error::invalid(format!(
            "`{name}` of model {} is the network's {}: not a layer a map can be made at",
            self.name,
            if id == self.graph.input() { "input" } else { "output (the logits)" }
        )))
    }

    /// The default target layer's name (as pytorch-grad-cam's README suggests: `layer4`, `features[-1]`, …).
    pub fn default_layer(&self) -> String {
        self.default_layer.clone()
    }

    /// The name of the first node whose output on `x` holds a value that is not finite (NaN or infinite),
    /// `input` if `x` itself does, None if none does. Used to explain non-finite logits.
    pub fn first_non_finite_stage(&self, x: &Tensor) -> Result<Option<String>> {
        let finite =
            |t: &Tensor| -> Result<bool> { Ok(t.flatten_all()?.to_vec1::<f32>()?.iter().all(|v| v.is_finite())) };
        if !finite(x)? {
            return Ok(Some("input".into()));
        }
        let mut bad = None;
        self.graph.visit(x, &mut |id, t| {
            if bad.is_none() && !finite(t)? {
                bad = Some(self.graph.display_name(id).to_string());
            }
            Ok(())
        })?;
        Ok(bad)
    }

    /// Bytes the values of a forward pass of one image of `h`×`w` pixels take (f32): see
    /// [`Network::pass_bytes_estimate`].
    pub fn activation_bytes(&self, h: usize, w: usize) -> Result<u64> {
        let at_input = match self.value_bytes.get() {
            Some(b) => *b,
            None => {
                let plan = self.graph.plan(&[])?;
                let shapes = self.layer_shapes()?;
                let b = plan.steps.iter().map(|s| shapes[s.out.0].iter().product::<usize>() as u64 * 4).sum();
                *self.value_bytes.get_or_init(|| b)
            }
        };
        let (ih, iw) = self.input_size;
        // activations scale with the pixels
        Ok(((at_input as f64) * (h as f64 * w as f64) / (ih as f64 * iw as f64)).ceil() as u64)
    }

    /// An upper estimate of the memory a batch of `n` images of `h`×`w` pixels needs in one pass with its
    /// backward (see [`PASS_BYTES_FACTOR`]).
    pub fn pass_bytes_estimate(&self, n: usize, h: usize, w: usize) -> Result<u64> {
        Ok(self.activation_bytes(h, w)?.saturating_mul(PASS_BYTES_FACTOR).saturating_mul(n as u64))
    }

    /// Every node's output shape (without the batch dimension) for one image of the model's input size, by
    /// node index (the input's first).
    pub fn layer_shapes(&self) -> Result<&[Vec<usize>]> {
        if let Some(s) = self.shapes.get() {
            return Ok(s);
        }
        let full = self.layer_shapes_batch1()?;
        Ok(self.shapes.get_or_init(|| full.iter().map(|d| d.get(1..).unwrap_or(&[]).to_vec()).collect()))
    }

    /// Every node's full output shape (the batch dimension included) for one image of the input size: in a graph
    /// that runs image by image a value's first dimension need not be the batch's.
    pub fn layer_shapes_batch1(&self) -> Result<&[Vec<usize>]> {
        if let Some(s) = self.full_shapes.get() {
            return Ok(s);
        }
        let (h, w) = self.input_size;
        let x = Tensor::zeros((1, 3, h, w), candle_core::DType::F32, &self.device)?;
        let mut shapes = vec![vec![]; self.graph.nodes().len()];
        self.graph.visit(&x, &mut |id, t| {
            shapes[id.0] = t.dims().to_vec();
            Ok(())
        })?;
        Ok(self.full_shapes.get_or_init(|| shapes))
    }

    /// The output shape (without the batch dimension) of a layer for one image of the input size.
    pub fn layer_shape(&self, id: NodeId) -> Result<Vec<usize>> {
        Ok(self.layer_shapes()?[id.0].clone())
    }
}
