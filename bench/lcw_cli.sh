# Sourced by the bench scripts that drive lcw-cli (after they cd to the repository root): sets
# CLI (building lcw-cli into $BUILD, default build/, when it is missing) and TMP, a temporary
# folder removed on exit, and recipe STEM BODY, which writes $TMP/STEM.json: a recipe of one rule
# over every targetable linear whose JSON object members are BODY, and prints its path.
BUILD=${BUILD:-build}
CLI="$BUILD/app/lcw-cli"
[ -x "$CLI" ] || cmake --build "$BUILD" --target lcw-cli >&2
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
recipe() { # file-stem, rule body (JSON object members of one rule over all linears)
  echo "{\"lcw_recipe\": 1, \"name\": \"$1\", \"rules\": [{\"targets\": [\"*\"], $2}]}" > "$TMP/$1.json"
  echo "$TMP/$1.json"
}
# eval_lines EVAL-OPTIONS...: `lcw-cli eval $MODEL --text $TEXT --ctx 256` with the options; one
# JSON line for FP32, then one per configuration (ppl, KLD from FP32, stored and KV-cache bytes).
eval_lines() {
  "$CLI" eval "$MODEL" --text "$TEXT" --ctx 256 --no-record --quiet --json "$@" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(json.dumps({"config": "FP32", "ppl": d["baseline"]["ppl"], "model_bytes": d["baseline"].get("model_bytes")}))
for c in d["configs"]:
    print(json.dumps({"config": c["name"], "ppl": c["ppl"], "ppl_se": c["ppl_se"], "kld": c["kld"]["mean"],
                      "kld_se": c["kld"]["se"], "model_bytes": c.get("model_bytes"),
                      "kv_cache_bytes": c.get("kv_cache_bytes")}))'
}
# add LABEL COMPRESS-OPTIONS...: compresses $MODEL into an overlay $TMP/ovN (its report in
# $TMP/ovN.json) and appends it to labels / overlays for overlay_table.
labels=() overlays=()
add() {
  local label=$1 dir="$TMP/ov${#labels[@]}" t0=$SECONDS
  shift
  "$CLI" compress "$MODEL" "$@" --save "$dir" --quiet --json > "$dir.json"
  echo "$label: compress $((SECONDS - t0)) s" >&2
  labels+=("$label") overlays+=(--overlay "$dir")
}
# overlay_table CTX: evaluates every added overlay at CTX and prints a Markdown table (bits/weight
# of the quantised linears and of the whole model, PPL, KLD vs FP32).
overlay_table() {
  "$CLI" eval "$MODEL" "${overlays[@]}" --text "$TEXT" --ctx "$1" --no-record --json > "$TMP/eval.json"
  python3 - "$TMP" "${labels[@]}" <<'PY'
import json, sys
tmp, labels = sys.argv[1], sys.argv[2:]
ev = json.load(open(tmp + "/eval.json"))
print("| config | bits/weight (quantised linears) | bits/weight (whole model) | PPL | KLD vs FP32 |")
print("|---|---|---|---|---|")
b = ev["baseline"]
print("| FP32 | 32.00 | 32.00 | %.4f ± %.4f | 0 |" % (b["ppl"], b["ppl_se"]))
for i, (lab, c) in enumerate(zip(labels, ev["configs"])):
    t = json.load(open("%s/ov%d.json" % (tmp, i)))["totals"]
    print("| %s | %.3f | %.3f | %.4f ± %.4f | %.5f ± %.5f |" % (
        lab, t["quantized_bits_per_weight"], t["model_bits_per_weight"], c["ppl"], c["ppl_se"],
        c["kld"]["mean"], c["kld"]["se"]))
PY
}
