//! The routes: the page and its files, the versioned API (`/v1/…`), `/healthz`.

use crate::assets;
use crate::body::{self, Upload};
use crate::engine::{Engine, Stop, Work};
use crate::error::ApiError;
use crate::query::{self, Params};
use crate::{Config, Model};
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use gradcam::cam::Score;
use gradcam::explain::memory::{explain_in_memory, png_bytes, InMemory, Kind, Wanted};
use gradcam::explain::{self, ClassSpec, Input, Options};
use gradcam::registry;
use gradcam::render::Colormap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

pub struct AppState {
    pub model: Arc<Model>,
    pub engine: Engine,
    pub config: Config,
    /// The example photos' names (the only names `/v1/examples/{name}` serves).
    pub examples: Vec<String>,
}

type AppRef = Arc<AppState>;

pub fn router(state: AppRef) -> Router {
    Router::new()
        .route("/", get(|| async { assets::page("text/html; charset=utf-8", assets::INDEX_HTML) }))
        .route("/app.js", get(|| async { assets::page("text/javascript; charset=utf-8", assets::APP_JS) }))
        .route("/app.css", get(|| async { assets::page("text/css; charset=utf-8", assets::APP_CSS) }))
        .route("/healthz", get(healthz))
        .route(
            "/v1/openapi.json",
            get(|| async { json_response(StatusCode::OK, assets::OPENAPI_JSON.as_bytes().to_vec()) }),
        )
        .route("/v1/models", get(models))
        .route("/v1/layers", get(layers))
        .route("/v1/examples", get(examples))
        .route("/v1/examples/{name}", get(example))
        .route("/v1/classify", post(classify))
        .route("/v1/explain", post(explain))
        .fallback(|req: Request| async move {
            ApiError::not_found(format!("no such endpoint: {} (see /v1/openapi.json)", req.uri().path()))
        })
        .method_not_allowed_fallback(|req: Request| async move {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} does not take {} (see /v1/openapi.json)", req.uri().path(), req.method()),
            )
        })
        .with_state(state)
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn json_value(v: &serde_json::Value) -> Response {
    json_response(StatusCode::OK, v.to_string().into_bytes())
}

fn bytes_response(ctype: &'static str, bytes: Vec<u8>, download: Option<&str>) -> Response {
    let mut r = Response::new(Body::from(bytes));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    if let Some(name) = download.and_then(|n| HeaderValue::from_str(&format!("inline; filename=\"{n}\"")).ok()) {
        h.insert(header::CONTENT_DISPOSITION, name);
    }
    r
}

async fn healthz(State(s): State<AppRef>) -> Response {
    json_value(&serde_json::json!({
        "status": "ok",
        "model": s.model.net.name,
        "workers": s.engine.workers,
        "queue": s.engine.queue,
        "in_use": s.engine.in_use(),
    }))
}

async fn models(State(s): State<AppRef>) -> Response {
    use gradcam::models::zoo;
    let list: Vec<serde_json::Value> = zoo::MODELS
        .iter()
        .map(|m| {
            let weights = match zoo::local_weights(m) {
                Some(p) if zoo::check_local(m, &p).is_ok() => "cached",
                Some(_) => "unusable",
                None => match m.source {
                    zoo::Source::ArchitectureOnly => "none published",
                    _ => "not fetched",
                },
            };
            serde_json::json!({"name": m.name, "description": m.description, "weights": weights,
                               "loaded": m.name == s.model.net.name})
        })
        .collect();
    json_value(&serde_json::json!({"loaded": s.model.net.name, "models": list}))
}

async fn layers(State(s): State<AppRef>, req: Request) -> Response {
    let r = (|| {
        let p = Params::new(query::parse(req.uri().query())?, vec![], &["model"])?;
        if let Some(m) = p.one("model")? {
            if m != s.model.net.name {
                return Err(ApiError::not_found(format!(
                    "model `{m}` is not loaded: this server serves {} (start another with --model {m})",
                    s.model.net.name
                )));
            }
        }
        let (h, w) = s.model.net.input_size;
        Ok(json_value(&serde_json::json!({
            "model": s.model.net.name,
            "input": [3, h, w],
            "default": s.model.default_layer,
            "layers": s.model.layers,
        })))
    })();
    r.unwrap_or_else(IntoResponse::into_response)
}

async fn examples(State(s): State<AppRef>) -> Response {
    let list: Vec<serde_json::Value> =
        s.examples.iter().map(|n| serde_json::json!({"name": n, "url": format!("/v1/examples/{n}")})).collect();
    json_value(&serde_json::json!({"examples": list}))
}

