//! [`explain`](super::explain) without files: one image in, its report and the bytes of its pictures (PNG) and
//! maps (`.npy`) out, nothing written anywhere (for `gradcam serve`). The maps, boxes, peaks and pixels are the
//! ones the file-writing path makes (the same [`Output`]s, drawn by the same formulas, row by row, so that the
//! enlarged map never exists whole in memory); only the PNG compression level differs (fast: pictures
//! that go over a network are made for each request).

use super::{
    check_finite, check_logits, grid_header, resolve_classes, Explanation, Files, Grid, Input, Options, Output, Report,
    GRID_TILE_W, GUIDED_BACKPROP, GUIDED_GRADCAM,
};
use crate::cam::{
    self, guided,
    postprocess::{BBox, Map, StreamingBox},
    Explainer,
};
use crate::classify::top_k;
use crate::error::{Error, Result};
use crate::labels::Labels;
use crate::models::Network;
use crate::npy::Array;
use crate::render::{self, Style};
use image::RgbImage;

/// The kinds of file an explanation can have, as named in the report's `files`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Overlay,
    Heatmap,
    Mask,
    Gradient,
    Npy,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Overlay, Kind::Heatmap, Kind::Mask, Kind::Gradient, Kind::Npy];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Overlay => "overlay",
            Kind::Heatmap => "heatmap",
            Kind::Mask => "mask",
            Kind::Gradient => "gradient",
            Kind::Npy => "npy",
        }
    }
}

/// Which files to make. The `.npy` maps are made when `Options::save_npy` is set and `npy` here.
#[derive(Clone, Copy, Debug)]
pub struct Wanted {
    pub overlay: bool,
    pub heatmap: bool,
    pub mask: bool,
    pub gradient: bool,
    pub npy: bool,
    pub grid: bool,
}

impl Wanted {
    pub const ALL: Wanted = Wanted { overlay: true, heatmap: true, mask: true, gradient: true, npy: true, grid: true };
    pub const NONE: Wanted =
        Wanted { overlay: false, heatmap: false, mask: false, gradient: false, npy: false, grid: false };

    fn kind(&self, k: Kind) -> bool {
        match k {
            Kind::Overlay => self.overlay,
            Kind::Heatmap => self.heatmap,
            Kind::Mask => self.mask,
            Kind::Gradient => self.gradient,
            Kind::Npy => self.npy,
        }
    }
}

/// The bytes of one explanation's files (PNG pictures; the map as float32 `.npy`).
#[derive(Clone, Debug, Default)]
pub struct Bytes {
    pub overlay: Option<Vec<u8>>,
    pub heatmap: Option<Vec<u8>>,
    pub mask: Option<Vec<u8>>,
    pub gradient: Option<Vec<u8>>,
    pub npy: Option<Vec<u8>>,
}

impl Bytes {
    pub fn get(&self, k: Kind) -> Option<&Vec<u8>> {
        match k {
            Kind::Overlay => self.overlay.as_ref(),
            Kind::Heatmap => self.heatmap.as_ref(),
            Kind::Mask => self.mask.as_ref(),
            Kind::Gradient => self.gradient.as_ref(),
            Kind::Npy => self.npy.as_ref(),
        }
    }
}

/// An image's report with the bytes of its files: `files[i]` belongs to `report.explanations[i]`, `grids[i]`
/// (a PNG) to `report.grids[i]`. The report's `files` and grid `file` fields are empty: the caller names the
/// bytes (a URL, a `data:` URL).
pub struct InMemory {
    pub report: Report,
    pub files: Vec<Bytes>,
    pub grids: Vec<Vec<u8>>,
}

