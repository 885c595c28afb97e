// The llama.cpp instance every bench script uses: node-llama-cpp's prebuilt CPU binary from
// @node-llama-cpp/linux-x64 only (build: "never": never a download or a compile of llama.cpp), no
// GPU, logs at error level; `threads` caps llama.cpp's threads (undefined: node-llama-cpp's
// default).
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

export function getCpuLlama(threads) {
    return getLlama({
        gpu: false,
        build: "never",
        usePrebuiltBinaries: true,
        skipDownload: true,
        ...(threads === undefined ? {} : {maxThreads: threads}),
        logLevel: LlamaLogLevel.error,
        progressLogs: false,
    });
}
