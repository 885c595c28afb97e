// Fuzz findings stay fixed: every reproducer in tests/data/fuzz/ (named TARGET-SHORTNAME, the
// file the fuzz target TARGET of fuzz/ found) goes through the same driver the fuzz target runs
// (fuzz/drivers.h: the parser as lcw uses it). A crash, a sanitizer report, a hang or any
// exception other than lcw's error types fails the test; the parser must reject the file with
// lcw's error type (files named *-ok-* must instead load). HDF5 files that crash or hang libhdf5
// are read only by the converter child process (core/common/h5_guard.h): the built lcw-cli here.
#include "core/common/h5_guard.h"
#include "fuzz/drivers.h"
#include "test_util.h"

#include <QtTest>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;

namespace {

fs::path reproducerDir(const char* name) {
    return fs::path(LCW_SOURCE_DIR) / "tests" / "data" / name;
}

std::string readBytes(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

/// One row per reproducer file of tests/data/<dir>.
void addRows(const char* dir) {
    QTest::addColumn<QString>("file");
    QVERIFY2(fs::is_directory(reproducerDir(dir)), reproducerDir(dir).c_str());
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(reproducerDir(dir)))
        if (e.is_regular_file() && e.path().filename() != "README.md") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    QVERIFY(!files.empty());
    for (const auto& f : files)
        QTest::newRow(f.filename().c_str()) << QString::fromStdString(f.string());
}

/// Runs one reproducer through its target's driver and checks the outcome.
void checkReproducer(const QString& file) {
    const fs::path p = file.toStdString();
    const std::string name = p.filename().string();
    const std::string target = name.substr(0, name.find('-'));
    const auto& d = lcw::fuzz::drivers();
    const auto it = d.find(target);
    QVERIFY2(it != d.end(), ("no fuzz target '" + target + "' for " + name).c_str());
    const bool rejected = it->second(readBytes(p));
    if (name.find("-ok-") != std::string::npos)
        QVERIFY2(!rejected, (name + " should load").c_str());
    else
        QVERIFY2(rejected, (name + " should be rejected with lcw's error type").c_str());
}

} // namespace

class TestFuzzRegress : public QObject {
    Q_OBJECT
private slots:
    void initTestCase() {
        lcw::h5::setConverter(LCW_CLI_PATH);
        lcw::h5::setConverterTimeout(std::chrono::milliseconds(0)); // the default, by file size
    }

    /// Inputs that are obviously not the format are rejected with lcw's error type by every
    /// driver that has a main load to reject (the results store skips bad lines instead).
    void driversRejectGarbage() {
        const std::string garbage = "this is not a model file \x01\x02\xff";
        for (const auto& [name, drive] : lcw::fuzz::drivers()) {
            if (name == "results") continue;
            QVERIFY2(drive(garbage), name.c_str());
            QVERIFY2(drive(std::string_view()), (name + " (empty input)").c_str());
        }
        // The results store keeps working on a file of garbage lines: the driver appends a
        // record and finds it again (it aborts otherwise).
        QVERIFY(!lcw::fuzz::drivers().at("results")(garbage));
    }

    void reproducers_data() { addRows("fuzz"); }
    void reproducers() {
        QFETCH(QString, file);
        checkReproducer(file);
    }
};

QTEST_GUILESS_MAIN(TestFuzzRegress)
#include "test_fuzz_regress.moc"
