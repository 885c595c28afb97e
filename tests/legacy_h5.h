#pragma once
// Files in the formats of lcw before the checksummed userblock (statistics schema 1, project
// version 1: no userblock, variable-length strings), written with plain libhdf5 as lcw wrote
// them then; for the tests of the converter (test_hostile_hdf5, test_gui_hostile_hdf5).
#include <H5Cpp.h>

#include <cstdint>
#include <string>

namespace lcwtest {

inline void vstr(H5::H5Object& o, const std::string& name, const std::string& v) {
    H5::StrType st(H5::PredType::C_S1, H5T_VARIABLE);
    o.createAttribute(name, st, H5::DataSpace(H5S_SCALAR)).write(st, v);
}
inline void i64(H5::H5Object& o, const std::string& name, int64_t v) {
    o.createAttribute(name, H5::PredType::NATIVE_INT64, H5::DataSpace(H5S_SCALAR))
        .write(H5::PredType::NATIVE_INT64, &v);
}
inline void bytes(H5::Group& g, const std::string& name, const std::string& s) {
    hsize_t d = s.size();
    H5::DataSet ds = g.createDataSet(name, H5::PredType::STD_U8LE, H5::DataSpace(1, &d));
    if (d) ds.write(s.data(), H5::PredType::NATIVE_UINT8);
}

inline void writeLegacyStats(const std::string& path) {
    H5::H5File f(path, H5F_ACC_TRUNC);
    vstr(f, "format", "lcw-stats");
    i64(f, "schema_version", 1);
    vstr(f, "lcw_version", "0.9");
    vstr(f, "created_utc", "2025-01-01T00:00:00Z");
    vstr(f, "model_path", "/models/legacy");
    vstr(f, "model_fingerprint", "sha256:1e9acy");
    vstr(f, "stats_key", "sha256:0ld");
    i64(f, "has_weights", 1);
    i64(f, "has_activations", 0);
    H5::Group m = f.createGroup("model");
    vstr(m, "arch", "llama");
    i64(m, "n_layers", 1);
    i64(m, "dim", 8);
    H5::Group o = f.createGroup("options");
    vstr(o, "previews", "w4g32a,w8cs");
    i64(o, "hist_bins", 16);
    H5::Group w = f.createGroup("weights");
    vstr(w, "order", "blk.0.ffn_up.weight\nblk.0.attn_q.weight\n");
    for (const char* n : {"blk.0.attn_q.weight", "blk.0.ffn_up.weight"}) {
        H5::Group g = w.createGroup(n);
        vstr(g, "name", n);
        vstr(g, "kind", "linear");
        vstr(g, "dtype", "f16");
        i64(g, "layer", 0);
        const double mean = 0.25;
        g.createAttribute("mean", H5::PredType::NATIVE_DOUBLE, H5::DataSpace(H5S_SCALAR))
            .write(H5::PredType::NATIVE_DOUBLE, &mean);
        hsize_t d = 3;
        const double h[3] = {1, 2, 3};
        g.createDataSet("hist", H5::PredType::IEEE_F64LE, H5::DataSpace(1, &d))
            .write(h, H5::PredType::NATIVE_DOUBLE);
    }
    H5::Group a = f.createGroup("activations");
    vstr(a, "order", "");
    H5::Group s = f.createGroup("summary");
    vstr(s, "json", R"({"legacy":true})");
    i64(f, "complete", 1);
}

inline void
writeLegacyProject(const std::string& path, const std::string& embeddedStats,
                   const std::string& modelPath = "/models/legacy",
                   const std::string& editorRecipe = R"({"lcw_recipe":1,"name":"old"})") {
    H5::H5File f(path, H5F_ACC_TRUNC);
    H5::Group root = f.openGroup("/");
    vstr(root, "format", "lcw-project");
    i64(root, "version", 1);
    vstr(root, "model_path", modelPath);
    vstr(root, "model_fingerprint", "sha256:1e9acy");
    vstr(root, "saved_utc", "2025-01-01T00:00:00Z");
    H5::Group st = root.createGroup("statistics");
    vstr(st, "name", "abcd-old.h5");
    bytes(st, "file", embeddedStats);
    H5::Group r = root.createGroup("recipes");
    i64(r, "count", 1);
    bytes(r, "0", editorRecipe);
    {
        H5::DataSet ds = r.openDataSet("0");
        vstr(ds, "name", "editor");
    }
    H5::Group res = root.createGroup("results");
    i64(res, "count", 0);
    bytes(root, "ui_state", R"({"target_bits":3.5})");
    i64(root, "complete", 1);
}

} // namespace lcwtest
