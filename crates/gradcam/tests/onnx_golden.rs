//! ONNX import against the reference: small torchvision architectures with the synthetic weights, exported by
//! PyTorch's TorchScript and dynamo exporters (`scripts/golden/make_onnx_goldens.py`, files in
//! tests/golden/onnx/<model>_<ts|dynamo>/), and pytorch-grad-cam 1.5.7 run on the PyTorch model:
//! - logits: max |Δ| ≤ 1e-4 · max |logit|;
//! - Grad-CAM, Grad-CAM++ and LayerCAM final maps ≤ 1e-3 (max |Δ| over all pixels, maps in [0, 1]) at two module
//!   paths per model (the default target and one inside a block) for the top-2 classes, with the reference's
//!   `reshape_transform` for the transformers (ViT tokens, Swin channels-last);
//! - the default layer is the one pytorch-grad-cam's documentation suggests (index.json's `default_layer`).
//!
//! `GRADCAM_ONNX_GOLDEN=DIR` checks every case directory under DIR instead (full-size exports made by
//! `scripts/onnx/export_model.py --golden`, outside the suite): `cargo test --release --test onnx_golden --
//! --ignored external`.
mod common;
use candle_core::Device;
use common::*;
use gradcam::cam::{self, Explainer, MapOptions, Score};
use gradcam::npy::Array;
use std::path::Path;

fn check_case(dir: &Path) {
    let case = dir.file_name().unwrap().to_string_lossy().to_string();
    let idx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    let file = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "onnx"))
        .unwrap_or_else(|| panic!("{case}: no .onnx file"));
    let mut net = gradcam::onnx::load(&file, &Default::default()).unwrap_or_else(|e| panic!("{case}: {e}"));
    let size: Vec<usize> = idx["input_size"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    assert_eq!(net.input_size, (size[0], size[1]), "{case}: input size");
    let n = |k: &str| -> [f32; 3] {
        let v: Vec<f32> = idx[k].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        [v[0], v[1], v[2]]
    };
    net.normalization = gradcam::models::Normalization { mean: n("mean"), std: n("std") };
    if let Some(d) = idx["default_layer"].as_str() {
        assert_eq!(net.default_layer(), d, "{case}: default layer");
    }
    let root = dir.parent().unwrap();
    let x = Array::read(root.join(idx["input"].as_str().unwrap())).unwrap().to_tensor(&Device::Cpu).unwrap();
    let logits = net.forward(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let want = Array::read(dir.join("logits.npy")).unwrap().data;
    let (d, m) = (max_abs_diff(&logits, &want), max_abs(&want));
    assert!(d <= 1e-4 * m, "{case}: logits differ by {d} (max |logit| {m})");
    // a batch of two gives each image the same logits as alone (the graph runs image by image)
    let x2 = candle_core::Tensor::cat(&[&x, &x], 0).unwrap();
    let l2 = net.forward(&x2).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(&l2[..logits.len()], &logits[..], "{case}: batch of two, first image");
    assert_eq!(&l2[logits.len()..], &logits[..], "{case}: batch of two, second image");

    let classes: Vec<usize> = idx["classes"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap() as usize).collect();
    let methods: Vec<String> =
        idx["methods"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_string()).collect();
    let (h, w) = net.input_size;
    let mut checked = 0;
    for layer in idx["layers"].as_array().unwrap() {
        let path = layer["path"].as_str().unwrap();
        let ex = Explainer::new(&net, &[path.to_string()]).unwrap_or_else(|e| panic!("{case} {path}: {e}"));
        // both classes in one batch, as the CLI runs them
        let xs = candle_core::Tensor::cat(&vec![&x; classes.len()], 0).unwrap();
        let cap = ex.capture(&xs, &classes, Score::Logit).unwrap();
        for m in &methods {
            let method = cam::method(m).unwrap();
            let got =
                cam::final_maps(&cam::raw_maps(&net, &cap, method.as_ref(), MapOptions::default()).unwrap(), (h, w));
            for (i, c) in classes.iter().enumerate() {
                let want = Array::read(dir.join(format!("{path}.{c}.{m}.npy"))).unwrap().data;
                let d = max_abs_diff(&got[i].data, &want);
                assert!(d <= 1e-3, "{case} {path} class {c} {m}: final map differs by {d}");
                checked += 1;
            }
        }
    }
    let layers = idx["layers"].as_array().unwrap().len();
    assert!(layers >= 1, "{case}: no layers");
    assert_eq!(checked, layers * classes.len() * methods.len(), "{case}: maps compared");
}

fn cases(root: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> =
        std::fs::read_dir(root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.join("index.json").exists()).collect();
    v.sort();
    v
}

fn check_model(model: &str) {
    let root = golden_dir().join("onnx");
    let mine: Vec<_> = cases(&root)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().rsplit_once('_').is_some_and(|(m, _)| m == model))
        .collect();
    assert_eq!(mine.len(), 2, "{model}: expected a TorchScript and a dynamo export, found {mine:?}");
    for d in mine {
        check_case(&d);
    }
}

