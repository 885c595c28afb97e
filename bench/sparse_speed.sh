#!/usr/bin/env bash
# Decode speed of 2:4 sparse layers against dense layers of the same type, per linear layer of a
# transformer block, with the weights streaming from memory as they do in a model (bench_packed_linear
# --copies: enough copies of each weight, run in turn, that the working set is several times the
# L3 cache). Types: W4A16 g128 (int4 symmetric, groups of 128, 8-bit activation blocks), W8A16
# (int8 per channel), W8A8 (int8 per channel, int8 per-token activations); each dense and with
# magnitude 2:4 sparsity. Per shape, the block's time is the sum over its linears (q, k, v, o,
# gate, up, down; k and v have the same shape), so the block ratio weighs each layer by its
# share of a decode step. lm_head, attention and norms are not included there; the whole model
# follows: the synthetic TinyLlama-1.1B F16 (as bench/recipe_speed.sh writes it) compressed by
# bench/recipes/{int4-sym-g128,2of4-int4-sym-g128,2of4-int8-sym-channel}.json and the W8A16
# preset, all four in one bench_runtime process with their repetitions interleaved (lm_head stays
# F16 in all four: 0.13 GB of every decode step).
#   bench/sparse_speed.sh
# stdout: bench_packed_linear's JSON lines (decode, one token) with "shape" and "layer" added,
#   then per shape and type {"metric":"sparse_block_speedup","shape","type","dense_us",
#   "sparse_us","speedup"}, bench_runtime's lines, and per type {"metric":"sparse_model_speedup",
#   "type","decode_speedup","prefill_speedup"}. Markdown tables go to stderr and to $MD_OUT.
# Environment: SHAPES ("tinyllama-1.1b llama3-8b"), THREADS (nproc), ROUNDS (15), BUILD (build),
#   WORKING_MB (96: the working set of the smallest configuration), MODEL_REPS (5; 0: no
#   whole-model run), PREFILL (512), DECODE (128), LCW_BENCH_DIR (/tmp/lcw-bench), MD_OUT
#   ($LCW_BENCH_DIR/sparse_speed.md).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
THREADS=${THREADS:-$(nproc)}
ROUNDS=${ROUNDS:-15}
WORKING_MB=${WORKING_MB:-96}
SHAPES=${SHAPES:-"tinyllama-1.1b llama3-8b"}
MODEL_REPS=${MODEL_REPS:-5} PREFILL=${PREFILL:-512} DECODE=${DECODE:-128}
DIR=${LCW_BENCH_DIR:-/tmp/lcw-bench}
MD_OUT=${MD_OUT:-$DIR/sparse_speed.md}
mkdir -p "$(dirname "$MD_OUT")" "$DIR"
for t in bench_packed_linear bench_runtime lcw-cli; do
  [ -x "$BUILD/bench/$t" ] || [ -x "$BUILD/app/$t" ] || cmake --build "$BUILD" --target "$t" >&2
done
CONFIGS="W4A16 g128,W4A16 g128 2:4,W8A16 channel,W8A16 channel 2:4,W8A8 channel,W8A8 channel 2:4"

# layer rows cols count (per block)
layers() {
  case $1 in
  tinyllama-1.1b) printf '%s\n' "q 2048 2048 1" "kv 256 2048 2" "o 2048 2048 1" \
    "gate_up 5632 2048 2" "down 2048 5632 1" ;;
  llama3-8b) printf '%s\n' "q 4096 4096 1" "kv 1024 4096 2" "o 4096 4096 1" \
    "gate_up 14336 4096 2" "down 4096 14336 1" ;;
  *) echo "sparse_speed.sh: unknown shape $1 (tinyllama-1.1b, llama3-8b)" >&2; exit 2 ;;
  esac
}

out=$(mktemp)
trap 'rm -f "$out" "$out".blocks "$out".speedups' EXIT
for shape in $SHAPES; do
  layers "$shape" | while read -r name rows cols count; do
    # 2:4 int4 is the smallest: 3.125 bits per weight.
    copies=$(( (WORKING_MB * 1024 * 1024 * 64 / 25 + rows * cols - 1) / (rows * cols) ))
    [ "$copies" -lt 1 ] && copies=1
    "$BUILD/bench/bench_packed_linear" --rows "$rows" --cols "$cols" --prefill 1 \
      --rounds "$ROUNDS" --threads "$THREADS" --copies "$copies" --only "$CONFIGS" |
      jq -c --arg s "$shape" --arg l "$name" --argjson n "$count" \
        'select(.config != null and .tokens == 1) | . + {shape: $s, layer: $l, count: $n}' |
      tee -a "$out"
  done
