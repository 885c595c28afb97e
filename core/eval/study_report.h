#pragma once
/// \file
/// The study's report (lcw-cli study --out DIR): report.html (the Qllm-Eval-style tables, the
/// conclusions and the plots as SVG images beside it), study.tsv (one line per cell) and
/// study.json (study::toJson, what the GUI's Study panel and scripts read). Each file is written
/// atomically; the folder is created when missing.
#include "core/eval/study.h"

#include <string>
#include <vector>

namespace lcw::study {

/// The per-group plots: perplexity or KL divergence against the setting, one line per method.
enum class PlotMetric { Ppl, Kld };

/// An SVG line chart of `metric` for the cells of group `g` (settings on x, high bits first;
/// log y axis when the values span more than a factor 3; the baseline PPL as a dashed line).
/// Empty when the group has no successful cell.
std::string svgPlot(const StudyResult& r, Group g, PlotMetric metric);

/// One header line, then one line per cell (tab-separated; task accuracies as task_<name>).
std::string tsv(const StudyResult& r);

/// The HTML page; `plots` are the file names of the SVG images (relative to the page) by group
/// and metric, as writeReport names them ("plot_w_ppl.svg").
std::string html(const StudyResult& r, const std::vector<std::string>& plots);

struct ReportFiles {
    std::string html, tsv, json;
    std::vector<std::string> plots;
};

/// Writes the report into `dir`. Throws Error naming the file that could not be written.
ReportFiles writeReport(const StudyResult& r, const std::string& dir);

} // namespace lcw::study
