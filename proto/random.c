/*
 * random.c -- non-blocking random bytes (see random.h).
 */
#include "random.h"

#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* splitmix64's step: spreads a weak seed over every output bit. */
static uint64_t s_mix(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

void zb_random_bytes(void *buf, size_t n) {
    unsigned char *p = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(p + got, n - got, GRND_NONBLOCK);
        if (r <= 0) break;
        got += (size_t)r;
    }
    if (got == n) return;
    struct timespec rt, mt;
    clock_gettime(CLOCK_REALTIME, &rt);
    clock_gettime(CLOCK_MONOTONIC, &mt);
    uint64_t state = (uint64_t)rt.tv_sec * 1000000000u + (uint64_t)rt.tv_nsec;
    state ^= ((uint64_t)mt.tv_nsec << 32) ^ ((uint64_t)getpid() << 16) ^ (uint64_t)(uintptr_t)buf;
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = s_mix(&state);
        memcpy(p + i, &v, n - i < 8 ? n - i : 8);
    }
}
