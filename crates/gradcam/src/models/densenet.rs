//! DenseNet-121/161/169/201 as torchvision builds them, with torchvision's tensor and module names:
//! `features.{conv0,norm0,relu0,pool0}`, dense blocks `features.denseblockN.denselayerM.{norm1,relu1,conv1,norm2,
//! relu2,conv2}`, transitions `features.transitionN.{norm,relu,conv,pool}`, `features.norm5`, then the forward's
//! functional `F.relu(features, inplace=True)` (`relu`, not guided, written over norm5's output),
//! `F.adaptive_avg_pool2d` (`adaptive_avg_pool2d`), `torch.flatten` (`flatten`), `classifier`.
//! Each dense layer reads `torch.cat` of the block's input and every earlier layer's output
//! (`…denselayerM.cat`, none for the first layer, which reads the block's input itself); the block's output is
//! `…denseblockN.cat`. `norm1` follows a concatenation, not a convolution: it stays a batch-norm node.
//! Containers: `features.denselayer…` (its `conv2`), `features.denseblockN` (its concatenation),
//! `features.transitionN` (its pool), `features` (norm5, as torchvision's `features` returns it).
//!
//! Cost: each dense layer's concatenation copies all the block's features so far (quadratic in the layers of a
//! block; for DenseNet-121 at 224×224 about 3× the activations of the layers themselves), as PyTorch does
//! without `memory_efficient`.

use super::resnet::conv_bn;
use super::{Network, Normalization};
use crate::error::{Error, Result};
use crate::graph::nodes::{
    Act, AvgPool, BatchNorm, Concat, Conv, ConvSpec, Flatten, GlobalAvgPool, Linear, MaxPool, Padding,
};
use crate::graph::{Builder, NodeId};
use crate::ops::act::Activation::Relu;
use crate::ops::pool::PoolConfig;
use crate::weights::Weights;
use candle_nn::VarBuilder;

const EPS: f64 = 1e-5;
const BN_SIZE: usize = 4;

#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub growth: usize,
    pub blocks: [usize; 4],
    pub init_features: usize,
}

pub fn config(depth: usize) -> Option<Config> {
    Some(match depth {
        121 => Config { growth: 32, blocks: [6, 12, 24, 16], init_features: 64 },
        161 => Config { growth: 48, blocks: [6, 12, 36, 24], init_features: 96 },
        169 => Config { growth: 32, blocks: [6, 12, 32, 32], init_features: 64 },
        201 => Config { growth: 32, blocks: [6, 12, 48, 32], init_features: 64 },
        _ => return None,
    })
}

/// `{name}` (BatchNorm) then `{relu}` (`ReLU(inplace=True)`): the relu's node.
fn bn_relu(b: &mut Builder, vb: &VarBuilder, bn: &str, relu: &str, c: usize, x: NodeId) -> candle_core::Result<NodeId> {
    let n = b.add(bn, BatchNorm::new(vb.pp(bn), c, EPS)?, &[x]);
    Ok(b.add_inplace(relu, Act::module(Relu), &[n]))
}

/// A dense block: each layer reads the concatenation of the block's input and all earlier layers' outputs.
fn dense_block(
    b: &mut Builder,
    vb: &VarBuilder,
    name: &str,
    x: NodeId,
    cin: usize,
    layers: usize,
    growth: usize,
) -> candle_core::Result<(NodeId, usize)> {
    let mut feats = vec![x];
    let mid = BN_SIZE * growth;
    for m in 1..=layers {
        let p = |s: &str| format!("{name}.denselayer{m}.{s}");
        let c = cin + (m - 1) * growth;
        let inp = if feats.len() == 1 { x } else { b.add(&p("cat"), Concat { dim: 1 }, &feats) };
        let h = bn_relu(b, vb, &p("norm1"), &p("relu1"), c, inp)?;
        let h = b.add(&p("conv1"), Conv::new(vb.pp(p("conv1")), ConvSpec::new(c, mid, 1, 1, Padding::same(0)))?, &[h]);
        let h = bn_relu(b, vb, &p("norm2"), &p("relu2"), mid, h)?;
        let h =
            b.add(&p("conv2"), Conv::new(vb.pp(p("conv2")), ConvSpec::new(mid, growth, 3, 1, Padding::same(1)))?, &[h]);
        b.alias(&format!("{name}.denselayer{m}"), h);
        feats.push(h);
    }
    let out = b.add(&format!("{name}.cat"), Concat { dim: 1 }, &feats);
    b.alias(name, out);
    Ok((out, cin + layers * growth))
}

