/*
 * clock.h -- the one clock every process schedules by: monotonic
 * milliseconds (CLOCK_MONOTONIC), so that deadlines, heartbeats and rates
 * never jump with the wall clock.
 *
 * Thread-safety: safe from any thread.
 */
#ifndef ZB_CLOCK_H
#define ZB_CLOCK_H

#include <stdint.h>

/* Milliseconds since an arbitrary fixed point (boot); never decreases. */
uint64_t zb_clock_ms(void);

#endif
