#pragma once
/// \file
/// Internal to core/compress: runs small problems on one thread. Calibrated compression of a
/// small model is thousands of tiny products and forwards; with OpenMP threads each of them pays
/// a barrier, and on a loaded machine a waiting thread can lose its core for a whole time slice.
#include <omp.h>

namespace lcw::compress {

class SingleThreadIf {
public:
    explicit SingleThreadIf(bool small) : m_prev(omp_get_max_threads()), m_set(small) {
        if (m_set) omp_set_num_threads(1);
    }
    ~SingleThreadIf() {
        if (m_set) omp_set_num_threads(m_prev);
    }
    SingleThreadIf(const SingleThreadIf&) = delete;
    SingleThreadIf& operator=(const SingleThreadIf&) = delete;

private:
    int m_prev;
    bool m_set;
};

} // namespace lcw::compress
