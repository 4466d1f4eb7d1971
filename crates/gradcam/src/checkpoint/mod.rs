//! Checkpoints read natively: safetensors, PyTorch's zip format (`torch.save` since 1.6) and PyTorch's legacy
//! format (a stream of pickles followed by raw storages), with tensors of any strides. Every tensor comes out
//! as a contiguous f32 tensor on the CPU; integer tensors such as `num_batches_tracked` are converted too, and
//! what each was stored as is kept (`Checkpoint::dtypes`: a model's weights must be floats, see `crate::weights`).
//! float8, float4, complex, quantized and other tensors gradcam does not read are refused by name, never dropped.
//!
//! Files are not trusted: every size, offset and stride read from one is checked (checked arithmetic, views
//! within their storages, no more elements than the storage holds), nothing is inflated beyond what the tensors
//! need, pickles are dry-run before candle's pickle VM unpacks them (`scan`), and every allocation is bounded by
//! a small multiple of the bytes the file holds (deflated zip entries: 16 times the file plus 16 MiB in all). A
//! file's size is checked against its header (and a zip's end record) before the rest of it is read. A hostile
//! file gives an error, never a panic, an abort or a hang.

mod pth;
mod scan;

use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The tensors of one checkpoint file, by name.
#[derive(Debug)]
pub struct Checkpoint {
    pub path: PathBuf,
    /// Every tensor as f32, whatever it was stored as.
    pub tensors: HashMap<String, Tensor>,
    /// What each tensor was stored as, in torch's names: "float32", "float16", "bfloat16", "float64", "int64",
    /// "int8", "uint8", "bool" ... A model's weights must be stored as floats (`crate::weights`); integer
    /// buffers such as `num_batches_tracked` are read too.
    pub dtypes: HashMap<String, &'static str>,
}

/// Tensors as loaded: each as f32, with the dtype it was stored as.
pub(crate) type Loaded = HashMap<String, (Tensor, &'static str)>;

/// Whether a stored dtype (`Checkpoint::dtypes`) is a floating-point one.
pub fn is_float_dtype(dtype: &str) -> bool {
    matches!(dtype, "float32" | "float64" | "float16" | "bfloat16")
}

/// What a file turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Safetensors,
    TorchZip,
    TorchLegacy,
}

impl Format {
    /// Recognise a checkpoint from its first bytes.
    pub fn sniff(head: &[u8]) -> Option<Format> {
        if head.starts_with(b"PK\x03\x04") {
            Some(Format::TorchZip)
        } else if head.starts_with(&pth::LEGACY_MAGIC) {
            Some(Format::TorchLegacy)
        } else if head.len() >= 9 && head[8] == b'{' {
            let n = u64::from_le_bytes(head[..8].try_into().ok()?);
            (n > 1 && n < 100_000_000).then_some(Format::Safetensors)
        } else {
            None
        }
    }
}

const NOT_A_CHECKPOINT: &str =
    "not a checkpoint: expected safetensors, a PyTorch zip file (torch.save) or a legacy PyTorch file";

impl Checkpoint {
    /// Load every tensor of a checkpoint file. Its size is checked against what its first bytes (and, for a zip
    /// file, its last) declare before the rest is read: a file of the wrong size is refused without reading it.
    pub fn load(path: impl AsRef<Path>) -> Result<Checkpoint> {
        let path = path.as_ref();
        let bytes = read_regular_file(path, |p| {
            let len = p.len();
            let head = p.head(16)?;
            if head.is_empty() {
                return Err("the file is empty (0 bytes), expected a checkpoint".into());
            }
            let format = Format::sniff(head).ok_or(NOT_A_CHECKPOINT)?;
            let Some(len) = len else {
                return Ok(()); // a pipe: read (up to the memory available), then checked
            };
            match format {
                Format::Safetensors => check_safetensors_size(p, len),
                Format::TorchZip => {
                    let want = ZIP_TAIL.min(len as usize);
                    let tail = p.tail(want)?.unwrap_or_default();
                    if tail.windows(4).take(tail.len().saturating_sub(21)).any(|w| w == b"PK\x05\x06") {
                        Ok(())
                    } else {
                        Err(format!(
                            "not a complete zip file: no end-of-central-directory record in its last {want} bytes \
                             (of {len}; truncated, or something appended?)"
                        ))
                    }
                }
                Format::TorchLegacy if len > pth::LEGACY_PREFIX as u64 => {
                    let prefix = p.head(pth::LEGACY_PREFIX)?;
                    pth::check_legacy_size(prefix, len)
                }
                // read whole (at most LEGACY_PREFIX bytes), then checked
                Format::TorchLegacy => Ok(()),
            }
        })?;
        Self::from_bytes(path, &bytes)
    }

