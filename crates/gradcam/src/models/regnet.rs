//! RegNetY and RegNetX (400MF … 32GF) as torchvision builds them: the stage widths, depths and group widths
//! from torchvision's `BlockParams.from_init_params` (ported below, in f32 as torch computes it, with the
//! group-width / bottleneck compatibility rounding), and its module names: `stem.{0,1,2}`,
//! `trunk_output.blockS.blockS-I.{proj.{0,1}, f.a.{0,1,2}, f.b.{0,1,2} (grouped 3×3), f.se.{avgpool, fc1,
//! activation, fc2, scale_activation} (RegNetY), f.c.{0,1}, activation}`, `avgpool`, `flatten`, `fc`.
//! The block is `activation(proj(x) + f(x))`: an out-of-place sum (`blockS-I.add`), then an in-place ReLU.

use super::{Network, Normalization};
use crate::error::{Error, Result};
use crate::graph::nodes::{Act, AddAct, ConvSpec, Flatten, GlobalAvgPool, Linear, Padding, UnaryKind};
use crate::graph::{Builder, NodeId};
use crate::models::resnet::conv_bn;
use crate::ops::act::Activation::Relu;
use crate::weights::Weights;
use candle_nn::VarBuilder;

const EPS: f64 = 1e-5;

/// torchvision's `from_init_params` arguments of a model.
#[derive(Clone, Copy, Debug)]
pub struct InitParams {
    pub depth: usize,
    pub w_0: usize,
    pub w_a: f64,
    pub w_m: f64,
    pub group_width: usize,
    pub se_ratio: Option<f64>,
}

/// Per-stage settings (torchvision's `BlockParams`; bottleneck multiplier 1, stride 2 for every stage).
#[derive(Clone, Debug, PartialEq)]
pub struct BlockParams {
    pub depths: Vec<usize>,
    pub widths: Vec<usize>,
    pub group_widths: Vec<usize>,
    pub se_ratio: Option<f64>,
}

/// The parameters of `regnet_{variant}` (`y_400mf`, `x_32gf`, …).
pub fn init_params(variant: &str) -> Option<InitParams> {
    let (depth, w_0, w_a, w_m, group_width, se) = match variant {
        "y_400mf" => (16, 48, 27.89, 2.09, 8, true),
        "y_800mf" => (14, 56, 38.84, 2.4, 16, true),
        "y_1_6gf" => (27, 48, 20.71, 2.65, 24, true),
        "y_3_2gf" => (21, 80, 42.63, 2.66, 24, true),
        "y_8gf" => (17, 192, 76.82, 2.19, 56, true),
        "y_16gf" => (18, 200, 106.23, 2.48, 112, true),
        "y_32gf" => (20, 232, 115.89, 2.53, 232, true),
        "y_128gf" => (27, 456, 160.83, 2.52, 264, true),
        "x_400mf" => (22, 24, 24.48, 2.54, 16, false),
        "x_800mf" => (16, 56, 35.73, 2.28, 16, false),
        "x_1_6gf" => (18, 80, 34.01, 2.25, 24, false),
        "x_3_2gf" => (25, 88, 26.31, 2.25, 48, false),
        "x_8gf" => (23, 80, 49.56, 2.88, 120, false),
        "x_16gf" => (22, 216, 55.59, 2.1, 128, false),
        "x_32gf" => (23, 320, 69.86, 2.0, 168, false),
        _ => return None,
    };
    Some(InitParams { depth, w_0, w_a, w_m, group_width, se_ratio: se.then_some(0.25) })
}

/// torchvision's `_make_divisible(v, divisor)` (min_value = divisor).
fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut new_v = (((v + d / 2.0) as i64 / divisor as i64) * divisor as i64).max(divisor as i64) as usize;
    if (new_v as f64) < 0.9 * v {
        new_v += divisor;
    }
    new_v
}

