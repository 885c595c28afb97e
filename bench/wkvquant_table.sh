#!/usr/bin/env bash
# WKVQuant (README, "WKVQuant"): KV4 per token (RTN), with past-only quantisation, with the
# calibrated smoothing (cross-block reconstruction, k = 1), both, both with the smoothing learned
# by 20 gradient steps after the search, KIVI's KV4 for reference, and the weight + KV recipes W4
# g64 GPTQ + KV4 against WKVQuant searched only and W4-KV4-WKVQuant (searched + learned), and
# W4 g64 RTN alone, + KV4, + KV4 with the smoothing learned (40 steps), and W4-KV4-WKVQuant-LWC
# (the weights' clipping learned jointly with the smoothing, 40 steps): perplexity, KLD(FP32 ‖ config)
# and stored size from `lcw-cli eval` (ctx 256, llama.cpp chunks). GPTQ calibrates on 128 × 256
# tokens of CALIB (default: the evaluation text, in-sample, as bench/quant_table.sh); WKVQuant's
# search uses the first 8 of those windows. One JSON line per configuration.
#   bench/wkvquant_table.sh [MODEL] [TEXT]
#   bench/wkvquant_table.sh /work/shared/models/babyllama/tok105_model5000.bin   # BabyLlama
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-resources/models/stories260K}
TEXT=${2:-resources/data/tinystories_eval.txt}
CALIB=${CALIB:-$TEXT}
source bench/lcw_cli.sh

KV='"k_bits": 4, "v_bits": 4'
W4='"weight": {"bits": 4, "symmetric": false, "granularity": "group", "group_size": 64, "method": "gptq"}'
W4R='"weight": {"bits": 4, "symmetric": false, "granularity": "group", "group_size": 64, "method": "rtn"}'
LEARN='"past_only": true, "smooth": true, "crr_steps": 40, "crr_lr": 0.01'

eval_lines \
  --preset KV4 \
  --recipe "$(recipe kv4-poq "\"kv\": {$KV, \"past_only\": true}")" \
  --recipe "$(recipe kv4-smooth "\"kv\": {$KV, \"smooth\": true}")" \
  --recipe "$(recipe kv4-wkvquant "\"kv\": {$KV, \"past_only\": true, \"smooth\": true}")" \
  --recipe "$(recipe kv4-wkvquant-learned "\"kv\": {$KV, \"past_only\": true, \"smooth\": true, \"crr_steps\": 20, \"crr_lr\": 0.01}")" \
  --recipe "$(recipe kv4-kivi "\"kv\": {$KV, \"k_granularity\": \"channel\", \"group_size\": 32}")" \
  --recipe "$(recipe w4-gptq "$W4")" \
  --recipe "$(recipe w4-gptq-kv4 "$W4, \"kv\": {$KV}")" \
  --recipe "$(recipe w4-gptq-kv4-wkvquant-search "$W4, \"kv\": {$KV, \"past_only\": true, \"smooth\": true}")" \
  --preset W4-KV4-WKVQuant \
  --recipe "$(recipe w4-rtn "$W4R")" \
  --recipe "$(recipe w4-rtn-kv4 "$W4R, \"kv\": {$KV}")" \
  --recipe "$(recipe w4-rtn-kv4-wkvquant-learned "$W4R, \"kv\": {$KV, $LEARN}")" \
  --preset W4-KV4-WKVQuant-LWC \
  --calib "$CALIB" --samples 128 --seq-len 256
