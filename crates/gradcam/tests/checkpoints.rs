//! Checkpoint formats and checkpoint errors.
mod common;
use candle_core::{Device, Tensor};
use common::*;
use gradcam::checkpoint::Checkpoint;
use gradcam::weights::Weights;
use std::collections::HashMap;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name)
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn legacy_zip_with_strided_views_and_safetensors_load_to_equal_tensors() {
    let zip = Checkpoint::load(fixture("ckpt_zip.pth")).unwrap();
    let legacy = Checkpoint::load(fixture("ckpt_legacy.pth")).unwrap();
    let st = Checkpoint::load(fixture("ckpt.safetensors")).unwrap();
    assert_eq!(zip.tensors.len(), 4);
    for name in ["conv.weight", "conv.weight_t", "fc.weight", "fc.bias"] {
        // expected values: numpy's reading of the same strided views (scripts/make_checkpoint_fixtures.py)
        let want = gradcam::npy::Array::read(fixture(&format!("expected.{name}.npy"))).unwrap();
        for (fmt, c) in [("zip", &zip), ("legacy", &legacy), ("safetensors", &st)] {
            let t = &c.tensors[name];
            assert_eq!(t.dims(), want.shape.as_slice(), "{fmt} {name}: shape");
            assert_eq!(values(t), want.data, "{fmt} {name}: values");
        }
    }
}

#[test]
fn real_legacy_checkpoint_has_every_tensor_of_lite0() {
    let c = Checkpoint::load(asset("weights/efficientnet_lite0.pth")).unwrap();
    assert_eq!(c.tensors.len(), 296, "the package's checkpoint has 296 tensors");
    assert_eq!(c.tensors["_conv_stem.weight"].dims(), &[32, 3, 3, 3]);
}

fn err_of(path: &std::path::Path) -> String {
    Checkpoint::load(path).unwrap_err().to_string()
}

