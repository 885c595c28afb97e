#pragma once
// Minimal command-line parsing for lcw-cli: "--key value", "--flag", "-n 64" and positionals.
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace lcw::cli {

/// Thrown for usage mistakes (exit code 2, usage printed).
struct UsageError {
    std::string message;
};

class Args {
public:
    /// `valued` lists options that take a value; `flags` those that don't. Unknown → UsageError.
    Args(const std::vector<std::string>& argv, const std::set<std::string>& valued,
         const std::set<std::string>& flags);

    const std::vector<std::string>& positionals() const { return m_pos; }
    bool flag(const std::string& name) const { return m_flags.count(name) > 0; }
    bool has(const std::string& name) const { return m_values.count(name) > 0; }
    std::optional<std::string> get(const std::string& name) const;
    std::string getOr(const std::string& name, const std::string& def) const;
    /// All values of a repeatable option, in order.
    std::vector<std::string> getAll(const std::string& name) const;
    long long getInt(const std::string& name, long long def) const;
    double getDouble(const std::string& name, double def) const;
    /// The single required positional (e.g. MODEL).
    std::string positional(size_t i, const std::string& what) const;

private:
    std::vector<std::string> m_pos;
    std::set<std::string> m_flags;
    std::multimap<std::string, std::string> m_values;
};

} // namespace lcw::cli
