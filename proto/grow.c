/*
 * grow.c -- growable arrays (see grow.h).
 */
#include "grow.h"

#include <stdlib.h>

#include "error.h"

int zb_grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 16;
    while (nc < need)
        if (__builtin_mul_overflow(nc, (size_t)2, &nc)) return ZB_ENOMEM;
    size_t bytes;
    if (__builtin_mul_overflow(nc, elem, &bytes)) return ZB_ENOMEM;
    void *q = realloc(*p, bytes);
    if (q == NULL) return ZB_ENOMEM;
    *p = q;
    *cap = nc;
    return 0;
}
