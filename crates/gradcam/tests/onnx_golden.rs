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
    let mut v: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("index.json").exists())
        .collect();
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
