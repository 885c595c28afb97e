#pragma once
/// \file
/// Runtime quantisation kernels (internal to core/runtime, exposed for tests): activation
/// fake-quantisation of linear inputs and a quantised KV-cache stream. The formulas are in
/// core/model/runtime_quant.h.
#include "core/model/runtime_quant.h"
#include "core/runtime/cpu/kernels.h"

#include <cstdint>
#include <vector>

namespace lcw::runtime {

/// out[t, c] = fake-quantised x[t, c] for t < n, c < dim (row strides ldx, ldo; in place allowed).
/// Parallel over rows.
void fakeQuantizeActivations(const ActQuantSpec& spec, const float* x, int64_t ldx, float* out,
                             int64_t ldo, int64_t n, int64_t dim, int threads);

/// WKVQuant's past-only attention (POQ) of n new tokens at positions pos0 .. pos0 + n - 1: the
/// query at position p attends to rows [0, p) of the cache as stored (kc, vc [pos0 + n, width],
/// the new rows included, dequantised) and to its own row in f32 (kNew, vNew [n, width], row
/// stride width = kvHeads * hd). Row p of kc / vc is replaced by the f32 row for that query and
/// restored afterwards, so a batch gives the same result as decoding token by token.
/// Otherwise as kernels::attentionEx (q [n, heads*hd] with stride ldq, out with ldo).
void pastOnlyAttention(const float* q, int64_t ldq, float* kc, float* vc, const float* kNew,
                       const float* vNew, float* out, int64_t ldo, int64_t n, int64_t pos0,
                       int64_t heads, int64_t kvHeads, int64_t hd,
                       const kernels::AttentionOptions& ao, int threads);

/// One layer's K or V cache: rows of `width` values, appended in position order and stored
/// quantised (bits < 16) or as f32 (bits 16). Quantised once when a row (token granularity) or a
/// block of groupSize rows (channel granularity) is complete; never re-quantised.
class KvStream {
public:
    void init(int bits, KvGranularity g, int64_t groupSize, int64_t width);
    /// One KV head's slice: channels [offset, offset + width) of rows `rowWidth` wide. append()
    /// then takes whole rows and keeps the slice; token groups are those of the whole row (a
    /// group that straddles the slice keeps the scale and minimum of the whole group), so the
    /// slice dequantises exactly as the same channels of a whole-row stream. Token granularity
    /// or f32 only.
    void initSlice(int bits, KvGranularity g, int64_t groupSize, int64_t rowWidth, int64_t offset,
                   int64_t width);
    /// WKVQuant's static per-channel smoothing (token granularity): rows are quantised as
    /// (x − shift) / scale and read back as scale ⊙ deq + shift. Both vectors have one value per
    /// channel of the whole row (rowWidth of a slice), scales finite and > 0; empty vectors (or an
    /// f32 stream) leave the stream as it is. Call after init / initSlice, before append.
    void setSmoothing(const std::vector<float>& shift, const std::vector<float>& scale);
    bool smoothed() const { return !m_sScale.empty(); }
    /// Rows currently held.
    int64_t rows() const { return m_rows; }
    /// Drops rows from `n` on (n <= rows()). A quantised channel block cut in two keeps its
    /// first rows as their dequantised f32 values (they are not quantised again).
    void truncate(int64_t n);
    /// Keeps only rows keep[0] < keep[1] < ... (ascending indices), in that order (eviction).
    /// f32 or token granularity (whole rows move; nothing is quantised again).
    void compact(const std::vector<int64_t>& keep);
    /// Appends n rows [n, width] (row stride ld; a slice: whole rows [n, rowWidth]).
    void append(const float* x, int64_t ld, int64_t n);
    /// Rows [0, n) as f32 [n, width]: a pointer into the stream (f32 storage) or into `scratch`
    /// after dequantising (scratch grows as needed).
    const float* read(int64_t n, kernels::FloatBuffer& scratch, int threads) const;
    /// Bytes holding the current rows: codes, scales and minimums, f32 tail.
    uint64_t bytes() const;
    bool quantized() const { return m_bits < 16; }
    /// Quantised in blocks of tokens (channel granularity): rows of the last block stay f32
    /// until it is full.
    bool channelBlocks() const { return m_bits < 16 && m_gran == KvGranularity::Channel; }

private:
    int m_bits = 16;
    KvGranularity m_gran = KvGranularity::Token;
    int64_t m_group = 1, m_width = 0, m_rowBytes = 0, m_groups = 0;
    int64_t m_rowWidth = 0, m_offset = 0; ///< the whole row and this stream's first channel
    int64_t m_group0 = 0;                 ///< first whole-row token group the slice touches
    int64_t m_rows = 0;                   ///< rows held
    int64_t m_qrows = 0;                  ///< rows stored as codes (channel: whole blocks)
    std::vector<uint8_t> m_codes;         ///< [m_qrows, m_rowBytes] bit-packed codes
    std::vector<float> m_scale, m_min;    ///< token: [row, group]; channel: [block, width]
    kernels::FloatBuffer m_f32; ///< bits 16: all rows; channel granularity: the tail block
    std::vector<float> m_sShift, m_sScale; ///< smoothing over the whole row (empty: none)
    std::vector<float> m_sRow;             ///< scratch: one smoothed row

    void quantizeTokenRow(const float* x, int64_t row);
    void quantizeBlock(const float* x, int64_t block);
};

} // namespace lcw::runtime
