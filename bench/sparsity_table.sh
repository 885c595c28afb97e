#!/usr/bin/env bash
# Perplexity, parameters and bits/weight of pruning, low-rank and structured-pruning recipes on a
# model (default: the demo model on its bundled text, ctx 256). Each configuration is compressed
# once (lcw-cli compress --save), then evaluated from the saved overlay (perplexity --overlay).
# Methods that need calibration (wanda, sparsegpt, asvd, svd-llm) calibrate on CALIB (default:
# the evaluation text itself), SAMPLES x SEQ_LEN tokens. Prints one JSON line per configuration
# and a Markdown table at the end.
#   bench/sparsity_table.sh [MODEL] [TEXT] [CTX]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-resources/models/stories260K}
TEXT=${2:-resources/data/tinystories_eval.txt}
CTX=${3:-256}
CALIB=${CALIB:-$TEXT}
SAMPLES=${SAMPLES:-32}
SEQ_LEN=${SEQ_LEN:-256}
source bench/lcw_cli.sh

rows=()
run() { # label, recipe file ("" = the base model)
  local label=$1 r=$2 info ppl
  if [ -n "$r" ]; then
    info=$("$CLI" compress "$MODEL" --recipe "$r" --calib "$CALIB" --samples "$SAMPLES" \
             --seq-len "$SEQ_LEN" --save "$TMP/ov" --quiet --json | python3 -c '
import json, math, sys
d = json.load(sys.stdin); t = d["totals"]; L = d["layers"]
base_lin = sum(l.get("base_params", 0) for l in L)
bits_lin = sum(l["storage_bits"] for l in L)
errs = [l["output_rel_error"] for l in L if l.get("output_rel_error") is not None]
oe = "%.4f" % (sum(errs) / len(errs)) if errs else "-"
print("%d|%.3f|%.3f|%s" % (t["model_params"], bits_lin / base_lin, t["bits_per_base_weight"], oe))')
    ppl=$("$CLI" perplexity "$MODEL" --text "$TEXT" --ctx "$CTX" --overlay "$TMP/ov" --quiet --json |
          python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.4f %.4f" % (d["ppl"], d["ppl_se"]))')
    rm -rf "$TMP/ov"
  else
    info=$("$CLI" compress "$MODEL" --recipe "$(recipe fp32 '"weight": null')" --quiet --json |
           python3 -c '
import json, sys
t = json.load(sys.stdin)["totals"]
print("%d|32.000|%.3f|-" % (t["model_params"], t["bits_per_base_weight"]))')
    ppl=$("$CLI" perplexity "$MODEL" --text "$TEXT" --ctx "$CTX" --quiet --json |
          python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.4f %.4f" % (d["ppl"], d["ppl_se"]))')
  fi
  IFS='|' read -r params blin bmodel oerr <<< "$info"
  set -- $ppl
  echo "{\"config\":\"$label\",\"ppl\":$1,\"ppl_se\":$2,\"params\":$params,\"linear_bits_per_weight\":$blin,\"model_bits_per_base_weight\":$bmodel,\"mean_output_rel_error\":\"$oerr\",\"ctx\":$CTX}"
  rows+=("| $label | $params | $blin | $bmodel | $oerr | $1 ± $2 |")
}

run "FP32 (base)" ""
for m in magnitude wanda sparsegpt; do
  run "50% unstructured $m" "$(recipe "s50-$m" "\"sparsity\": {\"method\": \"$m\", \"ratio\": 0.5}")"
done
for m in magnitude wanda sparsegpt; do
  run "2:4 $m" "$(recipe "nm-$m" "\"sparsity\": {\"method\": \"$m\", \"pattern\": \"2:4\"}")"
done
for m in magnitude wanda sparsegpt; do
  run "2:4 $m + W4 g32" "$(recipe "nmw4-$m" "\"sparsity\": {\"method\": \"$m\", \"pattern\": \"2:4\"}, \"weight\": {\"bits\": 4, \"symmetric\": false, \"group_size\": 32}")"
done
for m in svd asvd svd-llm; do
  for p in 0.8 0.5; do
    run "$m, ${p/0./}0% parameters" "$(recipe "lr-$m-$p" "\"lowrank\": {\"method\": \"$m\", \"param_ratio\": $p}")"
  done
done
run "structured: 25% MLP channels (magnitude)" "$(recipe st-mag '"structured": {"mlp_ratio": 0.25}')"
run "structured: 25% MLP channels (loss proxy)" "$(recipe st-loss '"structured": {"mlp_ratio": 0.25, "score": "loss"}')"

echo
echo "Calibration: $CALIB, $SAMPLES x $SEQ_LEN tokens. Bits/weight over the linears are stored bits (values, scales, masks/indices, factors) per original linear weight."
echo
echo "| config | params | bits/weight (linears) | bits per base weight (model) | mean output rel. error | PPL (ctx $CTX) |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"

# Per layer at 50%: output error on the calibration inputs of magnitude pruning (one threshold
# per matrix, and per output row as Wanda compares), Wanda and SparseGPT.
echo
echo "Per-layer output relative error at 50% sparsity (calibration inputs):"
for m in magnitude:unstructured magnitude:per_row wanda:unstructured sparsegpt:unstructured; do
  "$CLI" compress "$MODEL" --recipe "$(recipe "pl-${m%%:*}-${m##*:}" "\"sparsity\": {\"method\": \"${m%%:*}\", \"ratio\": 0.5, \"pattern\": \"${m##*:}\"}")" \
      --calib "$CALIB" --samples "$SAMPLES" --seq-len "$SEQ_LEN" --quiet --json > "$TMP/pl-$m.json"
done
python3 - "$TMP" <<'PY'
import json, sys, os
tmp = sys.argv[1]
keys = ["magnitude:unstructured", "magnitude:per_row", "wanda:unstructured", "sparsegpt:unstructured"]
data = {k: {l["name"]: l["output_rel_error"] for l in json.load(open(os.path.join(tmp, "pl-%s.json" % k)))["layers"]} for k in keys}
print("| layer | magnitude | magnitude per row | wanda | sparsegpt |")
print("|---|---|---|---|---|")
wins = {"wanda<=mag": 0, "wanda<=mag_row": 0, "sgpt<=mag": 0, "sgpt<=wanda": 0}
for name in data[keys[0]]:
    m, mr, w, s = (data[k][name] for k in keys)
    wins["wanda<=mag"] += w <= m; wins["wanda<=mag_row"] += w <= mr
    wins["sgpt<=mag"] += s <= m; wins["sgpt<=wanda"] += s <= w
    print("| %s | %.4f | %.4f | %.4f | %.4f |" % (name, m, mr, w, s))
n = len(data[keys[0]])
print("\n" + ", ".join("%s on %d/%d layers" % (k, v, n) for k, v in wins.items()))
PY
