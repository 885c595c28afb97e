#!/usr/bin/env bash
# Zero-shot task accuracy (lcw-cli eval --tasks) of the baseline and weight-quantisation presets,
# one task per run so that each task's time is measured on its own. Prints one JSON line per task
# and a Markdown table at the end. Full sets, except HellaSwag (10042 items, ~5 min per
# configuration on the demo model with 2 threads): a fixed subset of HS_LIMIT items (seed 1234).
#   bench/tasks_table.sh [MODEL] [PRESET ...]
#   THREADS=2 HS_LIMIT=1000 TASKS_DIR=../shared/data/tasks bench/tasks_table.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-resources/models/stories260K}
shift || true
PRESETS=("$@")
[ ${#PRESETS[@]} -gt 0 ] || PRESETS=(W8A16 W4A16-g32)
THREADS=${THREADS:-2}
HS_LIMIT=${HS_LIMIT:-1000}
TASKS_DIR=${TASKS_DIR:-../shared/data/tasks}
source bench/lcw_cli.sh

popts=()
for p in "${PRESETS[@]}"; do popts+=(--preset "$p"); done
for t in lambada arc_easy piqa winogrande hellaswag; do
  limit=0
  [ "$t" = hellaswag ] && limit=$HS_LIMIT
  "$CLI" eval "$MODEL" --ctx 256 --chunks 1 --speed-tokens 0 --threads "$THREADS" --no-record \
    --tasks "$t" --tasks-dir "$TASKS_DIR" --limit "$limit" "${popts[@]}" --json --quiet \
    > "$TMP/$t.json"
  python3 - "$TMP/$t.json" "$t" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); t = sys.argv[2]
cols = [j["baseline"]] + j["configs"]
print(json.dumps({"task": t, "configs": [
    {"name": c["name"], "bits_per_weight": c["bits_per_weight"], **c["tasks"][t]} for c in cols]}))
PY
done > "$TMP/lines.jsonl"
cat "$TMP/lines.jsonl"
python3 - "$TMP/lines.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
names = [c["name"] for c in rows[0]["configs"]]
print("\n| task | metric | items | " + " | ".join(names) + " | s/config |")
print("|---|---|---|" + "---|" * len(names) + "---|")
for r in rows:
    cs = r["configs"]
    metrics = ["acc"] + (["acc_norm"] if "acc_norm" in cs[0] else []) + (["ppl"] if "ppl" in cs[0] else [])
    for m in metrics:
        if m == "ppl":
            cells = ["%.4g" % c["ppl"] for c in cs]
        else:
            cells = ["%.2f ± %.2f" % (100 * c[m], 100 * c[m + "_se"]) for c in cs]
        items = "%d of %d" % (cs[0]["items"], cs[0]["items_in_file"]) if cs[0]["items"] < cs[0]["items_in_file"] else str(cs[0]["items"])
        secs = sum(c["seconds"] for c in cs) / len(cs)
        print("| %s | %s | %s | %s | %.1f |" % (r["task"], m, items, " | ".join(cells), secs))
PY
