#include "core/common/subprocess.h"

#include "core/common/error.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace lcw {

namespace {

void setStatus(ProcessResult& r, int status) {
    if (WIFEXITED(status)) {
        r.exited = true;
        r.exitCode = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        r.signal = WTERMSIG(status);
    }
}

} // namespace

ProcessResult runProcess(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                         size_t maxOutput) {
    ProcessResult r;
    if (argv.empty()) {
        r.output = "no program given";
        return r;
    }
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0)
        throw Error(std::string("cannot create a pipe: ") + std::strerror(errno));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
    // The child starts with default signal handling (the parent may ignore SIGPIPE etc.).
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t all, none;
    sigfillset(&all);
    sigdelset(&all, SIGKILL);
    sigdelset(&all, SIGSTOP);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = -1;
    const int rc = ::posix_spawn(&pid, argv[0].c_str(), &fa, &attr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    ::close(fds[1]);
    if (rc != 0) {
        ::close(fds[0]);
        r.output = argv[0] + ": " + std::strerror(rc);
        return r;
    }
    r.started = true;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    bool open = true, done = false;
    int status = 0;
    char buf[4096];
    int drains = 0; // reads after the child ended: bounded (a grandchild may keep writing)
    while (!done || open) {
        if (!done) {
            const pid_t w = ::waitpid(pid, &status, WNOHANG);
            if (w == pid) {
                done = true;
                setStatus(r, status);
            }
        }
        if (open) {
            pollfd p{fds[0], POLLIN, 0};
            // Once the child has ended, only what is already in the pipe is read (a grandchild
            // holding the pipe open must not keep us waiting).
            const int n = ::poll(&p, 1, done ? 0 : 20);
            if (n > 0) {
                const ssize_t k = ::read(fds[0], buf, sizeof buf);
                if (k > 0) {
                    if (r.output.size() < maxOutput)
                        r.output.append(buf, std::min(size_t(k), maxOutput - r.output.size()));
                    if (done && ++drains > 256) open = false;
                } else if (k == 0 || (errno != EINTR && errno != EAGAIN)) {
                    open = false;
                }
            } else if (done) {
                open = false;
            }
        } else if (!done) {
            ::usleep(10000);
        }
        if (!done && std::chrono::steady_clock::now() > deadline) {
            ::kill(pid, SIGKILL);
            while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
            }
            setStatus(r, status);
            r.timedOut = true;
            done = true;
        }
    }
    ::close(fds[0]);
    return r;
}

std::string selfExecutablePath() {
    std::error_code ec;
    const std::filesystem::path p = std::filesystem::read_symlink("/proc/self/exe", ec);
    return ec ? std::string() : p.string();
}

std::string findInPath(const std::string& name) {
    const char* path = std::getenv("PATH");
    if (!path || name.empty()) return {};
    std::string dirs = path;
    size_t start = 0;
    while (start <= dirs.size()) {
        size_t end = dirs.find(':', start);
        if (end == std::string::npos) end = dirs.size();
        const std::string dir = dirs.substr(start, end - start);
        if (!dir.empty()) {
            const std::string cand = dir + "/" + name;
            struct stat st {};
            if (::stat(cand.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
                ::access(cand.c_str(), X_OK) == 0)
                return cand;
        }
        start = end + 1;
    }
    return {};
}

} // namespace lcw
