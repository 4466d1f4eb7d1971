//! Output files written safely: each file goes to a temporary file created exclusively (`O_EXCL`, a random
//! name, never through a link) in the output folder, and the files of one image are put in place together, as a
//! set, by renames (which replace a link at the final name rather than writing through it). An image whose
//! files cannot all be written leaves none behind; an interrupted run leaves no half file under a final name.

use crate::error::{Error, Result};
use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use tempfile::TempPath;

/// The temporary files that exist now (written, not yet renamed into place), so that a process ended by a
/// signal can remove them: see [`remove_temporaries`].
fn pending() -> &'static Mutex<HashSet<PathBuf>> {
    static P: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    P.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Forget a temporary that was renamed into place or removed.
fn untrack(p: &Path) {
    if let Ok(mut set) = pending().lock() {
        set.remove(p);
    }
}

/// Remove every temporary file this process has open or waiting for its rename, for a signal handler that
/// exits right after: an interrupted run leaves no `.gradcam-*.tmp` behind. The registry stays locked from then
/// on, so that no other thread can create a temporary before the process ends (creation happens under the same
/// lock). Returns how many were removed.
pub fn remove_temporaries() -> usize {
    let set = pending().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let n = set.iter().filter(|p| std::fs::remove_file(p).is_ok()).count();
    std::mem::forget(set);
    n
}

/// A temporary file in `dir`, created and registered under the registry's lock (see [`remove_temporaries`]).
fn tracked_temp_in(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let mut set = pending().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let tmp = temp_in(dir)?;
    set.insert(tmp.path().to_path_buf());
    Ok(tmp)
}

/// A temporary file in `dir`: exclusive creation at an unpredictable hidden name, with the permissions an
/// ordinary file gets (0666 less the umask), not tempfile's private 0600.
fn temp_in(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let mut b = tempfile::Builder::new();
    b.prefix(".gradcam-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(0o666));
    }
    b.tempfile_in(dir)
}

fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Write `bytes` to `path` whole or not at all (an exclusive temporary file, then a rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut set = FileSet::new();
    set.write(path, bytes)?;
    set.commit()
}

/// The files of one unit of output (an image's pictures and maps): written to temporary files, then put in
/// place together by [`FileSet::commit`]. Dropped without a commit, it removes its temporary files.
#[derive(Default)]
pub struct FileSet {
    pending: Vec<(TempPath, PathBuf)>,
    /// Test hook: fail the write of the n-th file (0-based), as a full disk would.
    fail_at: Option<usize>,
}

impl FileSet {
    pub fn new() -> Self {
        FileSet::default()
    }

    /// A set whose `n`-th write fails (for tests of what a failing disk leaves behind).
    #[doc(hidden)]
    pub fn failing_at(n: usize) -> Self {
        FileSet { pending: vec![], fail_at: Some(n) }
    }

    /// How many files are waiting for the commit.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Write a file of the set through `fill`, which gets the temporary file (and must flush what it buffers).
    pub fn create(&mut self, path: &Path, fill: impl FnOnce(&mut std::fs::File) -> Result<()>) -> Result<()> {
        if self.fail_at == Some(self.pending.len()) {
            return Err(Error::io(path, std::io::Error::other("simulated write failure (no space left on device)")));
        }
        let mut tmp = tracked_temp_in(dir_of(path)).map_err(|e| Error::io(path, e))?;
        let tmp_path = tmp.path().to_path_buf();
        if let Err(e) = fill(tmp.as_file_mut()) {
            drop(tmp);
            untrack(&tmp_path);
            return Err(e);
        }
        self.pending.push((tmp.into_temp_path(), path.to_path_buf()));
        Ok(())
    }

    /// Write `bytes` as a file of the set.
    pub fn write(&mut self, path: &Path, bytes: &[u8]) -> Result<()> {
        self.create(path, |f| {
            let mut w = BufWriter::with_capacity(1 << 16, f);
            w.write_all(bytes).and_then(|_| w.flush()).map_err(|e| Error::io(path, e))
        })
    }

