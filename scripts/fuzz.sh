#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang with ASan + UBSan) into build-fuzz/ and runs them.
# Usage: scripts/fuzz.sh [TARGET|all] [SECONDS]     (default: all, 30 seconds per target)
#   TARGET: gguf safetensors hf_config tokenizer llama2c recipe stats project results overlay npy
#           hf_quant llmc_recipe study imatrix tasks
# Each target runs SECONDS with a 10 s per-input timeout (a slower input is a hang: a finding),
# a 2 GB memory limit (a larger allocation is a finding), inputs up to 1 MB, its seed corpus
# (build-fuzz/corpus/, gathered by scripts/fuzz_seeds.sh on the first run) and new inputs kept
# in build-fuzz/corpus-run/, and a dictionary from fuzz/dict/. Findings (crash-*, timeout-*, oom-*,
# leak-* files) are saved to fuzz/findings/TARGET/. Prints one summary line per target and
# exits 1 when any target found something.
# Environment: LCW_FUZZ_KEEP_GOING=1 keeps fuzzing after a finding (libFuzzer -fork=1 with
# -ignore_crashes/-ignore_timeouts/-ignore_ooms) to collect several; LCW_FUZZ_ARGS adds
# libFuzzer options; LCW_FUZZ_JOBS sets the build parallelism (default: nproc);
# LCW_FUZZ_NO_BUILD=1 runs the targets already built without configuring or building;
# LCW_FUZZ_TMP sets the folder of the drivers' temporary files (default build-fuzz/tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
ALL=(gguf safetensors hf_config tokenizer llama2c recipe stats project results overlay npy hf_quant llmc_recipe study imatrix tasks)
which="${1:-all}"
secs="${2:-30}"
if [ "$which" = all ]; then targets=("${ALL[@]}"); else
  case " ${ALL[*]} " in
    *" $which "*) targets=("$which") ;;
    *) echo "fuzz.sh: unknown target '$which' (targets: ${ALL[*]}, all)" >&2; exit 2 ;;
  esac
fi
[[ "$secs" =~ ^[0-9]+$ ]] || { echo "fuzz.sh: SECONDS must be a number, got '$secs'" >&2; exit 2; }
for tool in clang clang++ cmake ninja; do
  command -v "$tool" >/dev/null || {
    echo "fuzz.sh: $tool not found (Debian: clang libclang-rt-14-dev libomp-14-dev cmake ninja-build)" >&2
    exit 2
  }
done

B=build-fuzz
if [ "${LCW_FUZZ_NO_BUILD:-0}" != 1 ]; then
  launcher=()
  if command -v ccache >/dev/null; then
    launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
  fi
  # RelWithDebInfo without its -g: CMakeLists.txt adds line tables (-gline-tables-only).
  cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
    -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -DNDEBUG" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -DNDEBUG" \
    -DCMAKE_CXX_COMPILER=clang++ -DLCW_FUZZ=ON -DLCW_BUILD_GUI=OFF -DLCW_BUILD_TESTS=OFF -DLCW_VULKAN=OFF \
    -DLCW_BUILD_BENCH=OFF "${launcher[@]}" >/dev/null
  jobs="${LCW_FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}"
  cmake --build "$B" -j "$jobs" --target "${targets[@]/#/fuzz_}"
  # The seeds are gathered once, and again when a target has none yet (a target added since;
  # delete build-fuzz/corpus to gather them all again).
  gather=0
  [ -f "$B/corpus/.gathered" ] || gather=1
  for t in "${targets[@]}"; do [ -d "$B/corpus/$t" ] || gather=1; done
  if [ $gather = 1 ]; then
    # lcw-cli of the normal build (when built) writes quantised HF folders and llm-compressor
    # recipes as seeds for hf_quant and llmc_recipe.
    [ -x build/app/lcw-cli ] && export LCW_CLI="$PWD/build/app/lcw-cli"
    cmake --build "$B" -j "$jobs" --target fuzz_corpus
    touch "$B/corpus/.gathered"
  fi
fi
# The drivers write each input to a file (the parsers read files): LCW_FUZZ_TMP (e.g. a folder
# on /dev/shm) keeps those writes in memory; default build-fuzz/tmp.
tmpdir="${LCW_FUZZ_TMP:-$PWD/$B/tmp}"
mkdir -p "$tmpdir"
export TMPDIR="$tmpdir"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_stack_use_after_return=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$PWD/fuzz/lsan.supp}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
extra=()
if [ "${LCW_FUZZ_KEEP_GOING:-0}" = 1 ]; then
  extra+=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
fi
# shellcheck disable=SC2206
extra+=(${LCW_FUZZ_ARGS:-})

status=0
summary=()
for t in "${targets[@]}"; do
  case "$t" in
    gguf) dict=fuzz/dict/gguf.dict ;;
    llama2c | stats | project | imatrix) dict= ;;
    *) dict=fuzz/dict/json.dict ;;
  esac
  findings="fuzz/findings/$t"
  mkdir -p "$findings" "$B/corpus-run/$t" "$B/corpus/$t"
  before="$(find "$findings" -maxdepth 1 -type f | wc -l)"
  log="$B/fuzz-$t.log"
  echo "fuzz.sh: $t for ${secs}s (log: $log)"
  set +e
  "./$B/fuzz/fuzz_$t" "$B/corpus-run/$t" "$B/corpus/$t" ${dict:+-dict=$dict} \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=1048576 \
    -artifact_prefix="$findings/" -print_final_stats=1 "${extra[@]}" >"$log" 2>&1
  rc=$?
  set -e
  after="$(find "$findings" -maxdepth 1 -type f | wc -l)"
  found=$((after - before))
  execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)"
  # -fork mode prints no final stats: the last "#N" status line counts the executions.
  [ -n "$execs" ] || execs="$(grep -o '^#[0-9]*' "$log" | tr -d '#' | tail -1 || true)"
  [ -n "$execs" ] || execs=0
  if [ "$found" -eq 0 ] && [ "$rc" -ne 0 ]; then
    found=1 # the fuzzer failed without leaving a file (startup error, dictionary, ...)
    echo "fuzz.sh: $t exited with $rc and no finding file; see $log" >&2
  fi
  if [ "$found" -gt 0 ]; then
    status=1
    grep -E '^(==[0-9]+==ERROR|SUMMARY:|.*runtime error:|ALARM:|==[0-9]+== ERROR: libFuzzer)' "$log" \
      | head -5 | sed "s/^/fuzz.sh: $t: /" >&2 || true
  fi
  summary+=("$(printf '%-12s %6ss %12s execs %3d findings' "$t" "$secs" "$execs" "$found")")
done
echo "fuzz.sh: summary (target, seconds, execs, findings; findings in fuzz/findings/TARGET/)"
printf '  %s\n' "${summary[@]}"
exit "$status"
