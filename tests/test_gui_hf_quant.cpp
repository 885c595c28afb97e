// A quantised Hugging Face checkpoint in the GUI: the Tensors table's Setting column shows each
// dequantised weight's stored scheme (and the Bytes column its quantised bytes), the Summary the
// quantisation line. The fixture is an AWQ GEMM folder built by hf_quant_fixture.h.
#include "core/model/model.h"
#include "hf_quant_fixture.h"
#include "test_util.h"
#include "widgets/layer_table_model.h"
#include "widgets/model_summary_panel.h"

#include <filesystem>

class TestGuiHfQuant : public QObject {
    Q_OBJECT
private slots:
    void schemeInTensorsTableAndSummary() {
        LCW_REQUIRE_SHARED(hfq::kBase);
        const std::string tmp = lcwtest::tempDir("gui-hfquant");
        hfq::Fixture f(lcwtest::sharedPath(hfq::kBase), tmp + "/awq");
        for (const auto& l : f.linears()) hfq::awq(f, l, 32);
        f.write({{"quant_method", "awq"},
                 {"bits", 4},
                 {"group_size", 32},
                 {"zero_point", true},
                 {"version", "gemm"}});
        std::shared_ptr<const lcw::Model> m = lcw::Model::load(f.dir);

        lcw::LayerTableModel tm;
        tm.setModel(m);
        int q = -1, head = -1;
        for (int r = 0; r < tm.rowCount(); ++r) {
            const QString n = tm.index(r, lcw::LayerTableModel::Name).data().toString();
            if (n == "layers.0.attn.q") q = r;
            if (n == "lm_head") head = r;
        }
        QVERIFY(q >= 0 && head >= 0);
        QCOMPARE(tm.index(q, lcw::LayerTableModel::Setting).data().toString(),
                 QString("awq gemm int4 asym group 32"));
        QCOMPARE(tm.index(head, lcw::LayerTableModel::Setting).data().toString(), QString("f32"));
        QVERIFY(tm.index(q, Qt::DisplayRole).data(Qt::ToolTipRole).toString().contains("awq gemm"));
        // Bytes: qweight 64x8 + qzeros 2x8 int32, scales 2x64 f16 → about 4.6 bits per weight.
        const double bpw = tm.index(q, lcw::LayerTableModel::BitsPerWeight)
                               .data(lcw::LayerTableModel::RawRole)
                               .toDouble();
        QCOMPARE(bpw, double(64 * 8 * 4 + 2 * 8 * 4 + 2 * 64 * 2) * 8.0 / (64.0 * 64.0));

        lcw::ModelSummaryPanel panel;
        panel.setModel(m.get());
        QCOMPARE(panel.value("Quantization"), QString("awq gemm: int4 asym group 32 (14 linears)"));
        std::filesystem::remove_all(tmp);
    }
};

QTEST_MAIN(TestGuiHfQuant)
#include "test_gui_hf_quant.moc"