/// Build `densenet{depth}` from `weights`; the class count comes from `classifier.weight` (1000 for synthetic).
pub fn build(depth: usize, weights: &Weights) -> Result<Network> {
    let cfg = config(depth).ok_or_else(|| Error::invalid(format!("no DenseNet-{depth}")))?;
    let vb = weights.var_builder(&candle_core::Device::Cpu);
    // torchvision's published DenseNet checkpoints predate its current module names: `denselayer1.norm.1.weight`
    // for `denselayer1.norm1.weight` (torchvision renames them in `_load_state_dict`; so does gradcam)
    let legacy = weights.shape_of("features.denseblock1.denselayer1.norm.1.weight").is_some();
    let vb = if legacy { vb.rename_f(legacy_name) } else { vb };
    let num_classes = weights.shape_of("classifier.weight").map_or(1000, |s| s[0]);
    let mut b = Builder::new();
    let x = b.input();
    let f0 = cfg.init_features;
    let stem = ConvSpec::new(3, f0, 7, 2, Padding::same(3));
    let s = conv_bn(&mut b, &vb, "features.conv0", "features.norm0", stem, EPS, x)?;
    let s = b.add_inplace("features.relu0", Act::module(Relu), &[s]);
    let mut x = b.add("features.pool0", MaxPool(PoolConfig { kernel: 3, stride: 2, pad: 1 }), &[s]);
    let mut c = f0;
    for (i, &n) in cfg.blocks.iter().enumerate() {
        (x, c) = dense_block(&mut b, &vb, &format!("features.denseblock{}", i + 1), x, c, n, cfg.growth)?;
        if i + 1 < cfg.blocks.len() {
            let p = |s: &str| format!("features.transition{}.{s}", i + 1);
            let h = bn_relu(&mut b, &vb, &p("norm"), &p("relu"), c, x)?;
            let h =
                b.add(&p("conv"), Conv::new(vb.pp(p("conv")), ConvSpec::new(c, c / 2, 1, 1, Padding::same(0)))?, &[h]);
            x = b.add(&p("pool"), AvgPool::new(2, 2), &[h]);
            b.alias(&format!("features.transition{}", i + 1), x);
            c /= 2;
        }
    }
    let n5 = b.add("features.norm5", BatchNorm::new(vb.pp("features.norm5"), c, EPS)?, &[x]);
    b.alias("features", n5);
    let r = b.add_inplace("relu", Act::functional(Relu), &[n5]);
    let p = b.add("adaptive_avg_pool2d", GlobalAvgPool, &[r]);
    let f = b.add("flatten", Flatten, &[p]);
    let fc = b.add("classifier", Linear::new(vb.pp("classifier"), c, num_classes)?, &[f]);
    let graph = b.finish(fc)?;
    Network::new(&format!("densenet{depth}"), (224, 224), Normalization::IMAGENET, num_classes, graph, "features.norm5")
}

/// The name a current DenseNet tensor has in torchvision's published checkpoints: `….denselayerN.norm1.weight` →
/// `….denselayerN.norm.1.weight` (likewise `relu`, `conv` and `2`).
fn legacy_name(name: &str) -> String {
    if let Some(i) = name.find(".denselayer") {
        let rest = &name[i + 1..];
        if let Some(dot) = rest.find('.') {
            let (layer, tail) = rest.split_at(dot);
            for m in ["norm", "relu", "conv"] {
                for k in ["1", "2"] {
                    if let Some(leaf) = tail.strip_prefix(&format!(".{m}{k}.")) {
                        return format!("{}{layer}.{m}.{k}.{leaf}", &name[..i + 1]);
                    }
                }
            }
        }
    }
    name.to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn legacy_checkpoint_names_are_torchvisions() {
        assert_eq!(
            super::legacy_name("features.denseblock2.denselayer11.norm1.running_var"),
            "features.denseblock2.denselayer11.norm.1.running_var"
        );
        assert_eq!(
            super::legacy_name("features.denseblock1.denselayer1.conv2.weight"),
            "features.denseblock1.denselayer1.conv.2.weight"
        );
        assert_eq!(super::legacy_name("features.norm5.weight"), "features.norm5.weight");
        assert_eq!(super::legacy_name("features.transition1.conv.weight"), "features.transition1.conv.weight");
    }
}
