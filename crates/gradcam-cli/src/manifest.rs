//! The run's manifest, for `--resume`: `.gradcam_run.jsonl` in the output folder (hidden: never taken as an
//! input). Its first line records the options that shape the outputs; every later line one finished input:
//! its key (the path as given), its output prefix, its files with their sizes, and its report entry.
//!
//! Why an appended JSONL file: a line is appended (one `write` of the whole line) only after the
//! input's files are in place, so a kill at any instant leaves every line but perhaps the last whole, and the
//! last one either whole or torn (no newline, or not JSON): resuming cuts a torn tail off and redoes that input.
//! Rewriting the whole file atomically after every input would cost O(n) per input, O(n²) for a run. The
//! first line is written atomically (a temporary renamed into place), so a manifest never lacks its options.
//! An input whose files were put in place but whose line was not written is redone, and its files rewritten
//! with the same bytes.
//!
//! Lines reach the disk (`fdatasync`) at most once a second and when the run ends, not after each input: a
//! killed process loses nothing (its writes are in the kernel's cache), and a machine that loses power loses at
//! most the last second's lines, whose inputs are redone (the pictures are not synced either: resuming checks
//! every file's size), so a sync per input would buy nothing (its cost was not measurable on this machine's
//! disk, but it is a journal commit per photo on slower ones).

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const NAME: &str = ".gradcam_run.jsonl";
const FORMAT: u64 = 1;

/// An earlier run's record of one input.
pub struct Entry {
    offset: u64,
    len: usize,
    pub prefix: String,
    /// The input as it was when it was read ([`stamp`]): an input changed since is done again.
    pub input: Option<Stamp>,
}

/// An input file's size and modification time (seconds, nanoseconds): what tells a changed input from the one
/// an earlier run explained.
pub type Stamp = (u64, i64, u32);

/// The stamp of an input, None where it cannot be read.
pub fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((m.len(), m.mtime(), m.mtime_nsec() as u32))
    }
    #[cfg(not(unix))]
    {
        let t = m.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
        Some((m.len(), t.as_secs() as i64, t.subsec_nanos()))
    }
}

pub struct Manifest {
    path: PathBuf,
    file: File,
    synced: std::time::Instant,
}

/// How often appended lines are synced to the disk.
const SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The key of an input: its path exactly (base64 of its bytes where they are not UTF-8).
pub fn key(path: &Path) -> String {
    match gradcam::naming::lossless_bytes(path) {
        Some(b) => format!("bytes:{b}"),
        None => format!("path:{}", path.display()),
    }
}

impl Manifest {
    /// A new run: the manifest replaced by one holding only `options`.
    pub fn fresh(out: &Path, options: &Value) -> Result<Manifest> {
        let path = out.join(NAME);
        let head = serde_json::json!({"gradcam_manifest": FORMAT, "options": options});
        gradcam::output::write_atomic(&path, format!("{head}\n").as_bytes())?;
        Self::open(path)
    }

