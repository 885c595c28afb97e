// lcw: the GUI entry point. `lcw [MODEL] [--screenshot FILE.png]`.
#include "core/version.h"
#include "widgets/main_window.h"

#include <QApplication>
#include <QCommandLineParser>
#include <QDir>
#include <QFileInfo>
#include <QPixmap>
#include <QTimer>

#include <cstdio>

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

} // namespace

int main(int argc, char** argv) {
    preferOffscreenWhenHeadless(argc, argv);
    QApplication app(argc, argv);
    QApplication::setOrganizationName(QStringLiteral("lcw"));
    QApplication::setApplicationName(QStringLiteral("lcw"));
    QApplication::setApplicationDisplayName(QStringLiteral("lcw"));
    QApplication::setApplicationVersion(QString::fromLatin1(lcw::version()));

    QCommandLineParser parser;
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
    parser.addOption(screenshot);
    parser.addOption(size);
    parser.process(app);

    const QStringList args = parser.positionalArguments();
    if (args.size() > 1) {
        std::fprintf(stderr, "lcw: expected at most one MODEL argument, got %lld\n",
                     static_cast<long long>(args.size()));
        return 2;
    }
    const QString modelPath = args.isEmpty() ? QString() : args.front();

    if (!parser.isSet(screenshot)) {
        lcw::MainWindow window;
        window.show();
        if (!modelPath.isEmpty()) window.openModel(modelPath);
        return QApplication::exec();
    }

    // Screenshot mode: no settings read or written, errors go to stderr instead of dialogs.
    QSize windowSize;
    if (!parseSize(parser.value(size), &windowSize)) {
        std::fprintf(stderr, "lcw: --size expects WxH, e.g. 1400x900\n");
        return 2;
    }
    const QString outPath = parser.value(screenshot);
    lcw::MainWindow window(lcw::MainWindow::Options{false, false});
    window.resize(windowSize);
    window.show();

    int exitCode = 0;
    auto grabAndQuit = [&] {
        const QPixmap pixmap = window.grab();
        if (pixmap.isNull() || !pixmap.save(outPath)) {
            std::fprintf(stderr, "lcw: could not write %s\n", qPrintable(outPath));
            exitCode = 1;
        } else {
            std::printf("%s\n", qPrintable(QDir::toNativeSeparators(
                                    QFileInfo(outPath).absoluteFilePath())));
        }
        QApplication::quit();
    };
    QObject::connect(&window, &lcw::MainWindow::errorShown, &app, [&](const QString& message) {
        std::fprintf(stderr, "lcw: %s\n", qPrintable(message));
        exitCode = 1;
        QApplication::quit();
    });
    // Grab from the event loop so pending layout and resize events are processed first.
    if (modelPath.isEmpty()) {
        QTimer::singleShot(0, &window, grabAndQuit);
    } else {
        QObject::connect(&window, &lcw::MainWindow::modelLoaded, &window,
                         [&] { QTimer::singleShot(0, &window, grabAndQuit); });
        window.openModel(modelPath);
    }
    const int rc = QApplication::exec();
    return exitCode != 0 ? exitCode : rc;
}
