// Writes that stay consistent (issue 22, item 5): one temporary naming scheme whose stale files
// are removed on the next write to the same target (and nothing else is touched), no temporary
// left by a write that fails, overlays as one unit with a content hash checked on load, a
// results store that sets a torn last line aside, and NaN errors that name the file.
#include "core/common/error.h"
#include "core/common/mapped_file.h"
#include "core/common/temp_files.h"
#include "core/compress/compressed_model.h"
#include "core/compress/recipe.h"
#include "core/eval/results_store.h"
#include "core/io/atomic_writer.h"
#include "core/io/safetensors.h"
#include "core/model/model.h"
#include "core/project/project.h"
#include "core/runtime/session.h"
#include "core/stats/h5_util.h"
#include "test_util.h"

#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include <sys/resource.h>
#include <unistd.h>

namespace fs = std::filesystem;
using namespace lcw;
using json = nlohmann::json;

namespace {

constexpr const char* kDeadPid = "999999999"; // above any pid_max: never a running process

void writeText(const std::string& path, const std::string& text) {
    std::ofstream(path, std::ios::binary) << text;
}

std::string readText(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

void age(const std::string& path, std::chrono::seconds by) {
    fs::last_write_time(path, fs::file_time_type::clock::now() - by);
}

std::set<std::string> entries(const std::string& dir) {
    std::set<std::string> s;
    for (const auto& e : fs::directory_iterator(dir)) s.insert(e.path().filename().string());
    return s;
}

template <class F> std::string errorOf(F&& f) {
    try {
        f();
    } catch (const std::exception& e) {
        return e.what();
    }
    return "(no error)";
}

const std::string kHdf5Sig = std::string("\x89HDF\r\n\x1a\n", 8);

/// The stale and the live temporaries of target "out.bin" and the files that must survive.
struct TempZoo {
    std::string dir;
    std::set<std::string> removed, kept;

    explicit TempZoo(const std::string& tag, const std::string& target = "out.bin") {
        dir = lcwtest::tempDir(tag);
        const std::string own = std::to_string(::getpid());
        const auto old = std::chrono::seconds(120);
        auto make = [&](const std::string& name, bool stale, std::chrono::seconds a,
                        const std::string& text = "x") {
            writeText(dir + "/" + name, text);
            age(dir + "/" + name, a);
            (stale ? removed : kept).insert(name);
        };
        // lcw's scheme for this target: writer gone (dead PID) and untouched for 2 minutes
        make("." + target + ".tmp." + kDeadPid + ".abc123", true, old);
        // ... a live writer (this process), 2 minutes: kept; untouched for 25 hours: stale
        make("." + target + ".tmp." + own + ".Xyz789", false, old);
        make("." + target + ".tmp." + own + ".Old001", true, std::chrono::hours(25));
        // ... dead PID but written a moment ago (another machine's writer on a shared folder)
        make("." + target + ".tmp." + kDeadPid + ".fresh1", false, std::chrono::seconds(0));
        // the older schemes: .NAME.tmpXXXXXX, and NAME.tmp.PID when it is an HDF5 file
        make("." + target + ".tmpAbC123", true, old);
        make(target + ".tmp." + kDeadPid, true, old, kHdf5Sig + "rest");
        make(target + ".tmp.999999997", true, old, std::string(512, '\0') + kHdf5Sig); // userblock
        make(target + ".tmp.999999998", false, old, "a user's own notes"); // not HDF5: kept
        // other targets and near misses: never touched
        make(".other.bin.tmp." + std::string(kDeadPid) + ".abc123", false, old);
        make("." + target + ".tmp." + kDeadPid + ".abc12", false, old);
        make("." + target + ".tmp.99x.abc123", false, old);
        make("." + target + "x.tmp." + kDeadPid + ".abc123", false, old);
        make("notes.txt", false, old);
        // a temporary folder (an overlay's) of the target, writer gone
        const std::string d = "." + target + ".tmp." + kDeadPid + ".dir001";
        fs::create_directories(dir + "/" + d);
        writeText(dir + "/" + d + "/overlay.json", "{}");
        age(dir + "/" + d + "/overlay.json", old);
        age(dir + "/" + d, old);
        removed.insert(d);
        writeText(dir + "/" + target, "old");
        kept.insert(target);
    }

    void check() const {
        const auto now = entries(dir);
        for (const auto& n : removed)
            QVERIFY2(!now.count(n), qPrintable(QString::fromStdString("stale, not removed: " + n)));
        for (const auto& n : kept)
            QVERIFY2(now.count(n), qPrintable(QString::fromStdString("removed wrongly: " + n)));
        QCOMPARE(now.size(), kept.size()); // and the write left no temporary of its own
    }
};

/// The demo model with a NaN in layers.2.mlp.down (a copy in `dir`).
std::string nanModel(const std::string& dir) {
    fs::copy(lcwtest::demoModelPath(), dir, fs::copy_options::recursive);
    const std::string st = dir + "/model.safetensors";
    std::string bytes = readText(st);
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    const json h = json::parse(bytes.substr(8, n));
    const auto& t = h.at("model.layers.2.mlp.down_proj.weight");
    const uint64_t off = 8 + n + t.at("data_offsets").at(0).get<uint64_t>() + 40;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::memcpy(bytes.data() + off, &nan, 4);
    writeText(st, bytes);
    return st;
}

} // namespace

class TestHostileWrites : public QObject {
    Q_OBJECT

private slots:
    void tempNamesFollowOneScheme() {
        int64_t pid = 0;
        QVERIFY(isTempNameOf(".a.bin.tmp.123.AbC9z0", "a.bin", &pid));
        QCOMPARE(pid, int64_t(123));
        QVERIFY(isTempNameOf(".a.bin.tmpAbC9z0", "a.bin", &pid));
        QCOMPARE(pid, int64_t(-1));
        QVERIFY(isTempNameOf("s.h5.tmp.4242", "s.h5", &pid));
        QCOMPARE(pid, int64_t(4242));
        QVERIFY(!isTempNameOf(".a.bin.tmp.123.AbC9z", "a.bin"));
        QVERIFY(!isTempNameOf(".a.bin.tmp.123.AbC9z0", "b.bin"));
        QVERIFY(!isTempNameOf(".a.bin.tmp..AbC9z0", "a.bin"));
        QVERIFY(!isTempNameOf("a.bin", "a.bin"));
        // every writer makes its temporary with that scheme, beside the target
        const std::string dir = lcwtest::tempDir("hw-scheme");
        std::string tmp;
        const int fd = createTempFileFor(dir + "/t.json", tmp);
        ::close(fd);
        QVERIFY(isTempNameOf(fs::path(tmp).filename().string(), "t.json", &pid));
        QCOMPARE(pid, int64_t(::getpid()));
        QCOMPARE(fs::path(tmp).parent_path().string(), dir);
        fs::remove(tmp);
    }

