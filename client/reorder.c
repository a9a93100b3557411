/*
 * reorder.c -- per-text results in submission order (the "in-order
 * reassembly" section of zbert.h).
 *
 * The reorder keeps the announced requests in order, each with one slot
 * per text: the event holding the text once it has arrived.  Events are
 * shared by the slots of their texts and counted; an event is freed when
 * its last text has been popped (at the next pop, since the popped view
 * points into it).  A request leaves when its texts are all popped and its
 * DONE or ERROR has been pushed.
 *
 * Invariants: q[0 .. n) are the requests with texts to pop or an end still
 * to come, in order; pending == sum over them of (n_texts - next).
 * Lookups of a request are linear in the requests held, which the caller
 * keeps to a window of a few dozen.
 *
 * Built on the public API only.  Thread-safety: one thread at a time.
 */
#include "zbert.h"

#include <stdlib.h>
#include <string.h>

typedef struct s_node {
    zbert_event_t *ev;
    uint32_t refs; /* texts of ev not yet popped */
} s_node_t;

typedef struct s_slot {
    s_node_t *node; /* NULL until the text arrives */
    uint32_t i;     /* the text's index in node->ev */
} s_slot_t;

typedef struct s_rq {
    uint64_t request;
    uint64_t seq0; /* position of its first text in the stream */
    uint32_t n_texts;
    uint32_t next;   /* next text to pop */
    s_slot_t *slots; /* [n_texts] */
    bool ended;      /* DONE or ERROR pushed */
    int code;        /* after ERROR: the request's failure */
    const char *code_name;
    char *message; /* after ERROR (copied) */
    void *user;
} s_rq_t;

struct zbert_reorder {
    s_rq_t **q;
    size_t n, cap;
    uint64_t seq_next; /* stream position of the next announced text */
    size_t pending;
    s_node_t *release; /* event of the last popped text, freed at the
                        * next pop when its count reached 0 */
};

int zbert_reorder_new(zbert_reorder_t **out) {
    if (out == NULL) return ZBERT_EINVAL;
    *out = calloc(1, sizeof **out);
    return *out ? 0 : ZBERT_ENOMEM;
}

static void s_node_unref(s_node_t *nd) {
    if (nd && --nd->refs == 0) {
        zbert_event_destroy(&nd->ev);
        free(nd);
    }
}

static void s_rq_free(s_rq_t *q) {
    if (q == NULL) return;
    for (uint32_t i = q->next; i < q->n_texts; i++) s_node_unref(q->slots[i].node);
    free(q->slots);
    free(q->message);
    free(q);
}

static void s_release(zbert_reorder_t *r) {
    if (r->release && r->release->refs == 0) {
        zbert_event_destroy(&r->release->ev);
        free(r->release);
    }
    r->release = NULL;
}

void zbert_reorder_destroy(zbert_reorder_t **pr) {
    if (pr == NULL || *pr == NULL) return;
    zbert_reorder_t *r = *pr;
    s_release(r);
    for (size_t i = 0; i < r->n; i++) s_rq_free(r->q[i]);
    free(r->q);
    free(r);
    *pr = NULL;
}

static s_rq_t *s_find(const zbert_reorder_t *r, uint64_t request, size_t *pos) {
    for (size_t i = r->n; i-- > 0;)
        if (r->q[i]->request == request) {
            if (pos) *pos = i;
            return r->q[i];
        }
    return NULL;
}

static void s_remove(zbert_reorder_t *r, size_t pos) {
    s_rq_free(r->q[pos]);
    memmove(&r->q[pos], &r->q[pos + 1], (r->n - pos - 1) * sizeof *r->q);
    r->n--;
}

