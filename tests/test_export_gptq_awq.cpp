// Tests of core/export/gptq_awq: the GPTQ and AWQ checkpoint formats. Every encoded module is
// read back by an independent reader written here from the specifications, and must give
// exactly compress::dequantize's values.
//
// Sources followed (read from the repositories, not copied):
//  - AutoGPTQ auto_gptq/nn_modules/qlinear/qlinear_cuda_old.py (commit 9f7d370): QuantLinear
//    buffers qweight int32 [in // 32 * bits, out], qzeros int32 [ceil(in / group), out // 32 *
//    bits], scales [groups, out], g_idx [i // group_size]; pack() stores `zeros -= 1`; the torch
//    forward unpacks with shifts range(0, 32, bits) and, for 3 bits, the wf table
//    [[0,3,...,30,0],[0,1,4,...,31],[0,2,5,...,29,0]] with the two cross-word fix-ups, then
//    `zeros + 1` masked to bits.
//  - AutoGPTQ auto_gptq/quantization/config.py BaseQuantizeConfig.to_dict: the keys of
//    quantize_config.json (bits, group_size, damp_percent, desc_act, static_groups, sym,
//    true_sequential, model_name_or_path, model_file_base_name, quant_method, checkpoint_format).
//  - GPTQModel gptqmodel/utils/model.py convert_gptq_v1_to_v2_format_module (commit f4c327a):
//    v1 -> v2 adds 0x11111111 (4 bits) etc. to the packed words, i.e. v2 stores the zero itself;
//    gptqmodel/quantization/config.py: "dynamic" per-module overrides, keys "+:regex" / "-:regex"
//    (negative: module not quantised), matched from the module name's start.
//  - AutoAWQ awq/modules/linear/gemm.py WQLinear_GEMM (commit 88e4c76): qweight int32
//    [in, out / 8], qzeros int32 [in / group, out / 8], scales f16 [in / group, out]; from_linear
//    packs column col * 8 + order_map[i] into nibble i with order_map [0, 2, 4, 6, 1, 3, 5, 7];
//    zeros are stored as they are. awq/utils/packing_utils.py: AWQ_REVERSE_ORDER
//    [0, 4, 1, 5, 2, 6, 3, 7]. awq/models/_config.py to_transformers_dict: quant_method,
//    zero_point, group_size, bits, version, modules_to_not_convert.
//  - transformers src/transformers/utils/quantization_config.py: GPTQConfig (bits in 2, 3, 4, 8;
//    0 < damp_percent < 1; checkpoint_format "gptq" / "gptq_v2"), AwqConfig.
#include "core/common/dtype.h"
#include "core/common/error.h"
#include "core/compress/gptq.h"
#include "core/compress/quantizer.h"
#include "core/export/gptq_awq.h"
#include "test_util.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

using namespace lcw;
using compress::Granularity;
using compress::PackedTensor;
using compress::WeightFormat;
using compress::WeightSettings;

