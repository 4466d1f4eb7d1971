//! The HTTP API on loopback: every endpoint, every error status, concurrent requests, the limits. A server is
//! started in this process for each configuration; requests go over real sockets with a small HTTP/1.1 client
//! of the test's own (so that a test can send what a library client would not: a body over the limit, a
//! `Content-Length` larger than the body).
//!
//! Needs EfficientNet-Lite0's weights and the example photos (`scripts/fetch-assets.sh`).

use base64::Engine as _;
use gradcam::explain::{self, Input, Namer, Options};
use gradcam::image::ImageLimits;
use gradcam::labels::Labels;
use gradcam_serve::{Config, Model};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

fn examples() -> PathBuf {
    gradcam::models::zoo::home().join("examples")
}

fn photo(name: &str) -> Vec<u8> {
    let p = examples().join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-assets.sh)", p.display()))
}

fn model() -> Arc<Model> {
    static M: OnceLock<Arc<Model>> = OnceLock::new();
    M.get_or_init(|| {
        let net = gradcam::load_model("efficientnet_lite0", None, &candle_core::Device::Cpu)
            .expect("EfficientNet-Lite0 weights (run scripts/fetch-assets.sh)");
        let labels = Labels::for_classes(net.num_classes, None).unwrap();
        Arc::new(Model::new(net, labels).unwrap())
    })
    .clone()
}

/// A folder with one small example photo (and a file that is not one).
fn example_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("gradcam-serve-examples-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("chelsea.png"), photo("chelsea.png")).unwrap();
    std::fs::write(d.join("notes.txt"), b"not a photo").unwrap();
    d
}

fn config() -> Config {
    Config {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        workers: 2,
        queue: 8,
        timeout: Duration::from_secs(120),
        examples: Some(example_dir()),
        ..Config::default()
    }
}

/// One server per configuration, started once.
fn server(cfg: Config) -> SocketAddr {
    gradcam_serve::start(model(), cfg).expect("server starts").addr
}

fn default_server() -> SocketAddr {
    static A: OnceLock<SocketAddr> = OnceLock::new();
    *A.get_or_init(|| server(config()))
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body[..self.body.len().min(300)]))
        })
    }
    fn error(&self) -> String {
        let j = self.json();
        assert_eq!(j["status"], self.status, "{j}");
        j["error"].as_str().expect("an error message").to_string()
    }
}

/// Send a request (`Connection: close`) and read the whole answer.
fn send(addr: SocketAddr, head: &str, body: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    // the server may answer and close before it has read everything (a body far over the limit)
    let _ = s.write_all(body);
    let mut raw = vec![];
    let _ = s.read_to_end(&mut raw);
    parse(&raw)
}

fn parse(raw: &[u8]) -> Resp {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete answer: {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")) {
        let mut out = vec![];
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap().trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
            rest = &rest[nl + 4 + n..];
        }
        body = out;
    }
    if let Some(n) = headers.iter().find(|(k, _)| k == "content-length").map(|(_, v)| v.parse::<usize>().unwrap()) {
        assert_eq!(body.len(), n, "the body has the length the header says");
    }
    Resp { status, headers, body }
}

fn get(addr: SocketAddr, path: &str) -> Resp {
    send(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), b"")
}

fn post(addr: SocketAddr, path: &str, extra: &str, body: &[u8]) -> Resp {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    );
    send(addr, &head, body)
}

fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let b = "gradcamtestboundary7f3a";
    let mut body = vec![];
    for (name, file, data) in parts {
        body.extend_from_slice(format!("--{b}\r\n").as_bytes());
        match file {
            Some(f) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
                    .as_bytes(),
            ),
            None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    (format!("Content-Type: multipart/form-data; boundary={b}\r\n"), body)
}

fn data_url_bytes(v: &Value) -> Vec<u8> {
    let s = v.as_str().unwrap_or_else(|| panic!("a data URL, got {v}"));
    let (mime, b64) = s.strip_prefix("data:").unwrap().split_once(";base64,").unwrap();
    assert!(mime == "image/png" || mime == "application/octet-stream", "{mime}");
    base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
}

