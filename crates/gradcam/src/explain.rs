//! `gradcam explain` as a library call: one image in, its predictions, maps, pictures and a JSON-ready report
//! out. The CLI only parses arguments, walks folders and prints.

use crate::cam::{
    self, guided,
    postprocess::{bounding_box, BBox, Map},
    Explainer, MapOptions, Score,
};
use crate::classify::{ranking, top_k, Prediction};
use crate::error::{Error, Result};
use crate::labels::Labels;
use crate::models::Network;
use crate::npy::Array;
use crate::render::{self, Colormap};
use image::RgbImage;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

pub const GUIDED_BACKPROP: &str = "guided-backprop";
pub const GUIDED_GRADCAM: &str = "guided-gradcam";

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
            if m != GUIDED_BACKPROP && m != GUIDED_GRADCAM {
                cam::method(m)?;
            }
        }
        for l in &self.layers {
            net.layer(l)?;
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(Error::invalid(format!("--alpha {} is outside [0, 1]", self.alpha)));
        }
        Ok(())
    }
}

/// One input: a decoded photo, or a ready tensor.
pub struct Input {
    /// As given by the user (shown in reports and errors).
    pub name: String,
    /// The photo at its own resolution (for a tensor input: the tensor de-normalised).
    pub photo: RgbImage,
    /// (1, 3, H, W) at the model's input size.
    pub tensor: candle_core::Tensor,
}

impl Input {
    pub fn from_image(path: &Path, net: &Network, max_pixels: u64) -> Result<Input> {
        let photo = crate::image::load_rgb(path, max_pixels)?;
        let tensor = crate::image::preprocess(&photo, net.input_size, &net.normalization, &net.device)?;
        Ok(Input { name: path.display().to_string(), photo, tensor })
    }

