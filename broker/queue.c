/*
 * queue.c -- the fair shard queue: lanes of items, a ring of non-empty
 * lanes, a cursor.
 */
#include "queue.h"

#include <stdlib.h>

struct zb_queue {
    zb_queue_lane_t *cursor; /* the lane served next; NULL when the ring is empty */
    size_t n_items;
    size_t n_lanes; /* lanes in the ring */
};

int zb_queue_new(zb_queue_t **out) {
    *out = calloc(1, sizeof **out);
    return *out ? 0 : ZB_ENOMEM;
}

void zb_queue_destroy(zb_queue_t **q) {
    if (q == NULL) return;
    free(*q);
    *q = NULL;
}

void zb_queue_lane_init(zb_queue_lane_t *lane) {
    *lane = (zb_queue_lane_t){0};
}

void zb_queue_item_init(zb_queue_item_t *item) {
    *item = (zb_queue_item_t){0};
}

/* A lane that just got its first item joins the ring before the cursor:
 * the end of the round in progress. */
static void s_ring_join(zb_queue_t *q, zb_queue_lane_t *lane) {
    if (q->cursor == NULL) {
        lane->prev = lane->next = lane;
        q->cursor = lane;
    } else {
        zb_queue_lane_t *c = q->cursor;
        lane->next = c;
        lane->prev = c->prev;
        c->prev->next = lane;
        c->prev = lane;
    }
    q->n_lanes++;
}

static void s_ring_leave(zb_queue_t *q, zb_queue_lane_t *lane) {
    if (lane->next == lane) {
        q->cursor = NULL;
    } else {
        lane->prev->next = lane->next;
        lane->next->prev = lane->prev;
        if (q->cursor == lane) q->cursor = lane->next;
    }
    lane->prev = lane->next = NULL;
    q->n_lanes--;
}

void zb_queue_push(zb_queue_t *q, zb_queue_lane_t *lane, zb_queue_item_t *item, bool at_head) {
    if (lane->n == 0) s_ring_join(q, lane);
    item->lane = lane;
    if (at_head) {
        item->prev = NULL;
        item->next = lane->head;
        if (lane->head)
            lane->head->prev = item;
        else
            lane->tail = item;
        lane->head = item;
    } else {
        item->next = NULL;
        item->prev = lane->tail;
        if (lane->tail)
            lane->tail->next = item;
        else
            lane->head = item;
        lane->tail = item;
    }
    lane->n++;
    q->n_items++;
}

void zb_queue_remove(zb_queue_t *q, zb_queue_item_t *item) {
    zb_queue_lane_t *lane = item->lane;
    if (lane == NULL) return;
    if (item->prev)
        item->prev->next = item->next;
    else
        lane->head = item->next;
    if (item->next)
        item->next->prev = item->prev;
    else
        lane->tail = item->prev;
    item->prev = item->next = NULL;
    item->lane = NULL;
    lane->n--;
    q->n_items--;
    if (lane->n == 0) s_ring_leave(q, lane);
}

zb_queue_item_t *zb_queue_pop(zb_queue_t *q, zb_queue_eligible_fn eligible, void *arg) {
    zb_queue_lane_t *lane = q->cursor;
    for (size_t k = 0; k < q->n_lanes; k++, lane = lane->next) {
        zb_queue_item_t *item = lane->head;
        if (eligible != NULL && !eligible(item, arg)) continue;
        /* The cursor goes past the lane served, before the removal may
         * take the lane out of the ring. */
        q->cursor = lane->next;
        zb_queue_remove(q, item);
        return item;
    }
    return NULL;
}

size_t zb_queue_items(const zb_queue_t *q) {
    return q->n_items;
}

size_t zb_queue_lanes(const zb_queue_t *q) {
    return q->n_lanes;
}

size_t zb_queue_lane_items(const zb_queue_lane_t *lane) {
    return lane->n;
}

bool zb_queue_item_queued(const zb_queue_item_t *item) {
    return item->lane != NULL;
}
