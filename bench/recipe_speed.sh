#!/usr/bin/env bash
# Speed of compressed configurations on the synthetic TinyLlama-1.1B (F16 safetensors written by
# `lcw-cli synth`): the model itself, then each configuration compressed by round to nearest and
# run from its packed form (bench_runtime --preset / --recipe), same threads, pp PREFILL / tg
# DECODE, REPS repetitions in one process (median). JSON lines on stdout (bench_runtime's, one
# "configuration" key each); a Markdown table on stderr and in $MD_OUT.
#   bench/recipe_speed.sh
# Environment: PREFILL (512), DECODE (128), REPS (3), THREADS (nproc), BUILD (build),
#   LCW_BENCH_DIR (/tmp/lcw-bench), CONFIGS (default below), MD_OUT
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
THREADS=${THREADS:-$(nproc)}
DIR=${LCW_BENCH_DIR:-/tmp/lcw-bench}
PREFILL=${PREFILL:-512} DECODE=${DECODE:-128} REPS=${REPS:-3}
MD_OUT=${MD_OUT:-$DIR/recipe_speed.md}
CONFIGS=${CONFIGS:-"model preset:W4A16-g128 recipe:bench/recipes/int4-sym-g128.json
  recipe:bench/recipes/2of4-int4-sym-g128.json preset:W8A16
  recipe:bench/recipes/2of4-int8-sym-channel.json preset:W8A8 preset:W4A8"}
for t in bench_runtime lcw-cli; do
  [ -x "$BUILD/bench/$t" ] || [ -x "$BUILD/app/$t" ] || cmake --build "$BUILD" --target "$t" >&2
done
model=$DIR/tinyllama-1.1b-f16
[ -f "$model/config.json" ] ||
  "$BUILD/app/lcw-cli" synth --shape tinyllama-1.1b --dtype f16 --out "$model" --quiet >&2
out=$(mktemp)
for c in $CONFIGS; do
  args=()
  case $c in preset:*) args=(--preset "${c#preset:}") ;; recipe:*) args=(--recipe "${c#recipe:}") ;; esac
  "$BUILD/bench/bench_runtime" "$model" --threads "$THREADS" --prefill "$PREFILL" \
    --decode "$DECODE" --reps "$REPS" "${args[@]}" | tee -a "$out"
done
{
  echo "Synthetic TinyLlama-1.1B F16, $THREADS threads, pp$PREFILL / tg$DECODE, median of $REPS:"
  echo
  echo "| configuration | bits/weight | decode t/s | prefill t/s | decode weight GB | peak RSS GB |"
  echo "|---|--:|--:|--:|--:|--:|"
  jq -rs 'group_by(.configuration)[] as $g |
    def v(m): [$g[] | select(.metric == m)][0].value;
    [$g[0].configuration, (v("bits_per_weight") // 16 | . * 100 | round / 100),
     (v("decode_tokens_per_second") * 100 | round / 100),
     (v("prefill_tokens_per_second") * 10 | round / 10),
     ($g[0].decode_weight_bytes / 1e9 * 100 | round / 100),
     (v("peak_rss_bytes") / 1e9 * 100 | round / 100)] | "| " + (map(tostring) | join(" | ")) + " |"' "$out"
} | tee "$MD_OUT" >&2
rm -f "$out"
