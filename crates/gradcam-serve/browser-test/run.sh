#!/usr/bin/env bash
# The browser test of `gradcam serve`'s page: installs Debian's Chromium (and Node.js) when missing and
# playwright-core from npm (package-lock.json), builds the release binary, runs test.mjs. Screenshots go to
# crates/gradcam-serve/browser-test/screenshots/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  echo "browser test: installing ${need[*]} (apt)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
(cd "$root" && cargo build --release -p gradcam-cli --quiet)
cd "$here"
[ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund --loglevel=error
GRADCAM_BIN="$root/target/release/gradcam" node test.mjs
