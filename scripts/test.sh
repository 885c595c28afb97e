#!/usr/bin/env bash
# Installs what is missing, builds everything (tests included) into build/, runs the whole
# ctest suite. Extra arguments go to ctest (e.g. -R tokenizer).
#
# scripts/test.sh --sanitize [ctest args]: builds the core, lcw-cli and the core tests (no GUI,
# no test_gui*) with AddressSanitizer + UndefinedBehaviorSanitizer (gcc, -fno-sanitize-recover=all:
# the first report fails the test) into build-asan/ and runs them with ctest.
# ASAN_OPTIONS defaults to detect_leaks=0 (Qt and libhdf5 keep allocations until exit, which
# LeakSanitizer would report); set ASAN_OPTIONS yourself to change that.
#
# After the suite, a fuzz smoke run keeps the libFuzzer targets buildable and runs each briefly:
# scripts/fuzz.sh all with LCW_FUZZ_SMOKE_SECONDS per target (default 10, libFuzzer seed 1,
# clang + ASan + UBSan into build-fuzz/). LCW_FUZZ_SMOKE=0 skips it; so does a disk with less
# than LCW_FUZZ_MIN_FREE_MB (default 1500) free when build-fuzz/ does not exist yet (a message
# says so).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
lcw_install_deps
if [ "${1:-}" = "--sanitize" ]; then
  shift
  export QT_QPA_PLATFORM=offscreen
  export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
  if [ ! -d ../shared ] && [ -z "${LCW_SHARED_DIR:-}" ]; then
    echo "lcw: ../shared not found: tests that need shared models will be skipped"
  fi
  san="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
  launcher=()
  if command -v ccache >/dev/null; then
    launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
  fi
  start=$SECONDS
  # -O1 -g: usable stacks and a build that is not much slower than the normal one.
  lcw_build build-asan -DLCW_BUILD_TESTS=ON -DLCW_BUILD_GUI=OFF -DLCW_BUILD_BENCH=OFF \
    -DCMAKE_C_COMPILER=gcc -DCMAKE_CXX_COMPILER=g++ "${launcher[@]}" \
    -DCMAKE_C_FLAGS="$san" -DCMAKE_CXX_FLAGS="$san" -DCMAKE_C_FLAGS_RELEASE="-O1 -g -DNDEBUG" \
    -DCMAKE_CXX_FLAGS_RELEASE="-O1 -g -DNDEBUG" -DCMAKE_EXE_LINKER_FLAGS="$san" \
    -DCMAKE_SHARED_LINKER_FLAGS="$san"
  built=$SECONDS
  export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0}"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
  cd build-asan
  rc=0
  ctest --output-on-failure -j "$(nproc 2>/dev/null || echo 2)" -E '^test_gui' "$@" || rc=$?
  echo "lcw: sanitizer build $((built - start)) s, tests $((SECONDS - built)) s" \
       "(ASAN_OPTIONS=$ASAN_OPTIONS UBSAN_OPTIONS=$UBSAN_OPTIONS)"
  exit "$rc"
fi
lcw_build build -DLCW_BUILD_TESTS=ON
export QT_QPA_PLATFORM=offscreen
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
if [ ! -d ../shared ] && [ -z "${LCW_SHARED_DIR:-}" ]; then
  echo "lcw: ../shared not found: tests that need shared models will be skipped"
fi
rc=0
(cd build && ctest --output-on-failure -j "$(nproc 2>/dev/null || echo 2)" "$@") || rc=$?
# The fuzz build needs disk (build-fuzz/: ~0.6 GB); on a disk too full for it the smoke run is
# skipped with a message instead of failing the suite halfway through a link.
free_mb=$(df -Pm . 2>/dev/null | awk 'NR == 2 { print $4 }')
need_mb="${LCW_FUZZ_MIN_FREE_MB:-1500}"
if [ "${LCW_FUZZ_SMOKE:-1}" != 0 ] && [ $# -eq 0 ] && [ ! -d build-fuzz ] &&
   [ -n "$free_mb" ] && [ "$free_mb" -lt "$need_mb" ]; then
  echo "lcw: fuzz smoke skipped: $free_mb MB free on $(df -P . | awk 'NR == 2 { print $6 }')," \
       "its build needs about $need_mb MB (LCW_FUZZ_MIN_FREE_MB sets the limit)"
elif [ "${LCW_FUZZ_SMOKE:-1}" != 0 ] && [ $# -eq 0 ]; then
  LCW_PACKAGES=(clang libclang-rt-14-dev libomp-14-dev)
  lcw_install_deps
  smoke_start=$SECONDS
  LCW_FUZZ_ARGS="-seed=1 ${LCW_FUZZ_ARGS:-}" \
    bash scripts/fuzz.sh all "${LCW_FUZZ_SMOKE_SECONDS:-10}" || rc=1
  echo "lcw: fuzz smoke (build and ${LCW_FUZZ_SMOKE_SECONDS:-10} s per target) took" \
       "$((SECONDS - smoke_start)) s (LCW_FUZZ_SMOKE=0 skips it)"
fi
exit "$rc"