/// A value as the CLI's JSON document holds it (f32 widened to f64, as `json!` does), read back from JSON
/// text (serde_json's parser may differ from the value by an ulp).
fn as_read<T: serde::Serialize>(v: &T) -> Value {
    serde_json::from_str(&serde_json::to_value(v).unwrap().to_string()).unwrap()
}

/// A PNG of one colour.
fn flat_png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb([200, 120, 40]));
    let mut png = vec![];
    image::DynamicImage::ImageRgb8(img).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    png
}

/// Two PNGs decode to the same pixels.
fn same_pixels(a: &[u8], b: &[u8], what: &str) {
    let (a, b) = (png_pixels(a), png_pixels(b));
    assert_eq!(a.dimensions(), b.dimensions(), "{what}: sizes");
    let differ = a.pixels().zip(b.pixels()).filter(|(p, q)| p != q).count();
    assert_eq!(differ, 0, "{what}: {differ} pixels differ");
}

fn png_pixels(bytes: &[u8]) -> image::RgbImage {
    image::load_from_memory_with_format(bytes, image::ImageFormat::Png).expect("a PNG").to_rgb8()
}

#[test]
fn get_endpoints() {
    let a = default_server();
    let h = get(a, "/healthz");
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["status"], "ok");
    assert_eq!(h.json()["model"], "efficientnet_lite0");

    let m = get(a, "/v1/models").json();
    assert_eq!(m["loaded"], "efficientnet_lite0");
    let lite0 = m["models"].as_array().unwrap().iter().find(|x| x["name"] == "efficientnet_lite0").unwrap();
    assert_eq!(lite0["weights"], "cached");
    assert_eq!(lite0["loaded"], true);
    assert!(m["models"].as_array().unwrap().iter().any(|x| x["name"] == "resnet50" && x["loaded"] == false));

    let l = get(a, "/v1/layers").json();
    assert_eq!(l["default"], "head");
    assert_eq!(l["input"], serde_json::json!([3, 224, 224]));
    let names: Vec<&str> = l["layers"].as_array().unwrap().iter().map(|x| x["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"blocks.15") && names.contains(&"head"), "{names:?}");
    assert_eq!(get(a, "/v1/layers?model=efficientnet_lite0").status, 200);
    let other = get(a, "/v1/layers?model=resnet50");
    assert_eq!(other.status, 404);
    assert!(other.error().contains("not loaded"), "{}", other.error());

    // the OpenAPI document describes every route
    let o = get(a, "/v1/openapi.json");
    assert_eq!(o.status, 200);
    let o = o.json();
    assert!(o["openapi"].as_str().unwrap().starts_with("3."));
    for p in ["/v1/classify", "/v1/explain", "/v1/models", "/v1/layers", "/v1/examples", "/healthz"] {
        assert!(o["paths"][p].is_object(), "openapi.json lacks {p}");
    }
    for param in ["class", "method", "layer", "colormap", "alpha", "threshold", "picture"] {
        let ps = o["paths"]["/v1/explain"]["post"]["parameters"].as_array().unwrap();
        assert!(
            ps.iter().any(|x| x["name"] == param || x["$ref"].as_str().is_some_and(|r| r.ends_with(param))),
            "{param}"
        );
    }

    // the page and its files, with a content policy
    let page = get(a, "/");
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    assert!(page.header("content-security-policy").unwrap().contains("script-src 'self'"));
    assert!(String::from_utf8_lossy(&page.body).contains("app.js"));
    assert_eq!(get(a, "/app.js").header("content-type"), Some("text/javascript; charset=utf-8"));
    assert_eq!(get(a, "/app.css").status, 200);

    // the examples: only the photos of the folder, by name
    let ex = get(a, "/v1/examples").json();
    assert_eq!(ex["examples"], serde_json::json!([{"name": "chelsea.png", "url": "/v1/examples/chelsea.png"}]));
    let c = get(a, "/v1/examples/chelsea.png");
    assert_eq!(c.status, 200);
    assert_eq!(c.header("content-type"), Some("image/png"));
    assert_eq!(c.body, photo("chelsea.png"));
    for bad in ["/v1/examples/notes.txt", "/v1/examples/..%2F..%2Fetc%2Fpasswd", "/v1/examples/%2Fetc%2Fpasswd"] {
        let r = get(a, bad);
        assert_eq!(r.status, 404, "{bad}");
        r.error();
    }

    // unknown routes and methods: JSON errors
    let r = get(a, "/v2/explain");
    assert_eq!(r.status, 404);
    assert!(r.error().contains("/v2/explain"));
    let r = get(a, "/v1/explain");
    assert_eq!(r.status, 405);
    assert!(r.error().contains("GET"));
}

#[test]
fn classify_equals_the_library() {
    let a = default_server();
    let r = post(a, "/v1/classify?k=3", "", &photo("chelsea.png"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    assert_eq!(j["model"], "efficientnet_lite0");
    assert_eq!(j["errors"], serde_json::json!([]));
    let res = &j["results"][0];
    assert_eq!((res["width"].as_u64(), res["height"].as_u64()), (Some(451), Some(300)));
    let m = model();
    let input = Input::from_image(&examples().join("chelsea.png"), &m.net, &ImageLimits::default()).unwrap();
    let logits = m.net.forward(&input.tensor).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let want = as_read(&gradcam::classify::top_k(&logits, 3, &m.labels));
    assert_eq!(res["predictions"], want);
    assert_eq!(res["predictions"][0]["label"], "Egyptian cat");

    // the same as a multipart form, the option as a form field, named by the file name
    let (ct, body) = multipart(&[("k", None, b"2"), ("photo", Some("cat.png"), &photo("chelsea.png"))]);
    let r = post(a, "/v1/classify", &ct, &body);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    assert_eq!(j["results"][0]["image"], "cat.png");
    assert_eq!(j["results"][0]["predictions"].as_array().unwrap().len(), 2);

    // JPEG too (any format the CLI reads)
    let r = post(a, "/v1/classify", "", &photo("rocket.jpg"));
    assert_eq!(r.status, 200);
}

/// The API's explanations are the CLI's: the same report (boxes, peaks, predictions) and the same pixels and
/// maps as the files `gradcam explain` writes.
#[test]
fn explain_equals_the_files_the_cli_writes() {
    let a = default_server();
    let q = "/v1/explain?method=gradcam%2B%2B,guided-gradcam&method=layercam&layer=blocks.15&class=281&class=top1\
             &colormap=turbo&alpha=0.3&threshold=0.5&save-npy";
    // as a form, so that the report (and the grid's header) names the photo as the CLI does
    let (ct, body) = multipart(&[("image", Some("chelsea.png"), &photo("chelsea.png"))]);
    let r = post(a, q, &ct, &body);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    let got = &j["results"][0];
    assert_eq!(got["image"], "chelsea.png");

    let m = model();
    let out = std::env::temp_dir().join(format!("gradcam-serve-cli-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let path = examples().join("chelsea.png");
    let mut o = Options::new(
        vec!["blocks.15".into()],
        vec!["gradcam++".into(), "guided-gradcam".into(), "layercam".into()],
        out.clone(),
    );
    o.classes = vec![explain::ClassSpec::Index(281), explain::ClassSpec::Top(1)];
    o.colormap = gradcam::render::Colormap::Turbo;
    o.alpha = 0.3;
    o.threshold = 0.5;
    o.save_npy = true;
    let input = Input::from_image(&path, &m.net, &ImageLimits::default()).unwrap();
    let namer = Namer::new(std::slice::from_ref(&path));
    let prefix = [namer.prefix(0).to_string()];
    let want =
        explain::explain_batch(&m.net, &m.labels, std::slice::from_ref(&input), &prefix, &o, &namer).unwrap().remove(0);

    assert_eq!(got["predictions"], as_read(&want.predictions));
    let (ge, we) = (got["explanations"].as_array().unwrap(), &want.explanations);
    assert_eq!(ge.len(), 6, "2 classes x 3 methods");
    for (g, w) in ge.iter().zip(we) {
        assert_eq!(g["class"], w.class);
        assert_eq!(g["method"], w.method);
        assert_eq!(g["layers"], serde_json::json!(w.layers));
        assert_eq!(g["box"], serde_json::to_value(w.bbox).unwrap(), "{}", w.method);
        assert_eq!(g["peak"], serde_json::to_value(w.peak).unwrap());
        let files = g["files"].as_object().unwrap();
        let wf = serde_json::to_value(&w.files).unwrap();
        let mut kinds: Vec<&String> = files.keys().collect();
        kinds.sort();
        let mut wkinds: Vec<&String> = wf.as_object().unwrap().keys().collect();
        wkinds.sort();
        assert_eq!(kinds, wkinds, "the same files as the CLI");
        for (kind, url) in files {
            let bytes = data_url_bytes(url);
            let file = std::fs::read(wf[kind].as_str().unwrap()).unwrap();
            if kind == "npy" {
                assert_eq!(bytes, file, "{} {kind}", w.method);
            } else {
                same_pixels(&bytes, &file, &format!("{} {kind}", w.method));
            }
        }
    }
    let grids = got["grids"].as_array().unwrap();
    assert_eq!(grids.len(), 2);
    for (g, w) in grids.iter().zip(&want.grids) {
        assert_eq!(g["class"], w.class);
        let file = std::fs::read(&w.file).unwrap();
        same_pixels(&data_url_bytes(&g["file"]), &file, "grid");
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn one_png_when_asked() {
    let a = default_server();
    let cat = photo("chelsea.png");
    // Accept: image/png without `picture`: the overlay of the one method
    let r = post(a, "/v1/explain", "Accept: image/png\r\n", &cat);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/png"));
    let over = png_pixels(&r.body);
    assert_eq!(over.dimensions(), (451, 300));
    let j = post(a, "/v1/explain", "", &cat).json();
    same_pixels(&data_url_bytes(&j["results"][0]["explanations"][0]["files"]["overlay"]), &r.body, "overlay");
    // picture= each kind; several methods give the grid by default
    for (q, w) in [
        ("picture=heatmap", 451),
        ("picture=mask", 451),
        ("picture=gradient&method=guided-backprop", 451),
        ("picture=grid&method=gradcam,eigencam", 652),
        ("picture=photo", 451),
    ] {
        let r = post(a, &format!("/v1/explain?{q}"), "", &cat);
        assert_eq!(r.status, 200, "{q}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("content-type"), Some("image/png"), "{q}");
        assert_eq!(png_pixels(&r.body).width(), w, "{q}");
    }
    let r = post(a, "/v1/explain?method=gradcam,eigencam", "Accept: image/png\r\n", &cat);
    assert_eq!(png_pixels(&r.body).width(), 652, "two tiles of 320 + gaps: the grid");
    // the photo as decoded
    let r = post(a, "/v1/explain?picture=photo", "", &cat);
    assert!(png_pixels(&r.body) == image::load_from_memory(&cat).unwrap().to_rgb8(), "the photo as decoded");
    // pictures a request cannot have
    for q in ["picture=gradient", "picture=grid", "picture=overlay&method=guided-backprop", "picture=svg"] {
        let r = post(a, &format!("/v1/explain?{q}"), "", &cat);
        assert_eq!(r.status, 400, "{q}");
        assert!(r.error().contains("picture="), "{q}");
    }
}

#[test]
fn bad_input_is_400_or_404_never_500() {
    let a = default_server();
    let cat = photo("chelsea.png");
    let cases: &[(&str, &[u8], u16, &str)] = &[
        ("/v1/explain", b"hello", 400, "not a readable image"),
        ("/v1/explain", b"", 400, "no body"),
        ("/v1/classify", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 400, "upload"),
        ("/v1/explain?alpha=2", &cat, 400, "[0, 1]"),
        ("/v1/explain?alpha=x", &cat, 400, "alpha=x"),
        ("/v1/explain?threshold=-1", &cat, 400, "threshold"),
        ("/v1/explain?colormap=rainbow", &cat, 400, "rainbow"),
        ("/v1/explain?method=gradcam--", &cat, 400, "gradcam--"),
        ("/v1/explain?score=prob", &cat, 400, "score=prob"),
        ("/v1/explain?class=top0", &cat, 400, "top0"),
        ("/v1/explain?class=cat", &cat, 400, "ambiguous"),
        ("/v1/explain?colour=jet", &cat, 400, "unknown parameter `colour`"),
        ("/v1/explain?alpha=0.1&alpha=0.2", &cat, 400, "alpha"),
        ("/v1/explain?class=%FF", &cat, 400, "UTF-8"),
        ("/v1/explain?save-npy=maybe", &cat, 400, "save-npy=maybe"),
        ("/v1/classify?k=0", &cat, 400, "k=0"),
        ("/v1/classify?method=gradcam", &cat, 400, "unknown parameter"),
        ("/v1/explain?layer=blocks.99", &cat, 404, "blocks.99"),
        ("/v1/explain?class=1000", &cat, 404, "out of range"),
        ("/v1/explain?class=zebrafish", &cat, 404, "zebrafish"),
    ];
    for (path, body, status, says) in cases {
        let r = post(a, path, "", body);
        assert_eq!(r.status, *status, "{path}: {}", String::from_utf8_lossy(&r.body));
        assert!(r.error().contains(says), "{path}: `{}` does not say `{says}`", r.error());
    }
    let (ct, body) = multipart(&[("k", None, b"2")]);
    let r = post(a, "/v1/classify", &ct, &body);
    assert_eq!(r.status, 400);
    assert!(r.error().contains("no image"));
    let r = post(a, "/v1/classify", "Content-Type: multipart/form-data\r\n", b"xx");
    assert_eq!(r.status, 400);
    assert!(r.error().contains("boundary"), "{}", r.error());

    // the hostile images of the decoder's tests: refused (400, 413 for sizes) or classified, never a 500
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hostile");
    let manifest: Value = serde_json::from_slice(&std::fs::read(dir.join("img_manifest.json")).unwrap()).unwrap();
    let mut n = 0;
    for (name, v) in manifest.as_object().unwrap().iter().filter(|(k, _)| k.starts_with("img_")) {
        let r = post(a, "/v1/classify", "", &std::fs::read(dir.join(name)).unwrap());
        match v["expect"].as_str().unwrap() {
            "ok" => assert_eq!(r.status, 200, "{name}: {}", String::from_utf8_lossy(&r.body)),
            _ => {
                assert!(r.status == 400 || r.status == 413, "{name}: {} {}", r.status, String::from_utf8_lossy(&r.body))
            }
        }
        n += 1;
    }
    assert!(n > 100, "{n} hostile images");
}

#[test]
fn size_limits_are_413() {
    let a = server(Config {
        max_body: 100_000,
        limits: ImageLimits { max_pixels: 100_000, ..ImageLimits::default() },
        ..config()
    });
    // 400x300 = 120,000 pixels: over the pixel limit, from the header
    let flat = flat_png(400, 300);
    assert!(flat.len() < 100_000);
    let r = post(a, "/v1/classify", "", &flat);
    assert_eq!(r.status, 413);
    assert!(r.error().contains("over the limit"), "{}", r.error());
    // a body over the limit: read to its end, then the 413 (the client that sends all of it sees the answer)
    let big = photo("coffee.png");
    assert!(big.len() > 100_000);
    for path in ["/v1/classify", "/v1/explain"] {
        let r = post(a, path, "", &big);
        assert_eq!(r.status, 413, "{path}");
        assert!(r.error().contains("100000"), "{}", r.error());
    }
    // the same without Content-Length (chunked): counted while reading
    let mut chunked = vec![];
    for c in big.chunks(30_000) {
        chunked.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        chunked.extend_from_slice(c);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let r = send(
        a,
        "POST /v1/classify HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
        &chunked,
    );
    assert_eq!(r.status, 413);
    // a body declared far larger than what is read and thrown away: the answer at once, the connection closed
    let t = Instant::now();
    let r = send(a, "POST /v1/explain HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n", &[0u8; 1000]);
    assert_eq!(r.status, 413);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(t.elapsed() < Duration::from_secs(10));
    // a body and an image within the limits still work on this server
    assert_eq!(post(a, "/v1/explain", "", &flat_png(300, 300)).status, 200);
}

#[test]
fn full_queue_is_503_with_retry_after() {
    // one worker, one waiting place, each job held for a while
    let a = server(Config { workers: 1, queue: 1, work_delay: Duration::from_millis(1500), ..config() });
    let cat = Arc::new(photo("chelsea.png"));
    let spawn = |delay: u64| {
        let cat = cat.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(delay));
            post(a, "/v1/classify", "", &cat)
        })
    };
    let first = spawn(0);
    let second = spawn(300);
    let third = spawn(700);
    let r3 = third.join().unwrap();
    assert_eq!(r3.status, 503, "{}", String::from_utf8_lossy(&r3.body));
    assert_eq!(r3.header("retry-after"), Some("1"));
    assert!(r3.error().contains("busy"));
    assert_eq!(first.join().unwrap().status, 200);
    assert_eq!(second.join().unwrap().status, 200);
    // the slots are free again
    assert_eq!(post(a, "/v1/classify", "", &cat).status, 200);
    assert_eq!(get(a, "/healthz").json()["in_use"], 0);
}

#[test]
fn timeout_is_503_and_the_server_goes_on() {
    let a = server(Config {
        workers: 1,
        queue: 4,
        timeout: Duration::from_millis(1000),
        work_delay: Duration::from_millis(1500),
        ..config()
    });
    let cat = photo("chelsea.png");
    let t = Instant::now();
    let r = post(a, "/v1/classify", "", &cat);
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.header("retry-after").is_some());
    assert!(r.error().contains("timed out"));
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_millis(1450), "{took:?}");
    // requests that waited past their time are skipped by the worker, not run: the queue drains
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            let cat = cat.clone();
            std::thread::spawn(move || post(a, "/v1/classify", "", &cat).status)
        })
        .collect();
    for w in waiting {
        assert_eq!(w.join().unwrap(), 503);
    }
    std::thread::sleep(Duration::from_millis(3200));
    assert_eq!(get(a, "/healthz").json()["in_use"], 0, "every slot released");
    // a slow client is cut at the timeout too
    let t = Instant::now();
    let r = send(a, "POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", b"partial");
    assert_eq!(r.status, 503);
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[test]
fn concurrent_requests_all_answer_the_same() {
    let a = server(Config { queue: 16, ..config() });
    let cat = Arc::new(photo("chelsea.png"));
    let q = "/v1/explain?method=gradcam,xgradcam&class=top2&save-npy";
    let one = post(a, q, "", &cat).json();
    let threads: Vec<_> = (0..10)
        .map(|i| {
            let cat = cat.clone();
            std::thread::spawn(
                move || {
                    if i % 3 == 2 {
                        post(a, "/v1/classify", "", &cat)
                    } else {
                        post(a, q, "", &cat)
                    }
                },
            )
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200, "{i}");
        if i % 3 != 2 {
            assert_eq!(r.json(), one, "request {i} differs from the one made alone");
        }
    }
}

#[test]
fn keep_alive_connections_serve_several_requests() {
    let a = default_server();
    let cat = photo("chelsea.png");
    let mut s = TcpStream::connect(a).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    for _ in 0..3 {
        let head = format!("POST /v1/classify?k=1 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", cat.len());
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&cat).unwrap();
        // read one answer: the head, then Content-Length bytes
        let mut raw = vec![];
        let mut byte = [0u8; 1];
        while !raw.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).unwrap();
            raw.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&raw).to_string();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let n: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
            .unwrap();
        let mut body = vec![0u8; n];
        s.read_exact(&mut body).unwrap();
        let j: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(j["results"][0]["predictions"][0]["class"], 285);
    }
}