async fn example(State(s): State<AppRef>, Path(name): Path<String>) -> Response {
    // only a name of the list: never a path from the client
    let (Some(dir), Some(n)) = (&s.config.examples, s.examples.iter().find(|n| **n == name)) else {
        return ApiError::not_found(format!("no example photo `{name}` (see /v1/examples)")).into_response();
    };
    let ctype = assets::image_type(n).unwrap_or("application/octet-stream");
    match tokio::fs::read(dir.join(n)).await {
        Ok(b) if b.len() <= s.config.max_body => bytes_response(ctype, b, None),
        Ok(_) => ApiError::not_found(format!("example `{name}` has grown over the body limit")).into_response(),
        Err(e) => ApiError::not_found(format!("example `{name}` cannot be read: {e}")).into_response(),
    }
}

/// The common start of the POST endpoints, within the request's timeout: a queue slot, the body, the options.
async fn with_upload<F>(s: AppRef, req: Request, allowed: &'static [&'static str], then: F) -> Response
where
    F: FnOnce(&AppState, &HeaderMap, Params, Upload) -> Result<Work, ApiError> + Send,
{
    let deadline = Instant::now() + s.config.timeout;
    let (parts, body) = req.into_parts();
    let limit = s.config.max_body;
    let inner = async {
        let slot = match s.engine.admit() {
            Ok(slot) => slot,
            Err(e) => {
                // read what the client sends (bounded) so that it sees the 503, not a reset
                return Err(match body::read_limited(&parts.headers, body, 0, crate::DRAIN_BYTES).await {
                    Err(ApiError { close: true, .. }) => ApiError { close: true, ..e },
                    _ => e,
                });
            }
        };
        let bytes = body::read_limited(&parts.headers, body, limit, crate::DRAIN_BYTES).await?;
        let up = body::upload(&parts.headers, bytes).await?;
        let q = query::parse(parts.uri.query())?;
        let params = Params::new(q, up.options.clone(), allowed)?;
        let work = then(&s, &parts.headers, params, up)?;
        s.engine.run(slot, deadline, work).await
    };
    match tokio::time::timeout_at(deadline.into(), inner).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => e.into_response(),
        // the body may be half read: close the connection
        Err(_) => ApiError { close: true, ..ApiError::timed_out() }.into_response(),
    }
}

/// Decode an upload as the model's input.
fn decode(m: &Model, up: &Upload, limits: &gradcam::image::ImageLimits) -> Result<Input, ApiError> {
    let photo = gradcam::image::decode_bytes(&up.image, &up.name, limits).map_err(ApiError::from_input)?;
    let net = &m.net;
    let tensor = gradcam::image::preprocess(&photo, net.input_size, &net.normalization, &net.device)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Input { path: PathBuf::from(&up.name), name: up.name.clone(), photo, tensor })
}

const CLASSIFY_PARAMS: &[&str] = &["k", "top"];

async fn classify(State(s): State<AppRef>, req: Request) -> Response {
    with_upload(s, req, CLASSIFY_PARAMS, |s, _, p, up| {
        let n = s.model.labels.len();
        let k = match p.one("top")? {
            Some(_) => p.count("top", 5, n)?,
            None => p.count("k", 5, n)?,
        };
        let limits = s.config.limits;
        Ok(Box::new(move |m: &Model, _: &Stop| {
            let input = decode(m, &up, &limits)?;
            let logits = m
                .net
                .forward(&input.tensor)
                .and_then(|t| Ok(t.flatten_all()?.to_vec1::<f32>()?))
                .map_err(|e| ApiError::internal(e.to_string()))?;
            explain::check_logits(&m.net, &input, &logits).map_err(ApiError::from_input)?;
            let predictions = gradcam::classify::top_k(&logits, k, &m.labels);
            let doc = serde_json::json!({
                "model": m.net.name,
                "results": [{"image": input.name, "width": input.photo.width(), "height": input.photo.height(),
                             "predictions": predictions}],
                "errors": [],
            });
            Ok(json_value(&doc))
        }))
    })
    .await
}

const EXPLAIN_PARAMS: &[&str] = &[
    "class",
    "method",
    "layer",
    "colormap",
    "alpha",
    "threshold",
    "score",
    "counterfactual",
    "eigen-smooth",
    "aug-smooth",
    "save-npy",
    "no-grid",
    "top",
    "picture",
];

/// What a `picture` asks for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Picture {
    Kind(Kind),
    Grid,
    /// The upload as decoded (EXIF orientation applied, RGB): for a page whose browser cannot show the format.
    Photo,
}

