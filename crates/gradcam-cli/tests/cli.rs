//! The binary end to end, on real weights and the example photos (scripts/fetch-assets.sh fetches both).
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::*;

#[test]
fn classify_real_photos() {
    let (code, out, err) = gradcam(&["classify", s(&example("chelsea.png")), s(&example("coffee.png")), "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["results"][0]["predictions"][0]["label"], "Egyptian cat");
    assert_eq!(v["results"][1]["predictions"][0]["label"], "espresso");
    let p = v["results"][0]["predictions"][0]["probability"].as_f64().unwrap();
    assert!(p > 0.5 && p <= 1.0);
}

#[test]
fn bad_inputs_exit_non_zero_with_a_clear_message() {
    let d = tempdir("bad");
    std::fs::write(d.join("zero.png"), b"").unwrap();
    std::fs::write(d.join("text.png"), b"hello").unwrap();
    for (f, want) in [("missing.png", "missing.png"), ("zero.png", "empty"), ("text.png", "not a readable image")] {
        let (code, _, err) = gradcam(&["classify", s(&d.join(f))]);
        assert_ne!(code, 0, "{f}");
        assert!(err.contains(want) && !err.contains("panicked"), "{f}: {err}");
    }
    let (code, _, err) = gradcam(&["classify", s(&example("chelsea.png")), "--weights", s(&d.join("text.png"))]);
    assert_ne!(code, 0);
    assert!(err.contains("text.png") && err.contains("not a checkpoint"), "{err}");
    let (code, _, err) = gradcam(&["explain", s(&example("chelsea.png")), "--layer", "nope", "-o", s(&d)]);
    assert_ne!(code, 0);
    assert!(err.contains("no layer `nope`") && err.contains("blocks.15"), "{err}");
    let (code, _, err) = gradcam(&["explain", s(&example("chelsea.png")), "--class", "cat", "-o", s(&d)]);
    assert_ne!(code, 0);
    assert!(err.contains("ambiguous"), "{err}");
}

/// torchvision's weights are looked for in gradcam's cache, then in torch's (`$TORCH_HOME/hub/checkpoints`),
/// checked against the published hash; offline and missing, or there and wrong, the message says where it looked
/// and what to do. Nothing here reaches the internet: downloads are off (GRADCAM_OFFLINE=1).
#[test]
fn torchvision_weights_are_looked_up_locally_and_checked() {
    let d = tempdir("zoo");
    let (gh, th) = (d.join("gradcam-home"), d.join("torch-home"));
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_gradcam"))
            .args(args)
            .env("GRADCAM_HOME", &gh)
            .env("TORCH_HOME", &th)
            .env("GRADCAM_OFFLINE", "1")
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let img = example("chelsea.png");
    let (code, err) = run(&["classify", s(&img), "--model", "resnet18"]);
    assert_ne!(code, 0);
    assert!(err.contains("resnet18-f37072fd.pth") && err.contains(s(&th)) && err.contains("--weights"), "{err}");
    let ckpts = th.join("hub/checkpoints");
    std::fs::create_dir_all(&ckpts).unwrap();
    std::fs::write(ckpts.join("resnet18-f37072fd.pth"), b"not the checkpoint").unwrap();
    let (code, err) = run(&["classify", s(&img), "--model", "resnet18"]);
    assert_ne!(code, 0);
    assert!(err.contains("SHA-256") && err.contains("f37072fd") && err.contains(s(&ckpts)), "{err}");
    let (code, err) = run(&["classify", s(&img), "--model", "resnet18", "--weights", "https://example.invalid/w"]);
    assert_ne!(code, 0);
    assert!(err.contains("does not download") && err.contains("only the zoo's own checkpoints"), "{err}");
}

/// A loopback server that answers 404 to everything (the tests never reach the internet): its port.
fn not_found_server() -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut head = vec![];
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let _ =
                conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found");
        }
    });
    port
}

