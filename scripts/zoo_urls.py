"""Print the torchvision checkpoints of gradcam's zoo, read from torchvision itself, so that the table in
crates/gradcam/src/models/zoo.rs (`MODELS`, `Source::Torchvision`) can be re-checked against it.

    python3 -m venv /tmp/tvv && /tmp/tvv/bin/pip install torchvision
    /tmp/tvv/bin/python scripts/zoo_urls.py          # name, file, SHA-256 prefix, URL: one model a line
    /tmp/tvv/bin/python scripts/zoo_urls.py --rust   # the same as zoo.rs's `ModelSpec` entries

Each model's weights are the `IMAGENET1K_V1` member of its `Weights` enum (what `pretrained=True` gave). The
SHA-256 prefix is taken from the file name with torch.hub's own pattern (`HASH_REGEX`), as `torch.hub` checks it.
Nothing is downloaded.
"""
import sys

import torch.hub
import torchvision
from torchvision.models import get_model_weights

MODELS = (
    [f"resnet{d}" for d in (18, 34, 50, 101, 152)]
    + [f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")]
    + ["mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"]
    + [f"densenet{d}" for d in (121, 161, 169, 201)]
    + [f"efficientnet_b{i}" for i in range(8)]
    + [f"convnext_{s}" for s in ("tiny", "small", "base", "large")]
    + [f"regnet_{k}_{s}" for k in "yx" for s in ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf")]
)

BASE = "https://download.pytorch.org/models/"

PRETTY = {
    "resnet": "ResNet-", "vgg": "VGG-", "densenet": "DenseNet-", "efficientnet_b": "EfficientNet-B",
}


def describe(name):
    """The table's description: `VGG-16 BN (torchvision IMAGENET1K_V1)`."""
    if name.startswith("mobilenet_v"):
        v = name[len("mobilenet_v"):].split("_")
        text = "MobileNetV" + v[0] + (" " + v[1].capitalize() if len(v) > 1 else "")
    elif name.startswith("convnext_"):
        text = "ConvNeXt-" + name.split("_")[1].capitalize()
    elif name.startswith("regnet_"):
        _, kind, size = name.split("_", 2)
        text = f"RegNet{kind.upper()}-{size.replace('_', '.').upper()}"
    else:
        for prefix, pretty in PRETTY.items():
            if name.startswith(prefix):
                rest = name[len(prefix):]
                text = pretty + rest.replace("_bn", " BN")
                break
        else:
            raise SystemExit(f"no description for {name}")
    return f"{text} (torchvision IMAGENET1K_V1)"


def main():
    rust = "--rust" in sys.argv[1:]
    print(f"# torchvision {torchvision.__version__}", file=sys.stderr)
    for name in MODELS:
        w = get_model_weights(name).IMAGENET1K_V1
        url = w.url
        if not url.startswith(BASE):
            raise SystemExit(f"{name}: {url} is not under {BASE}")
        file = url[len(BASE):]
        m = torch.hub.HASH_REGEX.search(file)
        if m is None or len(m.group(1)) < 8:
            raise SystemExit(f"{name}: no SHA-256 prefix in {file}")
        prefix = m.group(1)
        if rust:
            print("    ModelSpec {")
            print(f'        name: "{name}",')
            print("        source: Source::Torchvision {")
            print(f'            file: "{file}",')
            print(f'            sha256_prefix: "{prefix}",')
            print(f'            url: "{url}",')
            print("        },")
            print(f'        description: "{describe(name)}",')
            print("    },")
        else:
            print(f"{name:<20} {file:<44} {prefix}  {url}")


if __name__ == "__main__":
    main()
