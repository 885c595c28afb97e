#include "widgets/model_summary_panel.h"

#include "core/tokenizer/tokenizer.h"
#include "widgets/number_format.h"

#include <QAction>
#include <QApplication>
#include <QClipboard>
#include <QDir>
#include <QHeaderView>
#include <QStyle>
#include <QTreeWidget>
#include <QVBoxLayout>

namespace lcw {

namespace {

QString ropeTypeName(RopeType t) {
    switch (t) {
    case RopeType::Default:
        return QStringLiteral("default");
    case RopeType::Linear:
        return QStringLiteral("linear");
    case RopeType::Dynamic:
        return QStringLiteral("dynamic");
    case RopeType::Llama3:
        return QStringLiteral("llama3");
    case RopeType::Yarn:
        return QStringLiteral("yarn");
    }
    return QStringLiteral("?");
}

QString formatName(const std::string& f) {
    if (f == "safetensors") return QStringLiteral("Hugging Face safetensors");
    if (f == "gguf") return QStringLiteral("GGUF");
    if (f == "llama2c") return QStringLiteral("llama2.c checkpoint");
    return QString::fromStdString(f);
}

QString yesNo(bool b) {
    return b ? QObject::tr("yes") : QObject::tr("no");
}

} // namespace

ModelSummaryPanel::ModelSummaryPanel(QWidget* parent) : QWidget(parent) {
    auto* lay = new QVBoxLayout(this);
    lay->setContentsMargins(0, 0, 0, 0);
    m_tree = new QTreeWidget(this);
    m_tree->setColumnCount(2);
    m_tree->setHeaderLabels({tr("Property"), tr("Value")});
    m_tree->setRootIsDecorated(false);
    m_tree->setAlternatingRowColors(true);
    m_tree->setUniformRowHeights(true);
    m_tree->setSelectionMode(QAbstractItemView::ExtendedSelection);
    m_tree->setTextElideMode(Qt::ElideMiddle);
    m_tree->header()->setStretchLastSection(true);
    m_tree->header()->setSectionResizeMode(0, QHeaderView::Interactive);
    m_tree->setColumnWidth(0, 150);
    lay->addWidget(m_tree);

    auto* copy = new QAction(tr("Copy"), m_tree);
    copy->setShortcut(QKeySequence::Copy);
    copy->setShortcutContext(Qt::WidgetWithChildrenShortcut);
    connect(copy, &QAction::triggered, this, [this] {
        QStringList lines;
        for (QTreeWidgetItem* it : m_tree->selectedItems())
            lines << it->text(0) + QLatin1Char('\t') + it->text(1);
        QApplication::clipboard()->setText(lines.isEmpty() ? toText() : lines.join('\n') + '\n');
    });
    m_tree->addAction(copy);
    m_tree->setContextMenuPolicy(Qt::ActionsContextMenu);
}

QTreeWidgetItem* ModelSummaryPanel::addGroup(const QString& title) {
    auto* g = new QTreeWidgetItem(m_tree, {title});
    g->setFirstColumnSpanned(true);
    QFont f = g->font(0);
    f.setBold(true);
    g->setFont(0, f);
    g->setFlags(Qt::ItemIsEnabled);
    g->setExpanded(true);
    return g;
}

void ModelSummaryPanel::addRow(QTreeWidgetItem* group, const QString& key, const QString& value,
                               const QString& tooltip) {
    auto* it = new QTreeWidgetItem(group, {key, value});
    it->setToolTip(1, tooltip.isEmpty() ? value : tooltip);
}

void ModelSummaryPanel::setModel(const Model* model) {
    m_tree->clear();
    m_warningCount = 0;
    if (!model) return;
    const ModelSpec& s = model->spec();
    const QString path = QDir::toNativeSeparators(QString::fromStdString(model->path()));

    auto* file = addGroup(tr("Model"));
    addRow(file, tr("Path"), path);
    addRow(file, tr("Format"), formatName(s.sourceFormat));
    addRow(file, tr("Architecture"), QString::fromStdString(s.arch));
    if (!model->quantizationSummary().empty())
        addRow(file, tr("Quantization"), QString::fromStdString(model->quantizationSummary()),
               tr("%1\nThe quantised weights are dequantised exactly to f32 at load.")
                   .arg(QString::fromStdString(model->quantizationSummary())));

    auto* dims = addGroup(tr("Dimensions"));
    auto num = [](int64_t v) { return formatCountExact(v); };
    addRow(dims, tr("Hidden size (dim)"), num(s.dim));
    addRow(dims, tr("Layers"), num(s.nLayers));
    addRow(dims, tr("Attention heads"), num(s.nHeads));
    addRow(dims, tr("KV heads"),
           s.nKvHeads > 0 && s.nKvHeads != s.nHeads
               ? tr("%1 (GQA, %2 queries per KV head)").arg(s.nKvHeads).arg(s.nHeads / s.nKvHeads)
               : num(s.nKvHeads));
    addRow(dims, tr("Head dim"), num(s.headDim));
    addRow(dims, tr("MLP hidden"), num(s.hidden));
    addRow(dims, tr("Vocabulary"), num(s.vocab));
    addRow(dims, tr("Context"), tr("%1 tokens").arg(num(s.maxSeq)));

    auto* arch = addGroup(tr("Layout"));
    QString rope = tr("%1, θ = %2").arg(ropeTypeName(s.rope.type)).arg(s.rope.theta, 0, 'g', 8);
    if (s.rope.type != RopeType::Default) rope += tr(", factor %1").arg(s.rope.factor, 0, 'g', 6);
    if (s.rope.partialRotaryFactor < 1.0)
        rope += tr(", %1% rotated").arg(s.rope.partialRotaryFactor * 100.0, 0, 'g', 4);
    rope += s.rope.interleaved ? tr(", interleaved pairs") : tr(", rotate-half pairs");
    addRow(arch, tr("RoPE"), rope);
    addRow(arch, tr("Tied embeddings"), yesNo(s.tiedEmbeddings));
    addRow(arch, tr("Norm ε"), QString::number(double(s.normEps), 'g', 6));
    addRow(arch, tr("Activation"), QString::fromStdString(s.hiddenAct));
    QStringList extras;
    if (s.attnBias) extras << tr("q/k/v bias");
    if (s.attnOutBias) extras << tr("o bias");
    if (s.mlpBias) extras << tr("MLP bias");
    if (s.qkNorm) extras << tr("q/k norm");
    if (s.slidingWindow > 0) extras << tr("sliding window %1").arg(s.slidingWindow);
    if (!extras.isEmpty()) addRow(arch, tr("Extras"), extras.join(QStringLiteral(", ")));

    auto* size = addGroup(tr("Size"));
    const int64_t params = model->parameterCount();
    addRow(size, tr("Parameters"),
           tr("%1 (%2)").arg(formatCountShort(params), formatCountExact(params)),
           tr("Tied embeddings are counted once"));
    const uint64_t bytes = model->storedBytes();
    addRow(size, tr("Stored size"),
           tr("%1 bytes (%2 MiB)")
               .arg(formatCountExact(int64_t(bytes)))
               .arg(double(bytes) / (1024.0 * 1024.0), 0, 'f', 2));
    addRow(size, tr("Tensors"), num(int64_t(model->tensors().size())));
    if (params > 0)
        addRow(size, tr("Bits per weight"),
               QString::number(double(bytes) * 8.0 / double(params), 'f', 2),
               tr("Stored bits divided by parameters"));

    auto* tok = addGroup(tr("Tokenizer"));
    if (model->hasTokenizer()) {
        const Tokenizer& t = model->tokenizer();
        addRow(tok, tr("Kind"), QString::fromStdString(t.kind()));
        addRow(tok, tr("Vocabulary"), num(t.vocabSize()));
        addRow(tok, tr("BOS / EOS"),
               tr("%1 / %2%3")
                   .arg(t.bosId())
                   .arg(t.eosId())
                   .arg(t.addsBos() ? tr(" (adds BOS)") : QString()));
    } else {
        addRow(tok, tr("Kind"), tr("none found"));
    }

    auto* warn = addGroup(tr("Warnings"));
    const QIcon icon = style()->standardIcon(QStyle::SP_MessageBoxWarning);
    for (const std::string& w : model->warnings()) {
        auto* it = new QTreeWidgetItem(warn, {QString(), QString::fromStdString(w)});
        it->setIcon(0, icon);
        it->setToolTip(1, QString::fromStdString(w));
        ++m_warningCount;
    }
    if (m_warningCount == 0)
        addRow(warn, QString(), tr("none"));
    else
        warn->setText(0, tr("Warnings (%1)").arg(m_warningCount));
    m_tree->expandAll();
    m_tree->setCurrentItem(nullptr);
    m_tree->clearSelection();
}

QString ModelSummaryPanel::value(const QString& key) const {
    for (int g = 0; g < m_tree->topLevelItemCount(); ++g) {
        QTreeWidgetItem* group = m_tree->topLevelItem(g);
        for (int i = 0; i < group->childCount(); ++i)
            if (group->child(i)->text(0) == key) return group->child(i)->text(1);
    }
    return {};
}

QString ModelSummaryPanel::toText() const {
    QStringList lines;
    for (int g = 0; g < m_tree->topLevelItemCount(); ++g) {
        QTreeWidgetItem* group = m_tree->topLevelItem(g);
        lines << QStringLiteral("[%1]").arg(group->text(0));
        for (int i = 0; i < group->childCount(); ++i)
            lines << group->child(i)->text(0) + QLatin1Char('\t') + group->child(i)->text(1);
    }
    return lines.join(QLatin1Char('\n')) + QLatin1Char('\n');
}

} // namespace lcw
