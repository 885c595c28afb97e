// llama.cpp reference timings on a GPU: the prebuilt Vulkan build of llama.cpp that the npm
// package @node-llama-cpp/linux-x64-vulkan ships (libllama + libggml-vulkan), driven through
// llama.h directly (no node.js, so it runs on a bare GPU machine). Compiled against the llama.h
// of the same release (node-llama-cpp's llama/gitRelease.bundle), see bench/gpu/prepare.sh.
// Measured the way bench/bench_runtime.cpp measures lcw: W untimed warm-up decode steps, then per
// repetition the synthetic prompt ids ((i*7919+13) % vocab) in one prefill of P tokens and N
// single-token greedy decode steps starting from the prompt's last id; "value" is the median.
// With --ppl TEXT: llama-perplexity's method (BOS + the text tokenised with the model's
// vocabulary, chunks of --ctx tokens, each chunk's first token replaced by BOS, the second half
// of each chunk scored), its wall time from the first chunk to the last score.
//   llama_gpu_bench MODEL.gguf [--ngl 999] [--prefill 512] [--decode 128] [--reps 3]
//                   [--warmup 1] [--ppl TEXT --ctx 512 [--chunks N]]
// JSON lines on stdout, in bench_runtime's shape plus "engine".
#include "ggml-backend.h"
#include "llama.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmpd(const void* a, const void* b) {
    const double x = *(const double*)a, y = *(const double*)b;
    return x < y ? -1 : x > y;
}

static double median(double* v, int n) {
    qsort(v, (size_t)n, sizeof(double), cmpd);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void quiet_log(enum ggml_log_level level, const char* text, void* user) {
    (void)user;
    // warnings, and the Vulkan backend's device line (name, fp16, matrix cores)
    if (level >= GGML_LOG_LEVEL_WARN || strstr(text, "ggml_vulkan: ")) fputs(text, stderr);
}

static char* read_file(const char* path, long* len) {
    FILE* f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char* buf = (char*)malloc((size_t)*len + 1);
    if (buf && fread(buf, 1, (size_t)*len, f) != (size_t)*len) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) buf[*len] = 0;
    return buf;
}

static int decode_tokens(struct llama_context* ctx, struct llama_batch* b, const llama_token* ids,
                         int n, int pos0, int all_logits) {
    b->n_tokens = n;
    for (int i = 0; i < n; ++i) {
        b->token[i] = ids[i];
        b->pos[i] = pos0 + i;
        b->n_seq_id[i] = 1;
        b->seq_id[i][0] = 0;
        b->logits[i] = (int8_t)(all_logits || i == n - 1);
    }
    return llama_decode(ctx, *b);
}

static int argmax(const float* v, int n) {
    int best = 0;
    for (int i = 1; i < n; ++i)
        if (v[i] > v[best]) best = i;
    return best;
}

struct opts {
    const char* path;
    const char* ppl_text;
    int ngl, prefill, ndecode, reps, warmup, pctx, chunks;
};

// The command line; 0 on a malformed one.
static int parse_opts(int argc, char** argv, struct opts* o) {
    if (argc < 2 || argv[1][0] == '-') return 0;
    *o = (struct opts){argv[1], NULL, 999, 512, 128, 3, 1, 512, 0};
    for (int i = 2; i + 1 < argc; i += 2) {
        const char* k = argv[i];
        const char* v = argv[i + 1];
        if (!strcmp(k, "--ppl"))
            o->ppl_text = v;
        else if (!strcmp(k, "--ngl"))
            o->ngl = atoi(v);
        else if (!strcmp(k, "--prefill"))
            o->prefill = atoi(v);
        else if (!strcmp(k, "--decode"))
            o->ndecode = atoi(v);
        else if (!strcmp(k, "--reps"))
            o->reps = atoi(v);
        else if (!strcmp(k, "--warmup"))
            o->warmup = atoi(v);
        else if (!strcmp(k, "--ctx"))
            o->pctx = atoi(v);
        else if (!strcmp(k, "--chunks"))
            o->chunks = atoi(v);
        else {
            fprintf(stderr, "unknown option %s\n", k);
            return 0;
        }
    }
    return o->reps >= 1 && o->reps <= 64 && o->prefill >= 1 && o->ndecode >= 1 && o->pctx >= 4;
}

