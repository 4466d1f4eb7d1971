//! VGG-11/13/16/19, with and without batch-norm, as torchvision builds them (`vgg11` … `vgg19_bn`), with its
//! tensor and module names: `features.N` (a flat `nn.Sequential`: 3×3 convolutions with bias, padding 1,
//! [`BatchNorm2d`], `ReLU(inplace=True)`, `MaxPool2d(2, 2)`), `avgpool` (`AdaptiveAvgPool2d((7, 7))`, an
//! identity at 224×224), `flatten` (`torch.flatten`), `classifier.{0,3,6}` (Linear) with `classifier.{1,4}`
//! (`ReLU(inplace=True)`); the dropouts `classifier.{2,5}` make no node. Containers: `features` (its last
//! max-pool), `classifier`. Batch-norm eps 1e-5.

use super::{Network, Normalization};
use crate::error::{Error, Result};
use crate::graph::nodes::{Act, AdaptiveAvgPool, BatchNorm, Conv, ConvSpec, Flatten, Linear, MaxPool, Padding};
use crate::graph::Builder;
use crate::ops::act::Activation::Relu;
use crate::ops::pool::PoolConfig;
use crate::weights::Weights;

const EPS: f64 = 1e-5;

/// torchvision's `cfgs`: channel counts, 0 for a max-pool.
const A: &[usize] = &[64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0];
const B: &[usize] = &[64, 64, 0, 128, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0];
const D: &[usize] = &[64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0];
const E: &[usize] = &[64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512, 512, 0];

/// The layer configuration of VGG-`depth` (11, 13, 16, 19).
pub fn config(depth: usize) -> Option<&'static [usize]> {
    Some(match depth {
        11 => A,
        13 => B,
        16 => D,
        19 => E,
        _ => return None,
    })
}

/// The index of the last module of `features` (the last max-pool: pytorch-grad-cam's `features[-1]`).
pub fn last_feature(depth: usize, batch_norm: bool) -> Option<usize> {
    let cfg = config(depth)?;
    let per_conv = if batch_norm { 3 } else { 2 };
    Some(cfg.iter().map(|&v| if v == 0 { 1 } else { per_conv }).sum::<usize>() - 1)
}

/// Build `vgg{depth}` (`_bn` when `batch_norm`); the class count comes from `classifier.6.weight` (1000 for
/// synthetic).
pub fn build(depth: usize, batch_norm: bool, weights: &Weights) -> Result<Network> {
    let cfg = config(depth).ok_or_else(|| Error::invalid(format!("no VGG-{depth}")))?;
    let vb = weights.var_builder(&candle_core::Device::Cpu);
    let num_classes = weights.shape_of("classifier.6.weight").map_or(1000, |s| s[0]);
    let mut b = Builder::new();
    let mut x = b.input();
    let mut idx = 0;
    let mut cin = 3;
    let next = |i: &mut usize| {
        let name = format!("features.{i}");
        *i += 1;
        name
    };
    for &v in cfg {
        if v == 0 {
            let name = next(&mut idx);
            x = b.add(&name, MaxPool(PoolConfig { kernel: 2, stride: 2, pad: 0 }), &[x]);
            continue;
        }
        let name = next(&mut idx);
        let spec = ConvSpec::new(cin, v, 3, 1, Padding::same(1)).with_bias();
        x = b.add(&name, Conv::new(vb.pp(&name), spec)?, &[x]);
        if batch_norm {
            let name = next(&mut idx);
            x = b.add(&name, BatchNorm::new(vb.pp(&name), v, EPS)?, &[x]);
        }
        let name = next(&mut idx);
        x = b.add_inplace(&name, Act::module(Relu), &[x]);
        cin = v;
    }
    b.alias("features", x);
    let p = b.add("avgpool", AdaptiveAvgPool { out: (7, 7) }, &[x]);
    let mut h = b.add("flatten", Flatten, &[p]);
    let fc = |i: usize, cin: usize, cout: usize| Linear::new(vb.pp(format!("classifier.{i}")), cin, cout);
    h = b.add("classifier.0", fc(0, 512 * 7 * 7, 4096)?, &[h]);
    h = b.add_inplace("classifier.1", Act::module(Relu), &[h]);
    h = b.add("classifier.3", fc(3, 4096, 4096)?, &[h]);
    h = b.add_inplace("classifier.4", Act::module(Relu), &[h]);
    h = b.add("classifier.6", fc(6, 4096, num_classes)?, &[h]);
    b.alias("classifier", h);
    let graph = b.finish(h)?;
    let name = format!("vgg{depth}{}", if batch_norm { "_bn" } else { "" });
    Network::new(&name, (224, 224), Normalization::IMAGENET, num_classes, graph, &format!("features.{}", idx - 1))
}
