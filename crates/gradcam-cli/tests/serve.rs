//! `gradcam serve` from the binary: it says where it listens, answers there, and refuses bad settings.
//! (The API itself is tested in crates/gradcam-serve/tests/api.rs, the page in its browser test.)

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gradcam"))
}

/// Start `gradcam serve ARGS` on a free port, GET `path` there, stop it: the response, whole.
fn serve_get(args: &[&str], path: &str) -> String {
    let mut child = bin()
        .arg("serve")
        .args(args)
        .args(["--bind", "127.0.0.1:0", "--workers", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.split("http://").nth(1).and_then(|s| s.split_whitespace().next()).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("no address in {line:?}")
    });
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let _ = child.kill();
    let _ = child.wait();
    out
}

#[test]
fn serve_listens_where_it_says() {
    let out = serve_get(&["--weights", "synthetic"], "/healthz");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains(r#""status":"ok""#) && out.contains(r#""workers":1"#), "{out}");
}

#[test]
fn serve_refuses_bad_settings() {
    for (args, says) in [
        (&["--workers", "0"][..], "--workers 0"),
        (&["--timeout", "0"][..], "--timeout 0"),
        (&["--bind", "127.0.0.1:99999"][..], "127.0.0.1:99999"),
    ] {
        let out = bin().args(["serve", "--weights", "synthetic"]).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn serve_explains_an_onnx_model() {
    let model =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/onnx/special/dynamic_input.onnx");
    // a dynamic input needs its size
    let out = bin().args(["serve", "--model", model.to_str().unwrap(), "--bind", "127.0.0.1:0"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--input-size"));
    let m = model.to_str().unwrap();
    let out = serve_get(&["--model", m, "--input-size", "64", "--mean", "0.5", "--std", "0.25"], "/v1/layers");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains(r#""input":[3,64,64]"#) && out.contains(r#""default""#), "{out}");
}
