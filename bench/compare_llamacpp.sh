#!/usr/bin/env bash
# lcw vs llama.cpp (CPU, prebuilt binary from the npm package node-llama-cpp) on the same weights,
# threads and token counts. JSON lines on stdout: bench_runtime's lines for lcw on the GGUF and on
# the safetensors folder ("engine":"lcw"), bench/llamacpp/bench_llamacpp.mjs's lines for
# llama.cpp ("engine":"llama.cpp"), then per model one {"metric":"decode_ratio_lcw_over_llamacpp"}
# and one {"metric":"prefill_ratio_lcw_over_llamacpp"} line (value: lcw on the GGUF / llama.cpp;
# >1 means lcw is faster).
#   bench/compare_llamacpp.sh [f32|f16]        (default f32)
# Environment: BUILD (build dir, default build), THREADS (default nproc), LCW_BENCH_DIR (default
# /tmp/lcw-bench: node_modules, the synthetic model and the GGUF exports live there, never in the
# repo), PREFILL/DECODE/REPS for the 1.1B model (default 64/16/5), DEMO_PREFILL/DEMO_DECODE/
# DEMO_REPS for the demo model (default 256/128/5); each engine reports its best repetition.
# SKIP_1B=1 runs the demo model only.
set -euo pipefail
cd "$(dirname "$0")/.."
DT=${1:-f32}
case "$DT" in f32|f16) ;; *) echo "usage: $0 [f32|f16]" >&2; exit 2 ;; esac
BUILD=${BUILD:-build}
THREADS=${THREADS:-$(nproc)}
DIR=${LCW_BENCH_DIR:-/tmp/lcw-bench}
PREFILL=${PREFILL:-64} DECODE=${DECODE:-16} REPS=${REPS:-5}
DEMO_PREFILL=${DEMO_PREFILL:-256} DEMO_DECODE=${DEMO_DECODE:-128} DEMO_REPS=${DEMO_REPS:-5}
mkdir -p "$DIR"

for t in gguf_export bench_runtime; do
  [ -x "$BUILD/bench/$t" ] || cmake --build "$BUILD" --target "$t" >&2
done
[ -x "$BUILD/app/lcw-cli" ] || cmake --build "$BUILD" --target lcw-cli >&2

NODE_DIR=$DIR/node
. bench/llamacpp/node_dir.sh
node_llamacpp_setup bench/llamacpp/bench_llamacpp.mjs

tag() { jq -c --arg e "$1" --arg m "$2" '. + {engine: $e, model_name: $m}'; }

# compare NAME SOURCE GGUF PREFILL DECODE REPS
compare() {
  local name=$1 src=$2 gguf=$3 np=$4 nd=$5 reps=$6 out
  out=$(mktemp)
  "$BUILD/bench/bench_runtime" "$gguf" --threads "$THREADS" --prefill "$np" --decode "$nd" \
      --reps "$reps" | tag lcw "$name" | tee -a "$out"
  "$BUILD/bench/bench_runtime" "$src" --threads "$THREADS" --prefill "$np" --decode "$nd" \
      --reps "$reps" | tag lcw "$name" | tee -a "$out"
  (cd "$NODE_DIR" && node bench_llamacpp.mjs "$gguf" --threads "$THREADS" --prefill "$np" \
      --decode "$nd" --reps "$reps") | jq -c 'del(.ids, .system_info)' | tag llama.cpp "$name" |
      tee -a "$out"
  for m in decode prefill; do
    jq -s -c --arg m "$m" --arg name "$name" --arg dt "$DT" \
        --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" '
      def v(e; f): [.[] | select(.metric == ($m + "_tokens_per_second") and .engine == e
                                 and (f == null or .format == f))][0].value;
      {metric: ($m + "_ratio_lcw_over_llamacpp"),
       value: (v("lcw"; "gguf") / v("llama.cpp"; null)),
       lcw_safetensors_over_llamacpp: (v("lcw"; "safetensors") / v("llama.cpp"; null)),
       lcw_gguf_tokens_per_second: v("lcw"; "gguf"),
       lcw_safetensors_tokens_per_second: v("lcw"; "safetensors"),
       llamacpp_tokens_per_second: v("llama.cpp"; null),
       model_name: $name, dtype: $dt, threads: (.[0].threads), loadavg: $load}' "$out"
  done
  rm -f "$out"
}

# Demo model (stories260K, f32 in the repo; exported in the requested dtype).
demo_gguf=$DIR/stories260K-$DT.gguf
"$BUILD/bench/gguf_export" resources/models/stories260K "$demo_gguf" --dtype "$DT" >&2
compare "stories260K" resources/models/stories260K "$demo_gguf" \
  "$DEMO_PREFILL" "$DEMO_DECODE" "$DEMO_REPS"

if [ "${SKIP_1B:-0}" != 1 ]; then
  src=$DIR/tinyllama-1.1b-$DT
  if [ ! -f "$src/config.json" ]; then
    "$BUILD/app/lcw-cli" synth --arch llama --shape tinyllama-1.1b --dtype "$DT" --out "$src" >&2
  fi
  gguf=$DIR/tinyllama-1.1b-$DT.gguf
  if [ ! -f "$gguf" ] || [ "$src/config.json" -nt "$gguf" ]; then
    "$BUILD/bench/gguf_export" "$src" "$gguf" --dtype "$DT" >&2
  fi
  compare "tinyllama-1.1b-synthetic" "$src" "$gguf" "$PREFILL" "$DECODE" "$REPS"
fi
