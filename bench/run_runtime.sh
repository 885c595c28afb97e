#!/usr/bin/env bash
# Foundation benchmarks (JSON lines on stdout): load time, prefill/decode tokens/s and peak RSS on
# the demo model and on a synthetic TinyLlama-1.1B-shaped model (written once to $LCW_BENCH_DIR,
# default /tmp/lcw-bench: ~4.4 GB for f32, 2.2 GB for f16/bf16).
#   bench/run_runtime.sh [f32|f16|bf16 ...]     (default: f32)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
THREADS=${THREADS:-$(nproc)}
DIR=${LCW_BENCH_DIR:-/tmp/lcw-bench}
[ -x "$BUILD/bench/bench_runtime" ] || cmake --build "$BUILD" --target bench_runtime lcw-cli >&2
"$BUILD/bench/bench_runtime" resources/models/stories260K --threads "$THREADS" --prefill 256 --decode 128
for dt in "${@:-f32}"; do
  out="$DIR/tinyllama-1.1b-$dt"
  if [ ! -f "$out/config.json" ]; then
    "$BUILD/app/lcw-cli" synth --arch llama --shape tinyllama-1.1b --dtype "$dt" --out "$out" >&2
  fi
  # Drop nothing from the page cache: load time is the warm-cache mmap time users see on reopen.
  "$BUILD/bench/bench_runtime" "$out" --threads "$THREADS" --prefill 64 --decode 16 --reps 2
done
