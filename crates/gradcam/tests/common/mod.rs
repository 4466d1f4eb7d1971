#![allow(dead_code)]
//! Helpers shared by the integration tests: the golden files (copied from the reference outputs into
//! tests/golden), and the assets fetched by scripts/fetch-assets.sh.

use gradcam::npy::Array;
use std::path::PathBuf;

pub fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden")
}

pub fn golden(rel: &str) -> Array {
    let p = golden_dir().join(rel);
    Array::read(&p).unwrap_or_else(|e| panic!("golden file {}: {e}", p.display()))
}

/// A fetched asset (weights or example image); fails with the command that fetches it.
pub fn asset(rel: &str) -> PathBuf {
    let p = gradcam::models::zoo::home().join(rel);
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-assets.sh first (it fetches the weights and example images)",
        p.display()
    );
    p
}

pub fn lite0() -> gradcam::Network {
    let w = asset("weights/efficientnet_lite0.pth");
    gradcam::load_model("efficientnet_lite0", Some(w.to_str().unwrap()), &candle_core::Device::Cpu).unwrap()
}

pub fn synthetic(name: &str) -> gradcam::Network {
    gradcam::load_model(name, Some("synthetic"), &candle_core::Device::Cpu).unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

pub fn max_abs(a: &[f32]) -> f32 {
    a.iter().fold(0f32, |m, x| m.max(x.abs()))
}

/// (model dir, image stem) of every golden image of a model.
pub fn golden_images(model: &str) -> Vec<(String, Vec<usize>, Vec<String>)> {
    let idx = std::fs::read_to_string(golden_dir().join(model).join("index.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&idx).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["dir"].as_str().unwrap().to_string(),
                e["classes"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap() as usize).collect(),
                e["layers"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect(),
            )
        })
        .collect()
}