// One JSON line of per-repetition rates (median, best, runs; decode adds the greedy ids).
static void print_rates(const char* metric, double* v, int reps, int tokens, const llama_token* ids,
                        const char* base) {
    printf("{\"metric\":\"%s\",\"runs\":[", metric);
    double best = 0;
    for (int r = 0; r < reps; ++r) {
        printf("%s%.3f", r ? "," : "", v[r]);
        if (v[r] > best) best = v[r];
    }
    printf("],\"value\":%.3f,\"best\":%.3f,\"tokens\":%d", median(v, reps), best, tokens);
    if (ids) {
        printf(",\"ids\":[");
        for (int i = 0; i < tokens; ++i) printf("%s%d", i ? "," : "", ids[i]);
        printf("]");
    }
    printf(",%s}\n", base);
    fflush(stdout);
}

// W warm-up steps, then per repetition one prefill of the synthetic prompt and N greedy decode
// steps; prints both rate lines. Non-zero when llama_decode fails.
static int run_speed(struct llama_context* ctx, struct llama_batch* b, int nv, const struct opts* o,
                     const char* base) {
    llama_memory_t mem = llama_get_memory(ctx);
    llama_token* prompt = (llama_token*)malloc(sizeof(llama_token) * (size_t)o->prefill);
    llama_token* ids = (llama_token*)malloc(sizeof(llama_token) * (size_t)o->ndecode);
    int rc = 0;
    for (int i = 0; i < o->prefill; ++i) prompt[i] = (llama_token)(((long long)i * 7919 + 13) % nv);
    for (int i = 0; i < o->warmup && i < o->prefill && !rc; ++i)
        rc = decode_tokens(ctx, b, &prompt[i], 1, i, 0);
    llama_synchronize(ctx);
    double pp[64], tg[64];
    for (int r = 0; r < o->reps && !rc; ++r) {
        llama_memory_clear(mem, true);
        double a = now();
        if ((rc = decode_tokens(ctx, b, prompt, o->prefill, 0, 0))) break;
        (void)llama_get_logits_ith(ctx, -1); // waits for the result, as lcw's forward returns it
        pp[r] = o->prefill / (now() - a);
        a = now();
        llama_token tok = prompt[o->prefill - 1];
        for (int i = 0; i < o->ndecode && !rc; ++i) {
            rc = decode_tokens(ctx, b, &tok, 1, o->prefill + i, 0);
            tok = argmax(llama_get_logits_ith(ctx, -1), nv);
            ids[i] = tok;
        }
        tg[r] = o->ndecode / (now() - a);
    }
    if (!rc) {
        print_rates("prefill_tokens_per_second", pp, o->reps, o->prefill, NULL, base);
        print_rates("decode_tokens_per_second", tg, o->reps, o->ndecode, ids, base);
    }
    free(prompt);
    free(ids);
    return rc;
}

// Mean negative log-likelihood of the second half of one chunk (logits of every position).
static double chunk_nll(const float* logits, const llama_token* toks, int pctx, int nv) {
    double cn = 0;
#pragma omp parallel for reduction(+ : cn) schedule(static)
    for (int j = pctx / 2; j < pctx - 1; ++j) {
        const float* row = logits + (size_t)j * (size_t)nv;
        float mx = row[0];
        for (int t = 1; t < nv; ++t) mx = row[t] > mx ? row[t] : mx;
        double sum = 0;
        for (int t = 0; t < nv; ++t) sum += exp((double)(row[t] - mx));
        cn += -((double)(row[toks[j + 1]] - mx) - log(sum));
    }
    return cn;
}