/// The work of one request is bounded: at most `MAX_EXPLANATIONS` explanations (classes × methods, 400 before
/// any work), and explanations × pixels at most `max_explained_pixels` (413): a request for every class used to
/// hold hundreds of megabytes of pictures (and a worker for hours) for one small photo.
#[test]
fn the_work_of_one_request_is_bounded() {
    let a = server(Config { max_explained_pixels: 300_000, ..config() });
    let cat = photo("chelsea.png"); // 451x300 = 135,300 pixels
    for q in ["class=top1000", "class=top300", "class=top6&method=all", "class=top33&method=gradcam,layercam"] {
        let r = post(a, &format!("/v1/explain?{q}"), "", &cat);
        assert_eq!(r.status, 400, "{q}: {}", String::from_utf8_lossy(&r.body));
        assert!(r.error().contains("over the limit of 64"), "{q}: {}", r.error());
    }
    // 3 explanations of 135,300 pixels: over 300,000; the message names the count, the size and the limit
    let r = post(a, "/v1/explain?method=gradcam,layercam,xgradcam", "", &cat);
    assert_eq!(r.status, 413, "{}", String::from_utf8_lossy(&r.body));
    let e = r.error();
    assert!(e.contains("3 explanations") && e.contains("451x300") && e.contains("0.3"), "{e}");
    // classes count once resolved: top2 and the best class's index are 2 classes, 2 x 135,300 fit
    let r = post(a, "/v1/explain?class=top2&class=285", "", &cat);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let classes: Vec<u64> = r.json()["results"][0]["explanations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["class"].as_u64().unwrap())
        .collect();
    assert_eq!(classes, [285, 282]);
    let r = post(a, "/v1/explain?class=top3", "", &cat);
    assert_eq!(r.status, 413);
    assert_eq!(get(a, "/healthz").json()["in_use"], 0);
}

/// A request for several classes that runs past its timeout stops between classes: its worker is free long
/// before the rest of its work would have ended (32 Score-CAM passes take minutes).
#[test]
fn a_timed_out_request_frees_its_worker() {
    let a = server(Config { workers: 1, queue: 2, timeout: Duration::from_millis(1500), ..config() });
    let cat = photo("chelsea.png");
    let t = Instant::now();
    let r = post(a, "/v1/explain?class=top32&method=scorecam", "", &cat);
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.error().contains("timed out"));
    while get(a, "/healthz").json()["in_use"] != 0 {
        assert!(t.elapsed() < Duration::from_secs(60), "the worker still runs the timed-out request");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(post(a, "/v1/classify", "", &cat).status, 200);
}

/// A PNG of noise (it does not compress: its pictures make a large answer).
fn noise_png(w: u32, h: u32) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    let img = image::RgbImage::from_fn(w, h, |_, _| {
        let mut c = [0u8; 3];
        for v in &mut c {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *v = x as u8;
        }
        image::Rgb(c)
    });
    let mut png = vec![];
    image::DynamicImage::ImageRgb8(img).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    png
}