namespace {

WeightSettings intSettings(int bits, bool sym, int64_t group /* -1: channel */) {
    WeightSettings s;
    s.bits = bits;
    s.format = WeightFormat::Int;
    s.symmetric = sym;
    s.granularity = group < 0 ? Granularity::Channel : Granularity::Group;
    s.groupSize = group < 0 ? 128 : group;
    return s;
}

std::vector<float> randomWeights(int64_t rows, int64_t cols, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> n(0.0f, 0.05f);
    std::vector<float> w(size_t(rows * cols));
    for (auto& v : w) v = n(rng);
    // a few large values so that groups differ
    for (size_t i = 0; i < w.size(); i += 97) w[i] *= 6.0f;
    return w;
}

HfQuantModule moduleOf(const std::string& name, const PackedTensor& p) {
    HfQuantModule m;
    m.module = name;
    m.canonical = {"layers.0.attn.q"};
    m.packed = &p;
    m.rows = p.rows;
    m.cols = p.cols;
    m.weightJson = {{"method", "rtn"}};
    return m;
}

/// describe() names the tensors encode() makes, with their types and shapes, in its order (the
/// checkpoint writer plans the file from describe() and encodes each module once).
void checkDescribed(const HfQuantFormat& f, const HfQuantModule& m,
                    const std::vector<HfTensorBlob>& encoded) {
    const std::vector<TensorDesc> d = f.describe(m);
    QCOMPARE(d.size(), encoded.size());
    for (size_t i = 0; i < d.size(); ++i) {
        QCOMPARE(d[i].name, encoded[i].name);
        QVERIFY(d[i].dtype == encoded[i].dtype);
        QCOMPARE(d[i].shape, encoded[i].shape);
        QCOMPARE(uint64_t(encoded[i].data.size()), tensorDescBytes(d[i]));
    }
}

const HfTensorBlob& find(const std::vector<HfTensorBlob>& v, const std::string& name) {
    for (const auto& b : v)
        if (b.name == name) return b;
    throw std::runtime_error("no tensor " + name);
}

template <class T> std::vector<T> asVec(const HfTensorBlob& b) {
    std::vector<T> v(b.data.size() / sizeof(T));
    std::memcpy(v.data(), b.data.data(), b.data.size());
    return v;
}

// ---- independent GPTQ reader (AutoGPTQ's unpacking, written from the description above) ----

/// Values of input row i (0..in-1) of output column c from qweight [in*bits/32, out].
uint32_t gptqCode(const std::vector<uint32_t>& q, int64_t out, int bits, int64_t i, int64_t c) {
    if (bits != 3) {
        const int per = 32 / bits;
        const uint32_t word = q[size_t((i / per) * out + c)];
        return (word >> (bits * (i % per))) & ((1u << bits) - 1u);
    }
    // 3 bits: 32 inputs in 3 words; word 0 holds inputs 0..9 at 3k and the low 2 bits of input
    // 10 at 30; word 1 its bit 2 at 0, inputs 11..20 at 3k+1 and the low bit of input 21 at 31;
    // word 2 its bits 1..2 at 0, inputs 22..31 at 3k+2.
    const int64_t blk = i / 32, k = i % 32;
    const uint32_t w0 = q[size_t((blk * 3 + 0) * out + c)];
    const uint32_t w1 = q[size_t((blk * 3 + 1) * out + c)];
    const uint32_t w2 = q[size_t((blk * 3 + 2) * out + c)];
    if (k < 10) return (w0 >> (3 * k)) & 7u;
    if (k == 10) return ((w0 >> 30) & 3u) | ((w1 << 2) & 4u);
    if (k < 21) return (w1 >> (3 * (k - 11) + 1)) & 7u;
    if (k == 21) return ((w1 >> 31) & 1u) | ((w2 << 1) & 6u);
    return (w2 >> (3 * (k - 22) + 2)) & 7u;
}

/// Zero point of output c in group row g from qzeros [groups, out*bits/32] (same packing, along
/// the output dim).
uint32_t gptqZeroStored(const std::vector<uint32_t>& qz, int64_t zw, int bits, int64_t g,
                        int64_t c) {
    // reuse the column reader: a qzeros row is a qweight column laid out along a row
    std::vector<uint32_t> col(static_cast<size_t>(zw));
    for (int64_t k = 0; k < zw; ++k) col[size_t(k)] = qz[size_t(g * zw + k)];
    return gptqCode(col, 1, bits, c, 0);
}

std::vector<float> readGptq(const std::vector<HfTensorBlob>& t, const std::string& mod, int bits,
                            bool v1, int64_t out, int64_t in) {
    const auto& qw = find(t, mod + ".qweight");
    const auto& qz = find(t, mod + ".qzeros");
    const auto& sc = find(t, mod + ".scales");
    const auto& gi = find(t, mod + ".g_idx");
    if (qw.dtype != DType::I32 || qz.dtype != DType::I32 || sc.dtype != DType::F16 ||
        gi.dtype != DType::I32)
        throw std::runtime_error("dtypes");
    if (qw.shape != std::vector<int64_t>{in / 32 * bits, out} ||
        gi.shape != std::vector<int64_t>{in})
        throw std::runtime_error("qweight / g_idx shape");
    const int64_t groups = sc.shape.at(0);
    if (sc.shape != std::vector<int64_t>{groups, out} ||
        qz.shape != std::vector<int64_t>{groups, out / 32 * bits})
        throw std::runtime_error("scales / qzeros shape");
    const auto q = asVec<uint32_t>(qw), z = asVec<uint32_t>(qz);
    const auto s = asVec<uint16_t>(sc);
    const auto g = asVec<int32_t>(gi);
    const uint32_t mask = (1u << bits) - 1u;
    std::vector<float> w(size_t(out * in));
    for (int64_t c = 0; c < out; ++c)
        for (int64_t i = 0; i < in; ++i) {
            const int64_t grp = g[size_t(i)];
            uint32_t zero = gptqZeroStored(z, out / 32 * bits, bits, grp, c);
            if (v1) zero = (zero + 1u) & mask;
            const float scale = f16ToF32(s[size_t(grp * out + c)]);
            w[size_t(c * in + i)] = scale * (float(gptqCode(q, out, bits, i, c)) - float(zero));
        }
    return w;
}

// ---- independent AWQ reader ----

constexpr int kReverse[8] = {0, 4, 1, 5, 2, 6, 3, 7}; // output j%8 sits in nibble kReverse[j%8]

std::vector<float> readAwq(const std::vector<HfTensorBlob>& t, const std::string& mod, int64_t out,
                           int64_t in, int64_t group) {
    const auto& qw = find(t, mod + ".qweight");
    const auto& qz = find(t, mod + ".qzeros");
    const auto& sc = find(t, mod + ".scales");
    const int64_t groups = in / group;
    if (qw.dtype != DType::I32 || qz.dtype != DType::I32 || sc.dtype != DType::F16)
        throw std::runtime_error("dtypes");
    if (qw.shape != std::vector<int64_t>{in, out / 8} ||
        qz.shape != std::vector<int64_t>{groups, out / 8} ||
        sc.shape != std::vector<int64_t>{groups, out})
        throw std::runtime_error("shapes");
    const auto q = asVec<uint32_t>(qw), z = asVec<uint32_t>(qz);
    const auto s = asVec<uint16_t>(sc);
    std::vector<float> w(size_t(out * in));
    for (int64_t i = 0; i < in; ++i)
        for (int64_t j = 0; j < out; ++j) {
            const int sh = 4 * kReverse[j % 8];
            const uint32_t code = (q[size_t(i * (out / 8) + j / 8)] >> sh) & 15u;
            const int64_t g = i / group;
            const uint32_t zero = (z[size_t(g * (out / 8) + j / 8)] >> sh) & 15u;
            w[size_t(j * in + i)] = f16ToF32(s[size_t(g * out + j)]) * (float(code) - float(zero));
        }
    return w;
}

bool sameValues(const std::vector<float>& a, const std::vector<float>& b, std::string* where) {
    if (a.size() != b.size()) {
        *where = "sizes " + std::to_string(a.size()) + " vs " + std::to_string(b.size());
        return false;
    }
    for (size_t i = 0; i < a.size(); ++i)
        if (!(a[i] == b[i])) {
            *where = "index " + std::to_string(i) + ": " + std::to_string(a[i]) + " vs " +
                     std::to_string(b[i]);
            return false;
        }
    return true;
}

} // namespace

