/*
 * idmap.c -- chained hash table of embedded nodes, SipHash-2-4 keyed per
 * table.
 */
#include "idmap.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "random.h"

/* Chains of a new table: a power of two, so a hash picks its chain with a
 * mask. */
#define S_CHAINS_MIN 64

struct zb_idmap {
    zb_idmap_node_t **chains; /* n_chains heads */
    size_t n_chains;          /* a power of two */
    size_t n;                 /* nodes */
    uint64_t k0, k1;          /* the hash key */
};

/* --- SipHash-2-4 (Aumasson and Bernstein, 2012) --------------------------- */

static uint64_t s_rotl(uint64_t x, int b) {
    return (x << b) | (x >> (64 - b));
}

static void s_round(uint64_t v[4]) {
    v[0] += v[1];
    v[1] = s_rotl(v[1], 13) ^ v[0];
    v[0] = s_rotl(v[0], 32);
    v[2] += v[3];
    v[3] = s_rotl(v[3], 16) ^ v[2];
    v[0] += v[3];
    v[3] = s_rotl(v[3], 21) ^ v[0];
    v[2] += v[1];
    v[1] = s_rotl(v[1], 17) ^ v[2];
    v[2] = s_rotl(v[2], 32);
}

/* Little-endian whatever the host, so hashes are the reference's. */
static uint64_t s_le64(const uint8_t *p, size_t n) {
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) x |= (uint64_t)p[i] << (8 * i);
    return x;
}

static uint64_t s_siphash(uint64_t k0, uint64_t k1, const uint8_t *p, size_t len) {
    uint64_t v[4] = {k0 ^ 0x736f6d6570736575ull, k1 ^ 0x646f72616e646f6dull,
                     k0 ^ 0x6c7967656e657261ull, k1 ^ 0x7465646279746573ull};
    size_t whole = len & ~(size_t)7;
    for (size_t i = 0; i <= whole; i += 8) {
        /* The last word holds the tail bytes and the length's low byte. */
        uint64_t m =
            i < whole ? s_le64(p + i, 8) : s_le64(p + i, len - whole) | (uint64_t)len << 56;
        v[3] ^= m;
        s_round(v);
        s_round(v);
        v[0] ^= m;
    }
    v[2] ^= 0xff;
    for (int r = 0; r < 4; r++) s_round(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

/* --- the table ------------------------------------------------------------- */

int zb_idmap_new_keyed(const uint8_t hash_key[16], zb_idmap_t **out) {
    zb_idmap_t *m = calloc(1, sizeof *m);
    zb_idmap_node_t **chains = calloc(S_CHAINS_MIN, sizeof *chains);
    if (m == NULL || chains == NULL) {
        free(m);
        free(chains);
        *out = NULL;
        return ZB_ENOMEM;
    }
    m->chains = chains;
    m->n_chains = S_CHAINS_MIN;
    m->k0 = s_le64(hash_key, 8);
    m->k1 = s_le64(hash_key + 8, 8);
    *out = m;
    return 0;
}

int zb_idmap_new(zb_idmap_t **out) {
    uint8_t key[16];
    zb_random_bytes(key, sizeof key);
    return zb_idmap_new_keyed(key, out);
}

void zb_idmap_destroy(zb_idmap_t **m) {
    if (m == NULL || *m == NULL) return;
    free((*m)->chains);
    free(*m);
    *m = NULL;
}

uint64_t zb_idmap_hash(const zb_idmap_t *m, const void *key, size_t len) {
    return s_siphash(m->k0, m->k1, key, len);
}

zb_idmap_node_t *zb_idmap_find(const zb_idmap_t *m, const void *key, size_t len) {
    assert(len <= ZB_IDMAP_KEY_MAX);
    uint64_t h = zb_idmap_hash(m, key, len);
    for (zb_idmap_node_t *x = m->chains[h & (m->n_chains - 1)]; x; x = x->next)
        if (x->hash == h && x->key.len == len && memcmp(x->key.b, key, len) == 0) return x;
    return NULL;
}

/* Doubles the chains and relinks every node; without memory, leaves the
 * table as it is (longer chains, still correct). */
static void s_grow(zb_idmap_t *m) {
    size_t n_chains = m->n_chains * 2;
    zb_idmap_node_t **chains = calloc(n_chains, sizeof *chains);
    if (chains == NULL) return;
    for (size_t i = 0; i < m->n_chains; i++) {
        for (zb_idmap_node_t *x = m->chains[i], *next; x; x = next) {
            next = x->next;
            zb_idmap_node_t **head = &chains[x->hash & (n_chains - 1)];
            x->next = *head;
            *head = x;
        }
    }
    free(m->chains);
    m->chains = chains;
    m->n_chains = n_chains;
}

void zb_idmap_add(zb_idmap_t *m, zb_idmap_node_t *node, const void *key, size_t len) {
    assert(len <= ZB_IDMAP_KEY_MAX);
    assert(zb_idmap_find(m, key, len) == NULL);
    /* Two nodes per chain on average: a find compares about two keys.  The
     * doubling cannot overflow before memory runs out. */
    if (m->n >= m->n_chains * 2) s_grow(m);
    node->key.len = (uint8_t)len;
    memcpy(node->key.b, key, len);
    node->hash = zb_idmap_hash(m, key, len);
    zb_idmap_node_t **head = &m->chains[node->hash & (m->n_chains - 1)];
    node->next = *head;
    *head = node;
    m->n++;
}

void zb_idmap_del(zb_idmap_t *m, zb_idmap_node_t *node) {
    zb_idmap_node_t **p = &m->chains[node->hash & (m->n_chains - 1)];
    while (*p && *p != node) p = &(*p)->next;
    if (*p == NULL) return;
    *p = node->next;
    m->n--;
}

size_t zb_idmap_count(const zb_idmap_t *m) {
    return m->n;
}

/* The head of the first non-empty chain from chain i on, or NULL. */
static zb_idmap_node_t *s_from_chain(const zb_idmap_t *m, size_t i) {
    for (; i < m->n_chains; i++)
        if (m->chains[i]) return m->chains[i];
    return NULL;
}

zb_idmap_node_t *zb_idmap_first(const zb_idmap_t *m) {
    return s_from_chain(m, 0);
}

zb_idmap_node_t *zb_idmap_next(const zb_idmap_t *m, const zb_idmap_node_t *node) {
    /* The node's chain is found from its hash, so a removal behind the
     * iteration (which leaves the node's own next alone) changes nothing. */
    if (node->next) return node->next;
    return s_from_chain(m, (node->hash & (m->n_chains - 1)) + 1);
}
