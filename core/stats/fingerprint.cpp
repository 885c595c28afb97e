#include "core/stats/fingerprint.h"

#include "core/common/sha256.h"
#include "core/model/model.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace lcw::stats {

std::string sha256Hex(const void* data, size_t n) {
    return lcw::sha256Hex(data, n);
}

std::string modelFingerprint(const Model& model) {
    Sha256 h;
    const ModelSpec& s = model.spec();
    h.update(s.arch + "|" + std::to_string(s.dim) + "|" + std::to_string(s.nLayers) + "|" +
             std::to_string(s.nHeads) + "|" + std::to_string(s.nKvHeads) + "|" +
             std::to_string(s.headDim) + "|" + std::to_string(s.hidden) + "|" +
             std::to_string(s.vocab) + "\n");
    for (const TensorView& t : model.tensors()) {
        std::string meta = t.name;
        meta += '|';
        meta += dtypeName(t.dtype);
        meta += '|';
        for (auto d : t.shape) {
            meta += std::to_string(d);
            meta += ',';
        }
        meta += '|';
        meta += std::to_string(t.nbytes);
        meta += '\n';
        h.update(meta);
        const uint64_t k = std::min<uint64_t>(256, t.nbytes);
        if (t.data && k > 0) {
            h.update(t.data, k);
            h.update(t.data + (t.nbytes - k) / 2, k);
            h.update(t.data + t.nbytes - k, k);
        }
    }
    return "sha256:" + h.hex();
}

} // namespace lcw::stats
