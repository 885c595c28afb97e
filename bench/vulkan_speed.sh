#!/usr/bin/env bash
# CPU vs Vulkan on one model: prefill-heavy (perplexity) and decode (generate) throughput and the
# perplexity itself, each device in a fresh lcw-cli process. Prints one JSON line per device:
#   {"bench":"vulkan_speed","model":...,"device":...,"device_name":...,"ppl":...,
#    "ppl_tokens_per_s":...,"decode_tokens_per_s":...,"prefill_tokens_per_s":...}
# Usage: bench/vulkan_speed.sh [MODEL] [TEXT] [CTX] [CHUNKS] [DEVICES...]
#   defaults: the demo model, the bundled text, ctx 256, 16 chunks, devices "cpu vulkan".
# Notes: on lavapipe (Vulkan on the CPU) the GPU numbers say nothing about a real GPU; run it on
# a machine with one. The Vulkan path runs the weight products and the attention over the float
# KV cache on the GPU (a device mirror of the cache that takes the new rows each step) and the
# rest (norms, RoPE, the KV cache itself) on the CPU, copying activations each product.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lcw_cli.sh
MODEL=${1:-resources/models/stories260K}
TEXT=${2:-resources/data/tinystories_eval.txt}
CTX=${3:-256}
CHUNKS=${4:-16}
shift $(( $# < 4 ? $# : 4 ))
DEVICES=("$@")
[ ${#DEVICES[@]} -gt 0 ] || DEVICES=(cpu vulkan)
# The text cut to CHUNKS chunks (characters are a generous upper bound of tokens).
head -c $(( CTX * CHUNKS * 8 )) "$TEXT" > "$TMP/text.txt"
for dev in "${DEVICES[@]}"; do
  ppl=$("$CLI" perplexity "$MODEL" --text "$TMP/text.txt" --ctx "$CTX" --exact-activations \
        --device "$dev" --json --quiet)
  gen=$("$CLI" generate "$MODEL" --prompt "Once upon a time" -n 64 --device "$dev" --json --quiet)
  python3 - "$MODEL" "$dev" "$ppl" "$gen" <<'PY'
import json, sys
model, dev, ppl, gen = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
d = ppl.get("device") or gen.get("device") or {}
print(json.dumps({"bench": "vulkan_speed", "model": model, "device": d.get("id", dev),
                  "device_name": d.get("name", ""), "ppl": ppl["ppl"],
                  "ppl_tokens_per_s": ppl.get("tokens_per_second"),
                  "decode_tokens_per_s": gen.get("decode_tokens_per_second"),
                  "prefill_tokens_per_s": gen.get("prefill_tokens_per_second")}))
PY
done
