#!/usr/bin/env bash
# GGUF export speed against llama.cpp's own quantiser on the same file and threads: the
# synthetic TinyLlama-1.1B (lcw-cli synth, F16) written as an F16 GGUF, then quantised to a preset
# (default Q4_K_M) by llama_model_quantize — the function llama-quantize runs — from the libllama
# of node-llama-cpp's prebuilt CPU package (bench/llamacpp/llama_quantize_time.c, loaded with
# dlopen; nothing is downloaded at run time beyond the npm package), and by `lcw-cli export
# --preset`. REPS runs each, interleaved (llama.cpp, lcw, llama.cpp, …); the median of each.
# JSON lines on stdout, the last one the ratio
# {"metric":"export_speed_lcw_over_llamacpp", ...} (> 1: lcw is faster).
# Environment: BUILD (build), THREADS (nproc), REPS (5), PRESET (Q4_K_M), LCW_BENCH_DIR
# (/tmp/lcw-bench: the node package, the model and the outputs live there, never in the repo).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lcw_cli.sh
THREADS=${THREADS:-$(nproc)}
REPS=${REPS:-5}
PRESET=${PRESET:-Q4_K_M}
DIR=${LCW_BENCH_DIR:-/tmp/lcw-bench}
mkdir -p "$DIR"
NODE_DIR=$DIR/node
source bench/llamacpp/node_dir.sh
node_llamacpp_setup
llamacpp_quantize_setup "$TMP/lqt"
BINS=$LLAMA_BINS LIB=$LLAMA_LIB
FTYPE=$(llamacpp_ftype_id "$PRESET")
M="$DIR/tinyllama-f16"
[ -f "$M/config.json" ] || "$CLI" synth --arch llama --shape tinyllama-1.1b --dtype f16 --out "$M" --quiet >&2
F16="$DIR/tinyllama-f16.gguf"
[ -f "$F16" ] || "$CLI" export "$M" --type f16 --out "$F16" --no-kl --quiet >&2
ls_=() cs_=()
for ((r = 0; r < REPS; ++r)); do
  l=$(LD_LIBRARY_PATH="$BINS" "$TMP/lqt" "$LIB" "$F16" "$DIR/llamacpp-$PRESET.gguf" "$FTYPE" "$THREADS" 2>/dev/null |
      python3 -c "import json,sys; print(json.loads(sys.stdin.read())['value'])")
  c=$("$CLI" export "$F16" --preset "$PRESET" --out "$DIR/lcw-$PRESET.gguf" --no-kl --json --quiet \
        --threads "$THREADS" | python3 -c "import json,sys; print(json.load(sys.stdin)['seconds'])")
  echo "{\"rep\":$r,\"llamacpp_seconds\":$l,\"lcw_seconds\":$c}"
  ls_+=("$l")
  cs_+=("$c")
done
median() { python3 -c "import statistics,sys; print(statistics.median(map(float, sys.argv[1:])))" "$@"; }
best_l=$(median "${ls_[@]}")
best_c=$(median "${cs_[@]}")
echo "{\"metric\":\"export_speed_lcw_over_llamacpp\",\"value\":$(python3 -c "print(round($best_l/$best_c,3))"),\"preset\":\"$PRESET\",\"threads\":$THREADS,\"llamacpp_seconds\":$best_l,\"lcw_seconds\":$best_c,\"llamacpp\":\"$(basename "$LIB")\",\"loadavg\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}"
