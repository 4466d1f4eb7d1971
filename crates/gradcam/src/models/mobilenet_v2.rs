//! MobileNetV2 as torchvision builds it (`mobilenet_v2`, width 1.0), with its tensor and module names:
//! `features.0` (`Conv2dNormActivation`: `.0` conv 3×3/2, `.1` batch-norm, `.2` `ReLU6(inplace=True)`),
//! `features.1..17` (`InvertedResidual`: `conv.0` expanding `Conv2dNormActivation` 1×1 (absent when the
//! expansion is 1), then the depthwise 3×3 one, the projecting `nn.Conv2d` and its batch-norm; the residual
//! `x + conv(x)` out of place as `features.N.add`), `features.18` (`Conv2dNormActivation` 1×1 to 1280), then
//! the functional `adaptive_avg_pool2d` and `flatten`, `classifier.1` (Linear; `classifier.0` is a dropout).
//! Containers: `features.N`, `features.N.conv`, `features.N.conv.K`, `features`, `classifier`. Batch-norm eps 1e-5.

use super::resnet::conv_bn;
use super::{Network, Normalization};
use crate::error::Result;
use crate::graph::nodes::{Act, AddAct, ConvSpec, Flatten, GlobalAvgPool, Linear, Padding};
use crate::graph::{Builder, NodeId};
use crate::ops::act::Activation::Relu6;
use crate::weights::Weights;
use candle_nn::VarBuilder;

const EPS: f64 = 1e-5;

/// (t expansion, c channels, n repeats, s stride) of the seven stages.
const SETTING: [(usize, usize, usize, usize); 7] =
    [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)];

/// torchvision's `_make_divisible(v, 8)`: the nearest multiple of 8, at least 8, not below 90% of v.
pub(crate) fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut n = (((v + d / 2.0) as usize) / divisor * divisor).max(divisor);
    if (n as f64) < 0.9 * v {
        n += divisor;
    }
    n
}

/// `Conv2dNormActivation` with ReLU6 (in place): `{name}.0`, `{name}.1`, `{name}.2`; aliased as `name`.
fn cna(b: &mut Builder, vb: &VarBuilder, name: &str, s: ConvSpec, x: NodeId) -> candle_core::Result<NodeId> {
    let h = conv_bn(b, vb, &format!("{name}.0"), &format!("{name}.1"), s, EPS, x)?;
    let h = b.add_inplace(&format!("{name}.2"), Act::module(Relu6), &[h]);
    b.alias(name, h);
    Ok(h)
}

/// One `InvertedResidual` block.
fn inverted_residual(
    b: &mut Builder,
    vb: &VarBuilder,
    name: &str,
    x: NodeId,
    (cin, cout, stride, t): (usize, usize, usize, usize),
) -> candle_core::Result<NodeId> {
    let hidden = cin * t;
    let mut h = x;
    let mut k = 0;
    let sub = |k: &mut usize| {
        let s = format!("{name}.conv.{k}");
        *k += 1;
        s
    };
    if t != 1 {
        h = cna(b, vb, &sub(&mut k), ConvSpec::new(cin, hidden, 1, 1, Padding::same(0)), h)?;
    }
    h = cna(b, vb, &sub(&mut k), ConvSpec::depthwise(hidden, 3, stride, Padding::same(1)), h)?;
    let (c, n) = (sub(&mut k), sub(&mut k));
    h = conv_bn(b, vb, &c, &n, ConvSpec::new(hidden, cout, 1, 1, Padding::same(0)), EPS, h)?;
    b.alias(&format!("{name}.conv"), h);
    if stride == 1 && cin == cout {
        h = b.add(&format!("{name}.add"), AddAct::add(), &[x, h]);
    }
    b.alias(name, h);
    Ok(h)
}

/// Build `mobilenet_v2`; the class count comes from `classifier.1.weight` (1000 for synthetic).
pub fn build(weights: &Weights) -> Result<Network> {
    let vb = weights.var_builder(&candle_core::Device::Cpu);
    let num_classes = weights.shape_of("classifier.1.weight").map_or(1000, |s| s[0]);
    let mut b = Builder::new();
    let x = b.input();
    let mut cin = make_divisible(32.0, 8);
    let last = make_divisible(1280.0, 8);
    let mut x = cna(&mut b, &vb, "features.0", ConvSpec::new(3, cin, 3, 2, Padding::same(1)), x)?;
    let mut idx = 1;
    for &(t, c, n, s) in &SETTING {
        let cout = make_divisible(c as f64, 8);
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            x = inverted_residual(&mut b, &vb, &format!("features.{idx}"), x, (cin, cout, stride, t))?;
            cin = cout;
            idx += 1;
        }
    }
    let head = format!("features.{idx}");
    x = cna(&mut b, &vb, &head, ConvSpec::new(cin, last, 1, 1, Padding::same(0)), x)?;
    b.alias("features", x);
    let p = b.add("adaptive_avg_pool2d", GlobalAvgPool, &[x]);
    let f = b.add("flatten", Flatten, &[p]);
    let fc = b.add("classifier.1", Linear::new(vb.pp("classifier.1"), last, num_classes)?, &[f]);
    b.alias("classifier", fc);
    let graph = b.finish(fc)?;
    Network::new("mobilenet_v2", (224, 224), Normalization::IMAGENET, num_classes, graph, &head)
}
