#pragma once
/// \file
/// The workbench's importance matrix (llama.cpp's imatrix, core/compress/imatrix.h): computed on
/// the TaskRunner (Run ▸ Compute Importance Matrix…, with progress and cancel) or opened from a
/// legacy `.dat` file (File ▸ Open Importance Matrix…, checked against the open model), saved
/// atomically, and looked up per canonical tensor for the statistics inspector's per-channel
/// plot (imatrixTargets() maps lcw's names to llama.cpp's). All numbers come from core.
#include "core/compress/imatrix.h"
#include "core/model/model.h"
#include "widgets/task_runner.h"

#include <QObject>
#include <QString>
#include <QVector>

#include <memory>
#include <optional>
#include <vector>

namespace lcw {

/// What Run ▸ Compute Importance Matrix… asks for (llama-imatrix's defaults: -c 512, every
/// whole chunk of the text).
struct ImatrixSettings {
    int seqLen = 512; ///< tokens per chunk (llama-imatrix -c)
    int samples = 0;  ///< chunks (--chunks); 0: every whole chunk the text holds
    QString textFile; ///< empty: the bundled calibration text
    bool operator==(const ImatrixSettings&) const = default;
};

/// One tensor's importance as the inspector draws it.
struct ImatrixProfile {
    QVector<double> values; ///< mean x² per input column (Imatrix::importance)
    QString llamaName;      ///< the entry it came from ("blk.0.attn_q.weight")
    int expert = -1;        ///< the expert's slice of a merged MoE entry, −1 otherwise
    int ncall = 0;
};

class ImatrixManager : public QObject {
    Q_OBJECT
public:
    ImatrixManager(TaskRunner* runner, QObject* parent = nullptr);

    /// The open model; the imatrix is dropped (it belongs to the previous model).
    void setModel(std::shared_ptr<const Model> model);

    /// Submits the computation (imatrixCalibration + computeImatrix). False without a model or
    /// tokenizer, or while one runs. On success the imatrix replaces the current one (unsaved)
    /// and computed() follows; cancelled() / failed() otherwise (the current one stays).
    bool compute(const ImatrixSettings& settings);
    void cancel();
    bool isComputing() const { return m_job != 0; }
    TaskRunner::JobId computeJob() const { return m_job; }

    /// Reads a .dat file and checks it against the open model (checkImatrix). False, with
    /// lastError() naming the file and the problem, when it cannot be read or is for another
    /// model; the current imatrix stays.
    bool open(const QString& path);
    /// Writes the current imatrix (atomically). False without one or on failure (lastError()).
    bool save(const QString& path);
    /// Installs an imatrix (a project's), checked against the open model like open(). `path`:
    /// the file it was saved to, empty when never saved.
    bool adopt(compress::Imatrix m, const QString& path, const QString& origin);
    /// Forgets the imatrix.
    void clear();

    /// The current imatrix (nullptr when none).
    std::shared_ptr<const compress::Imatrix> imatrix() const { return m_imatrix; }
    /// The file it came from or was saved to (empty when computed and not saved yet).
    QString path() const { return m_path; }
    bool isUnsaved() const { return m_imatrix && m_path.isEmpty(); }
    /// "imatrix.dat · 24 chunks of calib.txt" (empty without an imatrix).
    QString describe() const;
    QString lastError() const { return m_lastError; }
    /// Settings of the last computation started here.
    ImatrixSettings lastSettings() const { return m_settings; }

    /// The importance of a canonical tensor (nullopt when there is no imatrix, the tensor is not
    /// a linear llama-imatrix collects, or the imatrix has no entry for it).
    std::optional<ImatrixProfile> profileOf(const QString& canonical) const;
    /// The llama.cpp name of a canonical linear (empty when llama-imatrix does not collect it).
    QString llamaNameOf(const QString& canonical) const;

    /// The project form: JSON text with "path", "dataset", "chunks" and the entries (values as
    /// base64 little-endian float32). Empty without an imatrix.
    std::string toJson() const;
    /// Parses toJson()'s text (throws FormatError naming `origin` on malformed input).
    static compress::Imatrix fromJson(const std::string& json, const std::string& origin,
                                      QString* path);

signals:
    /// The imatrix was replaced or cleared (open, compute, adopt, clear, model change).
    void changed();
    /// A computation finished and its imatrix is current.
    void computed();
    void cancelled();
    void failed(const QString& message);
    void logMessage(const QString& text);

private:
    struct Target {
        std::string name; ///< llama.cpp's
        int expert = -1;  ///< the slice of a merged MoE entry
    };
    const std::vector<compress::ImatrixTarget>& targets() const;
    std::optional<Target> targetOf(const std::string& canonical) const;
    void install(std::shared_ptr<const compress::Imatrix> m, const QString& path);

    TaskRunner* m_runner;
    std::shared_ptr<const Model> m_model;
    std::shared_ptr<const compress::Imatrix> m_imatrix;
    QString m_path;
    QString m_lastError;
    ImatrixSettings m_settings;
    TaskRunner::JobId m_job = 0;
    mutable std::optional<std::vector<compress::ImatrixTarget>> m_targets;
};

} // namespace lcw
