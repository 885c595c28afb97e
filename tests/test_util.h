#pragma once
// Shared helpers of the test executables: where the data is, and skipping cleanly without it.
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

} // namespace lcwtest

/// QSKIP with a message when a shared file is missing.
#define LCW_REQUIRE_SHARED(rel)                                                                    \
    do {                                                                                           \
        if (!lcwtest::exists(lcwtest::sharedPath(rel)))                                            \
            QSKIP(qPrintable(QString("shared data not found: %1 (set LCW_SHARED_DIR)")             \
                                 .arg(QString::fromStdString(lcwtest::sharedPath(rel)))));         \
    } while (0)
