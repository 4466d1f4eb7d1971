//! MobileNetV3-Small and -Large as torchvision builds them (`mobilenet_v3_small`, `mobilenet_v3_large`, width
//! 1.0), with its tensor and module names: `features.0` (`Conv2dNormActivation`: `.0` conv 3×3/2, `.1`
//! batch-norm, `.2` `Hardswish(inplace=True)`), `features.1..` (`InvertedResidual`: `block.K` = the expanding
//! `Conv2dNormActivation` 1×1 (absent when the expansion is 1), the depthwise one, the `SqueezeExcitation`
//! where the configuration has one (`avgpool`, `fc1` conv with bias, `activation` ReLU, `fc2`,
//! `scale_activation` Hardsigmoid, then `scale * input` as `block.K.mul`), the projecting one without
//! activation; the residual `result += input` in place as `features.N.add`), the last `Conv2dNormActivation`
//! 1×1 (6× channels, Hardswish), `avgpool`, `flatten`, `classifier.0` (Linear), `classifier.1`
//! (`Hardswish(inplace=True)`), `classifier.3` (Linear; `classifier.2` is a dropout). Activations of the
//! `Conv2dNormActivation`s are in place (ReLU or Hardswish per block), the squeeze-excitation's are not.
//! Containers: `features.N`, `features.N.block`, `features.N.block.K`, `features`, `classifier`.
//! Batch-norm eps 1e-3.

use super::mobilenet_v2::make_divisible;
use super::resnet::conv_bn;
use super::{Network, Normalization};
use crate::error::{Error, Result};
use crate::graph::nodes::{Act, AddAct, ConvSpec, Flatten, GlobalAvgPool, Linear, Padding, Unary, UnaryKind};
use crate::graph::{Builder, NodeId};
use crate::ops::act::Activation::Relu;
use crate::weights::Weights;
use candle_nn::VarBuilder;

const EPS: f64 = 1e-3;

/// One bottleneck: (in, kernel, expanded, out, squeeze-excitation, Hardswish (else ReLU), stride).
type Bneck = (usize, usize, usize, usize, bool, bool, usize);

const LARGE: [Bneck; 15] = [
    (16, 3, 16, 16, false, false, 1),
    (16, 3, 64, 24, false, false, 2),
    (24, 3, 72, 24, false, false, 1),
    (24, 5, 72, 40, true, false, 2),
    (40, 5, 120, 40, true, false, 1),
    (40, 5, 120, 40, true, false, 1),
    (40, 3, 240, 80, false, true, 2),
    (80, 3, 200, 80, false, true, 1),
    (80, 3, 184, 80, false, true, 1),
    (80, 3, 184, 80, false, true, 1),
    (80, 3, 480, 112, true, true, 1),
    (112, 3, 672, 112, true, true, 1),
    (112, 5, 672, 160, true, true, 2),
    (160, 5, 960, 160, true, true, 1),
    (160, 5, 960, 160, true, true, 1),
];

const SMALL: [Bneck; 11] = [
    (16, 3, 16, 16, true, false, 2),
    (16, 3, 72, 24, false, false, 2),
    (24, 3, 88, 24, false, false, 1),
    (24, 5, 96, 40, true, true, 2),
    (40, 5, 240, 40, true, true, 1),
    (40, 5, 240, 40, true, true, 1),
    (40, 5, 120, 48, true, true, 1),
    (48, 5, 144, 48, true, true, 1),
    (48, 5, 288, 96, true, true, 2),
    (96, 5, 576, 96, true, true, 1),
    (96, 5, 576, 96, true, true, 1),
];

/// The bottlenecks and the classifier's hidden width of `mobilenet_v3_{variant}` ("small" or "large").
pub fn config(variant: &str) -> Option<(&'static [Bneck], usize)> {
    match variant {
        "small" => Some((&SMALL, 1024)),
        "large" => Some((&LARGE, 1280)),
        _ => None,
    }
}

