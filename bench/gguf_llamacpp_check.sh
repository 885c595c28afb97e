#!/usr/bin/env bash
# llama.cpp loads and runs what `lcw-cli export --format gguf` writes: for each shared model
# family (and the stories / gguf-k Llama models), export it in each TYPE, then run llama.cpp
# (node-llama-cpp's prebuilt CPU binary) on the file: its tokenization of a sample text against
# lcw's, and its logits on the first tokens against lcw's logits on the same file. One JSON line
# per file (bench/llamacpp/gguf_check.mjs plus "family" and "type"); llama.cpp's matmuls convert
# activations to f16 / q8 and its KV cache is f16, so logits agree to ~1e-2, not exactly.
#   bench/gguf_llamacpp_check.sh [TYPE...]      (default: f32 f16 q8_0)
# Environment: BUILD (default build), LCW_BENCH_DIR (default /tmp/lcw-bench), SHARED (default
# ../shared).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
DIR=${LCW_BENCH_DIR:-/tmp/lcw-bench}
SHARED=${SHARED:-../shared}
TYPES=("$@")
[ ${#TYPES[@]} -gt 0 ] || TYPES=(f32 f16 q8_0)
CLI=$BUILD/app/lcw-cli
[ -x "$CLI" ] || cmake --build "$BUILD" --target lcw-cli >&2
NODE_DIR=$DIR/node
. bench/llamacpp/node_dir.sh
node_llamacpp_setup bench/llamacpp/gguf_check.mjs
OUT=$DIR/gguf-check
mkdir -p "$OUT"
TEXT="Once upon a time, there was a little girl named Lily. She loved to play outside."

check() { # FAMILY SOURCE
  local fam=$1 src=$2 t gguf ids textIds
  textIds=$("$CLI" tokenize "$src" --text "$TEXT" --no-bos --json | jq -r '.ids | join(",")')
  # the first 16 ids the model sees (BOS first when the tokenizer adds one)
  ids=$("$CLI" tokenize "$src" --text "$TEXT" --json | jq -r '.ids[:16] | join(",")')
  for t in "${TYPES[@]}"; do
    gguf=$OUT/$fam-$t.gguf
    if ! "$CLI" export "$src" --format gguf --type "$t" --out "$gguf" --quiet > /dev/null; then
      jq -nc --arg f "$fam" --arg t "$t" '{family: $f, type: $t, error: "export failed"}'
      continue
    fi
    "$CLI" logits "$gguf" --ids "$ids" --out "$OUT/$fam-$t.npy" > /dev/null
    (cd "$NODE_DIR" && node gguf_check.mjs "$gguf" --text "$TEXT" --lcw-text-ids "$textIds" \
        --ids "$ids" --lcw-logits "$OUT/$fam-$t.npy") |
      jq -c --arg f "$fam" --arg t "$t" '{family: $f, type: $t} + .'
  done
}

for fam in gemma gpt2 llama2_sp_f32 mamba mixtral_moe phi3 qwen2_sharded; do
  check "$fam" "$SHARED/models/tiny-random/$fam/model"
done
check stories260K "$SHARED/models/stories260K/hf"
check gguf-k "$SHARED/models/gguf-k/hf"
