//! Downloading a file whole and checked, or not at all: the zoo's torchvision checkpoints on first use.
//!
//! The body is streamed into a temporary file in the destination's folder (created exclusively, removed on any
//! failure and by the CLI's signal handler, see [`crate::output`]), its SHA-256 computed on the way, compared with
//! the expected hex prefix (torchvision puts the first 8 hex digits in each file name, as `torch.hub` checks),
//! synced to disk and only then renamed into place. An HTTP error, a connection that fails, stalls or ends before
//! the announced length, or a body with another hash leaves nothing behind: no temporary, no destination.

use crate::error::{Error, Result};
use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// Longest wait for a connection to open (each address tried).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the response's status line and headers, once connected.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for the next bytes of the body: a transfer that stalls this long is abandoned.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Redirects followed (torchvision's host may send the request on to a CDN).
pub const MAX_REDIRECTS: u32 = 10;

/// Download `url` to `dest`, checking that the SHA-256 of what arrives starts with `sha256_prefix` (hex, 1 to
/// 64 digits, either case). The destination's folder is created if needed; a file already at `dest` is replaced
/// only by a whole, checked download. With `progress`, a bar is drawn on stderr while stderr is a terminal.
/// Returns the number of bytes written.
pub fn download(url: &str, dest: &Path, sha256_prefix: &str, progress: bool) -> Result<u64> {
    let prefix = sha256_prefix.to_ascii_lowercase();
    if prefix.is_empty() || prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::invalid(format!(
            "downloading {url}: expected SHA-256 prefix `{sha256_prefix}` is not 1 to 64 hex digits"
        )));
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(Error::invalid(format!("{url}: not an http:// or https:// address (for {})", dest.display())));
    }
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if name.is_empty() {
        return Err(Error::invalid(format!("downloading {url}: destination {} is not a file name", dest.display())));
    }
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::invalid(format!("downloading {url}: cannot create the folder {} for it: {e}", dir.display()))
    })?;
    let fail =
        |what: String| Error::invalid(format!("downloading {url}: {what}; nothing was saved to {}", dest.display()));

    let mut response = agent(url).get(url).call().map_err(|e| fail(describe_ureq(&e)))?;
    let status = response.status();
    if status != ureq::http::StatusCode::OK {
        let reason = status.canonical_reason().unwrap_or("");
        let hint = if status.is_redirection() { " (a redirect that was not followed)" } else { "" };
        return Err(fail(format!("the server answered HTTP {} {reason}{hint}, expected 200 OK", status.as_u16())));
    }
    let expected_len = response.body().content_length();
    let mut body = response.body_mut().as_reader();

    let mut bar = Bar::new(progress && std::io::stderr().is_terminal(), &name, expected_len);
    let mut received = 0u64;
    let mut set = crate::output::FileSet::new();
    let written = set.create(dest, |file| {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(fail(match expected_len {
                        Some(l) => format!("truncated: the transfer stopped after {received} of {l} bytes ({e})"),
                        None => format!("the transfer failed after {received} bytes ({e})"),
                    }))
                }
            };
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(|e| fail(format!("writing to {}: {e}", dir.display())))?;
            received += n as u64;
            if let Some(l) = expected_len.filter(|&l| received > l) {
                return Err(fail(format!("the server sent more than the {l} bytes it announced")));
            }
            bar.update(received);
        }
        if let Some(l) = expected_len.filter(|&l| received != l) {
            return Err(fail(format!("truncated: the connection ended after {received} of {l} bytes")));
        }
        let digest: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if !digest.starts_with(&prefix) {
            return Err(fail(format!(
                "corrupt: the SHA-256 of the {received} bytes received is {digest}, expected one starting with \
                 {prefix}"
            )));
        }
        file.sync_all().map_err(|e| fail(format!("syncing to {}: {e}", dir.display())))
    });
    bar.finish();
    written?;
    set.commit()?;
    sync_dir(dir);
    Ok(received)
}

