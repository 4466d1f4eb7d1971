//! ResNet-18/34/50/101/152 as torchvision builds them, with torchvision's tensor names. Stages: `stem`
//! (conv1 → bn1 → relu), `maxpool`, `layerL.B` for every block, then the classifier (`fc`). `layerL` names the
//! output of the last block of layer L.

use super::{Network, Normalization, Stage, Tape};
use crate::error::Result;
use crate::nn::{pool_and_classify, pool_and_classify_backward, ConvBn, ConvSpec, Linear, Padding};
use crate::ops::act::{add_activation, mask_from_output, Activation::Relu, Backprop};
use crate::ops::conv::Pad;
use crate::ops::pool::{max_pool2d, max_pool2d_input_grad, PoolConfig};
use crate::ops::Grad;
use crate::weights::Weights;
use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;

const EPS: f64 = 1e-5;

#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub blocks: [usize; 4],
    pub bottleneck: bool,
}

pub fn config(depth: usize) -> Option<Config> {
    Some(match depth {
        18 => Config { blocks: [2, 2, 2, 2], bottleneck: false },
        34 => Config { blocks: [3, 4, 6, 3], bottleneck: false },
        50 => Config { blocks: [3, 4, 6, 3], bottleneck: true },
        101 => Config { blocks: [3, 4, 23, 3], bottleneck: true },
        152 => Config { blocks: [3, 8, 36, 3], bottleneck: true },
        _ => return None,
    })
}

fn conv_bn(vb: &VarBuilder, conv: &str, bn: &str, s: ConvSpec) -> candle_core::Result<ConvBn> {
    ConvBn::new(vb.pp(conv), vb.pp(bn), s, EPS)
}

fn fixed(p: usize) -> Padding {
    Padding::Fixed(Pad::same(p))
}

struct Stem(ConvBn);
impl Stage for Stem {
    fn forward(&self, x: &Tensor, bp: Backprop) -> candle_core::Result<Tensor> {
        self.0.forward_act(x, Relu, bp)
    }
    fn forward_taped(&self, x: &Tensor, tape: &mut Tape) -> candle_core::Result<Tensor> {
        self.0.forward_taped(x, Some(Relu), tape)
    }
    fn backward(&self, mut dy: Grad, tape: &mut Tape, bp: Backprop) -> candle_core::Result<Grad> {
        self.0.backward(&mut dy, Some(Relu), tape, bp)
    }
}

const POOL: PoolConfig = PoolConfig { kernel: 3, stride: 2, pad: 1 };

struct MaxPool;
impl Stage for MaxPool {
    fn forward(&self, x: &Tensor, _: Backprop) -> candle_core::Result<Tensor> {
        max_pool2d(x, POOL)
    }
    fn forward_taped(&self, x: &Tensor, tape: &mut Tape) -> candle_core::Result<Tensor> {
        tape.push(x.clone());
        max_pool2d(x, POOL)
    }
    fn backward(&self, dy: Grad, tape: &mut Tape, _: Backprop) -> candle_core::Result<Grad> {
        max_pool2d_input_grad(&dy, &tape.pop()?, POOL)
    }
}

/// BasicBlock (two 3×3) or Bottleneck (1×1, 3×3 with the stride, 1×1 ×4), with an optional projection.
struct Block {
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

impl Block {
    fn new(vb: VarBuilder, cin: usize, planes: usize, stride: usize, bottleneck: bool) -> candle_core::Result<Self> {
        let (convs, cout) = if bottleneck {
            let out = planes * 4;
            (
                vec![
                    conv_bn(&vb, "conv1", "bn1", ConvSpec::new(cin, planes, 1, 1, fixed(0)))?,
                    conv_bn(&vb, "conv2", "bn2", ConvSpec::new(planes, planes, 3, stride, fixed(1)))?,
                    conv_bn(&vb, "conv3", "bn3", ConvSpec::new(planes, out, 1, 1, fixed(0)))?,
                ],
                out,
            )
        } else {
            (
                vec![
                    conv_bn(&vb, "conv1", "bn1", ConvSpec::new(cin, planes, 3, stride, fixed(1)))?,
                    conv_bn(&vb, "conv2", "bn2", ConvSpec::new(planes, planes, 3, 1, fixed(1)))?,
                ],
                planes,
            )
        };
        let downsample = if stride != 1 || cin != cout {
            Some(conv_bn(&vb, "downsample.0", "downsample.1", ConvSpec::new(cin, cout, 1, stride, fixed(0)))?)
        } else {
            None
        };
        Ok(Block { convs, downsample })
    }
}

impl Stage for Block {
    fn forward(&self, x: &Tensor, bp: Backprop) -> candle_core::Result<Tensor> {
        let mut y = x.clone();
        let last = self.convs.len() - 1;
        for (i, c) in self.convs.iter().enumerate() {
            y = if i < last { c.forward_act(&y, Relu, bp)? } else { c.forward(&y)? };
        }
        let skip = match &self.downsample {
            Some(d) => d.forward(x)?,
            None => x.clone(),
        };
        add_activation(&y, &skip, Some(Relu), bp)
    }

