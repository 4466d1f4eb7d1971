//! `gradcam explain` as a library call: one image in, its predictions, maps, pictures and a JSON-ready report
//! out. The CLI only parses arguments, walks folders and prints.

use crate::cam::{
    self, guided,
    postprocess::{BBox, Map},
    Explainer, MapOptions, Score,
};
use crate::classify::{ranking, top_k, Prediction};
use crate::error::{Error, Result};
use crate::labels::Labels;
use crate::models::Network;
use crate::npy::Array;
use crate::output::{FileSet, PngCompression};
use crate::render::{self, Colormap};
use image::RgbImage;
use serde::Serialize;
use std::path::{Path, PathBuf};

pub use crate::naming::Namer;

/// The same explanations made in memory, without files (for `gradcam serve`).
pub mod memory;

pub use crate::registry::{GUIDED_BACKPROP, GUIDED_GRADCAM};

/// Which classes to explain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClassSpec {
    /// The k best predictions.
    Top(usize),
    Index(usize),
}

#[derive(Clone, Debug)]
pub struct Options {
    pub layers: Vec<String>,
    pub methods: Vec<String>,
    pub classes: Vec<ClassSpec>,
    pub counterfactual: bool,
    pub score: Score,
    pub alpha: f32,
    pub threshold: f32,
    pub colormap: Colormap,
    pub save_npy: bool,
    pub out_dir: PathBuf,
    /// How many predictions the report lists.
    pub top: usize,
    /// The reference's `eigen_smooth`.
    pub eigen_smooth: bool,
    /// The reference's `aug_smooth` (6 test-time augmentations).
    pub aug_smooth: bool,
    /// Masked inputs (ScoreCAM) or ablated activations (AblationCAM) per network run.
    pub method_batch: usize,
    /// Write the comparison grid when more than one method is asked.
    pub grid: bool,
    /// Which pictures of each map are written.
    pub pictures: Pictures,
    /// How the PNG files are compressed.
    pub png: PngCompression,
}

/// Which pictures of a map are written (the comparison grid is [`Options::grid`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pictures {
    pub overlay: bool,
    pub heatmap: bool,
    pub mask: bool,
    /// Guided methods' gradient picture.
    pub gradient: bool,
}

impl Default for Pictures {
    fn default() -> Self {
        Pictures { overlay: true, heatmap: true, mask: true, gradient: true }
    }
}

impl Pictures {
    pub const KINDS: &'static [&'static str] = &["overlay", "heatmap", "mask", "gradient"];

    /// From a list of kinds, `all` or `none`.
    pub fn parse(list: &[String]) -> Result<Self> {
        let mut p = Pictures { overlay: false, heatmap: false, mask: false, gradient: false };
        for k in list {
            match k.trim() {
                "overlay" => p.overlay = true,
                "heatmap" => p.heatmap = true,
                "mask" => p.mask = true,
                "gradient" => p.gradient = true,
                "all" => p = Pictures::default(),
                "none" => {}
                other => {
                    return Err(Error::invalid(format!(
                        "--pictures {other}: expected a list of {}, or all, or none",
                        Self::KINDS.join(", ")
                    )))
                }
            }
        }
        Ok(p)
    }

    /// The kinds asked, in [`Pictures::KINDS`]'s order.
    pub fn names(&self) -> Vec<&'static str> {
        let on = [self.overlay, self.heatmap, self.mask, self.gradient];
        Self::KINDS.iter().zip(on).filter(|(_, on)| *on).map(|(k, _)| *k).collect()
    }
}

impl Options {
    /// Defaults of the CLI for `layers` and `methods`.
    pub fn new(layers: Vec<String>, methods: Vec<String>, out_dir: PathBuf) -> Self {
        Options {
            layers,
            methods,
            classes: vec![ClassSpec::Top(1)],
            counterfactual: false,
            score: Score::Logit,
            alpha: 0.5,
            threshold: 0.75,
            colormap: Colormap::Jet,
            save_npy: false,
            out_dir,
            top: 5,
            eigen_smooth: false,
            aug_smooth: false,
            method_batch: 4,
            grid: true,
            pictures: Pictures::default(),
            png: PngCompression::default(),
        }
    }

