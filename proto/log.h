/*
 * log.h -- leveled logging to stderr for the service processes.
 *
 * ZB_LOG tests the level before evaluating its arguments, so a debug line
 * on the hot path costs one comparison when debug is off.  Lines look like
 *   2026-11-27T07:10:00.123Z zbert-broker[4242] warn: worker w1 expired
 * The level and program name are settings written once in main.
 *
 * Thread-safety: zb_log_write may be called from any thread (one fprintf
 * per line; stdio locks the stream).
 */
#ifndef ZB_LOG_H
#define ZB_LOG_H

#include <stddef.h>

typedef enum zb_log_level {
    ZB_LOG_ERROR = 0,
    ZB_LOG_WARN,
    ZB_LOG_INFO,
    ZB_LOG_DEBUG,
} zb_log_level_t;

extern int zb_log_level; /* messages above this level are skipped */

#define ZB_LOG(lvl, ...)                                                                           \
    do {                                                                                           \
        if ((int)(lvl) <= zb_log_level) zb_log_write((lvl), __VA_ARGS__);                          \
    } while (0)

/* Sets the program name shown on each line and the level. */
void zb_log_init(const char *program, int level);

/* The levels' names, indexed by zb_log_level_t, NULL-terminated: the
 * choices of every program's log-level setting. */
extern const char *const zb_log_level_names[];

/* Parses "error", "warn", "info" or "debug"; -1 for anything else. */
int zb_log_parse_level(const char *s);

void zb_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Writes a printable sample of untrusted bytes into out (NUL-terminated):
 * at most 128 input bytes, printable ASCII as is, everything else as \xHH,
 * "..." when cut.  For logging what a peer sent without letting it write
 * control characters into our logs.
 */
void zb_log_sample(char *out, size_t cap, const void *bytes, size_t n);

#endif
