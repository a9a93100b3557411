/*
 * proc.h -- child processes for the integration tests (tests only): shell
 * commands, programs started in the background with their output in a
 * log, free loopback ports, and cleanup.
 *
 * Every child started with proc_spawn() is registered; proc_kill_all()
 * kills (SIGKILL) and reaps every one still registered, and runs by itself
 * at exit (registered with atexit on the first spawn), so no child outlives
 * a test binary whatever an assertion did.  A test's teardown calls it too,
 * to stop its children before the next group starts.
 *
 * Thread-safety: none; the registry belongs to the test's main thread.
 */
#ifndef ZB_TEST_PROC_H
#define ZB_TEST_PROC_H

#include <sys/types.h>

/* Where the programs are: $ZB_BIN, else "bin" (relative to the repo root,
 * where the tests run). */
const char *proc_bin(void);

/* Runs the printf-formatted shell command (at most 8 KiB) with system(3).
 * Returns its exit status, or -1 when it did not exit normally or the
 * command was too long. */
int proc_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A TCP port on 127.0.0.1 that was free a moment ago, or -1. */
int proc_free_port(void);

/* Starts argv[0] with argv (NULL-terminated), stdout and stderr written
 * to the file log (created), stdin from /dev/null; registers it.  Returns
 * its pid, or -1 when fork failed or the registry is full (64 children). */
pid_t proc_spawn(const char *log, char *const argv[]);

/* Sends sig to pid and, when it is a registered child, waits for it and
 * forgets it.  pid <= 0 does nothing. */
void proc_kill(pid_t pid, int sig);

/* SIGKILL to every registered child, each reaped and forgotten. */
void proc_kill_all(void);

/* Monotonic seconds, for generous timeouts against hangs. */
double proc_now(void);

#endif