    /// Load every tensor of a checkpoint held in memory; `path` names it in errors (and in `Checkpoint::path`).
    pub fn from_bytes(path: impl AsRef<Path>, bytes: &[u8]) -> Result<Checkpoint> {
        let path = path.as_ref();
        if bytes.is_empty() {
            return Err(Error::checkpoint(path, "the file is empty (0 bytes), expected a checkpoint"));
        }
        let format =
            Format::sniff(&bytes[..bytes.len().min(16)]).ok_or_else(|| Error::checkpoint(path, NOT_A_CHECKPOINT))?;
        let loaded = match format {
            Format::Safetensors => load_safetensors(bytes),
            Format::TorchZip => pth::load_zip(bytes),
            Format::TorchLegacy => pth::load_legacy(bytes),
        }
        .map_err(|m| Error::checkpoint(path, m))?;
        let loaded = unwrap_prefix(loaded);
        if loaded.is_empty() {
            return Err(Error::checkpoint(path, "the checkpoint holds no tensors"));
        }
        let mut tensors = HashMap::with_capacity(loaded.len());
        let mut dtypes = HashMap::with_capacity(loaded.len());
        for (k, (t, d)) in loaded {
            dtypes.insert(k.clone(), d);
            tensors.insert(k, t);
        }
        Ok(Checkpoint { path: path.to_path_buf(), tensors, dtypes })
    }

    /// Save as safetensors, whole or not at all (see [`crate::output`]).
    pub fn save_safetensors(tensors: &HashMap<String, Tensor>, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = safetensors::tensor::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), None)
            .map_err(|e| Error::checkpoint(path, format!("cannot serialise: {e}")))?;
        crate::util::write_atomic(path, &bytes)
    }
}

/// The bytes at the end of a zip file that hold its end-of-central-directory record: the record (22 bytes) and
/// its comment (at most 65,535).
const ZIP_TAIL: usize = 22 + 0xffff;

/// A safetensors file's size against its header, read first: the 8-byte header length n, the JSON header, then
/// the data its tensors span; the file must be exactly 8 + n + that.
fn check_safetensors_size(p: &mut Peek, len: u64) -> std::result::Result<(), String> {
    let head = p.head(8)?;
    let Ok(n) = <[u8; 8]>::try_from(head) else {
        return Ok(()); // too short: the parse says so
    };
    let n = u64::from_le_bytes(n);
    if n.checked_add(8).is_none_or(|e| e > len) {
        return Err(format!(
            "bad safetensors file: its header announces {n} bytes, the file has {len} in all (truncated?)"
        ));
    }
    let h = p.head(8 + n as usize)?;
    #[derive(serde::Deserialize)]
    struct Info {
        #[serde(default)]
        data_offsets: Option<(u64, u64)>,
    }
    let entries = serde_json::from_slice::<HashMap<String, Info>>(&h[8..])
        .map_err(|e| format!("bad safetensors file: its header of {n} bytes is not the JSON of tensors: {e}"))?;
    let data = entries.values().filter_map(|i| i.data_offsets).map(|(s, e)| s.max(e)).max().unwrap_or(0);
    match (8 + n).checked_add(data) {
        Some(want) if want == len => Ok(()),
        want => Err(format!(
            "bad safetensors file: its header of {n} bytes and the {data} bytes of data its tensors span make {} \
             bytes, the file has {len}{}",
            want.map_or("more than 2^64".to_string(), |w| w.to_string()),
            if want.is_none_or(|w| w > len) { " (truncated?)" } else { " (expected exactly that many)" }
        )),
    }
}

