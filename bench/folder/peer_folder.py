"""pytorch-grad-cam doing `gradcam explain DIR`'s whole job in a loop, photo by photo: decode (PIL), resize to
224x224 and normalise, Grad-CAM of the top-1 class at the default layer, the map enlarged to the photo's size,
the overlay (show_cam_on_image), the heat map and the threshold view, three PNG files. Prints one JSON line:
photos, seconds, ms per photo. Random weights (the speed does not depend on them), 2 threads.

usage: peer_folder.py DIR MODEL OUT_DIR [LIMIT]
"""
import json, os, sys, time, warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
import cv2
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image

warnings.filterwarnings("ignore")
torch.set_num_threads(2)


def models():
    """The reference models of bench/peer/peer.py (which parses its arguments when imported)."""
    import torchvision
    r = torchvision.models.resnet50(weights=None).eval()
    yield "resnet50", r, r.layer4
    from efficientnet_lite_pytorch import EfficientNet
    e = EfficientNet.from_name("efficientnet-lite0").eval()

    class Head(torch.nn.Module):  # conv_head -> bn1 -> ReLU6 as one module, the `head` layer
        def __init__(s, m): super().__init__(); s.c, s.b, s.a = m._conv_head, m._bn1, torch.nn.ReLU6()
        def forward(s, x): return s.a(s.b(s.c(x)))

    class Lite(torch.nn.Module):
        def __init__(s, m):
            super().__init__(); s.stem = torch.nn.Sequential(m._conv_stem, m._bn0, torch.nn.ReLU6())
            s.blocks = m._blocks; s.head = Head(m); s.fc = m._fc
        def forward(s, x):
            x = s.stem(x)
            for b in s.blocks: x = b(x)
            return s.fc(s.head(x).mean((2, 3)))
    lite = Lite(e).eval()
    yield "efficientnet_lite0", lite, lite.head

MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


def main():
    d, name, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    limit = int(sys.argv[4]) if len(sys.argv) > 4 else None
    out.mkdir(parents=True, exist_ok=True)
    model, layer = next((m, l) for n, m, l in models() if n == name)
    if name.startswith("efficientnet"):  # Lite's normalisation
        mean, std = np.array([0.498] * 3, np.float32), np.array([0.502] * 3, np.float32)
    else:
        mean, std = MEAN, STD
    photos = sorted(p for p in d.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:limit]
    cam = GradCAM(model=model, target_layers=[layer])
    t0 = time.perf_counter()
    for p in photos:
        img = Image.open(p).convert("RGB")
        rgb = np.asarray(img, np.float32) / 255
        small = np.asarray(img.resize((224, 224), Image.BILINEAR), np.float32) / 255
        x = torch.from_numpy(((small - mean) / std).transpose(2, 0, 1).copy())[None]
        g = cam(input_tensor=x, targets=None)[0]
        big = cv2.resize(g, (img.width, img.height))
        overlay = show_cam_on_image(rgb, big, use_rgb=True)
        heat = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * big), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
        mask = (np.asarray(img) * (big > 0.75)[..., None]).astype(np.uint8)
        for kind, a in (("overlay", overlay), ("heatmap", heat), ("mask", mask)):
            Image.fromarray(a).save(out / f"{p.stem}.{kind}.png")
    s = time.perf_counter() - t0
    print(json.dumps({"model": name, "photos": len(photos), "seconds": s, "ms_per_photo": 1e3 * s / len(photos)}))


if __name__ == "__main__":
    main()