/// Missing torchvision weights are downloaded into $GRADCAM_HOME/weights on first use (the library's tests cover
/// a download that succeeds: no real checkpoint can be served here). A download that fails says so with the
/// address and the status, and leaves nothing in the cache; --offline and GRADCAM_OFFLINE=1 refuse to download
/// and say where to put the file and where to get it; a model whose architecture is not built yet is refused
/// before any download.
#[test]
fn torchvision_weights_are_downloaded_on_first_use() {
    let d = tempdir("download");
    let (gh, th) = (d.join("gradcam-home"), d.join("torch-home"));
    let base = format!("http://127.0.0.1:{}/models", not_found_server());
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_gradcam"))
            .args(args)
            .env("GRADCAM_HOME", &gh)
            .env("TORCH_HOME", &th)
            .env("GRADCAM_TORCHVISION_BASE", &base)
            .env_remove("GRADCAM_OFFLINE")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let img = example("chelsea.png");
    let weights = gh.join("weights");
    let url = format!("{base}/resnet18-f37072fd.pth");

    let (code, err) = run(&["classify", s(&img), "--model", "resnet18"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains(&url) && err.contains("HTTP 404") && err.contains(s(&weights)), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let left: Vec<_> =
        std::fs::read_dir(&weights).map(|r| r.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "left behind in {}: {left:?}", weights.display());

    for (args, env) in [
        (&["--offline", "classify", s(&img), "--model", "resnet18"][..], &[][..]),
        (&["classify", s(&img), "--model", "resnet18", "--offline"][..], &[][..]),
        (&["classify", s(&img), "--model", "resnet18"][..], &[("GRADCAM_OFFLINE", "1")][..]),
    ] {
        let (code, err) = run(args, env);
        assert_ne!(code, 0, "{args:?}");
        let mine = weights.join("resnet18-f37072fd.pth");
        let torch = th.join("hub/checkpoints/resnet18-f37072fd.pth");
        assert!(err.contains(&url) && err.contains(s(&mine)) && err.contains(s(&torch)), "{args:?}: {err}");
        assert!(err.contains("downloads are off"), "{err}");
    }

    let (code, err) = run(&["classify", s(&img), "--model", "resnet18"], &[("GRADCAM_OFFLINE", "maybe")]);
    assert_ne!(code, 0);
    assert!(err.contains("GRADCAM_OFFLINE=maybe") && err.contains("expected"), "{err}");
    let (code, err) = run(&["classify", s(&img), "--model", "resnet18"], &[("GRADCAM_TORCHVISION_BASE", "ftp://x")]);
    assert_ne!(code, 0);
    assert!(err.contains("GRADCAM_TORCHVISION_BASE=ftp://x") && err.contains("http"), "{err}");
    let (code, err) = run(&["classify", s(&img), "--model", "vgg16"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains(&format!("{base}/vgg16-397923af.pth")) && err.contains("HTTP 404"), "{err}");
    let (code, err) = run(&["classify", s(&img), "--model", "vgg17"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown model `vgg17`"), "{err}");
}

/// `gradcam models` lists the whole zoo with where each model's weights come from.
#[test]
fn models_lists_the_zoo() {
    let d = tempdir("models-list");
    let out = Command::new(env!("CARGO_BIN_EXE_gradcam"))
        .arg("models")
        .env("GRADCAM_HOME", d.join("home"))
        .env("TORCH_HOME", d.join("torch"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["efficientnet_lite0", "resnet50", "vgg16_bn", "mobilenet_v3_large", "densenet161", "efficientnet_b7"] {
        assert!(text.lines().any(|l| l.starts_with(&format!("{name} "))), "{name} missing: {text}");
    }
    let line = text.lines().find(|l| l.starts_with("resnet50 ")).unwrap();
    assert!(line.contains("downloaded on first use") && line.contains("resnet50-0676ba61.pth"), "{line}");
    let line = text.lines().find(|l| l.starts_with("convnext_tiny ")).unwrap();
    assert!(line.contains("downloaded on first use") && line.contains("convnext_tiny-983f1562.pth"), "{line}");
    assert_eq!(text.lines().filter(|l| l.starts_with("regnet_")).count(), 14);
}

#[test]
fn folder_with_bad_files_keeps_going_and_reports_them() {
    let d = tempdir("batch");
    let input = d.join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(example("chelsea.png"), input.join("chelsea.png")).unwrap();
    std::fs::copy(example("rocket.jpg"), input.join("rocket.jpg")).unwrap();
    let jpg = std::fs::read(example("rocket.jpg")).unwrap();
    std::fs::write(input.join("corrupt.jpg"), &jpg[..jpg.len() / 2]).unwrap();
    std::fs::write(input.join("notes.txt"), b"not an image").unwrap();
    let out = d.join("out");
    let (code, stdout, err) =
        gradcam(&["explain", s(&input), "-o", s(&out), "--json", "--method", "gradcam,guided-gradcam", "--save-npy"]);
    assert_ne!(code, 0, "failures must make the exit code non-zero");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout} {err}"));
    assert_eq!(v["model"], "efficientnet_lite0");
    let results = v["results"].as_array().unwrap();
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{stdout}");
    assert_eq!(errors.len(), 2, "{stdout}");
    let bad: Vec<&str> = errors.iter().map(|e| e["image"].as_str().unwrap()).collect();
    assert!(bad.iter().any(|b| b.ends_with("corrupt.jpg")) && bad.iter().any(|b| b.ends_with("notes.txt")));
    for r in results {
        for e in r["explanations"].as_array().unwrap() {
            for (_, f) in e["files"].as_object().unwrap() {
                assert!(Path::new(f.as_str().unwrap()).exists(), "{f}");
            }
        }
        assert!(r["explanations"][0]["box"]["x1"].as_u64().is_some());
    }
    // nothing half-written: no temporary file left, every PNG decodes
    for e in std::fs::read_dir(&out).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        // the run's manifest (for --resume) is the one hidden file
        assert!(name == ".gradcam_run.jsonl" || !name.starts_with('.') && !name.ends_with(".tmp"), "left over: {name}");
        if name.ends_with(".png") {
            image::open(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    // the npy of the map has the model input's resolution
    let npy = out.join("chelsea.285.gradcam.npy");
    assert!(npy.exists());
}

fn load_map(npy: &Path) -> (usize, usize, Vec<f32>) {
    let b = std::fs::read(npy).unwrap();
    let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
    let header = String::from_utf8_lossy(&b[10..10 + hl]).to_string();
    let shape = &header[header.find("'shape': (").unwrap() + 10..];
    let dims: Vec<usize> = shape[..shape.find(')').unwrap()].split(',').filter_map(|x| x.trim().parse().ok()).collect();
    let data = b[10 + hl..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    (dims[0], dims[1], data)
}

#[test]
fn overlay_has_the_photo_size_and_the_cat_map_peaks_on_the_cat() {
    let d = tempdir("cat");
    let (code, stdout, err) =
        gradcam(&["explain", s(&example("chelsea.png")), "-o", s(&d), "--json", "--class", "285", "--save-npy"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let e = &v["results"][0]["explanations"][0];
    let photo = image::open(example("chelsea.png")).unwrap().to_rgb8();
    let overlay = image::open(e["files"]["overlay"].as_str().unwrap()).unwrap().to_rgb8();
    assert_eq!(overlay.dimensions(), photo.dimensions());
    // where the map is high the overlay differs from the photo
    let [px, py] = [e["peak"][0].as_u64().unwrap() as u32, e["peak"][1].as_u64().unwrap() as u32];
    let (a, b) = (overlay.get_pixel(px, py).0, photo.get_pixel(px, py).0);
    let diff: i32 = (0..3).map(|c| (a[c] as i32 - b[c] as i32).abs()).sum();
    assert!(diff > 30, "overlay at the peak {a:?} vs photo {b:?}");
    // chelsea.png (451x300): the cat's face fills the middle; its eyes and nose are around x 150..330, y 80..260
    assert!((120..340).contains(&px) && (60..270).contains(&py), "peak at ({px}, {py})");
}

#[test]
fn two_objects_side_by_side_each_class_peaks_on_its_own_half() {
    let d = tempdir("pair");
    let cat = image::open(example("chelsea.png")).unwrap().to_rgb8();
    let cup = image::open(example("coffee.png")).unwrap().to_rgb8();
    let size = 300;
    let cat = image::imageops::resize(&cat, size, size, image::imageops::FilterType::Triangle);
    let cup = image::imageops::resize(&cup, size, size, image::imageops::FilterType::Triangle);
    let mut pair = image::RgbImage::new(2 * size, size);
    image::imageops::overlay(&mut pair, &cat, 0, 0);
    image::imageops::overlay(&mut pair, &cup, size as i64, 0);
    let p = d.join("pair.png");
    pair.save(&p).unwrap();
    let out = d.join("out");
    let (code, _, err) = gradcam(&["explain", s(&p), "-o", s(&out), "--class", "285,967", "--save-npy"]);
    assert_eq!(code, 0, "{err}");
    for (class, left) in [(285, true), (967, false)] {
        let (h, w, m) = load_map(&out.join(format!("pair.{class}.gradcam.npy")));
        let half = |range: std::ops::Range<usize>| -> f32 {
            (0..h).flat_map(|y| range.clone().map(move |x| (y, x))).map(|(y, x)| m[y * w + x]).sum::<f32>()
        };
        let (l, r) = (half(0..w / 2), half(w / 2..w));
        assert!(if left { l > 2.0 * r } else { r > 2.0 * l }, "class {class}: left {l} right {r}");
    }
}

#[test]
fn layers_lists_stable_names_with_shapes() {
    let (code, out, _) = gradcam(&["layers", "--model", "efficientnet_lite0"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("blocks.15") && out.contains("320x7x7") && out.contains("head") && out.contains("1280x7x7"),
        "{out}"
    );
    let (code, out, _) = gradcam(&["layers", "--model", "resnet50"]);
    assert_eq!(code, 0);
    assert!(out.contains("layer4 ") && out.contains("2048x7x7") && out.contains("layer4.2"), "{out}");
}

#[test]
fn input_tensor_gives_the_golden_map() {
    let d = tempdir("tensor");
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/lite0/chelsea");
    let (code, _, err) = gradcam(&[
        "explain",
        "--input-tensor",
        s(&golden.join("input.npy")),
        "-o",
        s(&d),
        "--class",
        "285",
        "--layer",
        "head",
        "--save-npy",
    ]);
    assert_eq!(code, 0, "{err}");
    let (_, _, got) = load_map(&d.join("input.285.gradcam.npy"));
    let (_, _, want) = load_map(&golden.join("head.285.gradcam.npy"));
    let dmax = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(dmax <= 1e-3, "max |Δ| {dmax}");
}

#[test]
fn method_all_writes_every_method_and_the_grid() {
    let d = tempdir("all");
    // blocks.15 (320 channels) keeps ScoreCAM's masked passes to a third of head's 1280
    let (code, stdout, err) = gradcam(&[
        "explain",
        s(&example("chelsea.png")),
        "--method",
        "all",
        "--layer",
        "blocks.15",
        "-o",
        s(&d),
        "--json",
        "--save-npy",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let r = &v["results"][0];
    let methods: Vec<&str> =
        r["explanations"].as_array().unwrap().iter().map(|e| e["method"].as_str().unwrap()).collect();
    let want = [
        "gradcam",
        "hirescam",
        "gradcam-elementwise",
        "gradcam++",
        "xgradcam",
        "layercam",
        "eigencam",
        "eigengradcam",
        "scorecam",
        "ablationcam",
        "guided-backprop",
        "guided-gradcam",
    ];
    assert_eq!(methods, want);
    for e in r["explanations"].as_array().unwrap() {
        let files = e["files"].as_object().unwrap();
        assert!(files.contains_key("npy"), "{e}");
        assert!(files.contains_key("overlay") || files.contains_key("gradient"), "{e}");
        for (_, f) in files {
            assert!(Path::new(f.as_str().unwrap()).exists(), "{f}");
        }
    }
    let grid = r["grids"][0]["file"].as_str().unwrap();
    let g = image::open(grid).unwrap().to_rgb8();
    let photo = image::open(example("chelsea.png")).unwrap().to_rgb8();
    // 12 tiles, 4 a row, 320 px wide each: 3 rows
    assert_eq!(g.width(), 4 * 324 + 4);
    assert!(g.height() > 3 * (320 * photo.height() / photo.width()));
}

#[test]
fn batched_runs_equal_single_runs_through_the_binary() {
    let d = tempdir("batches");
    let input = d.join("in");
    std::fs::create_dir_all(&input).unwrap();
    for f in ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "horse.png"] {
        std::fs::copy(example(f), input.join(f)).unwrap();
    }
    std::fs::write(input.join("broken.png"), b"\x89PNG\r\n\x1a\nbroken").unwrap(); // sorts between the good ones
    let run = |bs: &str| -> (PathBuf, serde_json::Value) {
        let out = d.join(format!("out-{bs}"));
        let (code, stdout, err) = gradcam(&[
            "explain",
            s(&input),
            "-o",
            s(&out),
            "--batch-size",
            bs,
            "--class",
            "top2",
            "--save-npy",
            "--json",
        ]);
        assert_eq!(code, 1, "one file is broken: {err}");
        (out, serde_json::from_str(&stdout).unwrap())
    };
    let (one, v1) = run("1");
    let (three, v3) = run("3");
    assert_eq!(v1["errors"].as_array().unwrap().len(), 1);
    assert_eq!(v3["errors"].as_array().unwrap().len(), 1);
    assert_eq!(v3["results"].as_array().unwrap().len(), 5);
    let mut compared = 0;
    for e in std::fs::read_dir(&one).unwrap() {
        let name = e.unwrap().file_name();
        if !name.to_string_lossy().ends_with(".npy") {
            continue;
        }
        let (_, _, a) = load_map(&one.join(&name));
        let (_, _, b) = load_map(&three.join(&name));
        let dmax = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(dmax <= 1e-5, "{name:?}: batch 3 and batch 1 differ by {dmax}");
        compared += 1;
    }
    assert_eq!(compared, 10, "5 images × 2 classes");
}

/// `gradcam … | head`: a reader that goes away ends the output quietly (no panic message on stderr).
#[cfg(unix)]
#[test]
fn closed_pipe_ends_quietly() {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_gradcam"))
        .args(["layers", "--model", "resnet50"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away before the first line
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "stderr: {err}");
}
