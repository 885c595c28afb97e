#include "widgets/results_panel.h"

#include "core/common/json_file.h"
#include "core/eval/results_store.h"
#include "core/version.h"
#include "widgets/elided_label.h"
#include "widgets/number_format.h"

#include <QAction>
#include <QApplication>
#include <QClipboard>
#include <QColor>
#include <QCryptographicHash>
#include <QFileDialog>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QItemSelectionModel>
#include <QLabel>
#include <QPushButton>
#include <QSplitter>
#include <QTableWidget>
#include <QVBoxLayout>

#include <algorithm>
#include <map>
#include <set>

namespace lcw {

using ojson = nlohmann::ordered_json;

namespace {

double num(const ojson& o, const char* key) {
    const auto it = o.find(key);
    return it != o.end() && it->is_number() ? it->get<double>() : std::nan("");
}

QString fmtNum(double v, int prec) {
    return std::isnan(v) ? QStringLiteral("—") : QString::number(v, 'f', prec);
}

QString fmtPm(double v, double se, int prec) {
    if (std::isnan(v)) return QStringLiteral("—");
    return std::isnan(se) ? QString::number(v, 'f', prec)
                          : QStringLiteral("%1 ± %2").arg(v, 0, 'f', prec).arg(se, 0, 'f', prec);
}

double kldMean(const ojson& c) {
    const auto it = c.find("kld");
    return it != c.end() && it->is_object() ? num(*it, "mean") : std::nan("");
}

/// Columns of one record: baseline first, then its configurations.
std::vector<const ojson*> columnsOf(const ojson& rec) {
    std::vector<const ojson*> cols;
    if (rec.contains("baseline") && rec["baseline"].is_object()) cols.push_back(&rec["baseline"]);
    if (rec.contains("configs") && rec["configs"].is_array())
        for (const auto& c : rec["configs"])
            if (c.is_object()) cols.push_back(&c);
    return cols;
}

QString str(const ojson& o, const char* key) {
    const auto it = o.find(key);
    return it != o.end() && it->is_string() ? QString::fromStdString(it->get<std::string>())
                                            : QString();
}

/// The record's value of an integer setting: top-level key, else in "settings".
qint64 intSetting(const ojson& rec, const char* key, const char* settingsKey) {
    if (const auto it = rec.find(key); it != rec.end() && it->is_number()) return it->get<qint64>();
    if (const auto st = rec.find("settings"); st != rec.end() && st->is_object())
        if (const auto it = st->find(settingsKey); it != st->end() && it->is_number())
            return it->get<qint64>();
    return -1;
}

} // namespace

QString ResultsPanel::configLabel(const ojson& c) {
    QString name = str(c, "name");
    const auto rit = c.find("recipe");
    const bool isRecipe = rit != c.end() && !rit->is_null();
    if (name.isEmpty()) name = isRecipe ? tr("recipe") : QStringLiteral("?");
    if (!isRecipe) return name;
    QString recipeName = str(c, "recipe_name");
    if (recipeName.isEmpty() && rit->is_object()) recipeName = str(*rit, "name");
    // A name that already carries the label (the Compare view names editor-recipe rows so) is
    // kept as it is.
    if (!recipeName.isEmpty())
        return recipeName == name || name.endsWith(QStringLiteral(": ") + recipeName)
                   ? name
                   : tr("%1: %2").arg(name, recipeName);
    // An unnamed recipe: a short fingerprint of its JSON tells different recipes apart.
    const std::string text = rit->is_string() ? rit->get<std::string>() : rit->dump();
    const QByteArray h =
        QCryptographicHash::hash(QByteArray::fromStdString(text), QCryptographicHash::Sha256);
    const QString tag = QStringLiteral(" #") + QString::fromLatin1(h.toHex().left(6));
    return name.endsWith(tag) ? name : name + tag;
}

QString ResultsPanel::describeSettings(const ojson& rec) {
    QStringList parts;
    const qint64 ctx = intSetting(rec, "ctx", "ctx");
    const qint64 chunks = intSetting(rec, "chunks", "chunks_limit");
    if (ctx > 0) parts << tr("ctx %1").arg(ctx);
    if (chunks > 0) parts << (chunks == 1 ? tr("1 chunk") : tr("%1 chunks").arg(chunks));
    const QString text = str(rec, "text_file");
    if (!text.isEmpty()) parts << QFileInfo(text).fileName();
    return parts.join(QStringLiteral(" · "));
}

QStringList ResultsPanel::settingsDifferences(const ojson& a, const ojson& b) {
    QStringList d;
    const qint64 ca = intSetting(a, "ctx", "ctx"), cb = intSetting(b, "ctx", "ctx");
    if (ca > 0 && cb > 0 && ca != cb) d << tr("ctx %1 vs %2").arg(ca).arg(cb);
    const qint64 na = intSetting(a, "chunks", "chunks_limit"),
                 nb = intSetting(b, "chunks", "chunks_limit");
    if (na > 0 && nb > 0 && na != nb) d << tr("chunks %1 vs %2").arg(na).arg(nb);
    const QString ta = str(a, "text_file"), tb = str(b, "text_file");
    const QString ha = str(a, "text_sha256"), hb = str(b, "text_sha256");
    const bool textDiffers =
        !ha.isEmpty() && !hb.isEmpty() ? ha != hb : !ta.isEmpty() && !tb.isEmpty() && ta != tb;
    if (textDiffers) {
        QString fa = QFileInfo(ta).fileName(), fb = QFileInfo(tb).fileName();
        if (fa == fb) fa = ta, fb = tb; // same name, other folder or content: show more
        if (fa == fb) fa = ha.left(15), fb = hb.left(15);
        d << tr("text %1 vs %2").arg(fa, fb);
    }
    return d;
}

ResultsPanel::ResultsPanel(QWidget* parent) : QWidget(parent) {
    auto* top = new QVBoxLayout(this);
    top->setContentsMargins(6, 6, 6, 6);
    auto* bar = new QHBoxLayout;
    m_pathLabel = new ElidedLabel(this); // a long path never widens the panel
    m_pathLabel->setTextInteractionFlags(Qt::TextSelectableByMouse);
    auto* open = new QPushButton(tr("Open Results File…"), this);
    auto* refresh = new QPushButton(tr("Refresh"), this);
    auto* toCompare = new QPushButton(tr("Load into Compare"), this);
    toCompare->setToolTip(tr("Show the selected record in the Compare view (no recomputation)"));
    bar->addWidget(m_pathLabel, 1);
    bar->addWidget(open);
    bar->addWidget(refresh);
    bar->addWidget(toCompare);
    top->addLayout(bar);
    connect(open, &QPushButton::clicked, this, [this] {
        const QString p = QFileDialog::getOpenFileName(this, tr("Open Results File"), m_path,
                                                       tr("Results (*.jsonl);;All files (*)"));
        if (!p.isEmpty()) setResultsPath(p);
    });
    connect(refresh, &QPushButton::clicked, this, &ResultsPanel::reload);
    connect(toCompare, &QPushButton::clicked, this, &ResultsPanel::loadSelectedIntoCompare);

    auto* split = new QSplitter(Qt::Vertical, this);
    m_recordTable = new QTableWidget(0, RecordColumns, split);
    m_recordTable->setHorizontalHeaderLabels({tr("Time (UTC)"), tr("Model"), tr("Configurations"),
                                              tr("PPL"), tr("KLD"), tr("Settings")});
    m_recordTable->setSelectionBehavior(QAbstractItemView::SelectRows);
    // Several records (Ctrl/Shift+click) are shown together, with their settings checked.
    m_recordTable->setSelectionMode(QAbstractItemView::ExtendedSelection);
    m_recordTable->setEditTriggers(QAbstractItemView::NoEditTriggers);
    m_recordTable->verticalHeader()->setVisible(false);
    m_recordTable->horizontalHeader()->setStretchLastSection(true);
    m_recordTable->setToolTip(tr("PPL: baseline, then each configuration; KLD: per configuration. "
                                 "Ctrl/Shift+click shows several records side by side; records "
                                 "measured with different settings are flagged."));
    connect(m_recordTable->selectionModel(), &QItemSelectionModel::selectionChanged, this,
            [this] { showRecords(selectedRecords()); });
    auto* lower = new QWidget(split);
    auto* ll = new QVBoxLayout(lower);
    ll->setContentsMargins(0, 0, 0, 0);
    m_info = new QLabel(lower);
    m_info->setWordWrap(true);
    m_info->setTextInteractionFlags(Qt::TextSelectableByMouse);
    ll->addWidget(m_info);
    m_metrics = new QTableWidget(0, 0, lower);
    ll->addWidget(m_metrics, 1);
    m_metrics->setEditTriggers(QAbstractItemView::NoEditTriggers);
    m_metrics->verticalHeader()->setVisible(false);
    m_metrics->setAlternatingRowColors(true);
    auto* copy = new QAction(tr("Copy as TSV"), m_metrics);
    copy->setShortcut(QKeySequence::Copy);
    copy->setShortcutContext(Qt::WidgetWithChildrenShortcut);
    connect(copy, &QAction::triggered, this, &ResultsPanel::copyMetrics);
    m_metrics->addAction(copy);
    m_metrics->setContextMenuPolicy(Qt::ActionsContextMenu);
    split->addWidget(m_recordTable);
    split->addWidget(lower);
    top->addWidget(split, 1);
    m_path = QString::fromStdString(defaultResultsPath());
    m_pathLabel->setText(m_path);
}

void ResultsPanel::setResultsPath(const QString& path) {
    m_path = path.isEmpty() ? QString::fromStdString(defaultResultsPath()) : path;
    m_pathLabel->setText(m_path);
    reload();
}

int ResultsPanel::reload() {
    m_records.clear();
    try {
        ResultsFile f = loadResults(m_path.toStdString());
        for (const auto& w : f.warnings) emit logWarning(QString::fromStdString(w));
        m_records = std::move(f.records);
    } catch (const std::exception& e) {
        emit logWarning(tr("Results: %1").arg(QString::fromUtf8(e.what())));
    }
    m_recordTable->clearSelection();
    m_recordTable->setRowCount(int(m_records.size()));
    for (int i = 0; i < int(m_records.size()); ++i) {
        const ojson& r = m_records[size_t(i)];
        const auto cols = columnsOf(r);
        QStringList names, ppls, klds;
        for (size_t k = 0; k < cols.size(); ++k) {
            if (k > 0) {
                names << configLabel(*cols[k]);
                klds << fmtNum(kldMean(*cols[k]), 5);
            }
            ppls << fmtNum(num(*cols[k], "ppl"), 3);
        }
        QString configs = names.join(QStringLiteral(", "));
        QString configsTip;
        if (isSensitivityRecord(r)) {
            // A scan: its schemes, and per scheme the largest per-target KLD.
            QStringList schemes;
            klds.clear();
            for (const ojson& sc : r["sensitivity"]) {
                if (!sc.is_object()) continue;
                schemes << str(sc, "scheme");
                const ojson most = sc.contains("most_sensitive") && sc["most_sensitive"].is_object()
                                       ? sc["most_sensitive"]
                                       : ojson::object();
                klds << fmtNum(num(most, "kld"), 5);
                configsTip +=
                    tr("%1: most sensitive %2\n").arg(str(sc, "scheme"), str(most, "target"));
            }
            configs = tr("sensitivity (%1): %2")
                          .arg(str(r, "granularity"), schemes.join(QStringLiteral(", ")));
            configsTip += tr("KLD: the largest mean KLD of one target per scheme");
        }
        const QString items[] = {str(r, "timestamp"),
                                 QFileInfo(str(r, "model")).fileName(),
                                 configs,
                                 ppls.join(QStringLiteral(" / ")),
                                 klds.join(QStringLiteral(" / ")),
                                 describeSettings(r)};
        for (int c = 0; c < RecordColumns; ++c) {
            auto* it = new QTableWidgetItem(items[c]);
            if (c == TimeColumn) it->setToolTip(str(r, "id"));
            if (c == ModelColumn) it->setToolTip(str(r, "model"));
            if (c == ConfigsColumn && !configsTip.isEmpty()) it->setToolTip(configsTip);
            if (c == KldColumn && !configsTip.isEmpty()) it->setToolTip(configsTip);
            if (c == SettingsColumn) it->setToolTip(str(r, "text_file"));
            m_recordTable->setItem(i, c, it);
        }
    }
    m_recordTable->resizeColumnsToContents();
    showRecord(-1);
    emit logMessage(tr("Results: %1 record(s) in %2").arg(m_records.size()).arg(m_path));
    return int(m_records.size());
}

void ResultsPanel::selectRecord(int row) {
    if (row < 0 || row >= m_recordTable->rowCount()) return m_recordTable->clearSelection();
    selectRecords({row});
}

void ResultsPanel::selectRecords(const QList<int>& rows) {
    QItemSelection sel;
    for (int r : rows)
        if (r >= 0 && r < m_recordTable->rowCount())
            sel.select(m_recordTable->model()->index(r, 0),
                       m_recordTable->model()->index(r, RecordColumns - 1));
    m_recordTable->selectionModel()->select(sel, QItemSelectionModel::ClearAndSelect |
                                                     QItemSelectionModel::Rows);
    if (!rows.isEmpty() && rows.front() >= 0 && rows.front() < m_recordTable->rowCount())
        m_recordTable->selectionModel()->setCurrentIndex(
            m_recordTable->model()->index(rows.front(), 0), QItemSelectionModel::NoUpdate);
}

int ResultsPanel::selectedRecord() const {
    const QList<int> rows = selectedRecords();
    return rows.isEmpty() ? -1 : rows.first();
}

QList<int> ResultsPanel::selectedRecords() const {
    QList<int> rows;
    for (const QModelIndex& i : m_recordTable->selectionModel()->selectedRows()) rows << i.row();
    std::sort(rows.begin(), rows.end());
    return rows;
}

QString ResultsPanel::infoText() const {
    return m_info->text();
}

void ResultsPanel::showRecord(int row) {
    showRecords(row < 0 ? QList<int>() : QList<int>{row});
}

namespace {

/// The configurations of every selected record, each with its record; sensitivity scans (no
/// configurations) are left out.
struct MetricColumns {
    std::vector<const ojson*> cols;
    std::vector<int> record;
    std::vector<bool> isBase;
};

MetricColumns metricColumns(const std::vector<ojson>& records, const QList<int>& rows) {
    MetricColumns m;
    for (int r : rows) {
        const ojson& rec = records[size_t(r)];
        if (ResultsPanel::isSensitivityRecord(rec)) continue;
        const bool hasBase = rec.contains("baseline") && rec["baseline"].is_object();
        const auto cs = columnsOf(rec);
        for (size_t k = 0; k < cs.size(); ++k) {
            m.cols.push_back(cs[k]);
            m.record.push_back(r);
            m.isBase.push_back(hasBase && k == 0);
        }
    }
    return m;
}

/// Task names in order of first appearance.
QStringList taskNames(const std::vector<const ojson*>& cols) {
    QStringList tasks;
    for (const ojson* c : cols)
        if (c->contains("tasks") && (*c)["tasks"].is_object())
            for (const auto& [t, v] : (*c)["tasks"].items())
                if (!tasks.contains(QString::fromStdString(t))) tasks << QString::fromStdString(t);
    return tasks;
}

} // namespace

void ResultsPanel::showRecords(const QList<int>& rowsIn) {
    m_metrics->clear();
    m_metrics->setRowCount(0);
    m_metrics->setColumnCount(0);
    m_warning.clear();
    m_info->clear();
    m_info->setStyleSheet(QString());
    QList<int> rows;
    for (int r : rowsIn)
        if (r >= 0 && r < int(m_records.size())) rows << r;
    if (rows.isEmpty()) return;
    const int row = rows.front();
    if (rows.size() == 1 && isSensitivityRecord(m_records[size_t(row)])) {
        const QString set = describeSettings(m_records[size_t(row)]);
        m_info->setText(set.isEmpty() ? QString() : tr("Measured with %1").arg(set));
        return showSensitivityRecord(m_records[size_t(row)]);
    }
    const MetricColumns cols = metricColumns(m_records, rows);
    const std::map<int, QStringList> differs = checkSettings(rows);
    const QStringList tasks = taskNames(cols.cols);
    const bool multi = rows.size() > 1;
    QStringList header = {tr("Configuration"), tr("Bits/w"),        tr("Size"),
                          tr("PPL"),           tr("KLD"),           tr("KLD p99"),
                          tr("Same top %"),    tr("Prefill tok/s"), tr("Decode tok/s"),
                          tr("Peak RSS"),      tr("KV B/token")};
    for (const QString& t : tasks) header << tr("%1 acc %").arg(t);
    // Several records: which record and settings each row comes from.
    if (multi) header << tr("Record") << tr("Settings");
    m_metrics->setColumnCount(int(header.size()));
    m_metrics->setHorizontalHeaderLabels(header);
    m_metrics->setRowCount(int(cols.cols.size()));
    for (int i = 0; i < int(cols.cols.size()); ++i) {
        QStringList cells = metricCells(*cols.cols[size_t(i)], cols.isBase[size_t(i)], tasks);
        const int rec = cols.record[size_t(i)];
        const auto diff = differs.find(rec);
        const QStringList* differences = diff != differs.end() ? &diff->second : nullptr;
        if (multi) {
            cells << str(m_records[size_t(rec)], "timestamp")
                  << (differences ? QStringLiteral("≠ ") : QString()) +
                         describeSettings(m_records[size_t(rec)]);
        }
        setMetricRow(i, cells, multi ? 2 : 0, differences);
    }
    m_metrics->resizeColumnsToContents();
}

std::map<int, QStringList> ResultsPanel::checkSettings(const QList<int>& rows) {
    // Settings: the first record's are the reference; every other record is checked against it.
    const int row = rows.front();
    const ojson& ref = m_records[size_t(row)];
    std::map<int, QStringList> differs;
    QStringList allDiffs;
    for (int r : rows) {
        if (r == row) continue;
        const QStringList d = settingsDifferences(ref, m_records[size_t(r)]);
        if (d.isEmpty()) continue;
        differs[r] = d;
        for (const QString& x : d)
            if (!allDiffs.contains(x)) allDiffs << x;
    }
    if (!allDiffs.isEmpty()) {
        m_warning = tr("Not comparable: the selected records were measured with different "
                       "settings (%1). Their numbers are shown side by side; rows marked ≠ "
                       "differ from the first record (%2).")
                        .arg(allDiffs.join(QStringLiteral("; ")), describeSettings(ref));
        m_info->setText(QStringLiteral("⚠ ") + m_warning);
        m_info->setStyleSheet(QStringLiteral("color: #b35c00; font-weight: bold;"));
    } else {
        const QString set = describeSettings(ref);
        if (!set.isEmpty())
            m_info->setText(rows.size() > 1 ? tr("All measured with %1").arg(set)
                                            : tr("Measured with %1").arg(set));
    }
    return differs;
}

QStringList ResultsPanel::metricCells(const ojson& c, bool base, const QStringList& tasks) {
    const ojson kld = c.contains("kld") && c["kld"].is_object() ? c["kld"] : ojson::object();
    const double bytes = num(c, "model_bytes");
    const double decode = c.contains("speed") && c["speed"].is_object()
                              ? num(c["speed"], "decode_tokens_per_second")
                              : std::nan("");
    QStringList cells = {str(c, "name").isEmpty() && base ? tr("baseline") : configLabel(c),
                         fmtNum(num(c, "bits_per_weight"), 3),
                         std::isnan(bytes) ? QStringLiteral("—") : formatBytes(uint64_t(bytes)),
                         fmtPm(num(c, "ppl"), num(c, "ppl_se"), 4),
                         base ? QStringLiteral("—") : fmtPm(num(kld, "mean"), num(kld, "se"), 5),
                         base ? QStringLiteral("—") : fmtNum(num(kld, "p99"), 5),
                         base ? QStringLiteral("—")
                              : fmtPm(num(c, "same_top_percent"), num(c, "same_top_percent_se"), 2),
                         fmtNum(num(c, "prefill_tokens_per_second"), 1),
                         fmtNum(decode, 1),
                         !(num(c, "peak_rss_bytes") > 0)
                             ? QStringLiteral("—")
                             : formatBytes(uint64_t(num(c, "peak_rss_bytes"))),
                         fmtNum(num(c, "kv_cache_bytes_per_token"), 1)};
    for (const QString& t : tasks) {
        const std::string key = t.toStdString();
        if (c.contains("tasks") && c["tasks"].contains(key)) {
            const ojson& tj = c["tasks"][key];
            cells << fmtPm(num(tj, "acc") * 100.0, num(tj, "acc_se") * 100.0, 2);
        } else {
            cells << QStringLiteral("—");
        }
    }
    return cells;
}

void ResultsPanel::setMetricRow(int row, const QStringList& cells, int extra,
                                const QStringList* differences) {
    for (int k = 0; k < int(cells.size()); ++k) {
        auto* it = new QTableWidgetItem(cells[k]);
        if (k > 0 && k < int(cells.size()) - extra)
            it->setTextAlignment(Qt::AlignRight | Qt::AlignVCenter);
        if (differences) {
            it->setForeground(QColor(0xb3, 0x5c, 0x00));
            it->setToolTip(tr("Measured differently from the first record: %1")
                               .arg(differences->join(QStringLiteral("; "))));
        }
        m_metrics->setItem(row, k, it);
    }
}

void ResultsPanel::showSensitivityRecord(const ojson& rec) {
    const QStringList header = {tr("Scheme"),          tr("Targets"),        tr("Bits/w"),
                                tr("Summed KLD"),      tr("Most sensitive"), tr("Its KLD"),
                                tr("Least sensitive"), tr("Its KLD"),        tr("Skipped")};
    m_metrics->setColumnCount(int(header.size()));
    m_metrics->setHorizontalHeaderLabels(header);
    std::vector<const ojson*> schemes;
    for (const ojson& sc : rec["sensitivity"])
        if (sc.is_object()) schemes.push_back(&sc);
    m_metrics->setRowCount(int(schemes.size()));
    for (int i = 0; i < int(schemes.size()); ++i) {
        const ojson& sc = *schemes[size_t(i)];
        auto sub = [&](const char* key) {
            return sc.contains(key) && sc[key].is_object() ? sc[key] : ojson::object();
        };
        const ojson most = sub("most_sensitive"), least = sub("least_sensitive");
        const QStringList cells = {str(sc, "scheme"),
                                   fmtNum(num(sc, "targets"), 0),
                                   fmtNum(num(sc, "bits_per_weight"), 3),
                                   fmtNum(num(sc, "kld_sum"), 5),
                                   str(most, "target"),
                                   fmtNum(num(most, "kld"), 5),
                                   str(least, "target"),
                                   fmtNum(num(least, "kld"), 5),
                                   fmtNum(num(sc, "skipped"), 0)};
        for (int k = 0; k < int(cells.size()); ++k) {
            auto* it = new QTableWidgetItem(cells[k]);
            if (k != 0 && k != 4 && k != 6) it->setTextAlignment(Qt::AlignRight | Qt::AlignVCenter);
            m_metrics->setItem(i, k, it);
        }
    }
    m_metrics->resizeColumnsToContents();
}

QString ResultsPanel::metricsTsv() const {
    QStringList lines;
    QStringList h;
    for (int c = 0; c < m_metrics->columnCount(); ++c)
        h << m_metrics->horizontalHeaderItem(c)->text();
    if (h.isEmpty()) return QString();
    lines << h.join(QLatin1Char('\t'));
    for (int r = 0; r < m_metrics->rowCount(); ++r) {
        QStringList cells;
        for (int c = 0; c < m_metrics->columnCount(); ++c)
            cells << (m_metrics->item(r, c) ? m_metrics->item(r, c)->text() : QString());
        lines << cells.join(QLatin1Char('\t'));
    }
    return lines.join(QLatin1Char('\n')) + QLatin1Char('\n');
}

QString ResultsPanel::copyMetrics() {
    const QString t = metricsTsv();
    if (!t.isEmpty()) QApplication::clipboard()->setText(t);
    return t;
}

bool ResultsPanel::loadSelectedIntoCompare() {
    const int row = selectedRecord();
    if (row < 0) return false;
    if (isSensitivityRecord(m_records[size_t(row)])) {
        emit logWarning(tr("Results: record %1 is a sensitivity scan, not a comparison (its "
                           "metrics are shown here)")
                            .arg(str(m_records[size_t(row)], "id")));
        return false;
    }
    if (selectedRecords().size() > 1)
        emit logWarning(tr("Results: %1 records selected; the Compare view shows one record, the "
                           "first (%2)")
                            .arg(selectedRecords().size())
                            .arg(str(m_records[size_t(row)], "id")));
    try {
        emit loadIntoCompare(toCompareResults(m_records[size_t(row)]));
        emit logMessage(tr("Results: record %1 shown in the Compare view")
                            .arg(str(m_records[size_t(row)], "id")));
        return true;
    } catch (const std::exception& e) {
        emit logWarning(tr("Results: %1").arg(QString::fromUtf8(e.what())));
        return false;
    }
}

CompareResults ResultsPanel::toCompareResults(const ojson& rec) {
    if (!rec.contains("baseline") || !rec["baseline"].is_object())
        throw std::runtime_error("record " + rec.value("id", std::string("?")) +
                                 " has no baseline column");
    CompareResults out;
    const ojson settings = rec.contains("settings") ? rec["settings"] : ojson::object();
    out.ctx = qint64(rec.value("ctx", settings.value("ctx", 0)));
    out.chunks = qint64(rec.value("chunks", 0));
    out.scoredTokens = qint64(rec.value("scored_tokens", 0));
    out.seconds = rec.contains("timings") ? rec["timings"].value("total_seconds", 0.0) : 0.0;
    const auto nz = [](double v) { return std::isnan(v) ? 0.0 : v; };
    const auto cols = columnsOf(rec);
    for (size_t k = 0; k < cols.size(); ++k) {
        const ojson& c = *cols[k];
        CompareRow row;
        row.name = str(c, "name");
        if (k == 0 && (row.name.isEmpty() || row.name == QStringLiteral("baseline")))
            row.name = ComparePanel::originalName();
        if (c.contains("recipe") && !c["recipe"].is_null())
            row.recipeJson = QString::fromStdString(c["recipe"].dump());
        if (str(c, "kind") == QStringLiteral("model")) row.modelFile = str(c, "source");
        row.bitsPerWeight = nz(num(c, "bits_per_weight"));
        row.bytes = quint64(nz(num(c, "model_bytes")));
        row.ppl = nz(num(c, "ppl"));
        row.pplError = nz(num(c, "ppl_se"));
        if (k == 0) {
            row.sameTop = 1.0;
        } else {
            const ojson kld = c.contains("kld") && c["kld"].is_object() ? c["kld"] : ojson();
            if (kld.is_object()) {
                row.kld = nz(num(kld, "mean"));
                row.kldError = nz(num(kld, "se"));
                row.kldP99 = nz(num(kld, "p99"));
            }
            row.sameTop = nz(num(c, "same_top_percent")) / 100.0;
            row.sameTopError = nz(num(c, "same_top_percent_se")) / 100.0;
        }
        row.tokensPerSecond = nz(num(c, "prefill_tokens_per_second"));
        row.kvBytesPerToken = nz(num(c, "kv_cache_bytes_per_token"));
        if (c.contains("speed") && c["speed"].is_object())
            row.decodeTokensPerSecond = nz(num(c["speed"], "decode_tokens_per_second"));
        // The compare view's own records: the increase over the resident set before the run
        // (eval records have only the absolute peak, which the Compare view does not show).
        row.weightBytes = quint64(nz(num(c, "resident_weight_bytes")));
        const double increase = num(c, "peak_rss_increase_bytes");
        if (!std::isnan(increase)) {
            row.peakRssBytes = quint64(increase);
            row.rssBeforeBytes = quint64(std::max(0.0, nz(num(c, "peak_rss_bytes")) - increase));
        }
        out.rows.push_back(std::move(row));
    }
    // Task accuracies: the union of the record's task names, in order, for every row.
    QStringList tasks;
    for (const ojson* c : cols)
        if (c->contains("tasks") && (*c)["tasks"].is_object())
            for (const auto& [t, v] : (*c)["tasks"].items())
                if (!tasks.contains(QString::fromStdString(t))) tasks << QString::fromStdString(t);
    for (size_t k = 0; k < cols.size(); ++k) {
        const ojson& c = *cols[k];
        for (const QString& t : tasks) {
            CompareTask ct;
            ct.name = t;
            const std::string key = t.toStdString();
            if (c.contains("tasks") && c["tasks"].is_object() && c["tasks"].contains(key)) {
                const ojson& tj = c["tasks"][key];
                ct.items = qint64(nz(num(tj, "items")));
                ct.acc = nz(num(tj, "acc"));
                ct.accError = nz(num(tj, "acc_se"));
            }
            out.rows[k].tasks.push_back(ct);
        }
    }
    if (rec.contains("speed_run") && rec["speed_run"].is_object()) {
        const ojson& sr = rec["speed_run"];
        out.speedPromptTokens = qint64(nz(num(sr, "prompt_tokens")));
        out.speedDecodeTokens = qint64(nz(num(sr, "decode_tokens")));
        out.peakRssFromHwm = sr.value("peak_rss", std::string()).rfind("VmHWM", 0) == 0;
    }
    out.baseline = out.rows.front().name;
    return out;
}

ojson ResultsPanel::compareRecord(const CompareResults& r, const QString& modelPath,
                                  const QString& textFile) {
    ojson j;
    j["source"] = "gui compare";
    j["model"] = modelPath.toStdString();
    j["text_file"] = textFile.toStdString();
    j["mode"] = "llamacpp";
    j["ctx"] = r.ctx;
    j["chunks"] = r.chunks;
    j["scored_tokens"] = r.scoredTokens;
    j["settings"] = {{"ctx", r.ctx}, {"chunks_limit", r.chunks}, {"mode", "llamacpp"}};
    auto column = [&r](const CompareRow& row, bool base) {
        ojson c;
        c["name"] = row.name.toStdString();
        c["kind"] = !row.modelFile.isEmpty()   ? "model"
                    : row.recipeJson.isEmpty() ? "original"
                                               : "recipe";
        if (!row.modelFile.isEmpty()) c["source"] = row.modelFile.toStdString();
        if (!row.recipeJson.isEmpty()) {
            try {
                c["recipe"] = parseOrderedJsonText(row.recipeJson.toStdString(),
                                                   "recipe " + row.name.toStdString());
            } catch (const std::exception&) {
                c["recipe"] = row.recipeJson.toStdString();
            }
            // The recipe's own name: two recipes run as "editor recipe" stay apart.
            if (c["recipe"].is_object() && c["recipe"].contains("name") &&
                c["recipe"]["name"].is_string() && !c["recipe"]["name"].get<std::string>().empty())
                c["recipe_name"] = c["recipe"]["name"];
        }
        c["label"] = configLabel(c).toStdString();
        c["bits_per_weight"] = row.bitsPerWeight;
        c["model_bytes"] = row.bytes;
        c["ppl"] = row.ppl;
        c["ppl_se"] = row.pplError;
        if (!base) {
            c["kld"] = {{"mean", row.kld}, {"se", row.kldError}, {"p99", row.kldP99}};
            c["same_top_percent"] = row.sameTop * 100.0;
            c["same_top_percent_se"] = row.sameTopError * 100.0;
        }
        c["prefill_tokens_per_second"] = row.tokensPerSecond;
        if (row.kvBytesPerToken > 0) c["kv_cache_bytes_per_token"] = row.kvBytesPerToken;
        if (r.speedDecodeTokens > 0) {
            // eval's keys (speed.decode_*, peak_rss_bytes: the absolute peak of the run), and
            // the Compare view's increase and weight bytes.
            c["speed"] = {{"decode_tokens", r.speedDecodeTokens},
                          {"decode_tokens_per_second", row.decodeTokensPerSecond}};
            c["peak_rss_bytes"] = row.rssBeforeBytes + row.peakRssBytes;
            c["peak_rss_increase_bytes"] = row.peakRssBytes;
            c["resident_weight_bytes"] = row.weightBytes;
        }
        if (!row.tasks.empty()) {
            ojson tj = ojson::object();
            for (const CompareTask& t : row.tasks)
                tj[t.name.toStdString()] = {
                    {"items", t.items}, {"acc", t.acc}, {"acc_se", t.accError}};
            c["tasks"] = tj;
        }
        return c;
    };
    // The compare view's baseline is one of its rows (first): the store's "baseline" column.
    if (!r.rows.empty()) j["baseline"] = column(r.rows.front(), true);
    ojson cs = ojson::array();
    for (size_t k = 1; k < r.rows.size(); ++k) cs.push_back(column(r.rows[k], false));
    j["configs"] = cs;
    j["timings"] = {{"total_seconds", r.seconds}};
    if (r.speedDecodeTokens > 0)
        j["speed_run"] = {{"prompt_tokens", r.speedPromptTokens},
                          {"decode_tokens", r.speedDecodeTokens},
                          {"peak_rss", r.peakRssFromHwm ? "VmHWM reset by /proc/self/clear_refs"
                                                        : "VmRSS sampled per token"}};
    return j;
}

QString ResultsPanel::appendRecord(const std::function<ojson()>& record, const QString& what) {
    try {
        const std::string id = appendResult(m_path.toStdString(), record());
        reload();
        emit logMessage(tr("Results: %1 recorded as %2").arg(what, QString::fromStdString(id)));
        return QString::fromStdString(id);
    } catch (const std::exception& e) {
        emit logWarning(
            tr("Results: could not record the %1: %2").arg(what, QString::fromUtf8(e.what())));
        return QString();
    }
}

QString ResultsPanel::appendCompare(const CompareResults& r, const QString& modelPath,
                                    const QString& textFile) {
    return appendRecord([&] { return compareRecord(r, modelPath, textFile); }, tr("comparison"));
}

bool ResultsPanel::isSensitivityRecord(const ojson& record) {
    return record.is_object() && record.value("kind", ojson()) == "sensitivity" &&
           record.contains("sensitivity") && record["sensitivity"].is_array();
}

ojson ResultsPanel::sensitivityRecord(const SensitivityScan& s, const QString& modelPath,
                                      const QString& textFile) {
    ojson j;
    j["kind"] = "sensitivity";
    j["source"] = "gui sensitivity";
    j["model"] = modelPath.toStdString();
    j["model_fingerprint"] = s.baseFingerprint;
    j["text_file"] = textFile.toStdString();
    j["mode"] = "llamacpp";
    j["ctx"] = s.ctx;
    j["chunks"] = s.chunks;
    j["scored_tokens"] = s.scoredTokens;
    j["granularity"] = sensitivityGranularityName(s.granularity);
    ojson names = ojson::array();
    for (const SchemeScan& ss : s.schemes) names.push_back(ss.scheme.name);
    j["settings"] = {{"ctx", s.ctx},
                     {"chunks_limit", s.chunks},
                     {"mode", "llamacpp"},
                     {"granularity", sensitivityGranularityName(s.granularity)},
                     {"schemes", names}};
    j["baseline"] = {{"name", "baseline"}, {"kind", "model"}, {"ppl", s.baselinePpl}};
    j["configs"] = ojson::array();
    ojson schemes = ojson::array();
    for (const SchemeScan& ss : s.schemes) {
        int64_t params = 0;
        uint64_t bits = 0;
        double kldSum = 0;
        const SensitivityEntry *most = nullptr, *least = nullptr;
        for (const SensitivityEntry& e : ss.entries) {
            params += e.params;
            bits += e.bits;
            kldSum += e.stats.kld.mean;
            if (!most || e.stats.kld.mean > most->stats.kld.mean) most = &e;
            if (!least || e.stats.kld.mean < least->stats.kld.mean) least = &e;
        }
        auto target = [](const SensitivityEntry* e) {
            return e ? ojson{{"target", e->target}, {"kld", e->stats.kld.mean}} : ojson(nullptr);
        };
        schemes.push_back({{"scheme", ss.scheme.name},
                           {"targets", ss.entries.size()},
                           {"skipped", ss.skipped.size()},
                           {"params", params},
                           {"bits_per_weight", params ? double(bits) / double(params) : 0.0},
                           {"kld_sum", kldSum},
                           {"most_sensitive", target(most)},
                           {"least_sensitive", target(least)}});
    }
    j["sensitivity"] = schemes;
    j["timings"] = {{"total_seconds", s.seconds}};
    j["lcw_version"] = version();
    return j;
}

QString ResultsPanel::appendSensitivity(const SensitivityScan& s, const QString& modelPath,
                                        const QString& textFile) {
    return appendRecord([&] { return sensitivityRecord(s, modelPath, textFile); },
                        tr("sensitivity scan"));
}

} // namespace lcw
