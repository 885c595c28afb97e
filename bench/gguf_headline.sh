#!/usr/bin/env bash
# The GGUF headline table: for each llama.cpp preset, llama.cpp's own mix (written by
# `lcw-cli export --preset P --imatrix`, tensor for tensor what llama-quantize writes: see
# tests/test_export_cli) against lcw's mix of the same types and size with GPTQ choosing the codes
# on the GGUF grids (`--preset P-GPTQ`), both with the same importance matrix. KLD and PPL of the
# written files against the model on the bundled text (lcw-cli eval --compare-model).
#   bench/gguf_headline.sh [MODEL ...]      (default: the demo model and shared gguf-k)
# Environment: PRESETS (default "Q2_K Q3_K_M Q4_K_M Q5_K_M Q6_K"), CTX (128), CHUNKS (0 = all),
# CALIB (default: the bundled calibration text), SAMPLES/SEQ (imatrix and GPTQ calibration:
# 32 x 128), THREADS.
# Prints one JSON line per model and preset, then a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lcw_cli.sh
PRESETS=${PRESETS:-"Q2_K Q3_K_M Q4_K_M Q5_K_M Q6_K"}
CTX=${CTX:-128}
CHUNKS=${CHUNKS:-0}
SAMPLES=${SAMPLES:-32}
SEQ=${SEQ:-128}
CALIB=${CALIB:-resources/data/tinystories_eval.txt}
THREADS=${THREADS:-$(nproc)}
MODELS=("$@")
if [ ${#MODELS[@]} -eq 0 ]; then
  MODELS=(resources/models/stories260K)
  [ -f ../shared/models/gguf-k/model-f32.gguf ] && MODELS+=(../shared/models/gguf-k/model-f32.gguf)
fi
TABLE="$TMP/table.md"
echo "| model | preset | bits/weight | llama.cpp KLD | lcw KLD | llama.cpp PPL | lcw PPL | base PPL |" >"$TABLE"
echo "|---|---|---|---|---|---|---|---|" >>"$TABLE"
for M in "${MODELS[@]}"; do
  name=$(basename "$M"); [ "$name" = model-f32.gguf ] && name=$(basename "$(dirname "$M")")
  imat="$TMP/$name.imatrix.dat"
  "$CLI" imatrix "$M" --calib "$CALIB" --samples "$SAMPLES" --seq-len "$SEQ" --out "$imat" \
    --threads "$THREADS" --quiet >/dev/null
  for P in $PRESETS; do
    a="$TMP/$name-$P.gguf"
    b="$TMP/$name-$P-GPTQ.gguf"
    if ! "$CLI" export "$M" --preset "$P" --imatrix "$imat" --out "$a" --no-kl --quiet \
         --threads "$THREADS" >/dev/null 2>"$TMP/err"; then
      echo "{\"model\":\"$name\",\"preset\":\"$P\",\"skipped\":\"$(tr -d '"\n' <"$TMP/err")\"}"
      continue
    fi
    "$CLI" export "$M" --preset "$P-GPTQ" --imatrix "$imat" --calib "$CALIB" \
      --samples "$SAMPLES" --seq-len "$SEQ" --out "$b" --no-kl --quiet --threads "$THREADS" >/dev/null
    "$CLI" eval "$M" --compare-model "$a" --compare-model "$b" --ctx "$CTX" --chunks "$CHUNKS" \
      --speed-tokens 0 --no-record --json --quiet --threads "$THREADS" >"$TMP/eval.json"
    python3 - "$name" "$P" "$TMP/eval.json" "$a" "$b" "$TABLE" <<'EOF'
import json, os, sys
name, preset, path, a, b, table = sys.argv[1:]
j = json.load(open(path))
ca, cb = j["configs"][0], j["configs"][1]
line = {"model": name, "preset": preset,
        "bits_per_weight": ca["bits_per_weight"],
        "llamacpp_bytes": os.path.getsize(a), "lcw_bytes": os.path.getsize(b),
        "llamacpp_kld": ca["kld"]["mean"], "llamacpp_kld_se": ca["kld"]["se"],
        "lcw_kld": cb["kld"]["mean"], "lcw_kld_se": cb["kld"]["se"],
        "llamacpp_ppl": ca["ppl"], "lcw_ppl": cb["ppl"], "base_ppl": ca["ppl_base"],
        "scored_tokens": ca["scored_tokens"]}
print(json.dumps(line))
with open(table, "a") as t:
    t.write(f"| {name} | {preset} | {ca['bits_per_weight']:.3f} | {ca['kld']['mean']:.4f} ± {ca['kld']['se']:.4f} "
            f"| **{cb['kld']['mean']:.4f}** ± {cb['kld']['se']:.4f} | {ca['ppl']:.3f} | {cb['ppl']:.3f} | {ca['ppl_base']:.3f} |\n")
EOF
  done
done
echo
cat "$TABLE"
