/*
 * log.c -- leveled logging to stderr.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int zb_log_level = ZB_LOG_INFO;
static char s_program[32] = "zbert";

const char *const zb_log_level_names[] = {"error", "warn", "info", "debug", NULL};

void zb_log_init(const char *program, int level) {
    snprintf(s_program, sizeof s_program, "%s", program ? program : "zbert");
    zb_log_level = level;
}

int zb_log_parse_level(const char *s) {
    for (int i = 0; i < 4; i++)
        if (s && strcmp(s, zb_log_level_names[i]) == 0) return i;
    return -1;
}

void zb_log_write(int level, const char *fmt, ...) {
    char line[1024], stamp[32];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s.%03ldZ %s[%ld] %s: %s\n", stamp, ts.tv_nsec / 1000000L, s_program,
            (long)getpid(),
            zb_log_level_names[level < 0   ? 0
                               : level > 3 ? 3
                                           : level],
            line);
}

void zb_log_sample(char *out, size_t cap, const void *bytes, size_t n) {
    const unsigned char *p = bytes;
    size_t o = 0, take = n < 128 ? n : 128;
    if (cap == 0) return;
    for (size_t i = 0; i < take; i++) {
        char buf[5];
        int k;
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\') {
            buf[0] = (char)p[i];
            k = 1;
        } else {
            k = snprintf(buf, sizeof buf, "\\x%02x", p[i]);
        }
        if (o + (size_t)k + 4 >= cap) break;
        memcpy(out + o, buf, (size_t)k);
        o += (size_t)k;
    }
    if (take < n && o + 3 < cap) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}
