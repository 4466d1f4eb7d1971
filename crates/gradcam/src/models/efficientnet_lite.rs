//! EfficientNet-Lite0…4 as the PyPI package `efficientnet-lite-pytorch==0.1.0` builds them: ReLU6, no
//! squeeze-excitation, stem (32) and head (1280) not scaled, first and last stage repeats not scaled,
//! batch-norm eps 1e-3, TensorFlow SAME padding. Tensor names as its checkpoints (`_conv_stem`, `_blocks.N.…`).
//! Stages: `stem`, `blocks.0`…, `head` (conv_head → bn1 → ReLU6), then the classifier (`fc`).

use super::{Network, Normalization, Stage, Tape};
use crate::error::{Error, Result};
use crate::nn::{pool_and_classify, pool_and_classify_backward, ConvBn, ConvSpec, Linear, Padding};
use crate::ops::act::{add_activation, Activation::Relu6, Backprop};
use crate::ops::Grad;
use crate::weights::Weights;
use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;

const EPS: f64 = 1e-3;

/// (width, depth, resolution) of lite0..lite4.
pub fn params(variant: usize) -> Option<(f64, f64, usize)> {
    Some(match variant {
        0 => (1.0, 1.0, 224),
        1 => (1.0, 1.1, 240),
        2 => (1.1, 1.2, 260),
        3 => (1.2, 1.4, 280),
        4 => (1.4, 1.8, 300),
        _ => return None,
    })
}

/// (repeats, kernel, stride, expand, in, out) of the seven stages.
const BLOCKS: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

fn round_filters(f: usize, width: f64) -> usize {
    let f = f as f64 * width;
    let d = 8.0;
    let mut n = (((f + d / 2.0) as usize) / 8 * 8).max(8) as f64;
    if n < 0.9 * f {
        n += d;
    }
    n as usize
}

/// Convolution, batch-norm and ReLU6: the stem and the head.
struct ConvStage(ConvBn);
impl Stage for ConvStage {
    fn forward(&self, x: &Tensor, bp: Backprop) -> candle_core::Result<Tensor> {
        self.0.forward_act(x, Relu6, bp)
    }
    fn forward_taped(&self, x: &Tensor, tape: &mut Tape) -> candle_core::Result<Tensor> {
        self.0.forward_taped(x, Some(Relu6), tape)
    }
    fn backward(&self, mut dy: Grad, tape: &mut Tape, bp: Backprop) -> candle_core::Result<Grad> {
        self.0.backward(&mut dy, Some(Relu6), tape, bp)
    }
}

struct MbConv {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    skip: bool,
}

impl MbConv {
    fn new(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        expand: usize,
    ) -> candle_core::Result<Self> {
        let mid = cin * expand;
        let same = Padding::TfSame;
        let expand = if expand != 1 {
            Some(ConvBn::new(vb.pp("_expand_conv"), vb.pp("_bn0"), ConvSpec::new(cin, mid, 1, 1, same), EPS)?)
        } else {
            None
        };
        Ok(MbConv {
            expand,
            depthwise: ConvBn::new(
                vb.pp("_depthwise_conv"),
                vb.pp("_bn1"),
                ConvSpec::depthwise(mid, k, stride, same),
                EPS,
            )?,
            project: ConvBn::new(vb.pp("_project_conv"), vb.pp("_bn2"), ConvSpec::new(mid, cout, 1, 1, same), EPS)?,
            skip: stride == 1 && cin == cout,
        })
    }
}

impl Stage for MbConv {
    fn forward(&self, x: &Tensor, bp: Backprop) -> candle_core::Result<Tensor> {
        let h = match &self.expand {
            Some(e) => e.forward_act(x, Relu6, bp)?,
            None => x.clone(),
        };
        let h = self.depthwise.forward_act(&h, Relu6, bp)?;
        let h = self.project.forward(&h)?;
        if self.skip {
            add_activation(&h, x, None, bp)
        } else {
            Ok(h)
        }
    }

