//! `gradcam serve`: a web page to explore a model, and an HTTP API, over the gradcam library.
//!
//! The model is loaded once and shared ([`Model`]). Requests are handled on a small tokio runtime (axum over
//! hyper, HTTP/1.1); the network runs on [`engine`]'s worker threads (one pass at a time each, fed by a
//! bounded queue), which hand each pass to the library's own rayon pool. Nothing is written to disk and no
//! file path comes from a client: pictures and maps come back inline (`data:` URLs) or as the answer's body.

pub mod api;
mod assets;
mod body;
pub mod cli;
mod engine;
mod error;
mod io;
mod query;

pub use error::ApiError;

use gradcam::image::ImageLimits;
use gradcam::labels::Labels;
use gradcam::models::Network;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Default body limit: 20 MB.
pub const DEFAULT_MAX_BODY: usize = 20_000_000;
/// Default pixel limit of an uploaded image: 40 megapixels (a server holds several at once).
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;
/// Default limit of the pictures one explain request may make: its explanations (classes × methods) times the
/// image's pixels. Each explanation's pictures are held (as PNG, then base64) until the answer goes out, about
/// 30 bytes a pixel at worst: 80 megapixels is one explanation of the largest image, or every method for one
/// class of a 6-megapixel photo.
pub const DEFAULT_MAX_EXPLAINED_PIXELS: u64 = 80_000_000;
/// The most explanations (classes × methods) one request may ask, whatever the image's size.
pub const MAX_EXPLANATIONS: usize = 64;
/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 1024;
/// The longest a connection may take to send a request's head (and the longest it may stay idle between
/// requests), by default; the server's `timeout` if shorter.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest an answer may wait for its client to read on, by default; the server's `timeout` if shorter.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request head (request line and headers) a connection buffers.
pub const MAX_HEAD_BYTES: usize = 64 << 10;
/// How much of a body over the limit is read and thrown away before the 413 (then the connection closes).
pub const DRAIN_BYTES: usize = 64 << 20;

/// How the server runs.
#[derive(Clone, Debug)]
pub struct Config {
    pub bind: SocketAddr,
    /// Threads running network passes, one at a time each.
    pub workers: usize,
    /// Requests that may wait for a worker; more are refused with 503.
    pub queue: usize,
    /// Largest request body, checked while reading.
    pub max_body: usize,
    /// From arrival to answer; past it a request gets 503.
    pub timeout: Duration,
    pub limits: ImageLimits,
    /// Explanations (classes × methods) times the image's pixels, at most, for one request (413 past it).
    pub max_explained_pixels: u64,
    /// Where the example photos are (`$GRADCAM_HOME/examples`, filled by `scripts/fetch-assets.sh`).
    pub examples: Option<PathBuf>,
    /// The longest a connection may take to send a request's head, or stay idle (at most `timeout`).
    pub head_timeout: Duration,
    /// The longest an answer may wait for its client to read on (at most `timeout`).
    pub stall_timeout: Duration,
    /// Test hook: every job waits this long before it runs.
    #[doc(hidden)]
    pub work_delay: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: default_workers(),
            queue: 32,
            max_body: DEFAULT_MAX_BODY,
            timeout: Duration::from_secs(60),
            limits: ImageLimits { max_pixels: DEFAULT_MAX_PIXELS, ..ImageLimits::default() },
            max_explained_pixels: DEFAULT_MAX_EXPLAINED_PIXELS,
            examples: Some(gradcam::models::zoo::home().join("examples")),
            head_timeout: HEAD_TIMEOUT,
            stall_timeout: STALL_TIMEOUT,
            work_delay: Duration::ZERO,
        }
    }
}

/// Workers by default: the cores, at most 4 (each pass already uses every core through rayon; a second worker
/// overlaps the serial parts: decoding, PNG encoding).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4)
}

/// A targetable layer with its output shape.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerInfo {
    pub name: String,
    pub shape: Vec<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias_of: Option<String>,
}

/// The model a server serves, loaded once.
pub struct Model {
    pub net: Network,
    pub labels: Labels,
    pub layers: Vec<LayerInfo>,
    pub default_layer: String,
}

impl Model {
    pub fn new(net: Network, labels: Labels) -> gradcam::Result<Model> {
        let shapes = net.layer_shapes()?.to_vec();
        let layers = net
            .layers()
            .into_iter()
            .map(|l| LayerInfo { shape: shapes[l.node.0].clone(), name: l.name, alias_of: l.alias_of })
            .collect();
        let default_layer = net.default_layer();
        Ok(Model { net, labels, layers, default_layer })
    }
}

/// A server started in the background (tests, `gradcam serve`).
pub struct Running {
    pub addr: SocketAddr,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Wait until the server stops (it runs until the process ends).
    pub fn join(self) -> std::io::Result<()> {
        self.thread.join().unwrap_or_else(|_| Err(std::io::Error::other("the server thread panicked")))
    }
}

/// Bind `config.bind` and serve `model` on a thread of its own.
pub fn start(model: Arc<Model>, config: Config) -> std::io::Result<Running> {
    if config.workers == 0 {
        return Err(std::io::Error::other("--workers 0: expected at least 1"));
    }
    let listener = std::net::TcpListener::bind(config.bind)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.bind)))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let examples = config.examples.as_deref().map(|d| list_examples(d, config.max_body)).unwrap_or_default();
    let engine = engine::Engine::start(model.clone(), config.workers, config.queue, config.work_delay);
    let (head, stall) = (config.timeout.min(config.head_timeout), config.timeout.min(config.stall_timeout));
    let state = Arc::new(api::AppState { model, engine, config, examples });
    let thread = std::thread::Builder::new().name("gradcam-http".into()).spawn(move || {
        // the runtime only moves bytes: two threads are plenty, the network has the cores
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            serve(listener, api::router(state), head, stall).await
        })
    })?;
    Ok(Running { addr, thread })
}

/// Serve HTTP/1.1 connections, at most [`MAX_CONNECTIONS`] at once; a connection that takes longer than `head` to
/// send a request's head (or stays idle that long between requests) is closed, and so is one that does not read
/// its answer for `stall`: a slow or stalled client holds neither a connection nor an answer for long.
async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    head: Duration,
    stall: Duration,
) -> std::io::Result<()> {
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = connections.clone().acquire_owned().await else { return Ok(()) };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(_) => {
                // out of file descriptors, a connection reset before it was taken…: go on shortly
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(io::StallLimited::new(stream, stall));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(head)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(io, service)
                .await;
            drop(permit);
        });
    }
}

/// The example photos of a folder (image files, at most `max` bytes each), by name, sorted.
fn list_examples(dir: &Path, max: usize) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else { return vec![] };
    let mut out: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.metadata().is_ok_and(|m| m.is_file() && m.len() > 0 && m.len() <= max as u64))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| !n.starts_with('.') && assets::image_type(n).is_some())
        .collect();
    out.sort();
    out
}