    fn open(path: PathBuf) -> Result<Manifest> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open the run's manifest {}", path.display()))?;
        Ok(Manifest { path, file, synced: std::time::Instant::now() })
    }

    /// Resume the run recorded in `out`: the inputs it finished whose files are all there, whole (the sizes it
    /// recorded). None where there is no usable manifest (the caller starts afresh). An error where the
    /// manifest records other options: mixing two runs' outputs would leave a folder that neither run made.
    pub fn resume(out: &Path, options: &Value) -> Result<Option<(Manifest, HashMap<String, Entry>)>> {
        let path = out.join(NAME);
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read the run's manifest {}", path.display())),
        };
        let mut r = BufReader::new(f);
        let mut line = Vec::new();
        let mut offset = 0u64;
        let n = r.read_until(b'\n', &mut line).with_context(|| format!("cannot read {}", path.display()))?;
        let head: Option<Value> = if line.ends_with(b"\n") { serde_json::from_slice(&line).ok() } else { None };
        let Some(head) = head.filter(|h| h["gradcam_manifest"] == FORMAT) else {
            return Ok(None);
        };
        if head["options"] != *options {
            let was = head["options"].as_object();
            let now = options.as_object();
            let mut diff = vec![];
            if let (Some(was), Some(now)) = (was, now) {
                for (k, v) in now {
                    let w = was.get(k).unwrap_or(&Value::Null);
                    if w != v {
                        diff.push(format!("{k} was {w}, now {v}"));
                    }
                }
            }
            bail!(
                "--resume: the run recorded in {} had other options ({}); its outputs and this run's would mix. \
                 Run without --resume to start afresh (replacing the outputs), or give another --out",
                path.display(),
                if diff.is_empty() { "another format".to_string() } else { diff.join("; ") }
            );
        }
        offset += n as u64;
        let mut entries = HashMap::new();
        loop {
            line.clear();
            let n = r.read_until(b'\n', &mut line).with_context(|| format!("cannot read {}", path.display()))?;
            if n == 0 {
                break;
            }
            // a torn last line (a kill during its write): cut off, that input is done again
            let v: Option<Value> = if line.ends_with(b"\n") { serde_json::from_slice(&line).ok() } else { None };
            let Some(v) = v else {
                let f = std::fs::OpenOptions::new().write(true).open(&path)?;
                f.set_len(offset).with_context(|| format!("cannot cut the torn end of {}", path.display()))?;
                f.sync_all()?;
                break;
            };
            if let (Some(k), Some(p)) = (v["key"].as_str(), v["prefix"].as_str()) {
                if files_whole(&v["files"]) {
                    let input = serde_json::from_value::<Option<Stamp>>(v["input"].clone()).ok().flatten();
                    entries.insert(k.to_string(), Entry { offset, len: n, prefix: p.to_string(), input });
                } else {
                    entries.remove(k);
                }
            }
            offset += n as u64;
        }
        Ok(Some((Self::open(path)?, entries)))
    }

    /// Record an input whose files are in place: one whole line, written before this returns (synced to the
    /// disk within a second, see the module's notes, and by [`Manifest::sync`]).
    pub fn append(&mut self, key: &str, prefix: &str, input: Option<Stamp>, report: &Value) -> Result<()> {
        let mut files = serde_json::Map::new();
        for f in report_files(report) {
            let len = std::fs::metadata(&f).with_context(|| format!("cannot read back {f}"))?.len();
            files.insert(f, len.into());
        }
        let v = serde_json::json!({"key": key, "prefix": prefix, "input": input, "files": files, "report": report});
        let mut line = serde_json::to_vec(&v)?;
        line.push(b'\n');
        self.file.write_all(&line).with_context(|| format!("cannot write {}", self.path.display()))?;
        if self.synced.elapsed() >= SYNC_EVERY {
            self.sync()?;
        }
        Ok(())
    }

    /// The lines appended so far, on the disk.
    pub fn sync(&mut self) -> Result<()> {
        self.file.sync_data().with_context(|| format!("cannot write {}", self.path.display()))?;
        self.synced = std::time::Instant::now();
        Ok(())
    }

    /// The report entry an earlier run recorded.
    pub fn report(&mut self, e: &Entry) -> Result<Value> {
        let mut buf = vec![0u8; e.len];
        self.file.seek(SeekFrom::Start(e.offset))?;
        self.file.read_exact(&mut buf).with_context(|| format!("cannot read {}", self.path.display()))?;
        let mut v: Value = serde_json::from_slice(&buf).with_context(|| format!("{} changed", self.path.display()))?;
        Ok(v["report"].take())
    }
}

/// Every file a report names.
fn report_files(report: &Value) -> Vec<String> {
    let mut out = vec![];
    for e in report["explanations"].as_array().into_iter().flatten() {
        if let Some(files) = e["files"].as_object() {
            out.extend(files.values().filter_map(|f| f.as_str().map(String::from)));
        }
    }
    for g in report["grids"].as_array().into_iter().flatten() {
        out.extend(g["file"].as_str().map(String::from));
    }
    out
}

/// Whether every file recorded is there, a regular file of the recorded size.
fn files_whole(files: &Value) -> bool {
    let Some(files) = files.as_object() else {
        return false;
    };
    files
        .iter()
        .all(|(f, len)| std::fs::symlink_metadata(f).is_ok_and(|m| m.is_file() && Some(m.len()) == len.as_u64()))
}

/// Remove the temporaries a killed run left in `out` (`.gradcam-*.tmp`: a SIGKILL gives no chance to clean up).
/// Only `--resume` does this: it takes the folder as its own run's.
pub fn remove_stale_temporaries(out: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(out) else {
        return 0;
    };
    let mut n = 0;
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".gradcam-")
            && name.ends_with(".tmp")
            && e.file_type().is_ok_and(|t| t.is_file())
            && std::fs::remove_file(e.path()).is_ok()
        {
            n += 1;
        }
    }
    n
}
