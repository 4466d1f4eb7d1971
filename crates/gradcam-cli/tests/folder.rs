//! Folder runs: the pipeline's report and files, --jsonl, --pictures, --png-compression, and --resume after
//! runs killed at random points.
mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A folder of `n` small photos of varied sizes (random pixels, seeded) and one file that is not an image.
fn photo_folder(tag: &str, n: usize) -> PathBuf {
    let d = tempdir(tag).join("in");
    std::fs::create_dir_all(&d).unwrap();
    let mut s = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for i in 0..n {
        let (w, h) = (40 + next() % 100, 40 + next() % 100);
        let img = image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
            let v = next();
            image::Rgb([(x * 3) as u8 ^ v as u8, (y * 5) as u8, (v >> 8) as u8])
        });
        img.save(d.join(format!("p{i:02}.png"))).unwrap();
    }
    std::fs::write(d.join("broken.png"), b"not a picture").unwrap();
    d
}

/// Every file of a folder (hidden ones too) with its bytes.
fn files_of(d: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(d)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect()
}

/// The one file of `d` named `start…end`.
fn find(d: &Path, start: &str, end: &str) -> String {
    let v: Vec<String> = files_of(d).into_keys().filter(|n| n.starts_with(start) && n.ends_with(end)).collect();
    assert_eq!(v.len(), 1, "{start}…{end} in {}: {v:?}", d.display());
    v[0].clone()
}

/// `gradcam explain ARGS`.
fn explain(args: &[&str]) -> (i32, String, String) {
    gradcam(&[&["explain"], args].concat())
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The options of the kill test: two methods (and their grid), the maps as .npy: every kind of file.
const JOB: &[&str] = &["--method", "gradcam,gradcam++", "--save-npy", "--json"];

#[test]
fn killed_runs_resumed_end_with_the_files_and_report_of_an_uninterrupted_run() {
    let n = 30;
    let input = photo_folder("kill", n);
    let root = input.parent().unwrap().to_path_buf();
    let (whole, killed) = (root.join("whole"), root.join("killed"));
    let t = Instant::now();
    let (code, out, err) = explain(&[&[s(&input), "--out", s(&whole)], JOB].concat());
    let took = t.elapsed();
    assert_eq!(code, 1, "the broken file fails: {err}");
    let want = json(&out);
    assert_eq!(want["results"].as_array().unwrap().len(), n);
    assert_eq!(want["errors"].as_array().unwrap().len(), 1);

    // kill runs at pseudo-random points of a whole run's time, each resuming the last, then finish
    let mut seed = 0x2545f4914f6cdd1du64;
    let mut partial = 0;
    for round in 0..10 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = took.mul_f64(0.05 + (seed % 1000) as f64 / 1000.0 * 0.45);
        let mut child = Command::new(env!("CARGO_BIN_EXE_gradcam"))
            .args([&["explain", s(&input), "--out", s(&killed), "--resume"], JOB].concat())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap().is_some();
        child.kill().unwrap(); // SIGKILL: no clean-up
        child.wait().unwrap();
        let manifest = std::fs::read_to_string(killed.join(".gradcam_run.jsonl")).unwrap_or_default();
        let done = manifest.lines().count().saturating_sub(1);
        if !finished && done < n {
            partial += 1;
        }
        eprintln!("round {round}: killed after {delay:?}, {done} of {n} recorded, finished before: {finished}");
    }
    assert!(partial >= 2, "the kills must interrupt runs part-way ({partial} did)");
    let (code, out, err) = explain(&[&[s(&input), "--out", s(&killed), "--resume"], JOB].concat());
    assert_eq!(code, 1, "{err}");
    let got = json(&out);

    // the same report, but for the output folder's name
    let shown = |v: &serde_json::Value, d: &Path| v.to_string().replace(&format!("{}/", d.display()), "OUT/");
    assert_eq!(shown(&got, &killed), shown(&want, &whole));
    // the same files, byte for byte, and no temporary left
    let (mut a, mut b) = (files_of(&whole), files_of(&killed));
    a.remove(".gradcam_run.jsonl").unwrap();
    b.remove(".gradcam_run.jsonl").unwrap();
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, bytes) in &a {
        assert!(b[name] == *bytes, "{name} differs");
    }
    assert_eq!(a.len(), n * 9, "3 pictures and a .npy per method, a grid per photo");
}

