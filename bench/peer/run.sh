#!/usr/bin/env bash
# Side by side on this machine, in one sitting: the reference (PyTorch + pytorch-grad-cam, onnxruntime) and
# `gradcam bench`, same architectures, same input size, 2 threads; prints one table with the ratios.
# Installs its Python packages (from PyPI) into bench/peer/.venv. Not part of the tests or CI.
#
# usage: bench/peer/run.sh [--quick] [--isa avx512,avx2,scalar]
#   --quick: no ScoreCAM/AblationCAM, which take minutes
#   --isa: gradcam's kernels forced to each of these instruction sets in turn (GRADCAM_ISA), one table each;
#          default: gradcam's own choice (the widest the CPU has)
# The quick figures are the lowest of 3 interleaved rounds (reference, then gradcam), each a median of 7.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet torch torchvision grad-cam onnxruntime onnx onnxscript efficientnet-lite-pytorch==0.1.0
fi
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 RAYON_NUM_THREADS=2
(cd "$root" && cargo build --release --quiet)
slow="scorecam,ablationcam"
isa=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) slow="" ;;
    --isa) isa="${2:?--isa needs a list}"; shift ;;
    *) echo "usage: $0 [--quick] [--isa avx512,avx2,scalar]" >&2; exit 2 ;;
  esac
  shift
done
"$venv/bin/python" "$here/peer.py" --gradcam "$root/target/release/gradcam" --slow "$slow" --isa "$isa" | tee "$here/last-run.txt"
