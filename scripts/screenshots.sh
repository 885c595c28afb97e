#!/usr/bin/env bash
# Renders the GUI's screenshots into docs/screenshots/ (builds lcw first when needed).
#   scripts/screenshots.sh [BUILD_DIR]      default BUILD_DIR: build
# main_window.png   the demo model open: summary, parameters per block, tensor table, log
# main_window_1366x768.png, main_window_1920x1080.png  the same at a laptop's and a full-HD
#                   screen's size (the default layout: >= 15 rows of the Tensors table at 1000 px)
# run_panel.png     the Run panel after a generation and a perplexity run (lcw --demo-run)
# dark_theme.png    the same in the dark theme
# welcome.png       the window before a model is open
# statistics.png    the statistics inspector (lcw --demo-stats: 8 × 128 calibration tokens,
#                   cached under the app data folder) on layers.1.mlp.down: weight histogram with
#                   the 4-bit grid, per-channel abs-max, per-layer overview
# statistics_activations.png, statistics_kv.png   its Activations and KV Cache tabs
# statistics_imatrix.png  the Activations tab with an importance matrix computed in the GUI
#                   (--imatrix compute: 8 chunks x 128 tokens of the bundled text): mean x² per
#                   input column of layers.1.mlp.down under its activation abs-max
# recipe_editor.png the recipe editor (lcw --demo-recipe): W4A16-g64 with block 0 at int8; the
#                   Tensors table sorted by the measured Error column (worst first)
# compare.png       the compare view (lcw --demo-compare): five presets against the original,
#                   metrics table and Pareto plot; compare_layers.png, compare_generations.png
#                   its per-layer error and generation tabs; compare_speed.png its Speed & Memory
#                   tab for W8A16, W4A16-g32, NF4-g64, W8A8 and W4A8 (prefill and decode tokens/s,
#                   weights in RAM, peak RSS increase, each configuration run alone)
# results.png       the Results panel (lcw --demo-results): two comparisons and a sensitivity scan
#                   recorded in a temporary results store (not the user's), the first selected
# sensitivity.png   the Sensitivity panel (lcw --demo-sensitivity): W4A16-g32 and W2A16-g32 per
#                   layer (ctx 128, 4 chunks), mean KLD bars in model order and the ranking
# gguf_export.png  the Export dialog's GGUF page (lcw --demo-export): an importance matrix
#                   computed in the GUI (8 x 128 tokens), the model exported as Q4_K_M with it
#                   (to a temporary folder), the per-tensor report with llama.cpp's fallbacks
# study.png         the Study panel (lcw --demo-study DIR) with the report of 'lcw-cli study'
#                   on the demo model: conclusions, the W / WA / KV tables and their plots
# Model: resources/models/stories260K (the demo model), else $LCW_SHARED_DIR/models/stories260K/hf,
# else ../shared/models/stories260K/hf. Runs headless (QT_QPA_PLATFORM=offscreen); set
# LCW_SCREENSHOT_XVFB=1 to use xvfb-run with a real X server instead.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build}"
out="$root/docs/screenshots"
size="${LCW_SCREENSHOT_SIZE:-1400x900}"

model=""
for candidate in \
    "$root/resources/models/stories260K" \
    "${LCW_SHARED_DIR:-$root/../shared}/models/stories260K/hf"; do
    if [[ -e "$candidate" ]]; then model="$candidate"; break; fi
done
if [[ -z "$model" ]]; then
    echo "screenshots.sh: no demo model (resources/models/stories260K or shared stories260K/hf)" >&2
    exit 1
fi

if [[ ! -f "$build/build.ninja" && ! -f "$build/Makefile" ]]; then
    cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLCW_BUILD_BENCH=OFF
fi
cmake --build "$build" --target lcw lcw-cli -j"${LCW_JOBS:-2}"
exe="$build/app/gui/lcw"
[[ -x "$exe" ]] || { echo "screenshots.sh: $exe not built" >&2; exit 1; }

mkdir -p "$out"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
chmod 700 "$XDG_RUNTIME_DIR" 2>/dev/null || true

shoot() { # shoot FILE [MODEL]
    local file="$1"; shift
    if [[ "${LCW_SCREENSHOT_XVFB:-0}" == 1 ]] && command -v xvfb-run >/dev/null; then
        QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1000x24" \
            "$exe" --screenshot "$file" --size "$size" "$@"
    else
        QT_QPA_PLATFORM=offscreen "$exe" --screenshot "$file" --size "$size" "$@"
    fi
}

shoot "$out/main_window.png" "$model"
for screen in 1366x768 1920x1080; do
    size="$screen" shoot "$out/main_window_$screen.png" "$model"
done
# --demo-run generates from "Once upon a time" and measures perplexity on
# resources/data/tinystories_eval.txt (ctx 256) before the window is saved.
shoot "$out/run_panel.png" "$model" --demo-run
shoot "$out/dark_theme.png" "$model" --demo-run --theme dark
shoot "$out/welcome.png"
# The inspector needs more room than the other views.
size="${LCW_STATS_SCREENSHOT_SIZE:-1600x1000}"
shoot "$out/statistics.png" "$model" --demo-stats
shoot "$out/statistics_activations.png" "$model" --demo-stats --stats-tab activations
shoot "$out/statistics_kv.png" "$model" --demo-stats --stats-tab kv
shoot "$out/statistics_imatrix.png" "$model" --demo-stats --stats-tab activations --imatrix compute
shoot "$out/recipe_editor.png" "$model" --demo-recipe
shoot "$out/compare.png" "$model" --demo-compare
shoot "$out/compare_layers.png" "$model" --demo-compare --compare-tab layers
shoot "$out/compare_generations.png" "$model" --demo-compare --compare-tab generations
shoot "$out/compare_speed.png" "$model" --demo-compare --compare-tab speed
shoot "$out/results.png" "$model" --demo-results
shoot "$out/sensitivity.png" "$model" --demo-sensitivity
shoot "$out/gguf_export.png" "$model" --demo-export
# The Study panel shows the report of the whole Qllm-Eval grid on the demo model (a few minutes;
# LCW_STUDY_DIR reuses a report written before).
study="${LCW_STUDY_DIR:-}"
if [[ -z "$study" ]]; then
    study="$(mktemp -d)/study"
    "$build/app/lcw-cli" study "$model" --out "$study" --quiet >/dev/null
fi
shoot "$out/study.png" "$model" --demo-study "$study"
echo "screenshots in $out"
