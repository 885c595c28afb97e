#!/usr/bin/env bash
# Installs what is missing, builds everything (tests included) into build/, runs the whole
# ctest suite. Extra arguments go to ctest (e.g. -R tokenizer).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
lcw_install_deps
lcw_build build -DLCW_BUILD_TESTS=ON
export QT_QPA_PLATFORM=offscreen
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
if [ ! -d ../shared ] && [ -z "${LCW_SHARED_DIR:-}" ]; then
  echo "lcw: ../shared not found: tests that need shared models will be skipped"
fi
cd build
ctest --output-on-failure -j "$(nproc 2>/dev/null || echo 2)" "$@"
