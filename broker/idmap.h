/*
 * idmap.h -- a hash table of records keyed by short byte strings: the
 * broker's clients and workers by ZeroMQ routing id.
 *
 * The table is intrusive: a node is a struct the caller embeds in its own
 * record (first, so that a node pointer is the record's pointer), holding
 * the record's key.  Adding never allocates and never fails -- a peer's
 * record must always find its place -- and finding returns the caller's
 * node.  The node's fields are private to this module except key, which the
 * caller reads (never writes) while the node is in a table.
 *
 * Keys are 0 to ZB_IDMAP_KEY_MAX bytes, compared bytewise.  Routing ids are
 * chosen by peers (a DEALER may set its own), so the hash is keyed:
 * SipHash-2-4 with a 128-bit key drawn from getrandom() for each table, so
 * that a peer cannot pick ids that fall into one chain.
 *
 * Invariants: a node is in at most one table; keys in a table are distinct;
 * zb_idmap_count() is the number of nodes in it.  The table grows (doubling
 * its chains when it holds two nodes per chain) and never shrinks, so
 * removing nodes never moves the others: an iteration may remove nodes as
 * it goes (see zb_idmap_next()).  Growth that finds no memory is skipped:
 * chains get longer, nothing fails.
 *
 * Thread-safety: none; a table and its nodes belong to one thread.
 */
#ifndef ZB_IDMAP_H
#define ZB_IDMAP_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* The longest key: a ZeroMQ routing id is 1 to 255 bytes. */
#define ZB_IDMAP_KEY_MAX 255

/* A key: len bytes of b. */
typedef struct zb_idmap_key {
    uint8_t len;
    uint8_t b[ZB_IDMAP_KEY_MAX];
} zb_idmap_key_t;

/* A record's place in a table, embedded in the record.  key is set by
 * zb_idmap_add(); next and hash are private. */
typedef struct zb_idmap_node {
    struct zb_idmap_node *next; /* in its chain */
    uint64_t hash;              /* of key, under the table's hash key */
    zb_idmap_key_t key;
} zb_idmap_node_t;

typedef struct zb_idmap zb_idmap_t;

/* A new empty table in *out (the caller's, to zb_idmap_destroy()), its
 * hash keyed from getrandom() (from the clock and the table's address when
 * the kernel has no randomness to give without blocking).  Returns 0 or
 * ZB_ENOMEM. */
int zb_idmap_new(zb_idmap_t **out);

/* The same with the given 16-byte hash key: hashes, and so iteration
 * orders, repeat from run to run.  For tests. */
int zb_idmap_new_keyed(const uint8_t hash_key[16], zb_idmap_t **out);

/* Frees the table (not the nodes, which are the caller's) and nulls *m.
 * NULL-safe. */
void zb_idmap_destroy(zb_idmap_t **m);

/* The node whose key is the len bytes at key, or NULL.  len <= ZB_IDMAP_KEY_MAX. */
zb_idmap_node_t *zb_idmap_find(const zb_idmap_t *m, const void *key, size_t len);

/* Copies the key (len <= ZB_IDMAP_KEY_MAX bytes) into node, which is in no
 * table, and adds node to m.  No node of m may have that key already. */
void zb_idmap_add(zb_idmap_t *m, zb_idmap_node_t *node, const void *key, size_t len);

/* Takes node out of m; nothing when it is not in m.  node->key is kept. */
void zb_idmap_del(zb_idmap_t *m, zb_idmap_node_t *node);

/* Nodes in m. */
size_t zb_idmap_count(const zb_idmap_t *m);

/*
 * Iteration, in no particular order: zb_idmap_first() gives a node of m or
 * NULL when it is empty; zb_idmap_next() the node after node (which is in
 * m), or NULL after the last.  Every node is visited once provided nothing
 * is added meanwhile.  Nodes may be removed meanwhile, the current one
 * included, as long as the node the iteration goes to next is not: fetch
 * it before removing the current one.
 */
zb_idmap_node_t *zb_idmap_first(const zb_idmap_t *m);
zb_idmap_node_t *zb_idmap_next(const zb_idmap_t *m, const zb_idmap_node_t *node);

/* The table's hash of the len bytes at key (SipHash-2-4 under its hash key). */
uint64_t zb_idmap_hash(const zb_idmap_t *m, const void *key, size_t len);

#endif