class TestExportGptqAwq : public QObject {
    Q_OBJECT
private slots:
    void gptqRoundTripsExactly_data() {
        QTest::addColumn<int>("bits");
        QTest::addColumn<bool>("sym");
        QTest::addColumn<int>("group"); // -1: channel
        QTest::addColumn<int>("rows");
        QTest::addColumn<int>("cols");
        QTest::addColumn<bool>("v2");
        QTest::newRow("int4 g128 asym v1") << 4 << false << 128 << 64 << 256 << false;
        QTest::newRow("int4 g128 asym v2") << 4 << false << 128 << 96 << 384 << true;
        QTest::newRow("int4 g64 sym v1") << 4 << true << 64 << 32 << 128 << false;
        QTest::newRow("int4 g64 sym v2") << 4 << true << 64 << 64 << 192 << true;
        QTest::newRow("int8 channel sym") << 8 << true << -1 << 64 << 96 << false;
        QTest::newRow("int8 g32 asym") << 8 << false << 32 << 32 << 64 << false;
        QTest::newRow("int2 g32 asym") << 2 << false << 32 << 32 << 64 << false;
        QTest::newRow("int2 g32 sym v2") << 2 << true << 32 << 64 << 96 << true;
        QTest::newRow("int3 g32 asym") << 3 << false << 32 << 64 << 128 << false;
        QTest::newRow("int3 g64 sym") << 3 << true << 64 << 32 << 192 << false;
        QTest::newRow("int3 channel asym v2") << 3 << false << -1 << 96 << 64 << true;
        // large enough for the parallel packing loops
        QTest::newRow("int4 g128 asym v1 256x512") << 4 << false << 128 << 256 << 512 << false;
        QTest::newRow("int3 g128 sym 256x512") << 3 << true << 128 << 256 << 512 << false;
    }
    void gptqRoundTripsExactly() {
        QFETCH(int, bits);
        QFETCH(bool, sym);
        QFETCH(int, group);
        QFETCH(int, rows);
        QFETCH(int, cols);
        QFETCH(bool, v2);
        const auto w = randomWeights(rows, cols, unsigned(bits * 1000 + rows + cols));
        const PackedTensor p =
            compress::quantize(w.data(), rows, cols, intSettings(bits, sym, group), "t");
        const auto ref = compress::dequantize(p, "t");
        const std::string mod = "model.layers.0.self_attn.q_proj";
        const HfQuantModule m = moduleOf(mod, p);
        auto f = gptqFormat({.v2 = v2});
        QCOMPARE(f->name(), std::string("gptq"));
        QCOMPARE(f->cannotExpress(m), std::string());
        const auto t = f->encode(m);
        QCOMPARE(t.size(), size_t(4));
        checkDescribed(*f, m, t);
        const auto got = readGptq(t, mod, bits, !v2, rows, cols);
        std::string where;
        QVERIFY2(sameValues(got, ref, &where), where.c_str());
        // g_idx is j / group_size; channel: one group.
        const auto gidx = asVec<int32_t>(find(t, mod + ".g_idx"));
        const int gl = group < 0 ? cols : group;
        for (int j = 0; j < cols; ++j) QCOMPARE(gidx[size_t(j)], j / gl);
        // symmetric zero 2^(b-1): v1 stores 2^(b-1) - 1 in every field (4 bits: 0x77777777).
        if (sym && bits == 4) {
            const auto qz = asVec<uint32_t>(find(t, mod + ".qzeros"));
            for (uint32_t z : qz) QCOMPARE(z, v2 ? 0x88888888u : 0x77777777u);
        }
    }