    fn forward_taped(&self, x: &Tensor, tape: &mut Tape) -> candle_core::Result<Tensor> {
        let h = match &self.expand {
            Some(e) => e.forward_taped(x, Some(Relu6), tape)?,
            None => x.clone(),
        };
        let h = self.depthwise.forward_taped(&h, Some(Relu6), tape)?;
        let h = self.project.forward_taped(&h, None, tape)?;
        if self.skip {
            add_activation(&h, x, None, Backprop::Plain)
        } else {
            Ok(h)
        }
    }

    fn backward(&self, mut dy: Grad, tape: &mut Tape, bp: Backprop) -> candle_core::Result<Grad> {
        let mut g = self.project.backward(&mut dy, None, tape, bp)?;
        g = self.depthwise.backward(&mut g, Some(Relu6), tape, bp)?;
        if let Some(e) = &self.expand {
            g = e.backward(&mut g, Some(Relu6), tape, bp)?;
        }
        if self.skip {
            g.add_assign(&dy)?;
        }
        Ok(g)
    }
}

struct Classifier(Linear);
impl Stage for Classifier {
    fn forward(&self, x: &Tensor, _: Backprop) -> candle_core::Result<Tensor> {
        pool_and_classify(x, &self.0)
    }
    fn forward_taped(&self, x: &Tensor, tape: &mut Tape) -> candle_core::Result<Tensor> {
        tape.push(x.clone());
        pool_and_classify(x, &self.0)
    }
    fn backward(&self, dy: Grad, tape: &mut Tape, _: Backprop) -> candle_core::Result<Grad> {
        pool_and_classify_backward(&dy, tape.pop()?.dims4()?, &self.0)
    }
}

/// Build `efficientnet_lite{variant}`; the class count comes from `_fc.weight` (1000 for synthetic).
pub fn build(variant: usize, weights: &Weights, dev: &Device) -> Result<Network> {
    let (width, depth, res) =
        params(variant).ok_or_else(|| Error::invalid(format!("no EfficientNet-Lite{variant}")))?;
    let vb = weights.var_builder(dev);
    let num_classes = weights.shape_of("_fc.weight").map_or(1000, |s| s[0]);
    let stem = ConvBn::new(vb.pp("_conv_stem"), vb.pp("_bn0"), ConvSpec::new(3, 32, 3, 2, Padding::TfSame), EPS)?;
    let mut stages: Vec<(String, Box<dyn Stage>)> = vec![("stem".into(), Box::new(ConvStage(stem)))];
    let mut idx = 0;
    let mut cin = 32;
    for (i, &(r, k, s, e, _i, o)) in BLOCKS.iter().enumerate() {
        let cout = round_filters(o, width);
        let fixed = i == 0 || i == BLOCKS.len() - 1;
        let repeats = if fixed { r } else { (depth * r as f64).ceil() as usize };
        for j in 0..repeats {
            let stride = if j == 0 { s } else { 1 };
            let name = format!("blocks.{idx}");
            let block = MbConv::new(vb.pp(format!("_blocks.{idx}")), cin, cout, k, stride, e)?;
            stages.push((name, Box::new(block)));
            cin = cout;
            idx += 1;
        }
    }
    let head = ConvBn::new(vb.pp("_conv_head"), vb.pp("_bn1"), ConvSpec::new(cin, 1280, 1, 1, Padding::TfSame), EPS)?;
    stages.push(("head".into(), Box::new(ConvStage(head))));
    let fc = Linear::new(vb.pp("_fc"), 1280, num_classes)?;
    stages.push(("fc".into(), Box::new(Classifier(fc))));
    Ok(Network::new(
        &format!("efficientnet_lite{variant}"),
        (res, res),
        Normalization::LITE,
        num_classes,
        dev.clone(),
        stages,
        vec![],
    ))
}