/// The tensors of a safetensors file, each converted to f32 (integers too; `Checkpoint::dtypes` says what
/// they were). float8, float4 and the like are refused.
fn load_safetensors(bytes: &[u8]) -> std::result::Result<Loaded, String> {
    check_safetensors_shapes(bytes)?;
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| format!("bad safetensors file: {e}"))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let elem = pth::Elem::from_safetensors(view.dtype())
            .map_err(|d| format!("tensor `{name}` is stored as {d}, {}", pth::UNSUPPORTED))?;
        // the safetensors crate checked that the data holds exactly the shape's elements: the allocation is
        // bounded by the file (4 bytes of f32 for each byte of a uint8 tensor at most)
        let data: Vec<f32> = view.data().chunks_exact(elem.size()).map(|b| elem.read(b)).collect();
        let t = Tensor::from_vec(data, view.shape().to_vec(), &Device::Cpu)
            .map_err(|e| format!("tensor `{name}`: {}", candle_message(&e)))?;
        out.insert(name, (t, elem.name()));
    }
    Ok(out)
}

/// Refuse a safetensors shape whose sizes multiply past `usize` even though it holds no element, such as
/// [0, 2, 2^64-1]: the safetensors crate accepts it, candle multiplies the sizes to make strides and overflows (a
/// panic with overflow checks). Headers that do not parse are left to the safetensors crate to report.
fn check_safetensors_shapes(bytes: &[u8]) -> std::result::Result<(), String> {
    let Some(header) = bytes
        .get(..8)
        .and_then(|n| usize::try_from(u64::from_le_bytes(n.try_into().ok()?)).ok())
        .and_then(|n| bytes.get(8..8usize.checked_add(n)?))
    else {
        return Ok(());
    };
    // typed (8 bytes a size, for at least 2 bytes of JSON), not a serde_json::Value (32 bytes a size)
    #[derive(serde::Deserialize)]
    struct Info {
        #[serde(default)]
        shape: Vec<u64>,
    }
    let Ok(entries) = serde_json::from_slice::<HashMap<String, Info>>(header) else {
        return Ok(());
    };
    for (name, Info { shape: dims }) in &entries {
        let fits = dims
            .iter()
            .filter(|&&d| d != 0)
            .try_fold(1usize, |a, &d| usize::try_from(d).ok().and_then(|d| a.checked_mul(d)));
        if fits.is_none() {
            return Err(format!(
                "tensor `{name}`: shape {dims:?}, its sizes multiply past 2^64 (expected a real shape)"
            ));
        }
    }
    Ok(())
}

/// A candle error's message without the backtrace candle attaches when RUST_BACKTRACE is set (resolving it
/// takes about 100 MB and prints pages of frames).
pub(crate) fn candle_message(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => candle_message(inner),
        candle_core::Error::Context { inner, context } => format!("{context}: {}", candle_message(inner)),
        candle_core::Error::WithPath { inner, path } => format!("{}: {}", path.display(), candle_message(inner)),
        other => other.to_string(),
    }
}

/// A file being read: its first bytes, and its last, for checks before the rest is read.
pub(crate) struct Peek {
    file: std::fs::File,
    /// The size of a regular file; None for a pipe.
    len: Option<u64>,
    head: Vec<u8>,
    /// The head holds the whole file.
    eof: bool,
}

impl Peek {
    /// The size of the file; None for a pipe.
    pub(crate) fn len(&self) -> Option<u64> {
        self.len
    }

