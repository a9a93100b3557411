/*
 * deadline.h -- a min-heap of items by deadline: the broker's requests
 * that must be answered by a given time, earliest first.
 *
 * The heap is intrusive: an item is a struct the caller embeds in its own
 * record, and it is its own handle: the caller removes or moves a record's
 * deadline through it, in O(log n), without searching.  Pushing allocates
 * only when the heap's array must grow (doubling), so it is the one call
 * that can fail.
 *
 * Deadlines are unsigned 64-bit times in any unit (the broker's are
 * monotonic milliseconds); items with equal deadlines come out in an
 * unspecified order.  An item's at is the deadline it was pushed or
 * updated with, for the caller to read (never to write); slot is private.
 * An item all zeros (calloc, `= {0}`) is in no heap.
 *
 * Invariants: an item is in at most one heap; no item of the heap has a
 * deadline earlier than its parent's, so the first is the earliest;
 * zb_deadline_count() is the number of items in it.  An item must be out of
 * its heap when its owner frees it.
 *
 * Thread-safety: none; a heap and its items belong to one thread.
 */
#ifndef ZB_DEADLINE_H
#define ZB_DEADLINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* A record's place in a heap, embedded in the record. */
typedef struct zb_deadline_item {
    uint64_t at; /* the deadline; read-only for the caller */
    size_t slot; /* private: 1 + index in the heap's array; 0: in no heap */
} zb_deadline_item_t;

typedef struct zb_deadline zb_deadline_t;

/* A new empty heap in *out (the caller's, to zb_deadline_destroy()).
 * Returns 0 or ZB_ENOMEM. */
int zb_deadline_new(zb_deadline_t **out);

/* Frees the heap (not the items, which are the caller's) and nulls *h.
 * NULL-safe. */
void zb_deadline_destroy(zb_deadline_t **h);

/* Adds item (in no heap) with deadline at.  Returns 0, or ZB_ENOMEM with
 * the heap and item unchanged. */
int zb_deadline_push(zb_deadline_t *h, zb_deadline_item_t *item, uint64_t at);

/* Takes item out of h; nothing when it is in no heap. */
void zb_deadline_remove(zb_deadline_t *h, zb_deadline_item_t *item);

/* Moves item (in h) to deadline at, earlier or later. */
void zb_deadline_update(zb_deadline_t *h, zb_deadline_item_t *item, uint64_t at);

/* The item with the earliest deadline, left in h; NULL when h is empty. */
zb_deadline_item_t *zb_deadline_first(const zb_deadline_t *h);

/* The same, taken out of h. */
zb_deadline_item_t *zb_deadline_pop(zb_deadline_t *h);

/* Items in h. */
size_t zb_deadline_count(const zb_deadline_t *h);

/* True when item is in a heap. */
bool zb_deadline_item_pending(const zb_deadline_item_t *item);

#endif
