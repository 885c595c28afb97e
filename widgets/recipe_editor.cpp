#include "widgets/recipe_editor.h"

#include "core/common/json_file.h"
#include "core/common/mapped_file.h"
#include "core/export/gguf_preset.h"
#include "widgets/number_format.h"
#include "widgets/spin_box.h"

#include <QAction>
#include <QCheckBox>
#include <QColor>
#include <QComboBox>
#include <QDir>
#include <QDoubleSpinBox>
#include <QFileDialog>
#include <QFormLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QItemSelectionModel>
#include <QLabel>
#include <QLineEdit>
#include <QListWidget>
#include <QPlainTextEdit>
#include <QProgressBar>
#include <QPushButton>
#include <QSpinBox>
#include <QSplitter>
#include <QTableWidget>
#include <QToolButton>
#include <QUndoCommand>
#include <QUndoStack>
#include <QVBoxLayout>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

namespace lcw {

using compress::Recipe;
using compress::Rule;
using json = nlohmann::json;

namespace {

/// Rule sections edited as JSON text. The recipe parser validates them; add a key here when the
/// parser learns a new section (sparsity, low_rank, ...).
const char* const kJsonSections[] = {"activation", "kv",      "outliers",
                                     "sparsity",   "lowrank", "structured"};

QString sectionPlaceholder(const QString& k) {
    if (k == QLatin1String("activation"))
        return QObject::tr("not set · e.g. {\"bits\": 8, \"mode\": \"dynamic_per_token\"}");
    if (k == QLatin1String("kv"))
        return QObject::tr("not set · e.g. {\"k_bits\": 8, \"v_bits\": 8}");
    if (k == QLatin1String("sparsity"))
        return QObject::tr("not set · e.g. {\"pattern\": \"2:4\", \"method\": \"wanda\"}");
    if (k == QLatin1String("lowrank"))
        return QObject::tr("not set · e.g. {\"method\": \"svd\", \"param_ratio\": 0.5}");
    if (k == QLatin1String("structured"))
        return QObject::tr("not set · e.g. {\"mlp_ratio\": 0.25}");
    return QObject::tr("not set · e.g. {\"threshold\": 6}");
}

QString sectionLabel(const QString& k) {
    if (k == QLatin1String("kv")) return QStringLiteral("KV");
    if (k == QLatin1String("lowrank")) return QStringLiteral("Low-rank");
    return k.left(1).toUpper() + k.mid(1);
}

const char* const kFormats[] = {"int", "fp8_e4m3", "nf4"};
/// The weight keys the form's fields write; every other key of a weight section goes through
/// the "more options" JSON text.
const char* const kWeightFormKeys[] = {
    "method",       "gguf",     "bits", "symmetric", "format",      "granularity", "group_size",
    "outliers_pct", "avg_bits", "gptq", "sqc",       "sensitivity", "clip_ratio"};
const char* const kGranularities[] = {"tensor", "channel", "group"};
/// The method list: lcw's methods, then the GGUF block types (core's names, in core's order).
QStringList methodNames() {
    QStringList lcw, gguf;
    for (int i = 0; i < compress::kWeightMethodCount; ++i) {
        const auto m = compress::WeightMethod(i);
        (compress::methodIsGguf(m) ? gguf : lcw)
            << QString::fromLatin1(compress::weightMethodName(m));
    }
    return lcw + gguf;
}

bool isGgufMethod(const QString& name) {
    const auto m = compress::weightMethodFromName(name.toStdString());
    return m && compress::methodIsGguf(*m);
}

/// Methods that can choose codes on a GGUF type's grid (recipe key weight.gguf).
bool takesGgufGrid(const QString& name) {
    return name == QLatin1String("gptq") || name == QLatin1String("awq");
}

/// Prefix of the preset combo's llama.cpp entries (their data), e.g. "llama.cpp:Q4_K_M".
constexpr auto kLlamaPrefix = "llama.cpp:";
/// llama.cpp mixes also offered with GPTQ codes on their grids (lcw's headline comparison).
constexpr const char* kGptqMixes[] = {"Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K"};

/// The rule a size-estimate error is about: estimatePlan() names the layer ("layers.0.attn.o: q8_0
/// needs ...") or the block part of structured removal ("layers.1.mlp: ..."); -1 when no rule
/// can be named.
int ruleOfEstimateError(const compress::Plan& plan, const std::string& what) {
    for (const compress::LayerPlan& l : plan.layers)
        if (what.rfind(l.name + ":", 0) == 0) {
            for (const char* k : {"method", "weight"})
                if (auto it = l.origin.find(k); it != l.origin.end()) return it->second;
            return l.lowrank ? l.lowrankRule : l.sparsityRule;
        }
    for (const compress::BlockStructured& b : plan.structured) {
        const std::string p = "layers." + std::to_string(b.layer) + ".";
        if (what.rfind(p + "mlp:", 0) == 0) return b.mlpRule;
        if (what.rfind(p + "attn:", 0) == 0) return b.headRule;
    }
    return -1;
}

QString ruleSummary(const Rule& r, int index, size_t matched) {
    QStringList parts;
    if (r.weight) {
        if (r.weight->is_null())
            parts << QStringLiteral("W: unchanged");
        else
            parts << QStringLiteral("W: ") + QString::fromStdString(r.weight->dump());
    }
    if (r.activation) parts << QStringLiteral("A: ") + QString::fromStdString(r.activation->dump());
    if (r.kv) parts << QStringLiteral("KV: ") + QString::fromStdString(r.kv->dump());
    if (r.outliers)
        parts << QStringLiteral("outliers: ") + QString::fromStdString(r.outliers->dump());
    if (r.sparsity)
        parts << QStringLiteral("sparsity: ") + QString::fromStdString(r.sparsity->dump());
    if (r.lowrank)
        parts << QStringLiteral("low-rank: ") + QString::fromStdString(r.lowrank->dump());
    if (r.structured)
        parts << QStringLiteral("structured: ") + QString::fromStdString(r.structured->dump());
    if (r.activationSparsity)
        parts << QStringLiteral("A top-K: ") + QString::fromStdString(r.activationSparsity->dump());
    QStringList targets;
    for (const auto& t : r.targets) targets << QString::fromStdString(t);
    QString t = targets.join(QStringLiteral(", "));
    if (t.size() > 60) t = t.left(57) + QStringLiteral("…");
    return QStringLiteral("%1. %2 → %3  (%4 layers)")
        .arg(index)
        .arg(t, parts.join(QStringLiteral("; ")))
        .arg(matched);
}

} // namespace

/// One undoable edit: the whole recipe before and after (recipes are small).
class RecipeEditor::Command : public QUndoCommand {
public:
    Command(RecipeEditor* editor, Recipe before, Recipe after, const QString& text)
        : QUndoCommand(text), m_editor(editor), m_before(std::move(before)),
          m_after(std::move(after)) {}
    void undo() override { m_editor->install(m_before); }
    void redo() override { m_editor->install(m_after); }

private:
    RecipeEditor* m_editor;
    Recipe m_before, m_after;
};

RecipeEditor::RecipeEditor(QWidget* parent) : QWidget(parent), m_undo(new QUndoStack(this)) {
    m_recipe.name = "untitled";
    buildUi();
    refreshViews();
}

RecipeEditor::~RecipeEditor() {
    // The commands call back into this editor: drop them before the widgets go.
    m_undo->clear();
}

void RecipeEditor::buildUi() {
    auto* top = new QVBoxLayout(this);
    top->setContentsMargins(6, 6, 6, 6);
    top->setSpacing(4);
    top->addLayout(buildToolbar());
    buildBudgetRow(top);
    auto* split = new QSplitter(Qt::Horizontal, this);
    QWidget* left = buildLayerSide(split);
    // Right: settings form, rules, JSON.
    auto* right = new QWidget(split);
    auto* rl = new QVBoxLayout(right);
    rl->setContentsMargins(0, 0, 0, 0);
    rl->addWidget(buildSettingsForm(right));
    rl->addWidget(buildRulesBox(right), 1);
    m_json = new QPlainTextEdit(right);
    m_json->setReadOnly(true);
    m_json->setLineWrapMode(QPlainTextEdit::NoWrap);
    QFont mono(QStringLiteral("monospace"));
    mono.setStyleHint(QFont::TypeWriter);
    m_json->setFont(mono);
    m_json->setToolTip(tr("The recipe as lcw-cli reads it (--recipe FILE)"));
    rl->addWidget(m_json, 1);
    m_planStatus = new QLabel(right);
    m_planStatus->setWordWrap(true);
    rl->addWidget(m_planStatus);

    split->addWidget(left);
    split->addWidget(right);
    split->setStretchFactor(0, 3);
    split->setStretchFactor(1, 2);
    top->addWidget(split, 1);
    syncFormEnabled();
}

void RecipeEditor::fillPresetCombo() {
    for (const auto& p : compress::presets())
        m_presetCombo->addItem(QString::fromStdString(p.name), QString::fromStdString(p.name));
    for (int i = 0; i < m_presetCombo->count(); ++i)
        m_presetCombo->setItemData(
            i, QString::fromStdString(compress::presets()[size_t(i)].description), Qt::ToolTipRole);
    // llama.cpp's mixes, a group of their own: llama-quantize's per-tensor types for this model
    // as one rule per tensor, so any tensor's type can be changed from there.
    m_presetCombo->insertSeparator(m_presetCombo->count());
    auto addLlama = [this](const QString& name, const QString& tip) {
        m_presetCombo->addItem(tr("%1 (llama.cpp)").arg(name),
                               QString::fromLatin1(kLlamaPrefix) + name);
        m_presetCombo->setItemData(m_presetCombo->count() - 1, tip, Qt::ToolTipRole);
    };
    for (const std::string& n : llamaPresetNames())
        addLlama(QString::fromStdString(n),
                 tr("llama-quantize's %1 mix for this model (llama.cpp b4747 rules), one rule "
                    "per tensor; with the opened importance matrix when there is one")
                     .arg(QString::fromStdString(n)));
    for (const char* n : kGptqMixes)
        addLlama(QString::fromLatin1(n) + QStringLiteral("-GPTQ"),
                 tr("llama.cpp's %1 types with the codes chosen by GPTQ on their grids "
                    "(calibrated on the bundled text)")
                     .arg(QString::fromLatin1(n)));
}

// Toolbar row: preset, open/save, measure, undo/redo.
QLayout* RecipeEditor::buildToolbar() {
    auto* bar = new QHBoxLayout;
    m_presetCombo = new QComboBox(this);
    fillPresetCombo();
    auto* applyPresetBtn = new QPushButton(tr("Apply Preset"), this);
    connect(applyPresetBtn, &QPushButton::clicked, this, [this] {
        const QString d = m_presetCombo->currentData().toString();
        if (d.startsWith(QLatin1String(kLlamaPrefix)))
            applyLlamaPreset(d.mid(int(strlen(kLlamaPrefix))));
        else
            applyPreset(d);
    });
    auto* openBtn = new QToolButton(this);
    openBtn->setText(tr("Open…"));
    connect(openBtn, &QToolButton::clicked, this, [this] {
        const QString p = QFileDialog::getOpenFileName(this, tr("Open Recipe"), QString(),
                                                       tr("Recipes (*.json);;All files (*)"));
        QString err;
        if (!p.isEmpty() && !openRecipe(p, &err)) showFormError(err);
    });
    auto* saveBtn = new QToolButton(this);
    saveBtn->setText(tr("Save…"));
    connect(saveBtn, &QToolButton::clicked, this, [this] {
        QString p = QFileDialog::getSaveFileName(this, tr("Save Recipe"),
                                                 QString::fromStdString(m_recipe.name) + ".json",
                                                 tr("Recipes (*.json)"));
        QString err;
        if (!p.isEmpty() && !saveRecipe(p, &err)) showFormError(err);
    });
    // Shortcuts (Ctrl+Z, Ctrl+Shift+Z) belong to the main window's Edit menu, which uses the
    // same undo stack; these buttons carry none so the two never compete for a key.
    QAction* undo = m_undo->createUndoAction(this, tr("Undo"));
    QAction* redo = m_undo->createRedoAction(this, tr("Redo"));
    auto* undoBtn = new QToolButton(this);
    undoBtn->setDefaultAction(undo);
    auto* redoBtn = new QToolButton(this);
    redoBtn->setDefaultAction(redo);
    bar->addWidget(new QLabel(tr("Preset:"), this));
    bar->addWidget(m_presetCombo);
    bar->addWidget(applyPresetBtn);
    bar->addSpacing(12);
    bar->addWidget(openBtn);
    bar->addWidget(saveBtn);
    auto* measureBtn = new QToolButton(this);
    measureBtn->setText(tr("Measure Errors"));
    measureBtn->setToolTip(tr("Compress with this recipe in the background and show every "
                              "layer's error in the tensor table (Run ▸ Measure Layer Errors)"));
    connect(measureBtn, &QToolButton::clicked, this, &RecipeEditor::measureErrorsRequested);
    bar->addWidget(measureBtn);
    bar->addStretch();
    bar->addWidget(undoBtn);
    bar->addWidget(redoBtn);
    return bar;
}

// Budget row: target, the whole-model figure (and why a recipe does not fit), a bar.
void RecipeEditor::buildBudgetRow(QVBoxLayout* top) {
    auto* budgetRow = new QHBoxLayout;
    m_target = newDoubleSpin(this, {0.5, 32.0, 0.25, 2}, 4.5,
                             tr("Target budget: whole-model stored bits per weight"));
    m_target->setSuffix(tr(" bits/w"));
    connect(m_target, &QDoubleSpinBox::valueChanged, this, &RecipeEditor::updateBudget);
    connect(m_target, &QDoubleSpinBox::valueChanged, this, &RecipeEditor::targetChanged);
    m_budgetBar = new QProgressBar(this);
    m_budgetBar->setRange(0, 1000);
    m_budgetBar->setTextVisible(false);
    m_budgetBar->setMaximumHeight(10);
    m_budget = new QLabel(this);
    m_budget->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_budget->setWordWrap(true); // a fit error's reason is shown here in full
    budgetRow->addWidget(new QLabel(tr("Target:"), this));
    budgetRow->addWidget(m_target);
    budgetRow->addWidget(m_budget, 1);
    top->addLayout(budgetRow);
    top->addWidget(m_budgetBar);
}

// Left: pattern + layer table.
QWidget* RecipeEditor::buildLayerSide(QWidget* parent) {
    auto* left = new QWidget(parent);
    auto* ll = new QVBoxLayout(left);
    ll->setContentsMargins(0, 0, 0, 0);
    auto* patRow = new QHBoxLayout;
    m_pattern = new QLineEdit(left);
    m_pattern->setPlaceholderText(
        tr("Select by pattern: layers.*.mlp.* or re:layers\\.(0|1)\\..*"));
    auto* selBtn = new QPushButton(tr("Select"), left);
    connect(selBtn, &QPushButton::clicked, this, [this] { selectPattern(m_pattern->text()); });
    connect(m_pattern, &QLineEdit::returnPressed, this,
            [this] { selectPattern(m_pattern->text()); });
    patRow->addWidget(m_pattern, 1);
    patRow->addWidget(selBtn);
    ll->addLayout(patRow);
    m_table = new QTableWidget(0, ColumnCount, left);
    m_table->setHorizontalHeaderLabels(
        {tr("Layer"), tr("Shape"), tr("Setting"), tr("Bits/w"), tr("Rule")});
    m_table->setSelectionBehavior(QAbstractItemView::SelectRows);
    m_table->setSelectionMode(QAbstractItemView::ExtendedSelection);
    m_table->setEditTriggers(QAbstractItemView::NoEditTriggers);
    m_table->verticalHeader()->setVisible(false);
    m_table->verticalHeader()->setDefaultSectionSize(m_table->fontMetrics().height() + 6);
    m_table->horizontalHeader()->setStretchLastSection(true);
    m_table->setAlternatingRowColors(true);
    m_table->setWordWrap(false);
    ll->addWidget(m_table, 1);
    connect(m_table->selectionModel(), &QItemSelectionModel::selectionChanged, this,
            &RecipeEditor::syncFormEnabled);
    return left;
}

// Settings for the selected layers: weight form, JSON sections, "Add Rule for Selection".
QWidget* RecipeEditor::buildSettingsForm(QWidget* right) {
    auto* wbox = new QGroupBox(tr("Settings for the selected layers"), right);
    auto* form = new QFormLayout(wbox);
    m_weightFormLayout = form;
    m_weightOn = new QCheckBox(tr("Quantise weights (off: keep them unchanged)"), wbox);
    m_weightOn->setChecked(true);
    m_bits = new QSpinBox(wbox);
    m_bits->setRange(2, 8);
    m_bits->setValue(4);
    m_format = new QComboBox(wbox);
    for (const char* f : kFormats) m_format->addItem(QString::fromLatin1(f));
    m_symmetric = new QCheckBox(tr("symmetric"), wbox);
    m_granularity = new QComboBox(wbox);
    for (const char* g : kGranularities) m_granularity->addItem(QString::fromLatin1(g));
    m_granularity->setCurrentIndex(2);
    m_group = new QSpinBox(wbox);
    m_group->setRange(1, 1 << 20);
    m_group->setValue(128);
    m_method = new QComboBox(wbox);
    m_method->addItems(methodNames());
    m_ggufGrid = new QComboBox(wbox);
    m_ggufGrid->addItem(tr("none (lcw's own grid)"), QString());
    for (const QString& m : methodNames())
        if (isGgufMethod(m) && m != QLatin1String("f16")) m_ggufGrid->addItem(m, m);
    m_ggufGrid->setToolTip(tr("GPTQ / AWQ onto a GGUF type's blocks (weight.gguf): the type's "
                              "scales, the method's codes"));
    m_outliersPct =
        newDoubleSpin(wbox, {0, 10, 0.05, 2}, 0.45,
                      tr("SqueezeLLM: the largest |w| kept in f16 (dense-and-sparse), in percent "
                         "of the layer's weights (weight.outliers_pct)"));
    m_outliersPct->setSuffix(QStringLiteral(" %"));
    m_avgBits = newDoubleSpin(wbox, {2, 4, 0.25, 2}, 2.5,
                              tr("SliM-LLM: the average of the 2/3/4-bit column groups per row "
                                 "(weight.avg_bits); the group size is the groups' width"));
    form->addRow(m_weightOn);
    form->addRow(tr("Bits"), m_bits);
    form->addRow(tr("Format"), m_format);
    form->addRow(QString(), m_symmetric);
    form->addRow(tr("Granularity"), m_granularity);
    form->addRow(tr("Group size"), m_group);
    form->addRow(tr("Method"), m_method);
    form->addRow(tr("GGUF grid"), m_ggufGrid);
    form->addRow(tr("Outliers (SqueezeLLM)"), m_outliersPct);
    m_squeezeSens = new QComboBox(wbox);
    m_squeezeSens->addItem(tr("gram (Σ x² per column)"), QStringLiteral("gram"));
    m_squeezeSens->addItem(tr("fisher (squared loss gradients)"), QStringLiteral("fisher"));
    m_squeezeSens->setToolTip(tr("SqueezeLLM: what weights the k-means (weight.sensitivity); "
                                 "fisher backpropagates through the whole model once"));
    form->addRow(tr("Sensitivity (SqueezeLLM)"), m_squeezeSens);
    m_slimGptq = new QCheckBox(tr("GPTQ step (SliM)"), wbox);
    m_slimGptq->setChecked(true);
    m_slimGptq->setToolTip(tr("SliM-LLM: quantise the allocated groups with GPTQ (weight.gptq); "
                              "off keeps round-to-nearest codes"));
    m_slimSqc = new QCheckBox(tr("SQC grids (SliM)"), wbox);
    m_slimSqc->setChecked(true);
    m_slimSqc->setToolTip(tr("SliM-LLM's salience-determined quantizer calibration (weight.sqc): "
                             "each group's range searched within ±10 % for the least error; "
                             "needs the GPTQ step"));
    m_clipRatio = newDoubleSpin(wbox, {0.1, 1.0, 0.05, 2}, 1.0,
                                tr("Atom's weight clip ratio (weight.clip_ratio, RTN and GPTQ): "
                                   "the grid spans this share of each group's range; 1 keeps the "
                                   "full range"));
    m_weightMore = new QLineEdit(wbox);
    m_weightMore->setObjectName(QStringLiteral("weight.more"));
    m_weightMore->setPlaceholderText(
        tr("none · e.g. {\"damp\": 0.01, \"act_order\": true} (the method's other keys)"));
    m_weightMore->setToolTip(tr("JSON object merged into the rule's \"weight\" section: the "
                                "method keys without a field above (GPTQ damp / act_order / "
                                "block_size, OmniQuant epochs / lr / let, AWQ search, ...)"));
    form->addRow(tr("Average bits (SliM)"), m_avgBits);
    form->addRow(QString(), m_slimGptq);
    form->addRow(QString(), m_slimSqc);
    form->addRow(tr("Clip ratio (RTN, GPTQ)"), m_clipRatio);
    form->addRow(tr("More weight options"), m_weightMore);
    connect(m_slimGptq, &QCheckBox::toggled, this, [this] { syncFormEnabled(); });
    for (const char* key : kJsonSections) {
        auto* e = new QLineEdit(wbox);
        const QString k = QString::fromLatin1(key);
        e->setObjectName(QStringLiteral("section.") + k);
        e->setPlaceholderText(sectionPlaceholder(k));
        e->setToolTip(tr("JSON object of the rule's \"%1\" section (null switches it off)").arg(k));
        form->addRow(sectionLabel(k), e);
        m_sections.emplace_back(k, e);
    }
    auto* applyBtn = new QPushButton(tr("Add Rule for Selection"), wbox);
    connect(applyBtn, &QPushButton::clicked, this, &RecipeEditor::applyToSelection);
    m_formError = new QLabel(wbox);
    m_formError->setWordWrap(true);
    m_formError->setStyleSheet(QStringLiteral("color: #c0392b;"));
    form->addRow(applyBtn);
    form->addRow(m_formError);
    for (QWidget* w :
         std::initializer_list<QWidget*>{m_weightOn, m_format, m_granularity, m_method, m_ggufGrid})
        if (auto* c = qobject_cast<QComboBox*>(w))
            connect(c, &QComboBox::currentIndexChanged, this, &RecipeEditor::syncFormEnabled);
    connect(m_weightOn, &QCheckBox::toggled, this, &RecipeEditor::syncFormEnabled);
    return wbox;
}

// The rule list with up / down / remove; clicking a rule selects its layers.
QWidget* RecipeEditor::buildRulesBox(QWidget* right) {
    auto* rulesBox = new QGroupBox(tr("Rules (later rules override earlier ones)"), right);
    auto* rbl = new QVBoxLayout(rulesBox);
    m_rules = new QListWidget(rulesBox);
    m_rules->setWordWrap(false);
    auto* rb = new QHBoxLayout;
    auto* up = new QToolButton(rulesBox);
    up->setText(tr("Up"));
    auto* down = new QToolButton(rulesBox);
    down->setText(tr("Down"));
    auto* remove = new QToolButton(rulesBox);
    remove->setText(tr("Remove"));
    connect(up, &QToolButton::clicked, this, [this] { moveRule(m_rules->currentRow(), -1); });
    connect(down, &QToolButton::clicked, this, [this] { moveRule(m_rules->currentRow(), +1); });
    connect(remove, &QToolButton::clicked, this, [this] { removeRule(m_rules->currentRow()); });
    // Clicking a rule selects its layers and loads its weight settings into the form.
    connect(m_rules, &QListWidget::currentRowChanged, this, [this](int row) {
        if (!m_plan || row < 0 || row >= int(m_plan->matches.size())) return;
        QStringList names;
        for (const auto& n : m_plan->matches[size_t(row)].layers)
            names << QString::fromStdString(n);
        selectLayers(names);
        if (size_t(row) < m_recipe.rules.size() && m_recipe.rules[size_t(row)].weight)
            setWeightForm(m_recipe.rules[size_t(row)].weight->is_null()
                              ? std::nullopt
                              : std::optional<json>(*m_recipe.rules[size_t(row)].weight));
    });
    rb->addWidget(up);
    rb->addWidget(down);
    rb->addWidget(remove);
    rb->addStretch();
    rbl->addWidget(m_rules, 1);
    rbl->addLayout(rb);
    return rulesBox;
}

void RecipeEditor::setModel(std::shared_ptr<const Model> model) {
    m_model = std::move(model);
    m_table->setRowCount(0);
    if (m_model) {
        std::vector<const TensorView*> layers;
        for (const TensorView& t : m_model->tensors())
            if (t.shape.size() == 2 && compress::isTargetable(t.name)) layers.push_back(&t);
        m_table->setRowCount(int(layers.size()));
        for (int i = 0; i < int(layers.size()); ++i) {
            const TensorView* t = layers[size_t(i)];
            m_table->setItem(i, LayerColumn, new QTableWidgetItem(QString::fromStdString(t->name)));
            m_table->setItem(
                i, ShapeColumn,
                new QTableWidgetItem(QStringLiteral("[%1, %2]").arg(t->shape[0]).arg(t->shape[1])));
            for (int c : {SettingColumn, BitsColumn, RuleColumn})
                m_table->setItem(i, c, new QTableWidgetItem);
            m_table->item(i, BitsColumn)->setTextAlignment(Qt::AlignRight | Qt::AlignVCenter);
        }
        m_table->resizeColumnToContents(LayerColumn);
    }
    replan();
    refreshViews();
}

void RecipeEditor::setModelLabel(const QString& name) {
    if (name == m_modelLabel) return;
    m_modelLabel = name;
    refreshViews();
}

void RecipeEditor::findUnmatchedTargets() {
    m_unmatched.clear();
    if (!m_model) return;
    std::set<std::string> names;
    for (const TensorView& t : m_model->tensors()) names.insert(t.name);
    for (size_t i = 0; i < m_recipe.rules.size(); ++i) {
        const Rule& rule = m_recipe.rules[i];
        // A single-target rule that selected layers matches (the common case, no search).
        if (rule.targets.size() == 1 && m_plan && i < m_plan->matches.size() &&
            !m_plan->matches[i].layers.empty())
            continue;
        QStringList none;
        for (const std::string& target : rule.targets) {
            const bool pattern =
                target.rfind("re:", 0) == 0 || target.find_first_of("*?[") != std::string::npos;
            bool hit = false;
            if (!pattern) {
                hit = names.count(target) > 0;
            } else {
                Rule one;
                one.targets = {target};
                hit = std::any_of(names.begin(), names.end(),
                                  [&](const std::string& n) { return one.matches(n); });
            }
            if (!hit) none << QString::fromStdString(target);
        }
        if (!none.isEmpty()) m_unmatched.insert(int(i), none);
    }
}

QString RecipeEditor::recipeJsonText() const {
    return QString::fromStdString(m_recipe.toJson().dump(2)) + QLatin1Char('\n');
}

void RecipeEditor::install(const Recipe& recipe) {
    m_recipe = recipe;
    replan();
    refreshViews();
    emit recipeChanged();
}

void RecipeEditor::setRecipe(const Recipe& recipe, const QString& what) {
    m_undo->push(new Command(this, m_recipe, recipe, what));
}

void RecipeEditor::resetRecipe(const Recipe& recipe) {
    m_undo->clear();
    install(recipe);
}

bool RecipeEditor::applyPreset(const QString& name) {
    try {
        const compress::Preset& p = compress::findPreset(name.toStdString());
        setRecipe(p.recipe, tr("Apply preset %1").arg(QString::fromStdString(p.name)));
        const int i = m_presetCombo->findData(QString::fromStdString(p.name));
        if (i >= 0) m_presetCombo->setCurrentIndex(i);
        return true;
    } catch (const std::exception& e) {
        showFormError(QString::fromUtf8(e.what()));
        return false;
    }
}

bool RecipeEditor::applyLlamaPreset(const QString& name) {
    if (!m_model) {
        showFormError(tr("Open a model first: llama.cpp's mixes depend on its tensors."));
        return false;
    }
    const QString imatrix = m_imatrixPath ? m_imatrixPath() : QString();
    try {
        const compress::Recipe r =
            presetRecipe(*m_model, name.toStdString(), imatrix.toStdString());
        setRecipe(r, tr("Apply llama.cpp preset %1").arg(QString::fromStdString(r.name)));
        const int i = m_presetCombo->findData(QString::fromLatin1(kLlamaPrefix) + name,
                                              Qt::UserRole, Qt::MatchFixedString);
        if (i >= 0) m_presetCombo->setCurrentIndex(i);
        emit logMessage(
            tr("Recipe: llama.cpp's %1 mix, %n rule(s)%2", nullptr, int(r.rules.size()))
                .arg(QString::fromStdString(r.name),
                     imatrix.isEmpty()
                         ? QString()
                         : tr(", importance matrix %1").arg(QDir::toNativeSeparators(imatrix))));
        return true;
    } catch (const std::exception& e) {
        showFormError(QString::fromUtf8(e.what()));
        return false;
    }
}

void RecipeEditor::addRule(const Rule& rule) {
    Recipe r = m_recipe;
    r.rules.push_back(rule);
    setRecipe(r, tr("Add rule %1").arg(r.rules.size() - 1));
}

void RecipeEditor::removeRule(int index) {
    if (index < 0 || size_t(index) >= m_recipe.rules.size()) return;
    Recipe r = m_recipe;
    r.rules.erase(r.rules.begin() + index);
    setRecipe(r, tr("Remove rule %1").arg(index));
}

void RecipeEditor::moveRule(int index, int delta) {
    const int to = index + delta;
    if (index < 0 || to < 0 || size_t(index) >= m_recipe.rules.size() ||
        size_t(to) >= m_recipe.rules.size())
        return;
    Recipe r = m_recipe;
    std::swap(r.rules[size_t(index)], r.rules[size_t(to)]);
    setRecipe(r, tr("Move rule %1").arg(index));
    m_rules->setCurrentRow(to);
}

bool RecipeEditor::openRecipe(const QString& path, QString* error) {
    try {
        Recipe r = Recipe::load(path.toStdString());
        setRecipe(r, tr("Open %1").arg(path));
        emit recipeFileUsed(path);
        return true;
    } catch (const std::exception& e) {
        if (error) *error = QString::fromUtf8(e.what());
        return false;
    }
}

bool RecipeEditor::saveRecipe(const QString& path, QString* error) {
    try {
        writeFileAtomic(path.toStdString(), recipeJsonText().toStdString());
        emit recipeFileUsed(path);
        return true;
    } catch (const std::exception& e) {
        if (error) *error = QString::fromUtf8(e.what());
        return false;
    }
}

QStringList RecipeEditor::layerNames() const {
    QStringList out;
    for (int i = 0; i < m_table->rowCount(); ++i) out << m_table->item(i, LayerColumn)->text();
    return out;
}

QStringList RecipeEditor::selectedLayers() const {
    QStringList out;
    for (const QModelIndex& i : m_table->selectionModel()->selectedRows())
        out << m_table->item(i.row(), LayerColumn)->text();
    return out;
}

void RecipeEditor::selectLayers(const QStringList& names) {
    const QSet<QString> want(names.begin(), names.end());
    QItemSelection sel;
    for (int i = 0; i < m_table->rowCount(); ++i)
        if (want.contains(m_table->item(i, LayerColumn)->text()))
            sel.select(m_table->model()->index(i, 0), m_table->model()->index(i, ColumnCount - 1));
    m_table->selectionModel()->select(sel, QItemSelectionModel::ClearAndSelect);
}

int RecipeEditor::selectPattern(const QString& pattern) {
    if (pattern.trimmed().isEmpty()) return 0;
    Rule r;
    r.targets = {pattern.trimmed().toStdString()};
    r.weight = json(nullptr);
    try {
        // Validates the pattern exactly as a recipe would (regex syntax errors included).
        Recipe probe;
        probe.rules = {r};
        Recipe::fromJson(probe.toJson());
    } catch (const std::exception& e) {
        showFormError(QString::fromUtf8(e.what()));
        return 0;
    }
    QStringList names;
    for (const QString& n : layerNames())
        if (r.matches(n.toStdString())) names << n;
    selectLayers(names);
    showFormError(QString());
    return int(names.size());
}

void RecipeEditor::setWeightForm(const std::optional<json>& w) {
    m_weightOn->setChecked(w.has_value());
    if (!w) return syncFormEnabled();
    compress::WeightSettings d;
    auto str = [&](const char* k, const char* def) {
        return QString::fromStdString(w->value(k, std::string(def)));
    };
    m_format->setCurrentText(str("format", "int"));
    m_bits->setValue(int(w->value("bits", d.bits)));
    m_symmetric->setChecked(w->value("symmetric", d.symmetric));
    m_granularity->setCurrentText(w->contains("group_size") ? QStringLiteral("group")
                                                            : str("granularity", "channel"));
    m_group->setValue(int(w->value("group_size", int64_t(d.groupSize))));
    m_method->setCurrentText(str("method", "rtn"));
    m_ggufGrid->setCurrentIndex(std::max(0, m_ggufGrid->findData(str("gguf", ""))));
    m_outliersPct->setValue(w->value("outliers_pct", d.outliersPct));
    m_avgBits->setValue(w->value("avg_bits", d.avgBits));
    m_slimGptq->setChecked(compress::slimUsesGptq(*w));
    m_slimSqc->setChecked(
        !(w->contains("sqc") && (*w)["sqc"].is_boolean() && !(*w)["sqc"].get<bool>()));
    m_squeezeSens->setCurrentIndex(compress::squeezeUsesFisher(*w) ? 1 : 0);
    m_clipRatio->setValue(w->value("clip_ratio", 1.0));
    json more = *w;
    for (const char* k : kWeightFormKeys) more.erase(k);
    m_weightMore->setText(more.empty() ? QString() : QString::fromStdString(more.dump()));
    if (m_method->currentText() == QLatin1String("squeezellm") && !w->contains("bits"))
        m_bits->setValue(3); // squeezellm's default
    syncFormEnabled();
}

std::optional<json> RecipeEditor::weightFromForm() const {
    if (!m_weightOn->isChecked()) return std::nullopt;
    json w = weightFieldsFromForm();
    const QString moreText = m_weightMore->text().trimmed();
    if (moreText.isEmpty()) return w;
    const int rule = int(m_recipe.rules.size());
    json more;
    try {
        more = parseJsonText(moreText.toStdString(), "more weight options");
    } catch (const FormatError& ex) {
        throw compress::RecipeError(rule, "weight", ex.problem());
    }
    if (!more.is_object())
        throw compress::RecipeError(
            rule, "weight", "more weight options: expected a JSON object, got " + more.dump());
    for (const char* k : kWeightFormKeys)
        if (more.contains(k))
            throw compress::RecipeError(rule, std::string("weight.") + k,
                                        "has its own field in the form; set it there, not in "
                                        "more weight options");
    w.update(more);
    return w;
}

json RecipeEditor::weightFieldsFromForm() const {
    json w = json::object();
    const std::string method = m_method->currentText().toStdString();
    if (method != "rtn") w["method"] = method;
    if (isGgufMethod(m_method->currentText())) return w; // block schemes fix everything else
    if (takesGgufGrid(m_method->currentText()) && !m_ggufGrid->currentData().toString().isEmpty()) {
        w["gguf"] = m_ggufGrid->currentData().toString().toStdString();
        return w; // the grid's type fixes the rest
    }
    // SqueezeLLM: per-row code books of 2^bits values + sparse f16 outliers; SliM: mixed-width
    // column groups at an average (their own fields, no grid settings).
    if (method == "squeezellm") {
        w["bits"] = m_bits->value();
        w["outliers_pct"] = m_outliersPct->value();
        if (m_squeezeSens->currentData().toString() == QLatin1String("fisher"))
            w["sensitivity"] = "fisher";
        return w;
    }
    if (method == "slim") {
        w["avg_bits"] = m_avgBits->value();
        w["group_size"] = m_group->value();
        if (!m_slimGptq->isChecked())
            w["gptq"] = false;
        else if (!m_slimSqc->isChecked())
            w["sqc"] = false;
        return w;
    }
    const std::string format = m_format->currentText().toStdString();
    if (format != "int") w["format"] = format;
    if (format == "int") {
        w["bits"] = m_bits->value();
        w["symmetric"] = m_symmetric->isChecked();
    }
    w["granularity"] = m_granularity->currentText().toStdString();
    if (m_granularity->currentText() == QStringLiteral("group")) w["group_size"] = m_group->value();
    if (m_clipRatio->isEnabled() && m_clipRatio->value() < 1.0)
        w["clip_ratio"] = m_clipRatio->value();
    return w;
}

void RecipeEditor::setSectionText(const QString& key, const QString& text) {
    for (auto& [k, e] : m_sections)
        if (k == key) e->setText(text);
}

Rule RecipeEditor::ruleFromForm(const std::vector<std::string>& targets) const {
    json rj = json::object();
    rj["targets"] = targets;
    const auto w = weightFromForm();
    rj["weight"] = w ? *w : json(nullptr);
    for (const auto& [k, e] : m_sections) {
        const QString t = e->text().trimmed();
        if (t.isEmpty()) continue;
        try {
            rj[k.toStdString()] = parseJsonText(t.toStdString(), "section " + k.toStdString());
        } catch (const FormatError& ex) {
            throw compress::RecipeError(int(m_recipe.rules.size()), k.toStdString(), ex.problem());
        }
    }
    // Validate through the parser with this rule in its final position, so errors name it.
    json rec = m_recipe.toJson();
    rec["rules"].push_back(rj);
    const Recipe parsed = Recipe::fromJson(rec);
    return parsed.rules.back();
}

bool RecipeEditor::applyToSelection() {
    const QStringList sel = selectedLayers();
    if (sel.isEmpty()) {
        showFormError(tr("Select layers first (click, shift-click, or a pattern)."));
        return false;
    }
    std::vector<std::string> targets;
    // Every glob-selectable layer selected: one "*" instead of the list.
    std::set<QString> selected(sel.begin(), sel.end());
    bool all = true;
    for (const QString& n : layerNames()) {
        bool explicitOnly = false;
        compress::isTargetable(n.toStdString(), &explicitOnly);
        if (!explicitOnly && !selected.count(n)) all = false;
    }
    if (all) targets.push_back("*");
    for (const QString& n : sel) {
        bool explicitOnly = false;
        compress::isTargetable(n.toStdString(), &explicitOnly);
        if (!all || explicitOnly) targets.push_back(n.toStdString());
    }
    try {
        addRule(ruleFromForm(targets));
        showFormError(QString());
        return true;
    } catch (const std::exception& e) {
        showFormError(QString::fromUtf8(e.what()));
        return false;
    }
}

void RecipeEditor::showFormError(const QString& text) {
    m_formError->setText(text);
    m_formError->setVisible(!text.isEmpty());
    if (!text.isEmpty()) emit logMessage(tr("Recipe: %1").arg(text));
}

void RecipeEditor::syncFormEnabled() {
    const bool on = m_weightOn->isChecked();
    const QString method = m_method->currentText();
    const bool grid = takesGgufGrid(method) && !m_ggufGrid->currentData().toString().isEmpty();
    const bool gguf = isGgufMethod(method) || grid;
    const bool isInt = m_format->currentText() == QStringLiteral("int");
    m_method->setEnabled(on);
    m_ggufGrid->setEnabled(on && takesGgufGrid(method));
    m_format->setEnabled(on && !gguf);
    m_bits->setEnabled(on && !gguf && isInt);
    m_symmetric->setEnabled(on && !gguf && isInt);
    m_granularity->setEnabled(on && !gguf);
    m_group->setEnabled(on && !gguf && m_granularity->currentText() == QStringLiteral("group"));
    // The compact methods' own fields; they take no format, symmetry or granularity.
    const bool squeeze = method == QLatin1String("squeezellm");
    const bool slim = method == QLatin1String("slim");
    m_outliersPct->setEnabled(on && squeeze);
    m_squeezeSens->setEnabled(on && squeeze);
    m_avgBits->setEnabled(on && slim);
    m_slimGptq->setEnabled(on && slim);
    m_slimSqc->setEnabled(on && slim && m_slimGptq->isChecked());
    const bool clip = !gguf && (method == QLatin1String("rtn") || method == QLatin1String("gptq"));
    m_clipRatio->setEnabled(on && clip);
    m_weightMore->setEnabled(on);
    // Fields of other methods take no room: their rows show only with their method.
    for (QWidget* f : {static_cast<QWidget*>(m_outliersPct), static_cast<QWidget*>(m_squeezeSens)})
        m_weightFormLayout->setRowVisible(f, squeeze);
    for (QWidget* f : {static_cast<QWidget*>(m_avgBits), static_cast<QWidget*>(m_slimGptq),
                       static_cast<QWidget*>(m_slimSqc)})
        m_weightFormLayout->setRowVisible(f, slim);
    m_weightFormLayout->setRowVisible(m_clipRatio, clip);
    m_weightFormLayout->setRowVisible(m_ggufGrid, takesGgufGrid(method));
    if (squeeze || slim) {
        m_format->setEnabled(false);
        m_symmetric->setEnabled(false);
        m_granularity->setEnabled(false);
        m_bits->setEnabled(on && squeeze);
        m_group->setEnabled(on && slim);
    }
}

void RecipeEditor::replan() {
    m_plan.reset();
    m_estimate.reset();
    m_planError.clear();
    m_planErrorRule = -1;
    if (!m_model) return;
    try {
        // The workbench calibrates on the bundled text when a method needs it (Measure Errors,
        // Compare), so such recipes plan here too.
        compress::PlanOptions po;
        po.hasCalibration = m_model->hasTokenizer();
        m_plan = compress::planRecipe(m_recipe, *m_model, po);
    } catch (const compress::RecipeError& e) {
        m_planError = QString::fromUtf8(e.what());
        m_planErrorRule = e.rule();
    } catch (const std::exception& e) {
        m_planError = QString::fromUtf8(e.what());
    }
    if (m_plan) {
        // Exact sizes of every stage; what compress() would reject although the plan accepts it
        // (a GGUF type on rows that structured removal narrows, ...) is a fit error too.
        try {
            m_estimate = compress::estimatePlan(*m_plan, *m_model);
        } catch (const std::exception& e) {
            m_planError = QString::fromUtf8(e.what());
            m_planErrorRule = ruleOfEstimateError(*m_plan, e.what());
        }
    }
    emit planChanged();
}

double RecipeEditor::plannedBitsPerWeight(const std::string& name) const {
    if (!m_estimate || !m_model) return std::nan("");
    const auto it = m_estimate->tensors.find(name);
    const TensorView* t = m_model->find(name);
    if (it == m_estimate->tensors.end() || !t || t->numel() <= 0) return std::nan("");
    return double(it->second.bits) / double(t->numel());
}

void RecipeEditor::refreshViews() {
    m_json->setPlainText(recipeJsonText());
    findUnmatchedTargets();
    m_rules->clear();
    for (size_t i = 0; i < m_recipe.rules.size(); ++i) {
        const size_t matched =
            m_plan && i < m_plan->matches.size() ? m_plan->matches[i].layers.size() : 0;
        auto* item = new QListWidgetItem(ruleSummary(m_recipe.rules[i], int(i), matched), m_rules);
        if (!m_recipe.rules[i].comment.empty())
            item->setToolTip(QString::fromStdString(m_recipe.rules[i].comment));
        if (auto it = m_unmatched.constFind(int(i)); it != m_unmatched.constEnd()) {
            // Targets that select nothing here (a recipe made for another model): marked.
            const QString model = m_modelLabel.isEmpty() ? tr("the model") : m_modelLabel;
            item->setText(QStringLiteral("⊘ ") + item->text());
            item->setForeground(QColor(0xc0, 0x39, 0x2b));
            item->setToolTip((it->size() == int(m_recipe.rules[i].targets.size())
                                  ? tr("This rule matches no tensor of %1: %2")
                                  : tr("Part of this rule matches no tensor of %1: %2"))
                                 .arg(model, it->join(QStringLiteral(", "))));
        }
        if (int(i) == m_planErrorRule) {
            // The rule the fit error is about: marked, with the reason on hover.
            item->setText(QStringLiteral("⚠ ") + item->text());
            item->setForeground(QColor(0xc0, 0x39, 0x2b));
            item->setToolTip(tr("Does not fit: %1").arg(m_planError));
        }
    }
    // Layer table columns from the plan.
    QHash<QString, const compress::LayerPlan*> byName;
    if (m_plan)
        for (const auto& l : m_plan->layers) byName.insert(QString::fromStdString(l.name), &l);
    for (int i = 0; i < m_table->rowCount(); ++i) {
        const QString name = m_table->item(i, LayerColumn)->text();
        const compress::LayerPlan* lp = byName.value(name, nullptr);
        if (lp) {
            m_table->item(i, SettingColumn)->setText(QString::fromStdString(lp->describe()));
            const double bpw = plannedBitsPerWeight(lp->name);
            const bool bound = m_estimate && std::find(m_estimate->upperBounds.begin(),
                                                       m_estimate->upperBounds.end(),
                                                       lp->name) != m_estimate->upperBounds.end();
            m_table->item(i, BitsColumn)
                ->setText(std::isnan(bpw) ? QStringLiteral("—")
                                          : (bound ? QStringLiteral("≤ ") : QString()) +
                                                QString::number(bpw, 'f', 3));
            const auto it = lp->origin.find("weight");
            m_table->item(i, RuleColumn)
                ->setText(it != lp->origin.end() ? QString::number(it->second) : QString());
        } else if (const double sb = plannedBitsPerWeight(name.toStdString()); !std::isnan(sb)) {
            // shrunk by structured removal of its block, values kept
            m_table->item(i, SettingColumn)->setText(tr("structured only"));
            m_table->item(i, BitsColumn)->setText(QString::number(sb, 'f', 3));
            m_table->item(i, RuleColumn)->setText(QString());
        } else {
            const TensorView* t = m_model ? m_model->find(name.toStdString()) : nullptr;
            m_table->item(i, SettingColumn)->setText(tr("unchanged"));
            m_table->item(i, BitsColumn)
                ->setText(
                    t && t->numel() > 0
                        ? QString::number(double(t->nbytes) * 8.0 / double(t->numel()), 'f', 3)
                        : QString());
            m_table->item(i, RuleColumn)->setText(QString());
        }
    }
    QStringList notes;
    if (!m_planError.isEmpty()) notes << m_planError;
    if (m_plan)
        for (const auto& w : m_plan->warnings) notes << QString::fromStdString(w);
    m_planStatus->setText(notes.join(QLatin1Char('\n')));
    m_planStatus->setStyleSheet(m_planError.isEmpty() ? QString()
                                                      : QStringLiteral("color: #c0392b;"));
    updateBudget();
}

void RecipeEditor::setTargetBitsPerWeight(double bits) {
    m_target->setValue(bits);
}

double RecipeEditor::targetBitsPerWeight() const {
    return m_target->value();
}

QString RecipeEditor::budgetText() const {
    return m_budget->text();
}

void RecipeEditor::updateBudget() {
    if (!m_model) {
        m_budget->setText(tr("Open a model to see sizes."));
        m_budgetBar->setValue(0);
        return;
    }
    if (!m_estimate) {
        // The reason sits on the budget line itself (and on the offending rule).
        m_budget->setText(m_planError.isEmpty() ? tr("does not fit this model")
                                                : tr("does not fit: %1").arg(m_planError));
        m_budget->setToolTip(m_budget->text());
        m_budget->setStyleSheet(QStringLiteral("color: #c0392b;"));
        m_budgetBar->setValue(0);
        m_budgetBar->setStyleSheet(QString());
        return;
    }
    m_budget->setStyleSheet(QString());
    // One budget definition everywhere: whole-model stored bits / the base's weights.
    const compress::SizeEstimate& est = *m_estimate;
    const double bpw = est.bitsPerWeight();
    const double target = m_target->value();
    const uint64_t base = m_model->storedBytes();
    const double over = (bpw / target - 1.0) * 100.0;
    const QString approx = est.exact() ? QString() : QStringLiteral("≤ ");
    m_budget->setText(
        tr("%1%2 bits/weight (quantised layers %3) · %4 (%5% of %6) · %7")
            .arg(approx)
            .arg(bpw, 0, 'f', 3)
            .arg(est.compressed.params ? QString::number(est.compressedBitsPerWeight(), 'f', 3)
                                       : QStringLiteral("—"))
            .arg(formatBytes(est.total.bytes()))
            .arg(100.0 * double(est.total.bytes()) / double(std::max<uint64_t>(1, base)), 0, 'f', 1)
            .arg(formatBytes(base))
            .arg(over > 0 ? tr("over the target by %1%").arg(over, 0, 'f', 1)
                          : tr("within the target (%1% under)").arg(-over, 0, 'f', 1)));
    m_budget->setToolTip(
        est.exact()
            ? tr("Whole model: stored bits of every tensor / the base model's %1 weights (the "
                 "size compress() produces). Quantised layers: the replaced tensors' bits / their "
                 "stored weights.")
                  .arg(est.baseParams)
            : tr("An upper bound: %1 low-rank layer(s) choose their rank from an energy target, "
                 "counted here at full rank.")
                  .arg(est.upperBounds.size()));
    m_budgetBar->setValue(int(std::min(1000.0, 1000.0 * bpw / std::max(target, 1e-9) / 2.0)));
    m_budgetBar->setStyleSheet(
        over > 0 ? QStringLiteral("QProgressBar::chunk { background: #c0392b; }")
                 : QStringLiteral("QProgressBar::chunk { background: #27ae60; }"));
}

} // namespace lcw