done
jq -cs 'group_by(.shape)[] as $g | ["W4A16 g128", "W8A16 channel", "W8A8 channel"][] as $t |
  def block(c): [$g[] | select(.config == c) | .ms * 1000 * .count] | add;
  {metric: "sparse_block_speedup", shape: $g[0].shape, type: $t,
   dense_us: (block($t) | . * 10 | round / 10), sparse_us: (block($t + " 2:4") | . * 10 | round / 10),
   speedup: (block($t) / block($t + " 2:4") * 100 | round / 100)}' "$out" | tee "$out.blocks"
{
  echo "Decode (1 token), $THREADS threads, weights streaming from memory, median of $ROUNDS rounds;"
  echo "per layer: dense / 2:4 microseconds (speedup); block: the sum over q, k, v, o, gate, up, down."
  echo
  echo "| shape | type | $(layers tinyllama-1.1b | awk '{printf "%s | ", $1}')block |"
  echo "|---|---|--:|--:|--:|--:|--:|--:|"
  # Per-layer cells from the measurements, the block column from the lines above.
  jq -rs --slurpfile blocks "$out.blocks" 'group_by(.shape)[] as $g | $blocks[] |
    select(.shape == $g[0].shape) | .type as $t | .speedup as $x |
    def us($c; $l): [$g[] | select(.config == $c and .layer == $l)][0].ms * 1000;
    def cell(d; s): "\(d | round) / \(s | round) (\(d / s * 100 | round / 100)×)";
    "| \($g[0].shape) | \($t) | " +
    ([$g[] | select(.config == $t) | .layer] | map(cell(us($t; .); us($t + " 2:4"; .))) | join(" | ")) +
    " | **\($x)×** |"' "$out"
} | tee "$MD_OUT" >&2

[ "$MODEL_REPS" -gt 0 ] || exit 0
model=$DIR/tinyllama-1.1b-f16
[ -f "$model/config.json" ] ||
  "$BUILD/app/lcw-cli" synth --shape tinyllama-1.1b --dtype f16 --out "$model" --quiet >&2
: > "$out"
"$BUILD/bench/bench_runtime" "$model" --threads "$THREADS" --prefill "$PREFILL" --decode "$DECODE" \
  --reps "$MODEL_REPS" --recipe bench/recipes/int4-sym-g128.json \
  --recipe bench/recipes/2of4-int4-sym-g128.json --preset W8A16 \
  --recipe bench/recipes/2of4-int8-sym-channel.json | tee -a "$out"
# Speedups are medians of the per-repetition ratios: a dense and a 2:4 repetition run next to
# each other, so their ratio cancels the machine's drift that a ratio of medians keeps.
jq -cs 'def v(c; m): [.[] | select(.configuration == c and .metric == m)][0];
  def median: sort | if length % 2 == 1 then .[length / 2 | floor]
                     else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def paired(d; s; m): [v(d; m).runs, v(s; m).runs] | transpose | map(.[1] / .[0]) | median;
  [["int4 sym g128", "bench/recipes/int4-sym-g128.json", "bench/recipes/2of4-int4-sym-g128.json"],
   ["int8 per channel", "W8A16", "bench/recipes/2of4-int8-sym-channel.json"]][] as [$t, $d, $s] |
  {metric: "sparse_model_speedup", type: $t,
   decode_tps: [v($d; "decode_tokens_per_second").value, v($s; "decode_tokens_per_second").value],
   prefill_tps: [v($d; "prefill_tokens_per_second").value, v($s; "prefill_tokens_per_second").value],
   decode_speedup: (paired($d; $s; "decode_tokens_per_second") * 100 | round / 100),
   prefill_speedup: (paired($d; $s; "prefill_tokens_per_second") * 100 | round / 100)}' "$out" |
  tee -a "$out.speedups"
{
  echo
  echo "Whole model: synthetic TinyLlama-1.1B F16 compressed, $THREADS threads, pp$PREFILL / tg$DECODE,"
  echo "median of $MODEL_REPS interleaved repetitions in one process; × is the median of the"
  echo "per-repetition ratios (2:4 / dense):"
  echo
  echo "| type | dense decode t/s | 2:4 decode t/s | decode × | dense prefill t/s | 2:4 prefill t/s | prefill × |"
  echo "|---|--:|--:|--:|--:|--:|--:|"
  jq -r '"| \(.type) | \(.decode_tps[0] * 10 | round / 10) | \(.decode_tps[1] * 10 | round / 10) | **\(.decode_speedup)×** | \(.prefill_tps[0] | round) | \(.prefill_tps[1] | round) | \(.prefill_speedup)× |"' "$out.speedups"
} | tee -a "$MD_OUT" >&2
rm -f "$out.speedups"
