#pragma once
/// \file
/// Small HDF5 helpers shared by the files lcw writes (statistics store, project file): scalar
/// attributes, byte datasets and an atomic whole-file write. Header-only, so any module linking
/// HDF5 can use it. lcw's schemas hold no variable-length types (libhdf5's crashes on damaged
/// files sit in their conversion paths): strings are fixed-length attributes or byte datasets,
/// and files carry the checksummed userblock of core/common/h5_guard.h.
#include "core/common/error.h"
#include "core/common/h5_guard.h"
#include "core/common/temp_files.h"

#include <H5Cpp.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

namespace lcw::h5 {

/// A fixed-length string attribute (NUL-padded; an empty string is one NUL byte). Texts that
/// can grow beyond a few KB go into byte datasets (putBytes) instead: attributes are limited to
/// 64 KiB.
inline void putStr(H5::H5Object& o, const std::string& name, const std::string& v) {
    std::string buf = v.empty() ? std::string(1, '\0') : v;
    H5::StrType st(H5::PredType::C_S1, buf.size());
    st.setStrpad(H5T_STR_NULLPAD);
    H5::Attribute a = o.createAttribute(name, st, H5::DataSpace(H5S_SCALAR));
    a.write(st, buf.data());
}
/// Reads a scalar string attribute in its own (fixed-length) type, without conversion; trailing
/// NULs are dropped. A variable-length string is refused unless `allowVlen` (only the legacy
/// reader, which runs in the converter child process, passes true).
inline std::string readStr(const H5::Attribute& a, bool allowVlen) {
    H5::StrType st = a.getStrType();
    if (st.isVariableStr()) {
        if (!allowVlen)
            throw H5::DataTypeIException("readStr", "attribute '" + a.getName() +
                                                        "' is a variable-length string (lcw "
                                                        "files hold fixed-length strings only)");
        std::string v;
        a.read(st, v);
        return v;
    }
    if (a.getSpace().getSimpleExtentNpoints() != 1)
        throw H5::DataTypeIException("readStr",
                                     "attribute '" + a.getName() + "' is not a single string");
    std::string v(st.getSize(), '\0');
    if (!v.empty()) a.read(st, v.data());
    const size_t end = v.find('\0');
    if (end != std::string::npos) v.resize(end);
    return v;
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

/// A byte string as a 1-D uint8 dataset (JSON texts, name lists: no size limit).
inline void putBytes(H5::Group& g, const std::string& name, const void* data, size_t n) {
    hsize_t d = n;
    H5::DataSpace sp(1, &d);
    H5::DSetCreatPropList pl;
    if (n >= 4096) {
        hsize_t ch = std::min<hsize_t>(d, 1 << 20);
        pl.setChunk(1, &ch);
    }
    H5::DataSet ds = g.createDataSet(name, H5::PredType::STD_U8LE, sp, pl);
    if (n) ds.write(data, H5::PredType::NATIVE_UINT8);
}
inline void putBytes(H5::Group& g, const std::string& name, const std::string& s) {
    putBytes(g, name, s.data(), s.size());
}
/// Reads a dataset written by putBytes (1-D, 8-bit integers).
inline std::vector<uint8_t> getBytes(const H5::Group& g, const std::string& name) {
    H5::DataSet ds = g.openDataSet(name);
    H5::DataSpace sp = ds.getSpace();
    if (sp.getSimpleExtentNdims() != 1 || ds.getTypeClass() != H5T_INTEGER ||
        ds.getIntType().getSize() != 1)
        throw H5::DataSetIException("getBytes", "'" + name + "' is not a 1-D byte array");
    hsize_t d = 0;
    sp.getSimpleExtentDims(&d);
    std::vector<uint8_t> v(static_cast<size_t>(d));
    if (d) ds.read(v.data(), H5::PredType::NATIVE_UINT8);
    return v;
}
inline std::string getBytesAsString(const H5::Group& g, const std::string& name) {
    const std::vector<uint8_t> b = getBytes(g, name);
    return std::string(b.begin(), b.end());
}

/// Held around every HDF5 file operation of the core (writes here, StatsStore reads, project
/// reads): the workbench reads and writes statistics and projects from several threads, and
/// HDF5's C++ layer is not documented as safe for concurrent use even where the C library is
/// built thread-safe.
inline std::mutex& fileMutex() {
    static std::mutex m;
    return m;
}

/// Writes `path` atomically: `fill(file)` writes a temporary HDF5 file beside it (created with
/// lcw's userblock), which is then sealed (h5::seal: kind, schema version, SHA-256), fsynced and
/// renamed over `path`. On any failure the temporary file is removed and `path` is left as it
/// was; HDF5 errors become Error("PATH: cannot write WHAT (HDF5: ...)").
template <class Fill>
void writeFileAtomically(const std::string& path, const char* what, Kind kind, int schemaVersion,
                         Fill&& fill) {
    const std::lock_guard<std::mutex> lock(fileMutex());
    H5::Exception::dontPrint();
    const std::string tmp = createTempPathFor(path); // lcw's scheme; removes stale ones
    try {
        {
            H5::FileCreatPropList fcpl;
            fcpl.setUserblock(kUserblockSize);
            H5::H5File f(tmp, H5F_ACC_TRUNC, fcpl);
            fill(f);
            f.close();
        }
        seal(tmp, kind, schemaVersion);
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
