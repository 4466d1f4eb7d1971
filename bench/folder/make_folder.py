#!/usr/bin/env python3
"""A folder of N mixed-size photos for `bench/folder/run.sh`: crops and resizes of scikit-image's example photos
(fetched by scripts/fetch-assets.sh into $GRADCAM_HOME/examples), sides 177-640 px, two thirds JPEG, one third
PNG, the same files for the same N on every machine (seeded). Needs Pillow.

usage: make_folder.py OUT_DIR N
"""
import os
import random
import sys
from pathlib import Path

from PIL import Image

SOURCES = ["astronaut.png", "chelsea.png", "coffee.png", "horse.png", "rocket.jpg", "motorcycle_left.png",
           "motorcycle_right.png", "hubble_deep_field.jpg", "retina.jpg", "immunohistochemistry.png", "ihc.png",
           "camera.png", "brick.png", "grass.png", "gravel.png", "color.png"]


def main():
    out, n = Path(sys.argv[1]), int(sys.argv[2])
    home = Path(os.environ.get("GRADCAM_HOME", Path.home() / ".cache/gradcam")) / "examples"
    photos = [Image.open(home / s).convert("RGB") for s in SOURCES if (home / s).exists()]
    if not photos:
        sys.exit(f"no example photos in {home}: run scripts/fetch-assets.sh first")
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(16)
    for i in range(n):
        p = photos[i % len(photos)]
        w, h = p.size
        cw, ch = rng.randint(w // 2, w), rng.randint(h // 2, h)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        crop = p.crop((x, y, x + cw, y + ch))
        side = rng.randint(177, 640)
        s = side / max(cw, ch)
        img = crop.resize((max(1, round(cw * s)), max(1, round(ch * s))), Image.BILINEAR)
        if i % 3 == 2:
            img.save(out / f"photo{i:06d}.png")
        else:
            img.save(out / f"photo{i:06d}.jpg", quality=90)


if __name__ == "__main__":
    main()
