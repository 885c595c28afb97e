#pragma once
/// \file
/// Small HDF5 helpers shared by the files lcw writes (statistics store, project file): scalar
/// attributes and an atomic whole-file write. Header-only, so any module linking HDF5 can use it.
#include "core/common/error.h"

#include <H5Cpp.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <mutex>
#include <string>

namespace lcw::h5 {

inline void putStr(H5::H5Object& o, const std::string& name, const std::string& v) {
    H5::StrType st(H5::PredType::C_S1, H5T_VARIABLE);
    H5::Attribute a = o.createAttribute(name, st, H5::DataSpace(H5S_SCALAR));
    a.write(st, v);
}
inline void putInt(H5::H5Object& o, const std::string& name, int64_t v) {
    H5::Attribute a =
        o.createAttribute(name, H5::PredType::NATIVE_INT64, H5::DataSpace(H5S_SCALAR));
    a.write(H5::PredType::NATIVE_INT64, &v);
}
inline void putDouble(H5::H5Object& o, const std::string& name, double v) {
    H5::Attribute a =
        o.createAttribute(name, H5::PredType::NATIVE_DOUBLE, H5::DataSpace(H5S_SCALAR));
    a.write(H5::PredType::NATIVE_DOUBLE, &v);
}

/// Held around every HDF5 file operation of the core (writes here, StatsStore reads, project
/// reads): the workbench reads and writes statistics and projects from several threads, and
/// HDF5's C++ layer is not documented as safe for concurrent use even where the C library is
/// built thread-safe.
inline std::mutex& fileMutex() {
    static std::mutex m;
    return m;
}

/// Writes `path` atomically: `fill(file)` writes a temporary HDF5 file beside it, which is then
/// fsynced and renamed over `path`. On any failure the temporary file is removed and `path` is
/// left as it was; HDF5 errors become Error("PATH: cannot write WHAT (HDF5: ...)").
template <class Fill>
void writeFileAtomically(const std::string& path, const char* what, Fill&& fill) {
    const std::lock_guard<std::mutex> lock(fileMutex());
    H5::Exception::dontPrint();
    const std::string tmp = path + ".tmp." + std::to_string(::getpid());
    try {
        {
            H5::H5File f(tmp, H5F_ACC_TRUNC);
            fill(f);
            f.close();
        }
        const int fd = ::open(tmp.c_str(), O_RDONLY);
        if (fd >= 0) {
            ::fsync(fd);
            ::close(fd);
        }
        std::error_code ec;
        std::filesystem::rename(tmp, path, ec);
        if (ec) throw Error(path + ": cannot rename temporary file into place: " + ec.message());
    } catch (const H5::Exception& e) {
        std::error_code ec;
        std::filesystem::remove(tmp, ec);
        throw Error(path + ": cannot write " + what + " (HDF5: " + e.getDetailMsg() + ")");
    } catch (...) {
        std::error_code ec;
        std::filesystem::remove(tmp, ec);
        throw;
    }
}

} // namespace lcw::h5
