#!/usr/bin/env bash
# Reference-faithful defaults against lcw's own variants (docs/methods.md), side by side:
# perplexity of each method with its default (the authors' published procedure) and with the
# named lcw variant, on a model and text (default: the demo model on its bundled text, ctx 256).
# Calibration: SAMPLES x SEQ_LEN tokens of CALIB (default: the evaluation text), sampled as each
# row says. Prints one JSON line per configuration and a Markdown table at the end.
#   bench/methods_table.sh [MODEL] [TEXT] [CTX]
#   bench/methods_table.sh /work/shared/models/babyllama/tok105_model5000.bin   # BabyLlama
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-resources/models/stories260K}
TEXT=${2:-resources/data/tinystories_eval.txt}
CTX=${3:-256}
CALIB=${CALIB:-$TEXT}
SAMPLES=${SAMPLES:-128}
SEQ_LEN=${SEQ_LEN:-256}
source bench/lcw_cli.sh

rows=()
run() { # method, variant label, recipe body, extra compress flags...
  local method=$1 label=$2 body=$3; shift 3
  local r; r=$(recipe "r$RANDOM" "$body")
  "$CLI" compress "$MODEL" --recipe "$r" --calib "$CALIB" --samples "$SAMPLES" \
    --seq-len "$SEQ_LEN" --save "$TMP/ov" --quiet "$@" > /dev/null
  local ppl
  ppl=$("$CLI" perplexity "$MODEL" --text "$TEXT" --ctx "$CTX" --overlay "$TMP/ov" --quiet --json |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.4f %.4f" % (d["ppl"], d["ppl_se"]))')
  rm -rf "$TMP/ov"
  set -- $ppl
  echo "{\"method\":\"$method\",\"variant\":\"$label\",\"ppl\":$1,\"ppl_se\":$2,\"ctx\":$CTX,\"samples\":$SAMPLES,\"seq_len\":$SEQ_LEN}"
  rows+=("| $method | $label | $1 ± $2 |")
}

G32='"bits": 4, "symmetric": false, "granularity": "group", "group_size": 32'
G64='"bits": 4, "symmetric": false, "granularity": "group", "group_size": 64'
LCW_AWQ='"awq": {"objective": "joint-linears", "grid_rule": "inclusive", "clip": "range", "stats": "compressed"}'
SQ='"weight": {"bits": 6, "symmetric": false, "granularity": "channel"}, "activation": {"bits": 6}'

run "GPTQ W4 g32 act-order" "reference (default)" "\"weight\": {$G32, \"method\": \"gptq\", \"act_order\": true}"
run "GPTQ W4 g32 act-order" "static_groups" "\"weight\": {$G32, \"method\": \"gptq\", \"act_order\": true, \"static_groups\": true}"
run "GPTQ W4 g32 act-order" "lcw earlier (groups updated)" "\"weight\": {$G32, \"method\": \"gptq\", \"act_order\": true, \"groups\": \"updated\"}"
run "GPTQ W4 g32 sym" "reference (default)" "\"weight\": {\"bits\": 4, \"granularity\": \"group\", \"group_size\": 32, \"method\": \"gptq\"}"
run "GPTQ W4 g32 sym" "lcw earlier (updated, sym_grid rtn)" "\"weight\": {\"bits\": 4, \"granularity\": \"group\", \"group_size\": 32, \"method\": \"gptq\", \"groups\": \"updated\", \"sym_grid\": \"rtn\"}"
run "GPTQ W4 g32" "reference (default)" "\"weight\": {$G32, \"method\": \"gptq\"}"
run "GPTQ W4 g32" "true_sequential" "\"weight\": {$G32, \"method\": \"gptq\", \"true_sequential\": true}"
run "GPTQ W4 g32" "consecutive calibration windows" "\"weight\": {$G32, \"method\": \"gptq\"}" --calib-sampling consecutive
run "AWQ W4 g64" "reference (default)" "\"weight\": {$G64, \"method\": \"awq\"}"
run "AWQ W4 g64" "lcw earlier (joint-linears, inclusive, range, compressed)" "\"weight\": {$G64, \"method\": \"awq\", $LCW_AWQ}"
run "SparseGPT 50 %" "reference count (default)" '"sparsity": {"method": "sparsegpt", "ratio": 0.5}'
run "SparseGPT 50 %" "exact count" '"sparsity": {"method": "sparsegpt", "ratio": 0.5, "count": "exact"}'
run "SmoothQuant α 0.5 W6A6" "reference (default)" "$SQ, \"smoothquant\": {\"alpha\": 0.5}"
run "SmoothQuant α 0.5 W6A6" "lcw earlier (ratio rule, compressed stats)" "$SQ, \"smoothquant\": {\"alpha\": 0.5, \"rule\": \"ratio\", \"stats\": \"compressed\"}"

echo
echo "| method | variant | PPL |"
echo "|---|---|---|"
printf '%s\n' "${rows[@]}"
