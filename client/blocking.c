/*
 * blocking.c -- zbert_embed(): texts in, one result per text out (the
 * "blocking call" section of zbert.h).
 *
 * The texts go out as consecutive chunks, each one request, as many at a
 * time as the client takes (zbert_submit answers ZBERT_EBUSY at its
 * limits); PART events are kept in the result and each text points at the
 * event holding it.  A chunk the client refuses as too large is halved.
 * A request that fails ends the call: the others are cancelled and their
 * events drained, so the client is left with nothing open.  One model
 * serves the call: the caller's, or the one the first results name, which
 * every chunk submitted later is pinned to; results naming another end
 * the call.
 *
 * Built on the public API only (and the shared clock).  Thread-safety: as the client.
 */
#include "zbert.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

/* Bytes of a model identity (PROTOCOL.md 2, as ready.model). */
#define S_MODEL_BYTES_MAX 256

/* A chunk closes at this many texts or bytes: big enough that messages
 * are few, small enough that the broker's shards of one request start
 * streaming back early and a resend repeats little. */
#define S_CHUNK_TEXTS 1024u
#define S_CHUNK_BYTES (16u << 20)

typedef struct s_slot {
    const zbert_event_t *ev; /* NULL until the text arrives */
    uint32_t i;
} s_slot_t;

struct zbert_result {
    size_t n;
    s_slot_t *slots;        /* [n] */
    zbert_event_t **events; /* PART events held */
    size_t n_events, cap_events;
};

typedef struct s_chunk {
    size_t base, n;
    uint64_t handle; /* 0: not submitted */
    bool ended;
} s_chunk_t;

static int s_diag(zbert_diag_t *d, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int s_diag(zbert_diag_t *d, int code, const char *fmt, ...) {
    if (d == NULL) return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->msg, sizeof d->msg, fmt, ap);
    va_end(ap);
    return code;
}

void zbert_result_destroy(zbert_result_t **pr) {
    if (pr == NULL || *pr == NULL) return;
    zbert_result_t *r = *pr;
    for (size_t i = 0; i < r->n_events; i++) zbert_event_destroy(&r->events[i]);
    free(r->events);
    free(r->slots);
    free(r);
    *pr = NULL;
}

size_t zbert_result_count(const zbert_result_t *r) {
    return r ? r->n : 0;
}

int zbert_result_text(const zbert_result_t *r, size_t i, zbert_text_t *t) {
    if (r == NULL || t == NULL || i >= r->n || r->slots[i].ev == NULL) return ZBERT_EINVAL;
    int rc = zbert_event_text(r->slots[i].ev, r->slots[i].i, t);
    t->seq = i;
    return rc;
}

static size_t s_len(const char *const *texts, const size_t *lens, size_t i) {
    return lens ? lens[i] : strlen(texts[i]);
}

/* The next chunk from text base: up to max_texts texts and S_CHUNK_BYTES
 * bytes (one text at least). */
static size_t s_chunk_len(const char *const *texts, const size_t *lens, size_t n, size_t base,
                          size_t max_texts) {
    size_t k = 0, bytes = 0;
    while (base + k < n && k < max_texts) {
        size_t b = s_len(texts, lens, base + k);
        if (k > 0 && (b > S_CHUNK_BYTES || bytes + b > S_CHUNK_BYTES)) break;
        bytes += b;
        k++;
    }
    return k;
}

/* Keeps a PART event in the result.  Takes ev. */
static int s_keep(zbert_result_t *res, const s_chunk_t *ch, zbert_event_t *ev) {
    if (ev->first + (size_t)ev->count > ch->n) {
        zbert_event_destroy(&ev);
        return ZBERT_EPROTO; /* the client never does this */
    }
    if (res->n_events == res->cap_events) {
        size_t cap = res->cap_events ? 2 * res->cap_events : 64;
        zbert_event_t **p = realloc(res->events, cap * sizeof *p);
        if (p == NULL) {
            zbert_event_destroy(&ev);
            return ZBERT_ENOMEM;
        }
        res->events = p;
        res->cap_events = cap;
    }
    res->events[res->n_events++] = ev;
    for (uint32_t i = 0; i < ev->count; i++)
        res->slots[ch->base + ev->first + i] = (s_slot_t){ev, i};
    return 0;
}

