//! Networks as an ordered list of named stages, so that any stage's output can be a CAM target and the
//! network can be run in pieces: up to a layer without tracking, then on from a `Var` (see `cam`).
//! One file per architecture; [`zoo`] lists the models by name.

pub mod efficientnet_lite;
pub mod resnet;
pub mod zoo;

use crate::error::{Error, Result};
use crate::ops::act::Backprop;
use crate::ops::Grad;
use candle_core::{Device, Tensor, Var};

/// What stages keep from a taped forward pass for their backward pass: a stack, each stage popping in
/// reverse what it pushed. Tensors are shared, not copied.
#[derive(Default)]
pub struct Tape(Vec<Tensor>);

impl Tape {
    pub fn push(&mut self, t: Tensor) {
        self.0.push(t)
    }
    pub fn pop(&mut self) -> candle_core::Result<Tensor> {
        match self.0.pop() {
            Some(t) => Ok(t),
            None => candle_core::bail!("backward pass: the tape is empty (a stage popped more than it pushed)"),
        }
    }
}

/// One piece of a network.
///
/// Besides its forward pass, a stage has a backward pass of its own for the input gradient (Guided
/// Backprop): `forward_taped` keeps on the tape what `backward` needs, `backward` turns dL/dy into dL/dx
/// with the project's kernels, without candle's autograd (whose graph walk adds a zero-filled accumulator
/// and an add per node). The provided versions fall back on candle's autograd, so a new stage works before
/// it has a hand-written backward.
pub trait Stage: Send + Sync {
    fn forward(&self, x: &Tensor, bp: Backprop) -> candle_core::Result<Tensor>;

    fn forward_taped(&self, x: &Tensor, tape: &mut Tape) -> candle_core::Result<Tensor> {
        tape.push(x.clone());
        self.forward(x, Backprop::Plain)
    }

    fn backward(&self, dy: Grad, tape: &mut Tape, bp: Backprop) -> candle_core::Result<Grad> {
        let x = Var::from_tensor(&tape.pop()?)?;
        let y = self.forward(x.as_tensor(), bp)?;
        let dy = dy.into_tensor(y.device())?;
        let grads = (y * dy)?.sum_all()?.backward()?;
        match grads.get(x.as_tensor()) {
            Some(g) => Grad::from_tensor(g),
            None => Grad::from_tensor(&x.as_tensor().zeros_like()?),
        }
    }
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

/// [`Network::pass_bytes_estimate`]: bytes of a pass with its backward per byte of stage outputs. Measured with
/// `gradcam bench --what gradcam,guided-backprop,layercam`: ResNet-50's batch of 8 took 39 MB more than a batch of
/// 1 (5.6 MB an image, against 26 MB of stage outputs), Lite0's 12 MB more (1.7 MB an image, against 4.2 MB).
pub const PASS_BYTES_FACTOR: u64 = 2;

/// Output size (pixels per channel) from which [`Network::forward_range`] runs a batch's images together.
pub const BATCH_FROM: usize = 196;

/// Pixels per channel of a (N, C, H, W) tensor; 1 for anything else (the logits).
fn spatial(t: &Tensor) -> candle_core::Result<usize> {
    Ok(match t.dims() {
        [_, _, h, w] => h * w,
        _ => 1,
    })
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
    /// Bytes of the stages' outputs for one image of the input size (found once, by a pass of zeros).
    stage_bytes: std::sync::OnceLock<u64>,
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
        let stage_bytes = std::sync::OnceLock::new();
        Network { name: name.into(), input_size, normalization, num_classes, device, stages, aliases, stage_bytes }
    }