#[test]
fn resume_skips_what_is_done_and_redoes_what_is_missing_or_torn() {
    let input = photo_folder("resume", 4);
    let out = input.parent().unwrap().join("out");
    let (code, first, _) = explain(&[s(&input), "--out", s(&out), "--json"]);
    assert_eq!(code, 1);
    let mtime = |f: &str| std::fs::metadata(out.join(f)).unwrap().modified().unwrap();
    let (o0, o1) = (find(&out, "p00.", ".overlay.png"), find(&out, "p01.", ".overlay.png"));
    let before = (mtime(&o0), mtime(&o1));
    // p01's heat map gone, a torn line at the manifest's end (a kill during its write)
    let h1 = find(&out, "p01.", ".heatmap.png");
    std::fs::remove_file(out.join(&h1)).unwrap();
    let m = out.join(".gradcam_run.jsonl");
    let mut text = std::fs::read_to_string(&m).unwrap();
    text.push_str("{\"key\":\"path:torn");
    std::fs::write(&m, text).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let (code, again, err) = explain(&[s(&input), "--out", s(&out), "--json", "--resume"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(json(&again), json(&first));
    assert!(out.join(&h1).exists(), "the missing picture is made again");
    assert_eq!(mtime(&o0), before.0, "p00 was done: not rewritten");
    assert_ne!(mtime(&o1), before.1, "p01 was incomplete: redone");
    let m = std::fs::read_to_string(&m).unwrap();
    assert!(m.ends_with('\n') && !m.contains("torn"), "the torn line is cut off");

    // other options: refused, naming the difference; nothing written
    let (code, _, err) = explain(&[s(&input), "--out", s(&out), "--resume", "--alpha", "0.3"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--resume") && err.contains("alpha was 0.5, now 0.3") && err.contains("without --resume"),
        "{err}"
    );
    assert_eq!(mtime(&o0), before.0);
    // --resume where no run was recorded: from the first input
    let fresh = input.parent().unwrap().join("fresh");
    let (code, _, err) = explain(&[s(&input), "--out", s(&fresh), "--resume"]);
    assert_eq!(code, 1);
    assert!(err.contains("no earlier run recorded"), "{err}");
    find(&fresh, "p03.", ".mask.png");
}

#[test]
fn jsonl_streams_one_line_per_input_in_order() {
    let input = photo_folder("jsonl", 3);
    let out = input.parent().unwrap().join("out");
    let (code, lines, _) = explain(&[s(&input), "--out", s(&out), "--jsonl"]);
    assert_eq!(code, 1);
    let (_, doc, _) = explain(&[s(&input), "--out", s(&out), "--json"]);
    let doc = json(&doc);
    let lines: Vec<serde_json::Value> = lines.lines().map(json).collect();
    // broken.png sorts first: its error, then the three photos, as --json lists them
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0], doc["errors"][0]);
    assert_eq!(&lines[1..], doc["results"].as_array().unwrap().as_slice());
    let (code, _, err) = explain(&[s(&input), "--out", s(&out), "--jsonl", "--json"]);
    assert_eq!(code, 2, "--json and --jsonl together: {err}");
}

#[test]
fn pictures_and_png_compression() {
    let input = photo_folder("pictures", 2);
    std::fs::remove_file(input.join("broken.png")).unwrap();
    let root = input.parent().unwrap();
    let names = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = files_of(d).into_keys().filter(|n| !n.starts_with('.')).collect();
        v.sort();
        v
    };
    // the maps only
    let only_maps = root.join("maps");
    let (code, out, err) = explain(&[s(&input), "--out", s(&only_maps), "--pictures", "none", "--save-npy", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(names(&only_maps).iter().all(|n| n.ends_with(".gradcam.npy")), "{:?}", names(&only_maps));
    assert_eq!(names(&only_maps).len(), 2);
    let files = &json(&out)["results"][0]["explanations"][0]["files"];
    assert_eq!(files.as_object().unwrap().keys().collect::<Vec<_>>(), ["npy"]);
    assert!(json(&out)["results"][0]["explanations"][0]["box"].is_object(), "the box is still found");
    // one picture
    let one = root.join("one");
    let (code, _, _) = explain(&[s(&input), "--out", s(&one), "--pictures", "heatmap"]);
    assert_eq!(code, 0);
    assert!(names(&one).iter().all(|n| n.ends_with(".heatmap.png")) && names(&one).len() == 2);
    let (code, _, err) = explain(&[s(&input), "--out", s(&one), "--pictures", "overlay,sketch"]);
    assert_eq!(code, 1);
    assert!(err.contains("--pictures sketch") && err.contains("overlay, heatmap, mask, gradient"), "{err}");

    // compression: the same pixels at every level, smaller files at 9 than with the default
    let (fast, best) = (root.join("fast"), root.join("best"));
    assert_eq!(explain(&[s(&input), "--out", s(&fast)]).0, 0);
    assert_eq!(explain(&[s(&input), "--out", s(&best), "--png-compression", "9"]).0, 0);
    let (a, b) = (files_of(&fast), files_of(&best));
    let (mut sa, mut sb) = (0, 0);
    for (name, bytes) in a.iter().filter(|(n, _)| n.ends_with(".png")) {
        let pa = image::load_from_memory(bytes).unwrap().to_rgb8();
        let pb = image::load_from_memory(&b[name]).unwrap().to_rgb8();
        assert!(pa == pb, "{name}: other pixels");
        sa += bytes.len();
        sb += b[name].len();
    }
    assert!(sb < sa, "level 9 {sb} bytes, fast {sa}");
    let (code, _, err) = explain(&[s(&input), "--out", s(&best), "--png-compression", "11"]);
    assert_eq!(code, 1);
    assert!(err.contains("--png-compression 11: expected none, fastest, fast, or a zlib level 1-9"), "{err}");
}

/// A run with one pool thread, a photo over half the budget after two that hold nearly half of it: the
/// decoding job waited for the budget on the only pool thread, which the network and the writers needed to
/// give it back, and the run hung.
#[test]
fn a_large_photo_after_others_does_not_hang_a_single_pool_thread() {
    let d = tempdir("budget-hang").join("in");
    std::fs::create_dir_all(&d).unwrap();
    for (name, side) in [("a1.png", 4000), ("a2.png", 4000), ("a3.png", 8000)] {
        image::RgbImage::from_pixel(side, side, image::Rgb([20, 200, 40])).save(d.join(name)).unwrap();
    }
    let out = d.parent().unwrap().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gradcam"))
        .args(["explain", s(&d), "--out", s(&out), "--pictures", "overlay", "--jsonl"])
        .env("RAYON_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the run hung");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut lines = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut lines).unwrap();
    assert!(status.success(), "{lines}");
    assert_eq!(lines.lines().count(), 3, "{lines}");
}

/// An input replaced after a run (same name, other pixels): --resume explains it again instead of keeping the
/// pictures of the photo that was there; the unchanged inputs are still skipped.
#[test]
fn resume_redoes_an_input_changed_since() {
    let input = photo_folder("changed", 3);
    let root = input.parent().unwrap().to_path_buf();
    let (out, fresh) = (root.join("out"), root.join("fresh"));
    assert_eq!(explain(&[s(&input), "--out", s(&out), "--json"]).0, 1);
    let mtime = |f: &str| std::fs::metadata(out.join(f)).unwrap().modified().unwrap();
    let o0 = find(&out, "p00.", ".overlay.png");
    let before = mtime(&o0);
    std::thread::sleep(Duration::from_millis(20));
    image::RgbImage::from_fn(90, 70, |x, y| image::Rgb([(x * 7) as u8, (y * 3) as u8, 99]))
        .save(input.join("p01.png"))
        .unwrap();
    let (code, got, err) = explain(&[s(&input), "--out", s(&out), "--json", "--resume"]);
    assert_eq!(code, 1, "{err}");
    let (_, want, _) = explain(&[s(&input), "--out", s(&fresh), "--json"]);
    let shown = |v: &str, d: &Path| json(v).to_string().replace(&format!("{}/", d.display()), "OUT/");
    assert_eq!(shown(&got, &out), shown(&want, &fresh));
    assert_eq!(mtime(&o0), before, "p00 is unchanged: skipped");
    let (a, b) = (files_of(&out), files_of(&fresh));
    for (name, bytes) in b.iter().filter(|(n, _)| !n.starts_with('.')) {
        assert!(a[name] == *bytes, "{name} differs");
    }
}
