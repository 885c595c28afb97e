#!/usr/bin/env bash
# GPTQ and AWQ (and RTN for reference) wall time on the first BLOCKS blocks of a synthetic
# TinyLlama-1.1B-shaped model (written once to $LCW_BENCH_DIR, default /tmp/lcw-bench, f16:
# 2.2 GB). Calibration: the bundled text, SAMPLES x SEQ_LEN tokens. Prints JSON lines: one per
# quantised layer (seconds = the method's own work incl. its share of AWQ's scale search) and one
# total per method (wall time of the whole command, time spent capturing block inputs).
#   [METHODS="gptq awq"] bench/gptq_awq_time.sh [SAMPLES] [SEQ_LEN] [BLOCKS]   (default 16 256 4)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-$(nproc)}
DIR=${LCW_BENCH_DIR:-/tmp/lcw-bench}
SAMPLES=${1:-16}
SEQ=${2:-256}
BLOCKS=${3:-4}
source bench/lcw_cli.sh
model="$DIR/tinyllama-1.1b-f16"
if [ ! -f "$model/config.json" ]; then
  "$CLI" synth --arch llama --shape tinyllama-1.1b --dtype f16 --out "$model" >&2
fi
last=$((BLOCKS - 1))
for method in ${METHODS:-rtn gptq awq}; do
  cat > "$TMP/$method.json" <<JSON
{"lcw_recipe": 1, "name": "W4A16-g64-$method, blocks 0-$last",
 "rules": [{"targets": ["re:layers\\\\.[0-$last]\\\\..*"],
            "weight": {"bits": 4, "symmetric": false, "granularity": "group", "group_size": 64,
                       "method": "$method"}}]}
JSON
  t0=$(date +%s.%N)
  "$CLI" compress "$model" --recipe "$TMP/$method.json" --calib resources/data/tinystories_eval.txt \
    --samples "$SAMPLES" --seq-len "$SEQ" --threads "$THREADS" --quiet --json > "$TMP/$method.out"
  t1=$(date +%s.%N)
  python3 - "$TMP/$method.out" "$method" "$t0" "$t1" "$THREADS" "$SAMPLES" "$SEQ" "$BLOCKS" <<'PY'
import json, sys
path, method, t0, t1, threads, samples, seq, blocks = sys.argv[1:]
d = json.load(open(path))
for l in d["layers"]:
    print(json.dumps({"bench": "gptq_awq_time", "method": method, "layer": l["name"],
                      "shape": l["shape"], "seconds": round(l["seconds"], 3),
                      "output_rel_error": l["output_rel_error"]}))
tot = d["totals"]
qs = sum(l["seconds"] for l in d["layers"])
print(json.dumps({"bench": "gptq_awq_time", "method": method, "model": "tinyllama-1.1b-synthetic-f16",
                  "blocks": int(blocks), "layers": len(d["layers"]), "samples": int(samples),
                  "seq_len": int(seq), "threads": int(threads),
                  "wall_seconds": round(float(t1) - float(t0), 2),
                  "compress_seconds": round(tot["seconds"], 2),
                  "capture_seconds": round(tot["capture_seconds"], 2),
                  "layer_seconds": round(qs, 2),
                  "per_layer_mean_seconds": round(qs / max(len(d["layers"]), 1), 3)}))
PY
done