    /// The first `n` bytes of the file (all of it when shorter), read once.
    pub(crate) fn head(&mut self, n: usize) -> std::result::Result<&[u8], String> {
        use std::io::Read;
        if self.head.len() < n && !self.eof {
            let want = n - self.head.len();
            // exactly what is read (the buffer does not double past it), never more than a file holds
            let left = self.len.map_or(want as u64, |l| l.saturating_sub(self.head.len() as u64));
            self.head.reserve_exact(want.min(usize::try_from(left).unwrap_or(usize::MAX)));
            let got = (&mut self.file)
                .take(want as u64)
                .read_to_end(&mut self.head)
                .map_err(|e| format!("cannot read it: {e}"))?;
            self.eof = got < want;
        }
        Ok(&self.head[..n.min(self.head.len())])
    }

    /// The last `n` bytes of a regular file (None for a pipe), read with a seek; reading then goes on after the
    /// head.
    pub(crate) fn tail(&mut self, n: usize) -> std::result::Result<Option<Vec<u8>>, String> {
        use std::io::{Read, Seek, SeekFrom};
        let Some(len) = self.len else { return Ok(None) };
        let n = (n as u64).min(len);
        let io = |e: std::io::Error| format!("cannot read its last {n} bytes: {e}");
        self.file.seek(SeekFrom::Start(len - n)).map_err(io)?;
        let mut tail = Vec::with_capacity(n as usize);
        (&mut self.file).take(n).read_to_end(&mut tail).map_err(io)?;
        self.file.seek(SeekFrom::Start(self.head.len() as u64)).map_err(io)?;
        Ok(Some(tail))
    }
}

/// Read a file whole, after `check` has accepted what it reads of it first (`Peek`: its head, its size, its
/// tail): a file that is not what it should be is refused without reading the rest. Folders and devices
/// (`/dev/zero` never ends) are refused, pipes read to their end; a file larger than the memory available is
/// refused before it is read.
pub(crate) fn read_regular_file(
    path: &Path,
    check: impl FnOnce(&mut Peek) -> std::result::Result<(), String>,
) -> Result<Vec<u8>> {
    use std::io::Read;
    let meta = crate::util::file_to_read(path, "a file", true)?;
    let t = meta.file_type();
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut peek = Peek { file, len: t.is_file().then_some(meta.len()), head: Vec::new(), eof: false };
    check(&mut peek).map_err(|m| Error::invalid(format!("{}: {m}", path.display())))?;
    let budget = crate::resources::available_memory().unwrap_or(u64::MAX);
    if t.is_file() {
        crate::resources::check_memory(
            &format!("{}: reading its {} bytes", path.display(), meta.len()),
            meta.len(),
            "is it the right file?",
        )?;
    }
    let Peek { file, head: mut bytes, eof, .. } = peek;
    if !eof {
        if t.is_file() {
            bytes.reserve_exact(usize::try_from(meta.len()).unwrap_or(0).saturating_sub(bytes.len()));
        }
        // a pipe (or a file that grows) is read no further than the memory available
        file.take(budget).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    }
    Ok(bytes)
}

/// `module.` (DataParallel) is stripped when every name has it.
fn unwrap_prefix(t: Loaded) -> Loaded {
    if !t.is_empty() && t.keys().all(|k| k.starts_with("module.")) {
        t.into_iter().map(|(k, v)| (k["module.".len()..].to_string(), v)).collect()
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_formats() {
        assert_eq!(Format::sniff(b"PK\x03\x04rest"), Some(Format::TorchZip));
        assert_eq!(Format::sniff(&pth::LEGACY_MAGIC), Some(Format::TorchLegacy));
        let mut st = 20u64.to_le_bytes().to_vec();
        st.push(b'{');
        assert_eq!(Format::sniff(&st), Some(Format::Safetensors));
        assert_eq!(Format::sniff(b"hello, world!"), None);
    }
}