// llama-perplexity's method over the text file; prints the perplexity line. Non-zero on error.
static int run_perplexity(struct llama_context* ctx, struct llama_batch* b,
                          const struct llama_vocab* vocab, int nv, const struct opts* o,
                          const char* base) {
    long len = 0;
    char* text = read_file(o->ppl_text, &len);
    if (!text) {
        fprintf(stderr, "%s: cannot read\n", o->ppl_text);
        return 1;
    }
    const double ta = now();
    const int cap = (int)len + 16;
    llama_token* toks = (llama_token*)malloc(sizeof(llama_token) * (size_t)cap);
    const int nt = llama_tokenize(vocab, text, (int32_t)len, toks, cap, true, false);
    const double tok_s = now() - ta;
    int rc = nt < 0;
    if (rc) fprintf(stderr, "%s: tokenisation failed\n", o->ppl_text);
    const int pctx = o->pctx;
    int nchunk = rc ? 0 : nt / pctx;
    if (o->chunks > 0 && o->chunks < nchunk) nchunk = o->chunks;
    const llama_token bos = llama_vocab_bos(vocab);
    double nll = 0;
    long scored = 0;
    const double t1 = now();
    for (int c = 0; c < nchunk && !rc; ++c) {
        llama_memory_clear(llama_get_memory(ctx), true);
        llama_token* chunk = toks + (size_t)c * (size_t)pctx;
        const llama_token keep = chunk[0];
        if (bos >= 0) chunk[0] = bos;
        rc = decode_tokens(ctx, b, chunk, pctx, 0, 1);
        chunk[0] = keep;
        if (rc) break;
        nll += chunk_nll(llama_get_logits(ctx), chunk, pctx, nv);
        scored += pctx - 1 - pctx / 2;
    }
    const double ppl_s = now() - t1;
    if (!rc) {
        printf(
            "{\"metric\":\"perplexity\",\"value\":%.6f,\"seconds\":%.4f,\"tokenize_seconds\":%.4f,"
            "\"text_tokens\":%d,\"chunks\":%d,\"ctx\":%d,\"scored\":%ld,\"tokens_per_second\":%.3f,"
            "%s}\n",
            exp(scored ? nll / (double)scored : 0), ppl_s, tok_s, nt, nchunk, pctx, scored,
            (double)nchunk * pctx / ppl_s, base);
        fflush(stdout);
    }
    free(toks);
    free(text);
    return rc;
}

int main(int argc, char** argv) {
    struct opts o;
    if (!parse_opts(argc, argv, &o)) {
        fprintf(stderr,
                "usage: %s MODEL.gguf [--ngl N] [--prefill N] [--decode N] [--reps R] "
                "[--warmup W] [--ppl TEXT --ctx N [--chunks N]]\n",
                argv[0]);
        return 2;
    }
    llama_log_set(quiet_log, NULL);
    // The prebuilt package loads its backends (Vulkan, the CPU variants) as plug-ins from its
    // folder: LLAMA_BINS names it (bench/gpu/prepare.sh sets it).
    const char* bins = getenv("LLAMA_BINS");
    if (bins && *bins)
        ggml_backend_load_all_from_path(bins);
    else
        ggml_backend_load_all();
    llama_backend_init();

    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = o.ngl;
    const double t0 = now();
    struct llama_model* model = llama_model_load_from_file(o.path, mp);
    if (!model) {
        fprintf(stderr, "%s: llama.cpp could not load the model\n", o.path);
        return 1;
    }
    const double load_s = now() - t0;
    const struct llama_vocab* vocab = llama_model_get_vocab(model);
    const int nv = llama_vocab_n_tokens(vocab);
    char desc[256];
    llama_model_desc(model, desc, sizeof desc);
    char base[1024];
    snprintf(base, sizeof base,
             "\"engine\":\"llama.cpp\",\"llama_cpp\":\"node-llama-cpp linux-x64-vulkan prebuilt\","
             "\"model\":\"%s\",\"desc\":\"%s\",\"parameters\":%llu,\"stored_bytes\":%llu,"
             "\"n_gpu_layers\":%d",
             o.path, desc, (unsigned long long)llama_model_n_params(model),
             (unsigned long long)llama_model_size(model), o.ngl);
    printf("{\"metric\":\"load_seconds\",\"value\":%.4f,%s}\n", load_s, base);
    fflush(stdout);

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)(o.prefill + o.ndecode + 8 > o.pctx ? o.prefill + o.ndecode + 8 : o.pctx);
    cp.n_batch = cp.n_ubatch = (uint32_t)(o.prefill > o.pctx ? o.prefill : o.pctx);
    cp.no_perf = true;
    struct llama_context* ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "%s: llama.cpp could not create a context\n", o.path);
        return 1;
    }
    struct llama_batch b = llama_batch_init((int32_t)cp.n_batch, 0, 1);
    int rc = run_speed(ctx, &b, nv, &o, base);
    if (!rc && o.ppl_text) rc = run_perplexity(ctx, &b, vocab, nv, &o, base);
    llama_batch_free(b);
    llama_free(ctx);
    llama_model_free(model);
    return rc ? 1 : 0;
}
