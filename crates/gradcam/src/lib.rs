//! gradcam: what a convolutional image classifier looks at — Grad-CAM and its family, Guided Backprop and
//! Guided Grad-CAM, on real pretrained networks, in Rust on candle.
//!
//! Data flow (see ARCHITECTURE.md): [`image`] decodes and preprocesses a photo into a tensor; a
//! [`models::Network`] built from [`weights`] (checkpoints read by [`checkpoint`]) runs it; [`cam`] splits the
//! network at the target layer, backpropagates a class score to get activations and gradients, and turns
//! them into a map with one of its methods; [`render`] draws the map over the photo.

pub mod bench;
pub mod cam;
pub mod checkpoint;
pub mod classify;
mod colormaps;
pub mod download;
pub mod error;
pub mod explain;
pub mod graph;
pub mod image;
pub mod labels;
pub mod models;
pub mod naming;
pub mod npy;
pub mod onnx;
pub mod ops;
pub mod output;
pub mod registry;
pub mod render;
pub mod resources;
pub mod synthetic;
pub mod util;
pub mod weights;

pub use error::{Error, Result};
pub use models::Network;

use candle_core::Device;

/// Load a zoo model: `weights` is a file, `synthetic`, or None for the pretrained weights (a missing torchvision
/// checkpoint is downloaded, quietly, unless `GRADCAM_OFFLINE` says not to: see [`load_model_with`]).
pub fn load_model(name: &str, weights: Option<&str>, dev: &Device) -> Result<Network> {
    load_model_with(name, weights, dev, models::zoo::Fetch::default())
}

/// [`load_model`], with `fetch` saying whether missing pretrained weights may be downloaded, and whether to show
/// the download on stderr.
pub fn load_model_with(name: &str, weights: Option<&str>, dev: &Device, fetch: models::zoo::Fetch) -> Result<Network> {
    // a bad GRADCAM_ISA is an error here, before anything runs on a set the user did not ask for
    ops::isa::init()?;
    if onnx::is_onnx_path(name) {
        if let Some(w) = weights {
            return Err(Error::invalid(format!("weights `{w}`: an ONNX model ({name}) carries its own weights")));
        }
        return onnx::load(std::path::Path::new(name), &onnx::OnnxOptions::default());
    }
    // an architecture gradcam does not build yet is refused before its weights are looked for (or downloaded)
    models::zoo::ensure_built(name)?;
    let w = match weights {
        Some("synthetic") => weights::Weights::Synthetic,
        w => weights::Weights::load(models::zoo::resolve_weights_with(name, w, fetch)?)?,
    };
    let net = models::zoo::build(name, &w, dev)?;
    if net.num_classes == 0 {
        return Err(Error::invalid(format!(
            "{}: the classifier has 0 classes (its weight has no rows); expected at least one class",
            w.describe()
        )));
    }
    Ok(net)
}

/// Threads the kernels use (rayon's pool: RAYON_NUM_THREADS, default the number of cores).
pub fn bench_threads() -> usize {
    rayon::current_num_threads()
}