    fn forward_taped(&self, x: &Tensor, tape: &mut Tape) -> candle_core::Result<Tensor> {
        let mut y = x.clone();
        let last = self.convs.len() - 1;
        for (i, c) in self.convs.iter().enumerate() {
            y = c.forward_taped(&y, (i < last).then_some(Relu), tape)?;
        }
        let skip = match &self.downsample {
            Some(d) => d.forward_taped(x, None, tape)?,
            None => x.clone(),
        };
        let out = add_activation(&y, &skip, Some(Relu), Backprop::Plain)?;
        tape.push(out.clone());
        Ok(out)
    }

    fn backward(&self, mut dy: Grad, tape: &mut Tape, bp: Backprop) -> candle_core::Result<Grad> {
        // the tape holds, top first: the output, the projection's, then the convolutions' in reverse
        mask_from_output(&mut dy, &tape.pop()?, Relu, bp)?;
        let skip = match &self.downsample {
            Some(d) => Some(d.backward(&mut dy, None, tape, bp)?),
            None => None,
        };
        let last = self.convs.len() - 1;
        let mut g = self.convs[last].backward(&mut dy, None, tape, bp)?;
        for c in self.convs[..last].iter().rev() {
            g = c.backward(&mut g, Some(Relu), tape, bp)?;
        }
        g.add_assign(skip.as_ref().unwrap_or(&dy))?;
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

/// Build `resnet{depth}` from `weights`; the class count comes from `fc.weight` (1000 for synthetic).
pub fn build(depth: usize, weights: &Weights, dev: &Device) -> Result<Network> {
    let cfg = config(depth).ok_or_else(|| crate::error::Error::invalid(format!("no ResNet-{depth}")))?;
    let vb = weights.var_builder(dev);
    let exp = if cfg.bottleneck { 4 } else { 1 };
    let num_classes = weights.shape_of("fc.weight").map_or(1000, |s| s[0]);
    let mut stages: Vec<(String, Box<dyn Stage>)> = vec![
        ("stem".into(), Box::new(Stem(conv_bn(&vb, "conv1", "bn1", ConvSpec::new(3, 64, 7, 2, fixed(3)))?))),
        ("maxpool".into(), Box::new(MaxPool)),
    ];
    let mut aliases = vec![];
    let mut cin = 64;
    for (l, &n) in cfg.blocks.iter().enumerate() {
        let planes = 64 << l;
        for b in 0..n {
            let stride = if b == 0 && l > 0 { 2 } else { 1 };
            let name = format!("layer{}.{b}", l + 1);
            let block = Block::new(vb.pp(&name), cin, planes, stride, cfg.bottleneck)?;
            stages.push((name, Box::new(block)));
            cin = planes * exp;
        }
        aliases.push((format!("layer{}", l + 1), stages.len() - 1));
    }
    let fc = Linear::new(vb.pp("fc"), 512 * exp, num_classes)?;
    stages.push(("fc".into(), Box::new(Classifier(fc))));
    Ok(Network::new(
        &format!("resnet{depth}"),
        (224, 224),
        Normalization::IMAGENET,
        num_classes,
        dev.clone(),
        stages,
        aliases,
    ))
}
