// lcw-cli and the compute devices: `devices [--json]` (a contract), the global --device option
// (fallback to the CPU when Vulkan cannot be used, usage error on a malformed spec) and the
// "device" the model commands report. VK_ICD_FILENAMES=/nonexistent hides every Vulkan driver.
#include "test_util.h"

#include "core/runtime/device.h"

#include <QProcess>
#include <QProcessEnvironment>

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>

namespace {

using Run = lcwtest::CliRun;

/// lcw-cli with extra environment variables ("NAME=value").
Run runCliEnv(const QStringList& args, const QStringList& env = {}, int timeoutMs = 300000) {
    return lcwtest::runProgram(QString::fromUtf8(LCW_CLI_PATH), args, timeoutMs, env);
}

const QStringList kNoDriver = {"VK_ICD_FILENAMES=/nonexistent"};

nlohmann::json parse(const Run& r) {
    try {
        return nlohmann::json::parse(r.out.toStdString());
    } catch (const std::exception& e) {
        qWarning("stdout was not JSON: %s\n%s\nstderr: %s", e.what(), r.out.constData(),
                 r.err.constData());
        throw;
    }
}

QString demo() {
    return QString::fromStdString(lcwtest::demoModelPath());
}

/// A few hundred characters of the demo text (the Vulkan path is slow on lavapipe).
QString tinyText() {
    static const std::string path = [] {
        std::ifstream in(lcwtest::demoTextPath(), std::ios::binary);
        std::string s(600, '\0');
        in.read(s.data(), std::streamsize(s.size()));
        s.resize(size_t(in.gcount()));
        const std::string p = lcwtest::tempDir("cli-devices") + "/tiny.txt";
        std::ofstream(p, std::ios::binary) << s;
        return p;
    }();
    return QString::fromStdString(path);
}

QStringList perplexityArgs(const QString& device) {
    return {"perplexity", demo(),    "--text", tinyText(), "--ctx",
            "32",         "--quiet", "--json", "--device", device};
}

bool hasVulkanDevice(const nlohmann::json& devices) {
    for (const auto& d : devices["devices"])
        if (d["id"].get<std::string>() != "cpu") return true;
    return false;
}

} // namespace

class TestCliDevices : public QObject {
    Q_OBJECT
private slots:
    void devicesJsonListsTheCpuFirst() {
        auto r = runCliEnv({"devices", "--json"});
        QCOMPARE(r.code, 0);
        const auto j = parse(r);
        QVERIFY(j["devices"].is_array() && !j["devices"].empty());
        const auto& cpu = j["devices"][0];
        QCOMPARE(cpu["id"].get<std::string>(), std::string("cpu"));
        QCOMPARE(cpu["type"].get<std::string>(), std::string("cpu"));
        QVERIFY(!cpu["name"].get<std::string>().empty());
        QVERIFY(cpu["memory_bytes"].get<uint64_t>() > 0);
        QVERIFY(cpu["driver"].is_string() && cpu["api"].is_string());
        QCOMPARE(j["vulkan_compiled_in"].get<bool>(), lcw::runtime::vulkanCompiledIn());
        if (j["devices"].size() > 1) QVERIFY(j["vulkan_compiled_in"].get<bool>());
        QVERIFY(j["vulkan_note"].is_string());
        QCOMPARE(j["default"].get<std::string>(), std::string("cpu"));
        // Vulkan devices are numbered in order; no reason is given when there is one.
        for (size_t i = 1; i < j["devices"].size(); ++i) {
            const auto& d = j["devices"][i];
            QCOMPARE(d["id"].get<std::string>(), "vulkan:" + std::to_string(i - 1));
            QVERIFY(!d["api"].get<std::string>().empty());
            for (const char* key : {"name", "type", "memory_bytes", "driver"})
                QVERIFY2(d.contains(key), key);
        }
        if (j["devices"].size() > 1) QCOMPARE(j["vulkan_note"].get<std::string>(), std::string());
        // The text form: one line per device, the CPU first, memory in GiB.
        r = runCliEnv({"devices"});
        QCOMPARE(r.code, 0);
        const auto lines = r.out.split('\n');
        QVERIFY2(lines[0].contains(" cpu ") && lines[0].contains("GiB"), r.out.constData());
        QVERIFY(lines[0].contains(QByteArray::fromStdString(cpu["name"].get<std::string>())));
        QVERIFY(r.err.isEmpty());
    }

