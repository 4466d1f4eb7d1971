//! Downloads against a loopback HTTP server written here (no internet, ever): a whole, checked file lands in
//! place; a wrong hash, a truncated body, an HTTP error or no server at all leave no file behind and say what
//! happened; redirects are followed; the zoo's resolver downloads once, refuses offline and keeps a bad cached
//! file out.
use gradcam::download::download;
use gradcam::models::zoo::{torchvision_checkpoint, Fetch, Places};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What the server answers for a path.
#[derive(Clone)]
enum Reply {
    /// 200 with the bytes and their length.
    File(Vec<u8>),
    /// 200 announcing `announced` bytes, sending `body`, then closing the connection.
    Truncated { body: Vec<u8>, announced: usize },
    /// This status, with a short text body.
    Status(u16, &'static str),
    /// 302 to this location.
    Redirect(String),
}

struct Server {
    port: u16,
    /// The paths requested, in order.
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

/// A minimal HTTP/1.1 server on 127.0.0.1 (a free port), one connection at a time, each closed after its answer;
/// a path not in `routes` gets 404.
fn serve(routes: HashMap<String, Reply>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(vec![]));
    let seen = log.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let Some(path) = read_request(&mut conn) else { continue };
            seen.lock().unwrap().push(path.clone());
            let reply = routes.get(&path).cloned().unwrap_or(Reply::Status(404, "Not Found"));
            let _ = answer(&mut conn, reply);
        }
    });
    Server { port, log }
}

/// The path of the request on `conn` (its head read up to the blank line).
fn read_request(conn: &mut TcpStream) -> Option<String> {
    let mut head = vec![];
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    head.lines().next()?.split(' ').nth(1).map(str::to_string)
}

