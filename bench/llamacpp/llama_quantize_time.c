// Times llama.cpp's own quantisation (llama_model_quantize, the function llama-quantize calls)
// from the libllama shared library that node-llama-cpp's prebuilt CPU package ships, so that
// lcw's GGUF export can be compared with llama-quantize on the same file and thread count
// without a llama.cpp checkout. Only the two leading, long-stable fields of
// llama_model_quantize_params (nthread, ftype) are set; the rest keep llama.cpp's defaults.
//   llama_quantize_time LIBLLAMA.so IN.gguf OUT.gguf FTYPE_ID THREADS
// Prints one JSON line: {"engine":"llama.cpp","metric":"quantize_seconds",...}.
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    int32_t nthread;
    int32_t ftype;
    unsigned char rest[1024]; // the remaining fields, whatever this llama.cpp version has
} params_t;

int main(int argc, char** argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s LIBLLAMA.so IN.gguf OUT.gguf FTYPE_ID THREADS\n", argv[0]);
        return 2;
    }
    void* lib = dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL);
    if (!lib) {
        fprintf(stderr, "error: %s\n", dlerror());
        return 1;
    }
    void (*backend_init)(void) = (void (*)(void))dlsym(lib, "llama_backend_init");
    params_t (*defaults)(void) = (params_t(*)(void))dlsym(lib, "llama_model_quantize_default_params");
    uint32_t (*quantize)(const char*, const char*, const params_t*) =
        (uint32_t(*)(const char*, const char*, const params_t*))dlsym(lib, "llama_model_quantize");
    if (!defaults || !quantize) {
        fprintf(stderr, "error: %s lacks llama_model_quantize\n", argv[1]);
        return 1;
    }
    if (backend_init) backend_init();
    params_t p = defaults();
    p.ftype = atoi(argv[4]);
    p.nthread = atoi(argv[5]);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    const uint32_t rc = quantize(argv[2], argv[3], &p);
    clock_gettime(CLOCK_MONOTONIC, &b);
    const double s = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    printf("{\"engine\":\"llama.cpp\",\"metric\":\"quantize_seconds\",\"value\":%.3f,"
           "\"ftype\":%s,\"threads\":%s,\"input\":\"%s\",\"status\":%u}\n",
           s, argv[4], argv[5], argv[2], rc);
    return rc == 0 ? 0 : 1;
}
