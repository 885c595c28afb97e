#!/usr/bin/env bash
# Perplexity and bits/weight of quantisation presets on a model (default: the demo model on its
# bundled text, ctx 256): weight-only, weights + activations (W?A?) and KV cache (KV?). Prints one
# JSON line per configuration and a Markdown table at the end.
# GPTQ / AWQ rows calibrate on CALIB (default: the evaluation text itself, SAMPLES x SEQ_LEN =
# 128 x 256 tokens) and, when ../shared/data/wiki.test.raw exists, also on that held-out text.
#   bench/quant_table.sh [MODEL] [TEXT] [CTX]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-resources/models/stories260K}
TEXT=${2:-resources/data/tinystories_eval.txt}
CTX=${3:-256}
CALIB=${CALIB:-$TEXT}
SAMPLES=${SAMPLES:-128}
SEQ_LEN=${SEQ_LEN:-256}
WIKI=${WIKI:-../shared/data/wiki.test.raw}
source bench/lcw_cli.sh

# GGUF block schemes need rows that are a multiple of 32; rows that are not (the demo model's
# 172-wide mlp.down) get the nearest RTN equivalent, and the table says so.
gguf_recipe() { # scheme fallback_bits
  cat > "$TMP/$1.json" <<JSON
{"lcw_recipe": 1, "name": "$1 (mlp.down: int$2 g32 sym RTN where rows are not multiples of 32)",
 "rules": [{"targets": ["*"], "ignore": ["*.mlp.down"], "weight": {"method": "$1", "bits": $2}},
           {"targets": ["*.mlp.down"], "weight": {"bits": $2, "symmetric": true, "granularity": "group", "group_size": 32}}]}
JSON
  echo "$TMP/$1.json"
}

rows=()
run() { # label, then the recipe options
  local label=$1; shift
  local ppl info
  ppl=$("$CLI" perplexity "$MODEL" --text "$TEXT" --ctx "$CTX" --quiet --json "$@" |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.4f %.4f %d %d" % (d["ppl"], d["ppl_se"], d["kv_cache_bytes"], d["kv_cache_bytes_f32"]))')
  if [ $# -gt 0 ]; then
    info=$("$CLI" compress "$MODEL" "$@" --quiet --json | python3 -c '
import json, sys
d = json.load(sys.stdin); t = d["totals"]
a = d["activations"]; kv = d["kv"]
act = "f32" if not a else "int%d %s" % (a[0]["bits"], "per-token" if a[0]["mode"] == "dynamic_per_token" else "static")
kvb = "f32" if not kv else "K %.2f / V %.2f" % (sum(k["k_bits_per_value"] for k in kv) / len(kv), sum(k["v_bits_per_value"] for k in kv) / len(kv))
wq = "%.2f" % t["quantized_bits_per_weight"] if t["quantized_params"] else "32.00"
print("%s|%.2f|%s|%s" % (wq, t["model_bits_per_weight"], act, kvb))')
  else
    info="32.00|32.00|f32|f32"
  fi
  IFS='|' read -r wq wm act kvb <<< "$info"
  set -- $ppl
  echo "{\"config\":\"$label\",\"ppl\":$1,\"ppl_se\":$2,\"linear_bits_per_weight\":$wq,\"model_bits_per_weight\":$wm,\"activations\":\"$act\",\"kv_bits_per_value\":\"$kvb\",\"kv_cache_bytes\":$3,\"kv_cache_bytes_f32\":$4,\"ctx\":$CTX}"
  rows+=("| $label | $wq | $wm | $act | $kvb | $3 | $1 ± $2 |")
}

run "FP32"
for p in W8A16 FP8-E4M3 W4A16-g64 W4A16-g32 NF4-g64 W3A16-g64 W2A16-g32; do
  run "$p" --preset "$p"
done
run "q8_0*" --recipe "$(gguf_recipe q8_0 8)"
run "q4_0*" --recipe "$(gguf_recipe q4_0 4)"
for p in W4A16-g64 W4A16-g32 W3A16-g64; do
  for m in GPTQ AWQ; do
    run "$p $m (calib: eval text)" --preset "$p-$m" --calib "$CALIB" --samples "$SAMPLES" --seq-len "$SEQ_LEN"
    if [ -f "$WIKI" ]; then
      run "$p $m (calib: wiki.test.raw)" --preset "$p-$m" --calib "$WIKI" --samples "$SAMPLES" --seq-len "$SEQ_LEN"
    fi
  done
done
# weights and activations (RTN, no SmoothQuant), then the KV cache alone
for p in W8A8 W8A8-static W6A6 W4A8 W4A4 KV8 KV4 KV2 KV2-KIVI; do
  run "$p" --preset "$p"
done
# the same with SmoothQuant (alpha 0.5, calibrated on CALIB)
for p in W8A8-SQ W6A6-SQ W4A8-SQ W4A4-SQ; do
  run "$p" --preset "$p" --calib "$CALIB" --samples "$SAMPLES" --seq-len "$SEQ_LEN"
done

# OmniQuant (learned weight clipping, recipe defaults: 20 epochs, lr 5e-3) calibrated on 16×256
# tokens of CALIB; compare with the RTN rows of the same bits and groups above.
omni_recipe() { # name bits group
  cat > "$TMP/$1.json" <<JSON
{"lcw_recipe": 1, "name": "$1", "rules": [{"targets": ["*"], "weight": {"bits": $2,
 "symmetric": false, "granularity": "group", "group_size": $3, "method": "omniquant"}}]}
JSON
  echo "$TMP/$1.json"
}
OMNI_CAL=(--calib "$CALIB" --samples 16 --seq-len 256)
run "W4A16-g64 OmniQuant" --recipe "$(omni_recipe W4A16-g64-OmniQuant 4 64)" "${OMNI_CAL[@]}"
run "W3A16-g64 OmniQuant" --recipe "$(omni_recipe W3A16-g64-OmniQuant 3 64)" "${OMNI_CAL[@]}"
run "W2A16-g32 OmniQuant" --recipe "$(omni_recipe W2A16-g32-OmniQuant 2 32)" "${OMNI_CAL[@]}"
# W4A4 (per-channel int4 weights, int4 per-token activations): LWC alone and LWC + LET
omni_wa_recipe() { # name let [let_shift]
  cat > "$TMP/$1.json" <<JSON
{"lcw_recipe": 1, "name": "$1", "rules": [{"targets": ["*"], "weight": {"bits": 4,
 "symmetric": false, "granularity": "channel", "method": "omniquant", "let": $2,
 "let_shift": ${3:-true}},
 "activation": {"bits": 4, "mode": "dynamic_per_token"}}]}
JSON
  echo "$TMP/$1.json"
}
run "W4A4 OmniQuant LWC" --recipe "$(omni_wa_recipe W4A4-OmniQuant-LWC false)" "${OMNI_CAL[@]}"
run "W4A4 OmniQuant LWC+LET (scales)" --recipe "$(omni_wa_recipe W4A4-OmniQuant-LET-scales true false)" "${OMNI_CAL[@]}"
run "W4A4 OmniQuant LWC+LET" --recipe "$(omni_wa_recipe W4A4-OmniQuant-LET true)" "${OMNI_CAL[@]}"

echo
echo "| config | bits/weight (quantised linears) | bits/weight (whole model) | activations | KV cache bits/value | KV cache bytes (ctx $CTX) | PPL (ctx $CTX) |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
