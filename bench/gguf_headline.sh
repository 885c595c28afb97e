#!/usr/bin/env bash
# The GGUF headline table: for each llama.cpp preset, llama.cpp's own mix (written by
# `lcw-cli export --preset P --imatrix`, tensor for tensor what llama-quantize writes: see
# tests/test_export_cli) against lcw's mix of the same types and size with GPTQ choosing the codes
# on the GGUF grids (`--preset P-GPTQ`), and an autotuned mix of GGUF types (`lcw-cli autotune
# --schemes q2_k,q3_k,q4_k,q5_k,q6_k` within the preset's bits/weight over the block linears;
# token_embd and output as in the preset) with GPTQ codes; all with the same importance matrix.
# KLD and PPL of the written files against the model on the bundled text (lcw-cli eval
# --compare-model). The autotune's sensitivity scan uses the first SCAN_CHUNKS chunks of the text
# the table scores in full.
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
SCAN_CHUNKS=${SCAN_CHUNKS:-8}
THREADS=${THREADS:-$(nproc)}
MODELS=("$@")
if [ ${#MODELS[@]} -eq 0 ]; then
  MODELS=(resources/models/stories260K)
  [ -f ../shared/models/gguf-k/model-f32.gguf ] && MODELS+=(../shared/models/gguf-k/model-f32.gguf)
fi
TABLE="$TMP/table.md"
echo "| model | preset | bits/weight | llama.cpp KLD | lcw: same types, GPTQ | lcw: autotuned types, GPTQ | PPL llama.cpp / lcw / lcw autotuned | base PPL |" >"$TABLE"
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
    # Autotuned GGUF types within the preset's bits/weight over the block linears; token_embd and
    # output keep the preset's types; GPTQ codes.
    "$CLI" compress "$M" --preset "$P" --json --quiet >"$TMP/mix.json"
    budget=$(python3 bench/gguf_headline.py budget "$TMP/mix.json")
    "$CLI" autotune "$M" --budget-bpw "$budget" --schemes q2_k,q3_k,q4_k,q5_k,q6_k \
      --out "$TMP/at.json" --ctx "$CTX" --chunks "$SCAN_CHUNKS" --no-verify --quiet \
      --threads "$THREADS" >/dev/null
    python3 bench/gguf_headline.py recipe "$TMP/mix.json" "$TMP/at.json" "$imat" >"$TMP/at_gptq.json"
    c="$TMP/$name-$P-autotune.gguf"
    "$CLI" export "$M" --recipe "$TMP/at_gptq.json" --calib "$CALIB" --samples "$SAMPLES" \
      --seq-len "$SEQ" --out "$c" --no-kl --quiet --threads "$THREADS" >/dev/null
    "$CLI" eval "$M" --compare-model "$a" --compare-model "$b" --compare-model "$c" --ctx "$CTX" \
      --chunks "$CHUNKS" --speed-tokens 0 --no-record --json --quiet --threads "$THREADS" \
      >"$TMP/eval.json"
    python3 bench/gguf_headline.py row "$name" "$P" "$TMP/eval.json" "$a" "$b" "$c" "$TABLE"
  done
done
echo
cat "$TABLE"
