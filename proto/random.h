/*
 * random.h -- unpredictable bytes for what a peer must not guess (hash
 * keys, the start of libzmq's routing-id sequence, request-id tags).
 *
 * Never blocks: early in boot the kernel may have no entropy to give, and
 * a process must start all the same.  The fallback mixes the clocks, the
 * process id and an address: guessable by a patient local observer, but no
 * worse than no key at all.
 *
 * Thread-safety: safe from any thread.
 */
#ifndef ZB_RANDOM_H
#define ZB_RANDOM_H

#include <stddef.h>

/* Fills buf[0..n) from the kernel's random pool (getrandom, non-blocking),
 * or from the fallback above when the pool cannot answer at once. */
void zb_random_bytes(void *buf, size_t n);

#endif