/// The HTTP client: timeouts for connecting, for the response and for a stalled body (none for the whole
/// transfer, which may be slow and still progressing); redirects followed; no proxy for a loopback address.
fn agent(url: &str) -> ureq::Agent {
    let mut cfg = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(MAX_REDIRECTS)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_recv_response(Some(RESPONSE_TIMEOUT))
        .timeout_per_read(Some(STALL_TIMEOUT))
        .user_agent(concat!("gradcam/", env!("CARGO_PKG_VERSION")));
    if is_loopback(url) {
        cfg = cfg.proxy(None);
    }
    cfg.build().into()
}

/// Whether the URL's host is this machine (127.x, ::1, localhost).
fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(h) = host.strip_prefix('[') {
        h.split(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A client error in words: what failed (the connection, a timeout, the protocol) with ureq's details.
fn describe_ureq(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) => format!("could not connect or read the response: {io}"),
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::HostNotFound => "the host name could not be resolved".to_string(),
        ureq::Error::ConnectionFailed => "the connection failed".to_string(),
        ureq::Error::TooManyRedirects => format!("more than {MAX_REDIRECTS} redirects"),
        e => e.to_string(),
    }
}

/// Make a rename in `dir` durable (best effort: not every file system syncs a folder).
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// A progress bar on stderr: `name [=====>    ]  12.3/97.8 MB  8.1 MB/s`, redrawn at most 10 times a second.
struct Bar {
    on: bool,
    name: String,
    total: Option<u64>,
    start: Instant,
    last: Option<Instant>,
    received: u64,
}

impl Bar {
    const WIDTH: usize = 30;
    const EVERY: Duration = Duration::from_millis(100);

    fn new(on: bool, name: &str, total: Option<u64>) -> Self {
        Bar { on, name: name.to_string(), total, start: Instant::now(), last: None, received: 0 }
    }

    fn update(&mut self, received: u64) {
        self.received = received;
        if !self.on || self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        self.draw();
    }

    fn draw(&self) {
        let mb = |b: u64| b as f64 / 1e6;
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let rate = mb(self.received) / secs;
        let line = match self.total.filter(|&t| t > 0) {
            Some(t) => {
                let done = ((self.received.min(t) as f64 / t as f64) * Self::WIDTH as f64) as usize;
                let head = if done < Self::WIDTH { ">" } else { "" };
                let bar = format!("{}{head}", "=".repeat(done));
                format!(
                    "{} [{bar:<w$}] {:.1}/{:.1} MB {rate:.1} MB/s",
                    self.name,
                    mb(self.received),
                    mb(t),
                    w = Self::WIDTH
                )
            }
            None => format!("{} {:.1} MB {rate:.1} MB/s", self.name, mb(self.received)),
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line}\x1b[K");
        let _ = err.flush();
    }

    /// The last state drawn (how far a failed transfer got, too), then a new line (so that what follows starts on
    /// its own line).
    fn finish(&mut self) {
        if !self.on {
            return;
        }
        self.draw();
        let _ = writeln!(std::io::stderr());
        self.on = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for u in ["http://127.0.0.1:80/x", "http://localhost/x", "http://[::1]:8/x", "https://u@127.0.0.9"] {
            assert!(is_loopback(u), "{u}");
        }
        for u in ["https://download.pytorch.org/models/x.pth", "http://10.0.0.1/", "http://localhost.evil.com/"] {
            assert!(!is_loopback(u), "{u}");
        }
    }

    #[test]
    fn a_bad_prefix_or_address_is_refused_before_any_connection() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("w.pth");
        let e = download("http://127.0.0.1:9/w.pth", &dest, "xyz", false).unwrap_err().to_string();
        assert!(e.contains("`xyz`") && e.contains("hex"), "{e}");
        let e = download("ftp://host/w.pth", &dest, "00", false).unwrap_err().to_string();
        assert!(e.contains("ftp://host/w.pth") && e.contains("http"), "{e}");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }
}