/// Explain one input as [`super::explain`] does, with the pictures and maps made in memory (only those in
/// `wanted`). `opts.out_dir` is not used.
pub fn explain_in_memory(
    net: &Network,
    labels: &Labels,
    input: &Input,
    opts: &Options,
    wanted: Wanted,
) -> Result<InMemory> {
    let ex = Explainer::new(net, &opts.layers)?;
    let x = &input.tensor;
    let (n, _, ih, iw) = x.dims4()?;
    if n != 1 {
        return Err(Error::invalid(format!("{}: a tensor of {n} images, expected one", input.name)));
    }
    let trunk = ex.prefix(x)?;
    let logits = ex.logits_from(&trunk)?.get(0)?.to_vec1::<f32>()?;
    check_logits(net, input, &logits)?;
    let classes = resolve_classes(&opts.classes, &logits);
    let (pw, ph) = input.photo.dimensions();
    let mut report = Report {
        image: input.name.clone(),
        image_bytes: None,
        width: pw,
        height: ph,
        predictions: top_k(&logits, opts.top, labels),
        explanations: vec![],
        grids: vec![],
    };
    let mut files = vec![];
    let mut grids = vec![];
    let cam_names = super::cam_method_names(opts);
    let cam_methods = cam_names.iter().map(|m| cam::method(m)).collect::<Result<Vec<_>>>()?;
    let cam_refs: Vec<&dyn cam::Method> = cam_methods.iter().map(|m| m.as_ref()).collect();
    let wants_gb = opts.methods.iter().any(|m| m == GUIDED_BACKPROP || m == GUIDED_GRADCAM);
    let wants_grid = wanted.grid && opts.grid && opts.methods.len() > 1;
    for class in classes {
        let maps = super::cam_maps(&ex, x, &trunk, &[class], &cam_refs, opts)?;
        for (k, name) in cam_names.iter().enumerate() {
            check_finite(input, &format!("{name} map at {}", opts.layers.join(", ")), &maps[k][0].data)?;
        }
        let gb = if wants_gb {
            let g = guided::guided_backprop(net, x, &[class], opts.score)?.flatten_all()?.to_vec1::<f32>()?;
            check_finite(input, "Guided Backprop gradient", &g)?;
            Some(g)
        } else {
            None
        };
        let map_of = |name: &str| cam_names.iter().position(|m| *m == name).map(|k| maps[k][0].clone());
        let mut tiles = vec![];
        for m in &opts.methods {
            let out = super::method_output(m, &map_of, gb.as_deref(), (ih, iw));
            let (e, bytes, tile) = outputs_in_memory(input, class, m, out, (ih, iw), labels, opts, wanted, wants_grid)?;
            report.explanations.push(e);
            files.push(bytes);
            if let Some(t) = tile {
                tiles.push((m.clone(), t));
            }
        }
        if wants_grid && !tiles.is_empty() {
            let head = grid_header(&report, class, labels);
            grids.push(png_bytes(&render::grid_with_header(&head, &tiles, GRID_TILE_W))?);
            report.grids.push(Grid { class, methods: opts.methods.clone(), file: String::new() });
        }
    }
    Ok(InMemory { report, files, grids })
}

/// One method's pictures and map for one class, as `write_outputs` makes them, as bytes.
#[allow(clippy::too_many_arguments)]
fn outputs_in_memory(
    input: &Input,
    class: usize,
    method: &str,
    out: Output,
    (ih, iw): (usize, usize),
    labels: &Labels,
    opts: &Options,
    wanted: Wanted,
    tile: bool,
) -> Result<(Explanation, Bytes, Option<RgbImage>)> {
    let (pw, ph) = input.photo.dimensions();
    let mut bytes = Bytes::default();
    let mut tile_img = None;
    let tile_h = ((GRID_TILE_W as f64 * ph as f64 / pw.max(1) as f64).round() as u32).clamp(1, 4 * GRID_TILE_W);
    if let Some(grad) = &out.gradient {
        let shown = guided::normalize_for_display(grad);
        if wanted.gradient {
            bytes.gradient = Some(chw_png(&shown, ih, iw, pw, ph)?);
        }
        if tile {
            tile_img = Some(render::chw_to_image(&shown, ih, iw, GRID_TILE_W, tile_h));
        }
    }
    let (mut bbox, mut peak) = (None, None);
    if let Some(map) = &out.map {
        let style = Style { colormap: opts.colormap, alpha: opts.alpha, threshold: opts.threshold, png: opts.png };
        let kinds = if out.gradient.is_none() {
            if tile {
                let small =
                    image::imageops::resize(&input.photo, GRID_TILE_W, tile_h, image::imageops::FilterType::Triangle);
                let m = map.resize(tile_h as usize, GRID_TILE_W as usize);
                tile_img = Some(render::overlay(&small, &m, opts.colormap, opts.alpha));
            }
            [Kind::Overlay, Kind::Heatmap, Kind::Mask].into_iter().filter(|k| wanted.kind(*k)).collect()
        } else {
            vec![]
        };
        let (b, pk, pics) = map_pictures(&input.photo, map, style, &kinds)?;
        for (k, png) in kinds.iter().zip(pics) {
            match k {
                Kind::Overlay => bytes.overlay = Some(png),
                Kind::Heatmap => bytes.heatmap = Some(png),
                _ => bytes.mask = Some(png),
            }
        }
        bbox = b;
        peak = Some([pk.1, pk.0]);
    }
    if opts.save_npy && wanted.npy {
        bytes.npy = match (&out.gradient, &out.map) {
            (Some(g), _) => Some(Array::new(vec![3, ih, iw], g.clone()).to_bytes()),
            (None, Some(map)) => Some(Array::new(vec![ih, iw], map.data.clone()).to_bytes()),
            _ => None,
        };
    }
    let e = Explanation {
        class,
        label: labels.get(class).to_string(),
        method: method.to_string(),
        layers: if method == GUIDED_BACKPROP { vec![] } else { opts.layers.clone() },
        counterfactual: opts.counterfactual,
        files: Files::default(),
        bbox,
        peak,
    };
    Ok((e, bytes, tile_img))
}