    void gptqZeroPointConventions() {
        // A group whose weights are all >= 0 gets zero point 0 (asymmetric): v2 stores it,
        // v1 cannot (zero - 1 wraps), and says so.
        const int rows = 32, cols = 64;
        auto w = randomWeights(rows, cols, 7);
        for (int j = 0; j < 32; ++j) w[size_t(5 * cols + j)] = std::fabs(w[size_t(5 * cols + j)]);
        // a row of zeros: scale 0 (zero point irrelevant) is fine in v1
        for (int j = 0; j < cols; ++j) w[size_t(9 * cols + j)] = 0.0f;
        const PackedTensor p =
            compress::quantize(w.data(), rows, cols, intSettings(4, false, 32), "t");
        QCOMPARE(f16ToF32(p.zeros[size_t(5 * 2)]), 0.0f);
        const HfQuantModule m = moduleOf("model.layers.0.mlp.up_proj", p);
        const std::string why = gptqFormat()->cannotExpress(m);
        QVERIFY2(why.find("zero point 0") != std::string::npos, why.c_str());
        QVERIFY(why.find("gptq_v2") != std::string::npos);
        QVERIFY_THROWS_EXCEPTION(ArgumentError, gptqFormat()->encode(m));
        auto v2 = gptqFormat({.v2 = true});
        QCOMPARE(v2->cannotExpress(m), std::string());
        std::string where;
        QVERIFY2(sameValues(readGptq(v2->encode(m), m.module, 4, false, rows, cols),
                            compress::dequantize(p, "t"), &where),
                 where.c_str());
        // without the non-negative group, the zero row alone is fine in v1
        auto w2 = randomWeights(rows, cols, 8);
        for (int j = 0; j < cols; ++j) w2[size_t(9 * cols + j)] = 0.0f;
        const PackedTensor p2 =
            compress::quantize(w2.data(), rows, cols, intSettings(4, false, 32), "t");
        QCOMPARE(f16ToF32(p2.scales[size_t(9 * 2)]), 0.0f);
        const HfQuantModule m2 = moduleOf("model.layers.0.mlp.up_proj", p2);
        auto v1 = gptqFormat();
        QCOMPARE(v1->cannotExpress(m2), std::string());
        QVERIFY2(sameValues(readGptq(v1->encode(m2), m2.module, 4, true, rows, cols),
                            compress::dequantize(p2, "t"), &where),
                 where.c_str());
    }

    void awqRoundTripsExactly_data() {
        QTest::addColumn<bool>("sym");
        QTest::addColumn<int>("group");
        QTest::addColumn<int>("rows");
        QTest::addColumn<int>("cols");
        QTest::newRow("int4 g128 asym") << false << 128 << 40 << 256;
        QTest::newRow("int4 g64 sym") << true << 64 << 16 << 128;
        QTest::newRow("int4 g32 asym") << false << 32 << 64 << 96;
        QTest::newRow("int4 channel asym") << false << -1 << 8 << 96;
        QTest::newRow("int4 g128 asym 256x512") << false << 128 << 256 << 512;
    }
    void awqRoundTripsExactly() {
        QFETCH(bool, sym);
        QFETCH(int, group);
        QFETCH(int, rows);
        QFETCH(int, cols);
        const auto w = randomWeights(rows, cols, unsigned(rows * 7 + cols));
        const PackedTensor p =
            compress::quantize(w.data(), rows, cols, intSettings(4, sym, group), "t");
        const std::string mod = "model.layers.2.mlp.down_proj";
        const HfQuantModule m = moduleOf(mod, p);
        auto f = awqFormat();
        QCOMPARE(f->name(), std::string("awq"));
        QCOMPARE(f->cannotExpress(m), std::string());
        const auto t = f->encode(m);
        QCOMPARE(t.size(), size_t(3));
        checkDescribed(*f, m, t);
        std::string where;
        QVERIFY2(sameValues(readAwq(t, mod, rows, cols, group < 0 ? cols : group),
                            compress::dequantize(p, "t"), &where),
                 where.c_str());
        if (sym) { // zero 8 in every nibble
            for (uint32_t z : asVec<uint32_t>(find(t, mod + ".qzeros"))) QCOMPARE(z, 0x88888888u);
        }
        const auto c = f->quantizationConfig({&m}, {}, {});
        QCOMPARE(c["group_size"].get<int64_t>(), int64_t(group));
    }

