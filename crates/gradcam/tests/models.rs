//! Logits against the reference (PyTorch), on the golden input tensors.
mod common;
use candle_core::Device;
use common::*;

#[test]
fn efficientnet_lite0_real_weights_logits_match_pytorch() {
    let net = lite0();
    for (dir, _, _) in golden_images("lite0") {
        let x = golden(&format!("{dir}/input.npy"))
            .to_tensor(&Device::Cpu)
            .unwrap();
        let want = golden(&format!("{dir}/logits.npy")).data;
        let got = net
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let d = max_abs_diff(&got, &want);
        // tolerance from the issue: max |Δ| ≤ 1e-3
        assert!(d <= 1e-3, "{dir}: logits differ by {d}");
    }
}

fn synthetic_logits(model: &str) {
    let net = synthetic(model);
    for (dir, _, _) in golden_images(model) {
        let x = golden(&format!("{dir}/input.npy"))
            .to_tensor(&Device::Cpu)
            .unwrap();
        let want = golden(&format!("{dir}/logits.npy")).data;
        let got = net
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let d = max_abs_diff(&got, &want);
        // tolerance: max |Δ| ≤ 1e-4 · max|logit|
        assert!(
            d <= 1e-4 * max_abs(&want),
            "{dir}: logits differ by {d} (max |logit| {})",
            max_abs(&want)
        );
    }
}

#[test]
fn resnet50_synthetic_logits_match_pytorch() {
    synthetic_logits("resnet50");
}

#[test]
fn resnet18_synthetic_logits_match_pytorch() {
    synthetic_logits("resnet18");
}