int zbert_reorder_expect(zbert_reorder_t *r, uint64_t request, uint32_t n_texts) {
    if (r == NULL || n_texts == 0 || request == 0 || s_find(r, request, NULL)) return ZBERT_EINVAL;
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 16;
        s_rq_t **q = realloc(r->q, cap * sizeof *q);
        if (q == NULL) return ZBERT_ENOMEM;
        r->q = q;
        r->cap = cap;
    }
    s_rq_t *q = calloc(1, sizeof *q);
    if (q == NULL) return ZBERT_ENOMEM;
    q->slots = calloc(n_texts, sizeof *q->slots);
    if (q->slots == NULL) {
        free(q);
        return ZBERT_ENOMEM;
    }
    q->request = request;
    q->n_texts = n_texts;
    q->seq0 = r->seq_next;
    r->seq_next += n_texts;
    r->pending += n_texts;
    r->q[r->n++] = q;
    return 0;
}

int zbert_reorder_push(zbert_reorder_t *r, zbert_event_t **pev) {
    if (pev == NULL || *pev == NULL) return ZBERT_EINVAL;
    zbert_event_t *ev = *pev;
    *pev = NULL;
    int rc = ZBERT_EINVAL;
    size_t pos = 0;
    s_rq_t *q = r ? s_find(r, ev->request, &pos) : NULL;
    if (q == NULL || q->ended) goto out;
    q->user = ev->user;
    if (ev->type == ZBERT_EVENT_PART) {
        if (ev->count == 0 || ev->first >= q->n_texts || ev->count > q->n_texts - ev->first)
            goto out;
        for (uint32_t i = 0; i < ev->count; i++)
            if (q->slots[ev->first + i].node || ev->first + i < q->next) goto out;
        s_node_t *nd = malloc(sizeof *nd);
        if (nd == NULL) {
            rc = ZBERT_ENOMEM;
            goto out;
        }
        nd->ev = ev;
        nd->refs = ev->count;
        for (uint32_t i = 0; i < ev->count; i++) q->slots[ev->first + i] = (s_slot_t){nd, i};
        return 0;
    }
    if (ev->type == ZBERT_EVENT_ERROR) {
        q->code = ev->code;
        q->code_name = ev->code_name;
        q->message = strdup(ev->message ? ev->message : "");
        if (q->message == NULL) {
            rc = ZBERT_ENOMEM;
            goto out;
        }
    } else if (ev->type == ZBERT_EVENT_DONE) {
        /* The client ends a request with DONE only when every text came;
         * anything else would leave pop waiting forever. */
        for (uint32_t i = q->next; i < q->n_texts; i++)
            if (q->slots[i].node == NULL) {
                q->code = ZBERT_EPROTO;
                q->code_name = "client";
                q->message = strdup("the request finished without this text");
                if (q->message == NULL) {
                    rc = ZBERT_ENOMEM;
                    goto out;
                }
                break;
            }
    } else {
        goto out;
    }
    q->ended = true;
    if (q->next == q->n_texts) s_remove(r, pos);
    rc = 0;
out:
    zbert_event_destroy(&ev);
    return rc;
}

int zbert_reorder_pop(zbert_reorder_t *r, zbert_text_t *t) {
    if (r == NULL || t == NULL) return 0;
    /* The previous view is no longer in use: free what it pointed into. */
    s_release(r);
    for (size_t k = 0; k < r->n;) {
        if (r->q[k]->next == r->q[k]->n_texts && r->q[k]->ended)
            s_remove(r, k);
        else
            k++;
    }
    /* Requests fully popped wait in the queue only for their end. */
    size_t k = 0;
    while (k < r->n && r->q[k]->next == r->q[k]->n_texts) k++;
    if (k == r->n) return 0;
    s_rq_t *q = r->q[k];
    s_slot_t *s = &q->slots[q->next];
    if (s->node) {
        zbert_event_text(s->node->ev, s->i, t);
        t->seq = q->seq0 + q->next;
        s->node->refs--;
        r->release = s->node;
        s->node = NULL;
    } else if (q->ended && q->message) {
        /* The request failed before this text came: it fails with it. */
        *t = (zbert_text_t){.request = q->request,
                            .user = q->user,
                            .index = q->next,
                            .seq = q->seq0 + q->next,
                            .status = q->code,
                            .code_name = q->code_name,
                            .error = q->message};
    } else {
        return 0;
    }
    q->next++;
    r->pending--;
    return 1;
}

size_t zbert_reorder_pending(const zbert_reorder_t *r) {
    return r ? r->pending : 0;
}