    void awqPackingOrderByHand() {
        // One input, 8 outputs with codes 0..7 (asymmetric int4, zero 0 impossible to tell from
        // the codes: check the codes only). Output j's code must sit in nibble
        // kReverse[j]: the word reads 0x75316420.
        PackedTensor p;
        p.settings = intSettings(4, false, -1);
        p.rows = 8;
        p.cols = 1;
        p.codes.resize(8);
        for (int j = 0; j < 8; ++j) p.codes[size_t(j)] = uint8_t(j);
        p.scales.assign(8, f32ToF16(1.0f));
        p.zeros.assign(8, f32ToF16(3.0f));
        const HfQuantModule m = moduleOf("m", p);
        const auto t = awqFormat()->encode(m);
        QCOMPARE(asVec<uint32_t>(find(t, "m.qweight")), std::vector<uint32_t>{0x75316420u});
        QCOMPARE(asVec<uint32_t>(find(t, "m.qzeros")), std::vector<uint32_t>{0x33333333u});
    }

    void gptq3BitPackingByHand() {
        // 32 inputs, codes j % 8, one output column: one continuous LSB-first 96-bit stream,
        // i.e. AutoGPTQ's 3-word packing. Word 0 = codes 0..9 at 3j plus code 10's low bits.
        PackedTensor p;
        p.settings = intSettings(3, true, -1);
        p.rows = 32;
        p.cols = 32;
        p.codes.assign(size_t(32 * 12), 0);
        for (int r = 0; r < 32; ++r)
            for (int j = 0; j < 32; ++j) {
                const uint32_t u = uint32_t(j % 8);
                for (int b = 0; b < 3; ++b)
                    if (u >> b & 1u)
                        p.codes[size_t(r * 12 + (3 * j + b) / 8)] |=
                            uint8_t(1u << ((3 * j + b) % 8));
            }
        p.scales.assign(32, f32ToF16(0.5f));
        const HfQuantModule m = moduleOf("m", p);
        const auto t = gptqFormat()->encode(m);
        const auto q = asVec<uint32_t>(find(t, "m.qweight"));
        QCOMPARE(q.size(), size_t(3 * 32));
        uint32_t w0 = 0;
        for (int j = 0; j < 10; ++j) w0 |= uint32_t(j % 8) << (3 * j);
        w0 |= (10u % 8u & 3u) << 30;
        QCOMPARE(q[0], w0);
        // v1 symmetric 3-bit zero: stored 3 in every field; 32 outputs -> 3 words.
        const auto z = asVec<uint32_t>(find(t, "m.qzeros"));
        QCOMPARE(z.size(), size_t(3));
        std::string where;
        QVERIFY2(
            sameValues(readGptq(t, "m", 3, true, 32, 32), compress::dequantize(p, "t"), &where),
            where.c_str());
    }

