/*
 * grow.h -- growable arrays: the one doubling policy every module that
 * appends to a caller-reused array shares (tokenizer pieces, embedder
 * sequences, Spark NLP pieces).
 *
 * Thread-safety: none needed; it touches only what it is given.
 */
#ifndef ZB_GROW_H
#define ZB_GROW_H

#include <stddef.h>

/* Makes *p (an array of *cap items of elem bytes, or NULL with *cap 0) hold
 * at least need items: when it does not, doubles *cap from 16 until it
 * does and reallocates, keeping the contents.  Returns 0, or ZB_ENOMEM (the
 * allocation failed or the size overflows; *p and *cap are then
 * unchanged). */
int zb_grow(void **p, size_t *cap, size_t need, size_t elem);

#endif
