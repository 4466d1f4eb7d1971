//! Every instruction set of the kernels, through the whole binary: the same photo explained with each set the
//! CPU has (`GRADCAM_ISA`) gives the same files, byte for byte, as the scalar set — EfficientNet-Lite0 (real
//! weights: depthwise correlations, pointwise products, strided phases) and ResNet-18 (synthetic weights: 3×3
//! products through the phase planes, the 7×7 stem, max-pooling, residual sums). A set the CPU lacks shows as
//! an ignored test with its reason.
mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn explain_with(isa: &str, model: &[&str], out: &Path) -> String {
    let photo = example("chelsea.png");
    let mut args = vec!["explain", s(&photo)];
    args.extend_from_slice(model);
    args.extend_from_slice(&[
        "--method",
        "gradcam,gradcam++,layercam,guided-gradcam",
        "--save-npy",
        "--json",
        "-o",
        s(out),
    ]);
    let o = Command::new(env!("CARGO_BIN_EXE_gradcam")).args(&args).env("GRADCAM_ISA", isa).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "GRADCAM_ISA={isa} {model:?}: {stderr}");
    stdout.replace(s(out), "OUT")
}

/// The outputs of a run, but for its record (`--resume`'s manifest, which names the output folder).
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap())
        })
        .filter(|(name, _)| name != ".gradcam_run.jsonl")
        .collect()
}

fn same_as_scalar(isa: &str) {
    for (tag, model) in [
        ("lite0", &["--model", "efficientnet_lite0"][..]),
        ("resnet18", &["--model", "resnet18", "--weights", "synthetic", "--layer", "layer3,layer4"][..]),
    ] {
        let (a, b) = (tempdir(&format!("isa-{isa}-{tag}")), tempdir(&format!("isa-scalar-{isa}-{tag}")));
        let (ra, rb) = (explain_with(isa, model, &a), explain_with("scalar", model, &b));
        assert_eq!(ra, rb, "{tag}: the JSON reports of {isa} and scalar differ");
        let (fa, fb) = (files(&a), files(&b));
        assert!(fa.keys().filter(|k| k.ends_with(".npy")).count() >= 3, "{tag}: maps were written: {:?}", fa.keys());
        assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>(), "{tag}: the same files");
        for (name, bytes) in &fa {
            assert!(bytes == &fb[name], "{tag}: {name} differs between {isa} and scalar");
        }
        let _ = std::fs::remove_dir_all(&a);
        let _ = std::fs::remove_dir_all(&b);
    }
}

#[test]
#[cfg_attr(not(has_avx512), ignore = "this CPU has no AVX-512F: its kernels cannot run here")]
fn avx512_gives_the_scalar_files_byte_for_byte() {
    same_as_scalar("avx512");
}

#[test]
#[cfg_attr(not(has_avx2), ignore = "this CPU has no AVX2 with FMA: its kernels cannot run here")]
fn avx2_gives_the_scalar_files_byte_for_byte() {
    same_as_scalar("avx2");
}

#[test]
fn a_bad_gradcam_isa_is_refused_with_the_value_and_the_choices() {
    let o = Command::new(env!("CARGO_BIN_EXE_gradcam")).args(["models"]).env("GRADCAM_ISA", "sse9").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("GRADCAM_ISA=\"sse9\"") && err.contains("avx512, avx2, scalar"), "{err}");
}

#[test]
#[cfg_attr(has_avx512, ignore = "this CPU has every instruction set: none to refuse as missing")]
fn a_set_the_cpu_lacks_is_refused() {
    let o = Command::new(env!("CARGO_BIN_EXE_gradcam")).args(["models"]).env("GRADCAM_ISA", "avx512").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("this CPU has no avx512") && err.contains("scalar"), "{err}");
}
