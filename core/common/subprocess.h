#pragma once
/// \file
/// Runs a helper process (posix_spawn) with a time limit and collects what it writes to stdout
/// and stderr. Used to open untrusted files in a child process, where a crash of a third-party
/// library becomes an exit status instead of taking lcw down.
#include <chrono>
#include <string>
#include <vector>

namespace lcw {

struct ProcessResult {
    bool started = false;  ///< false: the executable could not be started (see `output`)
    bool timedOut = false; ///< killed (SIGKILL) after the time limit
    bool exited = false;   ///< ended by exit(); else by `signal`
    int exitCode = -1;     ///< when exited
    int signal = 0;        ///< when ended by a signal (also SIGKILL after a time-out)
    std::string output;    ///< stdout and stderr together, at most the limit given
};

/// Runs argv[0] (a path; no PATH search) with argv, the environment of this process, stdin from
/// /dev/null, stdout and stderr into one pipe. Kills the child with SIGKILL when it runs longer
/// than `timeout`. Never throws for a failing child; throws Error when no pipe can be created.
ProcessResult runProcess(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                         size_t maxOutput = 64 * 1024);

/// The absolute path of this process's executable (/proc/self/exe), empty when unknown.
std::string selfExecutablePath();

/// The first executable `name` in the folders of $PATH, empty when none.
std::string findInPath(const std::string& name);

} // namespace lcw