macro_rules! models {
    ($($name:ident),*) => {$(
        #[test]
        fn $name() {
            check_model(stringify!($name));
        }
    )*};
}

models!(resnet, mobilenet_v3, densenet, shufflenet, squeezenet, googlenet, efficientnet, convnext, regnet, vit, swin);

#[test]
#[ignore = "full-size exports outside the suite: set GRADCAM_ONNX_GOLDEN to a folder of case directories"]
fn external() {
    let root = std::env::var("GRADCAM_ONNX_GOLDEN").expect("GRADCAM_ONNX_GOLDEN");
    let all = cases(Path::new(&root));
    assert!(!all.is_empty(), "no case directories under {root}");
    for d in all {
        eprintln!("checking {}", d.display());
        check_case(&d);
    }
}

// Special files: tests/golden/onnx/special/ (scripts/golden/make_onnx_special.py).

fn special(name: &str) -> std::path::PathBuf {
    golden_dir().join("onnx").join("special").join(name)
}

fn load_err(name: &str, opts: &gradcam::onnx::OnnxOptions) -> String {
    match gradcam::onnx::load(&special(name), opts) {
        Ok(_) => panic!("{name}: loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_files_are_refused_with_the_file_and_the_reason() {
    let d = gradcam::onnx::OnnxOptions::default();
    let e = load_err("empty.onnx", &d);
    assert!(e.contains("empty.onnx") && e.contains("empty"), "{e}");
    let e = load_err("truncated.onnx", &d);
    assert!(e.contains("truncated.onnx") && (e.contains("truncated") || e.contains("not an ONNX")), "{e}");
    let e = load_err("not_onnx.onnx", &d);
    assert!(e.contains("not_onnx.onnx") && e.to_lowercase().contains("onnx model"), "{e}");
    let e = load_err("unsupported_op.onnx", &d);
    assert!(e.contains("`Celu`") && e.contains("gradcam imports:") && e.contains("Conv"), "{e}");
    assert!(e.contains("node `"), "the node is named: {e}");
    let e = load_err("two_inputs.onnx", &d);
    assert!(e.contains("2 inputs") && e.contains("image_a") && e.contains("image_b"), "{e}");
    let e = load_err("dynamic_input.onnx", &d);
    assert!(e.contains("--input-size") && e.contains("height"), "{e}");
    let missing = gradcam::onnx::load(&special("no_such_file.onnx"), &d).err().unwrap().to_string();
    assert!(missing.contains("no_such_file.onnx"), "{missing}");
}

#[test]
fn a_dynamic_input_takes_its_size_from_the_options() {
    let opts = gradcam::onnx::OnnxOptions { input_size: Some((64, 64)), ..Default::default() };
    let net = gradcam::onnx::load(&special("dynamic_input.onnx"), &opts).unwrap();
    assert_eq!(net.input_size, (64, 64));
    let x = Array::read(special("input_64x64.npy")).unwrap().to_tensor(&Device::Cpu).unwrap();
    let got = net.forward(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let want = Array::read(special("dynamic_input.logits.npy")).unwrap().data;
    let (d, m) = (max_abs_diff(&got, &want), max_abs(&want));
    assert!(d <= 1e-4 * m, "logits differ by {d} (max {m})");
    // and a fixed model refuses another size
    let fixed = golden_dir().join("onnx/resnet_ts/model.onnx");
    let opts = gradcam::onnx::OnnxOptions { input_size: Some((96, 96)), ..Default::default() };
    let e = gradcam::onnx::load(&fixed, &opts).err().unwrap().to_string();
    assert!(e.contains("fixed to 64x64") && e.contains("96x96"), "{e}");
}

#[test]
fn softmax_output_explains_the_logits_and_says_so() {
    check_case(&special("softmax_out"));
    let net = gradcam::onnx::load(&special("softmax_out/model.onnx"), &Default::default()).unwrap();
    let notes = &net.onnx.as_ref().unwrap().notes;
    assert!(notes.iter().any(|n| n.contains("Softmax") && n.contains("logits")), "{notes:?}");
}

#[test]
fn channels_last_input_is_recognised() {
    check_case(&special("channels_last"));
}

#[test]
fn layers_by_module_path_onnx_node_or_tensor_name_and_folded_names_refused() {
    for case in ["resnet_ts", "resnet_dynamo"] {
        let dir = golden_dir().join("onnx").join(case);
        let idx: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
        let net = gradcam::onnx::load(&dir.join("model.onnx"), &Default::default()).unwrap();
        for l in idx["layers"].as_array().unwrap() {
            let by_path = net.layer(l["path"].as_str().unwrap()).unwrap();
            for v in l["onnx_values"].as_array().unwrap() {
                assert_eq!(net.layer(v.as_str().unwrap()).unwrap(), by_path, "{case}: tensor {v}");
            }
        }
        // the first block's conv1 was folded with bn1 by both exporters
        let e = net.layer("layer1.0.conv1").err().unwrap().to_string();
        assert!(e.contains("folded") && e.contains("layer1.0.conv1"), "{case}: {e}");
        if case == "resnet_dynamo" {
            assert!(e.contains("`layer1.0.bn1`"), "{e}");
            net.layer("layer1.0.bn1").unwrap();
        } else {
            // the TorchScript export names the folded output by its ONNX node
            assert!(e.contains("/layer1/layer1.0/conv1/Conv"), "{e}");
            net.layer("/layer1/layer1.0/conv1/Conv").unwrap();
        }
        let e = net.layer("layer9").err().unwrap().to_string();
        assert!(e.contains("no layer `layer9`"), "{e}");
    }
}

#[test]
fn guided_backprop_runs_through_an_imported_graph() {
    // the guided rule at every Relu: the input gradient of the ReLU network equals the plain one wherever the
    // rule never bites, and differs somewhere (a check that the rule is applied, not a golden)
    // (ViT: its class token is a constant the graph concatenates, a step that reads no input)
    for case in ["resnet_ts", "vit_dynamo"] {
        let dir = golden_dir().join("onnx").join(case);
        let net = gradcam::onnx::load(&dir.join("model.onnx"), &Default::default()).unwrap();
        let x = Array::read(golden_dir().join("onnx/input_64x64.npy")).unwrap().to_tensor(&Device::Cpu).unwrap();
        let gb = cam::guided::guided_backprop(&net, &x, &[3], Score::Logit).unwrap();
        let plain =
            cam::guided::input_gradient(&net, &x, &[3], Score::Logit, gradcam::ops::act::Backprop::Plain).unwrap();
        assert_eq!(gb.dims(), &[1, 3, 64, 64]);
        let g = gb.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let p = plain.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(g.iter().all(|v| v.is_finite()) && g.iter().any(|v| *v != 0.0), "{case}");
        if case == "resnet_ts" {
            assert!(max_abs_diff(&g, &p) > 0.0, "{case}: the guided rule changed nothing");
        }
    }
}
