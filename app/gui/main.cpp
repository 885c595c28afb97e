// lcw: the GUI entry point. `lcw [MODEL] [--theme light|dark] [--screenshot FILE.png
// [--demo-run | --demo-stats [--stats-tab TAB] [--imatrix FILE|compute] | --demo-recipe |
// --demo-compare | --demo-results | --demo-sensitivity | --demo-export | --demo-study DIR]]`.
#include "core/version.h"
#include "demo_scenes.h"
#include "widgets/device_selector.h"
#include "widgets/main_window.h"
#include "widgets/theme.h"

#include <QApplication>
#include <QCommandLineParser>

#include <cstdio>
#include <optional>

namespace {

bool parseSize(const QString& text, QSize* out) {
    const QStringList parts = text.toLower().split(QLatin1Char('x'));
    if (parts.size() != 2) return false;
    bool okW = false, okH = false;
    const int w = parts[0].toInt(&okW), h = parts[1].toInt(&okH);
    if (!okW || !okH || w < 200 || h < 150 || w > 10000 || h > 10000) return false;
    *out = QSize(w, h);
    return true;
}

/// --help, --version and --screenshot need no display: without one (and without an explicit
/// QT_QPA_PLATFORM) they run on the offscreen platform instead of failing to start.
void preferOffscreenWhenHeadless(int argc, char** argv) {
    if (!qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM") ||
        !qEnvironmentVariableIsEmpty("DISPLAY") || !qEnvironmentVariableIsEmpty("WAYLAND_DISPLAY"))
        return;
    for (int i = 1; i < argc; ++i) {
        const QByteArray a(argv[i]);
        if (a == "-h" || a == "--help" || a == "--help-all" || a == "-v" || a == "--version" ||
            a.startsWith("--screenshot")) {
            qputenv("QT_QPA_PLATFORM", "offscreen");
            return;
        }
    }
}

/// Every option of the command line (the --demo-* scenes are in demo_scenes.cpp).
void addOptions(QCommandLineParser& parser) {
    parser.setApplicationDescription(
        QStringLiteral("LLM Compression Workbench: inspect and compress language models."));
    parser.addHelpOption();
    parser.addVersionOption();
    parser.addPositionalArgument(
        QStringLiteral("MODEL"),
        QStringLiteral("Model to open: a Hugging Face folder, a .gguf file or a llama2.c .bin."),
        QStringLiteral("[MODEL]"));
    const QCommandLineOption screenshot(
        QStringLiteral("screenshot"),
        QStringLiteral("Open MODEL, wait until it is loaded, save the window to FILE.png, exit "
                       "(exit code 1 when loading or saving fails)."),
        QStringLiteral("FILE.png"));
    const QCommandLineOption size(QStringLiteral("size"),
                                  QStringLiteral("Window size for --screenshot (default "
                                                 "1400x900)."),
                                  QStringLiteral("WxH"), QStringLiteral("1400x900"));
    const QCommandLineOption theme(QStringLiteral("theme"),
                                   QStringLiteral("Colour theme: light or dark (remembered)."),
                                   QStringLiteral("light|dark"));
    const QCommandLineOption demoRun(
        QStringLiteral("demo-run"),
        QStringLiteral("With --screenshot: generate from \"Once upon a time\" and measure "
                       "perplexity on the bundled text (ctx 256) before saving the Run panel."));
    parser.addOption(screenshot);
    parser.addOption(size);
    parser.addOption(theme);
    const QCommandLineOption demoStats(
        QStringLiteral("demo-stats"),
        QStringLiteral("With --screenshot: compute (or load cached) statistics of MODEL "
                       "(8 samples x 128 tokens of the bundled text) and save the Statistics "
                       "inspector on layers.1.mlp.down."));
    const QCommandLineOption statsTab(
        QStringLiteral("stats-tab"),
        QStringLiteral("With --demo-stats: the inspector tab to show (weights, activations, kv, "
                       "mlp-sparsity)."),
        QStringLiteral("TAB"), QStringLiteral("weights"));
    const QCommandLineOption imatrixOpt(
        QStringLiteral("imatrix"),
        QStringLiteral("With --demo-stats: open this importance matrix (.dat), or \"compute\" one "
                       "(8 chunks x 128 tokens of the bundled text), before saving."),
        QStringLiteral("FILE|compute"));
    parser.addOption(demoRun);
    parser.addOption(demoStats);
    parser.addOption(statsTab);
    parser.addOption(imatrixOpt);
    const QCommandLineOption demoRecipe(
        QStringLiteral("demo-recipe"),
        QStringLiteral("With --screenshot: apply the W4A16-g64 preset, keep block 0 at int8 per "
                       "channel and save the Recipe editor."));
    const QCommandLineOption demoCompare(
        QStringLiteral("demo-compare"),
        QStringLiteral("With --screenshot: compare W8A16, W4A16-g32, NF4-g64, W3A16-g64 and "
                       "W2A16-g32 with the original (ctx 128, 8 chunks of the bundled text, 40 "
                       "generated tokens) and save the Compare view."));
    const QCommandLineOption compareTab(
        QStringLiteral("compare-tab"),
        QStringLiteral(
            "With --demo-compare: the tab to show (metrics, layers, generations, "
            "speed: W8A16, W4A16-g32, NF4-g64, W8A8 and W4A8 instead, speed and memory)."),
        QStringLiteral("TAB"), QStringLiteral("metrics"));
    parser.addOption(demoRecipe);
    parser.addOption(demoCompare);
    parser.addOption(compareTab);
    const QCommandLineOption demoResults(
        QStringLiteral("demo-results"),
        QStringLiteral("With --screenshot: in a temporary results store, record two comparisons "
                       "(ctx 128, 4 chunks of the bundled text) and a sensitivity scan, and save "
                       "the Results panel with the first record selected."));
    const QCommandLineOption demoSensitivity(
        QStringLiteral("demo-sensitivity"),
        QStringLiteral("With --screenshot: scan W4A16-g32 and W2A16-g32 per layer (ctx 128, 4 "
                       "chunks of the bundled text; recorded in a temporary results store) and "
                       "save the Sensitivity panel."));
    const QCommandLineOption demoExport(
        QStringLiteral("demo-export"),
        QStringLiteral("With --screenshot: compute an importance matrix (8 chunks x 128 tokens of "
                       "the bundled text), export MODEL as Q4_K_M with it into a temporary folder "
                       "and save the Export dialog's GGUF page with the per-tensor report."));
    parser.addOption(demoResults);
    parser.addOption(demoSensitivity);
    parser.addOption(demoExport);
    const QCommandLineOption demoStudy(
        QStringLiteral("demo-study"),
        QStringLiteral("With --screenshot: open the study report in DIR (written by 'lcw-cli study "
                       "MODEL --out DIR') in the Study panel and save it."),
        QStringLiteral("DIR"));
    parser.addOption(demoStudy);
}

/// The checked command line.
struct CommandLine {
    QString modelPath;
    std::optional<lcw::Theme> theme;
    QString screenshot; ///< empty: the interactive window
    QSize size;
    lcw::demo::SceneOptions scene;
};

/// Which --demo-* scene was asked for, checked against --screenshot and MODEL; an exit code
/// when the combination is wrong.
std::optional<int> chooseScene(const QCommandLineParser& parser, const CommandLine& cl,
                               lcw::demo::Scene* scene) {
    using lcw::demo::Scene;
    const bool shot = parser.isSet(QStringLiteral("screenshot")), noModel = cl.modelPath.isEmpty();
    const bool run = parser.isSet(QStringLiteral("demo-run"));
    if (run && (!shot || noModel)) {
        std::fprintf(stderr, "lcw: --demo-run needs --screenshot and a MODEL\n");
        return 2;
    }
    const bool stats = parser.isSet(QStringLiteral("demo-stats"));
    if (stats && (!shot || noModel || run)) {
        std::fprintf(stderr, "lcw: --demo-stats needs --screenshot and a MODEL (not --demo-run)\n");
        return 2;
    }
    const std::pair<const char*, Scene> others[] = {
        {"demo-recipe", Scene::Recipe},   {"demo-compare", Scene::Compare},
        {"demo-results", Scene::Results}, {"demo-sensitivity", Scene::Sensitivity},
        {"demo-export", Scene::Export},   {"demo-study", Scene::Study}};
    int demos = int(run) + int(stats);
    *scene = run ? Scene::Run : stats ? Scene::Stats : Scene::Plain;
    bool other = false;
    for (const auto& [name, s] : others) {
        if (!parser.isSet(QLatin1String(name))) continue;
        ++demos;
        other = true;
        *scene = s;
    }
    if (demos > 1 || (other && (!shot || noModel))) {
        std::fprintf(stderr, "lcw: one --demo-* option at a time, with --screenshot and a MODEL\n");
        return 2;
    }
    return std::nullopt;
}

/// The screenshot settings: window size and the scenes' tabs; an exit code when one is wrong.
std::optional<int> screenshotSettings(const QCommandLineParser& parser, CommandLine* cl) {
    if (!parseSize(parser.value(QStringLiteral("size")), &cl->size)) {
        std::fprintf(stderr, "lcw: --size expects WxH, e.g. 1400x900\n");
        return 2;
    }
    using lcw::demo::Scene;
    if (cl->scene.scene == Scene::Stats) {
        const QStringList tabs = {QStringLiteral("weights"), QStringLiteral("activations"),
                                  QStringLiteral("kv"), QStringLiteral("mlp-sparsity")};
        cl->scene.statsTab = int(tabs.indexOf(parser.value(QStringLiteral("stats-tab")).toLower()));
        if (cl->scene.statsTab < 0) {
            std::fprintf(stderr,
                         "lcw: --stats-tab expects weights, activations, kv or mlp-sparsity\n");
            return 2;
        }
        cl->scene.imatrix = parser.value(QStringLiteral("imatrix"));
    }
    if (cl->scene.scene == Scene::Study)
        cl->scene.studyDir = parser.value(QStringLiteral("demo-study"));
    if (cl->scene.scene == Scene::Compare) {
        const QStringList tabs = {QStringLiteral("metrics"), QStringLiteral("layers"),
                                  QStringLiteral("generations"), QStringLiteral("speed")};
        cl->scene.compareTab =
            int(tabs.indexOf(parser.value(QStringLiteral("compare-tab")).toLower()));
        if (cl->scene.compareTab < 0) {
            std::fprintf(stderr,
                         "lcw: --compare-tab expects metrics, layers, generations or speed\n");
            return 2;
        }
    }
    return std::nullopt;
}

/// Parses and checks the command line (--help and --version exit here); an exit code when it
/// is wrong.
std::optional<int> parseCommandLine(const QApplication& app, CommandLine* cl) {
    QCommandLineParser parser;
    addOptions(parser);
    parser.process(app);
    const QStringList args = parser.positionalArguments();
    if (args.size() > 1) {
        std::fprintf(stderr, "lcw: expected at most one MODEL argument, got %lld\n",
                     static_cast<long long>(args.size()));
        return 2;
    }
    cl->modelPath = args.isEmpty() ? QString() : args.front();
    if (parser.isSet(QStringLiteral("theme"))) {
        cl->theme = lcw::themeFromName(parser.value(QStringLiteral("theme")));
        if (!cl->theme) {
            std::fprintf(stderr, "lcw: --theme expects light or dark\n");
            return 2;
        }
    }
    if (auto rc = chooseScene(parser, *cl, &cl->scene.scene)) return rc;
    cl->screenshot = parser.value(QStringLiteral("screenshot"));
    if (cl->screenshot.isEmpty()) return std::nullopt;
    return screenshotSettings(parser, cl);
}

} // namespace

