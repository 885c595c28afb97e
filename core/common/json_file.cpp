#include "core/common/json_file.h"

#include "core/common/error.h"
#include "core/common/mapped_file.h"

namespace lcw {

namespace {

struct TooDeep {};

/// Byte offset of the first array or object opened past kMaxJsonDepth (only called once the
/// parser has found one); an iterative scan that skips strings.
uint64_t tooDeepOffset(std::string_view text) {
    int depth = 0;
    bool inString = false;
    for (size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (inString) {
            if (c == '\\')
                ++i;
            else if (c == '"')
                inString = false;
        } else if (c == '"') {
            inString = true;
        } else if (c == '[' || c == '{') {
            if (++depth > kMaxJsonDepth) return i;
        } else if (c == ']' || c == '}') {
            --depth;
        }
    }
    return 0;
}

template <class Json>
Json parseLimited(std::string_view text, const std::string& sourceName, uint64_t baseOffset) {
    // depth is the number of enclosing arrays/objects of the value being opened (0 at the top).
    const typename Json::parser_callback_t limitDepth =
        [](int depth, nlohmann::json::parse_event_t event, Json&) {
            if ((event == nlohmann::json::parse_event_t::object_start ||
                 event == nlohmann::json::parse_event_t::array_start) &&
                depth >= kMaxJsonDepth)
                throw TooDeep{};
            return true;
        };
    try {
        return Json::parse(text.begin(), text.end(), limitDepth);
    } catch (const nlohmann::json::parse_error& e) {
        throw FormatError(sourceName, std::string("not valid JSON: ") + e.what(),
                          baseOffset + (e.byte > 0 ? uint64_t(e.byte - 1) : 0));
    } catch (const TooDeep&) {
        throw FormatError(sourceName,
                          "JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels",
                          baseOffset + tooDeepOffset(text));
    } catch (const nlohmann::json::exception& e) { // number overflow (1e309) is out_of_range
        throw FormatError(sourceName, std::string("not valid JSON: ") + e.what(), baseOffset);
    }
}

} // namespace

nlohmann::json parseJsonText(std::string_view text, const std::string& sourceName,
                             uint64_t baseOffset) {
    return parseLimited<nlohmann::json>(text, sourceName, baseOffset);
}

nlohmann::ordered_json parseOrderedJsonText(std::string_view text, const std::string& sourceName,
                                            uint64_t baseOffset) {
    return parseLimited<nlohmann::ordered_json>(text, sourceName, baseOffset);
}

nlohmann::json readJsonFile(const std::string& path) {
    return parseJsonText(readTextFile(path), path);
}

} // namespace lcw
