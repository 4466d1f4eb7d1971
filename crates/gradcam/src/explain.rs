//! `gradcam explain` as a library call: one image in, its predictions, maps, pictures and a JSON-ready report
//! out. The CLI only parses arguments, walks folders and prints.

use crate::cam::{
    self, guided,
    postprocess::{bounding_box, BBox, Map},
    Explainer, Score,
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
            return Err(Error::invalid(format!(
                "--alpha {} is outside [0, 1]",
                self.alpha
            )));
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
        let tensor =
            crate::image::preprocess(&photo, net.input_size, &net.normalization, &net.device)?;
        Ok(Input {
            name: path.display().to_string(),
            photo,
            tensor,
        })
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
        Ok(Input {
            name: path.display().to_string(),
            photo,
            tensor: a.to_tensor(&net.device)?,
        })
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
}

/// Unique output name prefixes within a run: `chelsea`, `chelsea-2`, … never an input's own path.
#[derive(Default)]
pub struct Namer {
    used: HashMap<String, usize>,
    inputs: HashSet<PathBuf>,
}

impl Namer {
    pub fn new(inputs: &[PathBuf]) -> Self {
        Namer {
            used: HashMap::new(),
            inputs: inputs
                .iter()
                .filter_map(|p| p.canonicalize().ok())
                .collect(),
        }
    }

    pub fn prefix(&mut self, name: &str) -> String {
        let stem = Path::new(name)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        let stem: String = stem
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
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
        let canon = path
            .parent()
            .and_then(|p| p.canonicalize().ok())
            .map(|p| p.join(path.file_name().unwrap_or_default()));
        match canon {
            Some(c) if self.inputs.contains(&c) => path.with_extension(format!(
                "out.{}",
                path.extension()
                    .map(|e| e.to_string_lossy())
                    .unwrap_or_default()
            )),
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

/// Explain one input: predictions, then for each class and method the map and its pictures.
pub fn explain(
    net: &Network,
    labels: &Labels,
    input: &Input,
    opts: &Options,
    prefix: &str,
    namer: &Namer,
) -> Result<Report> {
    let ex = Explainer::new(net, &opts.layers)?;
    let (ih, iw) = (input.tensor.dims()[2], input.tensor.dims()[3]);
    let (pw, ph) = input.photo.dimensions();
    // The stages before the target layer run once, whatever the number of classes and methods.
    let trunk = ex.prefix(&input.tensor)?;
    let logits = ex.logits_from(&trunk)?.flatten_all()?.to_vec1::<f32>()?;
    let predictions = top_k(&logits, opts.top, labels);
    let classes = resolve_classes(&opts.classes, &logits);
    let mut explanations = vec![];
    let cf = if opts.counterfactual {
        "-counterfactual"
    } else {
        ""
    };
    for &class in &classes {
        let needs_capture = opts.methods.iter().any(|m| m != GUIDED_BACKPROP);
        let cap = if needs_capture {
            Some(ex.capture_from(&trunk, &[class], opts.score)?)
        } else {
            None
        };
        // Each CAM map is computed once per class, whichever methods ask for it (guided-gradcam needs gradcam's).
        let mut maps: HashMap<String, Map> = HashMap::new();
        let mut cam_map = |name: &str| -> Result<Map> {
            if let Some(m) = maps.get(name) {
                return Ok(m.clone());
            }
            let cap = cap
                .as_ref()
                .ok_or_else(|| Error::invalid("internal: no capture"))?;
            let raw = cam::raw_maps(cap, cam::method(name)?.as_ref(), opts.counterfactual)?;
            let map = cam::final_maps(&raw, (ih, iw)).remove(0);
            maps.insert(name.to_string(), map.clone());
            Ok(map)
        };
        let mut gb: Option<Vec<f32>> = None;
        for m in &opts.methods {
            let base = opts.out_dir.join(format!("{prefix}.{class}.{m}{cf}"));
            let path = |kind: &str| namer.safe(PathBuf::from(format!("{}.{kind}", base.display())));
            let mut files = Files::default();
            if (m == GUIDED_BACKPROP || m == GUIDED_GRADCAM) && gb.is_none() {
                let g = guided::guided_backprop(net, &input.tensor, &[class], opts.score)?;
                gb = Some(g.flatten_all()?.to_vec1::<f32>()?);
            }
            let g = gb.as_deref().unwrap_or(&[]);
            // (map, the gradient picture's values for guided methods, the .npy array)
            let (map, gradient, npy) = if m == GUIDED_BACKPROP {
                (
                    None,
                    Some(g.to_vec()),
                    Array::new(vec![3, ih, iw], g.to_vec()),
                )
            } else if m == GUIDED_GRADCAM {
                let gm = cam_map("gradcam")?;
                let hw = ih * iw;
                let ggc: Vec<f32> = g
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v * gm.data[i % hw])
                    .collect();
                (
                    Some(gm),
                    Some(ggc.clone()),
                    Array::new(vec![3, ih, iw], ggc),
                )
            } else {
                let map = cam_map(m)?;
                let npy = Array::new(vec![ih, iw], map.data.clone());
                (Some(map), None, npy)
            };
            if let Some(grad) = &gradient {
                let pic =
                    render::chw_to_image(&guided::normalize_for_display(grad), ih, iw, pw, ph);
                let p = path("gradient.png");
                render::save_png(&pic, &p)?;
                files.gradient = Some(p.display().to_string());
            }
            let mut bbox = None;
            let mut peak = None;
            if let Some(map) = &map {
                let full = map.resize(ph as usize, pw as usize);
                if m != GUIDED_GRADCAM {
                    let o = path("overlay.png");
                    render::save_png(
                        &render::overlay(&input.photo, &full, opts.colormap, opts.alpha),
                        &o,
                    )?;
                    let h = path("heatmap.png");
                    render::save_png(&render::heatmap(&full, opts.colormap), &h)?;
                    let k = path("mask.png");
                    render::save_png(
                        &render::threshold_view(&input.photo, &full, opts.threshold),
                        &k,
                    )?;
                    files.overlay = Some(o.display().to_string());
                    files.heatmap = Some(h.display().to_string());
                    files.mask = Some(k.display().to_string());
                }
                bbox = bounding_box(&full, 0.15);
                let (py, px) = full.argmax();
                peak = Some([px, py]);
            }
            if opts.save_npy {
                let p = path("npy");
                npy.write(&p)?;
                files.npy = Some(p.display().to_string());
            }
            explanations.push(Explanation {
                class,
                label: labels.get(class).to_string(),
                method: m.clone(),
                layers: if m == GUIDED_BACKPROP {
                    vec![]
                } else {
                    opts.layers.clone()
                },
                counterfactual: opts.counterfactual,
                files,
                bbox,
                peak,
            });
        }
    }
    Ok(Report {
        image: input.name.clone(),
        width: pw,
        height: ph,
        predictions,
        explanations,
    })
}
