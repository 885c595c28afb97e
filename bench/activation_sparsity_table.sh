#!/usr/bin/env bash
# Q-Sparse top-K activation sparsity (recipe section activation_sparsity) against the dense model:
# perplexity and the weight-product MACs the runtime counts (lcw-cli perplexity --json "macs":
# every row x column x token of the products run, and those whose input entry was zero), plus the
# natural sparsity of the MLP intermediates from lcw-cli stats (near-zero share and the
# predictor-free oracle bound). Prints one JSON line per configuration and a Markdown table.
#   bench/activation_sparsity_table.sh [MODEL] [TEXT] [CTX]
#   bench/activation_sparsity_table.sh /work/shared/models/babyllama/tok105_model5000.bin
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-resources/models/stories260K}
TEXT=${2:-resources/data/tinystories_eval.txt}
CTX=${3:-256}
source bench/lcw_cli.sh

rows=()
run() { # label, extra perplexity flags...
  local label=$1; shift
  local line
  line=$("$CLI" perplexity "$MODEL" --text "$TEXT" --ctx "$CTX" --quiet --json "$@" |
         python3 -c 'import json,sys; d=json.load(sys.stdin); m=d["macs"]
print("%.4f %.4f %.4g %.4g %.4f" % (d["ppl"], d["ppl_se"], m["dense_per_token"] / 1e6,
      m["executed_per_token"] / 1e6, m["executed_fraction"]))')
  set -- $line
  echo "{\"config\":\"$label\",\"ppl\":$1,\"ppl_se\":$2,\"dense_mmacs_per_token\":$3,\"executed_mmacs_per_token\":$4,\"executed_fraction\":$5,\"ctx\":$CTX}"
  rows+=("| $label | $1 ± $2 | $3 | $4 | $5 |")
}

run "dense"
run "QSparse-50 (topk 0.5)" --preset QSparse-50
run "QSparse-70 (topk 0.3)" --preset QSparse-70

"$CLI" stats "$MODEL" --no-weights --samples 16 --seq-len 256 --json --quiet |
  python3 -c 'import json,sys; m=json.load(sys.stdin)["mlp_sparsity"]
print("MLP intermediate near zero (rel 1e-2) per layer:", " ".join("%.4f" % l["near_zero_rel"] for l in m["layers"]))
print("exact zeros per layer:", " ".join("%.4f" % l["exact_zero"] for l in m["layers"]))
print("oracle bound, mean over layers: %.4f of the MLP MACs, %.4f of the block MACs" % (m["mean_oracle_mlp_saved_frac"], m["mean_oracle_block_saved_frac"]))'

echo
echo "| config | PPL | MMACs/token dense | MMACs/token with nonzero input | executed / dense |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
