//! `--model file.onnx` end to end: pictures and JSON from an imported model, `gradcam layers` by module path,
//! and bad files refused with the file named and nothing written.
mod common;
use common::*;
use std::path::PathBuf;

fn onnx(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/onnx").join(case)
}

#[test]
fn an_imported_model_is_explained_like_a_zoo_model() {
    let out = tempdir("onnx-explain");
    let m = onnx("swin_dynamo/model.onnx");
    let (code, stdout, stderr) = gradcam(&[
        "explain",
        s(&example("chelsea.png")),
        "--model",
        s(&m),
        "--method",
        "gradcam,layercam,guided-gradcam",
        "--class",
        "top2",
        "--out",
        s(&out),
        "--json",
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let text = doc.to_string();
    assert!(text.contains("features.3.1.norm1"), "the default layer is reported: {text}");
    let files: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(files.len() >= 2 * 3 * 2, "{files:?}");
    // the layer by module path, ONNX node name
    let (code, stdout, _) = gradcam(&["layers", "--model", s(&onnx("resnet_ts/model.onnx"))]);
    assert_eq!(code, 0);
    assert!(stdout.contains("layer4") && stdout.contains("/layer4/layer4.0/relu_1/Relu") && stdout.contains("  *"));
    assert!(stdout.contains("not targetable") && stdout.contains("layer1.0.conv1"), "{stdout}");
}

#[test]
fn bad_onnx_files_are_refused_and_nothing_is_written() {
    let special = onnx("special");
    for (file, want) in [
        ("empty.onnx", "empty"),
        ("truncated.onnx", "truncated.onnx"),
        ("not_onnx.onnx", "not_onnx.onnx"),
        ("unsupported_op.onnx", "`Celu`"),
        ("two_inputs.onnx", "2 inputs"),
        ("dynamic_input.onnx", "--input-size"),
    ] {
        let out = tempdir("onnx-bad");
        let (code, stdout, stderr) =
            gradcam(&["explain", s(&example("chelsea.png")), "--model", s(&special.join(file)), "--out", s(&out)]);
        assert_eq!(code, 1, "{file}: {stdout}\n{stderr}");
        assert!(stderr.contains(want) && stderr.contains(file), "{file}: {stderr}");
        let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
        assert!(left.is_empty(), "{file}: files written: {left:?}");
    }
    // --weights makes no sense for an ONNX model
    let (code, _, stderr) = gradcam(&[
        "explain",
        s(&example("chelsea.png")),
        "--model",
        s(&onnx("resnet_ts/model.onnx")),
        "--weights",
        "synthetic",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("carries its own weights"), "{stderr}");
    // a fixed-size model and another --input-size
    let (code, _, stderr) = gradcam(&[
        "classify",
        s(&example("chelsea.png")),
        "--model",
        s(&onnx("resnet_ts/model.onnx")),
        "--input-size",
        "96",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("fixed to 64x64"), "{stderr}");
}
