//! torchvision architectures with the synthetic weights against the reference (PyTorch + pytorch-grad-cam
//! 1.5.7, `scripts/golden/make_torchvision_goldens.py`, files in tests/golden/torchvision/<model>/), on the
//! chelsea photo's input tensor:
//! - every module path PyTorch's forward hooks saw (modules.json) names a node of ours with the same output
//!   shape (dropout and stochastic depth, identities in eval mode, excepted);
//! - logits: max |Δ| ≤ 1e-4 · max |logit|;
//! - raw Grad-CAM (before ReLU and scaling) ≤ 1e-3 · max |raw|, and the final Grad-CAM, Grad-CAM++ and
//!   LayerCAM maps ≤ 1e-3 (every 4th pixel of 224×224), at two layers (the default target and one inside a
//!   block) for the top-2 classes;
//! - Guided Backprop (where the reference made it) ≤ 1e-3 · max |gradient|.
mod common;
use candle_core::Device;
use common::*;
use gradcam::cam::{self, guided, Explainer, MapOptions, Score};
use gradcam::npy::Array;

/// Modules that do nothing in eval mode: gradcam makes no node for them.
const IDENTITIES: &[&str] = &["Dropout", "StochasticDepth", "Identity"];

fn sub4(v: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    let mut out = vec![];
    for p in 0..planes {
        for y in (0..h).step_by(4) {
            for x in (0..w).step_by(4) {
                out.push(v[p * h * w + y * w + x]);
            }
        }
    }
    out
}

pub fn check(model: &str) {
    let dir = golden_dir().join("torchvision").join(model);
    let idx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    let net = synthetic(model);
    let (h, w) = net.input_size;

    // names and shapes
    let modules: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("modules.json")).unwrap()).unwrap();
    let mut wrong = vec![];
    for m in modules.as_array().unwrap() {
        let (path, kind) = (m["path"].as_str().unwrap(), m["type"].as_str().unwrap());
        if m["shape"].is_null() || IDENTITIES.contains(&kind) || path.is_empty() {
            continue;
        }
        let want: Vec<usize> =
            m["shape"].as_array().unwrap()[1..].iter().map(|d| d.as_u64().unwrap() as usize).collect();
        match net.graph.find(path) {
            Some(id) if id == net.graph.output() => {}
            Some(id) => {
                let got = net.layer_shape(id).unwrap();
                if got != want {
                    wrong.push(format!("{path} ({kind}): shape {got:?}, PyTorch {want:?}"));
                }
            }
            None => wrong.push(format!("{path} ({kind}): no such node")),
        }
    }
    assert!(wrong.is_empty(), "{model}: {} module paths do not match:\n{}", wrong.len(), wrong.join("\n"));

    let input = golden_dir().join("..").join("..").join(idx["input"].as_str().unwrap());
    let x = Array::read(&input).unwrap().to_tensor(&Device::Cpu).unwrap();
    let logits = net.forward(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let want = Array::read(dir.join("logits.npy")).unwrap().data;
    let (d, m) = (max_abs_diff(&logits, &want), max_abs(&want));
    assert!(d <= 1e-4 * m, "{model}: logits differ by {d} (max |logit| {m})");

    let classes: Vec<usize> = idx["classes"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap() as usize).collect();
    let methods: Vec<&str> = idx["methods"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    let mut checked = 0;
    for layer in idx["layers"].as_array().unwrap() {
        let path = layer["path"].as_str().unwrap();
        let ex = Explainer::new(&net, &[path.to_string()]).unwrap();
        for &c in &classes {
            let cap = ex.capture(&x, &[c], Score::Logit).unwrap();
            let raw =
                cam::raw_maps(&net, &cap, cam::method("gradcam").unwrap().as_ref(), MapOptions::default()).unwrap();
            let want = Array::read(dir.join(format!("{path}.{c}.gradcam_raw.npy"))).unwrap().data;
            let d = max_abs_diff(&raw[0][0].data, &want);
            assert!(
                d <= 1e-3 * max_abs(&want),
                "{model} {path} {c}: raw Grad-CAM differs by {d} (max {})",
                max_abs(&want)
            );
            for m in &methods {
                let method = cam::method(m).unwrap();
                let got = cam::final_maps(
                    &cam::raw_maps(&net, &cap, method.as_ref(), MapOptions::default()).unwrap(),
                    (h, w),
                );
                let want = Array::read(dir.join(format!("{path}.{c}.{m}.sub4.npy"))).unwrap().data;
                let d = max_abs_diff(&sub4(&got[0].data, 1, h, w), &want);
                assert!(d <= 1e-3, "{model} {path} {c} {m}: final map differs by {d}");
                checked += 1;
            }
        }
    }
    let layers = idx["layers"].as_array().unwrap().len();
    assert_eq!(checked, layers * classes.len() * methods.len(), "{model}: maps compared");
    for &c in &classes {
        let p = dir.join(format!("gb.{c}.sub4.npy"));
        if !p.exists() {
            continue;
        }
        let want = Array::read(&p).unwrap().data;
        let gb =
            guided::guided_backprop(&net, &x, &[c], Score::Logit).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let d = max_abs_diff(&sub4(&gb, 3, h, w), &want);
        assert!(d <= 1e-3 * max_abs(&want), "{model} {c}: guided backprop differs by {d} (max {})", max_abs(&want));
    }
}

// One test per architecture family (the smallest size of each): added with each builder.

#[test]
fn densenet121_matches_the_reference() {
    check("densenet121");
}

#[test]
fn efficientnet_b0_matches_the_reference() {
    check("efficientnet_b0");
}

#[test]
fn vgg11_bn_matches_the_reference() {
    check("vgg11_bn");
}

#[test]
fn mobilenet_v2_matches_the_reference() {
    check("mobilenet_v2");
}

#[test]
fn mobilenet_v3_small_matches_the_reference() {
    check("mobilenet_v3_small");
}

#[test]
fn convnext_tiny_matches_the_reference() {
    check("convnext_tiny");
}

#[test]
fn regnet_y_400mf_matches_the_reference() {
    check("regnet_y_400mf");
}

#[test]
fn regnet_x_400mf_matches_the_reference() {
    check("regnet_x_400mf");
}
