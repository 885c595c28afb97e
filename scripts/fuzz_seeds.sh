#!/usr/bin/env bash
# Gathers the fuzz targets' seed corpora into OUTDIR/<target>/ (a build folder, never the repo):
# the small committed seeds of fuzz/corpus/<target>/, model files from resources/ and
# ../shared/models (or $LCW_SHARED_DIR; skipped when absent), recipe examples from
# docs/recipe-format.md, and, when $LCW_MAKE_SEEDS names the built lcw_fuzz_make_seeds, the
# inputs it writes with lcw's own writers. Files over 1 MB are left out (fuzz.sh runs with
# -max_len 1 MB, libFuzzer's default limit). Multi-file inputs are joined with the targets'
# separator (fuzz/fuzz_common.h).
# Usage: scripts/fuzz_seeds.sh OUTDIR
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: scripts/fuzz_seeds.sh OUTDIR}"
shared="${LCW_SHARED_DIR:-../shared}"
SPLIT=$'\n#LCW-FUZZ-SPLIT#\n'
MAX=$((1024 * 1024))
TARGETS=(gguf safetensors hf_config tokenizer llama2c recipe stats project results overlay npy
  hf_quant llmc_recipe study imatrix tasks)
for t in "${TARGETS[@]}"; do mkdir -p "$out/$t"; done

small() { [ -f "$1" ] && [ "$(stat -c %s "$1")" -le "$MAX" ]; }
# add TARGET FILE: copies FILE (named by its content hash, so duplicates collapse).
add() {
  small "$2" || return 0
  cp "$2" "$out/$1/$(md5sum < "$2" | cut -c1-16)-$(basename "$2")"
}
# join TARGET NAME FILE...: the files joined by the separator.
join() {
  local t="$1" name="$2" f tmp
  shift 2
  tmp="$(mktemp)"
  : > "$tmp"
  local first=1
  for f in "$@"; do
    [ $first -eq 1 ] || printf '%s' "$SPLIT" >> "$tmp"
    cat "$f" >> "$tmp"
    first=0
  done
  if small "$tmp"; then mv "$tmp" "$out/$t/$(md5sum < "$tmp" | cut -c1-16)-$name"; else rm -f "$tmp"; fi
}

for t in "${TARGETS[@]}"; do
  if [ -d "fuzz/corpus/$t" ]; then
    find "fuzz/corpus/$t" -type f -print0 | while IFS= read -r -d '' f; do add "$t" "$f"; done
  fi
done

roots=(resources/models)
if [ -d "$shared/models" ]; then roots+=("$shared/models"); else
  echo "fuzz_seeds: $shared/models not found: seeds from resources/ only"