/// A PNG being written into memory, row by row.
struct PngVec {
    w: png::StreamWriter<'static, Sink>,
    out: Sink,
}

/// A growing buffer that the PNG stream writes into and that is read back when the stream is finished.
#[derive(Clone, Default)]
struct Sink(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn png_error(e: png::EncodingError) -> Error {
    Error::invalid(format!("cannot encode the PNG: {e}"))
}

impl PngVec {
    fn new(width: u32, height: u32) -> Result<Self> {
        let out = Sink::default();
        let mut enc = png::Encoder::new(out.clone(), width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        enc.set_filter(png::Filter::Adaptive);
        let w = enc.write_header().map_err(png_error)?.into_stream_writer().map_err(png_error)?;
        Ok(PngVec { w, out })
    }

    fn row(&mut self, rgb: &[u8]) -> Result<()> {
        use std::io::Write;
        self.w.write_all(rgb).map_err(|e| Error::invalid(format!("cannot encode the PNG: {e}")))
    }

    fn finish(self) -> Result<Vec<u8>> {
        self.w.finish().map_err(png_error)?;
        Ok(self.out.0.take())
    }
}

/// An RGB picture as PNG bytes.
pub fn png_bytes(img: &RgbImage) -> Result<Vec<u8>> {
    let mut png = PngVec::new(img.width(), img.height())?;
    for row in img.as_raw().chunks_exact(img.width().max(1) as usize * 3) {
        png.row(row)?;
    }
    png.finish()
}

/// The paper's box, the (row, column) of the peak, and the PNG pictures asked.
type MapPictures = (Option<BBox>, (usize, usize), Vec<Vec<u8>>);

/// As `render::write_map_pictures`: the map enlarged to the photo's size row by row, the box and the peak, and
/// the pictures of `kinds` (overlay, heatmap, mask) as PNG bytes, in that order.
fn map_pictures(photo: &RgbImage, map: &Map, style: Style, kinds: &[Kind]) -> Result<MapPictures> {
    let (pw, ph) = (photo.width() as usize, photo.height() as usize);
    let rows = map.rows(ph, pw);
    let mut r = vec![0f32; pw];
    let mut max = f32::NEG_INFINITY;
    for y in 0..ph {
        rows.row(y, &mut r);
        max = r.iter().fold(max, |a, b| a.max(*b));
    }
    let mut sb = StreamingBox::new(pw, max, 0.15);
    let mut pngs = kinds.iter().map(|_| PngVec::new(pw as u32, ph as u32)).collect::<Result<Vec<_>>>()?;
    let mut line = vec![0u8; pw * 3];
    let a = style.alpha.clamp(0.0, 1.0);
    for y in 0..ph {
        rows.row(y, &mut r);
        sb.push(&r);
        let photo_row = &photo.as_raw()[y * pw * 3..(y + 1) * pw * 3];
        for (k, png) in kinds.iter().zip(pngs.iter_mut()) {
            for ((px, v), dst) in photo_row.chunks_exact(3).zip(&r).zip(line.chunks_exact_mut(3)) {
                match k {
                    Kind::Overlay => {
                        let heat = style.colormap.color(*v);
                        for c in 0..3 {
                            dst[c] = crate::render::round_u8(a * heat[c] as f32 + (1.0 - a) * px[c] as f32);
                        }
                    }
                    Kind::Heatmap => dst.copy_from_slice(&style.colormap.color(*v)),
                    _ => {
                        if *v > style.threshold {
                            dst.copy_from_slice(px);
                        } else {
                            dst.fill(0);
                        }
                    }
                }
            }
            png.row(&line)?;
        }
    }
    let peak = sb.argmax();
    let pngs = pngs.into_iter().map(PngVec::finish).collect::<Result<Vec<_>>>()?;
    Ok((sb.finish(), peak, pngs))
}

/// As `render::write_chw_png`, into memory.
fn chw_png(x: &[f32], h: usize, w: usize, out_w: u32, out_h: u32) -> Result<Vec<u8>> {
    let chans: Vec<Map> = (0..3).map(|c| Map::new(h, w, x[c * h * w..(c + 1) * h * w].to_vec())).collect();
    let rows: Vec<_> = chans.iter().map(|m| m.rows(out_h as usize, out_w as usize)).collect();
    let ow = out_w as usize;
    let mut r = vec![vec![0f32; ow]; 3];
    let mut line = vec![0u8; ow * 3];
    let mut png = PngVec::new(out_w, out_h)?;
    for y in 0..out_h as usize {
        for c in 0..3 {
            rows[c].row(y, &mut r[c]);
        }
        for (i, dst) in line.chunks_exact_mut(3).enumerate() {
            for c in 0..3 {
                dst[c] = crate::render::round_u8(r[c][i] * 255.0);
            }
        }
        png.row(&line)?;
    }
    png.finish()
}