    void notExpressible() {
        auto gptq = gptqFormat();
        auto awq = awqFormat();
        const auto w = randomWeights(64, 256, 3);
        auto reason = [&](const HfQuantFormat& f, const WeightSettings& s, int64_t rows = 64,
                          int64_t cols = 256) {
            const PackedTensor p = compress::quantize(w.data(), rows, cols, s, "t");
            return f.cannotExpress(moduleOf("model.layers.0.self_attn.q_proj", p));
        };
        auto has = [](const std::string& r, const char* what) {
            if (r.find(what) == std::string::npos) qWarning("reason: %s", r.c_str());
            return r.find(what) != std::string::npos;
        };
        WeightSettings s = intSettings(4, true, 128);
        s.granularity = Granularity::Tensor;
        QVERIFY(has(reason(*gptq, s), "tensor granularity"));
        QVERIFY(has(reason(*awq, s), "tensor granularity"));
        s = intSettings(8, true, -1);
        s.format = WeightFormat::Fp8E4M3;
        QVERIFY(has(reason(*gptq, s), "fp8"));
        s = intSettings(4, true, 64);
        s.format = WeightFormat::Nf4;
        QVERIFY(has(reason(*awq, s), "nf4"));
        s = compress::ggufSettings(compress::WeightMethod::Q4_0);
        QVERIFY(has(reason(*gptq, s), "GGUF"));
        QVERIFY(has(reason(*awq, s), "GGUF"));
        // compact formats (int4 g64 otherwise): DGQ's 8-bit scale codes have no place
        s = intSettings(4, true, 64);
        s.method = compress::WeightMethod::Dgq;
        QVERIFY(has(reason(*gptq, s), "dgq"));
        QVERIFY(has(reason(*awq, s), "dgq"));
        QVERIFY(has(reason(*gptq, intSettings(5, true, 64)), "5-bit"));
        QVERIFY(has(reason(*gptq, intSettings(6, false, 64)), "6-bit"));
        QVERIFY(has(reason(*awq, intSettings(8, true, 64)), "8-bit"));
        QVERIFY(has(reason(*awq, intSettings(3, true, 64)), "3-bit"));
        // a last group shorter than group_size: 160 = 2*64 + 32
        QVERIFY(has(reason(*gptq, intSettings(4, true, 64), 64, 160), "shorter"));
        QVERIFY(has(reason(*awq, intSettings(4, false, 64), 64, 160), "shorter"));
        // group larger than the row
        QVERIFY(has(reason(*awq, intSettings(4, false, 512), 64, 256), "shorter"));
        // shapes: GPTQ words of 32, AWQ 8 outputs per word
        QVERIFY(has(reason(*gptq, intSettings(4, true, 32), 48, 256), "multiple of 32"));
        QVERIFY(has(reason(*gptq, intSettings(4, true, 16), 64, 48), "multiple of 32"));
        QVERIFY(has(reason(*awq, intSettings(4, true, 32), 12, 64), "multiple of 8"));
        QCOMPARE(reason(*awq, intSettings(4, true, 16), 8, 48), std::string());

        // outliers
        PackedTensor p = compress::quantize(w.data(), 64, 256, intSettings(4, true, 128), "t");
        p.outlierCols = {3};
        p.outlierValues.assign(64, 0);
        HfQuantModule m = moduleOf("model.layers.0.self_attn.q_proj", p);
        QVERIFY(has(gptq->cannotExpress(m), "outlier"));
        QVERIFY(has(awq->cannotExpress(m), "outlier"));
        // activation quantisation
        const PackedTensor pa =
            compress::quantize(w.data(), 64, 256, intSettings(4, true, 128), "t");
        m = moduleOf("model.layers.0.self_attn.q_proj", pa);
        m.activation.bits = 8;
        QVERIFY(has(gptq->cannotExpress(m), "activation"));
        QVERIFY(has(awq->cannotExpress(m), "activation"));
        // pruned but not quantised
        std::vector<float> vals(size_t(64 * 256), 0.0f);
        HfQuantModule pr;
        pr.module = "model.layers.0.mlp.up_proj";
        pr.values = &vals;
        pr.rows = 64;
        pr.cols = 256;
        QVERIFY(has(gptq->cannotExpress(pr), "not quantised"));
        QVERIFY(has(awq->cannotExpress(pr), "not quantised"));
        // pruned AND quantised: the zeros are codes like any other; expressible
        m = moduleOf("model.layers.0.self_attn.q_proj", pa);
        std::vector<uint8_t> mask(size_t(64 * 256), 1);
        compress::SparsitySettings sp;
        m.sparsity = sp;
        m.mask = &mask;
        QCOMPARE(gptq->cannotExpress(m), std::string());
        // (a fresh AWQ format: the one above took group_size 16 from the first module it
        // accepted)
        QCOMPARE(awqFormat()->cannotExpress(m), std::string());
    }

