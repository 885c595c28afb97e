// Hugging Face hub cache folders (models--org--name): Model::load opens the snapshot refs/main
// names, else the newest; symlinked snapshot files (the real cache's layout) load; a folder
// without snapshots fails naming it; lcw-cli info accepts the folder and says which snapshot.
#include "core/common/error.h"
#include "core/io/quants.h"
#include "core/model/hf_cache.h"
#include "core/model/model.h"
#include "test_util.h"

#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;

namespace {

const char* kSmall = "models/stories260K/hf"; // dim 64
const char* kOther = "models/gguf-k/hf";      // dim 256

/// Puts the files of `src` into blobs/ of `repo` and symlinks them from snapshots/<hash>/, as
/// huggingface_hub does.
void addSnapshot(const fs::path& repo, const std::string& hash, const fs::path& src) {
    fs::create_directories(repo / "blobs");
    fs::create_directories(repo / "snapshots" / hash);
    for (const auto& e : fs::directory_iterator(src)) {
        const std::string blob = hash + "-" + e.path().filename().string();
        fs::copy_file(e.path(), repo / "blobs" / blob, fs::copy_options::overwrite_existing);
        fs::create_symlink(fs::path("../../blobs") / blob,
                           repo / "snapshots" / hash / e.path().filename());
    }
}

void writeRef(const fs::path& repo, const std::string& ref, const std::string& hash) {
    fs::create_directories((repo / "refs" / ref).parent_path());
    std::ofstream(repo / "refs" / ref) << hash; // no newline, like huggingface_hub
}

void setMtime(const fs::path& p, int secondsAgo) {
    fs::last_write_time(p, fs::file_time_type::clock::now() - std::chrono::seconds(secondsAgo));
}

std::vector<float> rowValues(const lcw::TensorView& t, int64_t r) {
    std::vector<float> v(size_t(t.cols()));
    lcw::dequantizeRow(t.dtype, t.row(r), v.data(), t.cols());
    return v;
}

} // namespace

class TestHfCache : public QObject {
    Q_OBJECT

private slots:
    void refsMainWinsOverNewer() {
        LCW_REQUIRE_SHARED(kSmall);
        LCW_REQUIRE_SHARED(kOther);
        const fs::path repo = fs::path(lcwtest::tempDir("hfcache-main")) / "models--lcw--tiny";
        const std::string a = "aaaa1111", b = "bbbb2222";
        addSnapshot(repo, a, lcwtest::sharedPath(kSmall));
        addSnapshot(repo, b, lcwtest::sharedPath(kOther));
        setMtime(repo / "snapshots" / a, 3600); // a is older
        writeRef(repo, "main", a);
        QVERIFY(lcw::isHfCacheRepo(repo.string()));

        const auto snaps = lcw::listHfSnapshots(repo.string());
        QCOMPARE(int(snaps.size()), 2);
        QCOMPARE(QString::fromStdString(snaps[0].hash), QString::fromStdString(a));
        QCOMPARE(int(snaps[0].refs.size()), 1);
        QCOMPARE(QString::fromStdString(snaps[0].refs[0]), QStringLiteral("main"));

        auto m = lcw::Model::load(repo.string());
        QCOMPARE(m->spec().dim, int64_t(64));
        // Same weights as the original folder, read through the symlinks.
        auto ref = lcw::Model::load(lcwtest::sharedPath(kSmall));
        QCOMPARE(rowValues(m->get("layers.2.mlp.down"), 5),
                 rowValues(ref->get("layers.2.mlp.down"), 5));
        bool said = false;
        for (const auto& w : m->warnings())
            said |= w.find("aaaa1111 (refs/main)") != std::string::npos &&
                    w.find("models--lcw--tiny") != std::string::npos;
        QVERIFY2(said, "the load says which snapshot it opened");

        // refs/main moved to b: now b opens.
        writeRef(repo, "main", b);
        QCOMPARE(lcw::Model::load(repo.string())->spec().dim, int64_t(256));
    }

    void newestWithoutRefs() {
        LCW_REQUIRE_SHARED(kSmall);
        LCW_REQUIRE_SHARED(kOther);
        const fs::path repo = fs::path(lcwtest::tempDir("hfcache-newest")) / "models--lcw--tiny";
        addSnapshot(repo, "old0", lcwtest::sharedPath(kOther));
        addSnapshot(repo, "new1", lcwtest::sharedPath(kSmall));
        setMtime(repo / "snapshots" / "old0", 7200);
        setMtime(repo / "snapshots" / "new1", 60);
        auto r = lcw::resolveHfCache(repo.string());
        QVERIFY(r.has_value());
        QCOMPARE(r->snapshotCount, 2);
        QVERIFY(QString::fromStdString(r->reason).contains("new1 (the newest)"));
        QCOMPARE(lcw::Model::load(repo.string())->spec().dim, int64_t(64));
        // Newest flips when the other snapshot is touched.
        setMtime(repo / "snapshots" / "old0", 1);
        QCOMPARE(lcw::Model::load(repo.string())->spec().dim, int64_t(256));
        // A snapshot folder opens on its own.
        QCOMPARE(lcw::Model::load((repo / "snapshots" / "new1").string())->spec().dim, int64_t(64));
        // Ordinary folders are not cache folders.
        QVERIFY(!lcw::resolveHfCache(lcwtest::sharedPath(kSmall)).has_value());
    }

    void noSnapshotNamesTheFolder() {
        const fs::path repo = fs::path(lcwtest::tempDir("hfcache-empty")) / "models--lcw--none";
        fs::create_directories(repo / "snapshots");
        fs::create_directories(repo / "blobs");
        writeRef(repo, "main", "deadbeef");
        try {
            lcw::Model::load(repo.string());
            QFAIL("loading a cache folder without snapshots must throw");
        } catch (const lcw::FormatError& e) {
            QVERIFY2(QString::fromUtf8(e.what()).contains("models--lcw--none"), e.what());
            QVERIFY2(QString::fromUtf8(e.what()).contains("snapshot"), e.what());
        }
    }

    void cliInfoOpensCacheFolder() {
        LCW_REQUIRE_SHARED(kSmall);
        if (!lcwtest::exists(LCW_CLI_PATH)) QSKIP("lcw-cli not built");
        const fs::path repo = fs::path(lcwtest::tempDir("hfcache-cli")) / "models--lcw--tiny";
        addSnapshot(repo, "cafe0001", lcwtest::sharedPath(kSmall));
        writeRef(repo, "main", "cafe0001");
        const auto r = lcwtest::runCli({"info", QString::fromStdString(repo.string())});
        QVERIFY2(r.code == 0, r.err.constData());
        QVERIFY2(r.out.contains("cafe0001 (refs/main)"), r.out.constData());
    }
};

QTEST_GUILESS_MAIN(TestHfCache)
#include "test_hf_cache.moc"
