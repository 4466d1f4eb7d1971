//! EfficientNet-B0…B7 as torchvision builds them (`efficientnet.py`), with torchvision's tensor and module
//! names: stem `features.0.{0,1,2}` (Conv2dNormActivation: conv, batch-norm, `SiLU(inplace=True)`), stages
//! `features.1`…`features.7` of MBConv blocks `features.S.J.block.K` (expansion 1×1 when the ratio is not 1,
//! depthwise k×k, squeeze-excitation `…{avgpool,fc1,activation,fc2,scale_activation}` with the product
//! `….mul`, projection 1×1 without activation), the residual `result += input` (`features.S.J.add`, in place:
//! a hook on `block` or its projection sees the sum), head `features.8.{0,1,2}`, `avgpool`, `flatten`,
//! `classifier.1` (`classifier.0` is an eval-mode dropout: no node). Stochastic depth is an identity in eval mode:
//! `features.S.J.stochastic_depth` names the projection's output where it is called.
//! Batch-norm eps 1e-5 for B0…B4, 1e-3 for B5…B7 (torchvision's `norm_layer` for those).

use super::{Network, Normalization};
use crate::error::{Error, Result};
use crate::graph::nodes::{AddAct, BatchNorm, Conv, ConvSpec, Flatten, GlobalAvgPool, Linear, Padding};
use crate::graph::nodes::{Unary, UnaryKind};
use crate::graph::{Builder, NodeId};
use crate::weights::Weights;
use candle_nn::VarBuilder;

/// (width, depth, input size, batch-norm eps) of b0..b7; the input size is the crop of torchvision's
/// IMAGENET1K_V1 weights.
pub fn params(variant: usize) -> Option<(f64, f64, usize, f64)> {
    Some(match variant {
        0 => (1.0, 1.0, 224, 1e-5),
        1 => (1.0, 1.1, 240, 1e-5),
        2 => (1.1, 1.2, 288, 1e-5),
        3 => (1.2, 1.4, 300, 1e-5),
        4 => (1.4, 1.8, 380, 1e-5),
        5 => (1.6, 2.2, 456, 1e-3),
        6 => (1.8, 2.6, 528, 1e-3),
        7 => (2.0, 3.1, 600, 1e-3),
        _ => return None,
    })
}

/// (expand ratio, kernel, stride, in, out, layers) of the seven stages, before the multipliers.
const STAGES: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
];

/// torchvision's `_make_divisible(v, 8)`.
fn make_divisible(v: f64) -> usize {
    let mut n = (((v + 4.0) as usize) / 8 * 8).max(8);
    if (n as f64) < 0.9 * v {
        n += 8;
    }
    n
}

/// A Conv2dNormActivation `name.{0,1[,2]}` (padding (k−1)/2, no bias), SiLU in place when `act`: the last node.
fn conv_norm_act(
    b: &mut Builder,
    vb: &VarBuilder,
    name: &str,
    s: ConvSpec,
    eps: f64,
    act: bool,
    x: NodeId,
) -> candle_core::Result<NodeId> {
    let (c, n) = (format!("{name}.0"), format!("{name}.1"));
    let h = b.add(&c, Conv::new(vb.pp(&c), s)?, &[x]);
    let mut h = b.add(&n, BatchNorm::new(vb.pp(&n), s.cout, eps)?, &[h]);
    if act {
        h = b.add_inplace(&format!("{name}.2"), Unary(UnaryKind::Silu), &[h]);
    }
    b.alias(name, h);
    Ok(h)
}

/// One MBConv block `name` (`features.S.J`).
#[allow(clippy::too_many_arguments)]
fn mbconv(
    b: &mut Builder,
    vb: &VarBuilder,
    name: &str,
    x: NodeId,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    expand: usize,
    eps: f64,
) -> candle_core::Result<NodeId> {
    let blk = |i: usize| format!("{name}.block.{i}");
    let mid = make_divisible((cin * expand) as f64);
    let mut h = x;
    let mut i = 0;
    if mid != cin {
        h = conv_norm_act(b, vb, &blk(i), ConvSpec::new(cin, mid, 1, 1, Padding::same(0)), eps, true, h)?;
        i += 1;
    }
    h = conv_norm_act(b, vb, &blk(i), ConvSpec::depthwise(mid, k, stride, Padding::same((k - 1) / 2)), eps, true, h)?;
    let silu = (Unary(UnaryKind::Silu), true);
    h = super::squeeze_excitation(b, vb, &blk(i + 1), mid, (cin / 4).max(1), h, silu, UnaryKind::Sigmoid)?;
    h = conv_norm_act(b, vb, &blk(i + 2), ConvSpec::new(mid, cout, 1, 1, Padding::same(0)), eps, false, h)?;
    b.alias(&format!("{name}.block"), h);
    if stride == 1 && cin == cout {
        b.alias(&format!("{name}.stochastic_depth"), h);
        h = b.add_inplace(&format!("{name}.add"), AddAct::add(), &[h, x]);
    }
    b.alias(name, h);
    Ok(h)
}

/// Build `efficientnet_b{variant}`; the class count comes from `classifier.1.weight` (1000 for synthetic).
pub fn build(variant: usize, weights: &Weights) -> Result<Network> {
    let (width, depth, res, eps) =
        params(variant).ok_or_else(|| Error::invalid(format!("no EfficientNet-B{variant}")))?;
    let vb = weights.var_builder(&candle_core::Device::Cpu);
    let num_classes = weights.shape_of("classifier.1.weight").map_or(1000, |s| s[0]);
    let ch = |c: usize| make_divisible(c as f64 * width);
    let mut b = Builder::new();
    let x = b.input();
    let stem = ConvSpec::new(3, ch(STAGES[0].3), 3, 2, Padding::same(1));
    let mut x = conv_norm_act(&mut b, &vb, "features.0", stem, eps, true, x)?;
    let mut cin = ch(STAGES[0].3);
    for (s, &(e, k, stride, _, o, n)) in STAGES.iter().enumerate() {
        let cout = ch(o);
        let layers = (n as f64 * depth).ceil() as usize;
        for j in 0..layers {
            let st = if j == 0 { stride } else { 1 };
            x = mbconv(&mut b, &vb, &format!("features.{}.{j}", s + 1), x, cin, cout, k, st, e, eps)?;
            cin = cout;
        }
        b.alias(&format!("features.{}", s + 1), x);
    }
    let last = 4 * cin;
    let h = conv_norm_act(&mut b, &vb, "features.8", ConvSpec::new(cin, last, 1, 1, Padding::same(0)), eps, true, x)?;
    b.alias("features", h);
    let p = b.add("avgpool", GlobalAvgPool, &[h]);
    let f = b.add("flatten", Flatten, &[p]);
    b.alias("classifier.0", f);
    let fc = b.add("classifier.1", Linear::new(vb.pp("classifier.1"), last, num_classes)?, &[f]);
    b.alias("classifier", fc);
    let graph = b.finish(fc)?;
    Network::new(
        &format!("efficientnet_b{variant}"),
        (res, res),
        Normalization::IMAGENET,
        num_classes,
        graph,
        "features.8",
    )
}
