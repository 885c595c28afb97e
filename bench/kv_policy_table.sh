#!/usr/bin/env bash
# Long-context quality against KV-cache memory: perplexity (llama.cpp chunks of CTX tokens, the
# second half scored) and passkey retrieval (prompts of ~85 % of CTX generated from the text) for
# the full cache, KV4, H2O 20 %, 4 sinks + a 20 % window, H2O 20 % + KV4 and mass 0.9, in one
# `lcw-cli eval` run. Prints a Markdown table (KV bytes/token of one CTX-token context).
#   bench/kv_policy_table.sh [MODEL] [TEXT] [CTX] [PASSKEY_ITEMS]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-resources/models/stories260K}
TEXT=${2:-resources/data/tinystories_eval.txt}
CTX=${3:-512}
LIMIT=${4:-40}
source bench/lcw_cli.sh

"$CLI" eval "$MODEL" --text "$TEXT" --ctx "$CTX" --task-ctx "$CTX" --tasks passkey \
    --limit "$LIMIT" --speed-tokens 0 --no-record --quiet --json \
    --preset KV4 --preset KV-H2O-20 --preset KV-sinks-window --preset KV4-H2O-20 \
    --preset KV-mass-90 > "$TMP/eval.json"
python3 - "$TMP/eval.json" "$MODEL" "$CTX" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]}, ctx {sys.argv[3]}, {d['chunks']} chunks")
print("| config | KV bytes/token | PPL | KLD | passkey acc | passkey ppl |")
print("|---|---|---|---|---|---|")
for c in [d["baseline"]] + d["configs"]:
    pk = c.get("tasks", {}).get("passkey", {})
    kld = c.get("kld", {}).get("mean")
    print("| %s | %.1f | %.4f ± %.4f | %s | %.1f ± %.1f %% (%d) | %.3g |" % (
        "full (f32)" if c["name"] == "baseline" else c["name"], c["kv_cache_bytes_per_token"],
        c["ppl"], c["ppl_se"], "-" if kld is None else "%.4f" % kld,
        100 * pk.get("acc", 0), 100 * pk.get("acc_se", 0), pk.get("items", 0), pk.get("ppl", 0)))
PY