    /// The logits of a (N, 3, H, W) batch.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_range(x, 0, self.stages.len(), Backprop::Plain)
    }

    /// Run stages `from..to` on `x` (the output of stage `from − 1`, or the input when `from` is 0).
    ///
    /// A batch goes image by image through the stages whose outputs are large (a whole batch of those would
    /// spill out of the caches between one stage and the next), then on together once the outputs are
    /// [`BATCH_FROM`] pixels or fewer, where one gemm for several images keeps the cores busier.
    pub fn forward_range(&self, x: &Tensor, from: usize, to: usize, bp: Backprop) -> Result<Tensor> {
        crate::ops::in_pool(|| {
            let n = x.dim(0)?;
            let (mut x, mut at) = (x.clone(), from);
            if n > 1 {
                // image 0 shows where the outputs become small
                let mut first = x.narrow(0, 0, 1)?;
                while at < to && spatial(&first)? > BATCH_FROM {
                    first = self.stages[at].1.forward(&first, bp)?;
                    at += 1;
                }
                if at > from {
                    let mut outs = vec![first];
                    for i in 1..n {
                        let mut y = x.narrow(0, i, 1)?;
                        for (_, s) in &self.stages[from..at] {
                            y = s.forward(&y, bp)?;
                        }
                        outs.push(y);
                    }
                    x = Tensor::cat(&outs, 0)?;
                }
            }
            for (_, s) in &self.stages[at..to] {
                x = s.forward(&x, bp)?;
            }
            Ok(x)
        })
    }

    /// The logits, keeping on `tape` what [`Network::backward`] needs.
    pub fn forward_taped(&self, x: &Tensor, tape: &mut Tape) -> Result<Tensor> {
        self.forward_taped_from(x, 0, tape, |_, _| {})
    }

    /// Stages `from..` on `x` (the output of stage `from − 1`), taped: the logits.
    pub fn forward_taped_from(
        &self,
        x: &Tensor,
        from: usize,
        tape: &mut Tape,
        mut keep: impl FnMut(usize, &Tensor) + Send,
    ) -> Result<Tensor> {
        crate::ops::in_pool(|| {
            let mut x = x.clone();
            for (i, (_, s)) in self.stages.iter().enumerate().skip(from) {
                x = s.forward_taped(&x, tape)?;
                keep(i, &x);
            }
            Ok(x)
        })
    }

    /// Back from d/d(logits) through the stages after `last_kept` (taped by [`Network::forward_taped_from`]):
    /// the gradient with respect to the output of each stage in `want` (all ≥ `last_kept`), in the order met.
    pub fn backward_to(
        &self,
        dlogits: Grad,
        tape: &mut Tape,
        bp: Backprop,
        last_kept: usize,
        want: &[usize],
    ) -> Result<Vec<(usize, Grad)>> {
        crate::ops::in_pool(|| {
            let mut out = vec![];
            let mut g = dlogits;
            for i in (last_kept + 1..self.stages.len()).rev() {
                g = self.stages[i].1.backward(g, tape, bp)?;
                // g is now d/d(output of stage i − 1)
                if want.contains(&(i - 1)) && i - 1 != last_kept {
                    out.push((i - 1, g.clone()));
                }
            }
            if want.contains(&last_kept) {
                out.push((last_kept, g));
            }
            Ok(out)
        })
    }

    /// d/d(input) from d/d(logits), through every stage's own backward pass (CPU only).
    pub fn backward(&self, dlogits: Grad, tape: &mut Tape, bp: Backprop) -> Result<Grad> {
        crate::ops::in_pool(|| {
            let mut g = dlogits;
            for (_, s) in self.stages.iter().rev() {
                g = s.backward(g, tape, bp)?;
            }
            Ok(g)
        })
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

    /// The name of the first stage whose output on `x` holds a value that is not finite (NaN or infinite),
    /// `input` if `x` itself does, None if none does. Used to explain non-finite logits.
    pub fn first_non_finite_stage(&self, x: &Tensor) -> Result<Option<String>> {
        let finite =
            |t: &Tensor| -> Result<bool> { Ok(t.flatten_all()?.to_vec1::<f32>()?.iter().all(|v| v.is_finite())) };
        if !finite(x)? {
            return Ok(Some("input".into()));
        }
        let mut x = x.clone();
        for (i, (name, _)) in self.stages.iter().enumerate() {
            x = self.forward_range(&x, i, i + 1, Backprop::Plain)?;
            if !finite(&x)? {
                return Ok(Some(name.clone()));
            }
        }
        Ok(None)
    }

    /// Bytes the activations of one image of `h`×`w` pixels take through the network: the sum of the stages'
    /// outputs, f32. A taped pass keeps each stage's input and a few intermediates besides (an inverted
    /// bottleneck's expanded tensors among them): see [`Network::pass_bytes_estimate`].
    pub fn activation_bytes(&self, h: usize, w: usize) -> Result<u64> {
        let at_input = match self.stage_bytes.get() {
            Some(b) => *b,
            None => {
                let b = self.stage_shapes()?.iter().map(|s| s.iter().product::<usize>() as u64 * 4).sum();
                *self.stage_bytes.get_or_init(|| b)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A stage with no backward of its own: y = 2x + x².
    struct Poly;
    impl Stage for Poly {
        fn forward(&self, x: &Tensor, _: Backprop) -> candle_core::Result<Tensor> {
            (x * 2.0)? + x.sqr()?
        }
    }

    #[test]
    fn provided_backward_falls_back_on_autograd() -> candle_core::Result<()> {
        let x = Tensor::new(&[[1f32, -2.0], [0.5, 3.0]], &Device::Cpu)?;
        let mut tape = Tape::default();
        let y = Poly.forward_taped(&x, &mut tape)?;
        assert_eq!(y.to_vec2::<f32>()?, vec![vec![3.0, 0.0], vec![1.25, 15.0]]);
        let dy = Grad { data: vec![1.0, 2.0, -1.0, 0.5], dims: vec![2, 2] };
        let dx = Poly.backward(dy, &mut tape, Backprop::Plain)?;
        // dy · (2 + 2x)
        assert_eq!(dx.data, vec![4.0, -4.0, -3.0, 4.0]);
        assert!(tape.pop().is_err(), "the stage popped what it pushed");
        Ok(())
    }
}