/// `Conv2dNormActivation`: `{name}.0`, `{name}.1` and, with an activation, `{name}.2` (in place); aliased as
/// `name`. `hs`: Hardswish, else ReLU.
fn cna(
    b: &mut Builder,
    vb: &VarBuilder,
    name: &str,
    s: ConvSpec,
    act: Option<bool>,
    x: NodeId,
) -> candle_core::Result<NodeId> {
    let mut h = conv_bn(b, vb, &format!("{name}.0"), &format!("{name}.1"), s, EPS, x)?;
    match act {
        Some(true) => h = b.add_inplace(&format!("{name}.2"), Unary(UnaryKind::Hardswish), &[h]),
        Some(false) => h = b.add_inplace(&format!("{name}.2"), Act::module(Relu), &[h]),
        None => {}
    }
    b.alias(name, h);
    Ok(h)
}

/// One `InvertedResidual` block.
fn inverted_residual(
    b: &mut Builder,
    vb: &VarBuilder,
    name: &str,
    x: NodeId,
    (cin, k, exp, cout, se, hs, stride): Bneck,
) -> candle_core::Result<NodeId> {
    let mut h = x;
    let mut i = 0;
    let sub = |i: &mut usize| {
        let s = format!("{name}.block.{i}");
        *i += 1;
        s
    };
    if exp != cin {
        h = cna(b, vb, &sub(&mut i), ConvSpec::new(cin, exp, 1, 1, Padding::same(0)), Some(hs), h)?;
    }
    let dw = ConvSpec::depthwise(exp, k, stride, Padding::same((k - 1) / 2));
    h = cna(b, vb, &sub(&mut i), dw, Some(hs), h)?;
    if se {
        let (name, sq) = (sub(&mut i), make_divisible((exp / 4) as f64, 8));
        h = super::squeeze_excitation(b, vb, &name, exp, sq, h, (Act::module(Relu), false), UnaryKind::Hardsigmoid)?;
    }
    h = cna(b, vb, &sub(&mut i), ConvSpec::new(exp, cout, 1, 1, Padding::same(0)), None, h)?;
    b.alias(&format!("{name}.block"), h);
    if stride == 1 && cin == cout {
        h = b.add_inplace(&format!("{name}.add"), AddAct::add(), &[h, x]);
    }
    b.alias(name, h);
    Ok(h)
}

/// Build `mobilenet_v3_{variant}` ("small" or "large"); the class count comes from `classifier.3.weight`
/// (1000 for synthetic).
pub fn build(variant: &str, weights: &Weights) -> Result<Network> {
    let (cfg, hidden) = config(variant).ok_or_else(|| Error::invalid(format!("no MobileNetV3-{variant}")))?;
    let vb = weights.var_builder(&candle_core::Device::Cpu);
    let num_classes = weights.shape_of("classifier.3.weight").map_or(1000, |s| s[0]);
    let mut b = Builder::new();
    let x = b.input();
    let stem = cfg[0].0;
    let mut x = cna(&mut b, &vb, "features.0", ConvSpec::new(3, stem, 3, 2, Padding::same(1)), Some(true), x)?;
    for (i, &bn) in cfg.iter().enumerate() {
        x = inverted_residual(&mut b, &vb, &format!("features.{}", i + 1), x, bn)?;
    }
    let cin = cfg[cfg.len() - 1].3;
    let last = 6 * cin;
    let head = format!("features.{}", cfg.len() + 1);
    x = cna(&mut b, &vb, &head, ConvSpec::new(cin, last, 1, 1, Padding::same(0)), Some(true), x)?;
    b.alias("features", x);
    let p = b.add("avgpool", GlobalAvgPool, &[x]);
    let f = b.add("flatten", Flatten, &[p]);
    let h = b.add("classifier.0", Linear::new(vb.pp("classifier.0"), last, hidden)?, &[f]);
    let h = b.add_inplace("classifier.1", Unary(UnaryKind::Hardswish), &[h]);
    let fc = b.add("classifier.3", Linear::new(vb.pp("classifier.3"), hidden, num_classes)?, &[h]);
    b.alias("classifier", fc);
    let graph = b.finish(fc)?;
    Network::new(&format!("mobilenet_v3_{variant}"), (224, 224), Normalization::IMAGENET, num_classes, graph, &head)
}