    void devicesWithoutVulkanDriverGiveTheReason() {
        auto r = runCliEnv({"devices", "--json"}, kNoDriver);
        QCOMPARE(r.code, 0);
        const auto j = parse(r);
        QCOMPARE(j["devices"].size(), size_t(1));
        QCOMPARE(j["devices"][0]["id"].get<std::string>(), std::string("cpu"));
        QVERIFY(!j["vulkan_note"].get<std::string>().empty());
        QCOMPARE(j["default"].get<std::string>(), std::string("cpu"));
        r = runCliEnv({"devices"}, kNoDriver);
        QCOMPARE(r.code, 0);
        QVERIFY2(r.out.contains("no Vulkan device: "), r.out.constData());
        QVERIFY(r.out.contains(QByteArray::fromStdString(j["vulkan_note"].get<std::string>())));
        // LCW_NO_VULKAN keeps lcw away from the Vulkan loader altogether.
        r = runCliEnv({"devices", "--json"}, {"LCW_NO_VULKAN=1"});
        QCOMPARE(r.code, 0);
        const auto off = parse(r);
        QCOMPARE(off["devices"].size(), size_t(1));
        QVERIFY2(off["vulkan_note"].get<std::string>().find("LCW_NO_VULKAN") != std::string::npos,
                 r.out.constData());
    }

    void perplexityFallsBackToTheCpuWithoutDriver() {
        auto cpu = runCliEnv(perplexityArgs("cpu"), kNoDriver);
        QCOMPARE(cpu.code, 0);
        QVERIFY2(!cpu.err.contains("warning"), cpu.err.constData());
        auto vk = runCliEnv(perplexityArgs("vulkan"), kNoDriver);
        QCOMPARE(vk.code, 0);
        QVERIFY2(vk.err.contains("lcw-cli: warning: --device vulkan: ") &&
                     vk.err.contains("running on the CPU"),
                 vk.err.constData());
        const auto jc = parse(cpu), jv = parse(vk);
        QCOMPARE(jc["device"]["id"].get<std::string>(), std::string("cpu"));
        QCOMPARE(jv["device"]["id"].get<std::string>(), std::string("cpu"));
        QVERIFY(!jv["device"]["name"].get<std::string>().empty());
        QCOMPARE(jv["ppl"].get<double>(), jc["ppl"].get<double>());
        QCOMPARE(jv["scored_tokens"].get<int>(), jc["scored_tokens"].get<int>());
    }

    void malformedDeviceSpecIsAUsageError() {
        for (const QStringList& args :
             {QStringList{"devices", "--device", "bogus"},
              QStringList{"perplexity", demo(), "--text", tinyText(), "--device", "bogus"}}) {
            auto r = runCliEnv(args);
            QCOMPARE(r.code, 2);
            QVERIFY2(r.err.contains("--device") && r.err.contains("'bogus'"), r.err.constData());
            QVERIFY(r.out.isEmpty());
        }
        auto r = runCliEnv({"devices", "--device"});
        QCOMPARE(r.code, 2);
        QVERIFY(r.err.contains("--device needs a value"));
        r = runCliEnv({"devices", "--device=bogus"});
        QCOMPARE(r.code, 2);
        QVERIFY2(r.err.contains("'bogus'"), r.err.constData());
        r = runCliEnv({"devices", "--json", "--device=cpu"});
        QCOMPARE(r.code, 0);
        QCOMPARE(parse(r)["default"].get<std::string>(), std::string("cpu"));
        r = runCliEnv({"devices", "--gpu-layers", "many"});
        QCOMPARE(r.code, 2);
        QVERIFY2(r.err.contains("--gpu-layers") && r.err.contains("'many'"), r.err.constData());
    }