    fn map_options(&self) -> MapOptions {
        MapOptions {
            counterfactual: self.counterfactual,
            eigen_smooth: self.eigen_smooth,
            batch_size: self.method_batch,
        }
    }
}

impl Options {
    /// Check methods and layers before any image is read.
    pub fn validate(&self, net: &Network) -> Result<()> {
        for m in &self.methods {
            crate::registry::get(m)?;
        }
        for l in &self.layers {
            net.layer(l)?;
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(Error::invalid(format!("--alpha {}: expected a number in [0, 1]", self.alpha)));
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(Error::invalid(format!(
                "--threshold {}: expected a number in [0, 1] (the map is scaled to [0, 1])",
                self.threshold
            )));
        }
        if self.layers.is_empty() {
            return Err(Error::invalid("no target layer given"));
        }
        if self.methods.is_empty() {
            return Err(Error::invalid("no method given"));
        }
        Ok(())
    }
}

/// The largest magnitude an `--input-tensor` value may have: a normalised image lies within a few units, and
/// values near f32's range overflow the first convolution to infinities that a clamping activation (ReLU6)
/// would hide.
pub const MAX_TENSOR_VALUE: f32 = 1e4;

/// One input: a decoded photo, or a ready tensor.
pub struct Input {
    /// The file it came from.
    pub path: PathBuf,
    /// As given by the user (shown in reports and errors; lossy where the path is not UTF-8).
    pub name: String,
    /// The photo at its own resolution (for a tensor input: the tensor de-normalised).
    pub photo: RgbImage,
    /// (1, 3, H, W) at the model's input size.
    pub tensor: candle_core::Tensor,
}

impl Input {
    pub fn from_image(path: &Path, net: &Network, limits: &crate::image::ImageLimits) -> Result<Input> {
        let photo = crate::image::load_rgb_with(path, limits)?;
        let tensor = crate::image::preprocess(&photo, net.input_size, &net.normalization, &net.device)?;
        Ok(Input { path: path.to_path_buf(), name: path.display().to_string(), photo, tensor })
    }

