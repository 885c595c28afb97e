#!/usr/bin/env bash
# AffineQuant against OmniQuant (README, "AffineQuant"): perplexity, KLD(FP32 ‖ config) and stored
# size from `lcw-cli eval` (ctx 256, llama.cpp chunks). Both calibrate on 16 × 256 tokens of CALIB
# (default: the evaluation text, in-sample, as bench/rotation_table.sh), 20 epochs. W4A4: int4
# asym per-channel weights, int4 dynamic per-token activations; W3A16: int3 asym groups of 64.
# One JSON line per configuration.
#   bench/affinequant_table.sh [MODEL] [TEXT]
#   bench/affinequant_table.sh /work/shared/models/babyllama/tok105_model5000.bin   # BabyLlama
#   W3=0 bench/affinequant_table.sh ...   # the W4A4 rows only
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-resources/models/stories260K}
TEXT=${2:-resources/data/tinystories_eval.txt}
CALIB=${CALIB:-$TEXT}
source bench/lcw_cli.sh

W4='"weight": {"bits": 4, "symmetric": false, "granularity": "channel", "method": "omniquant"'
A4='"activation": {"bits": 4, "mode": "dynamic_per_token"}'
W3='"weight": {"bits": 3, "symmetric": false, "granularity": "group", "group_size": 64, "method": "omniquant"'


eval_lines --recipe "$(recipe w4a4-omniquant-let "$W4}, $A4")" --preset W4A4-AffineQuant \
  --recipe "$(recipe w4a4-affine-full "$W4, \"affine\": {\"mask\": \"full\"}}, $A4")" \
  --recipe "$(recipe w4a4-affine-diagonal "$W4, \"affine\": {\"mask\": \"diagonal\"}}, $A4")" \
  --calib "$CALIB" --samples 16 --seq-len 256
if [ "${W3:-1}" != 0 ]; then
  eval_lines --recipe "$(recipe w3-omniquant "$W3}")" --preset W3A16-g64-AffineQuant \
    --recipe "$(recipe w3-affine-diagonal "$W3, \"affine\": {\"mask\": \"diagonal\"}}")" \
    --calib "$CALIB" --samples 16 --seq-len 256
fi