    /// A ready 1×3×H×W tensor from a `.npy` file.
    pub fn from_npy(path: &Path, net: &Network) -> Result<Input> {
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
        let n = &net.normalization;
        let photo = RgbImage::from_fn(tw as u32, th as u32, |x, y| {
            image::Rgb([0, 1, 2].map(|c| {
                let v = a.data[c * th * tw + y as usize * tw + x as usize] * n.std[c] + n.mean[c];
                (v * 255.0).round().clamp(0.0, 255.0) as u8
            }))
        });
        Ok(Input { name: path.display().to_string(), photo, tensor: a.to_tensor(&net.device)? })
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

/// Unique output name prefixes within a run: `chelsea`, `chelsea-2`, … never an input's own path.
#[derive(Default)]
pub struct Namer {
    used: HashMap<String, usize>,
    inputs: HashSet<PathBuf>,
}

impl Namer {
    pub fn new(inputs: &[PathBuf]) -> Self {
        Namer { used: HashMap::new(), inputs: inputs.iter().filter_map(|p| p.canonicalize().ok()).collect() }
    }

    pub fn prefix(&mut self, name: &str) -> String {
        let stem =
            Path::new(name).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
        let stem: String =
            stem.chars().map(|c| if c.is_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
        let n = self.used.entry(stem.clone()).or_insert(0);
        *n += 1;
        if *n == 1 {
            stem
        } else {
            format!("{stem}-{n}")
        }
    }

    /// `path`, or a variant of it that is not one of the inputs.
    pub fn safe(&self, path: PathBuf) -> PathBuf {
        let canon =
            path.parent().and_then(|p| p.canonicalize().ok()).map(|p| p.join(path.file_name().unwrap_or_default()));
        match canon {
            Some(c) if self.inputs.contains(&c) => path
                .with_extension(format!("out.{}", path.extension().map(|e| e.to_string_lossy()).unwrap_or_default())),
            _ => path,
        }
    }
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
struct Output {
    /// The map at the input's size (for guided-gradcam: the Grad-CAM map it was weighted with).
    map: Option<Map>,
    /// Guided methods: the 3×H×W gradient.
    gradient: Option<Vec<f32>>,
}

/// Explain one input (a batch of one).
pub fn explain(
    net: &Network,
    labels: &Labels,
    input: &Input,
    opts: &Options,
    prefix: &str,
    namer: &Namer,
) -> Result<Report> {
    Ok(explain_batch(net, labels, std::slice::from_ref(input), &[prefix.to_string()], opts, namer)?.remove(0))
}

/// Explain a batch of inputs: they go through the network together, each with its own classes. For every
/// class slot, one forward and one backward serve all gradient methods; Guided Backprop is one more.
pub fn explain_batch(
    net: &Network,
    labels: &Labels,
    inputs: &[Input],
    prefixes: &[String],
    opts: &Options,
    namer: &Namer,
) -> Result<Vec<Report>> {
    let ex = Explainer::new(net, &opts.layers)?;
    let x = candle_core::Tensor::cat(&inputs.iter().map(|i| &i.tensor).collect::<Vec<_>>(), 0)?;
    let (n, _, ih, iw) = x.dims4()?;
    // The stages before the target layer run once per batch, whatever the number of classes and methods.
    let trunk = ex.prefix(&x)?;
    let logits = ex.logits_from(&trunk)?;
    let mut classes = vec![];
    let mut reports = vec![];
    for (i, input) in inputs.iter().enumerate() {
        let l = logits.get(i)?.to_vec1::<f32>()?;
        classes.push(resolve_classes(&opts.classes, &l));
        let (pw, ph) = input.photo.dimensions();
        let predictions = top_k(&l, opts.top, labels);
        reports.push(Report {
            image: input.name.clone(),
            width: pw,
            height: ph,
            predictions,
            explanations: vec![],
            grids: vec![],
        });
    }
    let cam_names: Vec<&str> = {
        let mut v: Vec<&str> =
            opts.methods.iter().map(String::as_str).filter(|m| *m != GUIDED_BACKPROP && *m != GUIDED_GRADCAM).collect();
        if opts.methods.iter().any(|m| m == GUIDED_GRADCAM) && !v.contains(&"gradcam") {
            v.push("gradcam");
        }
        v
    };
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
            (x.index_select(&idx, 0)?, trunk.index_select(&idx, 0)?)
        };
        let maps = if cam_refs.is_empty() {
            vec![]
        } else if opts.aug_smooth {
            cam::maps_aug_smooth(&ex, &xs, &cls, opts.score, &cam_refs, opts.map_options())?
        } else {
            cam::maps_for(&ex, &xs, Some(&ts), &cls, opts.score, &cam_refs, opts.map_options())?
        };
        let gb = if wants_gb { Some(guided::guided_backprop(net, &xs, &cls, opts.score)?) } else { None };
        for (j, &i) in sel.iter().enumerate() {
            let map_of = |name: &str| cam_names.iter().position(|m| *m == name).map(|k| maps[k][j].clone());
            let gb_i = match &gb {
                Some(g) => Some(g.get(j)?.flatten_all()?.to_vec1::<f32>()?),
                None => None,
            };
            let mut tiles = vec![];
            for m in &opts.methods {
                let out = if m == GUIDED_BACKPROP {
                    Output { map: None, gradient: gb_i.clone() }
                } else if m == GUIDED_GRADCAM {
                    let gm = map_of("gradcam").unwrap_or_else(|| Map::new(ih, iw, vec![0.0; ih * iw]));
                    let hw = ih * iw;
                    let g = gb_i.as_deref().unwrap_or(&[]);
                    let ggc = g.iter().enumerate().map(|(p, v)| v * gm.data[p % hw]).collect();
                    Output { map: Some(gm), gradient: Some(ggc) }
                } else {
                    Output { map: map_of(m), gradient: None }
                };
                let (e, tile) = write_outputs(&inputs[i], &prefixes[i], cls[j], m, out, (ih, iw), labels, opts, namer)?;
                reports[i].explanations.push(e);
                tiles.push((m.clone(), tile));
            }
            if opts.grid && tiles.len() > 1 {
                let cf = if opts.counterfactual { "-counterfactual" } else { "" };
                let p = namer.safe(opts.out_dir.join(format!("{}.{}.grid{cf}.png", prefixes[i], cls[j])));
                render::save_png(&render::grid(&tiles, 320), &p)?;
                reports[i].grids.push(Grid {
                    class: cls[j],
                    methods: opts.methods.clone(),
                    file: p.display().to_string(),
                });
            }
        }
    }
    Ok(reports)
}

/// Write one method's pictures (and .npy) for one image and class; returns its report entry and the picture
/// for the comparison grid.
#[allow(clippy::too_many_arguments)]
fn write_outputs(
    input: &Input,
    prefix: &str,
    class: usize,
    m: &str,
    out: Output,
    (ih, iw): (usize, usize),
    labels: &Labels,
    opts: &Options,
    namer: &Namer,
) -> Result<(Explanation, RgbImage)> {
    let (pw, ph) = input.photo.dimensions();
    let cf = if opts.counterfactual { "-counterfactual" } else { "" };
    let base = opts.out_dir.join(format!("{prefix}.{class}.{m}{cf}"));
    let path = |kind: &str| namer.safe(PathBuf::from(format!("{}.{kind}", base.display())));
    let mut files = Files::default();
    let mut tile = None;
    if let Some(grad) = &out.gradient {
        let pic = render::chw_to_image(&guided::normalize_for_display(grad), ih, iw, pw, ph);
        let p = path("gradient.png");
        render::save_png(&pic, &p)?;
        files.gradient = Some(p.display().to_string());
        tile = Some(pic);
    }
    let (mut bbox, mut peak) = (None, None);
    if let Some(map) = &out.map {
        let full = map.resize(ph as usize, pw as usize);
        if out.gradient.is_none() {
            let overlay = render::overlay(&input.photo, &full, opts.colormap, opts.alpha);
            let o = path("overlay.png");
            render::save_png(&overlay, &o)?;
            let h = path("heatmap.png");
            render::save_png(&render::heatmap(&full, opts.colormap), &h)?;
            let k = path("mask.png");
            render::save_png(&render::threshold_view(&input.photo, &full, opts.threshold), &k)?;
            files.overlay = Some(o.display().to_string());
            files.heatmap = Some(h.display().to_string());
            files.mask = Some(k.display().to_string());
            tile = Some(overlay);
        }
        bbox = bounding_box(&full, 0.15);
        let (py, px) = full.argmax();
        peak = Some([px, py]);
    }
    if opts.save_npy {
        let npy = match (&out.gradient, &out.map) {
            (Some(g), _) => Some(Array::new(vec![3, ih, iw], g.clone())),
            (None, Some(map)) => Some(Array::new(vec![ih, iw], map.data.clone())),
            _ => None,
        };
        if let Some(a) = npy {
            let p = path("npy");
            a.write(&p)?;
            files.npy = Some(p.display().to_string());
        }
    }
    let e = Explanation {
        class,
        label: labels.get(class).to_string(),
        method: m.to_string(),
        layers: if m == GUIDED_BACKPROP { vec![] } else { opts.layers.clone() },
        counterfactual: opts.counterfactual,
        files,
        bbox,
        peak,
    };
    Ok((e, tile.unwrap_or_else(|| input.photo.clone())))
}