    void modelCommandsReportTheDevice() {
        auto r = runCliEnv({"generate", demo(), "--prompt", "Once", "-n", "4", "--json"});
        QCOMPARE(r.code, 0);
        auto j = parse(r);
        QCOMPARE(j["device"]["id"].get<std::string>(), std::string("cpu"));
        QVERIFY(!j["device"]["name"].get<std::string>().empty());
        QCOMPARE(j["forward"].get<std::string>(), std::string("cpu"));
        r = runCliEnv({"generate", demo(), "--prompt", "Once", "-n", "4"});
        QCOMPARE(r.code, 0);
        QVERIFY2(r.err.contains("device:  ") && r.err.contains(" (cpu)\n"), r.err.constData());

        r = runCliEnv({"perplexity", demo(), "--text", tinyText(), "--ctx", "32", "--quiet"});
        QCOMPARE(r.code, 0);
        QVERIFY2(r.out.contains("\ndevice:  ") && r.out.contains(" (cpu)\n"), r.out.constData());

        const QStringList eval = {"eval", demo(),           "--text", tinyText(),    "--ctx",
                                  "32",   "--speed-tokens", "2",      "--no-record", "--quiet"};
        r = runCliEnv(eval + QStringList{"--json"});
        QCOMPARE(r.code, 0);
        j = parse(r);
        QCOMPARE(j["device"]["id"].get<std::string>(), std::string("cpu"));
        QVERIFY(!j["device"]["name"].get<std::string>().empty());
        r = runCliEnv(eval);
        QCOMPARE(r.code, 0);
        QVERIFY2(r.out.contains("\ndevice:  ") && r.out.contains(" (cpu)\n"), r.out.constData());
    }

    void perplexityOnVulkanMatchesTheCpu() {
        auto r = runCliEnv({"devices", "--json", "--device", "vulkan"});
        QCOMPARE(r.code, 0);
        const auto devices = parse(r);
        if (!hasVulkanDevice(devices))
            QSKIP(qPrintable("no Vulkan device: " +
                             QString::fromStdString(devices["vulkan_note"].get<std::string>())));
        // `devices --device vulkan` names the device that --device vulkan picks.
        const std::string expected = devices["default"].get<std::string>();
        QVERIFY2(expected.rfind("vulkan:", 0) == 0, expected.c_str());
        r = runCliEnv({"devices", "--json", "--device=" + QString::fromStdString(expected)});
        QCOMPARE(r.code, 0);
        QCOMPARE(parse(r)["default"].get<std::string>(), expected);

        auto cpu = runCliEnv(perplexityArgs("cpu"));
        QCOMPARE(cpu.code, 0);
        auto vk = runCliEnv(perplexityArgs("vulkan"));
        QCOMPARE(vk.code, 0);
        QVERIFY2(!vk.err.contains("warning"), vk.err.constData());
        const auto jc = parse(cpu), jv = parse(vk);
        QCOMPARE(jv["device"]["id"].get<std::string>(), expected);
        for (const auto& d : devices["devices"])
            if (d["id"] == expected)
                QCOMPARE(jv["device"]["name"].get<std::string>(), d["name"].get<std::string>());
        QCOMPARE(jv["scored_tokens"].get<int>(), jc["scored_tokens"].get<int>());
        const double pc = jc["ppl"].get<double>(), pv = jv["ppl"].get<double>();
        QVERIFY2(std::fabs(pv - pc) <= 1e-4 * pc,
                 qPrintable(QString("vulkan %1, cpu %2").arg(pv, 0, 'g', 12).arg(pc, 0, 'g', 12)));

        // generate says how the forward ran: the demo model runs resident; a W8A8 recipe
        // (activation quantisation) runs per product and says why.
        const QStringList gen = {"generate", demo(), "--prompt", "Once", "-n", "4", "--json",
                                 "--device", "vulkan"};
        r = runCliEnv(gen);
        QCOMPARE(r.code, 0);
        auto j = parse(r);
        QCOMPARE(j["forward"].get<std::string>(), std::string("resident"));
        r = runCliEnv(gen + QStringList{"--preset", "W8A8"});
        QCOMPARE(r.code, 0);
        j = parse(r);
        QCOMPARE(j["forward"].get<std::string>(), std::string("per-product"));
        r = runCliEnv({"generate", demo(), "--prompt", "Once", "-n", "4", "--device", "vulkan",
                       "--preset", "W8A8"});
        QCOMPARE(r.code, 0);
        QVERIFY2(r.err.contains("forward: per product (") && r.err.contains("activation"),
                 r.err.constData());
    }
};

QTEST_GUILESS_MAIN(TestCliDevices)
#include "test_cli_devices.moc"