    /// Put every file in place. If one cannot be, those already renamed are removed again, so that the set is
    /// all there or not at all (an older file of the same name is gone either way).
    pub fn commit(mut self) -> Result<()> {
        let mut done: Vec<PathBuf> = vec![];
        let mut pending = std::mem::take(&mut self.pending).into_iter();
        for (tmp, path) in pending.by_ref() {
            let tmp_path = tmp.to_path_buf();
            let r = tmp.persist(&path);
            untrack(&tmp_path);
            if let Err(e) = r {
                for p in &done {
                    let _ = std::fs::remove_file(p);
                }
                for (rest, _) in pending {
                    untrack(&rest);
                }
                return Err(Error::io(&path, e.error));
            }
            done.push(path);
        }
        Ok(())
    }
}

impl Drop for FileSet {
    /// The temporaries of a set never committed are removed (by `TempPath`) and forgotten.
    fn drop(&mut self) {
        for (tmp, _) in self.pending.drain(..) {
            let p = tmp.to_path_buf();
            drop(tmp);
            untrack(&p);
        }
    }
}

/// How hard the PNG encoder compresses: the size of the files against the time spent making them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PngCompression {
    /// Stored, no compression (and no filter): the fastest, the largest files.
    None,
    /// fdeflate's one-pass compressor with the Up filter (png's `Compression::Fastest`).
    Fastest,
    /// fdeflate's one-pass compressor (png's `Compression::Fast`) with the adaptive filter: the default,
    /// several times faster than zlib's level 6 for files a little larger.
    #[default]
    Fast,
    /// zlib (flate2) at this level, 1 to 9 (6 was gradcam's only setting before; image-rs's default).
    Level(u8),
}

impl PngCompression {
    pub const HELP: &'static str = "none, fastest, fast, or a zlib level 1-9";

    pub fn parse(s: &str) -> Result<Self> {
        match s.trim() {
            "none" | "0" => Ok(PngCompression::None),
            "fast" => Ok(PngCompression::Fast),
            "fastest" => Ok(PngCompression::Fastest),
            t => match t.parse::<u8>() {
                Ok(l @ 1..=9) => Ok(PngCompression::Level(l)),
                _ => Err(Error::invalid(format!("--png-compression {s}: expected {}", Self::HELP))),
            },
        }
    }

    /// The name [`PngCompression::parse`] takes.
    pub fn name(self) -> String {
        match self {
            PngCompression::None => "none".into(),
            PngCompression::Fast => "fast".into(),
            PngCompression::Fastest => "fastest".into(),
            PngCompression::Level(l) => l.to_string(),
        }
    }
}

/// A PNG written row by row (8-bit RGB), so that a picture of a 100-megapixel photo never exists whole in
/// memory, compressed as [`PngCompression`] says (adaptive filter).
/// The encoder buffers a chunk's worth of compressed data and writes it whole: no buffer around the file, so
/// that every write error (a full disk) reaches the caller.
pub struct PngRows<'p> {
    w: png::StreamWriter<'static, std::fs::File>,
    path: &'p Path,
}

impl<'p> PngRows<'p> {
    /// A PNG at the default compression ([`PngCompression::Fast`]).
    pub fn new(out: &std::fs::File, path: &'p Path, width: u32, height: u32) -> Result<Self> {
        Self::with(out, path, width, height, PngCompression::default())
    }

