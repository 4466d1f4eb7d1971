//! ConvNeXt-Tiny/Small/Base/Large as torchvision builds them, with its module names: the stem `features.0.{0
//! (4×4 conv, stride 4, bias), 1 (LayerNorm2d)}`; stages `features.{1,3,5,7}.B` of CNBlocks
//! `block.{0 (7×7 depthwise, bias), 1 (Permute to channels-last), 2 (LayerNorm), 3 (Linear C→4C), 4 (GELU),
//! 5 (Linear 4C→C), 6 (Permute back)}`, then `layer_scale * block(x)` (a C×1×1 parameter, functional:
//! `features.S.B.mul`, a `ChannelScale`: the broadcast `Binary` product's values, faster), `stochastic_depth` (identity in eval mode: an alias of the product) and
//! `result += input` (in place: `features.S.B.add`); downsampling `features.{2,4,6}.{0 (LayerNorm2d), 1 (2×2
//! conv, stride 2, bias)}`; `avgpool`, `classifier.{0 (LayerNorm2d), 1 (Flatten), 2 (Linear)}`. Every
//! LayerNorm has eps 1e-6.

use super::{Network, Normalization};
use crate::error::{Error, Result};
use crate::graph::nodes::layer_norm::LayerNorm;
use crate::graph::nodes::linear_nd::LinearNd;
use crate::graph::nodes::permute::Permute;
use crate::graph::nodes::scale::ChannelScale;
use crate::graph::nodes::{AddAct, Conv, ConvSpec, Flatten, GlobalAvgPool, Linear, Padding, Unary, UnaryKind};
use crate::graph::{Builder, NodeId};
use crate::weights::Weights;
use candle_nn::VarBuilder;

const EPS: f64 = 1e-6;

/// (channels, blocks) of the four stages.
pub fn config(variant: &str) -> Option<[(usize, usize); 4]> {
    Some(match variant {
        "tiny" => [(96, 3), (192, 3), (384, 9), (768, 3)],
        "small" => [(96, 3), (192, 3), (384, 27), (768, 3)],
        "base" => [(128, 3), (256, 3), (512, 27), (1024, 3)],
        "large" => [(192, 3), (384, 3), (768, 27), (1536, 3)],
        _ => return None,
    })
}

/// CNBlock: `input + layer_scale · block(input)`.
fn cn_block(b: &mut Builder, vb: &VarBuilder, name: &str, x: NodeId, c: usize) -> candle_core::Result<NodeId> {
    let p = |s: &str| format!("{name}.{s}");
    let q = |i: usize| format!("{name}.block.{i}");
    let dw = ConvSpec::depthwise(c, 7, 1, Padding::same(3)).with_bias();
    let mut y = b.add(&q(0), Conv::new(vb.pp(q(0)), dw)?, &[x]);
    y = b.add(&q(1), Permute::new(&[0, 2, 3, 1]), &[y]);
    y = b.add(&q(2), LayerNorm::new(vb.pp(q(2)), c, EPS)?, &[y]);
    y = b.add(&q(3), LinearNd::new(vb.pp(q(3)), c, 4 * c)?, &[y]);
    y = b.add(&q(4), Unary(UnaryKind::Gelu), &[y]);
    y = b.add(&q(5), LinearNd::new(vb.pp(q(5)), 4 * c, c)?, &[y]);
    y = b.add(&q(6), Permute::new(&[0, 3, 1, 2]), &[y]);
    b.alias(&p("block"), y);
    let gamma = vb.pp(name).get((c, 1, 1), "layer_scale")?;
    let scaled = b.add(&p("mul"), ChannelScale::new(&gamma)?, &[y]);
    b.alias(&p("stochastic_depth"), scaled);
    let out = b.add_inplace(&p("add"), AddAct::add(), &[scaled, x]);
    b.alias(name, out);
    Ok(out)
}

/// Build `convnext_{variant}` (`tiny`, `small`, `base`, `large`); the class count comes from
/// `classifier.2.weight`.
pub fn build(variant: &str, weights: &Weights) -> Result<Network> {
    let cfg = config(variant).ok_or_else(|| Error::invalid(format!("no ConvNeXt `{variant}`")))?;
    let vb = weights.var_builder(&candle_core::Device::Cpu);
    let num_classes = weights.shape_of("classifier.2.weight").map_or(1000, |s| s[0]);
    let mut b = Builder::new();
    let x = b.input();
    let c0 = cfg[0].0;
    let stem = ConvSpec::new(3, c0, 4, 4, Padding::same(0)).with_bias();
    let s = b.add("features.0.0", Conv::new(vb.pp("features.0.0"), stem)?, &[x]);
    let mut x = b.add("features.0.1", LayerNorm::new_2d(vb.pp("features.0.1"), c0, EPS)?, &[s]);
    b.alias("features.0", x);
    let mut f = 1;
    for (i, &(c, n)) in cfg.iter().enumerate() {
        let stage = format!("features.{f}");
        for j in 0..n {
            x = cn_block(&mut b, &vb, &format!("{stage}.{j}"), x, c)?;
        }
        b.alias(&stage, x);
        f += 1;
        if let Some(&(cout, _)) = cfg.get(i + 1) {
            let d = format!("features.{f}");
            let n0 = format!("{d}.0");
            x = b.add(&n0, LayerNorm::new_2d(vb.pp(&n0), c, EPS)?, &[x]);
            let n1 = format!("{d}.1");
            let s = ConvSpec::new(c, cout, 2, 2, Padding::same(0)).with_bias();
            x = b.add(&n1, Conv::new(vb.pp(&n1), s)?, &[x]);
            b.alias(&d, x);
            f += 1;
        }
    }
    b.alias("features", x);
    let c = cfg[3].0;
    let p = b.add("avgpool", GlobalAvgPool, &[x]);
    let n = b.add("classifier.0", LayerNorm::new_2d(vb.pp("classifier.0"), c, EPS)?, &[p]);
    let fl = b.add("classifier.1", Flatten, &[n]);
    let fc = b.add("classifier.2", Linear::new(vb.pp("classifier.2"), c, num_classes)?, &[fl]);
    b.alias("classifier", fc);
    let graph = b.finish(fc)?;
    Network::new(&format!("convnext_{variant}"), (224, 224), Normalization::IMAGENET, num_classes, graph, "features.7")
}
