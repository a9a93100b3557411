/*
 * stats.c -- bucketed rates and a ring of latencies.
 */
#include "stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define S_BUCKETS (ZB_STATS_WINDOW_MS / ZB_STATS_BUCKET_MS)

typedef struct s_bucket {
    uint64_t slot; /* now_ms / ZB_STATS_BUCKET_MS of the work it holds */
    uint64_t texts, tokens;
} s_bucket_t;

struct zb_stats {
    uint64_t start_ms;
    s_bucket_t buckets[S_BUCKETS];
    double latency[ZB_STATS_LATENCY_SAMPLES]; /* ring */
    size_t n_latency, next_latency;
};

int zb_stats_new(uint64_t now_ms, zb_stats_t **out) {
    zb_stats_t *s = calloc(1, sizeof *s);
    *out = s;
    if (s == NULL) return ZB_ENOMEM;
    s->start_ms = now_ms;
    /* Slot 0 would read as "the first 100 ms": mark buckets unused. */
    for (size_t i = 0; i < S_BUCKETS; i++) s->buckets[i].slot = UINT64_MAX;
    return 0;
}

void zb_stats_destroy(zb_stats_t **s) {
    if (s == NULL) return;
    free(*s);
    *s = NULL;
}

void zb_stats_add_work(zb_stats_t *s, uint64_t now_ms, uint64_t texts, uint64_t tokens) {
    uint64_t slot = now_ms / ZB_STATS_BUCKET_MS;
    s_bucket_t *b = &s->buckets[slot % S_BUCKETS];
    if (b->slot != slot) *b = (s_bucket_t){.slot = slot};
    b->texts += texts;
    b->tokens += tokens;
}

void zb_stats_rates(const zb_stats_t *s, uint64_t now_ms, double *texts_per_s,
                    double *tokens_per_s) {
    uint64_t slot = now_ms / ZB_STATS_BUCKET_MS, texts = 0, tokens = 0;
    for (size_t i = 0; i < S_BUCKETS; i++) {
        const s_bucket_t *b = &s->buckets[i];
        /* Inside the window: one of the last S_BUCKETS slots up to now. */
        if (b->slot != UINT64_MAX && b->slot <= slot && slot - b->slot < S_BUCKETS) {
            texts += b->texts;
            tokens += b->tokens;
        }
    }
    uint64_t span = now_ms > s->start_ms ? now_ms - s->start_ms : 0;
    if (span > ZB_STATS_WINDOW_MS) span = ZB_STATS_WINDOW_MS;
    if (span < 1000) span = 1000;
    if (texts_per_s) *texts_per_s = (double)texts * 1000.0 / (double)span;
    if (tokens_per_s) *tokens_per_s = (double)tokens * 1000.0 / (double)span;
}

void zb_stats_add_latency(zb_stats_t *s, double ms) {
    /* The reply must carry finite values >= 0 whatever a caller passes. */
    if (!(ms >= 0) || isinf(ms)) ms = 0;
    s->latency[s->next_latency] = ms;
    s->next_latency = (s->next_latency + 1) % ZB_STATS_LATENCY_SAMPLES;
    if (s->n_latency < ZB_STATS_LATENCY_SAMPLES) s->n_latency++;
}

static int s_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest rank: the ceil(p/100 * n)-th smallest (1-based). */
static double s_rank(const double *sorted, size_t n, unsigned p) {
    size_t r = ((size_t)p * n + 99) / 100;
    if (r == 0) r = 1;
    return sorted[r - 1];
}

void zb_stats_latency(const zb_stats_t *s, double *p50, double *p90, double *p99) {
    double v[ZB_STATS_LATENCY_SAMPLES];
    size_t n = s->n_latency;
    double r50 = 0, r90 = 0, r99 = 0;
    if (n > 0) {
        memcpy(v, s->latency, n * sizeof *v);
        qsort(v, n, sizeof *v, s_cmp);
        r50 = s_rank(v, n, 50);
        r90 = s_rank(v, n, 90);
        r99 = s_rank(v, n, 99);
    }
    if (p50) *p50 = r50;
    if (p90) *p90 = r90;
    if (p99) *p99 = r99;
}

size_t zb_stats_latency_count(const zb_stats_t *s) {
    return s->n_latency;
}
