#pragma once
/// \file
/// The recipe editor: apply presets, select layers (click, shift-click, or a glob/regex
/// pattern), set their weight, activation and KV settings, and see the resulting rule list as
/// the same JSON the CLI reads. Every edit is an undoable command (Ctrl+Z / Ctrl+Shift+Z). The
/// plan (which rule sets what on every layer) and the model's total size and bits per weight are
/// recomputed from the recipe on each edit by core/compress (planRecipe, estimateSize) without
/// quantising anything; the editor only displays them.
///
/// Extension point: a rule section is either the weight form or a JSON field (activation, kv,
/// outliers, sparsity, lowrank, structured). A new section the recipe parser learns (sparsity,
/// low-rank, ...) is added by listing its key in kJsonSections (recipe_editor.cpp) or by a
/// dedicated form that fills the same rule object in ruleFromForm().
#include "core/compress/compressed_model.h"
#include "core/compress/recipe.h"
#include "core/model/model.h"

#include <QMap>
#include <QStringList>
#include <QWidget>

#include <functional>
#include <memory>
#include <optional>
#include <vector>

class QCheckBox;
class QComboBox;
class QDoubleSpinBox;
class QFormLayout;
class QLabel;
class QLayout;
class QLineEdit;
class QListWidget;
class QPlainTextEdit;
class QProgressBar;
class QSpinBox;
class QTableWidget;
class QUndoStack;
class QVBoxLayout;

namespace lcw {

class RecipeEditor : public QWidget {
    Q_OBJECT
public:
    /// Columns of the layer table.
    enum Column { LayerColumn, ShapeColumn, SettingColumn, BitsColumn, RuleColumn, ColumnCount };

    explicit RecipeEditor(QWidget* parent = nullptr);
    ~RecipeEditor() override;

    /// Lists the model's targetable layers and re-plans the recipe against it (nullptr clears).
    void setModel(std::shared_ptr<const Model> model);
    /// The model's name in the marks of rules that match nothing ("matches no tensor of NAME").
    void setModelLabel(const QString& name);
    /// The targets (patterns or exact names) of each rule that select no tensor of the model:
    /// rule index → targets, in rule order. Such rules are marked in the rule list (red, with
    /// a tooltip). Empty without a model.
    QMap<int, QStringList> unmatchedTargets() const { return m_unmatched; }

    const compress::Recipe& recipe() const { return m_recipe; }
    /// The recipe as JSON text (what Save writes and the CLI reads).
    QString recipeJsonText() const;

    // Undoable edits -----------------------------------------------------------------------
    /// Replaces the whole recipe by a preset's. Returns false for an unknown name.
    bool applyPreset(const QString& name);
    /// Replaces the recipe by a llama.cpp mix for the open model (core presetRecipe:
    /// llama-quantize's per-tensor types as one rule per tensor; "Q4_K_M-GPTQ" keeps the types
    /// with GPTQ codes), with the importance matrix of the provider below when it names a file.
    /// Returns false (and shows why) without a model or for an unknown name.
    bool applyLlamaPreset(const QString& name);
    /// The importance matrix file a llama.cpp preset uses (the recipe's "imatrix"; it also
    /// selects llama.cpp's imatrix rules); empty: none.
    void setImatrixPathProvider(std::function<QString()> f) { m_imatrixPath = std::move(f); }
    /// Appends a rule.
    void addRule(const compress::Rule& rule);
    void removeRule(int index);
    /// Moves a rule one place up (delta -1) or down (+1).
    void moveRule(int index, int delta);
    /// Replaces the recipe (one undo step titled `what`).
    void setRecipe(const compress::Recipe& recipe, const QString& what);
    /// Builds a rule from the selected layers and the settings form and appends it. Returns
    /// false (and shows why) when nothing is selected or the form's JSON is invalid.
    bool applyToSelection();