int zbert_embed(zbert_client_t *c, const char *const *texts, const size_t *lens, size_t n,
                const zbert_options_t *opt, zbert_result_t **out, zbert_diag_t *d) {
    static const zbert_options_t defaults = {0};
    if (out) *out = NULL;
    if (c == NULL || out == NULL || (texts == NULL && n > 0))
        return s_diag(d, ZBERT_EINVAL, "NULL argument");
    if (zbert_open_requests(c) > 0)
        return s_diag(d, ZBERT_EINVAL, "the client has open requests; zbert_embed needs it alone");
    for (size_t i = 0; i < n; i++)
        if (texts[i] == NULL) return s_diag(d, ZBERT_EINVAL, "text %zu is NULL", i);
    if (opt == NULL) opt = &defaults;

    int rc = ZBERT_ENOMEM;
    s_chunk_t *chunks = NULL;
    size_t n_chunks = 0, cap_chunks = 0, ended = 0, next_text = 0;
    size_t max_texts = S_CHUNK_TEXTS;
    char model[S_MODEL_BYTES_MAX + 1] = ""; /* the call's, once known */
    if (opt->model && strlen(opt->model) <= S_MODEL_BYTES_MAX)
        memcpy(model, opt->model, strlen(opt->model) + 1);
    zbert_event_t *ev = NULL;
    zbert_result_t *res = calloc(1, sizeof *res);
    if (res == NULL) goto out;
    res->n = n;
    if (n && (res->slots = calloc(n, sizeof *res->slots)) == NULL) goto out;
    uint64_t start = zb_clock_ms();
    rc = 0;
    while (rc == 0 && (next_text < n || ended < n_chunks)) {
        uint64_t now = zb_clock_ms();
        uint32_t left_ms = 0;
        if (opt->deadline_ms) {
            if (now - start >= opt->deadline_ms) {
                rc = s_diag(d, ZBERT_ETIMEOUT, "the deadline of %u ms passed", opt->deadline_ms);
                break;
            }
            left_ms = opt->deadline_ms - (uint32_t)(now - start);
        }
        /* Send what the client takes. */
        while (next_text < n) {
            if (n_chunks == cap_chunks) {
                size_t cap = cap_chunks ? 2 * cap_chunks : 16;
                s_chunk_t *p = realloc(chunks, cap * sizeof *p);
                if (p == NULL) {
                    rc = ZBERT_ENOMEM;
                    break;
                }
                chunks = p;
                cap_chunks = cap;
            }
            s_chunk_t *ch = &chunks[n_chunks];
            *ch = (s_chunk_t){.base = next_text,
                              .n = s_chunk_len(texts, lens, n, next_text, max_texts)};
            zbert_options_t o = *opt;
            o.deadline_ms = left_ms;
            if (model[0]) o.model = model;
            int s = zbert_submit(c, texts + ch->base, lens ? lens + ch->base : NULL, ch->n, &o,
                                 (void *)(uintptr_t)n_chunks, &ch->handle, d);
            if (s == ZBERT_EBUSY) break;
            if (s == ZBERT_ELIMIT && ch->n > 1) {
                max_texts = ch->n / 2; /* the client's limits are lower: halve */
                continue;
            }
            if (s != 0) {
                rc = s;
                break;
            }
            next_text += ch->n;
            n_chunks++;
        }
        if (rc != 0 || (next_text == n && ended == n_chunks)) break;
        rc = zbert_next(c, opt->deadline_ms ? (left_ms > INT32_MAX ? INT32_MAX : (int)left_ms) : -1,
                        &ev);
        if (rc != 0 || ev == NULL) {
            if (rc == 0 && zbert_open_requests(c) == 0 && next_text < n)
                rc = s_diag(d, ZBERT_ELIMIT, "the client takes none of the texts left");
            continue;
        }
        size_t k = (size_t)(uintptr_t)ev->user;
        if (k >= n_chunks || chunks[k].handle != ev->request) {
            zbert_event_destroy(&ev); /* not ours (cannot happen: the client is ours) */
            continue;
        }
        if (ev->type == ZBERT_EVENT_PART && ev->model) {
            if (model[0] == '\0' && strlen(ev->model) <= S_MODEL_BYTES_MAX) {
                memcpy(model, ev->model, strlen(ev->model) + 1);
            } else if (strcmp(model, ev->model) != 0) {
                rc = s_diag(d, ZBERT_EPROTO,
                            "texts %zu..%zu came from model %s after texts of model %s: a call "
                            "keeps to one model (name it in the options to choose)",
                            chunks[k].base + ev->first, chunks[k].base + ev->first + ev->count - 1,
                            ev->model, model);
                zbert_event_destroy(&ev);
                continue;
            }
        }
        if (ev->type == ZBERT_EVENT_PART) {
            rc = s_keep(res, &chunks[k], ev);
        } else {
            chunks[k].ended = true;
            ended++;
            if (ev->type == ZBERT_EVENT_ERROR)
                rc = s_diag(d, ev->code, "%s: %s", ev->code_name ? ev->code_name : "error",
                            ev->message ? ev->message : "");
            zbert_event_destroy(&ev);
        }
        ev = NULL;
    }
out:
    zbert_event_destroy(&ev);
    if (rc != 0) {
        /* Leave the client as we found it: nothing open, nothing queued. */
        for (size_t k = 0; k < n_chunks; k++)
            if (!chunks[k].ended) zbert_cancel(c, chunks[k].handle);
        while (zbert_next(c, 0, &ev) == 0 && ev) zbert_event_destroy(&ev);
        if (rc == ZBERT_ENOMEM) s_diag(d, rc, "out of memory");
        zbert_result_destroy(&res);
    } else {
        *out = res;
    }
    free(chunks);
    return rc;
}
