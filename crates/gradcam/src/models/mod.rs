//! Networks as an ordered list of named stages, so that any stage's output can be a CAM target and the
//! network can be run in pieces: up to a layer without tracking, then on from a `Var` (see `cam`).
//! One file per architecture; [`zoo`] lists the models by name.

pub mod efficientnet_lite;
pub mod resnet;
pub mod zoo;

use crate::error::{Error, Result};
use crate::ops::act::Backprop;
use candle_core::{Device, Tensor};

/// One piece of a network.
pub trait Stage: Send + Sync {
    fn forward(&self, x: &Tensor, bp: Backprop) -> candle_core::Result<Tensor>;
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

/// A classifier network.
pub struct Network {
    /// The model's name in the zoo (`resnet50`, `efficientnet_lite0`, …).
    pub name: String,
    /// Input height and width.
    pub input_size: (usize, usize),
    pub normalization: Normalization,
    pub num_classes: usize,
    pub device: Device,
    /// The stages in order; the last one returns the logits.
    stages: Vec<(String, Box<dyn Stage>)>,
    /// Other names of stage outputs (`layer4` → `layer4.2`).
    aliases: Vec<(String, usize)>,
}

/// A layer a user may target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerName {
    pub name: String,
    /// Index of the stage whose output it is.
    pub stage: usize,
    /// The stage's own name when `name` is an alias.
    pub alias_of: Option<String>,
}

impl Network {
    pub fn new(
        name: &str,
        input_size: (usize, usize),
        normalization: Normalization,
        num_classes: usize,
        device: Device,
        stages: Vec<(String, Box<dyn Stage>)>,
        aliases: Vec<(String, usize)>,
    ) -> Self {
        Network { name: name.into(), input_size, normalization, num_classes, device, stages, aliases }
    }

    /// The logits of a (N, 3, H, W) batch.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_range(x, 0, self.stages.len(), Backprop::Plain)
    }

    /// Run stages `from..to` on `x` (the output of stage `from − 1`, or the input when `from` is 0).
    pub fn forward_range(&self, x: &Tensor, from: usize, to: usize, bp: Backprop) -> Result<Tensor> {
        let mut x = x.clone();
        for (_, s) in &self.stages[from..to] {
            x = s.forward(&x, bp)?;
        }
        Ok(x)
    }

    pub fn num_stages(&self) -> usize {
        self.stages.len()
    }

    /// The targetable layers (every stage but the classifier, and the aliases), in network order.
    pub fn layers(&self) -> Vec<LayerName> {
        let mut out: Vec<LayerName> = Vec::new();
        for (i, (n, _)) in self.stages.iter().enumerate().take(self.stages.len() - 1) {
            for (a, j) in &self.aliases {
                if *j == i {
                    out.push(LayerName { name: a.clone(), stage: i, alias_of: Some(n.clone()) });
                }
            }
            out.push(LayerName { name: n.clone(), stage: i, alias_of: None });
        }
        out
    }

    /// The stage index of a layer name, or an error listing the names.
    pub fn layer(&self, name: &str) -> Result<usize> {
        let layers = self.layers();
        if let Some(l) = layers.iter().find(|l| l.name == name) {
            return Ok(l.stage);
        }
        let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
        Err(Error::invalid(format!(
            "model {} has no layer `{name}`; its layers: {} (see `gradcam layers --model {}`)",
            self.name,
            names.join(", "),
            self.name
        )))
    }

    /// The default target layer: the last convolutional stage (as the tutorial's `layer4`).
    pub fn default_layer(&self) -> String {
        let layers = self.layers();
        let last = self.stages.len() - 2;
        // prefer a short alias of the last stage (`layer4` rather than `layer4.2`)
        layers
            .iter()
            .find(|l| l.stage == last && l.alias_of.is_some())
            .or_else(|| layers.iter().find(|l| l.stage == last))
            .map(|l| l.name.clone())
            .unwrap_or_default()
    }

    /// Output shape (C, H, W) of every stage for an input of the model's size.
    pub fn stage_shapes(&self) -> Result<Vec<Vec<usize>>> {
        let (h, w) = self.input_size;
        let mut x = Tensor::zeros((1, 3, h, w), candle_core::DType::F32, &self.device)?;
        let mut out = vec![];
        for (_, s) in &self.stages {
            x = s.forward(&x, Backprop::Plain)?;
            out.push(x.dims()[1..].to_vec());
        }
        Ok(out)
    }
}
