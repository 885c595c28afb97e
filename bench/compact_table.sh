#!/usr/bin/env bash
# SqueezeLLM, DGQ and SliM-LLM (the compact formats) against RTN / GPTQ at equal stored bits per
# weight on a llama model: PPL and KLD against FP32, bits/weight of the quantised linears and of
# the whole model. Every calibrated configuration calibrates on CALIB (default: the held-out
# ../shared/data/wiki.test.raw, SAMPLES x SEQ_LEN = 128 x 256 tokens, random windows, seed 0).
#   bench/compact_table.sh [MODEL] [TEXT] [CTX]
# The 3-bit baselines use 4 groups per row (group size = row / 4): their f16 scale and zero per
# group cost exactly what SqueezeLLM's 8-entry f16 code book per row costs, so "SqueezeLLM 3-bit
# 0 %" and "int3 asym, 4 groups per row" store the same number of bits.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-resources/models/stories260K}
TEXT=${2:-resources/data/tinystories_eval.txt}
CTX=${3:-256}
CALIB=${CALIB:-../shared/data/wiki.test.raw}
SAMPLES=${SAMPLES:-128}
SEQ_LEN=${SEQ_LEN:-256}
source bench/lcw_cli.sh

# Row lengths of the model's linears: attention / gate / up read the model width, down the MLP's.
read -r DIM HID < <("$CLI" info "$MODEL" --json | python3 -c '
import json, sys; d = json.load(sys.stdin); print(d["dim"], d["hidden_dim"])')
quarter() { # method bits: int asym, 4 groups per row in every linear
  cat > "$TMP/$1-$2.json" <<JSON
{"lcw_recipe": 1, "name": "$1 int$2 asym, 4 groups per row",
 "rules": [{"targets": ["*"], "ignore": ["*.mlp.down"],
            "weight": {"method": "$1", "bits": $2, "symmetric": false, "group_size": $((DIM / 4))}},
           {"targets": ["*.mlp.down"],
            "weight": {"method": "$1", "bits": $2, "symmetric": false, "group_size": $((HID / 4))}}]}
JSON
  echo "$TMP/$1-$2.json"
}
CAL=(--calib "$CALIB" --samples "$SAMPLES" --seq-len "$SEQ_LEN")
add "RTN int3 asym, 4 groups/row" --recipe "$(quarter rtn 3)"
add "GPTQ int3 asym, 4 groups/row" --recipe "$(quarter gptq 3)" "${CAL[@]}"
add "SqueezeLLM 3-bit, 0 % sparse" --recipe "$(recipe sq0 '"weight": {"method": "squeezellm", "bits": 3}')" "${CAL[@]}"
add "SqueezeLLM 3-bit, 0.45 % sparse (W3-SqueezeLLM)" --preset W3-SqueezeLLM "${CAL[@]}"
add "SqueezeLLM 3-bit, 0 % sparse, Fisher" --recipe "$(recipe sqf0 '"weight": {"method": "squeezellm", "bits": 3, "sensitivity": "fisher"}')" "${CAL[@]}"
add "SqueezeLLM 3-bit, 0.45 % sparse, Fisher" --recipe "$(recipe sqf '"weight": {"method": "squeezellm", "bits": 3, "outliers_pct": 0.45, "sensitivity": "fisher"}')" "${CAL[@]}"
add "RTN int3 asym per channel" --recipe "$(recipe rtn3c '"weight": {"bits": 3, "symmetric": false, "granularity": "channel"}')"
add "GPTQ int3 asym per channel" --recipe "$(recipe gptq3c '"weight": {"method": "gptq", "bits": 3, "symmetric": false, "granularity": "channel"}')" "${CAL[@]}"
add "RTN W3A16-g64" --preset W3A16-g64
add "GPTQ W3A16-g64" --preset W3A16-g64-GPTQ "${CAL[@]}"
add "SliM 2.5-bit avg, g32, GPTQ + SQC (W2.5-SliM)" --preset W2.5-SliM "${CAL[@]}"
add "SliM 2.5-bit avg, g32, GPTQ, no SQC" --recipe "$(recipe slim25n '"weight": {"method": "slim", "avg_bits": 2.5, "group_size": 32, "sqc": false}')" "${CAL[@]}"
add "SliM 2.5-bit avg, g32, RTN groups" --recipe "$(recipe slim25r '"weight": {"method": "slim", "avg_bits": 2.5, "group_size": 32, "gptq": false}')" "${CAL[@]}"
add "SliM 3-bit avg, g64, GPTQ + SQC" --recipe "$(recipe slim3 '"weight": {"method": "slim", "avg_bits": 3, "group_size": 64}')" "${CAL[@]}"
add "SliM 3-bit avg, g64, GPTQ, no SQC" --recipe "$(recipe slim3n '"weight": {"method": "slim", "avg_bits": 3, "group_size": 64, "sqc": false}')" "${CAL[@]}"
add "SliM 3-bit avg, g64, RTN groups" --recipe "$(recipe slim3r '"weight": {"method": "slim", "avg_bits": 3, "group_size": 64, "gptq": false}')" "${CAL[@]}"
add "RTN W2A16-g32" --preset W2A16-g32
add "GPTQ W2A16-g32" --recipe "$(recipe gptq2 '"weight": {"method": "gptq", "bits": 2, "symmetric": false, "granularity": "group", "group_size": 32}')" "${CAL[@]}"
add "RTN W4A16-g32" --preset W4A16-g32
add "RTN W4A8 (per channel)" --preset W4A8
add "DGQ int4 g32 + A8 (W4A8-DGQ)" --preset W4A8-DGQ
add "DGQ int4 g32 + A8, percentile smoothing" --recipe "$(recipe dgqs '"weight": {"method": "dgq", "bits": 4, "symmetric": false, "granularity": "group", "group_size": 32}, "activation": {"bits": 8, "mode": "dynamic_per_token"}, "smoothquant": {"rule": "percentile"}')" "${CAL[@]}"
overlay_table "$CTX"
