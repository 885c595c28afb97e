#include "core/io/tensor_desc.h"

#include "core/common/error.h"
#include "core/io/atomic_writer.h"

#include <cstring>

namespace lcw {

uint64_t tensorDescBytes(const TensorDesc& d) {
    uint64_t n = 1;
    for (int64_t s : d.shape) {
        if (s < 0) throw ArgumentError("tensor '" + d.name + "': negative dimension");
        if (__builtin_mul_overflow(n, uint64_t(s), &n))
            throw ArgumentError("tensor '" + d.name + "': shape overflows");
    }
    const int64_t be = dtypeBlockElems(d.dtype);
    if (be > 1 && (d.shape.empty() || d.shape.back() % be != 0))
        throw ArgumentError("tensor '" + d.name + "': rows of " + std::string(dtypeName(d.dtype)) +
                            " must be a multiple of " + std::to_string(be) + " elements");
    auto b = dtypeBytesFor(d.dtype, n);
    if (!b) throw ArgumentError("tensor '" + d.name + "': byte size overflows");
    return *b;
}

std::vector<TensorDesc> tensorDescsFromViews(const std::vector<TensorView>& views) {
    std::vector<TensorDesc> out;
    out.reserve(views.size());
    for (const auto& v : views) out.push_back({v.name, v.dtype, v.shape});
    return out;
}

TensorFill tensorFillFromViews(const std::vector<TensorView>& views) {
    return [&views](size_t i, std::byte* dst, uint64_t n) {
        const TensorView& v = views.at(i);
        if (v.nbytes != n)
            throw ArgumentError("tensor '" + v.name + "': view holds " + std::to_string(v.nbytes) +
                                " bytes, its shape needs " + std::to_string(n));
        if (n) std::memcpy(dst, v.data, size_t(n));
    };
}

void appendTensorBytes(AtomicFileWriter& w, const TensorFill& fill, size_t index, uint64_t nbytes,
                       std::vector<std::byte>& buf) {
    if (nbytes == 0) return;
    if (buf.size() < nbytes) {
        // Release the old buffer first so peak memory is one tensor, not two.
        buf.clear();
        buf.shrink_to_fit();
        buf.resize(size_t(nbytes));
    }
    fill(index, buf.data(), nbytes);
    w.write(buf.data(), size_t(nbytes));
}

} // namespace lcw
