#include "core/common/error.h"
#include "core/common/progress.h"

#include <exception>

namespace lcw {

namespace {
std::string formatMessage(const std::string& path, const std::string& problem, uint64_t offset) {
    // Appends rather than operator+ chains: GCC 12 warns falsely (-Wrestrict) on the latter.
    std::string msg;
    msg.reserve(path.size() + problem.size() + 32);
    if (!path.empty()) msg.append(path).append(": ");
    msg.append(problem);
    if (offset != FormatError::kNoOffset)
        msg.append(" (at byte ").append(std::to_string(offset)).append(")");
    return msg;
}
} // namespace

FormatError::FormatError(std::string path, std::string problem, uint64_t offset)
    : Error(formatMessage(path, problem, offset)), m_path(std::move(path)),
      m_problem(std::move(problem)), m_offset(offset) {}

void rethrowWithContext(const std::string& context) {
    try {
        throw;
    } catch (const Cancelled&) {
        throw; // an outcome, not an error: no context
    } catch (const FormatError& e) {
        throw FormatError(e.path(), context + ": " + e.problem(), e.offset());
    } catch (const UnsupportedError& e) {
        throw UnsupportedError(context + ": " + e.what());
    } catch (const ArgumentError& e) {
        throw ArgumentError(context + ": " + e.what());
    } catch (const std::exception& e) {
        throw Error(context + ": " + e.what());
    }
}

} // namespace lcw
