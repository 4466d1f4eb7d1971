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

/// How to read a model beyond its name and weights (the CLI's and the server's `--input-size`, `--mean`,
/// `--std`, `--reshape`).
#[derive(Clone, Debug, Default)]
pub struct ModelOptions {
    /// Input height and width: a zoo model's weights work at any size; an ONNX model takes it when its own is
    /// not fixed (and refuses another one when it is).
    pub input_size: Option<(usize, usize)>,
    /// Normalisation mean and standard deviation per channel (R, G, B), instead of the model's own.
    pub mean: Option<[f32; 3]>,
    pub std: Option<[f32; 3]>,
    /// How layers' values become channel maps.
    pub reshape: cam::layout::Reshape,
}

/// A zoo model or an ONNX file (a name ending in `.onnx`) with `opts` applied.
pub fn load_model_opts(
    name: &str,
    weights: Option<&str>,
    dev: &Device,
    fetch: models::zoo::Fetch,
    opts: &ModelOptions,
) -> Result<Network> {
    let mut net = if onnx::is_onnx_path(name) {
        ops::isa::init()?;
        if let Some(w) = weights {
            return Err(Error::invalid(format!("weights `{w}`: an ONNX model ({name}) carries its own weights")));
        }
        let o = onnx::OnnxOptions { input_size: opts.input_size, ..Default::default() };
        onnx::load(std::path::Path::new(name), &o)?
    } else {
        let net = load_model_with(name, weights, dev, fetch)?;
        match opts.input_size {
            Some((h, w)) => net.with_input_size(h, w)?,
            None => net,
        }
    };
    if let Some(mean) = opts.mean {
        if mean.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid(format!("mean {mean:?}: expected finite numbers")));
        }
        net.normalization.mean = mean;
    }
    if let Some(std) = opts.std {
        if std.iter().any(|v| !v.is_finite() || *v <= 0.0) {
            return Err(Error::invalid(format!("std {std:?}: expected positive numbers")));
        }
        net.normalization.std = std;
    }
    net.reshape = opts.reshape;
    Ok(net)
}

/// `N` (square) or `HxW`, a size in pixels (`--input-size`).
pub fn parse_size(s: &str) -> std::result::Result<(usize, usize), String> {
    let bad = || format!("`{s}`: expected a size in pixels, N or HxW (e.g. 224 or 240x320)");
    let (h, w) = match s.split_once(['x', 'X']) {
        Some((h, w)) => (h.trim().parse().map_err(|_| bad())?, w.trim().parse().map_err(|_| bad())?),
        None => {
            let n = s.trim().parse().map_err(|_| bad())?;
            (n, n)
        }
    };
    Ok((h, w))
}

/// Three numbers `R,G,B` or one for all three (`--mean`, `--std`).
pub fn parse_triple(s: &str) -> std::result::Result<[f32; 3], String> {
    let bad = || format!("`{s}`: expected three numbers R,G,B (e.g. 0.485,0.456,0.406) or one for all channels");
    let v: Vec<f32> = s.split(',').map(|p| p.trim().parse::<f32>().map_err(|_| bad())).collect::<Result<_, _>>()?;
    let v = match v[..] {
        [a] => [a, a, a],
        [a, b, c] => [a, b, c],
        _ => return Err(bad()),
    };
    if v.iter().any(|x| !x.is_finite()) {
        return Err(bad());
    }
    Ok(v)
}

/// Threads the kernels use (rayon's pool: RAYON_NUM_THREADS, default the number of cores).
pub fn bench_threads() -> usize {
    rayon::current_num_threads()
}
