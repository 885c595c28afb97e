#!/usr/bin/env bash
# Atom (W4A4 KV4 with 8-bit outlier channels and fine-grained groups) against the W4A4 rows of
# the rotation table (README, "Atom"): perplexity, KLD(FP32 ‖ config) and stored size from
# `lcw-cli eval` (ctx 256, llama.cpp chunks). The paper's sizes scaled to tiny models: COUNT
# outlier channels per linear (default 4), groups of GROUP channels (default 32), KV groups of
# HEAD channels (the head size: demo 8, BabyLlama 16). GPTQ calibrates on 128 × 256 tokens of
# CALIB (default: the evaluation text, in-sample, as bench/rotation_table.sh). One JSON line per
# configuration.
#   bench/atom_table.sh [MODEL] [TEXT]
#   HEAD=16 bench/atom_table.sh /work/shared/models/babyllama/tok105_model5000.bin   # BabyLlama
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-resources/models/stories260K}
TEXT=${2:-resources/data/tinystories_eval.txt}
CALIB=${CALIB:-$TEXT}
COUNT=${COUNT:-4}
GROUP=${GROUP:-32}
HEAD=${HEAD:-8}
source bench/lcw_cli.sh

W4G="\"weight\": {\"bits\": 4, \"symmetric\": false, \"granularity\": \"group\", \"group_size\": $GROUP"
A4G="\"activation\": {\"bits\": 4, \"mode\": \"dynamic_per_token\", \"group_size\": $GROUP}"
OUT="\"outliers\": {\"count\": $COUNT, \"bits\": 8}"
# Atom's own ranking of the outlier channels: Σ x² (its "hessian" metric) instead of abs-max
OUTS="\"outliers\": {\"count\": $COUNT, \"bits\": 8, \"select\": \"sum_sq\"}"
KV4="\"kv\": {\"k_bits\": 4, \"v_bits\": 4, \"group_size\": $HEAD}"
# The paper's run (efeslab/Atom scripts/run_atom_ppl.sh): symmetric weights clipped to 0.85 of
# each group's range, activations clipped to 0.9 of each token group's absmax
W4GP="\"weight\": {\"bits\": 4, \"symmetric\": true, \"granularity\": \"group\", \"group_size\": $GROUP, \"clip_ratio\": 0.85"
A4GP="\"activation\": {\"bits\": 4, \"mode\": \"dynamic_per_token\", \"group_size\": $GROUP, \"clip\": 0.9}"


eval_lines --recipe "$(recipe w4a4-groups "$W4G}, $A4G")" \
  --recipe "$(recipe w4a4-atom-rtn "$W4G}, $A4G, $OUT")" \
  --recipe "$(recipe w4a4-atom-gptq "$W4G, \"method\": \"gptq\"}, $A4G, $OUT")" \
  --recipe "$(recipe w4a4kv4-atom-rtn "$W4G}, $A4G, $OUT, $KV4")" \
  --recipe "$(recipe w4a4kv4-atom-gptq "$W4G, \"method\": \"gptq\"}, $A4G, $OUT, $KV4")" \
  --recipe "$(recipe w4a4-atom-gptq-sumsq "$W4G, \"method\": \"gptq\"}, $A4G, $OUTS")" \
  --recipe "$(recipe w4a4kv4-atom-gptq-sumsq "$W4G, \"method\": \"gptq\"}, $A4G, $OUTS, $KV4")" \
  --recipe "$(recipe w4a4-atom-gptq-sumsq-clip "$W4GP, \"method\": \"gptq\"}, $A4GP, $OUTS")" \
  --recipe "$(recipe w4a4kv4-atom-gptq-sumsq-clip "$W4GP, \"method\": \"gptq\"}, $A4GP, $OUTS, $KV4")" \
  --calib "$CALIB" --samples 128 --seq-len 256