const PICTURES: &str = "overlay, heatmap, mask, gradient, grid, photo";

fn parse_picture(v: &str) -> Result<Picture, ApiError> {
    Ok(match v {
        "overlay" => Picture::Kind(Kind::Overlay),
        "heatmap" => Picture::Kind(Kind::Heatmap),
        "mask" => Picture::Kind(Kind::Mask),
        "gradient" => Picture::Kind(Kind::Gradient),
        "grid" => Picture::Grid,
        "photo" => Picture::Photo,
        _ => return Err(ApiError::bad(format!("picture={v}: expected one of {PICTURES}"))),
    })
}

fn is_guided(m: &str) -> bool {
    registry::find(m).is_some_and(|i| i.output == registry::Output::InputGradient)
}

/// Classes as the CLI's `--class` reads them; 404 for a class the model does not have.
fn parse_classes(specs: &[String], m: &Model) -> Result<Vec<ClassSpec>, ApiError> {
    let labels = &m.labels;
    let n = labels.len();
    let mut out = vec![];
    for s in specs {
        if let Some(k) = s.strip_prefix("top").and_then(|k| k.parse::<usize>().ok()) {
            if k == 0 || k > n {
                return Err(ApiError::bad(format!("class={s}: expected top1 .. top{n} (the model has {n} classes)")));
            }
            out.push(ClassSpec::Top(k));
        } else if let Ok(i) = s.parse::<usize>() {
            if i >= n {
                return Err(ApiError::not_found(format!(
                    "class {i} is out of range: the model has {n} classes (0..{})",
                    n.saturating_sub(1)
                )));
            }
            out.push(ClassSpec::Index(i));
        } else {
            let q = s.to_lowercase();
            if !(0..n).any(|i| labels.get(i).to_lowercase().contains(&q)) {
                return Err(ApiError::not_found(format!(
                    "no class matches `{s}` (give an index, a label or part of one, or topN)"
                )));
            }
            out.push(ClassSpec::Index(labels.resolve(s).map_err(ApiError::from_input)?));
        }
    }
    if out.is_empty() {
        out.push(ClassSpec::Top(1));
    }
    Ok(out)
}

/// The explain options of a request, checked: 400 for a bad value, 404 for a class or layer the model lacks.
fn explain_options(p: &Params, m: &Model) -> Result<Options, ApiError> {
    let mut methods: Vec<String> = vec![];
    let given = p.list("method");
    for name in if given.is_empty() { vec!["gradcam".to_string()] } else { given } {
        for n in registry::expand([name.as_str()]).map_err(|e| ApiError::bad(format!("method={name}: {e}")))? {
            if !methods.contains(&n) {
                methods.push(n);
            }
        }
    }
    let mut layers = p.list("layer");
    if layers.is_empty() {
        layers.push(m.default_layer.clone());
    }
    for l in &layers {
        m.net.layer(l).map_err(|e| ApiError::not_found(e.to_string()))?;
    }
    let mut o = Options::new(layers, methods, PathBuf::new());
    o.classes = parse_classes(&p.list("class"), m)?;
    o.counterfactual = p.flag("counterfactual")?;
    o.score = match p.one("score")?.as_deref() {
        None | Some("logit") => Score::Logit,
        Some("softmax") => Score::Softmax,
        Some(s) => return Err(ApiError::bad(format!("score={s}: expected logit or softmax"))),
    };
    o.alpha = p.number("alpha", 0.5)?;
    o.threshold = p.number("threshold", 0.75)?;
    if let Some(c) = p.one("colormap")? {
        o.colormap = Colormap::parse(&c).map_err(|e| ApiError::bad(format!("colormap={c}: {e}")))?;
    }
    o.save_npy = p.flag("save-npy")?;
    o.eigen_smooth = p.flag("eigen-smooth")?;
    o.aug_smooth = p.flag("aug-smooth")?;
    o.grid = !p.flag("no-grid")?;
    o.top = p.count("top", 5, m.labels.len())?;
    o.validate(&m.net).map_err(|e| ApiError::bad(e.to_string()))?;
    Ok(o)
}

/// The picture an `Accept: image/png` request gets without `picture`: the grid for several methods, else the
/// first method's overlay (its gradient for a guided method).
fn default_picture(o: &Options) -> Picture {
    if o.methods.len() > 1 && o.grid {
        Picture::Grid
    } else if o.methods.first().is_some_and(|m| is_guided(m)) {
        Picture::Kind(Kind::Gradient)
    } else {
        Picture::Kind(Kind::Overlay)
    }
}

