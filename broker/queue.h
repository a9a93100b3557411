/*
 * queue.h -- the broker's fair shard queue: one lane per client, served
 * round-robin.
 *
 * Each client with queued shards owns a lane: a FIFO of its shards, in the
 * order of its requests.  The lanes that hold anything form a ring with a
 * cursor; zb_queue_pop() serves the head of the lane at the cursor and moves
 * the cursor to the next lane.  So one shard of every other waiting client
 * is dispatched before a client gets its next one: a client with a million
 * queued texts delays another client's request by at most one shard per
 * waiting client, whatever the sizes of their jobs.  A lane that becomes
 * non-empty joins the ring just before the cursor, so it is served once
 * every lane already waiting has been served once: a newcomer waits for at
 * most one shard per waiting client.
 *
 * The queue is intrusive: lanes and items are structs the caller embeds in
 * its own client and shard records, so pushing never allocates and never
 * fails (a shard taken back from a dead worker must always find its place
 * again).  Their fields are private to this module; callers only initialise
 * them with zb_queue_lane_init() / zb_queue_item_init() and read them
 * through the functions below.
 *
 * Invariants: an item is in at most one lane; a lane is in the ring exactly
 * when it holds at least one item; zb_queue_items() is the sum of the lanes'
 * lengths.  A lane must be empty when its owner frees it.
 *
 * Thread-safety: none; a queue and its lanes belong to one thread.
 */
#ifndef ZB_QUEUE_H
#define ZB_QUEUE_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

/* A queued element, embedded in the caller's record (private fields). */
typedef struct zb_queue_item {
    struct zb_queue_item *prev, *next; /* neighbours in the lane */
    struct zb_queue_lane *lane;        /* NULL: not queued */
} zb_queue_item_t;

/* One client's FIFO, embedded in the caller's record (private fields). */
typedef struct zb_queue_lane {
    zb_queue_item_t *head, *tail;
    size_t n;                          /* items in the lane */
    struct zb_queue_lane *prev, *next; /* neighbours in the ring, when n > 0 */
} zb_queue_lane_t;

typedef struct zb_queue zb_queue_t;

/* Decides whether an item may be served now (e.g. the worker being filled
 * runs the item's model); arg is zb_queue_pop()'s. */
typedef bool (*zb_queue_eligible_fn)(const zb_queue_item_t *item, void *arg);

/* A new empty queue in *out (the caller's, to zb_queue_destroy()).
 * Returns 0 or ZB_ENOMEM. */
int zb_queue_new(zb_queue_t **out);

/* Frees the queue (not the lanes or items, which are the caller's) and
 * nulls *q.  NULL-safe. */
void zb_queue_destroy(zb_queue_t **q);

void zb_queue_lane_init(zb_queue_lane_t *lane);
void zb_queue_item_init(zb_queue_item_t *item);

/* Appends item (not queued) to lane; at_head puts it first instead (a
 * shard coming back from a dead worker goes before the lane's newer work). */
void zb_queue_push(zb_queue_t *q, zb_queue_lane_t *lane, zb_queue_item_t *item, bool at_head);

/* Unlinks item from its lane; nothing when it is not queued. */
void zb_queue_remove(zb_queue_t *q, zb_queue_item_t *item);

/*
 * Round-robin pop: looks at the head of each lane in ring order from the
 * cursor and takes the first head that eligible accepts (eligible NULL:
 * any); the cursor moves to the lane after it.  A lane whose head is not
 * eligible is passed over for this pop (its later items are not searched:
 * a lane is served in order).  Returns the item, no longer queued, or NULL
 * when no head is eligible.  Cost: O(lanes) at worst.
 */
zb_queue_item_t *zb_queue_pop(zb_queue_t *q, zb_queue_eligible_fn eligible, void *arg);

/* Counts: queued items, lanes holding items, items of one lane. */
size_t zb_queue_items(const zb_queue_t *q);
size_t zb_queue_lanes(const zb_queue_t *q);
size_t zb_queue_lane_items(const zb_queue_lane_t *lane);

/* True when item is in a lane. */
bool zb_queue_item_queued(const zb_queue_item_t *item);

#endif
