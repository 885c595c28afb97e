#pragma once
/// \file
/// The Results dock: lists the records of the results store (core/eval/results_store.h; the
/// JSON-lines file `lcw-cli eval` appends to, or another one opened here) with their time, model,
/// configurations and headline PPL / KLD. Selecting a record shows its metrics side by side
/// (baseline first; PPL, KLD, same-top, task accuracies, bits/weight, size, tokens/s, peak RSS;
/// Ctrl+C copies TSV) and can load it into the Compare view without recomputing anything. The
/// Compare view's own runs are appended to the same store (compareRecord(): a record shaped like
/// eval's, with "source": "gui compare"). Sensitivity scans run in the GUI are recorded too
/// (sensitivityRecord(): "kind": "sensitivity", the baseline PPL and one summary per scheme);
/// they list with their schemes and largest KLD and show one row per scheme. Corrupt lines are
/// skipped with a warning in the log. Configurations are labelled with their recipe's own name
/// (configLabel()), every record with its evaluation settings (ctx, chunks, text); several
/// records can be selected and shown together, and when their settings differ the panel says
/// so and marks the rows instead of comparing them silently.
#include "core/eval/sensitivity.h"
#include "widgets/compare_panel.h"

#include <nlohmann/json.hpp>

#include <QWidget>

#include <functional>
#include <map>

#include <vector>

class QLabel;
class QTableWidgetItem;
class QTableWidget;

namespace lcw {

class ResultsPanel : public QWidget {
    Q_OBJECT
public:
    enum RecordColumn {
        TimeColumn,
        ModelColumn,
        ConfigsColumn,
        PplColumn,
        KldColumn,
        SettingsColumn, ///< ctx · chunks · text of the record's measurements
        RecordColumns
    };

    explicit ResultsPanel(QWidget* parent = nullptr);

    /// Shows another results file (and reloads). Empty: the default store.
    void setResultsPath(const QString& path);
    QString resultsPath() const { return m_path; }
    /// Re-reads the file; returns the number of records. Skipped lines go to logWarning.
    int reload();

    int recordCount() const { return int(m_records.size()); }
    const nlohmann::ordered_json& record(int row) const { return m_records.at(size_t(row)); }
    void selectRecord(int row);
    /// Selects several records: their configurations are shown together, each row with its
    /// record and settings; when the settings differ the panel says so (comparisonWarning())
    /// and marks the rows measured differently from the first record.
    void selectRecords(const QList<int>& rows);
    /// The first selected record (−1: none).
    int selectedRecord() const;
    QList<int> selectedRecords() const;
    /// The line above the metrics: the shown record's settings, or, with several records of
    /// different settings, why their numbers are not comparable.
    QString infoText() const;
    /// Non-empty when the selected records were measured with different settings (ctx,
    /// chunks, text): names every difference.
    QString comparisonWarning() const { return m_warning; }

    /// What a configuration is called: its name, and for a recipe the recipe's own name
    /// ("editor recipe: W4 g64 test"), or, for an unnamed recipe, a short fingerprint of its
    /// JSON ("editor recipe #1a2b3c") so that two different recipes never read alike.
    static QString configLabel(const nlohmann::ordered_json& config);
    /// The evaluation settings of a record: "ctx 512 · 8 chunks · wiki.test.raw" (parts the
    /// record lacks are left out; empty when it has none).
    static QString describeSettings(const nlohmann::ordered_json& record);
    /// How two records' evaluation settings differ ("ctx 512 vs 1024", "chunks 8 vs 4",
    /// "text a.txt vs b.txt"; text by SHA-256 when both records have one, else by path);
    /// empty when they agree (a setting only one record has is not compared).
    static QStringList settingsDifferences(const nlohmann::ordered_json& a,
                                           const nlohmann::ordered_json& b);

