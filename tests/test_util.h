#pragma once
// Shared helpers of the test executables: where the data is, and skipping cleanly without it.
#include <QProcess>
#include <QtTest/QtTest>

#include <filesystem>
#include <string>

namespace lcwtest {

/// ../shared beside the checkout (or LCW_SHARED_DIR from the environment).
inline std::string sharedDir() {
    if (const char* e = std::getenv("LCW_SHARED_DIR")) return e;
    return LCW_SHARED_DIR;
}
inline std::string sharedPath(const std::string& rel) {
    return sharedDir() + "/" + rel;
}
inline std::string sourcePath(const std::string& rel) {
    return std::string(LCW_SOURCE_DIR) + "/" + rel;
}
/// The bundled demo model (resources/models/stories260K) and its evaluation text.
inline std::string demoModelPath() {
    return sourcePath("resources/models/stories260K");
}
inline std::string demoTextPath() {
    return sourcePath("resources/data/tinystories_eval.txt");
}
inline bool exists(const std::string& p) {
    return std::filesystem::exists(p);
}

/// A fresh temporary folder for one test.
inline std::string tempDir(const std::string& tag) {
    auto d = std::filesystem::temp_directory_path() /
             ("lcw-test-" + tag + "-" + std::to_string(::getpid()));
    std::filesystem::remove_all(d);
    std::filesystem::create_directories(d);
    return d.string();
}

/// Exit code (-1: timed out, -2: crashed) and output of one lcw-cli run.
struct CliRun {
    int code = -1;
    QByteArray out, err;
};

/// Runs `program args` with extra environment variables ("NAME=value"); kills it after timeoutMs.
inline CliRun runProgram(const QString& program, const QStringList& args, int timeoutMs,
                         const QStringList& env = {}) {
    QProcess p;
    if (!env.isEmpty()) {
        QProcessEnvironment e = QProcessEnvironment::systemEnvironment();
        for (const QString& kv : env) {
            const auto eq = kv.indexOf('=');
            e.insert(kv.left(eq), kv.mid(eq + 1));
        }
        p.setProcessEnvironment(e);
    }
    p.start(program, args);
    CliRun r;
    if (!p.waitForFinished(timeoutMs)) {
        p.kill();
        p.waitForFinished();
        r.err = "timeout";
        return r;
    }
    r.code = p.exitStatus() == QProcess::NormalExit ? p.exitCode() : -2;
    r.out = p.readAllStandardOutput();
    r.err = p.readAllStandardError();
    return r;
}

/// Runs the lcw-cli built with the tests; kills it after timeoutMs.
inline CliRun runCli(const QStringList& args, int timeoutMs = 120000) {
    return runProgram(QString::fromUtf8(LCW_CLI_PATH), args, timeoutMs);
}

} // namespace lcwtest

/// QSKIP with a message when a shared file is missing.
#define LCW_REQUIRE_SHARED(rel)                                                                    \
    do {                                                                                           \
        if (!lcwtest::exists(lcwtest::sharedPath(rel)))                                            \
            QSKIP(qPrintable(QString("shared data not found: %1 (set LCW_SHARED_DIR)")             \
                                 .arg(QString::fromStdString(lcwtest::sharedPath(rel)))));         \
    } while (0)