#[test]
fn broken_files_give_clear_errors() {
    let dir = tempdir();
    let empty = dir.join("empty.pth");
    std::fs::write(&empty, b"").unwrap();
    let e = err_of(&empty);
    assert!(e.contains("empty.pth") && e.contains("empty"), "{e}");

    let text = dir.join("notes.pth");
    std::fs::write(&text, b"just some text, not weights").unwrap();
    let e = err_of(&text);
    assert!(e.contains("notes.pth") && e.contains("not a checkpoint"), "{e}");

    for f in ["ckpt_zip.pth", "ckpt_legacy.pth", "ckpt.safetensors"] {
        let b = std::fs::read(fixture(f)).unwrap();
        let cut = dir.join(format!("cut-{f}"));
        std::fs::write(&cut, &b[..b.len() * 2 / 3]).unwrap();
        let e = err_of(&cut);
        assert!(e.contains(&format!("cut-{f}")), "{f}: {e}");
    }
    let e = err_of(&dir.join("missing.pth"));
    assert!(e.contains("missing.pth"), "{e}");
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("gradcam-test-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

fn lite0_tensors() -> HashMap<String, Tensor> {
    Checkpoint::load(asset("weights/efficientnet_lite0.pth")).unwrap().tensors
}

/// Save the lite0 tensors after `edit` as safetensors named `name`, and build the model from them.
fn build_edited(name: &str, edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> gradcam::Result<gradcam::Network> {
    let mut t = lite0_tensors();
    edit(&mut t);
    let p = tempdir().join(name);
    Checkpoint::save_safetensors(&t, &p).unwrap();
    gradcam::models::zoo::build("efficientnet_lite0", &Weights::load(&p).unwrap(), &Device::Cpu)
}

#[test]
fn missing_and_misshapen_tensors_are_named_with_both_shapes() {
    let e = build_edited("missing.safetensors", |t| {
        t.remove("_blocks.3._depthwise_conv.weight");
    })
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("missing.safetensors") && e.contains("_blocks.3._depthwise_conv.weight"), "{e}");

    let e = build_edited("shape.safetensors", |t| {
        let z = Tensor::zeros((32, 3, 5, 5), candle_core::DType::F32, &Device::Cpu).unwrap();
        t.insert("_conv_stem.weight".into(), z);
    })
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("_conv_stem.weight") && e.contains("[32, 3, 5, 5]") && e.contains("[32, 3, 3, 3]"), "{e}");
}

#[test]
fn class_count_comes_from_the_checkpoint() {
    let net = build_edited("ten.safetensors", |t| {
        t.insert("_fc.weight".into(), gradcam::synthetic::tensor("_fc.weight", &[10, 1280]).unwrap());
        t.insert("_fc.bias".into(), gradcam::synthetic::tensor("_fc.bias", &[10]).unwrap());
    })
    .unwrap();
    assert_eq!(net.num_classes, 10);
    let x = Tensor::zeros((1, 3, 224, 224), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert_eq!(net.forward(&x).unwrap().dims(), &[1, 10]);
}
/// A zoo checkpoint found on disk is checked against the SHA-256 prefix of its published name: the right prefix
/// passes, any other (a truncated or different file) is refused with the path and both hashes in the message.
#[test]
fn checkpoint_hash_prefix_is_checked() {
    use sha2::Digest;
    let path = fixture("ckpt_zip.pth");
    let body = std::fs::read(&path).unwrap();
    let digest: String = sha2::Sha256::digest(&body).iter().map(|b| format!("{b:02x}")).collect();
    gradcam::models::zoo::check_sha256_prefix(&path, &digest[..8]).unwrap();
    let e = gradcam::models::zoo::check_sha256_prefix(&path, "00000000").unwrap_err().to_string();
    assert!(e.contains("ckpt_zip.pth") && e.contains(&digest) && e.contains("00000000"), "{e}");
    let e = gradcam::models::zoo::resolve_weights("resnet18", Some("https://example.invalid/w.pth")).unwrap_err();
    assert!(e.to_string().contains("does not download") && e.to_string().contains("only the zoo's own"), "{e}");
}

/// Weights a model asks for must be finite floats: an inf in `_bn0.bias` used to pass through ReLU6 as a confident
/// prediction, `_fc.weight` stored as integers was converted and used. Both are refused naming the file, the
/// tensor and the value or dtype; the integer buffers the model does not ask for stay fine.
#[test]
fn weights_that_are_not_finite_floats_are_refused_by_name() {
    let e = build_edited("inf.safetensors", |t| {
        let b = t["_bn0.bias"].clone();
        let mut v = values(&b);
        v[3] = f32::INFINITY;
        t.insert("_bn0.bias".into(), Tensor::from_vec(v, b.dims(), &Device::Cpu).unwrap());
    })
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("inf.safetensors: tensor `_bn0.bias` holds inf at element 3; expected finite weights"), "{e}");
    let e = build_edited("nan.safetensors", |t| {
        let b = t["_bn0.running_var"].clone();
        let mut v = values(&b);
        v[7] = f32::NAN;
        t.insert("_bn0.running_var".into(), Tensor::from_vec(v, b.dims(), &Device::Cpu).unwrap());
    })
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("tensor `_bn0.running_var` holds NaN at element 7"), "{e}");
    let e = build_edited("int.safetensors", |t| {
        let w = t["_fc.weight"].to_dtype(candle_core::DType::U8).unwrap();
        t.insert("_fc.weight".into(), w);
        t.insert("_bn0.num_batches_tracked".into(), Tensor::new(3i64, &Device::Cpu).unwrap());
    })
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("int.safetensors: tensor `_fc.weight` is stored as uint8; expected floating-point"), "{e}");
    let net = build_edited("buffers.safetensors", |t| {
        t.insert("_bn0.num_batches_tracked".into(), Tensor::new(3i64, &Device::Cpu).unwrap());
    });
    assert!(net.is_ok(), "{:?}", net.err());
}
