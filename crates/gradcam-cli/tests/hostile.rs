//! Hostile and careless input through the binary: folders that loop, links planted in the output folder, names
//! that clash or are too long, batches with one bad input, weights or inputs that are not finite, files that
//! only look like images, a disk that fills, and the messages all of these give. Every case must end with exit
//! code 1 (or 0 where nothing is wrong), a message naming the file and what was expected, no panic, and every
//! good input's results present and distinct.
mod common;
use common::*;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn no_crash(code: i32, err: &str) {
    assert!(code == 0 || code == 1, "exit code {code}: {err}");
    assert!(!err.contains("panicked") && !err.contains("internal error"), "{err}");
}

fn json(stdout: &str, err: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {err}"))
}

/// Every file named by the report, checked to exist; all distinct.
fn files_of(v: &serde_json::Value) -> Vec<String> {
    let mut all = vec![];
    for r in v["results"].as_array().unwrap() {
        for e in r["explanations"].as_array().unwrap() {
            for (_, f) in e["files"].as_object().unwrap() {
                let f = f.as_str().unwrap().to_string();
                assert!(Path::new(&f).exists(), "{f}");
                all.push(f);
            }
        }
        for g in r["grids"].as_array().unwrap() {
            all.push(g["file"].as_str().unwrap().to_string());
        }
    }
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "two inputs share a file: {all:?}");
    all
}

/// The files of a folder, hidden ones too, but for the run's record (`--resume`'s manifest).
fn listing(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".gradcam_run.jsonl")
        .collect();
    v.sort();
    v
}

#[cfg(unix)]
#[test]
fn folder_links_that_loop_are_walked_once_and_hidden_folders_skipped() {
    use std::os::unix::fs::symlink;
    let d = tempdir("loop");
    let input = d.join("in");
    std::fs::create_dir_all(input.join("sub")).unwrap();
    std::fs::create_dir_all(input.join(".git")).unwrap();
    std::fs::copy(example("chelsea.png"), input.join("cat.png")).unwrap();
    std::fs::copy(example("coffee.png"), input.join("sub/cup.png")).unwrap();
    std::fs::copy(example("coffee.png"), input.join(".git/hidden.png")).unwrap();
    symlink(".", input.join("a")).unwrap();
    symlink(".", input.join("b")).unwrap();
    symlink("..", input.join("sub/up")).unwrap();
    let out = d.join("out");
    let (code, stdout, err) = gradcam(&["explain", s(&input), "-r", "-o", s(&out), "--json"]);
    assert_eq!(code, 0, "{err}");
    let v = json(&stdout, &err);
    let images: Vec<&str> = v["results"].as_array().unwrap().iter().map(|r| r["image"].as_str().unwrap()).collect();
    assert_eq!(images.len(), 2, "each image once: {images:?}");
    assert!(images.iter().any(|i| i.ends_with("cat.png")) && images.iter().any(|i| i.ends_with("cup.png")));
    files_of(&v);
}

#[cfg(unix)]
#[test]
fn a_fifo_or_a_device_is_refused_not_read_forever() {
    let d = tempdir("fifo");
    let input = d.join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(example("chelsea.png"), input.join("cat.png")).unwrap();
    let fifo = input.join("pipe.png");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a plain libc call on a valid C string
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let out = d.join("out");
    let (code, stdout, err) = gradcam(&["explain", s(&input), "-o", s(&out), "--json"]);
    no_crash(code, &err);
    assert_eq!(code, 1);
    let v = json(&stdout, &err);
    assert_eq!(v["results"].as_array().unwrap().len(), 1);
    assert!(err.contains("pipe.png") && err.contains("not a regular file"), "{err}");
    for args in [
        vec!["classify", s(&example("chelsea.png")), "--weights", "/dev/zero"],
        vec!["classify", s(&example("chelsea.png")), "--labels", "/dev/zero"],
        vec!["classify", "/dev/zero"],
    ] {
        let (code, _, err) = gradcam(&args);
        no_crash(code, &err);
        assert_eq!(code, 1, "{args:?}");
        assert!(err.contains("/dev/zero") && err.contains("not a regular file"), "{args:?}: {err}");
    }
}

