//! Logits against the reference (PyTorch), on the golden input tensors.
mod common;
use candle_core::Device;
use common::*;

/// Every golden image of `model`: max |Δ logits| ≤ `tol(logits_ref)`.
fn check_logits(model: &str, net: &gradcam::Network, tol: impl Fn(&[f32]) -> f32) {
    for (dir, _, _) in golden_images(model) {
        let x = golden(&format!("{dir}/input.npy")).to_tensor(&Device::Cpu).unwrap();
        let want = golden(&format!("{dir}/logits.npy")).data;
        let got = net.forward(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let d = max_abs_diff(&got, &want);
        assert!(d <= tol(&want), "{dir}: logits differ by {d} (allowed {})", tol(&want));
    }
}

#[test]
fn efficientnet_lite0_real_weights_logits_match_pytorch() {
    // tolerance from the issue: max |Δ| ≤ 1e-3
    check_logits("lite0", &lite0(), |_| 1e-3);
}

#[test]
fn resnet50_synthetic_logits_match_pytorch() {
    // tolerance: max |Δ| ≤ 1e-4 · max|logit|
    check_logits("resnet50", &synthetic("resnet50"), |w| 1e-4 * max_abs(w));
}

#[test]
fn resnet18_synthetic_logits_match_pytorch() {
    check_logits("resnet18", &synthetic("resnet18"), |w| 1e-4 * max_abs(w));
}

/// Lite1 (240 px) and Lite2 (260 px) on their real weights, from the photo file through gradcam's own decoding
/// and preprocessing: logits within 1e-4 (measured: at most 1.6e-5) of the reference implementation's (`efficientnet-lite-pytorch` on the
/// same weights and photos, scripts/make_lite_golden.py), and the same top-1 class, on eight photos each.
#[test]
fn efficientnet_lite1_and_lite2_real_weights_logits_match_the_reference() {
    for (variant, size) in [(1, 240), (2, 260)] {
        let model = format!("efficientnet_lite{variant}");
        let w = asset(&format!("weights/{model}.pth"));
        let net = gradcam::load_model(&model, Some(w.to_str().unwrap()), &candle_core::Device::Cpu).unwrap();
        assert_eq!(net.input_size, (size, size));
        let dir = golden_dir().join(format!("lite{variant}"));
        let mut checked = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let stem = p.file_name().unwrap().to_str().unwrap().trim_end_matches(".logits.npy").to_string();
            let want = gradcam::npy::Array::read(&p).unwrap().data;
            let photo = gradcam::image::load_rgb(asset(&format!("examples/{stem}.png")), 100_000_000).unwrap();
            let x = gradcam::image::preprocess(&photo, net.input_size, &net.normalization, &net.device).unwrap();
            let got = net.forward(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let d = max_abs_diff(&got, &want);
            eprintln!("{model} {stem}: max abs logit difference {d:.2e}");
            assert!(d <= 1e-4, "{model} {stem}: logits differ by {d}");
            let top = |v: &[f32]| gradcam::classify::ranking(v)[0];
            assert_eq!(top(&got), top(&want), "{model} {stem}: top-1");
            checked += 1;
        }
        assert_eq!(checked, 8, "{model}: eight reference photos");
    }
}