    pub fn with(out: &std::fs::File, path: &'p Path, width: u32, height: u32, c: PngCompression) -> Result<Self> {
        let err = |e: png::EncodingError| png_error(path, e);
        let out = out.try_clone().map_err(|e| Error::io(path, e))?;
        let mut enc = png::Encoder::new(out, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        match c {
            PngCompression::None => enc.set_compression(png::Compression::NoCompression),
            PngCompression::Fastest => enc.set_compression(png::Compression::Fastest),
            PngCompression::Fast => {
                enc.set_deflate_compression(png::DeflateCompression::FdeflateUltraFast);
                enc.set_filter(png::Filter::Adaptive);
            }
            PngCompression::Level(l) => {
                enc.set_deflate_compression(png::DeflateCompression::Level(l.clamp(1, 9)));
                enc.set_filter(png::Filter::Adaptive);
            }
        }
        let w = enc.write_header().map_err(err)?.into_stream_writer().map_err(err)?;
        Ok(PngRows { w, path })
    }

    /// The next row: `width` RGB pixels.
    pub fn row(&mut self, rgb: &[u8]) -> Result<()> {
        self.w.write_all(rgb).map_err(|e| Error::io(self.path, e))
    }

    pub fn finish(self) -> Result<()> {
        let path = self.path;
        self.w.finish().map_err(|e| png_error(path, e))
    }
}

/// A failure to write a PNG: the I/O error as such (a full disk), or what the encoder said.
fn png_error(path: &Path, e: png::EncodingError) -> Error {
    match e {
        png::EncodingError::IoError(io) => Error::io(path, io),
        e => Error::invalid(format!("{}: cannot write the PNG: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("gradcam-output-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn names(d: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn a_set_is_all_there_or_not_at_all() {
        let d = tempdir("set");
        let mut s = FileSet::new();
        s.write(&d.join("a"), b"1").unwrap();
        s.write(&d.join("b"), b"2").unwrap();
        assert_eq!(names(&d).len(), 2, "two temporaries");
        assert!(names(&d).iter().all(|n| n.starts_with(".gradcam-")));
        s.commit().unwrap();
        assert_eq!(names(&d), ["a", "b"]);
        assert_eq!(std::fs::read(d.join("a")).unwrap(), b"1");

        // the third write fails: nothing of the new set, no temporary, the old files untouched
        let mut s = FileSet::failing_at(2);
        s.write(&d.join("a"), b"new").unwrap();
        s.write(&d.join("b"), b"new").unwrap();
        assert!(s.write(&d.join("c"), b"new").is_err());
        drop(s);
        assert_eq!(names(&d), ["a", "b"]);
        assert_eq!(std::fs::read(d.join("a")).unwrap(), b"1");
    }

    #[cfg(unix)]
    #[test]
    fn never_writes_through_a_link() {
        let d = tempdir("link");
        let victim = d.join("victim.txt");
        std::fs::write(&victim, b"precious").unwrap();
        let out = d.join("out");
        std::fs::create_dir(&out).unwrap();
        std::os::unix::fs::symlink(&victim, out.join("cat.png")).unwrap();
        write_atomic(&out.join("cat.png"), b"picture").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "the link's target is untouched");
        assert!(!std::fs::symlink_metadata(out.join("cat.png")).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(out.join("cat.png")).unwrap(), b"picture");
    }

    #[cfg(unix)]
    #[test]
    fn files_get_ordinary_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempdir("perm");
        write_atomic(&d.join("f"), b"x").unwrap();
        let mode = std::fs::metadata(d.join("f")).unwrap().permissions().mode() & 0o777;
        // 0666 less the umask (022 or 002 on most systems): readable by others, not 0600
        assert!(mode & 0o044 != 0 || mode & 0o600 == 0o600, "mode {mode:o}");
        assert_eq!(mode & 0o600, 0o600);
    }

    #[test]
    fn png_rows_decode_to_the_same_pixels() {
        let d = tempdir("png");
        let p = d.join("x.png");
        let (w, h) = (7u32, 5u32);
        let px = |x: u32, y: u32| [(x * 30) as u8, (y * 40) as u8, 9];
        for c in ["none", "fastest", "fast", "1", "6", "9"] {
            let c = PngCompression::parse(c).unwrap();
            let mut s = FileSet::new();
            s.create(&p, |out| {
                let mut png = PngRows::with(out, &p, w, h, c)?;
                for y in 0..h {
                    let row: Vec<u8> = (0..w).flat_map(|x| px(x, y)).collect();
                    png.row(&row)?;
                }
                png.finish()
            })
            .unwrap();
            s.commit().unwrap();
            let img = image::open(&p).unwrap().to_rgb8();
            assert_eq!(img.dimensions(), (w, h));
            for (x, y, v) in img.enumerate_pixels() {
                assert_eq!(v.0, px(x, y), "{c:?}");
            }
        }
        for bad in ["10", "quick", "-1", ""] {
            let e = PngCompression::parse(bad).unwrap_err().to_string();
            assert!(e.contains("--png-compression") && e.contains("zlib level 1-9"), "{e}");
        }
    }
}
