#pragma once
/// \file
/// The Sensitivity dock: runs core's layer sensitivity scan (core/eval/sensitivity.h: one layer
/// or block quantised at a time with a preset's weight scheme, everything else at baseline, KLD
/// from the baseline) through the TaskRunner with progress and cancel, and shows the mean KLD per
/// target as bars in model order (clicking a bar asks for that layer in the Tensors table) and a
/// table ranked by KLD. "Autotune to budget…" plans a mixed-precision recipe from the scan with
/// core's autotune (planAutotune: one scanned scheme per target, minimal summed KLD within a
/// budget of the quantised layers' bits/weight) and hands it to the recipe editor. "Save Scan…" /
/// "Open Scan…" write and read the scan file of `lcw-cli sensitivity --out` (sensitivityToJson
/// plus "text_file"); an opened scan must be of the open model (same fingerprint, targets in the
/// model) and then shows and autotunes exactly like a computed one.
#include "core/compress/recipe.h"
#include "core/eval/sensitivity.h"
#include "core/model/model.h"
#include "widgets/task_runner.h"

#include <QWidget>

#include <nlohmann/json.hpp>

#include <functional>
#include <memory>

class QComboBox;
class QLabel;
class QLayout;
class QListWidget;
class QProgressBar;
class QPushButton;
class QSpinBox;
class QTableWidget;

namespace lcw {

struct AutotunePlan;

class BarPlot;

class SensitivityPanel : public QWidget {
    Q_OBJECT
public:
    enum Column { RankColumn, TargetColumn, KldColumn, SameTopColumn, BitsColumn, ColumnCount };

    SensitivityPanel(TaskRunner* runner, QWidget* parent = nullptr);

    void setModel(std::shared_ptr<const Model> model);
    /// Presets whose weight sections are scanned (checked in the list).
    void setSchemes(const QStringList& presets);
    QStringList schemes() const;
    /// "layer" or "block".
    void setGranularity(const QString& g);
    void setContext(int ctx);
    void setMaxChunks(int chunks);
    void setTextFile(const QString& path) { m_textFile = path; }
    /// The evaluation text of the shown scan (of a loaded one: its "text_file"), else the one set.
    QString scanTextFile() const { return m_scan ? m_scanTextFile : m_textFile; }
    /// The open model's stats::modelFingerprint() (the main window's is computed off the UI
    /// thread when the model loads); without one it is computed when a scan is opened.
    void setFingerprintProvider(std::function<std::string()> f) { m_fingerprint = std::move(f); }
    /// Where the Autotune dialog's default budget comes from (the recipe editor's target:
    /// whole-model bits per base weight).
    void setBudgetProvider(std::function<double()> f) { m_budget = std::move(f); }

    /// Submits the scan. False when it cannot start (no model or tokenizer, no scheme, running).
    bool run();
    void cancel();
    bool isRunning() const { return m_job != 0; }

    /// The last completed scan (nullptr when none).
    const SensitivityScan* scan() const { return m_scan.get(); }
    /// Shows one scanned scheme in the plot and the table.
    void showScheme(const QString& name);
    QString shownScheme() const;
    /// Plans a recipe for `budgetBpw` from the scan (all scanned schemes as candidates) and emits
    /// recipeProduced. False (and a logged reason) without a scan or when the budget is
    /// infeasible.
    bool autotune(double budgetBpw);
    /// The same with the workbench's budget definition (what "Autotune to Budget…" asks for):
    /// whole-model stored bits per base weight, as the recipe editor's budget line shows it
    /// (planAutotuneModel), so the editor is within its target right after. Needs the model.
    bool autotuneModel(double modelBudgetBpw);

    /// Writes the scan (the `lcw-cli sensitivity --out` file: "lcw_sensitivity": 1 and
    /// "text_file") atomically. False without a scan or when writing fails (lastError()).
    bool saveScan(const QString& path);
    /// Reads a scan file and shows it as if it had just been computed (emits scanLoaded, not
    /// finished). False, with lastError() naming the file, for a corrupt or truncated file, a
    /// scan of another model (fingerprint or targets), no open model, or while a scan runs; the
    /// current scan stays.
    bool loadScan(const QString& path);
    /// The scan as saveScan() writes it (empty without a scan).
    std::string scanJson() const;
    /// Shows a scan given as JSON (saveScan()'s content; `origin` names it in errors) with
    /// loadScan()'s checks; no scanLoaded signal.
    bool showScanJson(const nlohmann::json& j, const QString& origin);
    /// The reason of the last failed saveScan/loadScan/autotune (empty after a success).
    QString lastError() const { return m_lastError; }

    BarPlot* barPlot() const { return m_bars; }
    QTableWidget* rankTable() const { return m_table; }

signals:
    /// A scan run here completed (not emitted for loaded scans).
    void finished();
    void scanLoaded(const QString& path);
    void cancelled();
    void failed(const QString& message);
    /// A bar or table row asks for this tensor (the target's first layer).
    void tensorRequested(const QString& name);
    void recipeProduced(const lcw::compress::Recipe& recipe, const QString& what);
    void logMessage(const QString& text);

private:
    QLayout* buildControls();
    QLayout* buildButtons();
    QLayout* buildStatusRow();
    QWidget* buildResults();
    void connectButtons();
    void connectResults();
    void syncUi();
    const SchemeScan* shown() const;
    /// Shows `scan` (the plot, the table, the status line); the one place both paths go through.
    void setScan(std::shared_ptr<const SensitivityScan> scan, const QString& textFile);
    void fail(const QString& message);
    /// The common part of autotune() and autotuneModel(): plans with `plan` (given the recipe's
    /// name), logs `summary(plan)` and hands the recipe on, or reports the planner's error.
    bool runAutotune(double budgetBpw, const std::function<AutotunePlan(const std::string&)>& plan,
                     const std::function<QString(const AutotunePlan&)>& summary);

    TaskRunner* m_runner;
    std::shared_ptr<const Model> m_model;
    std::shared_ptr<const SensitivityScan> m_scan;
    std::function<double()> m_budget;
    std::function<std::string()> m_fingerprint;
    QString m_textFile;
    QString m_scanTextFile;
    QString m_lastError;
    TaskRunner::JobId m_job = 0;
    /// Entries of the shown scheme in model order (bar index → entry).
    std::vector<const SensitivityEntry*> m_barEntries;

    QListWidget* m_schemeList = nullptr;
    QComboBox* m_granularity = nullptr;
    QSpinBox* m_ctx = nullptr;
    QSpinBox* m_chunks = nullptr;
    QPushButton* m_runButton = nullptr;
    QPushButton* m_cancelButton = nullptr;
    QPushButton* m_autotuneButton = nullptr;
    QPushButton* m_saveButton = nullptr;
    QPushButton* m_openButton = nullptr;
    QProgressBar* m_progress = nullptr;
    QLabel* m_status = nullptr;
    QComboBox* m_show = nullptr;
    BarPlot* m_bars = nullptr;
    QTableWidget* m_table = nullptr;
};

} // namespace lcw
