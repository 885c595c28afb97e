#!/usr/bin/env bash
# Long-context quality against KV-cache memory: perplexity (llama.cpp chunks of CTX tokens, the
# second half scored), passkey retrieval (prompts of ~85 % of CTX generated from the text) and
# LAMBADA at extended context (lambada_long: each passage after filler from the text, ~85 % of
# CTX; needs ../shared/data/tasks or --tasks-dir via LCW_TASKS_DIR) for the full cache, KV4, H2O 20 %, 4 sinks + a 20 % window, H2O 20 % + KV4 and mass 0.9, in one
# `lcw-cli eval` run. Prints a Markdown table (KV bytes/token of one CTX-token context).
#   bench/kv_policy_table.sh [MODEL] [TEXT] [CTX] [ITEMS]   (ITEMS: per task, default 200;
#   passkey has 40)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-resources/models/stories260K}
TEXT=${2:-resources/data/tinystories_eval.txt}
CTX=${3:-512}
LIMIT=${4:-200}
source bench/lcw_cli.sh
TASKS_DIR=${LCW_TASKS_DIR:-../shared/data/tasks}

"$CLI" eval "$MODEL" --text "$TEXT" --ctx "$CTX" --task-ctx "$CTX" --tasks passkey,lambada_long \
    --tasks-dir "$TASKS_DIR" \
    --limit "$LIMIT" --speed-tokens 0 --no-record --quiet --json \
    --preset KV4 --preset KV-H2O-20 --preset KV-sinks-window --preset KV4-H2O-20 \
    --preset KV-mass-90 > "$TMP/eval.json"
python3 - "$TMP/eval.json" "$MODEL" "$CTX" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]}, ctx {sys.argv[3]}, {d['chunks']} chunks")
print("| config | KV bytes/token | PPL | KLD | passkey acc | passkey ppl | lambada_long acc | lambada_long ppl |")
print("|---|---|---|---|---|---|---|---|")
def task(c, name):
    t = c.get("tasks", {}).get(name, {})
    return "%.1f ± %.1f %% (%d) | %.3g" % (100 * t.get("acc", 0), 100 * t.get("acc_se", 0),
                                          t.get("items", 0), t.get("ppl", 0))
for c in [d["baseline"]] + d["configs"]:
    kld = c.get("kld", {}).get("mean")
    print("| %s | %.1f | %.4f ± %.4f | %s | %s | %s |" % (
        "full (f32)" if c["name"] == "baseline" else c["name"], c["kv_cache_bytes_per_token"],
        c["ppl"], c["ppl_se"], "-" if kld is None else "%.4f" % kld,
        task(c, "passkey"), task(c, "lambada_long")))
PY
