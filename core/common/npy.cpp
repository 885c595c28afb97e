#include "core/common/npy.h"

#include "core/common/checked.h"
#include "core/common/error.h"
#include "core/common/mapped_file.h"

#include <cstring>
#include <limits>

namespace lcw {

NpyArray readNpy(const std::string& path) {
    auto f = MappedFile::open(path);
    const auto* p = reinterpret_cast<const unsigned char*>(f->data());
    const uint64_t n = f->size();
    if (n < 10 || std::memcmp(p, "\x93NUMPY", 6) != 0) throw FormatError(path, "not a .npy file");
    const int major = p[6];
    uint64_t hlen = 0, hstart = 0;
    if (major == 1) {
        hlen = uint64_t(p[8]) | (uint64_t(p[9]) << 8);
        hstart = 10;
    } else if (major == 2 || major == 3) {
        if (n < 12) throw FormatError(path, "truncated .npy header");
        hlen = uint64_t(p[8]) | (uint64_t(p[9]) << 8) | (uint64_t(p[10]) << 16) |
               (uint64_t(p[11]) << 24);
        hstart = 12;
    } else {
        throw FormatError(path, "unsupported .npy version " + std::to_string(major));
    }
    if (!f->contains(hstart, hlen)) throw FormatError(path, "truncated .npy header");
    const std::string header(reinterpret_cast<const char*>(p + hstart), hlen);
    auto field = [&](const std::string& key) -> std::string {
        auto k = header.find("'" + key + "'");
        if (k == std::string::npos) throw FormatError(path, "npy header lacks " + key);
        auto colon = header.find(':', k);
        return header.substr(colon + 1);
    };
    std::string descr = field("descr");
    auto q1 = descr.find('\'');
    auto q2 = descr.find('\'', q1 + 1);
    descr = descr.substr(q1 + 1, q2 - q1 - 1);
    if (field("fortran_order").find("False") != 0 && field("fortran_order").find(" False") != 0)
        throw FormatError(path, "Fortran-order arrays are not supported");
    std::string shp = field("shape");
    shp = shp.substr(shp.find('(') + 1, shp.find(')') - shp.find('(') - 1);
    NpyArray a;
    size_t pos = 0;
    while (pos < shp.size()) {
        while (pos < shp.size() && (shp[pos] == ' ' || shp[pos] == ',')) ++pos;
        if (pos >= shp.size()) break;
        size_t end = pos;
        while (end < shp.size() && shp[end] >= '0' && shp[end] <= '9') ++end;
        if (end == pos) throw FormatError(path, "bad shape in npy header");
        if (end - pos > 18) // more than 10^18: no std::stoll out_of_range, a named error
            throw FormatError(path, "npy header shape dimension " + shp.substr(pos, end - pos) +
                                        " is too large");
        a.shape.push_back(std::stoll(shp.substr(pos, end - pos)));
        pos = end;
    }
    const uint64_t count = uint64_t(checked::numel(a.shape, path, "npy header shape"));
    int esize = 0;
    if (descr == "<f4" || descr == "<i4")
        esize = 4;
    else if (descr == "<f8" || descr == "<i8")
        esize = 8;
    else
        throw FormatError(path, "unsupported npy dtype " + descr);
    const uint64_t dstart = hstart + hlen;
    if (count > n / uint64_t(esize) || !f->contains(dstart, count * uint64_t(esize)))
        throw FormatError(path, "npy data shorter than its shape says");
    a.data.resize(count);
    const unsigned char* d = p + dstart;
    for (uint64_t i = 0; i < count; ++i) {
        if (descr == "<f4") {
            float v;
            std::memcpy(&v, d + i * 4, 4);
            a.data[i] = v;
        } else if (descr == "<f8") {
            double v;
            std::memcpy(&v, d + i * 8, 8);
            a.data[i] = float(v);
        } else if (descr == "<i4") {
            int32_t v;
            std::memcpy(&v, d + i * 4, 4);
            a.data[i] = float(v);
        } else {
            int64_t v;
            std::memcpy(&v, d + i * 8, 8);
            a.data[i] = float(v);
        }
    }
    return a;
}

void writeNpyF32(const std::string& path, const std::vector<int64_t>& shape, const float* data) {
    std::string h = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
    uint64_t count = 1;
    for (size_t i = 0; i < shape.size(); ++i) {
        h += std::to_string(shape[i]);
        if (shape.size() == 1 || i + 1 < shape.size()) h += ",";
        if (i + 1 < shape.size()) h += " ";
        count *= uint64_t(shape[i]);
    }
    h += "), }";
    while ((10 + h.size() + 1) % 64 != 0) h += ' ';
    h += '\n';
    std::string out = "\x93NUMPY";
    out += char(1);
    out += char(0);
    out += char(h.size() & 0xff);
    out += char((h.size() >> 8) & 0xff);
    out += h;
    out.append(reinterpret_cast<const char*>(data), count * 4);
    writeFileAtomic(path, out);
}

} // namespace lcw
