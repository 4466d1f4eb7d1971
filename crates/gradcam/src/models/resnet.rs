//! ResNet-18/34/50/101/152 as torchvision builds them, with torchvision's tensor and module names:
//! `conv1`, `bn1`, `relu`, `maxpool`, `layerL.B.{conv1,bn1,relu,conv2,…,downsample.0,downsample.1}`, the
//! residual sum `layerL.B.add` and the block's last ReLU (`relu_1` for a BasicBlock, `relu_2` for a
//! Bottleneck: torchvision calls one `relu` module two or three times), `avgpool`, `flatten`, `fc`.
//! Containers: `layerL.B` (the block's output), `layerL` (its last block's); `stem` = `relu`.

use super::{Network, Normalization};
use crate::error::{Error, Result};
use crate::graph::nodes::{Act, AddAct, BatchNorm, Conv, ConvSpec, Flatten, GlobalAvgPool, Linear, MaxPool, Padding};
use crate::graph::{Builder, NodeId};
use crate::ops::act::Activation::Relu;
use crate::ops::pool::PoolConfig;
use crate::weights::Weights;
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

/// `{name}.{conv}` then `{name}.{bn}`: the two nodes, the batch-norm's last.
pub(crate) fn conv_bn(
    b: &mut Builder,
    vb: &VarBuilder,
    conv: &str,
    bn: &str,
    s: ConvSpec,
    eps: f64,
    x: NodeId,
) -> candle_core::Result<NodeId> {
    let c = b.add(conv, Conv::new(vb.pp(conv), s)?, &[x]);
    Ok(b.add(bn, BatchNorm::new(vb.pp(bn), s.cout, eps)?, &[c]))
}

/// BasicBlock (two 3×3) or Bottleneck (1×1, 3×3 with the stride, 1×1 ×4), with an optional projection.
#[allow(clippy::too_many_arguments)]
fn block(
    b: &mut Builder,
    vb: &VarBuilder,
    name: &str,
    x: NodeId,
    cin: usize,
    planes: usize,
    stride: usize,
    bottleneck: bool,
) -> candle_core::Result<(NodeId, usize)> {
    let p = |s: &str| format!("{name}.{s}");
    let (specs, cout) = if bottleneck {
        let out = planes * 4;
        (
            vec![
                ConvSpec::new(cin, planes, 1, 1, Padding::same(0)),
                ConvSpec::new(planes, planes, 3, stride, Padding::same(1)),
                ConvSpec::new(planes, out, 1, 1, Padding::same(0)),
            ],
            out,
        )
    } else {
        (
            vec![
                ConvSpec::new(cin, planes, 3, stride, Padding::same(1)),
                ConvSpec::new(planes, planes, 3, 1, Padding::same(1)),
            ],
            planes,
        )
    };
    let mut y = x;
    let last = specs.len() - 1;
    for (i, s) in specs.into_iter().enumerate() {
        y = conv_bn(b, vb, &p(&format!("conv{}", i + 1)), &p(&format!("bn{}", i + 1)), s, EPS, y)?;
        if i < last {
            y = b.add_inplace(&p("relu"), Act::module(Relu), &[y]);
        }
    }
    let skip = if stride != 1 || cin != cout {
        let s = ConvSpec::new(cin, cout, 1, stride, Padding::same(0));
        let d = conv_bn(b, vb, &p("downsample.0"), &p("downsample.1"), s, EPS, x)?;
        b.alias(&p("downsample"), d);
        d
    } else {
        x
    };
    let sum = b.add_inplace(&p("add"), AddAct::add(), &[y, skip]);
    let out = b.add_inplace(&p("relu"), Act::module(Relu), &[sum]);
    b.alias(name, out);
    Ok((out, cout))
}

/// Build `resnet{depth}` from `weights`; the class count comes from `fc.weight` (1000 for synthetic).
pub fn build(depth: usize, weights: &Weights) -> Result<Network> {
    let cfg = config(depth).ok_or_else(|| Error::invalid(format!("no ResNet-{depth}")))?;
    let vb = weights.var_builder(&candle_core::Device::Cpu);
    let exp = if cfg.bottleneck { 4 } else { 1 };
    let num_classes = weights.shape_of("fc.weight").map_or(1000, |s| s[0]);
    let mut b = Builder::new();
    let x = b.input();
    let s = conv_bn(&mut b, &vb, "conv1", "bn1", ConvSpec::new(3, 64, 7, 2, Padding::same(3)), EPS, x)?;
    let s = b.add_inplace("relu", Act::module(Relu), &[s]);
    b.alias("stem", s);
    let mut x = b.add("maxpool", MaxPool(PoolConfig { kernel: 3, stride: 2, pad: 1 }), &[s]);
    let mut cin = 64;
    for (l, &n) in cfg.blocks.iter().enumerate() {
        let planes = 64 << l;
        for i in 0..n {
            let stride = if i == 0 && l > 0 { 2 } else { 1 };
            (x, cin) = block(&mut b, &vb, &format!("layer{}.{i}", l + 1), x, cin, planes, stride, cfg.bottleneck)?;
        }
        b.alias(&format!("layer{}", l + 1), x);
    }
    let p = b.add("avgpool", GlobalAvgPool, &[x]);
    let f = b.add("flatten", Flatten, &[p]);
    let fc = b.add("fc", Linear::new(vb.pp("fc"), 512 * exp, num_classes)?, &[f]);
    let graph = b.finish(fc)?;
    Network::new(&format!("resnet{depth}"), (224, 224), Normalization::IMAGENET, num_classes, graph, "layer4")
}
