#include "widgets/imatrix_manager.h"

#include "core/common/error.h"
#include "core/common/json_file.h"

#include <QByteArray>
#include <QDir>
#include <QFileInfo>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cstring>

namespace lcw {

ImatrixManager::ImatrixManager(TaskRunner* runner, QObject* parent)
    : QObject(parent), m_runner(runner) {}

void ImatrixManager::setModel(std::shared_ptr<const Model> model) {
    if (m_job) cancel();
    m_model = std::move(model);
    m_targets.reset();
    const bool had = bool(m_imatrix);
    m_imatrix.reset();
    m_path.clear();
    if (had) emit changed();
}

const std::vector<compress::ImatrixTarget>& ImatrixManager::targets() const {
    // Pure name and shape logic over the model's tensors: cheap, computed once per model.
    if (!m_targets)
        m_targets =
            m_model ? compress::imatrixTargets(*m_model) : std::vector<compress::ImatrixTarget>{};
    return *m_targets;
}

std::optional<ImatrixManager::Target> ImatrixManager::targetOf(const std::string& canonical) const {
    for (const compress::ImatrixTarget& t : targets()) {
        const auto it = std::find(t.canonical.begin(), t.canonical.end(), canonical);
        if (it == t.canonical.end()) continue;
        // A merged MoE entry lists its experts' tensors in expert order.
        const int expert = t.experts > 1 ? int(it - t.canonical.begin()) % int(t.experts) : -1;
        return Target{t.name, expert};
    }
    return std::nullopt;
}

QString ImatrixManager::llamaNameOf(const QString& canonical) const {
    const auto t = targetOf(canonical.toStdString());
    return t ? QString::fromStdString(t->name) : QString();
}

std::optional<ImatrixProfile> ImatrixManager::profileOf(const QString& canonical) const {
    if (!m_imatrix || !m_model) return std::nullopt;
    const std::string name = canonical.toStdString();
    const auto t = targetOf(name);
    const compress::ImatrixEntry* e = t ? m_imatrix->find(t->name) : nullptr;
    if (!e) return std::nullopt;
    std::vector<float> values;
    try {
        values = compress::importanceFor(*m_imatrix, *m_model, name);
    } catch (const std::exception&) {
        return std::nullopt; // checked when installed; a mismatch here shows nothing
    }
    if (values.empty()) return std::nullopt;
    ImatrixProfile p;
    p.llamaName = QString::fromStdString(t->name);
    p.expert = t->expert;
    p.ncall = e->ncall;
    p.values = QVector<double>(values.begin(), values.end());
    return p;
}

QString ImatrixManager::describe() const {
    if (!m_imatrix) return {};
    const QString where = m_path.isEmpty() ? tr("computed, not saved")
                                           : QDir::toNativeSeparators(QFileInfo(m_path).fileName());
    QString text = tr("%1 · %n entries", nullptr, int(m_imatrix->entries.size())).arg(where);
    if (m_imatrix->chunks > 0) text += tr(" · %n chunk(s)", nullptr, m_imatrix->chunks);
    if (!m_imatrix->dataset.empty())
        text += tr(" of %1").arg(QFileInfo(QString::fromStdString(m_imatrix->dataset)).fileName());
    return text;
}

void ImatrixManager::install(std::shared_ptr<const compress::Imatrix> m, const QString& path) {
    m_imatrix = std::move(m);
    m_path = path;
    emit changed();
}

void ImatrixManager::clear() {
    if (!m_imatrix) return;
    install(nullptr, {});
}

bool ImatrixManager::adopt(compress::Imatrix m, const QString& path, const QString& origin) {
    m_lastError.clear();
    if (!m_model) {
        m_lastError = tr("%1: open a model first").arg(origin);
        return false;
    }
    try {
        compress::checkImatrix(m, *m_model);
    } catch (const std::exception& e) {
        m_lastError = QString::fromUtf8(e.what());
        return false;
    }
    install(std::make_shared<const compress::Imatrix>(std::move(m)), path);
    return true;
}

bool ImatrixManager::open(const QString& path) {
    m_lastError.clear();
    if (!m_model) {
        m_lastError = tr("%1: open a model first").arg(QDir::toNativeSeparators(path));
        return false;
    }
    compress::Imatrix m;
    try {
        // A few megabytes even for large models: read here, like a recipe or a scan file.
        m = compress::readImatrix(path.toStdString());
    } catch (const std::exception& e) {
        m_lastError = QString::fromUtf8(e.what());
        return false;
    }
    if (!adopt(std::move(m), path, QDir::toNativeSeparators(path))) return false;
    emit logMessage(
        tr("Opened importance matrix %1 (%2)").arg(QDir::toNativeSeparators(path), describe()));
    return true;
}

bool ImatrixManager::save(const QString& path) {
    m_lastError.clear();
    if (!m_imatrix) {
        m_lastError = tr("There is no importance matrix to save.");
        return false;
    }
    try {
        compress::writeImatrix(*m_imatrix, path.toStdString());
    } catch (const std::exception& e) {
        m_lastError = QString::fromUtf8(e.what());
        return false;
    }
    m_path = path;
    emit logMessage(tr("Saved importance matrix %1").arg(QDir::toNativeSeparators(path)));
    emit changed();
    return true;
}

bool ImatrixManager::compute(const ImatrixSettings& settings) {
    m_lastError.clear();
    if (!m_model || !m_model->hasTokenizer()) {
        m_lastError = m_model ? tr("The model has no tokenizer: an importance matrix needs "
                                   "calibration text.")
                              : tr("Open a model first.");
        return false;
    }
    if (m_job) {
        m_lastError = tr("An importance matrix is already being computed.");
        return false;
    }
    m_settings = settings;
    const std::shared_ptr<const Model> model = m_model;
    const std::string text = settings.textFile.toStdString();
    const int64_t seqLen = settings.seqLen, samples = settings.samples;
    using Result = std::shared_ptr<const compress::ImatrixResult>;
    std::function<Result(Progress&)> job = [model, text, seqLen, samples](Progress& p) -> Result {
        p.report(0.0, "tokenising");
        const compress::CalibrationSet cal =
            compress::imatrixCalibration(*model, text, seqLen, samples);
        compress::ImatrixOptions o;
        o.dataset = cal.source;
        auto r =
            std::make_shared<compress::ImatrixResult>(compress::computeImatrix(*model, cal, o, p));
        if (r->status == Status::Ok && r->imatrix.entries.empty())
            throw Error("imatrix: no linear saw enough tokens (llama.cpp collects products of "
                        "16 tokens or more; use a longer sequence length)");
        return r;
    };
    auto self = std::make_shared<TaskRunner::JobId>(0);
    const std::shared_ptr<const Model> forModel = m_model;
    *self = m_runner->submit<Result>(
        tr("Importance matrix (%1 × %2 tokens)")
            .arg(samples > 0 ? QString::number(samples) : tr("all"))
            .arg(seqLen),
        std::move(job), this,
        [this, self, forModel](Result r) {
            if (m_job == *self) m_job = 0;
            if (!r || r->status != Status::Ok) {
                emit cancelled();
                return;
            }
            if (forModel != m_model) return; // another model since
            for (const std::string& p : r->partial)
                emit logMessage(tr("imatrix: '%1' left out: some experts saw no calibration "
                                   "token (as llama-imatrix does)")
                                    .arg(QString::fromStdString(p)));
            install(std::make_shared<const compress::Imatrix>(r->imatrix), {});
            emit logMessage(tr("Computed importance matrix: %1 tensors, %2 chunks, %3 tokens in "
                               "%4 s")
                                .arg(r->imatrix.entries.size())
                                .arg(r->chunks)
                                .arg(r->tokens)
                                .arg(r->seconds, 0, 'f', 2));
            emit computed();
        },
        [this, self](const QString& message) {
            if (m_job == *self) m_job = 0;
            m_lastError = message;
            emit failed(message);
        },
        [this, self] {
            if (m_job == *self) m_job = 0;
            emit cancelled();
        });
    m_job = *self;
    return true;
}

void ImatrixManager::cancel() {
    if (m_job) m_runner->cancel(m_job);
}

// ---------------------------------------------------------------------------------------------
// Project form

namespace {

QByteArray floatsToBase64(const std::vector<float>& v) {
    QByteArray raw(qsizetype(v.size() * sizeof(float)), Qt::Uninitialized);
    static_assert(std::endian::native == std::endian::little, "the project stores float32 LE");
    std::memcpy(raw.data(), v.data(), size_t(raw.size()));
    return raw.toBase64();
}

} // namespace

std::string ImatrixManager::toJson() const {
    if (!m_imatrix) return {};
    nlohmann::json j;
    j["path"] = m_path.toStdString();
    j["dataset"] = m_imatrix->dataset;
    j["chunks"] = m_imatrix->chunks;
    nlohmann::json entries = nlohmann::json::array();
    for (const compress::ImatrixEntry& e : m_imatrix->entries)
        entries.push_back({{"name", e.name},
                           {"ncall", e.ncall},
                           {"values_f32le_base64", floatsToBase64(e.values).toStdString()}});
    j["entries"] = std::move(entries);
    return j.dump();
}

compress::Imatrix ImatrixManager::fromJson(const std::string& text, const std::string& origin,
                                           QString* path) {
    compress::Imatrix m;
    try {
        const nlohmann::json j = parseJsonText(text, origin);
        if (path) *path = QString::fromStdString(j.value("path", std::string()));
        m.dataset = j.value("dataset", std::string());
        m.chunks = j.value("chunks", 0);
        m.source = origin;
        for (const auto& e : j.at("entries")) {
            compress::ImatrixEntry out;
            out.name = e.at("name").get<std::string>();
            out.ncall = e.at("ncall").get<int32_t>();
            const QByteArray raw = QByteArray::fromBase64(
                QByteArray::fromStdString(e.at("values_f32le_base64").get<std::string>()),
                QByteArray::AbortOnBase64DecodingErrors);
            if (raw.isEmpty() || raw.size() % qsizetype(sizeof(float)) != 0)
                throw FormatError(origin, "imatrix entry '" + out.name + "': bad values");
            out.values.resize(size_t(raw.size()) / sizeof(float));
            std::memcpy(out.values.data(), raw.constData(), size_t(raw.size()));
            m.entries.push_back(std::move(out));
        }
    } catch (const FormatError&) {
        throw;
    } catch (const std::exception& e) {
        throw FormatError(origin, std::string("imatrix: ") + e.what());
    }
    return m;
}

} // namespace lcw
