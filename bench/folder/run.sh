#!/usr/bin/env bash
# A folder run end to end against the Grad-CAM pass alone, and against pytorch-grad-cam doing the same job
# (bench/folder/peer_folder.py). 2 threads. Not part of the tests or CI.
#
# usage: bench/folder/run.sh [N] [MODELS] [PEER_LIMIT]
#   N            photos in the folder (default 500; made once by make_folder.py into target/bench-folder-N)
#   MODELS       default resnet50,efficientnet_lite0 (pretrained weights when cached, else synthetic ones)
#   PEER_LIMIT   photos the reference explains (default 100; 0 skips it). Its Python environment: $PEER_VENV,
#                default bench/peer/.venv (made by bench/peer/run.sh)
# Prints per model: photos/s and ms per photo end to end (decode, resize, network, three PNGs), the Grad-CAM pass
# alone (`gradcam bench`), their ratio, the network's share of the wall time, the peak memory, the reference.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
n="${1:-500}"
models="${2:-resnet50,efficientnet_lite0}"
peer_limit="${3:-100}"
venv="${PEER_VENV:-$root/bench/peer/.venv}"
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 RAYON_NUM_THREADS=2
(cd "$root" && cargo build --release --quiet -p gradcam-cli)
bin="$root/target/release/gradcam"
dir="$root/target/bench-folder-$n"
if [ ! -d "$dir" ]; then
  py="$venv/bin/python"; [ -x "$py" ] || py=python3
  "$py" "$here/make_folder.py" "$dir.tmp" "$n" && mv "$dir.tmp" "$dir"
fi
scratch="$(mktemp -d)"; trap 'rm -rf "$scratch"' EXIT
echo "load: $(uptime | sed 's/.*load average/load average/')"
printf '%-20s %6s %9s %10s %10s %7s %9s %8s %12s\n' model photos photos/s "ms/photo" "pass ms" ratio "net share" "peak MB" "peer ms/photo"
for m in ${models//,/ }; do
  w=$("$bin" models | awk -v m="$m" '$1 == m && /weights: at / {print "pretrained"}')
  wflag=(); [ "$w" = pretrained ] || wflag=(--weights synthetic)
  pass=$("$bin" bench --model "$m" --what gradcam --batch 1 --reps 20 --json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"][0]["ms_per_image"])')
  rm -rf "$scratch/out"
  /usr/bin/time -f "%M" -o "$scratch/rss" "$bin" explain "$dir" --model "$m" "${wflag[@]}" --out "$scratch/out" --stats \
    >/dev/null 2>"$scratch/err" || { cat "$scratch/err"; exit 1; }
  stats=$(grep '^stats:' "$scratch/err")
  get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$stats"; }
  peer="-"
  if [ "$peer_limit" != 0 ] && [ -x "$venv/bin/python" ]; then
    peer=$("$venv/bin/python" "$here/peer_folder.py" "$dir" "$m" "$scratch/peer" "$peer_limit" |
      python3 -c 'import json,sys; print("%.1f" % json.load(sys.stdin)["ms_per_photo"])')
  fi
  python3 - "$m" "$(get inputs)" "$(get per_s)" "$(get ms_per_input)" "$pass" "$(get network_share)" \
    "$(cat "$scratch/rss")" "$peer" <<'PY'
import sys
m, n, per_s, ms, p, share, rss, peer = sys.argv[1:]
ratio = float(ms) / float(p)
vs = "" if peer == "-" else f" ({float(peer) / float(ms):.1f}x faster)"
print(f"{m:<20} {n:>6} {float(per_s):>9.2f} {float(ms):>10.1f} {float(p):>10.1f} {ratio:>6.2f}x {float(share):>8.0%} "
      f"{int(rss) / 1024:>8.0f} {peer:>12}{vs}")
PY
done
echo "load: $(uptime | sed 's/.*load average/load average/')"
