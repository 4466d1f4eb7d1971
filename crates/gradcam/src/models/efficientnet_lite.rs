//! EfficientNet-Lite0…4 as the PyPI package `efficientnet-lite-pytorch==0.1.0` builds them: ReLU6, no
//! squeeze-excitation, stem (32) and head (1280) not scaled, first and last stage repeats not scaled,
//! batch-norm eps 1e-3, TensorFlow SAME padding. Tensor and module names as its checkpoints and modules:
//! `_conv_stem`, `_bn0`, `_swish`, `_blocks.N.{_expand_conv,_bn0,_swish,_depthwise_conv,_bn1,_swish_1,
//! _project_conv,_bn2,add}`, `_conv_head`, `_bn1`, `_swish_1`, `_avg_pooling`, `flatten`, `_fc`.
//! Short names kept from gradcam's first versions: `stem`, `blocks.N`, `head`.

use super::resnet::conv_bn;
use super::{Network, Normalization};
use crate::error::{Error, Result};
use crate::graph::nodes::{Act, AddAct, ConvSpec, Flatten, GlobalAvgPool, Linear, Padding};
use crate::graph::{Builder, NodeId};
use crate::ops::act::Activation::Relu6;
use crate::weights::Weights;
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

/// One MBConv block (no squeeze-excitation in the Lite variants).
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
) -> candle_core::Result<NodeId> {
    let p = |s: &str| format!("{name}.{s}");
    let mid = cin * expand;
    let same = Padding::TfSame;
    let mut h = x;
    if expand != 1 {
        h = conv_bn(b, vb, &p("_expand_conv"), &p("_bn0"), ConvSpec::new(cin, mid, 1, 1, same), EPS, h)?;
        h = b.add(&p("_swish"), Act::module(Relu6), &[h]);
    }
    let dw = ConvSpec::depthwise(mid, k, stride, same);
    h = conv_bn(b, vb, &p("_depthwise_conv"), &p("_bn1"), dw, EPS, h)?;
    h = b.add(&p("_swish"), Act::module(Relu6), &[h]);
    h = conv_bn(b, vb, &p("_project_conv"), &p("_bn2"), ConvSpec::new(mid, cout, 1, 1, same), EPS, h)?;
    if stride == 1 && cin == cout {
        h = b.add(&p("add"), AddAct::add(), &[h, x]);
    }
    Ok(h)
}

/// Build `efficientnet_lite{variant}`; the class count comes from `_fc.weight` (1000 for synthetic).
pub fn build(variant: usize, weights: &Weights) -> Result<Network> {
    let (width, depth, res) =
        params(variant).ok_or_else(|| Error::invalid(format!("no EfficientNet-Lite{variant}")))?;
    let vb = weights.var_builder(&candle_core::Device::Cpu);
    let num_classes = weights.shape_of("_fc.weight").map_or(1000, |s| s[0]);
    let mut b = Builder::new();
    let x = b.input();
    let stem = ConvSpec::new(3, 32, 3, 2, Padding::TfSame);
    let s = conv_bn(&mut b, &vb, "_conv_stem", "_bn0", stem, EPS, x)?;
    let mut x = b.add("_swish", Act::module(Relu6), &[s]);
    b.alias("stem", x);
    let mut idx = 0;
    let mut cin = 32;
    for (i, &(r, k, s, e, _i, o)) in BLOCKS.iter().enumerate() {
        let cout = round_filters(o, width);
        let fixed = i == 0 || i == BLOCKS.len() - 1;
        let repeats = if fixed { r } else { (depth * r as f64).ceil() as usize };
        for j in 0..repeats {
            let stride = if j == 0 { s } else { 1 };
            let name = format!("_blocks.{idx}");
            x = mbconv(&mut b, &vb, &name, x, cin, cout, k, stride, e)?;
            b.alias(&name, x);
            b.alias(&format!("blocks.{idx}"), x);
            cin = cout;
            idx += 1;
        }
    }
    let head = ConvSpec::new(cin, 1280, 1, 1, Padding::TfSame);
    let h = conv_bn(&mut b, &vb, "_conv_head", "_bn1", head, EPS, x)?;
    let h = b.add("_swish", Act::module(Relu6), &[h]);
    b.alias("head", h);
    let p = b.add("_avg_pooling", GlobalAvgPool, &[h]);
    let f = b.add("flatten", Flatten, &[p]);
    let fc = b.add("_fc", Linear::new(vb.pp("_fc"), 1280, num_classes)?, &[f]);
    let graph = b.finish(fc)?;
    Network::new(&format!("efficientnet_lite{variant}"), (res, res), Normalization::LITE, num_classes, graph, "head")
}
