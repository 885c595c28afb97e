// Tests of core/io: safetensors (single, sharded, writer), HF config parsing, tensor names,
// quantisation formats, GGUF reader/writer, llama2.c reader. No tokenizer needed.
#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/io/gguf.h"
#include "core/io/hf_config.h"
#include "core/io/llama2c.h"
#include "core/io/quants.h"
#include "core/io/safetensors.h"
#include "core/io/tensor_names.h"
#include "test_util.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

namespace {

std::vector<float> toFloats(const lcw::TensorView& t) {
    std::vector<float> v(size_t(t.numel()));
    for (int64_t r = 0; r < t.rows(); ++r)
        lcw::dequantizeRow(t.dtype, t.row(r), v.data() + r * t.cols(), t.cols());
    return v;
}

template <class E, class F> std::string expectThrow(F&& f) {
    try {
        f();
    } catch (const E& e) {
        return e.what();
    }
    return "<no exception>";
}

bool contains(const std::string& s, const std::string& sub) {
    return s.find(sub) != std::string::npos;
}

uint16_t h16(float f) {
    return lcw::f32ToF16(f);
}
void put16(uint8_t* p, uint16_t v) {
    p[0] = uint8_t(v);
    p[1] = uint8_t(v >> 8);
}
float rd16(const uint8_t* p) {
    return lcw::f16ToF32(uint16_t(p[0] | (p[1] << 8)));
}

// The 6-bit (scale, min) of sub-block j in the 12-byte packing of Q4_K/Q5_K, written from the
// format description: bytes 0-3 hold scales 0-3 (low 6 bits), bytes 4-7 mins 0-3, bytes 8-11
// the low nibbles of scales/mins 4-7, whose top 2 bits sit in the top bits of bytes 0-7.
void k4ScaleMin(const uint8_t* s, int j, int& sc, int& mn) {
    if (j < 4) {
        sc = s[j] & 63;
        mn = s[j + 4] & 63;
    } else {
        sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// Element-indexed reference decoders (one value at a time, from the block layouts).
float refQ2K(const uint8_t* b, int e) {
    const uint8_t* scales = b;
    const uint8_t* qs = b + 16;
    const float d = rd16(b + 80), dmin = rd16(b + 82);
    const int n = e / 128, r = e % 128, j = r / 32, half = (r % 32) / 16, l = r % 16;
    const int q = (qs[n * 32 + half * 16 + l] >> (2 * j)) & 3;
    const int sc = scales[n * 8 + j * 2 + half];
    return d * float(sc & 15) * float(q) - dmin * float(sc >> 4);
}
float refQ3K(const uint8_t* b, int e) {
    const uint8_t* hmask = b;
    const uint8_t* qs = b + 32;
    const uint8_t* sb = b + 96;
    const float d = rd16(b + 108);
    const int n = e / 128, r = e % 128, j = r / 32, half = (r % 32) / 16, l = r % 16;
    const int q = (qs[n * 32 + half * 16 + l] >> (2 * j)) & 3;
    const bool high = (hmask[half * 16 + l] >> (n * 4 + j)) & 1;
    const int i = n * 8 + j * 2 + half; // scale index 0..15
    const int low4 = i < 8 ? (sb[i] & 15) : (sb[i - 8] >> 4);
    const int hi2 = (sb[8 + i % 4] >> (2 * (i / 4))) & 3;
    const int sc = (low4 | (hi2 << 4)) - 32;
    return d * float(sc) * float(q - (high ? 0 : 4));
}
float refQ4K(const uint8_t* b, int e) {
    const float d = rd16(b), dmin = rd16(b + 2);
    const int c = e / 64, hi = (e % 64) / 32, l = e % 32;
    const uint8_t byte = b[16 + c * 32 + l];
    const int q = hi ? byte >> 4 : byte & 15;
    int sc, mn;
    k4ScaleMin(b + 4, 2 * c + hi, sc, mn);
    return d * float(sc) * float(q) - dmin * float(mn);
}
float refQ5K(const uint8_t* b, int e) {
    const float d = rd16(b), dmin = rd16(b + 2);
    const int c = e / 64, hi = (e % 64) / 32, l = e % 32;
    const uint8_t byte = b[48 + c * 32 + l];
    const int q = (hi ? byte >> 4 : byte & 15) + (((b[16 + l] >> (2 * c + hi)) & 1) << 4);
    int sc, mn;
    k4ScaleMin(b + 4, 2 * c + hi, sc, mn);
    return d * float(sc) * float(q) - dmin * float(mn);
}
float refQ6K(const uint8_t* b, int e) {
    const uint8_t* ql = b;
    const uint8_t* qh = b + 128;
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
    const float d = rd16(b + 208);
    const int n = e / 128, r = e % 128, k = r / 32, l = r % 32;
    const uint8_t lowByte = ql[n * 64 + (k % 2) * 32 + l];
    const int low4 = k < 2 ? lowByte & 15 : lowByte >> 4;
    const int hi2 = (qh[n * 32 + l] >> (2 * k)) & 3;
    const int q = (low4 | (hi2 << 4)) - 32;
    return d * float(sc[n * 8 + l / 16 + 2 * k]) * float(q);
}

// Random block bytes with a sane fp16 scale at the given offsets.
std::vector<uint8_t> randomBlocks(std::mt19937& rng, int nblocks, int bytes,
                                  std::vector<int> halfOffsets) {
    std::vector<uint8_t> b(size_t(nblocks * bytes));
    for (auto& x : b) x = uint8_t(rng());
    std::uniform_real_distribution<float> u(0.001f, 0.1f);
    for (int i = 0; i < nblocks; ++i)
        for (int off : halfOffsets) put16(&b[size_t(i * bytes + off)], h16(u(rng)));
    return b;
}

} // namespace

class TestIo : public QObject {
    Q_OBJECT
private slots:
    // ---------------- safetensors ----------------
    void safetensorsReadsStories() {
        LCW_REQUIRE_SHARED("models/stories260K/hf/model.safetensors");
        const std::string p = lcwtest::sharedPath("models/stories260K/hf/model.safetensors");
        auto st = lcw::readSafetensors(p);
        const lcw::TensorView* e = st.find("model.embed_tokens.weight");
        QVERIFY(e);
        QCOMPARE(e->shape, (std::vector<int64_t>{512, 64}));
        QCOMPARE(e->dtype, lcw::DType::F32);
        QCOMPARE(e->nbytes, uint64_t(512 * 64 * 4));
        QCOMPARE(e->file, p);
        QVERIFY(st.find("model.layers.4.mlp.down_proj.weight"));
        // data order: each tensor starts where the previous ended
        for (size_t i = 1; i < st.tensors.size(); ++i)
            QVERIFY(st.tensors[i].data >= st.tensors[i - 1].data + st.tensors[i - 1].nbytes);
        int64_t params = 0;
        for (const auto& t : st.tensors) params += t.numel();
        QVERIFY(params > 250000 && params < 300000);
    }
    void safetensorsShardedIndex() {
        LCW_REQUIRE_SHARED("models/tiny-random/qwen2_sharded/model/model.safetensors.index.json");
        auto st = lcw::readSafetensorsFolder(
            lcwtest::sharedPath("models/tiny-random/qwen2_sharded/model"));
        QCOMPARE(int(st.files.size()), 5);
        QCOMPARE(int(st.tensors.size()), 26);
        const auto* b = st.find("model.layers.1.self_attn.q_proj.bias");
        QVERIFY(b);
        QVERIFY(contains(b->file, "model-00003-of-00005.safetensors"));
        QCOMPARE(b->shape, (std::vector<int64_t>{64}));
    }
    void safetensorsWriteReadRoundTrip() {
        const std::string dir = lcwtest::tempDir("stwrite");
        std::vector<lcw::TensorDesc> d = {
            {"a", lcw::DType::F32, {3, 5}},    {"b.bf16", lcw::DType::BF16, {7}},
            {"c", lcw::DType::I64, {2, 2, 2}}, {"empty", lcw::DType::F16, {0, 4}},
            {"flag", lcw::DType::Bool, {3}},   {"h", lcw::DType::F16, {4}},
        };
        auto fill = [&](size_t i, std::byte* dst, uint64_t n) {
            for (uint64_t k = 0; k < n; ++k) dst[k] = std::byte(uint8_t(i * 31 + k * 7));
        };
        const std::string p = dir + "/m.safetensors";
        lcw::writeSafetensors(p, d, fill, {{"format", "pt"}});
        auto st = lcw::readSafetensors(p);
        QCOMPARE(int(st.tensors.size()), 6);
        QCOMPARE(st.metadata.size(), size_t(1));
        QCOMPARE(st.metadata[0].second, std::string("pt"));
        for (size_t i = 0; i < d.size(); ++i) {
            const auto* t = st.find(d[i].name);
            QVERIFY(t);
            QCOMPARE(t->dtype, d[i].dtype);
            QCOMPARE(t->shape, d[i].shape);
            // file order is the descriptor order
            QCOMPARE(st.tensors[i].name, d[i].name);
            for (uint64_t k = 0; k < t->nbytes; ++k)
                QCOMPARE(uint8_t(t->data[k]), uint8_t(i * 31 + k * 7));
        }
        // The data section starts 8-aligned.
        QCOMPARE(uint64_t(st.tensors[0].data - st.files[0]->data()) % 8, uint64_t(0));
        // Rewriting replaces the file atomically and leaves no temp files.
        lcw::writeSafetensors(p, st.tensors);
        auto st2 = lcw::readSafetensors(p);
        QCOMPARE(int(st2.tensors.size()), 6);
        int files = 0;
        for (auto& e : std::filesystem::directory_iterator(dir)) (void)e, ++files;
        QCOMPARE(files, 1);
        // Block formats cannot go into safetensors.
        QVERIFY_THROWS_EXCEPTION(
            lcw::ArgumentError,
            lcw::writeSafetensors(dir + "/q.safetensors", {{"q", lcw::DType::Q8_0, {32}}}, fill));
    }
    void safetensorsShardedWriter() {
        const std::string dir = lcwtest::tempDir("stshard");
        std::vector<lcw::TensorDesc> d;
        for (int i = 0; i < 7; ++i)
            d.push_back({std::string("t").append(std::to_string(i)), lcw::DType::F32, {100}});
        auto fill = [](size_t i, std::byte* dst, uint64_t n) {
            for (uint64_t k = 0; k < n / 4; ++k) {
                const float v = float(i * 1000 + k);
                std::memcpy(dst + 4 * k, &v, 4);
            }
        };
        auto files = lcw::writeSafetensorsSharded(dir, d, fill, 1000); // 2 tensors per shard
        QCOMPARE(int(files.size()), 5);                                // 4 shards + index
        QVERIFY(contains(files[0], "model-00001-of-00004.safetensors"));
        QVERIFY(contains(files.back(), "model.safetensors.index.json"));
        auto st = lcw::readSafetensorsFolder(dir);
        QCOMPARE(int(st.tensors.size()), 7);
        for (int i = 0; i < 7; ++i) {
            const auto* t = st.find(std::string("t").append(std::to_string(i)));
            QVERIFY(t);
            QCOMPARE(toFloats(*t)[99], float(i * 1000 + 99));
        }
        // A single shard: model.safetensors, no index.
        const std::string dir2 = lcwtest::tempDir("stshard1");
        auto f2 = lcw::writeSafetensorsSharded(dir2, d, fill, uint64_t(1) << 30);
        QCOMPARE(int(f2.size()), 1);
        QVERIFY(contains(f2[0], "/model.safetensors"));
    }
    void safetensorsTruncatedIsFormatError() {
        const std::string dir = lcwtest::tempDir("sttrunc");
        const std::string p = dir + "/m.safetensors";
        lcw::writeSafetensors(p, {{"a", lcw::DType::F32, {64}}},
                              [](size_t, std::byte* d, uint64_t n) { std::memset(d, 0, n); });
        std::filesystem::resize_file(p, std::filesystem::file_size(p) - 4);
        const std::string msg = expectThrow<lcw::FormatError>([&] { lcw::readSafetensors(p); });
        QVERIFY2(contains(msg, p) && contains(msg, "past the end"), msg.c_str());
    }

    // ---------------- quantisation formats ----------------
    void dequantHandBuiltSmallBlocks() {
        float y[32];
        // q8_0: d = 0.25, qs = -16..15
        uint8_t q8[34];
        put16(q8, h16(0.25f));
        for (int j = 0; j < 32; ++j) q8[2 + j] = uint8_t(int8_t(j - 16));
        lcw::dequantizeRow(lcw::DType::Q8_0, reinterpret_cast<std::byte*>(q8), y, 32);
        for (int j = 0; j < 32; ++j) QCOMPARE(y[j], 0.25f * float(j - 16));
        // q4_0: d = 2, byte 0x9F → element 0 = (15-8)*2 = 14, element 16 = (9-8)*2 = 2
        uint8_t q4[18] = {};
        put16(q4, h16(2.0f));
        q4[2] = 0x9F;
        for (int j = 1; j < 16; ++j) q4[2 + j] = 0x88; // zeros
        lcw::dequantizeRow(lcw::DType::Q4_0, reinterpret_cast<std::byte*>(q4), y, 32);
        QCOMPARE(y[0], 14.0f);
        QCOMPARE(y[16], 2.0f);
        QCOMPARE(y[5], 0.0f);
        // q4_1: d = 0.5, m = -1; byte 0x3A → element 0 = 10*0.5-1 = 4, element 16 = 3*0.5-1
        uint8_t q41[20] = {};
        put16(q41, h16(0.5f));
        put16(q41 + 2, h16(-1.0f));
        q41[4] = 0x3A;
        lcw::dequantizeRow(lcw::DType::Q4_1, reinterpret_cast<std::byte*>(q41), y, 32);
        QCOMPARE(y[0], 4.0f);
        QCOMPARE(y[16], 0.5f);
        QCOMPARE(y[1], -1.0f);
        // q5_0: d = 1; element 3 has fifth bit (qh bit 3) and nibble 1 → 17-16 = 1; element 19
        // has qh bit 19 clear and nibble 0 → -16.
        uint8_t q5[22] = {};
        put16(q5, h16(1.0f));
        const uint32_t qh = 1u << 3;
        std::memcpy(q5 + 2, &qh, 4);
        q5[6 + 3] = 0x01;
        lcw::dequantizeRow(lcw::DType::Q5_0, reinterpret_cast<std::byte*>(q5), y, 32);
        QCOMPARE(y[3], 1.0f);
        QCOMPARE(y[19], -16.0f);
        QCOMPARE(y[0], -16.0f);
        // q5_1: d = 1, m = 0.5; element 20: qh bit 20 set, high nibble of byte 4 = 2 → 18.5
        uint8_t q51[24] = {};
        put16(q51, h16(1.0f));
        put16(q51 + 2, h16(0.5f));
        const uint32_t qh1 = 1u << 20;
        std::memcpy(q51 + 4, &qh1, 4);
        q51[8 + 4] = 0x20;
        lcw::dequantizeRow(lcw::DType::Q5_1, reinterpret_cast<std::byte*>(q51), y, 32);
        QCOMPARE(y[20], 18.5f);
        QCOMPARE(y[4], 0.5f);
    }
    void dequantKQuantsMatchFormatDescription() {
        std::mt19937 rng(42);
        struct Case {
            lcw::DType t;
            int bytes;
            std::vector<int> halves;
            float (*ref)(const uint8_t*, int);
        };
        const Case cases[] = {
            {lcw::DType::Q2_K, 84, {80, 82}, refQ2K}, {lcw::DType::Q3_K, 110, {108}, refQ3K},
            {lcw::DType::Q4_K, 144, {0, 2}, refQ4K},  {lcw::DType::Q5_K, 176, {0, 2}, refQ5K},
            {lcw::DType::Q6_K, 210, {208}, refQ6K},
        };
        for (const auto& c : cases) {
            const int nb = 8;
            auto blocks = randomBlocks(rng, nb, c.bytes, c.halves);
            std::vector<float> y(size_t(nb * 256));
            lcw::dequantizeRow(c.t, reinterpret_cast<const std::byte*>(blocks.data()), y.data(),
                               nb * 256);
            for (int b = 0; b < nb; ++b)
                for (int e = 0; e < 256; ++e) {
                    const float want = c.ref(blocks.data() + b * c.bytes, e);
                    if (y[size_t(b * 256 + e)] != want)
                        QFAIL(qPrintable(
                            QString("%1 block %2 element %3: got %4 want %5")
                                .arg(QString::fromStdString(std::string(lcw::dtypeName(c.t))))
                                .arg(b)
                                .arg(e)
                                .arg(y[size_t(b * 256 + e)])
                                .arg(want)));
                }
        }
        // A hand-set Q6_K block: d = 1, all scales 2, every q = 33 → (33-32)*2 = 2;
        // low nibble 1 everywhere, high bits 2 → q = 1 | 2<<4 = 33.
        uint8_t b6[210];
        std::memset(b6, 0x11, 128);
        std::memset(b6 + 128, 0xAA, 64);
        std::memset(b6 + 192, 2, 16);
        put16(b6 + 208, h16(1.0f));
        std::vector<float> y(256);
        lcw::dequantizeRow(lcw::DType::Q6_K, reinterpret_cast<std::byte*>(b6), y.data(), 256);
        for (float v : y) QCOMPARE(v, 2.0f);
    }
    void quantizeRoundTripWithinBounds() {
        std::mt19937 rng(7);
        std::normal_distribution<float> nd(0.0f, 1.0f);
        const int n = 32 * 64;
        std::vector<float> x(n);
        for (auto& v : x) v = nd(rng);
        x[5] = 0.0f;
        for (int j = 32; j < 64; ++j) x[size_t(j)] = 0.0f; // an all-zero block
        const float u = std::ldexp(1.0f, -11);             // fp16 relative rounding
        for (lcw::DType t :
             {lcw::DType::Q4_0, lcw::DType::Q4_1, lcw::DType::Q5_0, lcw::DType::Q5_1,
              lcw::DType::Q8_0, lcw::DType::F16, lcw::DType::BF16, lcw::DType::F32}) {
            std::vector<std::byte> q(size_t(*lcw::dtypeBytesFor(t, n)));
            lcw::quantizeRow(t, x.data(), q.data(), n);
            std::vector<float> y(n);
            lcw::dequantizeRow(t, q.data(), y.data(), n);
            for (int b = 0; b < n / 32; ++b) {
                float amax = 0, mn = INFINITY, mx = -INFINITY;
                for (int j = 0; j < 32; ++j) {
                    const float v = x[size_t(b * 32 + j)];
                    amax = std::max(amax, std::fabs(v));
                    mn = std::min(mn, v);
                    mx = std::max(mx, v);
                }
                for (int j = 0; j < 32; ++j) {
                    const float v = x[size_t(b * 32 + j)];
                    float bound = 0;
                    switch (t) {
                    // symmetric: d = amax/L; elements of the other sign may clamp by one step
                    case lcw::DType::Q4_0:
                        bound = amax / 8 * (1.0f + 8 * u);
                        break;
                    case lcw::DType::Q5_0:
                        bound = amax / 16 * (1.0f + 16 * u);
                        break;
                    case lcw::DType::Q8_0:
                        bound = amax / 127 * (0.5f + 127 * u);
                        break;
                    // asymmetric: half a step plus fp16 rounding of d and m
                    case lcw::DType::Q4_1:
                        bound = (mx - mn) / 15 * (0.5f + 15 * u) + std::fabs(mn) * u;
                        break;
                    case lcw::DType::Q5_1:
                        bound = (mx - mn) / 31 * (0.5f + 31 * u) + std::fabs(mn) * u;
                        break;
                    case lcw::DType::F16:
                        bound = std::fabs(v) * u;
                        break;
                    case lcw::DType::BF16:
                        bound = std::fabs(v) * std::ldexp(1.0f, -8);
                        break;
                    default:
                        bound = 0;
                    }
                    bound += 1e-6f * amax;
                    const float err = std::fabs(y[size_t(b * 32 + j)] - v);
                    if (err > bound)
                        QFAIL(qPrintable(
                            QString("%1: element %2 error %3 > bound %4")
                                .arg(QString::fromStdString(std::string(lcw::dtypeName(t))))
                                .arg(b * 32 + j)
                                .arg(err)
                                .arg(bound)));
                }
            }
            // the all-zero block stays exactly zero
            for (int j = 32; j < 64; ++j) QCOMPARE(y[size_t(j)], 0.0f);
        }
        // Reference rounding: 8 levels down from the signed max for q4_0 (d = max / -8).
        float blk[32] = {};
        blk[0] = -4.0f; // max-abs element, d = 0.5
        blk[1] = 1.2f;  // 1.2/-0.5 = -2.4 → (int)(-2.4 + 8.5) = 6 → (6-8)*-0.5 = 1.0
        std::byte q[18];
        lcw::quantizeRow(lcw::DType::Q4_0, blk, q, 32);
        float y[32];
        lcw::dequantizeRow(lcw::DType::Q4_0, q, y, 32);
        QCOMPARE(y[0], -4.0f);
        QCOMPARE(y[1], 1.0f);
        QVERIFY_THROWS_EXCEPTION(lcw::ArgumentError,
                                 lcw::quantizeRow(lcw::DType::Q8_0, blk, q, 31));
        // k-quants are supported now (tests/test_gguf_quants.cpp); integer types are not.
        QVERIFY_THROWS_EXCEPTION(lcw::UnsupportedError,
                                 lcw::quantizeRow(lcw::DType::I32, blk, q, 4));
    }

    // ---------------- GGUF ----------------
    void ggufWriteReadRoundTrip() {
        const std::string dir = lcwtest::tempDir("gguf");
        using V = lcw::GgufValue;
        std::vector<std::pair<std::string, V>> md = {
            {"general.architecture", V::string("llama")},
            {"u8", V::u8(200)},
            {"i8", V::i8(-5)},
            {"u16", V::u16(60000)},
            {"i16", V::i16(-300)},
            {"u32", V::u32(4000000000u)},
            {"i32", V::i32(-7)},
            {"u64", V::u64(uint64_t(1) << 40)},
            {"i64", V::i64(-(int64_t(1) << 40))},
            {"f32", V::f32(1.5f)},
            {"f64", V::f64(-2.25)},
            {"b", V::boolean(true)},
            {"strs", V::stringArray({"a", "", "ü"})},
            {"floats", V::f32Array({1.0f, -2.0f})},
            {"nested", V::arrayArray({V::i32Array({1, 2}), V::stringArray({"x"})})},
            {"empty", V::i32Array({})},
            {"general.alignment", V::u32(64)},
        };
        std::vector<float> w(3 * 64);
        for (size_t i = 0; i < w.size(); ++i) w[i] = float(i) * 0.01f - 0.5f;
        std::vector<lcw::TensorDesc> td = {{"w.f32", lcw::DType::F32, {3, 64}},
                                           {"w.q8", lcw::DType::Q8_0, {3, 64}},
                                           {"w.f16", lcw::DType::F16, {3, 64}},
                                           {"v", lcw::DType::F32, {5}}};
        auto fill = [&](size_t i, std::byte* dst, uint64_t n) {
            if (i == 0) std::memcpy(dst, w.data(), n);
            if (i == 1 || i == 2) lcw::quantizeRow(td[i].dtype, w.data(), dst, 3 * 64);
            if (i == 3) std::memset(dst, 0, n);
        };
        for (uint32_t version : {2u, 3u}) {
            const std::string p = dir + "/m" + std::to_string(version) + ".gguf";
            lcw::writeGguf(p, md, td, fill, version);
            auto g = lcw::readGguf(p);
            QCOMPARE(g.version, version);
            QCOMPARE(g.alignment, uint64_t(64));
            QCOMPARE(g.dataOffset % 64, uint64_t(0));
            QCOMPARE(g.metadata.size(), md.size());
            QCOMPARE(g.getString("general.architecture").value(), std::string("llama"));
            QCOMPARE(g.getInt("u8").value(), int64_t(200));
            QCOMPARE(g.getInt("i8").value(), int64_t(-5));
            QCOMPARE(g.getInt("u16").value(), int64_t(60000));
            QCOMPARE(g.getInt("i16").value(), int64_t(-300));
            QCOMPARE(g.getInt("u32").value(), int64_t(4000000000u));
            QCOMPARE(g.getInt("i32").value(), int64_t(-7));
            QCOMPARE(g.getInt("u64").value(), int64_t(1) << 40);
            QCOMPARE(g.getInt("i64").value(), -(int64_t(1) << 40));
            QCOMPARE(g.getDouble("f32").value(), 1.5);
            QCOMPARE(g.getDouble("f64").value(), -2.25);
            QCOMPARE(g.getBool("b").value(), true);
            QCOMPARE(g.find("strs")->strings, (std::vector<std::string>{"a", "", "ü"}));
            QCOMPARE(g.find("floats")->arrayDouble(1).value(), -2.0);
            const auto* n = g.find("nested");
            QCOMPARE(n->count, uint64_t(2));
            QCOMPARE(n->arrays[0].arrayInt(1).value(), int64_t(2));
            QCOMPARE(n->arrays[1].strings[0], std::string("x"));
            QCOMPARE(g.find("empty")->count, uint64_t(0));
            QVERIFY_THROWS_EXCEPTION(lcw::FormatError, g.getInt("strs"));
            QCOMPARE(int(g.tensors.size()), 4);
            const auto* t = g.findTensor("w.f32");
            QCOMPARE(t->shape, (std::vector<int64_t>{3, 64}));
            QCOMPARE(toFloats(*t), w);
            QCOMPARE(uint64_t(t->data - g.file->data()) % 64, uint64_t(0));
            const auto* q = g.findTensor("w.q8");
            QCOMPARE(q->dtype, lcw::DType::Q8_0);
            QCOMPARE(q->nbytes, uint64_t(3 * 2 * 34));
            const auto y = toFloats(*q);
            for (size_t i = 0; i < w.size(); ++i) QVERIFY(std::fabs(y[i] - w[i]) < 0.01f);
            QCOMPARE(g.findTensor("v")->shape, (std::vector<int64_t>{5}));
        }
    }
    void ggufReadsStories() {
        LCW_REQUIRE_SHARED("models/stories260K/gguf/stories260K-f32.gguf");
        auto g = lcw::readGguf(lcwtest::sharedPath("models/stories260K/gguf/stories260K-f32.gguf"));
        QCOMPARE(g.version, 3u);
        QCOMPARE(g.getString("general.architecture").value(), std::string("llama"));
        QCOMPARE(g.getInt("llama.embedding_length").value(), int64_t(64));
        QCOMPARE(g.find("tokenizer.ggml.tokens")->count, uint64_t(512));
        const auto* t = g.findTensor("blk.0.ffn_down.weight");
        QCOMPARE(t->shape, (std::vector<int64_t>{64, 172})); // ne = [172, 64] reversed
        // Re-writing the file's tensors and metadata gives identical tensors.
        const std::string out = lcwtest::tempDir("ggufcopy") + "/copy.gguf";
        lcw::writeGguf(out, g.metadata, g.tensors);
        auto g2 = lcw::readGguf(out);
        QCOMPARE(g2.tensors.size(), g.tensors.size());
        for (size_t i = 0; i < g.tensors.size(); ++i) {
            QCOMPARE(g2.tensors[i].shape, g.tensors[i].shape);
            QVERIFY(std::memcmp(g2.tensors[i].data, g.tensors[i].data, g.tensors[i].nbytes) == 0);
        }
    }

    // ---------------- llama2.c ----------------
    void llama2cReadsStories() {
        LCW_REQUIRE_SHARED("models/stories260K/llama2c/stories260K.bin");
        LCW_REQUIRE_SHARED("models/stories260K/hf/model.safetensors");
        auto ck =
            lcw::readLlama2c(lcwtest::sharedPath("models/stories260K/llama2c/stories260K.bin"));
        const auto& c = ck.config;
        QCOMPARE(c.dim, 64);
        QCOMPARE(c.hiddenDim, 172);
        QCOMPARE(c.nLayers, 5);
        QCOMPARE(c.nHeads, 8);
        QCOMPARE(c.nKvHeads, 4);
        QCOMPARE(c.vocabSize, 512);
        QCOMPARE(c.seqLen, 512);
        QVERIFY(c.sharedClassifier);
        QCOMPARE(int(ck.tensors.size()), 2 + 9 * 5);
        auto st =
            lcw::readSafetensors(lcwtest::sharedPath("models/stories260K/hf/model.safetensors"));
        auto find = [&](const std::string& n) -> const lcw::TensorView& {
            for (const auto& t : ck.tensors)
                if (t.name == n) return t;
            throw std::runtime_error(n);
        };
        QCOMPARE(toFloats(find("embed")), toFloats(*st.find("model.embed_tokens.weight")));
        QCOMPARE(toFloats(find("layers.4.mlp.down")),
                 toFloats(*st.find("model.layers.4.mlp.down_proj.weight")));
        QCOMPARE(toFloats(find("layers.2.attn.v")),
                 toFloats(*st.find("model.layers.2.self_attn.v_proj.weight")));
        QCOMPARE(toFloats(find("final_norm")), toFloats(*st.find("model.norm.weight")));
    }

    // ---------------- config.json ----------------
    void hfConfigStories() {
        LCW_REQUIRE_SHARED("models/stories260K/hf/config.json");
        auto s = lcw::readHfConfig(lcwtest::sharedPath("models/stories260K/hf/config.json"));
        QCOMPARE(s.arch, std::string("llama"));
        QCOMPARE(s.dim, int64_t(64));
        QCOMPARE(s.hidden, int64_t(172));
        QCOMPARE(s.nLayers, int64_t(5));
        QCOMPARE(s.nHeads, int64_t(8));
        QCOMPARE(s.nKvHeads, int64_t(4));
        QCOMPARE(s.headDim, int64_t(8));
        QCOMPARE(s.vocab, int64_t(512));
        QCOMPARE(s.maxSeq, int64_t(512));
        QCOMPARE(s.normEps, 1e-5f);
        QVERIFY(s.tiedEmbeddings);
        QCOMPARE(s.bosId, 1);
        QCOMPARE(s.eosIds, (std::vector<int32_t>{2}));
        QCOMPARE(s.rope.theta, 10000.0);
        QVERIFY(!s.rope.interleaved);
        QCOMPARE(s.rope.type, lcw::RopeType::Default);
    }
    void hfConfigQwen2Transformers5() {
        LCW_REQUIRE_SHARED("models/tiny-random/qwen2_sharded/model/config.json");
        auto s = lcw::readHfConfig(
            lcwtest::sharedPath("models/tiny-random/qwen2_sharded/model/config.json"));
        QCOMPARE(s.arch, std::string("qwen2"));
        QVERIFY(s.attnBias);
        QVERIFY(!s.attnOutBias);
        QVERIFY(s.tiedEmbeddings);
        QCOMPARE(s.bosId, -1);
        QVERIFY(s.eosIds.empty());
        QCOMPARE(s.normEps, 1e-6f);
        QCOMPARE(s.slidingWindow, int64_t(0));
        QVERIFY(!s.layerIsSliding(1));
        QCOMPARE(s.headDim, int64_t(16));
    }
    void hfConfigVariants() {
        const std::string base =
            R"("hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 8,
               "intermediate_size": 128, "vocab_size": 100)";
        auto parse = [&](const std::string& extra) {
            return lcw::parseHfConfig("{" + base + "," + extra + "}", "cfg.json");
        };
        // defaults
        auto s = parse(R"("model_type": "llama")");
        QCOMPARE(s.nKvHeads, int64_t(8));
        QCOMPARE(s.headDim, int64_t(8));
        QVERIFY(!s.tiedEmbeddings);
        QVERIFY(!s.attnBias);
        QCOMPARE(s.maxSeq, int64_t(2048));
        // llama3 rope (4.x spelling), eos list
        s = parse(
            R"("model_type": "llama", "rope_theta": 500000.0, "eos_token_id": [128001, 128009],
                     "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})");
        QCOMPARE(s.rope.type, lcw::RopeType::Llama3);
        QCOMPARE(s.rope.theta, 500000.0);
        QCOMPARE(s.rope.factor, 8.0);
        QCOMPARE(s.rope.originalMaxPositions, int64_t(8192));
        QCOMPARE(s.eosIds, (std::vector<int32_t>{128001, 128009}));
        // transformers 5 rope_parameters, yarn
        s = parse(R"("model_type": "qwen3", "head_dim": 32, "rope_parameters": {"rope_type": "yarn",
                     "rope_theta": 1000000.0, "factor": 4.0, "original_max_position_embeddings": 32768,
                     "beta_fast": 16})");
        QCOMPARE(s.rope.type, lcw::RopeType::Yarn);
        QCOMPARE(s.rope.theta, 1e6);
        QCOMPARE(s.rope.betaFast, 16.0);
        QCOMPARE(s.rope.betaSlow, 1.0);
        QCOMPARE(s.headDim, int64_t(32));
        QVERIFY(s.qkNorm);
        // old "type" key, linear
        s = parse(R"("model_type": "llama", "rope_scaling": {"type": "linear", "factor": 2.0})");
        QCOMPARE(s.rope.type, lcw::RopeType::Linear);
        QCOMPARE(s.rope.factor, 2.0);
        s = parse(R"("model_type": "llama", "max_position_embeddings": 4096,
                     "rope_scaling": {"type": "dynamic", "factor": 2.0})");
        QCOMPARE(s.rope.type, lcw::RopeType::Dynamic);
        QCOMPARE(s.rope.originalMaxPositions, int64_t(4096));
        // mistral sliding window: all layers
        s = parse(R"("model_type": "mistral", "sliding_window": 4096, "num_key_value_heads": 2)");
        QCOMPARE(s.slidingWindow, int64_t(4096));
        QVERIFY(s.layerIsSliding(0) && s.layerIsSliding(3));
        s = parse(R"("model_type": "mistral", "sliding_window": null)");
        QVERIFY(!s.layerIsSliding(0));
        // qwen2: only with use_sliding_window, layers >= max_window_layers
        s = parse(R"("model_type": "qwen2", "sliding_window": 256, "use_sliding_window": false)");
        QVERIFY(!s.layerIsSliding(3));
        s = parse(R"("model_type": "qwen2", "sliding_window": 256, "use_sliding_window": true,
                     "max_window_layers": 2)");
        QCOMPARE(s.slidingWindow, int64_t(256));
        QVERIFY(!s.layerIsSliding(0) && !s.layerIsSliding(1));
        QVERIFY(s.layerIsSliding(2) && s.layerIsSliding(3));
        // layer_types wins
        s = parse(R"("model_type": "qwen2", "sliding_window": 128, "use_sliding_window": false,
                     "layer_types": ["full_attention", "sliding_attention", "full_attention",
                     "sliding_attention"])");
        QVERIFY(!s.layerIsSliding(0) && s.layerIsSliding(1) && s.layerIsSliding(3));
        // llama attention/mlp bias
        s = parse(R"("model_type": "llama", "attention_bias": true, "mlp_bias": true,
                     "tie_word_embeddings": true, "bos_token_id": null)");
        QVERIFY(s.attnBias && s.attnOutBias && s.mlpBias && s.tiedEmbeddings);
        QCOMPARE(s.bosId, -1);
    }
    void hfConfigErrors() {
        auto err = [](const std::string& json) {
            try {
                lcw::parseHfConfig(json, "/x/config.json");
            } catch (const lcw::UnsupportedError& e) {
                return std::string("U:") + e.what();
            } catch (const lcw::FormatError& e) {
                return std::string("F:") + e.what();
            }
            return std::string("none");
        };
        const std::string base = R"("hidden_size": 64, "num_hidden_layers": 4,
            "num_attention_heads": 8, "intermediate_size": 128, "vocab_size": 100)";
        std::string m = err(R"({"model_type": "t5"})");
        QVERIFY2(contains(m, "U:/x/config.json") && contains(m, "t5") && contains(m, "gpt2") &&
                     contains(m, "qwen3"),
                 m.c_str());
        m = err("{" + base + R"(, "model_type": "llama", "rope_scaling": {"type": "longrope"}})");
        QVERIFY2(contains(m, "U:/x/config.json") && contains(m, "longrope"), m.c_str());
        m = err(R"({"model_type": "llama", "hidden_size": )");
        QVERIFY2(contains(m, "F:/x/config.json") && contains(m, "JSON"), m.c_str());
        m = err(R"({"model_type": "llama", "hidden_size": 64})");
        QVERIFY2(contains(m, "F:") && contains(m, "num_hidden_layers"), m.c_str());
        m = err("{" + base + R"(, "model_type": "llama", "num_key_value_heads": 3})");
        QVERIFY2(contains(m, "F:") && contains(m, "multiple"), m.c_str());
        m = err("{" + base + R"(, "model_type": "llama", "hidden_size": "big"})");
        QVERIFY2(contains(m, "F:") && contains(m, "hidden_size"), m.c_str());
    }
    void tensorNames() {
        QCOMPARE(lcw::canonicalFromHf("model.layers.12.self_attn.q_proj.bias").value(),
                 std::string("layers.12.attn.q.bias"));
        QCOMPARE(lcw::canonicalFromHf("model.embed_tokens.weight").value(), std::string("embed"));
        QVERIFY(!lcw::canonicalFromHf("model.layers.01.mlp.up_proj.weight"));
        QVERIFY(!lcw::canonicalFromHf("model.layers.0.self_attn.rotary_emb.inv_freq"));
        QCOMPARE(lcw::hfFromCanonical("layers.3.mlp.down").value(),
                 std::string("model.layers.3.mlp.down_proj.weight"));
        QCOMPARE(lcw::canonicalFromGguf("blk.0.attn_output.weight").value(),
                 std::string("layers.0.attn.o"));
        QCOMPARE(lcw::ggufFromCanonical("layers.2.attn.k_norm").value(),
                 std::string("blk.2.attn_k_norm.weight"));
        QCOMPARE(lcw::ggufFromCanonical("lm_head").value(), std::string("output.weight"));
    }
};

QTEST_GUILESS_MAIN(TestIo)
#include "test_io.moc"
