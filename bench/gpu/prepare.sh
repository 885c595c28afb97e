#!/usr/bin/env bash
# Packs what a bare GPU machine needs to run lcw's Vulkan tests and the lcw-vs-llama.cpp Vulkan
# benchmark (bench/gpu/run.sh) into one folder, OUT_DIR (default .gpu, git-ignored): lcw-cli,
# bench_runtime and the Vulkan test binaries from BUILD (stripped), the shared libraries they load
# that a machine with only glibc/libstdc++ lacks, llama.cpp's prebuilt Vulkan build
# (@node-llama-cpp/linux-x64-vulkan, same release as the CPU package bench/compare_llamacpp.sh
# uses, from the npm registry) with bench/llamacpp/llama_gpu_bench.c compiled against that
# release's llama.h (node-llama-cpp's llama/gitRelease.bundle), the Vulkan loader (Debian's
# libvulkan1), the shared test models the Vulkan tests read, and wikitext-2 for perplexity.
# Everything but the loader goes into one xz archive (bundle.tar.xz) to stay small.
#   bench/gpu/prepare.sh            then carry .gpu to the GPU machine and run bench/gpu/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
OUT_DIR=${OUT_DIR:-.gpu}
SHARED=${LCW_SHARED_DIR:-../shared}
DIR=${LCW_BENCH_DIR:-/tmp/lcw-bench}
NODE_DIR=$DIR/node
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$OUT_DIR" "$STAGE"/{bin,lib,llama,shared/models,shared/data}

# lcw binaries
bins=(app/lcw-cli bench/bench_runtime tests/test_vulkan_backend tests/test_vulkan_packed
      tests/test_vulkan_forward tests/test_vulkan_reduce)
for b in "${bins[@]}"; do
  [ -x "$BUILD/$b" ] || cmake --build "$BUILD" --target "$(basename "$b")"
  strip -o "$STAGE/bin/$(basename "$b")" "$BUILD/$b"
done
# their libraries, except the C runtime the GPU machine has (glibc, libstdc++, libgcc_s)
for b in "${bins[@]}"; do ldd "$BUILD/$b"; done | awk '$3 ~ /^\// {print $3}' | sort -u |
  grep -vE '/(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|ld-linux[^/]*)\.so' |
  while read -r l; do cp -L "$l" "$STAGE/lib/"; done
# fallbacks, used only when the machine's libstdc++ is older than the build's
mkdir -p "$STAGE/lib-cxx"
for l in libstdc++.so.6 libgcc_s.so.1; do cp -L "$(ldconfig -p | awk -v n="$l" '$1 == n {print $NF; exit}')" "$STAGE/lib-cxx/"; done

# llama.cpp's prebuilt Vulkan build and the bench driver
ver=$(jq -r .version "$NODE_DIR/node_modules/@node-llama-cpp/linux-x64/package.json")
pkg=$DIR/node-llama-cpp-linux-x64-vulkan-$ver
if [ ! -d "$pkg/package" ]; then
  mkdir -p "$pkg"
  (cd "$pkg" && npm pack "@node-llama-cpp/linux-x64-vulkan@$ver" --silent >/dev/null && tar xzf ./*.tgz)
fi
vbins=$(dirname "$(find "$pkg/package" -name 'libggml-vulkan.so' | head -1)")
for l in "$vbins"/libllama.*.so "$vbins"/libggml.*.so "$vbins"/libggml-base.so "$vbins"/libggml-vulkan.so \
         "$vbins"/libggml-cpu-{x64,haswell,skylakex,icelake,sapphirerapids,zen4}.so; do
  cp "$l" "$STAGE/llama/"
done
src=$DIR/llama-src-$ver
[ -f "$src/include/llama.h" ] || git clone -q "$NODE_DIR/node_modules/node-llama-cpp/llama/gitRelease.bundle" "$src"
libllama=$(basename "$(ls "$vbins"/libllama.*.so)")
libggml=$(basename "$(ls "$vbins"/libggml.*.so)")
gcc -O2 -fopenmp -Wall -Wextra -I"$src/include" -I"$src/ggml/include" -o "$STAGE/bin/llama_gpu_bench" \
  bench/llamacpp/llama_gpu_bench.c -L"$vbins" -l:"$libllama" -l:"$libggml" -l:libggml-base.so -lm
gcc -O2 -Wall -o "$STAGE/bin/llama_quantize_time" bench/llamacpp/llama_quantize_time.c -ldl
echo "$ver" > "$STAGE/llama/node-llama-cpp-version"
# jq, which bench/gpu/run.sh uses (not on every image)
cp /usr/bin/jq "$STAGE/bin/"
ldd /usr/bin/jq | awk '$3 ~ /^\// {print $3}' | grep -E 'lib(jq|onig)' | while read -r l; do cp -L "$l" "$STAGE/lib/"; done

# test models and text
# (two of llama.cpp's K-quant files: the carried tree must stay under 64 MiB; the test skips
# the others with a message)
cp -r "$SHARED/models/tiny-random" "$STAGE/shared/models/"
mkdir -p "$STAGE/shared/models/gguf-k"
cp "$SHARED"/models/gguf-k/model-{Q2_K-imat,Q4_K_M}.gguf "$STAGE/shared/models/gguf-k/"
cp "$SHARED/data/wiki.test.raw" "$STAGE/shared/data/"

tar -C "$STAGE" -cf - . | xz -T0 -6 > "$OUT_DIR/bundle.tar.xz"
# the Vulkan loader as .debs (dpkg -x'd there; the GPU machine's image has none)
mkdir -p "$OUT_DIR/debs"
(cd "$OUT_DIR/debs" && [ -n "$(ls ./*.deb 2>/dev/null)" ] || apt-get download libvulkan1 >/dev/null)
du -sh "$OUT_DIR"/*
