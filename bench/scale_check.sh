#!/usr/bin/env bash
# Scale check on a real-shaped random model (default: Llama-3-8B in F16, 16 GB, written once by
# `lcw-cli synth` into $LCW_BENCH_DIR): wall time and peak RSS (/usr/bin/time -v) of opening it,
# decoding, a perplexity chunk, statistics and GPTQ of one layer (layers.0.mlp.down, the largest
# Hessian: 14336 columns). One JSON line per step on stdout.
#   bench/scale_check.sh
# Environment: SHAPE (llama3-8b), THREADS (nproc), BUILD (build), LCW_BENCH_DIR (/tmp/lcw-bench)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
THREADS=${THREADS:-$(nproc)}
DIR=${LCW_BENCH_DIR:-/tmp/lcw-bench}
SHAPE=${SHAPE:-llama3-8b}
CLI=$BUILD/app/lcw-cli
model=$DIR/$SHAPE-f16
TEXT=resources/data/tinystories_eval.txt
export OMP_NUM_THREADS=$THREADS
[ -f "$model/config.json" ] || "$CLI" synth --shape "$SHAPE" --dtype f16 --out "$model" --quiet >&2
step() { # step NAME CMD...: one JSON line with wall seconds and peak RSS
  local name=$1; shift
  local log; log=$(mktemp)
  local rc=0
  /usr/bin/time -v "$@" > "$log.out" 2> "$log" || rc=$?
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, a, ":"); s = 0;
         for (i = 1; i <= n; ++i) s = s * 60 + a[i]; print s}' "$log")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2 * 1024}' "$log")
  jq -nc --arg s "$SHAPE" --arg n "$name" --argjson w "$wall" --argjson r "$rss" --argjson rc "$rc" \
     --arg tail "$(tail -c 400 "$log.out")" --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" \
     '{metric: "scale_step", shape: $s, step: $n, wall_seconds: $w, peak_rss_bytes: $r,
       exit_status: $rc, output_tail: $tail, loadavg: $load}'
  rm -f "$log" "$log.out"
}
step open "$CLI" info "$model" --json
step decode "$BUILD/bench/bench_runtime" "$model" --threads "$THREADS" --prefill 16 --decode 8 --reps 1
# perplexity, not eval: eval resets the process's RSS high-water mark between its phases (its
# per-configuration memory figures), which /usr/bin/time would then miss.
short=$(mktemp)
head -c 1500 "$TEXT" > "$short"
step perplexity "$CLI" perplexity "$model" --text "$short" --ctx 256 --json
step stats "$CLI" stats "$model" --calib "$TEXT" --samples 1 --seq-len 64 --out "$DIR/$SHAPE-stats.h5" --json
step gptq_one_layer "$CLI" compress "$model" --recipe bench/recipes/gptq-one-layer.json --calib "$TEXT" \
  --samples 4 --seq-len 128 --json