/// Whether the picture asked can exist for these options (checked before the work is queued).
fn check_picture(pic: Picture, o: &Options) -> Result<(), ApiError> {
    let ok = match pic {
        Picture::Photo => true,
        Picture::Grid => o.methods.len() > 1 && o.grid,
        Picture::Kind(Kind::Gradient) => o.methods.iter().any(|m| is_guided(m)),
        Picture::Kind(_) => o.methods.iter().any(|m| !is_guided(m)),
    };
    if ok {
        return Ok(());
    }
    Err(ApiError::bad(match pic {
        Picture::Grid => "picture=grid: a grid needs several methods (and no no-grid)".to_string(),
        Picture::Kind(Kind::Gradient) => {
            "picture=gradient: only guided-backprop and guided-gradcam have a gradient picture".to_string()
        }
        Picture::Kind(k) => format!(
            "picture={}: guided methods have a gradient picture only; ask a CAM method (e.g. gradcam) too",
            k.name()
        ),
        Picture::Photo => unreachable!("a photo is always there"),
    }))
}

/// The most classes `specs` can come to (the union of the top-k's is the largest k's; indices add one each).
fn class_bound(specs: &[ClassSpec], n: usize) -> usize {
    let top = specs.iter().filter_map(|s| if let ClassSpec::Top(k) = s { Some(*k) } else { None }).max().unwrap_or(0);
    let mut indices: Vec<usize> =
        specs.iter().filter_map(|s| if let ClassSpec::Index(i) = s { Some(*i) } else { None }).collect();
    indices.sort_unstable();
    indices.dedup();
    (top + indices.len()).clamp(1, n.max(1))
}

/// 400 for a request asking more than [`crate::MAX_EXPLANATIONS`] explanations (checked before it is queued).
fn check_explanations(o: &Options, n: usize) -> Result<(), ApiError> {
    let classes = class_bound(&o.classes, n);
    let count = classes * o.methods.len();
    if count > crate::MAX_EXPLANATIONS {
        return Err(ApiError::bad(format!(
            "class × method: up to {count} explanations ({classes} classes × {} methods), over the limit of {} a \
             request; ask fewer classes or methods",
            o.methods.len(),
            crate::MAX_EXPLANATIONS
        )));
    }
    Ok(())
}

/// The classes of `specs` as the library resolves them (`explain::resolve_classes`): in order, each once.
fn resolve_classes(specs: &[ClassSpec], logits: &[f32]) -> Vec<usize> {
    let rank = gradcam::classify::ranking(logits);
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
        out.extend(rank.first());
    }
    out
}

/// [`explain_in_memory`] within the request's limits: 413 when its explanations times the image's pixels are
/// over `budget`; several classes are explained one at a time (the same report, explanations and grids as one
/// call makes), and the work stops between them once the request has timed out or its client has gone, so that
/// a worker is not held long past the request's deadline.
fn explain_within(
    m: &Model,
    input: &Input,
    opts: &Options,
    wanted: Wanted,
    budget: u64,
    stop: &Stop,
) -> Result<InMemory, ApiError> {
    let lib = |e: gradcam::Error| match e {
        gradcam::Error::Invalid(_) => ApiError::bad(e.to_string()),
        e => ApiError::internal(e.to_string()),
    };
    let classes = match opts.classes.as_slice() {
        [ClassSpec::Top(1)] | [ClassSpec::Index(_)] => None,
        specs => {
            let ex = gradcam::cam::Explainer::new(&m.net, &opts.layers).map_err(lib)?;
            let logits = ex
                .prefix(&input.tensor)
                .and_then(|p| ex.logits_from(&p))
                .and_then(|t| Ok(t.flatten_all()?.to_vec1::<f32>()?))
                .map_err(lib)?;
            explain::check_logits(&m.net, input, &logits).map_err(ApiError::from_input)?;
            Some(resolve_classes(specs, &logits))
        }
    };
    let n = classes.as_ref().map_or(1, Vec::len);
    let (w, h) = input.photo.dimensions();
    let pixels = u64::from(w) * u64::from(h) * (n * opts.methods.len()) as u64;
    if pixels > budget {
        return Err(ApiError::too_large(format!(
            "{} explanations ({n} classes × {} methods) of a {w}x{h} image are {:.1} megapixels of pictures, over \
             the limit of {:.1} (the server's --max-explained-pixels); ask fewer classes or methods, or send a \
             smaller image",
            n * opts.methods.len(),
            opts.methods.len(),
            pixels as f64 / 1e6,
            budget as f64 / 1e6
        )));
    }
    let Some(classes) = classes else {
        return explain_in_memory(&m.net, &m.labels, input, opts, wanted).map_err(lib);
    };
    let mut all: Option<InMemory> = None;
    for c in classes {
        if stop.requested() {
            return Err(ApiError::timed_out());
        }
        let mut o = opts.clone();
        o.classes = vec![ClassSpec::Index(c)];
        let r = explain_in_memory(&m.net, &m.labels, input, &o, wanted).map_err(lib)?;
        match &mut all {
            None => all = Some(r),
            Some(a) => {
                a.report.explanations.extend(r.report.explanations);
                a.report.grids.extend(r.report.grids);
                a.files.extend(r.files);
                a.grids.extend(r.grids);
            }
        }
    }
    all.ok_or_else(|| ApiError::internal("no class to explain"))
}

