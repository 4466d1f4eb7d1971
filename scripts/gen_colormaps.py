"""Regenerate crates/gradcam/src/colormaps.rs from matplotlib (a developer tool; needs `pip install matplotlib`)."""
import matplotlib
import numpy as np

out = ["//! Colour maps as 256-entry RGB tables, sampled from matplotlib's colormaps (`cmap(np.arange(256)/255)`),",
       "//! generated once by scripts/gen_colormaps.py.", ""]
for name in ["jet", "turbo", "viridis", "inferno"]:
    cm = matplotlib.colormaps[name]
    v = (np.asarray(cm(np.arange(256) / 255.0))[:, :3] * 255).round().astype(int)
    out.append(f"pub const {name.upper()}: [[u8; 3]; 256] = [")
    for i in range(0, 256, 8):
        out.append("    " + " ".join(f"[{r}, {g}, {b}]," for r, g, b in v[i:i + 8]))
    out.append("];")
    out.append("")
open("crates/gradcam/src/colormaps.rs", "w").write("\n".join(out))
