#include "args.h"

#include <cerrno>
#include <cstdlib>

namespace lcw::cli {

Args::Args(const std::vector<std::string>& argv, const std::set<std::string>& valued,
           const std::set<std::string>& flags) {
    for (size_t i = 0; i < argv.size(); ++i) {
        const std::string& a = argv[i];
        if (a.size() > 1 && a[0] == '-' && !(a.size() > 1 && (std::isdigit(a[1]) || a[1] == '.'))) {
            std::string key = a;
            std::string value;
            bool inlineValue = false;
            if (auto eq = a.find('='); eq != std::string::npos && a.rfind("--", 0) == 0) {
                key = a.substr(0, eq);
                value = a.substr(eq + 1);
                inlineValue = true;
            }
            if (valued.count(key)) {
                if (!inlineValue) {
                    if (i + 1 >= argv.size()) throw UsageError{"option " + key + " needs a value"};
                    value = argv[++i];
                }
                m_values.emplace(key, value);
            } else if (flags.count(key) && !inlineValue) {
                m_flags.insert(key);
            } else {
                throw UsageError{"unknown option " + key};
            }
        } else {
            m_pos.push_back(a);
        }
    }
}

std::optional<std::string> Args::get(const std::string& name) const {
    auto range = m_values.equal_range(name);
    if (range.first == range.second) return std::nullopt;
    return std::prev(range.second)->second; // last one wins
}

std::string Args::getOr(const std::string& name, const std::string& def) const {
    auto v = get(name);
    return v ? *v : def;
}

std::vector<std::string> Args::getAll(const std::string& name) const {
    std::vector<std::string> out;
    auto range = m_values.equal_range(name);
    for (auto it = range.first; it != range.second; ++it) out.push_back(it->second);
    return out;
}

long long Args::getInt(const std::string& name, long long def) const {
    auto v = get(name);
    if (!v) return def;
    char* end = nullptr;
    errno = 0;
    const long long x = std::strtoll(v->c_str(), &end, 10);
    if (errno || end == v->c_str() || *end)
        throw UsageError{name + " expects an integer, got '" + *v + "'"};
    return x;
}

double Args::getDouble(const std::string& name, double def) const {
    auto v = get(name);
    if (!v) return def;
    char* end = nullptr;
    errno = 0;
    const double x = std::strtod(v->c_str(), &end);
    if (errno || end == v->c_str() || *end)
        throw UsageError{name + " expects a number, got '" + *v + "'"};
    return x;
}

std::string Args::positional(size_t i, const std::string& what) const {
    if (i >= m_pos.size()) throw UsageError{"missing " + what};
    return m_pos[i];
}

} // namespace lcw::cli