    /// TSV of the selected record's metrics table (header + one line per configuration);
    /// copyMetrics() also puts it on the clipboard.
    QString metricsTsv() const;
    QString copyMetrics();
    /// Sends the selected record to the Compare view (loadIntoCompare). False when none.
    bool loadSelectedIntoCompare();

    /// A store record (eval's or compareRecord()'s) as compare-view results. Throws
    /// std::exception when it has no "baseline" object.
    static CompareResults toCompareResults(const nlohmann::ordered_json& record);
    /// The compare view's results as a store record: model, text_file, settings (ctx, chunks),
    /// per configuration "recipe_name" (the recipe's own name, when it has one) and "label"
    /// (configLabel()),
    /// baseline and configs with eval's keys (ppl, ppl_se, kld.{mean, se, p99},
    /// same_top_percent(_se), bits_per_weight, model_bytes, prefill_tokens_per_second, recipe;
    /// after speed runs also speed.decode_tokens_per_second, peak_rss_bytes (absolute) and the
    /// Compare view's peak_rss_increase_bytes and resident_weight_bytes, with "speed_run":
    /// {prompt_tokens, decode_tokens, peak_rss (how it was measured)}).
    static nlohmann::ordered_json compareRecord(const CompareResults& r, const QString& modelPath,
                                                const QString& textFile);
    /// Appends compareRecord() to the current file and reloads; returns the id (empty and a
    /// warning on failure).
    QString appendCompare(const CompareResults& r, const QString& modelPath,
                          const QString& textFile);
    /// A completed sensitivity scan as a store record: "kind": "sensitivity", "source": "gui
    /// sensitivity", model, model_fingerprint, text_file, ctx, chunks, scored_tokens,
    /// granularity, settings, baseline {name, ppl}, configs [] (a scan has no whole-model
    /// configuration; `lcw-cli results` reads it as a baseline-only record) and "sensitivity":
    /// one object per scheme {scheme, targets, skipped, params, bits_per_weight, kld_sum,
    /// most_sensitive {target, kld}, least_sensitive {target, kld}}.
    static nlohmann::ordered_json
    sensitivityRecord(const SensitivityScan& s, const QString& modelPath, const QString& textFile);
    static bool isSensitivityRecord(const nlohmann::ordered_json& record);
    /// Appends sensitivityRecord() to the current file and reloads; returns the id (empty and a
    /// warning on failure).
    QString appendSensitivity(const SensitivityScan& s, const QString& modelPath,
                              const QString& textFile);

    QTableWidget* recordTable() const { return m_recordTable; }
    QTableWidget* metricsTable() const { return m_metrics; }

signals:
    void loadIntoCompare(const lcw::CompareResults& results);
    void logMessage(const QString& text);
    void logWarning(const QString& text);

private:
    /// Appends `record()` to the store (reloading the list); logs "<what> recorded as ID" or the
    /// failure. Returns the id (empty on failure).
    QString appendRecord(const std::function<nlohmann::ordered_json()>& record,
                         const QString& what);
    void showRecord(int row);
    void showRecords(const QList<int>& rows);
    /// Checks every selected record's settings against the first one's and says so above the
    /// table; returns the differences of each record that differs.
    std::map<int, QStringList> checkSettings(const QList<int>& rows);
    /// One configuration's row of the metrics table (without the record columns).
    static QStringList metricCells(const nlohmann::ordered_json& c, bool base,
                                   const QStringList& tasks);
    /// Fills table row `row`; the last `extra` cells are left-aligned; a row whose record was
    /// measured differently is coloured and names the `differences`.
    void setMetricRow(int row, const QStringList& cells, int extra, const QStringList* differences);
    void showSensitivityRecord(const nlohmann::ordered_json& record);

    QString m_path;
    std::vector<nlohmann::ordered_json> m_records;
    QLabel* m_pathLabel = nullptr;
    QLabel* m_info = nullptr;
    QString m_warning;
    QTableWidget* m_recordTable = nullptr;
    QTableWidget* m_metrics = nullptr;
};

} // namespace lcw