    /// Replaces the recipe and clears the undo history (new or opened project).
    void resetRecipe(const compress::Recipe& recipe);
    /// Reads a recipe file into the editor (undoable). On failure returns false with `error`.
    bool openRecipe(const QString& path, QString* error = nullptr);
    /// Writes the recipe JSON atomically.
    bool saveRecipe(const QString& path, QString* error = nullptr);

    // Selection -----------------------------------------------------------------------------
    QStringList layerNames() const;
    QStringList selectedLayers() const;
    void selectLayers(const QStringList& names);
    /// Selects the layers a rule target would match (glob, or "re:" regex). Returns how many.
    int selectPattern(const QString& pattern);

    // Settings form ---------------------------------------------------------------------------
    /// Fills the weight form from a rule's weight section (nullopt: weights left unchanged).
    void setWeightForm(const std::optional<nlohmann::json>& weight);
    /// The weight section the form describes (nullopt when "quantise weights" is off): the
    /// fields' keys plus the "more options" JSON object (method keys without a field: damp,
    /// act_order, epochs, ...). Throws RecipeError when that text is not a JSON object or sets a
    /// key that has a field.
    std::optional<nlohmann::json> weightFromForm() const;
    /// Sets a JSON section field ("activation", "kv", "outliers"); empty text: not set.
    void setSectionText(const QString& key, const QString& text);
    /// A rule with the given targets and the form's sections; throws RecipeError when invalid.
    compress::Rule ruleFromForm(const std::vector<std::string>& targets) const;

    // Plan and budget -------------------------------------------------------------------------
    /// Current plan (nullptr without a model or when the recipe does not fit it).
    const compress::Plan* plan() const { return m_plan ? &*m_plan : nullptr; }
    /// Whole-model size under the recipe (nullopt when there is no plan): exact, equal to
    /// compress()'s totalSize(), also for pruning, low-rank factors and structured removal.
    std::optional<compress::SizeInfo> totalSize() const {
        return m_estimate ? std::optional<compress::SizeInfo>(m_estimate->total) : std::nullopt;
    }
    /// The full size estimate (nullptr when there is no plan).
    const compress::SizeEstimate* sizeEstimate() const {
        return m_estimate ? &*m_estimate : nullptr;
    }
    /// Stored bits of a planned (or structurally shrunk) tensor per weight of its base tensor
    /// (the budget's definition, per tensor); NaN when the recipe leaves it unchanged or there is
    /// no plan.
    double plannedBitsPerWeight(const std::string& name) const;
    /// Why the recipe does not fit the model (empty when it does).
    QString planError() const { return m_planError; }
    /// The rule the fit error is about (-1: none or not attributable to one rule).
    int planErrorRule() const { return m_planErrorRule; }
    void setTargetBitsPerWeight(double bits);
    double targetBitsPerWeight() const;
    /// The budget line as shown. Budget = whole-model stored bits / base weights (compress
    /// --json's bits_per_base_weight; the Autotune dialog and `lcw-cli autotune --budget-bpw`
    /// use the same), with the replaced tensors' bits/weight beside it:
    /// "4.631 bits/weight (replaced tensors 4.250) · 145.2 KiB (28.9% of 502 KiB) · within the
    /// target (2.9% under)"; a recipe that does not fit reads "does not fit: <why>".
    QString budgetText() const;
    /// Always false now: the size estimate is exact for every weight stage (kept for callers).
    bool budgetNeedsCompress() const { return false; }

