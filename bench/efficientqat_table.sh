#!/usr/bin/env bash
# EfficientQAT (Block-AP, optionally + E2E-QP) against RTN, GPTQ and OmniQuant (LWC) on the same
# int asym g64 grids at 3 and 2 bits: PPL and KLD against FP32, bits/weight of the quantised
# linears and of the whole model. Every calibrated configuration calibrates on CALIB (default:
# the held-out ../shared/data/wiki.test.raw, SAMPLES x SEQ_LEN = 32 x 256 tokens, random windows,
# seed 0); OmniQuant and EfficientQAT both run EPOCHS (default 10) epochs.
#   bench/efficientqat_table.sh [MODEL] [TEXT] [CTX]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-resources/models/stories260K}
TEXT=${2:-resources/data/tinystories_eval.txt}
CTX=${3:-256}
CALIB=${CALIB:-../shared/data/wiki.test.raw}
SAMPLES=${SAMPLES:-32}
SEQ_LEN=${SEQ_LEN:-256}
EPOCHS=${EPOCHS:-10}
source bench/lcw_cli.sh

CAL=(--calib "$CALIB" --samples "$SAMPLES" --seq-len "$SEQ_LEN")
grid() { echo "\"bits\": $1, \"symmetric\": false, \"granularity\": \"group\", \"group_size\": 64"; }
for B in 3 2; do
  add "RTN W${B} g64" --recipe "$(recipe rtn$B "\"weight\": {$(grid $B)}")"
  add "GPTQ W${B} g64" --recipe "$(recipe gptq$B "\"weight\": {\"method\": \"gptq\", $(grid $B)}")" "${CAL[@]}"
  add "OmniQuant LWC W${B} g64" --recipe "$(recipe omni$B "\"weight\": {\"method\": \"omniquant\", \"epochs\": $EPOCHS, $(grid $B)}")" "${CAL[@]}"
  add "EfficientQAT Block-AP W${B} g64 (W${B}-g64-EfficientQAT)" --recipe "$(recipe eqat$B "\"weight\": {\"method\": \"efficientqat\", \"epochs\": $EPOCHS, $(grid $B)}")" "${CAL[@]}"
  add "EfficientQAT Block-AP + E2E-QP (2 epochs) W${B} g64" --recipe "$(recipe eqate$B "\"weight\": {\"method\": \"efficientqat\", \"epochs\": $EPOCHS, \"e2e_epochs\": 2, $(grid $B)}")" "${CAL[@]}"
done
overlay_table "$CTX"