    void staleTempsRemovedOnNextWrite_data() {
        QTest::addColumn<QString>("writer");
        QTest::newRow("writeFileAtomic") << "whole";
        QTest::newRow("AtomicFileWriter") << "stream";
        QTest::newRow("hdf5") << "hdf5";
        QTest::newRow("project") << "project";
    }
    void staleTempsRemovedOnNextWrite() {
        QFETCH(QString, writer);
        const std::string target = writer == "project" ? "p.lcwproj" : "out.bin";
        TempZoo zoo("hw-stale-" + writer.toStdString(), target);
        const std::string path = zoo.dir + "/" + target;
        if (writer == "whole") {
            writeFileAtomic(path, std::string("new"));
        } else if (writer == "stream") {
            AtomicFileWriter w(path);
            w.write(std::string("new"));
            w.commit();
        } else if (writer == "hdf5") {
            h5::writeFileAtomically(path, "test data", h5::Kind::Stats, 2,
                                    [](H5::H5File& f) { h5::putInt(f, "answer", 42); });
        } else {
            project::Project p;
            p.modelPath = "m";
            project::save(path, p);
        }
        zoo.check();
        if (writer == "whole" || writer == "stream") QCOMPARE(readText(path), std::string("new"));
        QVERIFY(fs::status(path).permissions() == (fs::perms::owner_read | fs::perms::owner_write |
                                                   fs::perms::group_read | fs::perms::others_read));
    }

