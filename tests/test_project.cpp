// Project files (core/project): round trip of every field, atomic replacement, and clear errors
// for files that are not (complete, current) lcw projects.
#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/project/project.h"
#include "core/stats/stats_store.h"
#include "test_util.h"

#include <QtTest/QtTest>

#include <filesystem>
#include <fstream>

using namespace lcw;

namespace {

project::Project sample() {
    project::Project p;
    p.modelPath = "/models/tiny llama/hf";
    p.modelFingerprint = "sha256:0123abcd";
    p.statsName = "abcd-1234.h5";
    for (int i = 0; i < 5000; ++i) p.statsFile.push_back(uint8_t((i * 37) & 0xff));
    p.recipes = {{"editor", R"({"lcw_recipe":1,"name":"x","rules":[]})"},
                 {"file:w4", std::string(70000, 'r')}}; // beyond HDF5's 64 KiB attribute limit
    p.results = {{"compare", R"({"rows":[{"name":"W8A16","kld":0.0012}]})"}};
    p.uiState = R"({"target_bits":4.25})";
    return p;
}

void expectFormatError(const std::string& path, const char* what) {
    try {
        project::load(path);
        QFAIL(qPrintable(QStringLiteral("no error for %1").arg(what)));
    } catch (const FormatError& e) {
        QCOMPARE(e.path(), path);
    }
}

} // namespace

class TestProject : public QObject {
    Q_OBJECT
private slots:
    void roundTrip() {
        const std::string dir = lcwtest::tempDir("project");
        const std::string path = dir + "/a.lcwproj";
        const project::Project p = sample();
        project::save(path, p);
        const project::Project q = project::load(path);
        QCOMPARE(q.version, project::Project::kVersion);
        QCOMPARE(q.modelPath, p.modelPath);
        QCOMPARE(q.modelFingerprint, p.modelFingerprint);
        QCOMPARE(q.statsName, p.statsName);
        QVERIFY(q.statsFile == p.statsFile);
        QVERIFY(q.recipes == p.recipes);
        QVERIFY(q.results == p.results);
        QCOMPARE(q.uiState, p.uiState);
        QVERIFY(!q.savedUtc.empty());
        // Empty project: no statistics, no recipes, no results.
        project::Project e;
        e.modelPath = "m";
        project::save(path, e); // replaces the file
        const project::Project eq = project::load(path);
        QVERIFY(eq.statsFile.empty() && eq.recipes.empty() && eq.results.empty());
        QCOMPARE(eq.modelPath, std::string("m"));
        // No temporary files left behind.
        int files = 0;
        for ([[maybe_unused]] const auto& f : std::filesystem::directory_iterator(dir)) ++files;
        QCOMPARE(files, 1);
    }

    void failedSaveKeepsOldFile() {
        const std::string dir = lcwtest::tempDir("project-keep");
        const std::string path = dir + "/a.lcwproj";
        project::save(path, sample());
        // A folder where the file should go: the rename fails, the old file is untouched.
        const std::string blocked = dir + "/blocked.lcwproj";
        std::filesystem::create_directories(blocked + "/x");
        QVERIFY_THROWS_EXCEPTION(Error, project::save(blocked, sample()));
        QVERIFY(std::filesystem::is_directory(blocked));
        QCOMPARE(project::load(path).modelPath, sample().modelPath);
    }

    void badFilesAreFormatErrors() {
        const std::string dir = lcwtest::tempDir("project-bad");
        expectFormatError(dir + "/missing.lcwproj", "a missing file");
        const std::string text = dir + "/text.lcwproj";
        writeFileAtomic(text, std::string("not hdf5 at all"));
        expectFormatError(text, "a text file");
        // Another HDF5 file: a statistics store.
        const std::string stats = dir + "/stats.h5";
        stats::StatsReport r;
        r.modelPath = "m";
        stats::StatsStore::save(stats, r);
        expectFormatError(stats, "a statistics file");
        // Truncated project.
        const std::string good = dir + "/good.lcwproj";
        project::save(good, sample());
        const auto size = std::filesystem::file_size(good);
        std::filesystem::copy_file(good, dir + "/cut.lcwproj");
        std::filesystem::resize_file(dir + "/cut.lcwproj", size / 2);
        expectFormatError(dir + "/cut.lcwproj", "a truncated file");
    }
};

QTEST_GUILESS_MAIN(TestProject)
#include "test_project.moc"
