#!/usr/bin/env bash
# Rotations (QuaRot) against SmoothQuant and OmniQuant LWC+LET at W4A4 (README, "Rotations"):
# perplexity, KLD(FP32 ‖ config) and stored size from `lcw-cli eval` (ctx 256, llama.cpp chunks).
# GPTQ / SmoothQuant calibrate on 128 × 256 tokens, OmniQuant on 16 × 256 tokens of CALIB
# (default: the evaluation text, in-sample, as bench/quant_table.sh); SpinQuant learns its rotation
# on the same 128 × 256 tokens. One JSON line per configuration.
#   bench/rotation_table.sh [MODEL] [TEXT]
#   bench/rotation_table.sh /work/shared/models/babyllama/tok105_model5000.bin   # BabyLlama
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-resources/models/stories260K}
TEXT=${2:-resources/data/tinystories_eval.txt}
CALIB=${CALIB:-$TEXT}
source bench/lcw_cli.sh

rot() { # stem, rotation JSON, rule members
  echo "{\"lcw_recipe\": 1, \"name\": \"$1\", \"rotation\": $2, \"rules\": [{\"targets\": [\"*\"], $3}]}" > "$TMP/$1.json"
  echo "$TMP/$1.json"
}
W4='"weight": {"bits": 4, "symmetric": false, "granularity": "channel"'
A4='"activation": {"bits": 4, "mode": "dynamic_per_token"}'
KV4='"kv": {"k_bits": 4, "v_bits": 4}'
ROT='{"method": "hadamard", "seed": 0}'
SPIN='{"method": "spinquant", "seed": 0}'


eval_lines --preset W4A4 --preset KV4 --preset W4A4-KV4-QuaRot \
  --recipe "$(rot rot-w4a4 "$ROT" "$W4}, $A4")" --recipe "$(rot rot-kv4 "$ROT" "$KV4")"
eval_lines --preset W4A4-SQ --preset W4A4-KV4-QuaRot-GPTQ \
  --recipe "$(rot rot-w4a4-gptq "$ROT" "$W4, \"method\": \"gptq\"}, $A4")" \
  --calib "$CALIB" --samples 128 --seq-len 256
eval_lines --recipe "$(recipe w4a4-omniquant-let "$W4, \"method\": \"omniquant\", \"let\": true}, $A4")" \
  --calib "$CALIB" --samples 16 --seq-len 256
# SpinQuant: the rotation learned (100 Cayley steps of 8 windows) on the same 128 × 256 tokens.
eval_lines --preset W4A4-KV4-SpinQuant --preset W4A4-KV4-SpinQuant-GPTQ \
  --recipe "$(rot spin-w4a4 "$SPIN" "$W4}, $A4")" \
  --recipe "$(rot spin-w4a4-gptq "$SPIN" "$W4, \"method\": \"gptq\"}, $A4")" \
  --calib "$CALIB" --samples 128 --seq-len 256