/// A connection that sends its request's head slowly, or stays idle, is closed (it used to be kept forever: a
/// few thousand such connections took every file descriptor).
#[test]
fn slow_or_idle_connections_are_closed() {
    let a = server(Config { head_timeout: Duration::from_millis(1000), ..config() });
    let t = Instant::now();
    let mut s = TcpStream::connect(a).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaa").unwrap();
    let mut raw = vec![];
    let r = s.read_to_end(&mut raw);
    assert!(
        r.is_ok() && t.elapsed() < Duration::from_secs(10),
        "closed after the head timeout: {r:?} {:?}",
        t.elapsed()
    );
    // idle between requests on a kept-alive connection
    let mut s = TcpStream::connect(a).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let t = Instant::now();
    let mut raw = vec![];
    let r = s.read_to_end(&mut raw);
    assert!(r.is_ok() && t.elapsed() < Duration::from_secs(10), "an idle connection is closed: {r:?}");
    assert!(raw.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&raw));
}

/// An answer whose client does not read it keeps its request's slot, and is dropped (the connection closed)
/// once it has made no progress for the stall timeout: answers used to be held for as long as their clients
/// kept their connections open, any number of them (two gigabytes for six clients).
#[test]
fn an_unread_answer_is_dropped() {
    let a = server(Config { stall_timeout: Duration::from_millis(1500), ..config() });
    let img = noise_png(2400, 1600); // an answer of about 90 MB, more than the kernel buffers on loopback hold
    let mut s = TcpStream::connect(a).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "POST /v1/explain?method=gradcam,layercam,xgradcam,hirescam HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        img.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&img).unwrap();
    // the slot is taken while the answer is made and while it waits for its client, then freed
    let t = Instant::now();
    let mut seen_busy = false;
    loop {
        let n = get(a, "/healthz").json()["in_use"].as_u64().unwrap();
        seen_busy |= n > 0;
        if seen_busy && n == 0 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(90), "the slot is never freed");
        std::thread::sleep(Duration::from_millis(100));
    }
    // what was sent before the stall, then the end: not the whole answer
    let mut raw = vec![];
    let _ = s.read_to_end(&mut raw);
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("the head was sent");
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).unwrap().trim().parse().unwrap();
    assert!(raw.len() - end - 4 < len, "the answer ({len} bytes) was cut when its client stopped reading");
    assert_eq!(post(a, "/v1/classify", "", &photo("chelsea.png")).status, 200);
}