    void failedWritesLeaveNoTemporary() {
        const std::string dir = lcwtest::tempDir("hw-fail");
        const std::string path = dir + "/t.bin";
        writeText(path, "old");
        // streaming writer: an exception midway
        try {
            AtomicFileWriter w(path);
            w.write(std::string(1 << 20, 'a'));
            throw std::runtime_error("midway");
        } catch (const std::runtime_error&) {
        }
        QCOMPARE(entries(dir), std::set<std::string>{"t.bin"});
        QCOMPARE(readText(path), std::string("old"));
        // a safetensors file whose fill throws after the first tensor
        const std::vector<TensorDesc> d = {{"a", DType::F32, {4}}, {"b", DType::F32, {4}}};
        const std::string st = dir + "/t.safetensors";
        QVERIFY_THROWS_EXCEPTION(std::runtime_error,
                                 writeSafetensors(st, d, [](size_t i, std::byte* p, uint64_t n) {
                                     if (i == 1) throw std::runtime_error("cancelled");
                                     std::memset(p, 0, n);
                                 }));
        QCOMPARE(entries(dir), std::set<std::string>{"t.bin"});
        // HDF5: the fill throws
        const std::string h = dir + "/s.h5";
        writeText(h, "old h5");
        QVERIFY_THROWS_EXCEPTION(
            std::runtime_error,
            h5::writeFileAtomically(h, "statistics", h5::Kind::Stats, 2,
                                    [](H5::H5File&) { throw std::runtime_error("cancelled"); }));
        QCOMPARE(entries(dir), (std::set<std::string>{"s.h5", "t.bin"}));
        QCOMPARE(readText(h), std::string("old h5"));
        // an overlay whose tensor file cannot be written (file size limit): no temporary folder
        // is left, and the overlay saved before is intact
        auto m = Model::load(lcwtest::demoModelPath());
        NullProgress np;
        auto r = compress::compress(*m, compress::findPreset("W8A16").recipe, np);
        const std::string ov = dir + "/ov";
        r.model->save(ov);
        const std::string before = readText(ov + "/overlay.json");
        struct rlimit old {};
        ::getrlimit(RLIMIT_FSIZE, &old);
        auto oldHandler = std::signal(SIGXFSZ, SIG_IGN);
        struct rlimit lim = old;
        lim.rlim_cur = 4096;
        ::setrlimit(RLIMIT_FSIZE, &lim);
        const std::string e = errorOf([&] { r.model->save(ov); });
        ::setrlimit(RLIMIT_FSIZE, &old);
        std::signal(SIGXFSZ, oldHandler);
        QVERIFY2(e.find("overlay.safetensors") != std::string::npos, e.c_str());
        QCOMPARE(entries(dir), (std::set<std::string>{"ov", "s.h5", "t.bin"}));
        QCOMPARE(readText(ov + "/overlay.json"), before);
        QVERIFY(compress::CompressedModel::load(ov, *m));
    }