fi
while IFS= read -r -d '' f; do
  d="$(dirname "$f")"
  case "$(basename "$f")" in
    config.json) add hf_config "$f" ;;
    tokenizer.json)
      add tokenizer "$f"
      [ -f "$d/tokenizer_config.json" ] && join tokenizer with-config.json "$f" "$d/tokenizer_config.json"
      ;;
    *.safetensors) add safetensors "$f" ;;
    *.gguf) add gguf "$f" ;;
    *.npy) add npy "$f" ;;
    imatrix.dat | *.imatrix) add imatrix "$f" ;;
    model.safetensors.index.json)
      # The fuzz target writes the parts after the index as shard-1.safetensors, ...
      mapfile -t shards < <(grep -o '"[^"]*\.safetensors"' "$f" | tr -d '"' | sort -u)
      if [ ${#shards[@]} -le 5 ]; then
        tmpi="$(mktemp)"
        cp "$f" "$tmpi"
        files=()
        i=1
        for s in "${shards[@]}"; do
          sed -i "s/\"$s\"/\"shard-$i.safetensors\"/g" "$tmpi"
          files+=("$d/$s")
          i=$((i + 1))
        done
        join safetensors index.json "$tmpi" "${files[@]}"
        rm -f "$tmpi"
      fi
      ;;
  esac
done < <(find "${roots[@]}" -type f -print0 2>/dev/null)

# llama2.c: each checkpoint with the tokenizer.bin beside it.
while IFS= read -r -d '' f; do
  d="$(dirname "$f")"
  for tok in "$d"/tok*.bin; do
    [ -f "$tok" ] && [ "$tok" != "$f" ] && join llama2c "$(basename "$f")" "$f" "$tok"
  done
done < <(find "${roots[@]}" -name '*.bin' ! -name 'tok*.bin' -type f -print0 2>/dev/null)

# Task files (the tasks target: one selector byte, then the data file [split the labels]):
# the first items of each file of $shared/data/tasks.
taskseed() { # taskseed SELECTOR NAME DATA LINES [LABELS]
  local tmp
  tmp="$(mktemp)"
  printf "\\$(printf '%03o' "$1")" > "$tmp"
  head -n "$4" "$3" >> "$tmp"
  if [ -n "${5:-}" ]; then
    printf '%s' "$SPLIT" >> "$tmp"
    head -n "$4" "$5" >> "$tmp"
  fi
  mv "$tmp" "$out/tasks/$2"
}
td="$shared/data/tasks"
if [ -d "$td" ]; then
  taskseed 0 lambada "$td/lambada_test.jsonl" 8
  taskseed 1 arc_easy "$td/ARC-Easy-Test.jsonl" 8
  taskseed 2 piqa "$td/piqa_dev.jsonl" 8 "$td/piqa_dev-labels.lst"
  taskseed 3 winogrande "$td/winogrande_1.1_dev.jsonl" 8 "$td/winogrande_1.1_dev-labels.lst"
  taskseed 4 hellaswag "$td/hellaswag_val_full.txt" 24
fi

# Recipe examples: the ```json blocks of docs/recipe-format.md.
if [ -f docs/recipe-format.md ]; then
  awk -v dir="$out/recipe" '/^```json/{n++; f=sprintf("%s/doc-%02d.json", dir, n); on=1; next}
       /^```/{on=0} on{print > f}' docs/recipe-format.md
fi

# Quantised Hugging Face folders (GPTQ, AWQ, compressed-tensors) and llm-compressor recipes
# written by lcw-cli itself, when $LCW_CLI names one (fuzz.sh passes build/app/lcw-cli).
if [ -n "${LCW_CLI:-}" ] && [ -x "$LCW_CLI" ]; then
  tmpd="$(mktemp -d)"
  demo=resources/models/stories260K
  for fmt in gptq awq compressed-tensors; do
    d="$tmpd/$fmt"
    if "$LCW_CLI" export "$demo" --preset W4A16-g64 --format "$fmt" --out "$d" --quiet \
         >/dev/null 2>&1; then
      files=("$d/config.json" "$d/model.safetensors")
      [ -f "$d/quantize_config.json" ] && files+=("$d/quantize_config.json")
      join hf_quant "$fmt" "${files[@]}"
    fi
  done
  for p in W4A16-g64 W8A8 W8A16 NF4-g64 2:4-SparseGPT W4A16-g32-GPTQ W4A16-g32-AWQ W8A8-SQ; do
    f="$tmpd/$(echo "$p" | tr ':' '_').yaml"
    "$LCW_CLI" export "$demo" --preset "$p" --format llmcompressor --out "$f" --quiet \
      >/dev/null 2>&1 && add llmc_recipe "$f"
  done
  rm -rf "$tmpd"
fi

if [ -n "${LCW_MAKE_SEEDS:-}" ]; then
  "$LCW_MAKE_SEEDS" "$out"
fi
find "$out" -type f -size +"$MAX"c -delete
for t in "${TARGETS[@]}"; do
  printf 'fuzz_seeds: %-12s %4d seeds\n' "$t" "$(find "$out/$t" -type f | wc -l)"
done
