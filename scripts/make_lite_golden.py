"""Reference logits of EfficientNet-Lite1 and Lite2 on their real ImageNet weights, for tests/golden/lite1, lite2.

The reference is the `efficientnet-lite-pytorch==0.1.0` package (the architecture the weight packages were made
for) run on the checkpoints that scripts/fetch-assets.sh unpacks, at each model's own size (240 and 260 px),
on eight PNG example photos (PNG: PIL and gradcam decode them to the same pixels, which JPEG decoders need
not), preprocessed as gradcam does: PIL bilinear resize to size x size (no crop), /255, (x - 127/255) / (128/255).
Only the logits are written (1000 float32, tests/golden/liteN/<stem>.logits.npy): gradcam's own decoding and
preprocessing are part of what the test checks.

usage (a venv with torch, pillow, numpy and efficientnet-lite-pytorch==0.1.0):
    scripts/fetch-assets.sh efficientnet_lite1 efficientnet_lite2
    python scripts/make_lite_golden.py [GRADCAM_HOME] [OUT_DIR]
"""
import os, sys
import numpy as np
import torch
from PIL import Image
from efficientnet_lite_pytorch import EfficientNet

home = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("GRADCAM_HOME", os.path.expanduser("~/.cache/gradcam"))
out = sys.argv[2] if len(sys.argv) > 2 else "tests/golden"
PHOTOS = ["chelsea.png", "coffee.png", "astronaut.png", "horse.png", "motorcycle_left.png", "camera.png",
          "coins.png", "color.png"]
torch.set_num_threads(2)

for variant, size in [(1, 240), (2, 260)]:
    name = f"efficientnet-lite{variant}"
    m = EfficientNet.from_pretrained(name, weights_path=os.path.join(home, "weights", f"efficientnet_lite{variant}.pth"))
    m.eval()
    d = os.path.join(out, f"lite{variant}")
    os.makedirs(d, exist_ok=True)
    for photo in PHOTOS:
        img = Image.open(os.path.join(home, "examples", photo)).convert("RGB").resize((size, size), Image.BILINEAR)
        x = np.asarray(img, dtype=np.float32) / 255.0
        x = (x - 127.0 / 255.0) / (128.0 / 255.0)
        x = torch.from_numpy(x.transpose(2, 0, 1)[None].copy())
        with torch.no_grad():
            logits = m(x)[0].numpy().astype(np.float32)
        stem = os.path.splitext(photo)[0]
        np.save(os.path.join(d, f"{stem}.logits.npy"), logits)
        print(f"lite{variant} {stem}: top-1 {int(logits.argmax())} ({logits.max():.3f})")
