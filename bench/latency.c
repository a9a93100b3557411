/*
 * zbert_latency -- the engine's latency for one short text, measured inside
 * the process (start-up and model mapping excluded).
 *
 *   zbert_latency --model PATH [--threads N] [--runs N] < text
 *
 * Reads one text (the first line of stdin), runs it alone through
 * zb_embedder_run at sentence level ([CLS] row) 5 times untimed, then N
 * times (default 50) timing each call, and prints one JSON object on
 * stdout: {"runs", "tokens", "min_ms", "median_ms", "p90_ms"}.
 *
 * Single-threaded driver; the embedder runs its own OpenMP threads.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "embed.h"
#include "model.h"

#define S_WARMUP 5
#define S_RUNS_MAX 100000

static double s_now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return 1e3 * (double)t.tv_sec + 1e-6 * (double)t.tv_nsec;
}

static int s_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int s_parse_int(const char *v, int lo, int hi, int *out) {
    char *end = NULL;
    long x = strtol(v, &end, 10);
    if (end == v || *end != '\0' || x < lo || x > hi) return -1;
    *out = (int)x;
    return 0;
}

int main(int argc, char **argv) {
    const char *path = NULL;
    int threads = 2, runs = 50;
    for (int i = 1; i < argc; i++) {
        bool ok = i + 1 < argc;
        if (ok && !strcmp(argv[i], "--model")) {
            path = argv[++i];
        } else if (ok && !strcmp(argv[i], "--threads")) {
            ok = s_parse_int(argv[++i], 1, 256, &threads) == 0;
        } else if (ok && !strcmp(argv[i], "--runs")) {
            ok = s_parse_int(argv[++i], 1, S_RUNS_MAX, &runs) == 0;
        } else {
            ok = false;
        }
        if (!ok) {
            path = NULL;
            break;
        }
    }
    if (path == NULL) {
        fprintf(stderr, "usage: zbert_latency --model PATH [--threads N] [--runs N] < text\n");
        return 2;
    }

    static char text[65536];
    if (fgets(text, sizeof text, stdin) == NULL) {
        fprintf(stderr, "zbert_latency: no text on stdin\n");
        return 2;
    }
    size_t len = strcspn(text, "\r\n");
    text[len] = '\0';

    int status = 1;
    zb_diag_t d = {{0}};
    zb_model_t *model = NULL;
    zb_embedder_t *emb = NULL;
    zb_result_t res = {0};
    double *ms = calloc((size_t)runs, sizeof *ms);
    if (ms == NULL) {
        fprintf(stderr, "zbert_latency: out of memory\n");
        goto out;
    }
    int rc = zb_model_open(path, &model, &d);
    if (rc != 0) {
        fprintf(stderr, "zbert_latency: %s: %s\n", path, zb_diag_text(&d, rc));
        goto out;
    }
    zb_embedder_config_t cfg = {.threads = threads};
    rc = zb_embedder_new(model, &cfg, &emb, &d);
    if (rc != 0) {
        fprintf(stderr, "zbert_latency: %s\n", zb_diag_text(&d, rc));
        goto out;
    }
    zb_embed_options_t opt = {.level = ZB_LEVEL_SENTENCE, .pooling = ZB_POOL_CLS};
    const char *texts[1] = {text};
    for (int i = 0; i < S_WARMUP + runs; i++) {
        double t0 = s_now_ms();
        rc = zb_embedder_run(emb, texts, &len, 1, &opt, &res);
        if (rc == 0 && res.status != 0) rc = res.status;
        if (rc != 0) {
            fprintf(stderr, "zbert_latency: %s\n", zb_strerror(rc));
            goto out;
        }
        if (i >= S_WARMUP) ms[i - S_WARMUP] = s_now_ms() - t0;
    }
    qsort(ms, (size_t)runs, sizeof *ms, s_cmp_double);
    int p90 = (int)((double)runs * 0.9);
    if (p90 > runs - 1) p90 = runs - 1;
    printf("{\"runs\":%d,\"tokens\":%u,\"min_ms\":%.3f,\"median_ms\":%.3f,\"p90_ms\":%.3f}\n",
           runs, (unsigned)res.pieces.n, ms[0], ms[runs / 2], ms[p90]);
    status = 0;
out:
    zb_result_free(&res);
    zb_embedder_destroy(&emb);
    zb_model_close(&model);
    free(ms);
    return status;
}
