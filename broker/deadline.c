/*
 * deadline.c -- binary min-heap in an array of item pointers; each item
 * knows its index, which is what makes removal and update O(log n).
 */
#include "deadline.h"

#include <assert.h>
#include <stdlib.h>

/* Slots of the first array: the broker rarely has more requests with a
 * deadline open at once. */
#define S_CAP_MIN 64

struct zb_deadline {
    zb_deadline_item_t **a; /* a[0] is the earliest; a[k]'s children are a[2k+1], a[2k+2] */
    size_t n, cap;
};

int zb_deadline_new(zb_deadline_t **out) {
    *out = calloc(1, sizeof **out);
    return *out ? 0 : ZB_ENOMEM;
}

void zb_deadline_destroy(zb_deadline_t **h) {
    if (h == NULL || *h == NULL) return;
    free((*h)->a);
    free(*h);
    *h = NULL;
}

static void s_put(zb_deadline_t *h, size_t k, zb_deadline_item_t *item) {
    h->a[k] = item;
    item->slot = k + 1;
}

/* Moves the item at k towards the root while its parent is later.  Equal
 * deadlines stop it: it stays below the item that was there first. */
static void s_up(zb_deadline_t *h, size_t k) {
    zb_deadline_item_t *item = h->a[k];
    while (k > 0) {
        size_t p = (k - 1) / 2;
        if (h->a[p]->at <= item->at) break;
        s_put(h, k, h->a[p]);
        k = p;
    }
    s_put(h, k, item);
}

/* Moves the item at k towards the leaves while a child is earlier. */
static void s_down(zb_deadline_t *h, size_t k) {
    zb_deadline_item_t *item = h->a[k];
    for (;;) {
        size_t c = 2 * k + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && h->a[c + 1]->at < h->a[c]->at) c++;
        if (item->at <= h->a[c]->at) break;
        s_put(h, k, h->a[c]);
        k = c;
    }
    s_put(h, k, item);
}

int zb_deadline_push(zb_deadline_t *h, zb_deadline_item_t *item, uint64_t at) {
    assert(item->slot == 0);
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : S_CAP_MIN;
        zb_deadline_item_t **a = realloc(h->a, cap * sizeof *a);
        if (a == NULL) return ZB_ENOMEM;
        h->a = a;
        h->cap = cap;
    }
    item->at = at;
    s_put(h, h->n++, item);
    s_up(h, h->n - 1);
    return 0;
}

void zb_deadline_remove(zb_deadline_t *h, zb_deadline_item_t *item) {
    if (item->slot == 0) return;
    size_t k = item->slot - 1;
    assert(k < h->n && h->a[k] == item);
    item->slot = 0;
    zb_deadline_item_t *last = h->a[--h->n];
    if (k == h->n) return;
    /* The last item fills the hole; it may belong above or below it. */
    s_put(h, k, last);
    s_up(h, k);
    s_down(h, last->slot - 1);
}

void zb_deadline_update(zb_deadline_t *h, zb_deadline_item_t *item, uint64_t at) {
    assert(item->slot != 0 && h->a[item->slot - 1] == item);
    item->at = at;
    s_up(h, item->slot - 1);
    s_down(h, item->slot - 1);
}

zb_deadline_item_t *zb_deadline_first(const zb_deadline_t *h) {
    return h->n > 0 ? h->a[0] : NULL;
}

zb_deadline_item_t *zb_deadline_pop(zb_deadline_t *h) {
    zb_deadline_item_t *item = zb_deadline_first(h);
    if (item != NULL) zb_deadline_remove(h, item);
    return item;
}

size_t zb_deadline_count(const zb_deadline_t *h) {
    return h->n;
}

bool zb_deadline_item_pending(const zb_deadline_item_t *item) {
    return item->slot != 0;
}
