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
/// The URL path: a local HTTP server on 127.0.0.1 serves a checkpoint; it is downloaded once into the cache,
/// checked against its SHA-256 prefix, and a wrong hash leaves nothing behind.
#[test]
fn download_is_cached_and_verified() {
    use sha2::Digest;
    use std::io::{Read, Write};
    let body = std::fs::read(fixture("ckpt_zip.pth")).unwrap();
    let digest: String = sha2::Sha256::digest(&body).iter().map(|b| format!("{b:02x}")).collect();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    let served_body = body.clone();
    let handle = std::thread::spawn(move || {
        let body = served_body;
        // serve at most 3 requests, then stop
        for stream in listener.incoming().take(3) {
            let mut s = stream.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    let dir = tempdir();
    let url = format!("http://127.0.0.1:{port}/w.pth");
    let dest = dir.join("w.pth");
    let p = gradcam::models::zoo::download_cached(&url, &dest, Some(&digest[..8])).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), body);
    // second time: from the cache, no request
    gradcam::models::zoo::download_cached(&url, &dest, Some(&digest[..8])).unwrap();
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 1);
    // a wrong hash: error, and no file left (neither the destination nor a temporary)
    let bad = dir.join("bad.pth");
    let e = gradcam::models::zoo::download_cached(&url, &bad, Some("00000000")).unwrap_err().to_string();
    assert!(e.contains("SHA-256") && e.contains(&url), "{e}");
    assert!(!bad.exists());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "only the good download remains");
    assert!(Checkpoint::load(&p).is_ok());
    // release the server thread
    let _ = std::net::TcpStream::connect(("127.0.0.1", port));
    handle.join().unwrap();
}