    QUndoStack* undoStack() const { return m_undo; }
    QTableWidget* layerTable() const { return m_table; }
    QListWidget* ruleList() const { return m_rules; }
    QPlainTextEdit* jsonView() const { return m_json; }
    QComboBox* presetCombo() const { return m_presetCombo; }
    QComboBox* methodCombo() const { return m_method; }
    QDoubleSpinBox* outliersPctSpin() const { return m_outliersPct; }
    QDoubleSpinBox* avgBitsSpin() const { return m_avgBits; }
    QCheckBox* slimGptqCheck() const { return m_slimGptq; }
    QCheckBox* slimSqcCheck() const { return m_slimSqc; }
    QComboBox* squeezeSensitivityCombo() const { return m_squeezeSens; }
    QDoubleSpinBox* clipRatioSpin() const { return m_clipRatio; }
    QLineEdit* weightMoreEdit() const { return m_weightMore; }

signals:
    /// The recipe changed (any edit, undo or redo).
    void recipeChanged();
    /// The target budget (bits per weight) changed.
    void targetChanged(double bitsPerWeight);
    /// A new plan (or a planning error) is available.
    void planChanged();
    /// The "Measure Errors" button: compress with this recipe and show each layer's error.
    void measureErrorsRequested();
    /// A recipe file was opened or saved (for the recent-recipes list).
    void recipeFileUsed(const QString& path);
    void logMessage(const QString& text);

private:
    class Command;
    friend class Command;
    void buildUi();
    void fillPresetCombo();
    QLayout* buildToolbar();
    void buildBudgetRow(QVBoxLayout* top);
    QWidget* buildLayerSide(QWidget* parent);
    QWidget* buildSettingsForm(QWidget* right);
    QWidget* buildRulesBox(QWidget* right);
    /// Installs a recipe without an undo step (used by the commands).
    void install(const compress::Recipe& recipe);
    void replan();
    void refreshViews();
    void findUnmatchedTargets();
    void updateBudget();
    void syncFormEnabled();
    /// The weight keys the form's own fields describe (weightFromForm without "more options").
    nlohmann::json weightFieldsFromForm() const;
    void showFormError(const QString& text);

    std::shared_ptr<const Model> m_model;
    compress::Recipe m_recipe;
    std::optional<compress::Plan> m_plan;
    std::optional<compress::SizeEstimate> m_estimate;
    QString m_planError;
    int m_planErrorRule = -1;
    QUndoStack* m_undo = nullptr;

    QComboBox* m_presetCombo = nullptr;
    QLineEdit* m_pattern = nullptr;
    QTableWidget* m_table = nullptr;
    QCheckBox* m_weightOn = nullptr;
    QSpinBox* m_bits = nullptr;
    QComboBox* m_format = nullptr;
    QCheckBox* m_symmetric = nullptr;
    QComboBox* m_granularity = nullptr;
    QSpinBox* m_group = nullptr;
    QComboBox* m_method = nullptr;
    QDoubleSpinBox* m_outliersPct = nullptr;   ///< squeezellm: weight.outliers_pct
    QDoubleSpinBox* m_avgBits = nullptr;       ///< slim: weight.avg_bits
    QCheckBox* m_slimGptq = nullptr;           ///< slim: weight.gptq (checked: GPTQ step)
    QCheckBox* m_slimSqc = nullptr;            ///< slim: weight.sqc (checked: SQC grids)
    QComboBox* m_squeezeSens = nullptr;        ///< squeezellm: weight.sensitivity
    QDoubleSpinBox* m_clipRatio = nullptr;     ///< rtn / gptq: weight.clip_ratio (1: none)
    QLineEdit* m_weightMore = nullptr;         ///< the weight keys the form has no field for
    QFormLayout* m_weightFormLayout = nullptr; ///< rows of other methods' fields are hidden
    QComboBox* m_ggufGrid = nullptr;
    std::function<QString()> m_imatrixPath;
    std::vector<std::pair<QString, QLineEdit*>> m_sections;
    QLabel* m_formError = nullptr;
    QListWidget* m_rules = nullptr;
    QPlainTextEdit* m_json = nullptr;
    QDoubleSpinBox* m_target = nullptr;
    QProgressBar* m_budgetBar = nullptr;
    QLabel* m_budget = nullptr;
    QLabel* m_planStatus = nullptr;
    QMap<int, QStringList> m_unmatched;
    QString m_modelLabel;
};

} // namespace lcw