fn wants_png(h: &HeaderMap) -> bool {
    let accept = h.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
    let a = accept.to_ascii_lowercase();
    a.contains("image/png") && !a.contains("application/json")
}

fn data_url(mime: &str, bytes: &[u8]) -> String {
    format!("data:{mime};base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

async fn explain(State(s): State<AppRef>, req: Request) -> Response {
    with_upload(s, req, EXPLAIN_PARAMS, |s, headers, p, up| {
        let opts = explain_options(&p, &s.model)?;
        let picture = match p.one("picture")? {
            Some(v) => Some(parse_picture(&v)?),
            None if wants_png(headers) => Some(default_picture(&opts)),
            None => None,
        };
        if let Some(pic) = picture {
            check_picture(pic, &opts)?;
        }
        check_explanations(&opts, s.model.labels.len())?;
        let (limits, budget) = (s.config.limits, s.config.max_explained_pixels);
        Ok(Box::new(move |m: &Model, stop: &Stop| {
            let input = decode(m, &up, &limits)?;
            let stem = gradcam::naming::stem_of(std::path::Path::new(&input.name));
            let wanted = match picture {
                None => Wanted::ALL,
                Some(Picture::Photo) => {
                    let png = png_bytes(&input.photo).map_err(|e| ApiError::internal(e.to_string()))?;
                    return Ok(bytes_response("image/png", png, Some(&format!("{stem}.png"))));
                }
                Some(Picture::Grid) => Wanted { grid: true, ..Wanted::NONE },
                Some(Picture::Kind(k)) => Wanted {
                    overlay: k == Kind::Overlay,
                    heatmap: k == Kind::Heatmap,
                    mask: k == Kind::Mask,
                    gradient: k == Kind::Gradient,
                    ..Wanted::NONE
                },
            };
            let r = explain_within(m, &input, &opts, wanted, budget, stop)?;
            match picture {
                Some(Picture::Grid) => {
                    let g = r.grids.into_iter().next().ok_or_else(|| ApiError::internal("no grid was made"))?;
                    let class = r.report.grids.first().map_or(0, |g| g.class);
                    Ok(bytes_response("image/png", g, Some(&format!("{stem}.{class}.grid.png"))))
                }
                Some(Picture::Kind(k)) => {
                    let (i, b) = r
                        .files
                        .iter()
                        .enumerate()
                        .find_map(|(i, f)| f.get(k).map(|b| (i, b.clone())))
                        .ok_or_else(|| ApiError::internal(format!("no {} picture was made", k.name())))?;
                    let e = &r.report.explanations[i];
                    let name = format!("{stem}.{}.{}.{}.png", e.class, e.method, k.name());
                    Ok(bytes_response("image/png", b, Some(&name)))
                }
                _ => {
                    let mut report = r.report;
                    for (e, f) in report.explanations.iter_mut().zip(&r.files) {
                        let url = |k: Kind| {
                            f.get(k).map(|b| {
                                data_url(if k == Kind::Npy { "application/octet-stream" } else { "image/png" }, b)
                            })
                        };
                        e.files.overlay = url(Kind::Overlay);
                        e.files.heatmap = url(Kind::Heatmap);
                        e.files.mask = url(Kind::Mask);
                        e.files.gradient = url(Kind::Gradient);
                        e.files.npy = url(Kind::Npy);
                    }
                    for (g, png) in report.grids.iter_mut().zip(&r.grids) {
                        g.file = data_url("image/png", png);
                    }
                    let doc = serde_json::json!({"model": m.net.name, "results": [report], "errors": []});
                    let body = serde_json::to_vec(&doc).map_err(|e| ApiError::internal(e.to_string()))?;
                    Ok(json_response(StatusCode::OK, body))
                }
            }
        }))
    })
    .await
}
