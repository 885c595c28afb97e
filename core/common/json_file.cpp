#include "core/common/json_file.h"

#include "core/common/error.h"
#include "core/common/mapped_file.h"

namespace lcw {

nlohmann::json readJsonFile(const std::string& path) {
    const std::string text = readTextFile(path);
    try {
        return nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
        throw FormatError(path, std::string("not valid JSON: ") + e.what(),
                          e.byte > 0 ? uint64_t(e.byte - 1) : 0);
    } catch (const nlohmann::json::exception& e) { // number overflow (1e309) is out_of_range
        throw FormatError(path, std::string("not valid JSON: ") + e.what());
    }
}

} // namespace lcw
