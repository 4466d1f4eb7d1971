//! Checkpoints read natively: safetensors, PyTorch's zip format (`torch.save` since 1.6) and PyTorch's legacy
//! format (a stream of pickles followed by raw storages), with tensors of any strides. Every tensor comes out
//! as a contiguous f32 tensor on the CPU; integer tensors such as `num_batches_tracked` are converted too.

mod pth;

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

impl Checkpoint {
    /// Load every tensor of a checkpoint file.
    pub fn load(path: impl AsRef<Path>) -> Result<Checkpoint> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        if bytes.is_empty() {
            return Err(Error::checkpoint(path, "the file is empty (0 bytes), expected a checkpoint"));
        }
        let format = Format::sniff(&bytes[..bytes.len().min(16)]).ok_or_else(|| {
            Error::checkpoint(
                path,
                "not a checkpoint: expected safetensors, a PyTorch zip file (torch.save) or a legacy PyTorch file",
            )
        })?;
        let tensors = match format {
            Format::Safetensors => candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
                .map_err(|e| Error::checkpoint(path, format!("bad safetensors file: {e}")))?
                .into_iter()
                .map(|(k, v)| Ok((k, v.to_dtype(candle_core::DType::F32)?)))
                .collect::<Result<HashMap<_, _>>>()?,
            Format::TorchZip => pth::load_zip(&bytes).map_err(|m| Error::checkpoint(path, m))?,
            Format::TorchLegacy => pth::load_legacy(&bytes).map_err(|m| Error::checkpoint(path, m))?,
        };
        let tensors = unwrap_prefix(tensors);
        if tensors.is_empty() {
            return Err(Error::checkpoint(path, "the checkpoint holds no tensors"));
        }
        Ok(Checkpoint { path: path.to_path_buf(), tensors })
    }

    /// Save as safetensors (written to a temporary name, then renamed).
    pub fn save_safetensors(tensors: &HashMap<String, Tensor>, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let tmp = crate::util::temp_sibling(path);
        candle_core::safetensors::save(tensors, &tmp)?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }
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
