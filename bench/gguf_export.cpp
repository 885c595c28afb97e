// Exports any lcw model to a GGUF v3 file that llama.cpp loads (core/export/gguf_export.h: the
// same writer as `lcw-cli export`), and compares two GGUF files.
//   gguf_export MODEL OUT.gguf [--dtype f32|f16|bf16|q8_0|...]
//   gguf_export --compare A.gguf B.gguf      (metadata and tensor-by-tensor differences)
//
// Weights: 2-D tensors are written as --dtype (default f32), norms and the other tensors
// llama.cpp's converter keeps in F32 as f32. Used to benchmark llama.cpp on exactly the weights
// lcw runs.
#include "core/export/gguf_export.h"
#include "core/common/dtype.h"
#include "core/common/error.h"
#include "core/io/gguf.h"
#include "core/io/quants.h"
#include "core/model/model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

using lcw::DType;
using lcw::GgufValue;

int exportModel(const std::string& in, const std::string& out, DType wtype) {
    lcw::LoadOptions lo;
    lo.requireTokenizer = true;
    auto model = lcw::Model::load(in, lo);
    for (const auto& w : model->warnings()) std::fprintf(stderr, "warning: %s\n", w.c_str());
    lcw::GgufExportOptions o;
    o.path = out;
    o.type = wtype;
    const lcw::GgufExportResult r = lcw::exportGguf(*model, *model, o);
    for (const auto& w : r.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    std::fprintf(stderr, "wrote %s: %s, %zu tensors, %s weights, %llu bytes\n", out.c_str(),
                 r.arch.c_str(), r.tensors.size(), std::string(lcw::dtypeName(wtype)).c_str(),
                 (unsigned long long)r.bytes);
    return 0;
}

// ---- --compare ----

std::vector<float> toF32(const lcw::TensorView& t) {
    std::vector<float> v(size_t(t.numel()));
    for (int64_t r = 0; r < t.rows(); ++r)
        lcw::dequantizeRow(t.dtype, t.row(r), v.data() + r * t.cols(), t.cols());
    return v;
}

int compare(const std::string& a, const std::string& b) {
    const lcw::GgufFile ga = lcw::readGguf(a), gb = lcw::readGguf(b);
    int differences = 0;
    for (const auto& [k, va] : ga.metadata) {
        const GgufValue* vb = gb.find(k);
        const std::string sa = va.toString(), sb = vb ? vb->toString() : "(absent)";
        if (!vb || sa != sb || va.type != vb->type || va.elemType != vb->elemType) {
            std::printf("metadata %-45s A=%s [%s] B=%s\n", k.c_str(), sa.substr(0, 60).c_str(),
                        std::string(lcw::ggufTypeName(va.type)).c_str(), sb.substr(0, 60).c_str());
            ++differences;
        }
        // Arrays are abbreviated by toString: compare whole string arrays and numeric payloads.
        if (vb && va.isArray() && (va.strings != vb->strings || va.raw != vb->raw)) {
            size_t first = 0;
            while (first < va.count && first < vb->count &&
                   (va.elemType == lcw::GgufType::String
                        ? va.strings[first] == vb->strings[first]
                        : va.arrayDouble(first) == vb->arrayDouble(first)))
                ++first;
            std::printf("metadata %-45s arrays differ (first at %zu of %llu/%llu)\n", k.c_str(),
                        first, (unsigned long long)va.count, (unsigned long long)vb->count);
            ++differences;
        }
    }
    for (const auto& [k, vb] : gb.metadata)
        if (!ga.find(k)) {
            std::printf("metadata %-45s only in B: %s\n", k.c_str(),
                        vb.toString().substr(0, 60).c_str());
            ++differences;
        }
    for (const auto& ta : ga.tensors) {
        const lcw::TensorView* tb = gb.findTensor(ta.name);
        if (!tb) {
            std::printf("tensor %-28s only in A\n", ta.name.c_str());
            ++differences;
            continue;
        }
        if (ta.shape != tb->shape) {
            std::printf("tensor %-28s shapes differ\n", ta.name.c_str());
            ++differences;
            continue;
        }
        const auto xa = toF32(ta), xb = toF32(*tb);
        double maxAbs = 0;
        for (size_t i = 0; i < xa.size(); ++i)
            maxAbs = std::max(maxAbs, double(std::fabs(xa[i] - xb[i])));
        std::printf("tensor %-28s %s/%s max|A-B| = %g\n", ta.name.c_str(),
                    std::string(lcw::dtypeName(ta.dtype)).c_str(),
                    std::string(lcw::dtypeName(tb->dtype)).c_str(), maxAbs);
        if (maxAbs != 0) ++differences;
    }
    for (const auto& tb : gb.tensors)
        if (!ga.findTensor(tb.name)) {
            std::printf("tensor %-28s only in B\n", tb.name.c_str());
            ++differences;
        }
    std::printf("%d difference(s)\n", differences);
    return differences == 0 ? 0 : 3;
}

} // namespace

int main(int argc, char** argv) {
    const char* usage = "usage: gguf_export MODEL OUT.gguf [--dtype f32|f16|bf16|q8_0|...]\n"
                        "       gguf_export --compare A.gguf B.gguf\n";
    try {
        if (argc == 4 && !std::strcmp(argv[1], "--compare")) return compare(argv[2], argv[3]);
        if (argc != 3 && argc != 5) {
            std::fputs(usage, stderr);
            return 2;
        }
        DType wtype = DType::F32;
        if (argc == 5) {
            if (std::strcmp(argv[3], "--dtype")) {
                std::fputs(usage, stderr);
                return 2;
            }
            const auto t = lcw::dtypeFromName(argv[4]);
            if (!t || !(lcw::dtypeIsQuantized(*t) || *t == DType::F32 || *t == DType::F16 ||
                        *t == DType::BF16)) {
                std::fprintf(stderr,
                             "error: --dtype must be f32, f16, bf16 or a GGUF type, not "
                             "'%s'\n",
                             argv[4]);
                return 2;
            }
            wtype = *t;
        }
        return exportModel(argv[1], argv[2], wtype);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
