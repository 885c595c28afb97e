#pragma once
/// \file
/// Importance matrices as llama.cpp's `llama-imatrix` computes them, in the legacy binary `.dat`
/// format that `llama-quantize --imatrix` (b4747) reads.
///
///   CalibrationSet cal = imatrixCalibration(model, "calib.txt", 128, 24); // -c 128 --chunks 24
///   ImatrixResult r = computeImatrix(model, cal, {}, progress);
///   writeImatrix(r.imatrix, "imatrix.dat");
///   Imatrix m = readImatrix("imatrix.dat");
///   checkImatrix(m, model);                                // made for this model?
///   std::vector<float> w = m.importance("blk.0.attn_q.weight", 256); // the quantiser's weights
///
/// For every linear weight llama.cpp runs as a matrix product of a block ("blk.N.*"), the entry
/// holds, per input column j, sum_t x[t,j]^2 / count_j * ncall, where the sum runs over the
/// calibration tokens that reached the product, count_j is their number and ncall the number of
/// products (one per chunk, or per 512-token micro-batch of longer chunks). llama.cpp's rules:
/// products with fewer than 16 tokens are skipped; output.weight only on request
/// (--process-output); fused tensors (attn_qkv, Phi-3's ffn_up) are one entry; MoE experts
/// (ffn_gate_exps, ffn_up_exps, ffn_down_exps: 3-D) hold experts x cols values, each expert's slice
/// summed over the tokens routed to it, and an entry some expert never saw is left out (as
/// llama-imatrix leaves out "partial data").
#include "core/common/error.h"
#include "core/common/progress.h"
#include "core/compress/calibration.h"
#include "core/model/model.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lcw::compress {

/// One tensor's importance as the file stores it.
struct ImatrixEntry {
    std::string name;          ///< llama.cpp tensor name ("blk.0.attn_q.weight")
    int32_t ncall = 0;         ///< products that fed it
    std::vector<float> values; ///< sum(x^2) / count * ncall per column; MoE: expert-major
};

/// An importance matrix: entries in file order, and the trailer llama-imatrix appends.
struct Imatrix {
    std::vector<ImatrixEntry> entries;
    /// The file's "last call" count: the largest ncall, i.e. the chunks it was computed on (or
    /// their micro-batches, for chunks longer than 512 tokens). llama-quantize prints it as chunks.
    int32_t chunks = 0;
    std::string dataset; ///< calibration file name as stored at the end of the file
    std::string source;  ///< the file it was read from (error messages); empty when computed

    /// The entry for a llama.cpp tensor name; nullptr when absent.
    const ImatrixEntry* find(std::string_view name) const;
    /// What llama-quantize hands ggml's quantiser for tensor `name`: the stored values divided by
    /// ncall (in float, as its loader does). `cols` is the tensor's row length: the result has
    /// cols * experts values, expert e's slice at [e * cols, (e + 1) * cols). Empty when the
    /// imatrix has no entry for `name`; FormatError naming the file and tensor when the entry's
    /// length is not cols * experts.
    std::vector<float> importance(std::string_view name, int64_t cols, int64_t experts = 1) const;
};

/// The importance (mean x² per input column, as llama-quantize passes it to ggml's quantisers)
/// of lcw's linear `canonical` of `model`: its llama.cpp tensor's entry (fused q/k/v and gate/up
/// share their tensor's entry), the expert's slice of a merged MoE tensor. Empty when the
/// imatrix has no entry for it; FormatError when the entry's size does not fit.
std::vector<float> importanceFor(const Imatrix& m, const WeightSource& model,
                                 const std::string& canonical);

/// Reads a legacy binary imatrix (int32 entry count; per entry int32 name length, name, int32
/// ncall, int32 nval, nval float32; then optionally int32 chunk count, int32 length and the
/// dataset name). Validates before it allocates: truncation, counts and lengths against the file
/// size, empty or duplicate names, negative ncall, NaN/Inf/negative values, trailing bytes.
/// Throws FormatError naming the file, the entry and the byte offset.
Imatrix readImatrix(const std::string& path);

/// Writes `m` in the same format, atomically (temporary file + rename). Throws Error naming
/// the file (unwritable folder), ArgumentError for an entry with no values.
void writeImatrix(const Imatrix& m, const std::string& path);

/// A weight of the model as llama.cpp names it, with what an imatrix entry for it must hold.
struct ImatrixTarget {
    std::string name;                   ///< "blk.0.attn_qkv.weight", "output.weight", ...
    int64_t cols = 0;                   ///< input columns
    int64_t experts = 1;                ///< > 1 for merged MoE expert tensors
    std::vector<std::string> canonical; ///< lcw's tensors that make it up (q, k, v of a qkv)
};
/// The weights llama-imatrix can collect for this model, in layer order ("blk.*" matrix
/// products, and output.weight when the model has an untied lm_head).
std::vector<ImatrixTarget> imatrixTargets(const WeightSource& model);

/// Checks that every entry of `m` names a weight of `model` (imatrixTargets) and holds cols *
/// experts values. Throws FormatError naming m's file and the first entry that does not fit:
/// "imatrix.dat: entry 'blk.4.attn_q.weight' does not match the model (no such tensor; the model
/// has 4 blocks) — is this imatrix for another model?".
void checkImatrix(const Imatrix& m, const WeightSource& model);

/// Tokens as llama-imatrix cuts them: the text (one trailing newline dropped) is tokenised once
/// with BOS, cut into consecutive chunks of seqLen tokens from the start, and each chunk's first
/// token is replaced by BOS (when the tokenizer adds one). samples = 0: all whole chunks the text
/// holds; otherwise at most that many. textPath empty: the bundled calibration text. Throws Error
/// naming the file when it cannot be read or holds fewer than seqLen tokens, ArgumentError for
/// seqLen < 2 or samples < 0.
CalibrationSet imatrixCalibration(const Model& model, const std::string& textPath, int64_t seqLen,
                                  int64_t samples = 0);

struct ImatrixOptions {
    int threads = 0;            ///< session threads, 0 = OpenMP default
    bool processOutput = false; ///< also collect output.weight (llama-imatrix --process-output)
    /// Tokens per forward call (llama.cpp's micro-batch, -ub): longer chunks run in pieces and
    /// each piece counts as a call.
    int64_t microBatch = 512;
    std::string dataset; ///< stored in the file; empty: the calibration set's source
};

struct ImatrixResult {
    Imatrix imatrix;
    Status status = Status::Ok;
    int64_t chunks = 0, tokens = 0; ///< what ran
    double seconds = 0;
    /// Entries left out because part of them saw no token (MoE experts no token was routed to),
    /// as llama-imatrix skips "partial data".
    std::vector<std::string> partial;
};

/// Runs every chunk of `cal` from an empty KV cache through `weights` and collects the
/// importance of every linear (imatrixTargets). Progress after every chunk; cancellation returns
/// status Cancelled and an empty imatrix. Throws ArgumentError for an empty calibration set.
ImatrixResult computeImatrix(const WeightSource& weights, const CalibrationSet& cal,
                             const ImatrixOptions& opts, Progress& progress);

} // namespace lcw::compress
