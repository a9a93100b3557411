/*
 * stats.h -- the broker's throughput and latency figures for `status`:
 * texts and tokens per second over a sliding window, request latency
 * percentiles over the most recent requests.
 *
 * Rates: work is added to 100 ms buckets of a 10 s ring; a rate is the sum
 * of the buckets inside the window divided by the window (or by the time
 * since the stats began, when that is shorter, but never by less than one
 * second, so a first result does not read as a huge rate).  Latencies: a
 * ring of the last ZB_STATS_LATENCY_SAMPLES values; percentiles are
 * nearest-rank (the smallest sample with at least p% of the samples at or
 * below it), 0 when there is none.
 *
 * Memory is fixed at creation (a few KiB).  Times are caller-supplied
 * monotonic milliseconds, never earlier than the previous call's.
 *
 * Thread-safety: none; one owner.
 */
#ifndef ZB_STATS_H
#define ZB_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* The window of texts_per_s and tokens_per_s (PROTOCOL.md, status_reply). */
#define ZB_STATS_WINDOW_MS 10000u
/* Bucket width: the window slides in steps of this; 100 buckets. */
#define ZB_STATS_BUCKET_MS 100u
/* Requests the latency percentiles are taken over (PROTOCOL.md). */
#define ZB_STATS_LATENCY_SAMPLES 1000u

typedef struct zb_stats zb_stats_t;

/* New stats starting at now_ms, in *out (the caller's, to destroy).
 * Returns 0 or ZB_ENOMEM. */
int zb_stats_new(uint64_t now_ms, zb_stats_t **out);

/* Frees and nulls *s.  NULL-safe. */
void zb_stats_destroy(zb_stats_t **s);

/* Counts texts and tokens finished at now_ms. */
void zb_stats_add_work(zb_stats_t *s, uint64_t now_ms, uint64_t texts, uint64_t tokens);

/* Texts and tokens per second over the window ending at now_ms (>= 0). */
void zb_stats_rates(const zb_stats_t *s, uint64_t now_ms, double *texts_per_s,
                    double *tokens_per_s);

/* Records one request's latency (receipt to done), milliseconds >= 0. */
void zb_stats_add_latency(zb_stats_t *s, double ms);

/* p50, p90, p99 of the recorded latencies (0 when none); any pointer may
 * be NULL.  Sorts a copy: O(n log n) with n <= ZB_STATS_LATENCY_SAMPLES. */
void zb_stats_latency(const zb_stats_t *s, double *p50, double *p90, double *p99);

/* Latencies currently held (at most ZB_STATS_LATENCY_SAMPLES). */
size_t zb_stats_latency_count(const zb_stats_t *s);

#endif
