#!/usr/bin/env bash
# Side by side on this machine, in one sitting: the reference (PyTorch + pytorch-grad-cam, onnxruntime) and
# `gradcam bench`, same architectures, same input size, 2 threads; prints one table with the ratios.
# Installs its Python packages (from PyPI) into bench/peer/.venv, or uses $PEER_VENV. Not part of the tests or CI.
#
# usage: bench/peer/run.sh [--quick] [--isa avx512,avx2,scalar] [--models resnet50,vgg16,...] [--rounds N]
#                          [--onnx | --no-onnx] [--gradcam PATH]
#   --quick: no ScoreCAM/AblationCAM, which take minutes; medians of 5, not 7, and the reference's repetitions
#            cut (to at least 3) where they would take over 4 s (VGG-16 and the like at batch 8)
#   --models: some of resnet50, efficientnet_lite0, vgg16, mobilenet_v3_large, densenet121, efficientnet_b0,
#             convnext_tiny (default: all); torchvision's with random weights (weights=None), gradcam's with
#             synthetic ones (or cached pretrained ones: same speed), the target layer gradcam's default
#   --rounds: interleaved rounds (default 3; on a loaded 2-core machine one round of the five newer models
#             takes ~15 min)
#   --isa: gradcam's kernels forced to each of these instruction sets in turn (GRADCAM_ISA), one table each;
#          default: gradcam's own choice (the widest the CPU has)
#   --onnx: also time `gradcam bench --model <file>.onnx` on the reference's own ONNX export (the one onnxruntime
#           runs: TorchScript exporter, opset 17) of every model asked for, forward and Grad-CAM, one row
#           "gradcam (ONNX import)" per model and batch with the ratio imported / native (target <= 1.10);
#           default: resnet50's only (when asked for); --no-onnx: none
#   --gradcam: this gradcam binary, not one built here (no cargo build)
# The quick figures are the lowest of 3 interleaved rounds (reference, then gradcam), each a median of 7 (5: --quick).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${PEER_VENV:-$here/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet torch torchvision grad-cam onnxruntime onnx onnxscript efficientnet-lite-pytorch==0.1.0
fi
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 RAYON_NUM_THREADS=2
slow="scorecam,ablationcam"
isa=""
models="resnet50,efficientnet_lite0,vgg16,mobilenet_v3_large,densenet121,efficientnet_b0,convnext_tiny"
budget=0
reps=7
rounds=3
onnx=resnet50
gradcam=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) slow=""; budget=4; reps=5 ;;
    --isa) isa="${2:?--isa needs a list}"; shift ;;
    --models) models="${2:?--models needs a list}"; shift ;;
    --rounds) rounds="${2:?--rounds needs a number}"; shift ;;
    --onnx) onnx=all ;;
    --no-onnx) onnx="" ;;
    --gradcam) gradcam="${2:?--gradcam needs a path}"; shift ;;
    *) echo "usage: $0 [--quick] [--isa avx512,avx2,scalar] [--models resnet50,vgg16,...] [--rounds N] [--onnx | --no-onnx] [--gradcam PATH]" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$gradcam" ]; then
  (cd "$root" && cargo build --release --quiet -p gradcam-cli)
  gradcam="$root/target/release/gradcam"
fi
"$venv/bin/python" "$here/peer.py" --gradcam "$gradcam" --slow "$slow" --isa "$isa" \
  --models "$models" --reps "$reps" --rounds "$rounds" --budget-s "$budget" --onnx "$onnx" | tee "$here/last-run.txt"