fn answer(conn: &mut TcpStream, reply: Reply) -> std::io::Result<()> {
    let (status, headers, body) = match reply {
        Reply::File(b) => ("200 OK".to_string(), format!("Content-Length: {}\r\n", b.len()), b),
        Reply::Truncated { body, announced } => {
            ("200 OK".to_string(), format!("Content-Length: {announced}\r\n"), body)
        }
        Reply::Status(code, text) => {
            (format!("{code} {text}"), format!("Content-Length: {}\r\n", text.len()), text.as_bytes().to_vec())
        }
        Reply::Redirect(to) => ("302 Found".to_string(), format!("Location: {to}\r\nContent-Length: 0\r\n"), vec![]),
    };
    let head =
        format!("HTTP/1.1 {status}\r\n{headers}Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(&body)?;
    conn.flush()?;
    conn.shutdown(std::net::Shutdown::Both)
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// A fake checkpoint: deterministic bytes, and the torchvision-style name carrying its SHA-256 prefix.
fn fake_checkpoint(tag: &str, len: usize) -> (Vec<u8>, String, String) {
    let body: Vec<u8> = (0..len).map(|i| (i * 7 + tag.len()) as u8).collect();
    let prefix = sha256_hex(&body)[..8].to_string();
    (body, format!("{tag}-{prefix}.pth"), prefix)
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gradcam-download-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every entry of `dir` (hidden temporaries included); none when the folder does not exist.
fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => vec![],
    }
}

/// A port on 127.0.0.1 that nothing listens on (bound, then let go).
fn dead_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn a_whole_checked_file_lands_in_place() {
    let (body, file, prefix) = fake_checkpoint("ok", 300_000);
    let srv = serve(HashMap::from([(format!("/models/{file}"), Reply::File(body.clone()))]));
    let d = scratch("ok");
    let dest = d.join("weights").join(&file);
    let n = download(&srv.url(&format!("/models/{file}")), &dest, &prefix, true).unwrap();
    assert_eq!(n, body.len() as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(entries(&d.join("weights")), vec![file.clone()], "only the file, no temporary");
    // the full hash, and an upper-case prefix, are accepted too
    download(&srv.url(&format!("/models/{file}")), &dest, &sha256_hex(&body).to_uppercase(), false).unwrap();
    assert_eq!(srv.requests().len(), 2);
}

#[test]
fn a_wrong_hash_leaves_nothing() {
    let (body, file, _) = fake_checkpoint("bad", 5000);
    let digest = sha256_hex(&body);
    let wrong = if digest.starts_with("00000000") { "11111111" } else { "00000000" };
    let srv = serve(HashMap::from([(format!("/m/{file}"), Reply::File(body))]));
    let d = scratch("hash");
    let dest = d.join(&file);
    let url = srv.url(&format!("/m/{file}"));
    let e = download(&url, &dest, wrong, false).unwrap_err().to_string();
    assert!(e.contains(&url) && e.contains(&digest) && e.contains(wrong) && e.contains("corrupt"), "{e}");
    assert!(e.contains(&dest.display().to_string()), "{e}");
    assert!(entries(&d).is_empty(), "left behind: {:?}", entries(&d));
}

#[test]
fn a_truncated_body_leaves_nothing() {
    let (body, file, prefix) = fake_checkpoint("trunc", 1000);
    let srv = serve(HashMap::from([(
        format!("/m/{file}"),
        Reply::Truncated { body: body[..300].to_vec(), announced: 1000 },
    )]));
    let d = scratch("trunc");
    let dest = d.join(&file);
    let url = srv.url(&format!("/m/{file}"));
    let e = download(&url, &dest, &prefix, false).unwrap_err().to_string();
    assert!(e.contains(&url) && e.contains("truncated") && e.contains("300 of 1000 bytes"), "{e}");
    assert!(e.contains(&dest.display().to_string()), "{e}");
    assert!(entries(&d).is_empty(), "left behind: {:?}", entries(&d));
}

#[test]
fn http_errors_leave_nothing() {
    let srv = serve(HashMap::from([("/m/broken.pth".to_string(), Reply::Status(500, "Internal Server Error"))]));
    let d = scratch("status");
    for (path, code) in [("/m/broken.pth", "HTTP 500"), ("/m/missing.pth", "HTTP 404")] {
        let dest = d.join("w").join("x-00000000.pth");
        let url = srv.url(path);
        let e = download(&url, &dest, "00000000", false).unwrap_err().to_string();
        assert!(e.contains(&url) && e.contains(code) && e.contains(&dest.display().to_string()), "{e}");
        assert!(entries(&d.join("w")).is_empty(), "left behind: {:?}", entries(&d.join("w")));
    }
}

#[test]
fn no_server_leaves_nothing() {
    let d = scratch("dead");
    let dest = d.join("x-00000000.pth");
    let url = format!("http://127.0.0.1:{}/m/x-00000000.pth", dead_port());
    let e = download(&url, &dest, "00000000", false).unwrap_err().to_string();
    assert!(e.contains(&url) && e.contains(&dest.display().to_string()), "{e}");
    assert!(entries(&d).is_empty(), "left behind: {:?}", entries(&d));
}

#[test]
fn redirects_are_followed() {
    let (body, file, prefix) = fake_checkpoint("redir", 4096);
    let srv = serve(HashMap::from([
        (format!("/models/{file}"), Reply::Redirect(format!("/cdn/{file}"))),
        (format!("/cdn/{file}"), Reply::File(body.clone())),
    ]));
    let d = scratch("redir");
    let dest = d.join(&file);
    download(&srv.url(&format!("/models/{file}")), &dest, &prefix, false).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(srv.requests(), vec![format!("/models/{file}"), format!("/cdn/{file}")]);
}

fn places(d: &Path) -> Places {
    Places { gradcam: d.join("gradcam/weights"), torch: Some(d.join("torch/hub/checkpoints")), base_url: None }
}

/// The zoo's resolver: a checkpoint found nowhere is downloaded into gradcam's cache, once; the next call finds
/// it there without a request. The base-address override fetches the same file name from the mirror.
#[test]
fn the_zoo_downloads_once_into_its_cache() {
    let (body, file, prefix) = fake_checkpoint("fakenet", 20_000);
    let srv = serve(HashMap::from([
        (format!("/models/{file}"), Reply::File(body.clone())),
        (format!("/mirror/{file}"), Reply::File(body.clone())),
    ]));
    let d = scratch("zoo");
    let p = places(&d);
    let url = srv.url(&format!("/models/{file}"));
    let fetch = Fetch { offline: false, progress: false };
    let got = torchvision_checkpoint("fakenet", &file, &prefix, &url, &p, fetch).unwrap();
    assert_eq!(got, p.gradcam.join(&file));
    assert_eq!(std::fs::read(&got).unwrap(), body);
    let again = torchvision_checkpoint("fakenet", &file, &prefix, &url, &p, fetch).unwrap();
    assert_eq!(again, got);
    assert_eq!(srv.requests().len(), 1, "the second call must not download again");

    // found in torch's cache: used where it is, nothing downloaded
    let d2 = scratch("zoo-torch");
    let p2 = places(&d2);
    std::fs::create_dir_all(p2.torch.as_ref().unwrap()).unwrap();
    std::fs::write(p2.torch.as_ref().unwrap().join(&file), &body).unwrap();
    let got = torchvision_checkpoint("fakenet", &file, &prefix, &url, &p2, fetch).unwrap();
    assert_eq!(got, p2.torch.as_ref().unwrap().join(&file));
    assert_eq!(srv.requests().len(), 1);

    // a mirror replaces the address's folder
    let d3 = scratch("zoo-mirror");
    let p3 = Places { base_url: Some(srv.url("/mirror/")), ..places(&d3) };
    torchvision_checkpoint("fakenet", &file, &prefix, &url, &p3, fetch).unwrap();
    assert_eq!(srv.requests().last().unwrap(), &format!("/mirror/{file}"));
}

/// Offline, a missing checkpoint is an error naming both caches and the address to fetch it from; nothing is
/// requested or written.
#[test]
fn offline_refuses_and_says_where_to_put_the_file() {
    let (body, file, prefix) = fake_checkpoint("offnet", 100);
    let srv = serve(HashMap::from([(format!("/models/{file}"), Reply::File(body))]));
    let d = scratch("offline");
    let p = places(&d);
    let url = srv.url(&format!("/models/{file}"));
    let e = torchvision_checkpoint("offnet", &file, &prefix, &url, &p, Fetch { offline: true, progress: true })
        .unwrap_err()
        .to_string();
    for want in [&url, &p.gradcam.join(&file).display().to_string(), &p.torch.as_ref().unwrap().display().to_string()] {
        assert!(e.contains(want.as_str()), "`{want}` missing from: {e}");
    }
    assert!(e.contains("--offline") && e.contains("GRADCAM_OFFLINE") && e.contains("--weights"), "{e}");
    assert!(srv.requests().is_empty());
    assert!(entries(&p.gradcam).is_empty() && entries(p.torch.as_ref().unwrap()).is_empty());
}

/// A failed download through the resolver says which model and where to put the file, and leaves gradcam's
/// cache empty; a cached file with the wrong hash is refused (not replaced, not downloaded over).
#[test]
fn the_zoo_reports_failures_and_keeps_a_bad_cached_file_out() {
    let srv = serve(HashMap::new());
    let d = scratch("zoo-fail");
    let p = places(&d);
    let url = srv.url("/models/gone-00000000.pth");
    let e = torchvision_checkpoint("gonenet", "gone-00000000.pth", "00000000", &url, &p, Fetch::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("HTTP 404") && e.contains(&url) && e.contains("gonenet") && e.contains("--weights"), "{e}");
    assert!(e.contains(&p.torch.as_ref().unwrap().display().to_string()), "{e}");
    assert!(entries(&p.gradcam).is_empty(), "left behind: {:?}", entries(&p.gradcam));

    std::fs::write(p.gradcam.join("gone-00000000.pth"), b"not the checkpoint").unwrap();
    let e = torchvision_checkpoint("gonenet", "gone-00000000.pth", "00000000", &url, &p, Fetch::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("SHA-256") && e.contains("00000000") && e.contains("gone-00000000.pth"), "{e}");
    assert_eq!(srv.requests().len(), 1, "no download over a cached file");
    assert_eq!(std::fs::read(p.gradcam.join("gone-00000000.pth")).unwrap(), b"not the checkpoint");
}
