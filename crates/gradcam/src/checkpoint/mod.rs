//! Checkpoints read natively: safetensors, PyTorch's zip format (`torch.save` since 1.6) and PyTorch's legacy
//! format (a stream of pickles followed by raw storages), with tensors of any strides. Every tensor comes out
//! as a contiguous f32 tensor on the CPU; integer tensors such as `num_batches_tracked` are converted too.
//!
//! Files are not trusted: every size, offset and stride read from one is checked (checked arithmetic, views
//! within their storages, no more elements than the storage holds), nothing is inflated beyond what the tensors
//! need, pickles are dry-run before candle's pickle VM unpacks them (`scan`), and every allocation is bounded by
//! a small multiple of the bytes the file holds. A hostile file gives an error, never a panic, an abort or a hang.

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
    pub tensors: HashMap<String, Tensor>,
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
    /// Load every tensor of a checkpoint file.
    pub fn load(path: impl AsRef<Path>) -> Result<Checkpoint> {
        let path = path.as_ref();
        let bytes = read_regular_file(path, |head| {
            if head.is_empty() {
                Err("the file is empty (0 bytes), expected a checkpoint".into())
            } else if Format::sniff(&head[..head.len().min(16)]).is_none() {
                Err(NOT_A_CHECKPOINT.into())
            } else {
                Ok(())
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
        let tensors = match format {
            Format::Safetensors => {
                check_safetensors_shapes(bytes).map_err(|m| Error::checkpoint(path, m))?;
                candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
                    .map_err(|e| Error::checkpoint(path, format!("bad safetensors file: {}", candle_message(&e))))?
                    .into_iter()
                    .map(|(k, v)| match v.to_dtype(candle_core::DType::F32) {
                        Ok(t) => Ok((k, t)),
                        Err(e) => Err(Error::checkpoint(
                            path,
                            format!(
                                "tensor `{k}` of dtype {:?} cannot be converted to f32: {}",
                                v.dtype(),
                                candle_message(&e)
                            ),
                        )),
                    })
                    .collect::<Result<HashMap<_, _>>>()?
            }
            Format::TorchZip => pth::load_zip(bytes).map_err(|m| Error::checkpoint(path, m))?,
            Format::TorchLegacy => pth::load_legacy(bytes).map_err(|m| Error::checkpoint(path, m))?,
        };
        let tensors = unwrap_prefix(tensors);
        if tensors.is_empty() {
            return Err(Error::checkpoint(path, "the checkpoint holds no tensors"));
        }
        Ok(Checkpoint { path: path.to_path_buf(), tensors })
    }

    /// Save as safetensors, whole or not at all (see [`crate::output`]).
    pub fn save_safetensors(tensors: &HashMap<String, Tensor>, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = safetensors::tensor::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), None)
            .map_err(|e| Error::checkpoint(path, format!("cannot serialise: {e}")))?;
        crate::util::write_atomic(path, &bytes)
    }
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

/// Read a file whole, after `check_head` has accepted its first bytes (up to 64): a file that is not what it
/// should be is refused without reading the rest. Folders and devices (`/dev/zero` never ends) are refused,
/// pipes read to their end; a file larger than the memory available is refused before it is read.
pub(crate) fn read_regular_file(
    path: &Path,
    check_head: impl FnOnce(&[u8]) -> std::result::Result<(), String>,
) -> Result<Vec<u8>> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let t = meta.file_type();
    #[cfg(unix)]
    let pipe = std::os::unix::fs::FileTypeExt::is_fifo(&t);
    #[cfg(not(unix))]
    let pipe = false;
    if !t.is_file() && !pipe {
        let what = if t.is_dir() { "a directory" } else { "a device or special file" };
        let e = std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("is {what}, expected a file"));
        return Err(Error::io(path, e));
    }
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = Vec::with_capacity(64);
    (&mut f).take(64).read_to_end(&mut head).map_err(|e| Error::io(path, e))?;
    check_head(&head).map_err(|m| Error::invalid(format!("{}: {m}", path.display())))?;
    let budget = crate::resources::available_memory().unwrap_or(u64::MAX);
    if t.is_file() {
        crate::resources::check_memory(
            &format!("{}: reading its {} bytes", path.display(), meta.len()),
            meta.len(),
            "is it the right file?",
        )?;
    }
    let mut bytes = head;
    if t.is_file() {
        bytes.reserve(usize::try_from(meta.len()).unwrap_or(0).saturating_sub(bytes.len()));
    }
    // a pipe (or a file that grows) is read no further than the memory available
    f.take(budget).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}

/// `module.` (DataParallel) is stripped when every name has it.
fn unwrap_prefix(t: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
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
