//! `gradcam serve`'s arguments and entry point (the `gradcam` binary only dispatches here).

use crate::{Config, Model};
use gradcam::image::ImageLimits;
use gradcam::labels::Labels;
use gradcam::models::zoo;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Model name (see `gradcam models`), or an ONNX file (`my_model.onnx`).
    #[arg(long, short, default_value = zoo::DEFAULT_MODEL)]
    pub model: String,
    /// The network's input size, `N` or `HxW` (an ONNX model with a dynamic one needs it).
    #[arg(long, value_parser = gradcam::parse_size)]
    pub input_size: Option<(usize, usize)>,
    /// Input normalisation mean per channel (R,G,B); default: the model's own (ImageNet's for ONNX models).
    #[arg(long, value_parser = gradcam::parse_triple)]
    pub mean: Option<[f32; 3]>,
    /// Input normalisation standard deviation per channel (R,G,B).
    #[arg(long, value_parser = gradcam::parse_triple)]
    pub std: Option<[f32; 3]>,
    /// How a layer's values become channel maps: auto, none, tokens (ViT) or channels-last (Swin).
    #[arg(long, default_value = "auto")]
    pub reshape: gradcam::cam::layout::Reshape,
    /// Weights: a checkpoint file or `synthetic`. Default: the model's pretrained weights from the cache
    /// (torchvision's downloaded there on first use, unless --offline).
    #[arg(long)]
    pub weights: Option<String>,
    /// Class names, one per line (for a checkpoint with other classes than ImageNet's).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Address to listen on. Anything but loopback exposes the server to the network.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Threads running network passes (one pass at a time each). Default: the cores, at most 4.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Requests that may wait for a worker; more are refused with 503 and Retry-After.
    #[arg(long, default_value_t = 32)]
    pub queue: usize,
    /// Largest request body in bytes (checked while reading; 413 past it).
    #[arg(long, default_value_t = crate::DEFAULT_MAX_BODY)]
    pub max_body: usize,
    /// Seconds from a request's arrival to its answer; past it, 503 with Retry-After.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// Refuse images larger than this many pixels (checked from the header, before decoding; 413).
    #[arg(long, default_value_t = crate::DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
    /// Refuse images whose decoded pixels would take more than this many bytes (from the header; 413).
    #[arg(long, default_value_t = gradcam::image::DEFAULT_MAX_DECODED_BYTES)]
    pub max_decoded_bytes: u64,
    /// Refuse an explain request whose explanations (classes × methods) times the image's pixels exceed this (413):
    /// the pictures of a request are held in memory until its answer goes out.
    #[arg(long, default_value_t = crate::DEFAULT_MAX_EXPLAINED_PIXELS)]
    pub max_explained_pixels: u64,
    /// Folder of example photos the page offers. Default: $GRADCAM_HOME/examples (scripts/fetch-assets.sh).
    #[arg(long)]
    pub examples: Option<PathBuf>,
}

/// Load the model (`fetch`: whether missing pretrained weights may be downloaded), start the server, print where
/// it listens, serve until the process ends.
pub fn main(a: &Args, fetch: zoo::Fetch) -> gradcam::Result<()> {
    let workers = a.workers.unwrap_or_else(crate::default_workers);
    if workers == 0 {
        return Err(gradcam::Error::invalid("--workers 0: expected at least 1"));
    }
    if !(a.timeout.is_finite() && a.timeout > 0.0 && a.timeout <= 86_400.0) {
        return Err(gradcam::Error::invalid(format!("--timeout {}: expected seconds in (0, 86400]", a.timeout)));
    }
    if a.max_body == 0 {
        return Err(gradcam::Error::invalid("--max-body 0: expected at least 1 byte"));
    }
    let dev = candle_core::Device::Cpu;
    let opts = gradcam::ModelOptions { input_size: a.input_size, mean: a.mean, std: a.std, reshape: a.reshape };
    let net = gradcam::load_model_opts(&a.model, a.weights.as_deref(), &dev, fetch, &opts)?;
    for n in net.onnx.iter().flat_map(|o| &o.notes) {
        eprintln!("note: {n}");
    }
    let labels = Labels::for_classes(net.num_classes, a.labels.as_deref())?;
    let model = Arc::new(Model::new(net, labels)?);
    let config = Config {
        bind: a.bind,
        workers,
        queue: a.queue,
        max_body: a.max_body,
        timeout: Duration::from_secs_f64(a.timeout),
        limits: ImageLimits { max_pixels: a.max_pixels, max_decoded_bytes: a.max_decoded_bytes },
        max_explained_pixels: a.max_explained_pixels,
        examples: Some(a.examples.clone().unwrap_or_else(|| zoo::home().join("examples"))),
        ..Config::default()
    };
    let (q, name) = (config.queue, model.net.name.clone());
    let running = crate::start(model, config).map_err(|e| gradcam::Error::io(a.bind.to_string(), e))?;
    println!("gradcam serve: {name} on http://{} ({workers} workers, queue {q}); Ctrl-C to stop", running.addr);
    let _ = std::io::stdout().flush();
    running.join().map_err(|e| gradcam::Error::io(a.bind.to_string(), e))
}