    void overlayIsOneUnitWithContentHash() {
        auto m = Model::load(lcwtest::demoModelPath());
        NullProgress np;
        const std::string root = lcwtest::tempDir("hw-overlay");
        const std::string a = root + "/a", b = root + "/b";
        auto ra = compress::compress(*m, compress::findPreset("W4A16-g64").recipe, np);
        auto rb = compress::compress(*m, compress::findPreset("W8A16").recipe, np);
        ra.model->save(a);
        rb.model->save(b);
        QCOMPARE(entries(a), (std::set<std::string>{"overlay.json", "overlay.safetensors"}));
        QCOMPARE(entries(root), (std::set<std::string>{"a", "b"})); // no temporary folder left
        const json ja = json::parse(readText(a + "/overlay.json"));
        QVERIFY(ja.contains("content_hash"));
        QCOMPARE(ja["content_hash"]["bytes"].get<uint64_t>(),
                 uint64_t(fs::file_size(a + "/overlay.safetensors")));
        QVERIFY(compress::CompressedModel::load(a, *m));

        // saving again over an existing overlay replaces it as a whole
        rb.model->save(a);
        QCOMPARE(compress::CompressedModel::load(a, *m)->recipe.name, std::string("W8A16"));
        QCOMPARE(entries(root), (std::set<std::string>{"a", "b"}));
        ra.model->save(a);

        // the JSON of one save with the tensors of another: refused, naming the file
        const std::string mixed = root + "/mixed";
        fs::create_directories(mixed);
        fs::copy_file(b + "/overlay.json", mixed + "/overlay.json");
        fs::copy_file(a + "/overlay.safetensors", mixed + "/overlay.safetensors");
        std::string e = errorOf([&] { compress::CompressedModel::load(mixed, *m); });
        QVERIFY2(e.find("content hash mismatch") != std::string::npos, e.c_str());
        QVERIFY2(e.find(mixed + "/overlay.safetensors") != std::string::npos, e.c_str());
        QVERIFY_THROWS_EXCEPTION(FormatError, compress::CompressedModel::load(mixed, *m));
        // same size, other bytes: the hash tells
        std::string bytes = readText(a + "/overlay.safetensors");
        bytes[bytes.size() - 3] ^= 0x5a;
        writeText(mixed + "/overlay.safetensors", bytes);
        fs::copy_file(a + "/overlay.json", mixed + "/overlay.json",
                      fs::copy_options::overwrite_existing);
        e = errorOf([&] { compress::CompressedModel::load(mixed, *m); });
        QVERIFY2(e.find("content hash mismatch") != std::string::npos, e.c_str());
        // a truncated tensor file
        fs::resize_file(a + "/overlay.safetensors", fs::file_size(a + "/overlay.safetensors") - 7);
        e = errorOf([&] { compress::CompressedModel::load(a, *m); });
        QVERIFY2(e.find("content hash mismatch") != std::string::npos, e.c_str());
        QVERIFY2(e.find(a + "/overlay.safetensors") != std::string::npos, e.c_str());

        // an overlay saved before the hash existed (no "content_hash") still loads
        json jb = json::parse(readText(b + "/overlay.json"));
        jb.erase("content_hash");
        writeText(b + "/overlay.json", jb.dump(2));
        auto legacy = compress::CompressedModel::load(b, *m);
        QVERIFY(legacy);
        QCOMPARE(legacy->replacedNames(), rb.model->replacedNames());

        // a folder holding other files is written in place (its other files survive)
        const std::string shared = root + "/shared";
        fs::create_directories(shared);
        writeText(shared + "/notes.txt", "mine");
        ra.model->save(shared);
        QCOMPARE(readText(shared + "/notes.txt"), std::string("mine"));
        QVERIFY(compress::CompressedModel::load(shared, *m));
    }

    void resultsStoreSetsTornLineAside() {
        const std::string path = lcwtest::tempDir("hw-results") + "/results.jsonl";
        appendResult(path, {{"id", "r1"}, {"v", 1}});
        // an interrupted append: half a line without its newline
        {
            std::ofstream f(path, std::ios::app | std::ios::binary);
            f << R"({"id": "torn", "v": 12)";
        }
        ResultsFile before = loadResults(path);
        QCOMPARE(before.records.size(), size_t(1));
        QCOMPARE(before.warnings.size(), size_t(1));
        QVERIFY2(before.warnings[0].find("incomplete last record") != std::string::npos,
                 before.warnings[0].c_str());
        QVERIFY(before.warnings[0].find(path) != std::string::npos);
        appendResult(path, {{"id", "r2"}, {"v", 2}});
        const ResultsFile f = loadResults(path);
        QCOMPARE(f.records.size(), size_t(2)); // the new record is not merged into the torn line
        QCOMPARE(f.records[1]["id"].get<std::string>(), std::string("r2"));
        QCOMPARE(f.warnings.size(), size_t(1));
        QVERIFY(f.warnings[0].find("line 2") != std::string::npos);
        const std::string text = readText(path);
        QVERIFY(text.find("\"v\": 12\n{") != std::string::npos); // set aside on its own line
        QCOMPARE(text.back(), '\n');

        // an append cut short (file size limit) is undone: no torn line is left behind
        const uint64_t size = fs::file_size(path);
        struct rlimit old {};
        ::getrlimit(RLIMIT_FSIZE, &old);
        auto oldHandler = std::signal(SIGXFSZ, SIG_IGN);
        struct rlimit lim = old;
        lim.rlim_cur = rlim_t(size + 10);
        ::setrlimit(RLIMIT_FSIZE, &lim);
        const std::string err = errorOf([&] {
            appendResult(path, {{"id", "r3"}, {"pad", std::string(100, 'x')}});
        });
        ::setrlimit(RLIMIT_FSIZE, &old);
        std::signal(SIGXFSZ, oldHandler);
        QVERIFY2(err.find(path) != std::string::npos, err.c_str());
        QCOMPARE(uint64_t(fs::file_size(path)), size);
        QCOMPARE(loadResults(path).records.size(), size_t(2));
    }

