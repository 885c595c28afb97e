// The workbench and HDF5 files it cannot trust (issue 22, item 4): a project of an older lcw
// opens through the converter child process; a project that crashes the HDF5 reader, or one
// changed after it was written, is an error message naming the file and the window lives on.
#include "gui_test_util.h"
#include "legacy_h5.h"

#include "core/common/h5_guard.h"
#include "core/compress/recipe.h"
#include "core/project/project.h"
#include "widgets/recipe_editor.h"

#include <QFile>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>

using lcw::MainWindow;

namespace {

constexpr int kTimeoutMs = 60000;

std::vector<char> readAll(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

std::string editorRecipe() {
    return lcw::compress::findPreset("W8A16").recipe.toJson().dump();
}

} // namespace

class TestGuiHostileHdf5 : public QObject {
    Q_OBJECT

private slots:
    void initTestCase() { lcwtest::initGuiTestCase("lcw-test-gui-hostile-hdf5"); }
    void init() { lcw::h5::setConverter(LCW_CLI_PATH); }

    void olderProjectOpensAndSavesInTheNewFormat() {
        const std::string dir = lcwtest::tempDir("gui-h5-legacy");
        const std::string path = dir + "/old.lcwproj";
        lcwtest::writeLegacyProject(path, "", lcwtest::demoModelPath(), editorRecipe());
        const std::vector<char> before = readAll(path);
        MainWindow w(MainWindow::Options{false, false});
        w.show();
        QSignalSpy opened(&w, &MainWindow::projectOpened);
        QSignalSpy errors(&w, &MainWindow::errorShown);
        QVERIFY(lcwtest::openProjectAndWait(w, QString::fromStdString(path)));
        QTRY_VERIFY_WITH_TIMEOUT(opened.count() == 1, kTimeoutMs);
        QCOMPARE(errors.count(), 0);
        QCOMPARE(QFileInfo(w.modelPath()),
                 QFileInfo(QString::fromStdString(lcwtest::demoModelPath())));
        QCOMPARE(nlohmann::json::parse(w.recipeEditor()->recipeJsonText().toStdString()),
                 nlohmann::json::parse(editorRecipe()));
        QCOMPARE(w.recipeEditor()->targetBitsPerWeight(), 3.5);
        QVERIFY(readAll(path) == before); // opening leaves the older file as it was
        // Saving writes the current format, with its checksum.
        QSignalSpy saved(&w, &MainWindow::projectSaved);
        QVERIFY(w.saveProject(QString::fromStdString(path)));
        QTRY_COMPARE_WITH_TIMEOUT(saved.count(), 1, kTimeoutMs);
        QCOMPARE(lcw::h5::verify(path, lcw::h5::Kind::Project, lcw::project::Project::kVersion),
                 lcw::h5::Check::Verified);
        std::filesystem::remove_all(dir);
    }

    void crashingOrChangedProjectIsAnError() {
        const std::string dir = lcwtest::tempDir("gui-h5-crash");
        const std::string path = dir + "/old.lcwproj";
        lcwtest::writeLegacyProject(path, "", lcwtest::demoModelPath(), editorRecipe());
        // The converter dies of SIGSEGV, as libhdf5 does on some damaged files.
        const std::string crash = dir + "/crash.sh";
        std::ofstream(crash) << "#!/bin/sh\nulimit -c 0\nkill -SEGV $$\n";
        std::filesystem::permissions(crash, std::filesystem::perms::owner_all);
        lcw::h5::setConverter(crash);
        MainWindow w(MainWindow::Options{false, false});
        w.show();
        QSignalSpy errors(&w, &MainWindow::errorShown);
        QVERIFY(!lcwtest::openProjectAndWait(w, QString::fromStdString(path)));
        QCOMPARE(errors.count(), 1);
        const QString m = errors.at(0).at(0).toString();
        QVERIFY2(m.contains(QString::fromStdString(path)) &&
                     m.contains(QStringLiteral("crashed the HDF5 reader (signal 11")),
                 qPrintable(m));
        // A current project changed after saving: refused before libhdf5 sees it.
        lcw::project::Project p;
        p.modelPath = lcwtest::demoModelPath();
        const std::string good = dir + "/good.lcwproj";
        lcw::project::save(good, p);
        {
            std::fstream f(good, std::ios::in | std::ios::out | std::ios::binary);
            f.seekp(std::streamoff(lcw::h5::kUserblockSize + 100));
            f.put('\x7f');
        }
        const uint64_t opens = lcw::h5::libraryOpens();
        QVERIFY(!lcwtest::openProjectAndWait(w, QString::fromStdString(good)));
        QCOMPARE(errors.count(), 2);
        QVERIFY2(errors.at(1).at(0).toString().contains(QStringLiteral("checksum mismatch")),
                 qPrintable(errors.at(1).at(0).toString()));
        QCOMPARE(lcw::h5::libraryOpens(), opens);
        // The window is alive and opens the older project once the converter is a real one.
        lcw::h5::setConverter(LCW_CLI_PATH);
        QSignalSpy opened(&w, &MainWindow::projectOpened);
        QVERIFY(lcwtest::openProjectAndWait(w, QString::fromStdString(path)));
        QTRY_VERIFY_WITH_TIMEOUT(opened.count() == 1, kTimeoutMs);
        std::filesystem::remove_all(dir);
    }
};

QTEST_MAIN(TestGuiHostileHdf5)
#include "test_gui_hostile_hdf5.moc"
