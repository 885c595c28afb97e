#!/usr/bin/env bash
# Installs what is missing, builds Release into build/, and opens the bundled demo model in the
# workbench. Without a display it runs the same model headless through lcw-cli and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
lcw_install_deps
lcw_build build -DLCW_BUILD_TESTS=OFF

MODEL=resources/models/stories260K
TEXT=resources/data/tinystories_eval.txt
if [ -n "${DISPLAY:-}" ] || [ -n "${WAYLAND_DISPLAY:-}" ]; then
  echo "lcw: opening the demo model $MODEL"
  exec ./build/app/gui/lcw "$MODEL"
fi

echo "lcw: no display found (DISPLAY/WAYLAND_DISPLAY unset): running the demo model headless through lcw-cli"
CLI=./build/app/lcw-cli
echo; echo "== lcw-cli info $MODEL"
$CLI info "$MODEL"
echo; echo "== lcw-cli generate $MODEL --prompt 'Once upon a time' -n 48"
$CLI generate "$MODEL" --prompt "Once upon a time" -n 48
echo; echo "== lcw-cli perplexity $MODEL --text $TEXT --ctx 256"
$CLI perplexity "$MODEL" --text "$TEXT" --ctx 256
echo
echo "lcw: the GUI needs a display; run 'xvfb-run -a ./build/app/gui/lcw $MODEL' or use a desktop session."