    void mixedSettings() {
        const auto w = randomWeights(64, 256, 11);
        const PackedTensor a =
            compress::quantize(w.data(), 64, 256, intSettings(4, true, 128), "a");
        const PackedTensor b =
            compress::quantize(w.data(), 64, 256, intSettings(4, true, 128), "b");
        const PackedTensor c =
            compress::quantize(w.data(), 64, 256, intSettings(8, false, 64), "c");
        const HfQuantModule ma = moduleOf("model.layers.0.self_attn.q_proj", a);
        const HfQuantModule mb = moduleOf("model.layers.1.self_attn.q_proj", b);
        const HfQuantModule mc = moduleOf("model.layers.1.mlp.down_proj", c);
        std::vector<const HfQuantModule*> all{&mc, &ma, &mb};

        // GPTQ with dynamic overrides: the majority is the base, the others get "+:" entries,
        // linears left in floats "-:" entries.
        auto g = gptqFormat();
        g->plan(all);
        for (auto* m : all) QCOMPARE(g->cannotExpress(*m), std::string());
        const auto q = g->quantizationConfig(all, {"model.layers.1.self_attn.k_proj"}, {});
        QCOMPARE(q["bits"].get<int>(), 4);
        QCOMPARE(q["group_size"].get<int>(), 128);
        QCOMPARE(q["sym"].get<bool>(), true);
        const auto& dyn = q["dynamic"];
        QCOMPARE(dyn.size(), size_t(2));
        QVERIFY(dyn.contains("-:^model\\.layers\\.1\\.self_attn\\.k_proj$"));
        const auto& o = dyn["+:^model\\.layers\\.1\\.mlp\\.down_proj$"];
        QCOMPARE(o["bits"].get<int>(), 8);
        QCOMPARE(o["group_size"].get<int>(), 64);
        QCOMPARE(o["sym"].get<bool>(), false);

        // k_proj of block 1 stays in floats while block 0's k_proj is not written either:
        // transformers' suffix list of the linears to quantise is exact.
        QCOMPARE(q["modules_in_block_to_quantize"],
                 nlohmann::ordered_json::parse(R"([["mlp.down_proj", "self_attn.q_proj"]])"));
        // a float q_proj in block 2 while q_proj is written elsewhere: no suffix list can say it
        QVERIFY(!g->quantizationConfig(all, {"model.layers.2.self_attn.q_proj"}, {})
                     .contains("modules_in_block_to_quantize"));
        QVERIFY(
            !g->quantizationConfig(all, {"lm_head"}, {}).contains("modules_in_block_to_quantize"));

        // GPTQ without dynamic: the minority module is not expressible.
        auto plain = gptqFormat({.dynamic = false});
        plain->plan(all);
        QCOMPARE(plain->cannotExpress(ma), std::string());
        const std::string why = plain->cannotExpress(mc);
        QVERIFY2(why.find("int8 g64 asym") != std::string::npos &&
                     why.find("int4 g128 sym") != std::string::npos,
                 why.c_str());
        QVERIFY(!plain->quantizationConfig({&ma, &mb}, {}, {}).contains("dynamic"));
        // without plan(): the first module asked fixes the setting
        auto plain2 = gptqFormat({.dynamic = false});
        QCOMPARE(plain2->cannotExpress(mc), std::string());
        QVERIFY(!plain2->cannotExpress(ma).empty());
        QCOMPARE(plain2->quantizationConfig({&mc}, {}, {})["bits"].get<int>(), 8);

        // AWQ: one group size; sym and asym both fit (zero_point true, zero 8 for sym).
        const PackedTensor d =
            compress::quantize(w.data(), 64, 256, intSettings(4, false, 64), "d");
        const PackedTensor e =
            compress::quantize(w.data(), 64, 256, intSettings(4, false, 128), "e");
        const HfQuantModule md = moduleOf("model.layers.2.mlp.up_proj", d);
        const HfQuantModule me = moduleOf("model.layers.2.mlp.gate_proj", e);
        auto aw = awqFormat();
        aw->plan({&md, &ma, &mb, &me});
        QCOMPARE(aw->cannotExpress(ma), std::string());
        QCOMPARE(aw->cannotExpress(me), std::string());
        QVERIFY(aw->cannotExpress(md).find("group_size 64") != std::string::npos);
        QCOMPARE(aw->quantizationConfig({&ma, &mb, &me}, {}, {})["group_size"].get<int>(), 128);
        // without plan(): the first module asked fixes the group size
        auto aw2 = awqFormat();
        QCOMPARE(aw2->cannotExpress(md), std::string());
        QVERIFY(!aw2->cannotExpress(ma).empty());
    }

    void gptqActOrderGroupsWriteGidx() {
        // GPTQ's act-order groups (PackedTensor::colOrder): qweight in input-column order,
        // g_idx = each input column's group, desc_act; the independent reader dequantises them
        // exactly. AWQ has no g_idx: not expressible.
        const int64_t rows = 64, cols = 256, n = 300;
        const auto w = randomWeights(rows, cols, 11);
        std::mt19937 rng(12);
        std::normal_distribution<double> nd(0.0, 1.0);
        std::vector<double> X(size_t(n * cols));
        for (int64_t t = 0; t < n; ++t)
            for (int64_t j = 0; j < cols; ++j)
                X[size_t(t * cols + j)] = nd(rng) * (1.0 + double((j * 37) % 11));
        std::vector<double> H(size_t(cols * cols), 0.0);
        for (int64_t t = 0; t < n; ++t)
            for (int64_t a = 0; a < cols; ++a)
                for (int64_t b = 0; b < cols; ++b)
                    H[size_t(a * cols + b)] += X[size_t(t * cols + a)] * X[size_t(t * cols + b)];
        for (const bool sym : {false, true}) {
            WeightSettings s = intSettings(4, sym, 64);
            s.method = compress::WeightMethod::Gptq;
            compress::GptqOptions o;
            o.actOrder = true;
            const PackedTensor p =
                compress::gptqQuantize(w.data(), rows, cols, H.data(), s, o, "t").packed;
            QCOMPARE(int64_t(p.colOrder.size()), cols);
            const auto ref = compress::dequantize(p, "t");
            const std::string mod = "model.layers.0.self_attn.q_proj";
            HfQuantModule m = moduleOf(mod, p);
            m.weightJson = {{"method", "gptq"}, {"act_order", true}};
            for (const bool v2 : {false, true}) {
                auto f = gptqFormat({.v2 = v2});
                QCOMPARE(f->cannotExpress(m), std::string());
                const auto t = f->encode(m);
                std::string where;
                QVERIFY2(sameValues(readGptq(t, mod, 4, !v2, rows, cols), ref, &where),
                         where.c_str());
                const auto gidx = asVec<int32_t>(find(t, mod + ".g_idx"));
                bool trivial = true;
                for (int64_t j = 0; j < cols; ++j) {
                    // stored column k of input column j, group k / 64
                    const auto k = std::find(p.colOrder.begin(), p.colOrder.end(), int32_t(j)) -
                                   p.colOrder.begin();
                    QCOMPARE(gidx[size_t(j)], int32_t(k / 64));
                    trivial = trivial && gidx[size_t(j)] == int32_t(j / 64);
                }
                QVERIFY(!trivial);
                const auto q = f->quantizationConfig({&m}, {}, {});
                QCOMPARE(q["desc_act"].get<bool>(), true);
                QCOMPARE(q["static_groups"].get<bool>(), false);
            }
            QVERIFY(awqFormat()->cannotExpress(m).find("g_idx") != std::string::npos);
        }
    }

