#![allow(dead_code)]
//! Helpers shared by the binary's tests: the fetched assets, running the binary, scratch folders.
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn home() -> PathBuf {
    let h = std::env::var_os("GRADCAM_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/gradcam"));
    assert!(h.join("weights/efficientnet_lite0.pth").exists(), "run scripts/fetch-assets.sh first");
    h
}

pub fn example(name: &str) -> PathBuf {
    home().join("examples").join(name)
}

pub fn gradcam(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gradcam")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

pub fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gradcam-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
