/*
 * zbert_latency -- the latency of one short text: in the engine (inside the
 * process, start-up and model mapping excluded), or end to end through a
 * running service.
 *
 *   zbert_latency --model PATH [--threads N] [--runs N] < text
 *   zbert_latency --broker ENDPOINT [--runs N] < text
 *
 * Reads one text (the first line of stdin), embeds it alone at sentence
 * level ([CLS] row) 5 times untimed, then N times (default 50) timing each
 * call, and prints one JSON object on stdout: {"runs", "tokens", "min_ms",
 * "median_ms", "p90_ms"}.  With --model each call is zb_embed_run; with
 * --broker it is libzbert's blocking zbert_embed (client -> broker ->
 * worker -> broker -> client, ZeroMQ over the endpoint), and "tokens" is the
 * broker's count.
 *
 * Single-threaded driver; the embedder runs its own OpenMP threads.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "embed.h"
#include "model.h"
#include "zbert.h"

#define S_WARMUP   5
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

/* Prints the JSON line from runs sorted timings. */
static void s_report(double *ms, int runs, unsigned tokens) {
    qsort(ms, (size_t)runs, sizeof *ms, s_cmp_double);
    int p90 = (int)((double)runs * 0.9);
    if (p90 > runs - 1) p90 = runs - 1;
    printf("{\"runs\":%d,\"tokens\":%u,\"min_ms\":%.3f,\"median_ms\":%.3f,\"p90_ms\":%.3f}\n", runs,
           tokens, ms[0], ms[runs / 2], ms[p90]);
}

/* The service: one blocking call per text, each a request of its own. */
static int s_service(const char *endpoint, const char *text, size_t len, int runs, double *ms) {
    const char *brokers[1] = {endpoint};
    zbert_config_t cfg = {.brokers = brokers, .n_brokers = 1};
    zbert_client_t *c = NULL;
    zbert_diag_t d = {{0}};
    zbert_result_t *res = NULL;
    int status = 1;
    int rc = zbert_client_new(&cfg, &c, &d);
    if (rc != 0) {
        fprintf(stderr, "zbert_latency: %s: %s\n", endpoint, d.msg);
        return 1;
    }
    const zbert_options_t opt = {
        .level = ZBERT_LEVEL_SENTENCE, .pooling = ZBERT_POOLING_CLS, .deadline_ms = 60000};
    const char *texts[1] = {text};
    unsigned tokens = 0;
    for (int i = 0; i < S_WARMUP + runs; i++) {
        double t0 = s_now_ms();
        rc = zbert_embed(c, texts, &len, 1, &opt, &res, &d);
        zbert_text_t t;
        if (rc == 0 && (zbert_result_text(res, 0, &t) != 0 || t.status != 0))
            rc = t.status ? t.status : ZBERT_EPROTO;
        if (rc != 0) {
            fprintf(stderr, "zbert_latency: %s: %s\n", zbert_strerror(rc), d.msg);
            goto out;
        }
        zbert_result_destroy(&res);
        if (i >= S_WARMUP) ms[i - S_WARMUP] = s_now_ms() - t0;
    }
    /* the tokens, as the broker counts them */
    zbert_status_t *st = NULL;
    if (zbert_status(c, 5000, &st, &d) == 0) {
        uint64_t all = 0;
        for (size_t w = 0; w < st->n_workers; w++) all += st->workers[w].tokens;
        tokens = (unsigned)(all / (uint64_t)(S_WARMUP + runs));
        zbert_status_destroy(&st);
    }
    s_report(ms, runs, tokens);
    status = 0;
out:
    zbert_result_destroy(&res);
    zbert_client_destroy(&c);
    return status;
}

int main(int argc, char **argv) {
    const char *path = NULL, *broker = NULL;
    int threads = 2, runs = 50;
    for (int i = 1; i < argc; i++) {
        bool ok = i + 1 < argc;
        if (ok && !strcmp(argv[i], "--model")) {
            path = argv[++i];
        } else if (ok && !strcmp(argv[i], "--broker")) {
            broker = argv[++i];
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
    if ((path == NULL) == (broker == NULL)) {
        fprintf(stderr, "usage: zbert_latency --model PATH [--threads N] [--runs N] < text\n"
                        "       zbert_latency --broker ENDPOINT [--runs N] < text\n");
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
    zb_embed_t *emb = NULL;
    zb_embed_result_t res = {0};
    double *ms = calloc((size_t)runs, sizeof *ms);
    if (ms == NULL) {
        fprintf(stderr, "zbert_latency: out of memory\n");
        goto out;
    }
    if (broker != NULL) {
        status = s_service(broker, text, len, runs, ms);
        goto out;
    }
    int rc = zb_model_open(path, &model, &d);
    if (rc != 0) {
        fprintf(stderr, "zbert_latency: %s: %s\n", path, zb_diag_text(&d, rc));
        goto out;
    }
    zb_embed_config_t cfg = {.threads = threads};
    rc = zb_embed_new(model, &cfg, &emb, &d);
    if (rc != 0) {
        fprintf(stderr, "zbert_latency: %s\n", zb_diag_text(&d, rc));
        goto out;
    }
    zb_options_t opt = {.level = ZB_LEVEL_SENTENCE, .pooling = ZB_POOLING_CLS};
    const char *texts[1] = {text};
    for (int i = 0; i < S_WARMUP + runs; i++) {
        double t0 = s_now_ms();
        rc = zb_embed_run(emb, texts, &len, 1, &opt, &res);
        if (rc == 0 && res.status != 0) rc = res.status;
        if (rc != 0) {
            fprintf(stderr, "zbert_latency: %s\n", zb_strerror(rc));
            goto out;
        }
        if (i >= S_WARMUP) ms[i - S_WARMUP] = s_now_ms() - t0;
    }
    s_report(ms, runs, (unsigned)res.pieces.n);
    status = 0;
out:
    zb_embed_result_free(&res);
    zb_embed_destroy(&emb);
    zb_model_close(&model);
    free(ms);
    return status;
}