    void gptqConfigKeys() {
        const auto w = randomWeights(64, 256, 5);
        const PackedTensor a =
            compress::quantize(w.data(), 64, 256, intSettings(4, false, 128), "a");
        HfQuantModule m = moduleOf("model.layers.0.self_attn.q_proj", a);
        m.weightJson = {{"method", "gptq"}, {"damp", 0.02}, {"act_order", true}};
        auto f = gptqFormat();
        const auto q = f->quantizationConfig({&m}, {}, {});
        // transformers' GPTQConfig / AutoGPTQ's BaseQuantizeConfig keys
        QCOMPARE(q["quant_method"].get<std::string>(), std::string("gptq"));
        QCOMPARE(q["bits"].get<int>(), 4);
        QCOMPARE(q["group_size"].get<int>(), 128);
        QCOMPARE(q["desc_act"].get<bool>(), false); // trivial g_idx
        QCOMPARE(q["sym"].get<bool>(), false);
        QCOMPARE(q["damp_percent"].get<double>(), 0.02);
        QCOMPARE(q["static_groups"].get<bool>(), true); // act_order with contiguous groups
        QVERIFY(q.contains("true_sequential"));
        QCOMPARE(q["checkpoint_format"].get<std::string>(), std::string("gptq"));
        QCOMPARE(q["lm_head"].get<bool>(), false);
        QVERIFY(!q.contains("dynamic"));
        QVERIFY(!q.contains("meta")); // AutoRound refuses gptq configs with meta
        const auto files = f->extraFiles(q);
        QCOMPARE(files.size(), size_t(1));
        QCOMPARE(files[0].first, std::string("quantize_config.json"));
        const auto qc = nlohmann::json::parse(files[0].second);
        for (const char* k : {"bits", "group_size", "damp_percent", "desc_act", "static_groups",
                              "sym", "true_sequential", "model_name_or_path",
                              "model_file_base_name", "quant_method", "checkpoint_format"})
            QVERIFY2(qc.contains(k), k);
        QCOMPARE(qc["bits"].get<int>(), 4);
        QCOMPARE(qc["sym"].get<bool>(), false);
        QCOMPARE(qc["damp_percent"].get<double>(), 0.02);

        // v2, channel, RTN (default damp 0.01), quantised lm_head
        const PackedTensor b = compress::quantize(w.data(), 64, 256, intSettings(8, true, -1), "b");
        HfQuantModule lm = moduleOf("lm_head", b);
        const auto q2 = gptqFormat({.v2 = true})->quantizationConfig({&lm}, {}, {});
        QCOMPARE(q2["checkpoint_format"].get<std::string>(), std::string("gptq_v2"));
        QCOMPARE(q2["group_size"].get<int>(), -1);
        QCOMPARE(q2["bits"].get<int>(), 8);
        QCOMPARE(q2["damp_percent"].get<double>(), 0.01);
        QCOMPARE(q2["static_groups"].get<bool>(), false);
        QCOMPARE(q2["lm_head"].get<bool>(), true);
    }

    void awqConfigKeys() {
        const auto w = randomWeights(64, 256, 6);
        const PackedTensor a =
            compress::quantize(w.data(), 64, 256, intSettings(4, true, 128), "a");
        const HfQuantModule m = moduleOf("model.layers.0.self_attn.q_proj", a);
        auto f = awqFormat();
        auto q = f->quantizationConfig({&m}, {}, {});
        QCOMPARE(q["quant_method"].get<std::string>(), std::string("awq"));
        QCOMPARE(q["zero_point"].get<bool>(), true);
        QCOMPARE(q["group_size"].get<int>(), 128);
        QCOMPARE(q["bits"].get<int>(), 4);
        QCOMPARE(q["version"].get<std::string>(), std::string("gemm"));
        QVERIFY(q["modules_to_not_convert"].is_null());
        q = f->quantizationConfig({&m}, {"model.layers.0.mlp.gate", "lm_head"}, {});
        QCOMPARE(q["modules_to_not_convert"].size(), size_t(2));
        QCOMPARE(q["modules_to_not_convert"][0].get<std::string>(),
                 std::string("model.layers.0.mlp.gate"));
        QVERIFY(f->extraFiles(q).empty());
    }
};

QTEST_GUILESS_MAIN(TestExportGptqAwq)
#include "test_export_gptq_awq.moc"