    /// A ready 1×3×H×W tensor from a `.npy` file, of at most `max_pixels` pixels, every value finite.
    pub fn from_npy(path: &Path, net: &Network, max_pixels: u64) -> Result<Input> {
        let a = Array::read(path)?;
        let (h, w) = net.input_size;
        if a.shape.len() != 4 || a.shape[0] != 1 || a.shape[1] != 3 {
            return Err(Error::invalid(format!(
                "{}: tensor of shape {:?}, expected 1x3xHxW (the model's input is 1x3x{h}x{w})",
                path.display(),
                a.shape
            )));
        }
        let (th, tw) = (a.shape[2], a.shape[3]);
        if th == 0 || tw == 0 {
            return Err(Error::invalid(format!(
                "{}: tensor of shape {:?} has no pixels, expected 1x3xHxW with H, W >= 1 (the model's input is 1x3x{h}x{w})",
                path.display(),
                a.shape
            )));
        }
        let pixels = th as u64 * tw as u64;
        let side = crate::image::MAX_SIDE as usize;
        if th > side || tw > side {
            return Err(Error::invalid(format!(
                "{}: tensor of {th}x{tw} pixels: a side longer than {side} pixels is not supported",
                path.display()
            )));
        }
        if pixels > max_pixels {
            return Err(Error::invalid(format!(
                "{}: tensor of {th}x{tw} pixels is over the limit of {max_pixels} pixels (raise it with --max-pixels)",
                path.display()
            )));
        }
        if let Some(k) = a.data.iter().position(|v| !v.is_finite()) {
            let (c, y, x) = (k / (th * tw), k / tw % th, k % tw);
            return Err(Error::invalid(format!(
                "{}: the tensor holds {} at [0, {c}, {y}, {x}]; expected finite values",
                path.display(),
                a.data[k]
            )));
        }
        if let Some(k) = a.data.iter().position(|v| v.abs() > MAX_TENSOR_VALUE) {
            let (c, y, x) = (k / (th * tw), k / tw % th, k % tw);
            return Err(Error::invalid(format!(
                "{}: the tensor holds {:e} at [0, {c}, {y}, {x}]; expected a normalised image (values within \
                 ±{MAX_TENSOR_VALUE:e}: larger ones overflow the first layers)",
                path.display(),
                a.data[k]
            )));
        }
        let n = &net.normalization;
        let photo = RgbImage::from_fn(tw as u32, th as u32, |x, y| {
            image::Rgb([0, 1, 2].map(|c| {
                let v = a.data[c * th * tw + y as usize * tw + x as usize] * n.std[c] + n.mean[c];
                crate::render::round_u8(v * 255.0)
            }))
        });
        let tensor = a.to_tensor(&net.device)?;
        Ok(Input { path: path.to_path_buf(), name: path.display().to_string(), photo, tensor })
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Files {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heatmap: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gradient: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub npy: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    pub class: usize,
    pub label: String,
    pub method: String,
    pub layers: Vec<String>,
    pub counterfactual: bool,
    pub files: Files,
    /// The paper's box on the original image (pixels above 15% of the max, largest component).
    #[serde(rename = "box")]
    pub bbox: Option<BBox>,
    /// Where the map peaks, (x, y) on the original image.
    pub peak: Option<[usize; 2]>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub image: String,
    /// The input's path exactly (its bytes, base64), only where `image` had to replace bytes that are not
    /// UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_bytes: Option<String>,
    pub width: u32,
    pub height: u32,
    pub predictions: Vec<Prediction>,
    pub explanations: Vec<Explanation>,
    /// The comparison pictures, one per class, when several methods were asked.
    pub grids: Vec<Grid>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Grid {
    pub class: usize,
    pub methods: Vec<String>,
    pub file: String,
}

fn resolve_classes(specs: &[ClassSpec], logits: &[f32]) -> Vec<usize> {
    let rank = ranking(logits);
    let mut out: Vec<usize> = vec![];
    for s in specs {
        let add: Vec<usize> = match s {
            ClassSpec::Top(k) => rank.iter().take(*k).copied().collect(),
            ClassSpec::Index(i) => vec![*i],
        };
        for c in add {
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    if out.is_empty() {
        out.push(rank[0]);
    }
    out
}

/// What one method gives for one image and class.
pub(crate) struct Output {
    /// The map at the input's size (for guided-gradcam: the Grad-CAM map it was weighted with).
    map: Option<Map>,
    /// Guided methods: the 3×H×W gradient.
    gradient: Option<Vec<f32>>,
}

/// Refuse logits that are not finite (NaN or infinite) with an error naming the first layer whose output is
/// not, or a model without classes.
pub fn check_logits(net: &Network, input: &Input, logits: &[f32]) -> Result<()> {
    if logits.is_empty() {
        return Err(Error::invalid(format!("{}: the model has no classes", input.name)));
    }
    match logits.iter().find(|v| !v.is_finite()) {
        Some(bad) => Err(non_finite_logits(net, input, *bad)),
        None => Ok(()),
    }
}

/// An error for `input` whose logits are not finite, naming the first layer whose output is not.
fn non_finite_logits(net: &Network, input: &Input, bad: f32) -> Error {
    let at = match net.first_non_finite_stage(&input.tensor) {
        Ok(Some(layer)) => format!("the first layer whose output is not finite is `{layer}`"),
        Ok(None) => "every layer's output is finite when it runs alone".to_string(),
        Err(e) => format!("looking for the first layer that is not finite failed: {e}"),
    };
    Error::invalid(format!(
        "{}: the network's output is not finite (a logit is {bad}); {at}: the weights or the input hold NaN or \
         infinite values, or values so large that they overflow",
        input.name
    ))
}

fn check_finite(input: &Input, what: &str, data: &[f32]) -> Result<()> {
    match data.iter().find(|v| !v.is_finite()) {
        None => Ok(()),
        Some(v) => Err(Error::invalid(format!(
            "{}: the {what} is not finite (it holds {v}): the activations or gradients there hold NaN or infinite \
             values, or overflow",
            input.name
        ))),
    }
}

/// Explain a batch of inputs: they go through the network together, each with its own classes. For every
/// class slot, one forward and one backward serve all gradient methods; Guided Backprop is one more.
///
/// Every image's files are written as a set (see [`crate::output`]) once all of them are made: an error
/// leaves none of the batch's new files behind. The inputs must have equal tensor sizes: [`compute_batch`], then
/// [`render_into`] for each input; the files are put in place once every input's are made.
pub fn explain_batch(
    net: &Network,
    labels: &Labels,
    inputs: &[Input],
    prefixes: &[String],
    opts: &Options,
    namer: &Namer,
) -> Result<Vec<Report>> {
    if prefixes.len() != inputs.len() {
        return Err(Error::invalid(format!("{} inputs and {} output prefixes", inputs.len(), prefixes.len())));
    }
    let computed = compute_batch(net, labels, &inputs.iter().collect::<Vec<_>>(), opts)?;
    let mut done = vec![];
    for ((c, input), prefix) in computed.into_iter().zip(inputs).zip(prefixes) {
        done.push(render_into(c, input, prefix, labels, opts, namer)?);
    }
    // every picture of the batch is made: now put each image's files in place, one set at a time
    let mut reports = vec![];
    for (report, set) in done {
        set.commit()?;
        reports.push(report);
    }
    Ok(reports)
}

/// What the network gives for one input: its report without files yet, and for every class asked the maps
/// (and gradients) of every method, at the model input's size; [`render_into`] draws and writes them. It
/// holds no photo and no tensor: a few maps of the input's size.
pub struct Computed {
    report: Report,
    /// (class, [(method, output)]) per class slot.
    slots: Vec<(usize, Vec<(String, Output)>)>,
    /// The model input's (height, width).
    size: (usize, usize),
}

/// The network's part of explaining a batch: predictions and maps, checked finite, nothing written. The inputs
/// must have equal tensor sizes.
pub fn compute_batch(net: &Network, labels: &Labels, inputs: &[&Input], opts: &Options) -> Result<Vec<Computed>> {
    if inputs.is_empty() {
        return Err(Error::invalid("a batch of no inputs"));
    }
    if let Some(odd) = inputs.iter().find(|i| i.tensor.dims() != inputs[0].tensor.dims()) {
        return Err(Error::invalid(format!(
            "a batch needs inputs of one size: {} is {:?}, {} is {:?}",
            inputs[0].name,
            inputs[0].tensor.dims(),
            odd.name,
            odd.tensor.dims()
        )));
    }
    let ex = Explainer::new(net, &opts.layers)?;
    let x = candle_core::Tensor::cat(&inputs.iter().map(|i| &i.tensor).collect::<Vec<_>>(), 0)?;
    let (n, _, ih, iw) = x.dims4()?;
    // The stages before the target layer run once per batch, whatever the number of classes and methods.
    let trunk = ex.prefix(&x)?;
    let logits = ex.logits_from(&trunk)?;
    let mut classes = vec![];
    let mut out = vec![];
    for (i, input) in inputs.iter().enumerate() {
        let l = logits.get(i)?.to_vec1::<f32>()?;
        check_logits(net, input, &l)?;
        classes.push(resolve_classes(&opts.classes, &l));
        let (pw, ph) = input.photo.dimensions();
        let predictions = top_k(&l, opts.top, labels);
        let report = Report {
            image: input.name.clone(),
            image_bytes: crate::naming::lossless_bytes(&input.path),
            width: pw,
            height: ph,
            predictions,
            explanations: vec![],
            grids: vec![],
        };
        out.push(Computed { report, slots: vec![], size: (ih, iw) });
    }
    let cam_names = cam_method_names(opts);
    let cam_methods = cam_names.iter().map(|m| cam::method(m)).collect::<Result<Vec<_>>>()?;
    let cam_refs: Vec<&dyn cam::Method> = cam_methods.iter().map(|m| m.as_ref()).collect();
    let wants_gb = opts.methods.iter().any(|m| m == GUIDED_BACKPROP || m == GUIDED_GRADCAM);
    let slots = classes.iter().map(Vec::len).max().unwrap_or(0);
    for slot in 0..slots {
        let sel: Vec<usize> = (0..n).filter(|&i| classes[i].len() > slot).collect();
        let cls: Vec<usize> = sel.iter().map(|&i| classes[i][slot]).collect();
        let (xs, ts) = if sel.len() == n {
            (x.clone(), trunk.clone())
        } else {
            let idx = candle_core::Tensor::from_iter(sel.iter().map(|&i| i as u32), x.device())?;
            (x.index_select(&idx, 0)?, trunk.index_select(&idx)?)
        };
        let maps = cam_maps(&ex, &xs, &ts, &cls, &cam_refs, opts)?;
        let gb = if wants_gb { Some(guided::guided_backprop(net, &xs, &cls, opts.score)?) } else { None };
        for (j, &i) in sel.iter().enumerate() {
            for (k, name) in cam_names.iter().enumerate() {
                check_finite(inputs[i], &format!("{name} map at {}", opts.layers.join(", ")), &maps[k][j].data)?;
            }
            let map_of = |name: &str| cam_names.iter().position(|m| *m == name).map(|k| maps[k][j].clone());
            let gb_i = match &gb {
                Some(g) => Some(g.get(j)?.flatten_all()?.to_vec1::<f32>()?),
                None => None,
            };
            if let Some(g) = &gb_i {
                check_finite(inputs[i], "Guided Backprop gradient", g)?;
            }
            let outputs = opts
                .methods
                .iter()
                .map(|m| (m.clone(), method_output(m, &map_of, gb_i.as_deref(), (ih, iw))))
                .collect();
            out[i].slots.push((cls[j], outputs));
        }
    }
    Ok(out)
}

/// The CAM methods' maps of a batch (`x`, its trunk up to the first target layer, one class per image):
/// `maps[method][image]`, with `--aug-smooth` where asked.
pub(crate) fn cam_maps(
    ex: &cam::Explainer,
    x: &candle_core::Tensor,
    trunk: &crate::graph::exec::Prefix,
    classes: &[usize],
    cam_refs: &[&dyn cam::Method],
    opts: &Options,
) -> Result<Vec<Vec<Map>>> {
    if cam_refs.is_empty() {
        Ok(vec![])
    } else if opts.aug_smooth {
        cam::maps_aug_smooth(ex, x, classes, opts.score, cam_refs, opts.map_options())
    } else {
        cam::maps_for(ex, x, Some(trunk), classes, opts.score, cam_refs, opts.map_options())
    }
}

/// What one method gives for one image: its map (`map_of`: a CAM method's map by name), the Guided Backprop
/// gradient `gb`, or for Guided Grad-CAM their product (the gradient weighted by the Grad-CAM map of an
/// `ih`×`iw` input).
pub(crate) fn method_output(
    m: &str,
    map_of: &dyn Fn(&str) -> Option<Map>,
    gb: Option<&[f32]>,
    (ih, iw): (usize, usize),
) -> Output {
    if m == GUIDED_BACKPROP {
        Output { map: None, gradient: gb.map(<[f32]>::to_vec) }
    } else if m == GUIDED_GRADCAM {
        let gm = map_of("gradcam").unwrap_or_else(|| Map::new(ih, iw, vec![0.0; ih * iw]));
        let hw = ih * iw;
        let ggc = crate::cam::guided::guided_gradcam(gb.unwrap_or(&[]), &gm.data[..hw]);
        Output { map: Some(gm), gradient: Some(ggc) }
    } else {
        Output { map: map_of(m), gradient: None }
    }
}

/// The rendering part of explaining one input: its pictures (and `.npy` maps) drawn from `computed` and written
/// into a [`FileSet`] that the caller commits; the report with its files. `input` is the one `computed` was
/// made from.
pub fn render_into(
    computed: Computed,
    input: &Input,
    prefix: &str,
    labels: &Labels,
    opts: &Options,
    namer: &Namer,
) -> Result<(Report, FileSet)> {
    let Computed { mut report, slots, size } = computed;
    let wants_grid = opts.grid && opts.methods.len() > 1;
    let mut set = FileSet::new();
    for (class, outputs) in slots {
        let mut tiles = vec![];
        for (m, out) in outputs {
            let target = Target { prefix, class, method: &m, tile: wants_grid };
            let (e, tile) = write_outputs(&mut set, input, &target, out, size, labels, opts, namer)?;
            report.explanations.push(e);
            if let Some(t) = tile {
                tiles.push((m.clone(), t));
            }
        }
        if wants_grid && !tiles.is_empty() {
            let cf = if opts.counterfactual { "-counterfactual" } else { "" };
            let p = namer.safe(opts.out_dir.join(format!("{prefix}.{class}.grid{cf}.png")));
            let head = grid_header(&report, class, labels);
            render::save_png_with(&mut set, &render::grid_with_header(&head, &tiles, GRID_TILE_W), &p, opts.png)?;
            report.grids.push(Grid { class, methods: opts.methods.clone(), file: p.display().to_string() });
        }
    }
    Ok((report, set))
}

/// [`render_into`], the files put in place.
pub fn render(
    computed: Computed,
    input: &Input,
    prefix: &str,
    labels: &Labels,
    opts: &Options,
    namer: &Namer,
) -> Result<Report> {
    let (report, set) = render_into(computed, input, prefix, labels, opts, namer)?;
    set.commit()?;
    Ok(report)
}

/// Width of a tile of the comparison grid.
pub const GRID_TILE_W: u32 = 320;

/// The grid's header: the image's name, the class (index, label) and its probability.
fn grid_header(report: &Report, class: usize, labels: &Labels) -> String {
    let name = Path::new(&report.image).file_name().map_or(report.image.clone(), |n| n.to_string_lossy().into_owned());
    let p = report.predictions.iter().find(|p| p.class == class).map(|p| p.probability);
    match p {
        Some(p) => format!("{name}  class {class} ({})  p={p:.3}", labels.get(class)),
        None => format!("{name}  class {class} ({})", labels.get(class)),
    }
}

/// Which files one method's outputs are for.
struct Target<'a> {
    prefix: &'a str,
    class: usize,
    method: &'a str,
    /// Also make the picture for the comparison grid.
    tile: bool,
}

/// Write one method's pictures (and .npy) for one image and class into `set`; returns its report entry and,
/// if asked, the picture for the comparison grid (at the grid's tile size).
#[allow(clippy::too_many_arguments)]
fn write_outputs(
    set: &mut FileSet,
    input: &Input,
    t: &Target,
    out: Output,
    (ih, iw): (usize, usize),
    labels: &Labels,
    opts: &Options,
    namer: &Namer,
) -> Result<(Explanation, Option<RgbImage>)> {
    let (pw, ph) = input.photo.dimensions();
    let cf = if opts.counterfactual { "-counterfactual" } else { "" };
    let base = format!("{}.{}.{}{cf}", t.prefix, t.class, t.method);
    let path = |kind: &str| namer.safe(opts.out_dir.join(format!("{base}.{kind}")));
    let mut files = Files::default();
    let mut tile = None;
    // a tile keeps the photo's aspect, within 1:4 (a photo a pixel wide would make a tile of millions of rows)
    let tile_h = ((GRID_TILE_W as f64 * ph as f64 / pw.max(1) as f64).round() as u32).clamp(1, 4 * GRID_TILE_W);
    if let Some(grad) = &out.gradient {
        let shown = guided::normalize_for_display(grad);
        if opts.pictures.gradient {
            let p = path("gradient.png");
            render::write_chw_png(set, &shown, ih, iw, pw, ph, &p, opts.png)?;
            files.gradient = Some(p.display().to_string());
        }
        if t.tile {
            tile = Some(render::chw_to_image(&shown, ih, iw, GRID_TILE_W, tile_h));
        }
    }
    let (mut bbox, mut peak) = (None, None);
    if let Some(map) = &out.map {
        let pictures = if out.gradient.is_none() {
            let kind = |on: bool, kind: &str| on.then(|| path(kind));
            let pp = &opts.pictures;
            let (o, h, k) =
                (kind(pp.overlay, "overlay.png"), kind(pp.heatmap, "heatmap.png"), kind(pp.mask, "mask.png"));
            let style =
                render::Style { colormap: opts.colormap, alpha: opts.alpha, threshold: opts.threshold, png: opts.png };
            files.overlay = o.as_ref().map(|p| p.display().to_string());
            files.heatmap = h.as_ref().map(|p| p.display().to_string());
            files.mask = k.as_ref().map(|p| p.display().to_string());
            if t.tile {
                let small =
                    image::imageops::resize(&input.photo, GRID_TILE_W, tile_h, image::imageops::FilterType::Triangle);
                let m = map.resize(tile_h as usize, GRID_TILE_W as usize);
                tile = Some(render::overlay(&small, &m, opts.colormap, opts.alpha));
            }
            Some([o, h, k]).map(|paths| render::MapPictures { paths, style })
        } else {
            None
        };
        let (b, pk) = render::write_map_pictures(set, &input.photo, map, pictures.as_ref())?;
        bbox = b;
        peak = Some([pk.1, pk.0]);
    }
    if opts.save_npy {
        let npy = match (&out.gradient, &out.map) {
            (Some(g), _) => Some(Array::new(vec![3, ih, iw], g.clone())),
            (None, Some(map)) => Some(Array::new(vec![ih, iw], map.data.clone())),
            _ => None,
        };
        if let Some(a) = npy {
            let p = path("npy");
            set.write(&p, &a.to_bytes())?;
            files.npy = Some(p.display().to_string());
        }
    }
    let e = Explanation {
        class: t.class,
        label: labels.get(t.class).to_string(),
        method: t.method.to_string(),
        layers: if t.method == GUIDED_BACKPROP { vec![] } else { opts.layers.clone() },
        counterfactual: opts.counterfactual,
        files,
        bbox,
        peak,
    };
    Ok((e, tile))
}

/// The CAM methods a run computes maps with: those asked for, and Grad-CAM when Guided Grad-CAM needs its map.
pub(crate) fn cam_method_names(opts: &Options) -> Vec<&str> {
    let mut v: Vec<&str> = opts
        .methods
        .iter()
        .map(String::as_str)
        .filter(|m| crate::registry::find(m).is_none_or(|i| i.is_cam()))
        .collect();
    if opts.methods.iter().any(|m| m == GUIDED_GRADCAM) && !v.contains(&"gradcam") {
        v.push("gradcam");
    }
    v
}