int main(int argc, char** argv) {
    preferOffscreenWhenHeadless(argc, argv);
    QApplication app(argc, argv);
    // Fusion draws the light and dark palettes faithfully on every platform.
    QApplication::setStyle(QStringLiteral("Fusion"));
    QApplication::setOrganizationName(QStringLiteral("lcw"));
    QApplication::setApplicationName(QStringLiteral("lcw"));
    QApplication::setApplicationDisplayName(QStringLiteral("lcw"));
    QApplication::setApplicationVersion(QString::fromLatin1(lcw::version()));

    CommandLine cl;
    if (auto rc = parseCommandLine(app, &cl)) return *rc;

    if (cl.screenshot.isEmpty()) {
        // The device chosen in Preferences (the CPU when it is gone).
        lcw::DeviceSelector::applyStoredDevice();
        lcw::MainWindow window;
        if (cl.theme) window.setTheme(*cl.theme);
        window.show();
        if (!cl.modelPath.isEmpty()) window.openModel(cl.modelPath);
        return QApplication::exec();
    }

    // Screenshot mode: no settings read or written, errors go to stderr instead of dialogs.
    lcw::MainWindow window(lcw::MainWindow::Options{false, false});
    window.setTheme(cl.theme.value_or(lcw::Theme::Light));
    window.resize(cl.size);
    window.show();
    lcw::demo::ScreenshotSession session(window, cl.size, cl.screenshot, cl.modelPath);
    session.start(cl.scene);
    const int rc = QApplication::exec();
    return session.exitCode() != 0 ? session.exitCode() : rc;
}
