// Tests of core/common: dtype conversions, npy round trip, atomic writes, error messages.
#include "core/common/dtype.h"
#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/common/npy.h"
#include "test_util.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

class TestCommon : public QObject {
    Q_OBJECT
private slots:
    void f16RoundTripAllValues() {
        // Every finite half converts to float and back unchanged; checks both directions exactly.
        int checked = 0;
        for (uint32_t h = 0; h < 0x10000u; ++h) {
            const uint16_t x = uint16_t(h);
            if (((x >> 10) & 0x1f) == 0x1f) continue; // inf/nan
            const float f = lcw::f16ToF32(x);
            QCOMPARE(lcw::f32ToF16(f), x);
            ++checked;
        }
        QCOMPARE(checked, 63488);
        QCOMPARE(lcw::f16ToF32(0x3c00), 1.0f);
        QCOMPARE(lcw::f16ToF32(0xc000), -2.0f);
        QCOMPARE(lcw::f16ToF32(0x0001), std::ldexp(1.0f, -24)); // smallest subnormal
        QCOMPARE(lcw::f16ToF32(0x7bff), 65504.0f);
        QVERIFY(std::isinf(lcw::f16ToF32(0x7c00)));
        QVERIFY(std::isnan(lcw::f16ToF32(0x7e00)));
    }
    void f16RoundsToNearestEven() {
        // 1 + 2^-11 is exactly half-way between 1 and 1+2^-10: ties to even (1.0).
        QCOMPARE(lcw::f32ToF16(1.0f + std::ldexp(1.0f, -11)), uint16_t(0x3c00));
        // 1 + 3*2^-11 is half-way between 1+2^-10 and 1+2^-9: ties to even (1+2^-9).
        QCOMPARE(lcw::f32ToF16(1.0f + 3 * std::ldexp(1.0f, -11)), uint16_t(0x3c02));
        QCOMPARE(lcw::f32ToF16(70000.0f), uint16_t(0x7c00));
        QCOMPARE(lcw::f32ToF16(-1e-10f), uint16_t(0x8000));
    }
    void bf16() {
        QCOMPARE(lcw::bf16ToF32(0x3f80), 1.0f);
        QCOMPARE(lcw::f32ToBf16(1.0f), uint16_t(0x3f80));
        // 1 + 2^-8 is half-way between bf16 1.0 and 1+2^-7: ties to even -> 1.0
        QCOMPARE(lcw::f32ToBf16(1.0f + std::ldexp(1.0f, -8)), uint16_t(0x3f80));
        QVERIFY(std::isnan(lcw::bf16ToF32(lcw::f32ToBf16(std::nanf("")))));
    }
    void dtypeSizes() {
        QCOMPARE(lcw::dtypeBytesFor(lcw::DType::Q4_K, 512).value(), uint64_t(288));
        QVERIFY(!lcw::dtypeBytesFor(lcw::DType::Q8_0, 31).has_value());
        QCOMPARE(lcw::dtypeBytesFor(lcw::DType::BF16, 3).value(), uint64_t(6));
        QVERIFY(!lcw::dtypeBytesFor(lcw::DType::F64, ~uint64_t(0) / 4).has_value());
        QCOMPARE(lcw::dtypeFromName("BF16").value(), lcw::DType::BF16);
        QCOMPARE(lcw::dtypeFromName("q6_k").value(), lcw::DType::Q6_K);
        QVERIFY(!lcw::dtypeFromName("F8_E9").has_value());
    }
    void npyRoundTrip() {
        const std::string dir = lcwtest::tempDir("npy");
        const std::string p = dir + "/a.npy";
        std::vector<float> v = {1.5f, -2.0f, 3.25f, 0.0f, 1e-20f, 7.0f};
        lcw::writeNpyF32(p, {2, 3}, v.data());
        auto a = lcw::readNpy(p);
        QCOMPARE(a.shape, (std::vector<int64_t>{2, 3}));
        QCOMPARE(a.data, v);
    }
    void npyTruncatedIsAnError() {
        const std::string dir = lcwtest::tempDir("npytrunc");
        const std::string p = dir + "/a.npy";
        std::vector<float> v(100, 1.0f);
        lcw::writeNpyF32(p, {10, 10}, v.data());
        std::filesystem::resize_file(p, 200);
        try {
            lcw::readNpy(p);
            QFAIL("expected an error");
        } catch (const lcw::FormatError& e) {
            QVERIFY(std::string(e.what()).find(p) != std::string::npos);
            QVERIFY(std::string(e.what()).find("shorter") != std::string::npos);
        }
    }
    void atomicWriteReplacesWhole() {
        const std::string dir = lcwtest::tempDir("atomic");
        const std::string p = dir + "/f.txt";
        lcw::writeFileAtomic(p, std::string("first"));
        lcw::writeFileAtomic(p, std::string("second version"));
        QCOMPARE(lcw::readTextFile(p), std::string("second version"));
        int files = 0;
        for (auto& e : std::filesystem::directory_iterator(dir)) (void)e, ++files;
        QCOMPARE(files, 1); // no temp files left behind
        // Writing into a missing folder fails with a clear error and creates nothing.
        QVERIFY_THROWS_EXCEPTION(lcw::Error, lcw::writeFileAtomic(dir + "/nope/x.txt", "x"));
    }
    void missingFileErrorNamesFile() {
        try {
            lcw::MappedFile::open("/nonexistent/model.bin");
            QFAIL("expected an error");
        } catch (const lcw::FormatError& e) {
            QVERIFY(std::string(e.what()).find("/nonexistent/model.bin") == 0);
        }
    }
    void contextKeepsType() {
        try {
            try {
                throw lcw::FormatError("f.gguf", "bad magic", 0);
            } catch (...) {
                lcw::rethrowWithContext("loading model");
            }
        } catch (const lcw::FormatError& e) {
            QCOMPARE(std::string(e.what()),
                     std::string("f.gguf: loading model: bad magic (at byte 0)"));
        }
    }
};

QTEST_GUILESS_MAIN(TestCommon)
#include "test_common.moc"