/// `BlockParams.from_init_params`: block widths w_0 + i·w_a quantised in log space with base w_m (float32
/// tensors in torch, so f32 here, rounding half to even), grouped into stages of equal width, then each
/// stage's bottleneck width made a multiple of its group width (`_adjust_widths_groups_compatibilty`).
pub fn block_params(p: InitParams) -> Result<BlockParams> {
    const QUANT: f32 = 8.0;
    if p.w_a < 0.0 || p.w_0 == 0 || p.w_m <= 1.0 || !p.w_0.is_multiple_of(8) {
        return Err(Error::invalid("invalid RegNet settings"));
    }
    let (w_0, w_a, w_m) = (p.w_0 as f32, p.w_a as f32, p.w_m as f32);
    let log_w_m = p.w_m.ln() as f32;
    let block_widths: Vec<usize> = (0..p.depth)
        .map(|i| {
            let cont = i as f32 * w_a + w_0;
            let cap = ((cont / w_0).ln() / log_w_m).round_ties_even();
            ((w_0 * w_m.powf(cap) / QUANT).round_ties_even() * QUANT) as usize
        })
        .collect();
    // a new stage wherever the width changes
    let (mut widths, mut depths) = (Vec::new(), Vec::<usize>::new());
    for w in &block_widths {
        if widths.last() == Some(w) {
            *depths.last_mut().unwrap() += 1;
        } else {
            widths.push(*w);
            depths.push(1);
        }
    }
    // compatibility of the stage widths with the group widths (bottleneck multiplier 1)
    let group_widths: Vec<usize> = widths.iter().map(|w| p.group_width.min(*w)).collect();
    let widths = widths.iter().zip(&group_widths).map(|(w, g)| make_divisible(*w as f64, *g)).collect();
    Ok(BlockParams { depths, widths, group_widths, se_ratio: p.se_ratio })
}

/// `{name}.0` conv, `{name}.1` batch-norm, and `{name}.2` in-place ReLU if `relu`; `{name}` is the last.
fn conv_bn_act(
    b: &mut Builder,
    vb: &VarBuilder,
    name: &str,
    s: ConvSpec,
    relu: bool,
    x: NodeId,
) -> candle_core::Result<NodeId> {
    let mut y = conv_bn(b, vb, &format!("{name}.0"), &format!("{name}.1"), s, EPS, x)?;
    if relu {
        y = b.add_inplace(&format!("{name}.2"), Act::module(Relu), &[y]);
    }
    b.alias(name, y);
    Ok(y)
}

/// ResBottleneckBlock: `activation(proj(x) + f(x))`, f = 1×1, grouped 3×3 with the stride, [SE], 1×1.
#[allow(clippy::too_many_arguments)]
fn block(
    b: &mut Builder,
    vb: &VarBuilder,
    name: &str,
    x: NodeId,
    cin: usize,
    cout: usize,
    stride: usize,
    group_width: usize,
    se_ratio: Option<f64>,
) -> candle_core::Result<NodeId> {
    let p = |s: &str| format!("{name}.{s}");
    let skip = if cin != cout || stride != 1 {
        conv_bn_act(b, vb, &p("proj"), ConvSpec::new(cin, cout, 1, stride, Padding::same(0)), false, x)?
    } else {
        x
    };
    // bottleneck multiplier 1: w_b = cout
    let w_b = cout;
    let g = w_b / group_width;
    let mut f = conv_bn_act(b, vb, &p("f.a"), ConvSpec::new(cin, w_b, 1, 1, Padding::same(0)), true, x)?;
    let s = ConvSpec::new(w_b, w_b, 3, stride, Padding::same(1)).groups(g);
    f = conv_bn_act(b, vb, &p("f.b"), s, true, f)?;
    if let Some(r) = se_ratio {
        let sq = (r * cin as f64).round_ties_even() as usize;
        let relu = (Act::module(Relu), false);
        f = super::squeeze_excitation(b, vb, &p("f.se"), w_b, sq, f, relu, UnaryKind::Sigmoid)?;
    }
    f = conv_bn_act(b, vb, &p("f.c"), ConvSpec::new(w_b, cout, 1, 1, Padding::same(0)), false, f)?;
    b.alias(&p("f"), f);
    let sum = b.add(&p("add"), AddAct::add(), &[skip, f]);
    let out = b.add_inplace(&p("activation"), Act::module(Relu), &[sum]);
    b.alias(name, out);
    Ok(out)
}

