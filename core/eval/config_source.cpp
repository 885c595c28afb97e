#include "core/eval/config_source.h"

#include "core/common/error.h"

namespace lcw {

double modelBitsPerWeight(const Model& m) {
    int64_t params = 0;
    for (const auto& t : m.tensors()) params += t.numel();
    return params > 0 ? double(m.storedBytes()) * 8.0 / double(params) : 0.0;
}

std::unique_ptr<Model> loadCompareModel(const std::string& path, const Model& base,
                                        const LoadOptions& opts) {
    std::unique_ptr<Model> m = Model::load(path, opts);
    if (m->spec().vocab != base.spec().vocab)
        throw Error(path + " has a vocabulary of " + std::to_string(m->spec().vocab) + " tokens, " +
                    base.path() + " " + std::to_string(base.spec().vocab) +
                    "; they cannot be compared");
    return m;
}

} // namespace lcw