#[cfg(unix)]
#[test]
fn links_planted_in_the_output_folder_are_replaced_not_followed() {
    use std::os::unix::fs::symlink;
    let d = tempdir("plant");
    let victim = d.join("victim.txt");
    std::fs::write(&victim, b"precious").unwrap();
    let out = d.join("out");
    std::fs::create_dir_all(&out).unwrap();
    for kind in ["overlay.png", "heatmap.png", "mask.png"] {
        symlink(&victim, out.join(format!("chelsea.285.gradcam.{kind}"))).unwrap();
    }
    // the old temporary names (`.NAME.<pid>.<n>.tmp`), planted for a range of process ids to come
    let me = std::process::id();
    for pid in me..me + 64 {
        for n in 0..3 {
            let _ = symlink(&victim, out.join(format!(".chelsea.285.gradcam.overlay.png.{pid}.{n}.tmp")));
        }
    }
    let (code, _, err) = gradcam(&["explain", s(&example("chelsea.png")), "-o", s(&out), "--class", "285"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    let meta = std::fs::symlink_metadata(out.join("chelsea.285.gradcam.overlay.png")).unwrap();
    assert!(meta.file_type().is_file(), "the link was replaced by the picture");
}

#[test]
fn clashing_names_give_every_input_its_own_files_and_the_same_names_next_time() {
    let d = tempdir("clash");
    let input = d.join("in");
    for sub in ["a", "b", "c"] {
        std::fs::create_dir_all(input.join(sub)).unwrap();
    }
    std::fs::copy(example("chelsea.png"), input.join("a/cat.png")).unwrap();
    std::fs::copy(example("coffee.png"), input.join("b/cat.png")).unwrap();
    std::fs::copy(example("astronaut.png"), input.join("c/cat-2.png")).unwrap();
    std::fs::copy(example("rocket.jpg"), input.join("a/cat.jpg")).unwrap();
    let out = d.join("out");
    let go = || {
        let (code, stdout, err) = gradcam(&["explain", s(&input), "-r", "-o", s(&out), "--json", "--save-npy"]);
        assert_eq!(code, 0, "{err}");
        json(&stdout, &err)
    };
    let v = go();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    let files = files_of(&v);
    assert_eq!(files.len(), 16, "4 inputs x (3 pictures + npy)");
    // each input's own pictures: the overlay has the input's size
    for r in results {
        let o = r["explanations"][0]["files"]["overlay"].as_str().unwrap();
        let dims = image::image_dimensions(o).unwrap();
        assert_eq!((dims.0 as u64, dims.1 as u64), (r["width"].as_u64().unwrap(), r["height"].as_u64().unwrap()));
    }
    assert_eq!(listing(&out).len(), 16, "nothing overwritten, nothing else: {:?}", listing(&out));
    // a rerun names everything the same (in place)
    let again = go();
    assert_eq!(files_of(&again), files);
    assert_eq!(listing(&out).len(), 16);
}

#[test]
fn a_very_long_name_is_shortened_and_stays_unique() {
    let d = tempdir("long");
    let input = d.join("in");
    std::fs::create_dir_all(&input).unwrap();
    let long = "猫".repeat(80); // 240 bytes: with `.285.gradcam.overlay.png` over 255
    std::fs::copy(example("chelsea.png"), input.join(format!("{long}.png"))).unwrap();
    std::fs::copy(example("coffee.png"), input.join(format!("{long}.jpg.png"))).unwrap();
    let out = d.join("out");
    let (code, stdout, err) = gradcam(&["explain", s(&input), "-o", s(&out), "--json"]);
    assert_eq!(code, 0, "{err}");
    let v = json(&stdout, &err);
    assert_eq!(v["results"].as_array().unwrap().len(), 2);
    for f in files_of(&v) {
        assert!(Path::new(&f).file_name().unwrap().len() <= 200, "{f}");
    }
}

/// One input of a batch that cannot go with the others (another size, no pixels) fails alone.
#[test]
fn a_bad_input_fails_alone_in_a_batch() {
    let d = tempdir("batchiso");
    let npy = |name: &str, shape: &[usize]| -> PathBuf {
        let n: usize = shape.iter().product();
        let a = gradcam::npy::Array::new(shape.to_vec(), gradcam::util::xorshift_unit(7, n));
        let p = d.join(name);
        a.write(&p).unwrap();
        p
    };
    let small = npy("small.npy", &[1, 3, 64, 48]);
    let empty = npy("empty.npy", &[1, 3, 0, 0]);
    let out = d.join("out");
    let (code, stdout, err) = gradcam(&[
        "explain",
        s(&example("chelsea.png")),
        s(&example("coffee.png")),
        "--input-tensor",
        s(&small),
        "--input-tensor",
        s(&empty),
        "--batch-size",
        "4",
        "-o",
        s(&out),
        "--json",
    ]);
    no_crash(code, &err);
    assert_eq!(code, 1, "the empty tensor fails: {err}");
    let v = json(&stdout, &err);
    let ok: Vec<&str> = v["results"].as_array().unwrap().iter().map(|r| r["image"].as_str().unwrap()).collect();
    assert_eq!(ok.len(), 3, "{ok:?} {err}");
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert!(errors[0]["image"].as_str().unwrap().ends_with("empty.npy"));
    assert!(errors[0]["error"].as_str().unwrap().contains("no pixels"), "{errors:?}");
    files_of(&v);
}

#[test]
fn tensor_inputs_obey_the_pixel_limit_and_must_be_finite() {
    let d = tempdir("tensorlimits");
    let mut data = gradcam::util::xorshift_unit(3, 3 * 32 * 32);
    data[3 * 32 + 5] = f32::NAN;
    let p = d.join("nan.npy");
    gradcam::npy::Array::new(vec![1, 3, 32, 32], data).write(&p).unwrap();
    let (code, _, err) = gradcam(&["explain", "--input-tensor", s(&p), "-o", s(&d.join("o"))]);
    no_crash(code, &err);
    assert_eq!(code, 1);
    assert!(err.contains("nan.npy") && err.contains("NaN") && err.contains("[0, 0, 3, 5]"), "{err}");
    let big = d.join("big.npy");
    gradcam::npy::Array::new(vec![1, 3, 64, 64], vec![0.0; 3 * 64 * 64]).write(&big).unwrap();
    let (code, _, err) =
        gradcam(&["explain", "--input-tensor", s(&big), "--max-pixels", "1000", "-o", s(&d.join("o"))]);
    assert_eq!(code, 1);
    assert!(err.contains("big.npy") && err.contains("--max-pixels"), "{err}");
}

/// A checkpoint of Lite0's real weights with one tensor changed, as safetensors.
fn altered_lite0(
    d: &Path,
    name: &str,
    change: impl Fn(&mut std::collections::HashMap<String, candle_core::Tensor>),
) -> PathBuf {
    let c = gradcam::checkpoint::Checkpoint::load(home().join("weights/efficientnet_lite0.pth")).unwrap();
    let mut t = c.tensors.clone();
    change(&mut t);
    let p = d.join(name);
    gradcam::checkpoint::Checkpoint::save_safetensors(&t, &p).unwrap();
    p
}

/// `t[name]` with every value set by `f(index, value)`.
fn set_values(
    t: &mut std::collections::HashMap<String, candle_core::Tensor>,
    name: &str,
    f: impl Fn(usize, f32) -> f32,
) {
    let v = &t[name];
    let data: Vec<f32> =
        v.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().enumerate().map(|(i, x)| f(i, x)).collect();
    t.insert(name.into(), candle_core::Tensor::from_vec(data, v.dims(), &candle_core::Device::Cpu).unwrap());
}

#[test]
fn weights_that_are_not_finite_are_refused_naming_the_tensor() {
    let d = tempdir("nanw");
    let w = altered_lite0(&d, "nan.safetensors", |t| {
        set_values(t, "_blocks.3._depthwise_conv.weight", |i, x| if i == 5 { f32::NAN } else { x })
    });
    for cmd in ["classify", "explain"] {
        let (code, stdout, err) = gradcam(
            &[cmd, s(&example("chelsea.png")), "--weights", s(&w), "--json", "-o", s(&d.join("o"))]
                [..if cmd == "classify" { 5 } else { 7 }],
        );
        no_crash(code, &err);
        assert_eq!(code, 1, "{cmd}: {err}");
        assert!(err.contains("nan.safetensors") && err.contains("_blocks.3._depthwise_conv.weight"), "{err}");
        assert!(err.contains("NaN at element 5"), "{cmd}: {err}");
        assert_eq!(err.lines().count(), 1, "one error for the file, not one per image: {err}");
        let v = json(&stdout, &err);
        assert!(v["error"].as_str().unwrap().contains("_blocks.3._depthwise_conv.weight"), "{v}");
    }
}

/// Finite weights so large that the logits overflow: an error naming the first layer whose output is not
/// finite, never a prediction.
#[test]
fn logits_that_overflow_are_refused_naming_the_first_layer() {
    let d = tempdir("overflow");
    let w = altered_lite0(&d, "huge.safetensors", |t| set_values(t, "_fc.weight", |_, _| 3e38));
    for cmd in ["classify", "explain"] {
        let (code, stdout, err) = gradcam(
            &[cmd, s(&example("chelsea.png")), "--weights", s(&w), "--json", "-o", s(&d.join("o"))]
                [..if cmd == "classify" { 5 } else { 7 }],
        );
        no_crash(code, &err);
        assert_eq!(code, 1, "{cmd}: {err}");
        assert!(err.contains("not finite") && err.contains("first layer whose output is not finite is `_fc`"), "{err}");
        let v = json(&stdout, &err);
        assert_eq!(v["results"].as_array().unwrap().len(), 0);
        assert!(v["errors"][0]["error"].as_str().unwrap().contains("`_fc`"));
    }
}

#[test]
fn a_classifier_without_classes_is_refused() {
    let d = tempdir("noclass");
    let w = altered_lite0(&d, "zero.safetensors", |t| {
        let dev = candle_core::Device::Cpu;
        t.insert("_fc.weight".into(), candle_core::Tensor::zeros((0, 1280), candle_core::DType::F32, &dev).unwrap());
        t.insert("_fc.bias".into(), candle_core::Tensor::zeros(0, candle_core::DType::F32, &dev).unwrap());
    });
    for cmd in ["classify", "explain"] {
        let (code, _, err) = gradcam(&[cmd, s(&example("chelsea.png")), "--weights", s(&w)]);
        no_crash(code, &err);
        assert_eq!(code, 1, "{cmd}");
        assert!(err.contains("zero.safetensors") && err.contains("0 classes"), "{cmd}: {err}");
    }
}

#[test]
fn labels_with_a_blank_line_or_repeated_names_never_shift_or_pick_silently() {
    let d = tempdir("labels");
    let mut names: Vec<String> = (0..1000).map(|i| format!("class{i}")).collect();
    names[3] = String::new();
    let blank = d.join("blank.txt");
    std::fs::write(&blank, names.join("\n")).unwrap();
    let (code, _, err) = gradcam(&["classify", s(&example("chelsea.png")), "--labels", s(&blank)]);
    assert_eq!(code, 1);
    assert!(err.contains("blank.txt") && err.contains("line 4 is blank"), "{err}");
    names[3] = "class1".into();
    let dup = d.join("dup.txt");
    std::fs::write(&dup, names.join("\n") + "\n\n").unwrap();
    let (code, _, err) =
        gradcam(&["explain", s(&example("chelsea.png")), "--labels", s(&dup), "--class", "class1", "-o", s(&d)]);
    assert_eq!(code, 1);
    assert!(err.contains("names 2 classes (1, 3)"), "{err}");
}

#[test]
fn options_out_of_range_are_refused_with_what_was_expected() {
    let d = tempdir("opts");
    let img = example("chelsea.png");
    for (args, want) in [
        (vec!["--threshold", "NaN"], "--threshold NaN: expected a number in [0, 1]"),
        (vec!["--threshold", "5"], "--threshold 5: expected"),
        (vec!["--threshold=-5"], "--threshold -5: expected"),
        (vec!["--alpha", "2"], "--alpha 2: expected"),
        (vec!["--class", ""], "empty class name"),
        (vec!["--batch-size", "0"], "--batch-size 0"),
    ] {
        let mut all = vec!["explain", s(&img), "-o", s(&d)];
        all.extend(args.iter());
        let (code, _, err) = gradcam(&all);
        no_crash(code, &err);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let (code, out, err) = gradcam(&["classify", s(&img), "-k", "0"]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("-k 0"), "{err}");
    let (code, _, err) = gradcam(&["bench", "--model", "efficientnet_lite0", "--batch", "100000", "--what", "forward"]);
    no_crash(code, &err);
    assert_eq!(code, 1);
    assert!(err.contains("--batch 100000") && err.contains("GB"), "{err}");
    let (code, out, _) = gradcam(&["explain", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("scorecam") && out.contains("ablationcam"), "{out}");
}

#[test]
fn messages_say_each_cause_once_without_backtraces_and_json_errors_are_json() {
    let d = tempdir("msgs");
    // an output "folder" that is a file
    let file = d.join("file");
    std::fs::write(&file, b"x").unwrap();
    let (code, stdout, err) = gradcam(&["explain", s(&example("chelsea.png")), "-o", s(&file), "--json"]);
    assert_eq!(code, 1);
    assert_eq!(err.matches("(os error").count(), 1, "{err}");
    let v = json(&stdout, &err);
    assert!(v["error"].as_str().unwrap().contains("output folder"), "{v}");
    // a broken safetensors file, whose error comes from candle, under RUST_BACKTRACE=1
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/ckpt.safetensors");
    let bytes = std::fs::read(fixture).unwrap();
    let broken = d.join("broken.safetensors");
    std::fs::write(&broken, &bytes[..bytes.len() - 10]).unwrap();
    let out: Output = Command::new(env!("CARGO_BIN_EXE_gradcam"))
        .args(["classify", s(&example("chelsea.png")), "--weights", s(&broken), "--json"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let (stdout, err) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("broken.safetensors"), "{err}");
    assert!(!err.contains("backtrace") && !err.contains("rust_begin_unwind") && err.lines().count() <= 2, "{err}");
    let v = json(&stdout, &err);
    assert!(!v["error"].as_str().unwrap().contains('\n'), "{v}");
}

#[cfg(unix)]
#[test]
fn a_file_name_that_is_not_utf8_is_reported_losslessly() {
    use base64::Engine;
    use std::os::unix::ffi::OsStrExt;
    let d = tempdir("nonutf8");
    let raw: &[u8] = b"caf\xe9.png"; // Latin-1 é
    let p = d.join(std::ffi::OsStr::from_bytes(raw));
    std::fs::copy(example("chelsea.png"), &p).unwrap();
    let (code, stdout, err) = gradcam(&["explain", s(&d), "-o", s(&d.join("out")), "--json"]);
    assert_eq!(code, 0, "{err}");
    let v = json(&stdout, &err);
    let r = &v["results"][0];
    let bytes = base64::engine::general_purpose::STANDARD.decode(r["image_bytes"].as_str().unwrap()).unwrap();
    assert_eq!(bytes, p.as_os_str().as_bytes());
    files_of(&v);
}

/// A disk that fills (here: a file-size limit on the process, which fails large writes as a full disk does):
/// the image whose pictures cannot all be written leaves none of them, and is reported.
#[cfg(target_os = "linux")]
#[test]
fn an_image_whose_files_cannot_all_be_written_leaves_none() {
    use std::os::unix::process::CommandExt;
    let d = tempdir("full");
    let out = d.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gradcam"));
    cmd.args(["explain", s(&example("chelsea.png")), s(&example("coffee.png")), "-o", s(&out), "--json"]);
    // SAFETY: only async-signal-safe calls between fork and exec
    unsafe {
        // (SIGXFSZ left at its default, which kills: gradcam itself must ignore it and report the write)
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 100_000, rlim_max: 100_000 };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    let (stdout, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(1), "{err}");
    let v = json(&stdout, &err);
    // both overlays are over 100 kB: both images fail, and leave nothing (no small heat map, no temporary)
    assert_eq!(v["errors"].as_array().unwrap().len(), 2, "{v}");
    assert!(listing(&out).is_empty(), "left behind: {:?}", listing(&out));
}

#[test]
fn models_does_not_call_a_truncated_or_foreign_checkpoint_usable() {
    let d = tempdir("models");
    let w = d.join("home/weights");
    std::fs::create_dir_all(&w).unwrap();
    let real = std::fs::read(home().join("weights/efficientnet_lite0.pth")).unwrap();
    std::fs::write(w.join("efficientnet_lite0.pth"), &real[..real.len() / 2]).unwrap();
    std::fs::write(w.join("resnet18-f37072fd.pth"), b"not the checkpoint").unwrap();
    let run_home = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_gradcam"))
            .args(args)
            .env("GRADCAM_HOME", d.join("home"))
            .env("TORCH_HOME", d.join("torch"))
            // never the internet: a cached file with the wrong hash is refused, not downloaded over
            .env("GRADCAM_OFFLINE", "1")
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, out, _) = run_home(&["models"]);
    assert_eq!(code, Some(0));
    for name in ["efficientnet_lite0 ", "resnet18 "] {
        let line = out.lines().find(|l| l.starts_with(name)).unwrap();
        assert!(line.contains("unusable") && line.contains("SHA-256"), "{line}");
    }
    let (code, _, err) = run_home(&["classify", s(&example("chelsea.png"))]);
    assert_eq!(code, Some(1));
    assert!(err.contains("SHA-256") && err.contains("fetch it again"), "{err}");
}

/// A photo at the pixel limit (100 megapixels) goes through `explain` in about a gigabyte: the pictures at the
/// photo's size are made and written row by row.
#[cfg(target_os = "linux")]
#[test]
fn a_photo_at_the_pixel_limit_stays_within_a_gigabyte() {
    let d = tempdir("huge");
    let (w, h) = (10_000u32, 10_000u32);
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x / 40) as u8, (y / 40) as u8, ((x + y) / 80) as u8]));
    let p = d.join("huge.png");
    img.save(&p).unwrap();
    drop(img);
    let out = d.join("out");
    let child = Command::new(env!("CARGO_BIN_EXE_gradcam"))
        .args(["explain", s(&p), "-o", s(&out), "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut child = child;
    let mut stdout = String::new();
    use std::io::Read;
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    // SAFETY: waiting for our own child, whose status nobody else collects
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut usage) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "status {status}: {stdout}");
    let peak_mb = usage.ru_maxrss as f64 / 1024.0;
    eprintln!("explain of a {w}x{h} photo: peak resident memory {peak_mb:.0} MB");
    assert!(peak_mb < 1100.0, "peak resident memory {peak_mb:.0} MB");
    let v = json(&stdout, "");
    let o = v["results"][0]["explanations"][0]["files"]["overlay"].as_str().unwrap();
    assert_eq!(image::image_dimensions(o).unwrap(), (w, h));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn an_output_folder_inside_the_input_folder_is_not_explained_again() {
    let d = tempdir("outinside");
    let input = d.join("photos");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(example("chelsea.png"), input.join("cat.png")).unwrap();
    let out = input.join("gradcam-out");
    for _ in 0..2 {
        let (code, stdout, err) = gradcam(&["explain", s(&input), "-r", "-o", s(&out), "--json"]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(json(&stdout, &err)["results"].as_array().unwrap().len(), 1, "{stdout}");
    }
    assert_eq!(listing(&out).len(), 3);
}

/// Within the pixel limit but absurdly long: refused from the header (resizing and drawing a 50,000,000×2 image
/// would take buffers of gigabytes), as is a tensor of that shape.
#[test]
fn an_image_or_tensor_with_a_side_over_65535_pixels_is_refused() {
    let d = tempdir("side");
    let mut paths = vec![];
    for (w, h) in [(70_000u32, 2u32), (2, 70_000)] {
        let p = d.join(format!("{w}x{h}.png"));
        let mut set = gradcam::output::FileSet::new();
        set.create(&p, |f| {
            let mut png = gradcam::output::PngRows::new(f, &p, w, h)?;
            for _ in 0..h {
                png.row(&vec![90u8; w as usize * 3])?;
            }
            png.finish()
        })
        .unwrap();
        set.commit().unwrap();
        paths.push(p);
    }
    let t = d.join("long.npy");
    gradcam::npy::Array::new(vec![1, 3, 1, 70_000], vec![0.0; 3 * 70_000]).write(&t).unwrap();
    let out = d.join("out");
    let (code, stdout, err) =
        gradcam(&["explain", s(&paths[0]), s(&paths[1]), "--input-tensor", s(&t), "-o", s(&out), "--json"]);
    no_crash(code, &err);
    assert_eq!(code, 1);
    let v = json(&stdout, &err);
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 3, "{v}");
    for e in errors {
        assert!(e["error"].as_str().unwrap().contains("longer than 65535"), "{e}");
    }
}

#[cfg(unix)]
#[test]
fn the_output_folder_as_input_does_not_feed_on_its_own_pictures_and_one_file_is_one_input() {
    let d = tempdir("selfout");
    let dir = d.join("photos");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(example("chelsea.png"), dir.join("cat.png")).unwrap();
    for _ in 0..3 {
        let (code, stdout, err) =
            gradcam(&["explain", s(&dir), "-o", s(&dir), "--json", "--save-npy", "--method", "gradcam,guided-gradcam"]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(json(&stdout, &err)["results"].as_array().unwrap().len(), 1, "{stdout}");
    }
    // the same file, spelled four ways
    let cat = dir.join("cat.png");
    let dotted = format!("{}/./cat.png", dir.display());
    let up = format!("{}/../photos/cat.png", dir.display());
    let (code, stdout, err) = gradcam(&["classify", s(&cat), &dotted, &up, s(&cat), "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&stdout, &err)["results"].as_array().unwrap().len(), 1);
    let (code, stdout, err) = gradcam(&["explain", s(&cat), &dotted, &up, "-o", s(&d.join("o")), "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&stdout, &err)["results"].as_array().unwrap().len(), 1);
}

#[cfg(unix)]
#[test]
fn names_with_control_characters_cannot_forge_lines_or_drive_the_terminal() {
    let d = tempdir("ctrl");
    let dir = d.join("in");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("evil\nerror: fake.png"), b"not an image").unwrap();
    std::fs::write(dir.join("esc\u{1b}[31mred.png"), b"not an image").unwrap();
    let (code, stdout, err) = gradcam(&["explain", s(&dir), "-o", s(&d.join("o"))]);
    assert_eq!(code, 1);
    assert!(!err.contains('\u{1b}') && !stdout.contains('\u{1b}'), "{err:?}");
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 2, "{err}");
    let mut names: Vec<String> = (0..1000).map(|i| format!("c{i}")).collect();
    names[285] = "\u{1b}[2Jcat".into();
    let labels = d.join("labels.txt");
    std::fs::write(&labels, names.join("\n")).unwrap();
    let (code, stdout, _) = gradcam(&["classify", s(&example("chelsea.png")), "--labels", s(&labels)]);
    assert_eq!(code, 0);
    assert!(!stdout.contains('\u{1b}') && stdout.contains("\\u{1b}[2Jcat"), "{stdout}");
}

#[test]
fn more_values_out_of_range_are_refused() {
    let d = tempdir("range2");
    let img = example("chelsea.png");
    let (code, _, err) = gradcam(&["explain", s(&img), "--class", "top1001", "-o", s(&d)]);
    assert_eq!(code, 1);
    assert!(err.contains("top1001") && err.contains("1000 classes"), "{err}");
    let (code, _, err) = gradcam(&["bench", "--reps", "18446744073709551615", "--what", "forward", "--batch", "1"]);
    no_crash(code, &err);
    assert_eq!(code, 1);
    assert!(err.contains("--reps"), "{err}");
    let big = d.join("big.npy");
    gradcam::npy::Array::new(vec![1, 3, 8, 8], vec![1e38; 3 * 64]).write(&big).unwrap();
    let (code, _, err) = gradcam(&["explain", "--input-tensor", s(&big), "-o", s(&d)]);
    no_crash(code, &err);
    assert_eq!(code, 1);
    assert!(err.contains("big.npy") && err.contains("normalised image"), "{err}");
    let short = d.join("short.txt");
    std::fs::write(&short, "a\nb\n").unwrap();
    let (code, _, err) = gradcam(&["classify", s(&img), "--labels", s(&short)]);
    assert_eq!(code, 1);
    assert!(err.contains("short.txt") && err.contains("2 labels for a model with 1000 classes"), "{err}");
}

/// A run ended by SIGTERM or SIGINT (Ctrl-C) removes its temporary files: nothing half-written is left, not
/// even hidden.
#[cfg(unix)]
#[test]
fn an_interrupted_run_leaves_no_temporary_file() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let d = tempdir(&format!("sig{sig}"));
        let out = d.join("out");
        std::fs::create_dir_all(&out).unwrap();
        // a thousand classes: minutes of pictures, so that the signal comes in the middle
        let mut child = Command::new(env!("CARGO_BIN_EXE_gradcam"))
            .args(["explain", s(&example("chelsea.png")), "-o", s(&out), "--class", "top1000"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let temporaries = || listing(&out).into_iter().filter(|n| n.starts_with(".gradcam-")).count();
        let start = std::time::Instant::now();
        while temporaries() == 0 {
            assert!(start.elapsed().as_secs() < 60, "no temporary file appeared");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        // SAFETY: signalling our own child
        unsafe { libc::kill(child.id() as libc::pid_t, sig) };
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(128 + sig), "{status:?}");
        assert_eq!(temporaries(), 0, "left: {:?}", listing(&out));
    }
}