/// Build `regnet_{variant}` (`y_400mf`, …) from `weights`; the class count comes from `fc.weight`.
pub fn build(variant: &str, weights: &Weights) -> Result<Network> {
    let ip = init_params(variant).ok_or_else(|| Error::invalid(format!("no RegNet `{variant}`")))?;
    let bp = block_params(ip)?;
    let vb = weights.var_builder(&candle_core::Device::Cpu);
    let num_classes = weights.shape_of("fc.weight").map_or(1000, |s| s[0]);
    let mut b = Builder::new();
    let x = b.input();
    let stem = 32;
    let mut x = conv_bn_act(&mut b, &vb, "stem", ConvSpec::new(3, stem, 3, 2, Padding::same(1)), true, x)?;
    let mut cin = stem;
    for (s, ((&w, &d), &g)) in bp.widths.iter().zip(&bp.depths).zip(&bp.group_widths).enumerate() {
        let stage = format!("trunk_output.block{}", s + 1);
        for i in 0..d {
            let name = format!("{stage}.block{}-{i}", s + 1);
            let stride = if i == 0 { 2 } else { 1 };
            x = block(&mut b, &vb, &name, x, cin, w, stride, g, bp.se_ratio)?;
            cin = w;
        }
        b.alias(&stage, x);
    }
    b.alias("trunk_output", x);
    let p = b.add("avgpool", GlobalAvgPool, &[x]);
    let f = b.add("flatten", Flatten, &[p]);
    let fc = b.add("fc", Linear::new(vb.pp("fc"), cin, num_classes)?, &[f]);
    let graph = b.finish(fc)?;
    Network::new(&format!("regnet_{variant}"), (224, 224), Normalization::IMAGENET, num_classes, graph, "trunk_output")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_params_are_torchvisions() {
        // torchvision 0.29's BlockParams.from_init_params for each model: depths, widths, group widths
        type Stages = (&'static str, [usize; 4], [usize; 4], [usize; 4]);
        let want: &[Stages] = &[
            ("y_400mf", [1, 3, 6, 6], [48, 104, 208, 440], [8, 8, 8, 8]),
            ("y_800mf", [1, 3, 8, 2], [64, 144, 320, 784], [16, 16, 16, 16]),
            ("y_1_6gf", [2, 6, 17, 2], [48, 120, 336, 888], [24, 24, 24, 24]),
            ("y_3_2gf", [2, 5, 13, 1], [72, 216, 576, 1512], [24, 24, 24, 24]),
            ("y_8gf", [2, 4, 10, 1], [224, 448, 896, 2016], [56, 56, 56, 56]),
            ("y_16gf", [2, 4, 11, 1], [224, 448, 1232, 3024], [112, 112, 112, 112]),
            ("y_32gf", [2, 5, 12, 1], [232, 696, 1392, 3712], [232, 232, 232, 232]),
            ("y_128gf", [2, 7, 17, 1], [528, 1056, 2904, 7392], [264, 264, 264, 264]),
            ("x_400mf", [1, 2, 7, 12], [32, 64, 160, 400], [16, 16, 16, 16]),
            ("x_800mf", [1, 3, 7, 5], [64, 128, 288, 672], [16, 16, 16, 16]),
            ("x_1_6gf", [2, 4, 10, 2], [72, 168, 408, 912], [24, 24, 24, 24]),
            ("x_3_2gf", [2, 6, 15, 2], [96, 192, 432, 1008], [48, 48, 48, 48]),
            ("x_8gf", [2, 5, 15, 1], [80, 240, 720, 1920], [80, 120, 120, 120]),
            ("x_16gf", [2, 6, 13, 1], [256, 512, 896, 2048], [128, 128, 128, 128]),
            ("x_32gf", [2, 7, 13, 1], [336, 672, 1344, 2520], [168, 168, 168, 168]),
        ];
        for (v, d, w, g) in want {
            let bp = block_params(init_params(v).unwrap()).unwrap();
            assert_eq!((&bp.depths[..], &bp.widths[..], &bp.group_widths[..]), (&d[..], &w[..], &g[..]), "{v}");
        }
    }
}
