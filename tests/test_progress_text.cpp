// The terminal progress line: time left in a fixed place, never wider than the terminal.
#include "core/common/progress_text.h"

#include <QtTest>

#include <cmath>

using namespace lcw;

namespace {
int columns(const std::string& s) {
    int n = 0;
    for (unsigned char c : s)
        if ((c & 0xC0) != 0x80) ++n;
    return n;
}
} // namespace

class TestProgressText : public QObject {
    Q_OBJECT

private slots:
    void etaFromTheRateSoFar() {
        QVERIFY(std::isnan(estimateSecondsLeft(0.005, 30.0))); // under 1 %
        QVERIFY(std::isnan(estimateSecondsLeft(0.5, 0.1)));    // too early
        QVERIFY(std::isnan(estimateSecondsLeft(1.0, 10.0)));   // done
        QCOMPARE(estimateSecondsLeft(0.25, 10.0), 30.0);
        QCOMPARE(formatEta(42.4), std::string("42s"));
        QCOMPARE(formatEta(65.0), std::string("1m05s"));
        QCOMPARE(formatEta(2 * 3600 + 3 * 60 + 10), std::string("2h03m"));
        QCOMPARE(formatEta(std::nan("")), std::string("?"));
    }

    void lineShowsEtaInAFixedColumn() {
        const std::string a = progressLine("perplexity", 0.25, 10.0, "chunk 1/4, PPL 12.3", 120);
        QVERIFY2(a.find("ETA 30s") != std::string::npos, a.c_str());
        QVERIFY2(a.find("25.0%") != std::string::npos, a.c_str());
        QVERIFY2(a.find("chunk 1/4, PPL 12.3") != std::string::npos, a.c_str());
        // Before the estimate: a placeholder of the same width, so the stage does not move.
        const std::string b = progressLine("perplexity", 0.0, 0.1, "chunk 1/4, PPL 12.3", 120);
        QVERIFY2(b.find("ETA --") != std::string::npos, b.c_str());
        QCOMPARE(a.find("chunk"), b.find("chunk"));
        const std::string c = progressLine("perplexity", 0.5, 3600.0 * 11, "chunk 2/4", 120);
        QVERIFY2(c.find("ETA 11h00m") != std::string::npos, c.c_str());
        QCOMPARE(c.find("chunk"), a.find("chunk"));
    }

    void lineNeverWiderThanTheTerminal() {
        const std::string longStage(300, 'x');
        for (int width : {40, 60, 80, 100, 200}) {
            const std::string l =
                progressLine("sensitivity scan of a model", 0.5, 100.0, longStage, width);
            QVERIFY2(columns(l) <= width, qPrintable(QString("%1 > %2: %3")
                                                         .arg(columns(l))
                                                         .arg(width)
                                                         .arg(QString::fromStdString(l))));
            QVERIFY2(l.find("ETA 1m40s") != std::string::npos, l.c_str());    // the ETA survives
            QVERIFY2(l.find("\xE2\x80\xA6") != std::string::npos, l.c_str()); // cut visibly
        }
        // Short text is not cut.
        const std::string s = progressLine("ppl", 0.5, 100.0, "chunk 2/4", 80);
        QVERIFY(s.find("\xE2\x80\xA6") == std::string::npos);
        QVERIFY(s.find("chunk 2/4") != std::string::npos);
    }
};

QTEST_GUILESS_MAIN(TestProgressText)
#include "test_progress_text.moc"
