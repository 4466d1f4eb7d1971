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