    void resultsListNamesFileAndRecord() {
        // records of unexpected shape: `results list` names file and record instead of printing
        // a raw nlohmann type error (and still lists the others)
        const std::string path = lcwtest::tempDir("hw-results-list") + "/r.jsonl";
        writeText(path, "{\"id\": \"a1\", \"timestamp\": 5}\n"
                        "{\"id\": \"a2\", \"configs\": [5]}\n"
                        "{\"id\": \"ok\", \"model\": \"m.gguf\"}\n");
        for (const QStringList& extra : {QStringList{}, QStringList{"--json"}}) {
            const auto r = lcwtest::runCli(
                QStringList{"results", "list", "--results", QString::fromStdString(path)} + extra);
            QCOMPARE(r.code, 0);
            const QString out = QString::fromUtf8(r.out);
            QVERIFY2(out.contains(QString::fromStdString(path + ": record a1 has an unexpected "
                                                                "shape")),
                     qPrintable(out));
            QVERIFY2(out.contains(QString::fromStdString(path + ": record a2")), qPrintable(out));
            QVERIFY(out.contains("m.gguf"));
            QVERIFY(!r.err.contains("json.exception"));
        }
    }

    void nanWeightsNameTheFile() {
        const std::string dir = lcwtest::tempDir("hw-nan") + "/m";
        const std::string st = nanModel(dir);
        auto m = Model::load(dir);
        const std::vector<int32_t> ids = {1, 20, 30, 40};
        std::vector<float> logits;
        std::string e = errorOf([&] {
            Session s(*m);
            s.forward(ids, logits);
        });
        QVERIFY2(e.find("logits became non-finite") != std::string::npos, e.c_str());
        QVERIFY2(e.find(st) != std::string::npos, e.c_str());
        QVERIFY2(e.find("model.layers.2.mlp.down_proj.weight") != std::string::npos, e.c_str());
        // through an overlay that does not replace the bad tensor: still the base file
        NullProgress np;
        const compress::Recipe r = compress::Recipe::fromJson(json::parse(
            R"({"lcw_recipe": 1, "name": "q", "rules": [{"targets": ["*.attn.q"],
                "weight": {"bits": 8}}]})"));
        auto c = compress::compress(*m, r, np);
        e = errorOf([&] {
            Session s(*c.model);
            s.forward(ids, logits);
        });
        QVERIFY2(e.find("logits became non-finite") != std::string::npos, e.c_str());
        QVERIFY2(e.find(st) != std::string::npos, e.c_str());
        // compressing the bad tensor names the file and the tensor
        e = errorOf([&] { compress::compress(*m, compress::findPreset("W4A16-g64").recipe, np); });
        QVERIFY2(e.find("non-finite weight") != std::string::npos, e.c_str());
        QVERIFY2(e.find(st) != std::string::npos, e.c_str());
        QVERIFY2(e.find("model.layers.2.mlp.down_proj.weight") != std::string::npos, e.c_str());
    }
};

QTEST_GUILESS_MAIN(TestHostileWrites)
#include "test_hostile_writes.moc"
