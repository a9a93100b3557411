/*
 * cmd_broker.c -- zbert-broker: settings from the command line, ZBERT_*
 * environment variables and a config file (in that precedence, then the
 * defaults), signal handling, and the broker's loop (broker.h).
 *
 *   zbert-broker [--clients EP] [--workers EP] [--config FILE]
 *                [--log-level error|warn|info|debug] [--KEY VALUE ...]
 *
 * Every key of deploy/zbert-broker.conf.example is also an option --KEY.
 * SIGINT or SIGTERM once: stop taking requests, finish the open ones
 * (drain-ms at most), answer what is left with an error, exit 0.  A second
 * signal: answer everything open with an error now and exit.
 *
 * Exit status: 0 after a stop by signal, 1 when the broker cannot start or
 * its loop fails, 2 for a usage error.
 */
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "settings.h"
#include "log.h"

/* The only mutable global: written by the signal handler, read by the
 * loop. */
static volatile sig_atomic_t s_stop;

static void s_on_signal(int sig) {
    (void)sig;
    if (s_stop < 2) s_stop++;
}

static void s_usage(FILE *f) {
    fprintf(f, "usage: zbert-broker [--clients EP] [--workers EP] [--config FILE]\n"
               "                    [--log-level error|warn|info|debug] [--KEY VALUE ...]\n"
               "  --clients EP    endpoint to bind for clients (default tcp://127.0.0.1:5555)\n"
               "  --workers EP    endpoint to bind for workers (default tcp://127.0.0.1:5556)\n"
               "  --config FILE   key = value settings; ZBERT_<KEY> variables override them,\n"
               "                  options override both\n"
               "  other keys:");
    for (const char *const *k = zb_broker_config_keys(); *k; k++)
        if (strcmp(*k, "clients") != 0 && strcmp(*k, "workers") != 0) fprintf(f, " --%s", *k);
    fprintf(f, "\n  (see deploy/zbert-broker.conf.example)\n");
}

/* The command-line value of --key, or NULL. */
static const char *s_arg(int argc, char **argv, const char *key) {
    const char *v = NULL;
    for (int i = 1; i + 1 < argc; i += 2)
        if (strncmp(argv[i], "--", 2) == 0 && strcmp(argv[i] + 2, key) == 0) v = argv[i + 1];
    return v;
}

static bool s_known(const char *key) {
    if (strcmp(key, "config") == 0 || strcmp(key, "log-level") == 0) return true;
    for (const char *const *k = zb_broker_config_keys(); *k; k++)
        if (strcmp(*k, key) == 0) return true;
    return false;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            s_usage(stdout);
            return 0;
        }
    }
    /* Options come in pairs: --key value. */
    for (int i = 1; i < argc; i += 2) {
        if (strncmp(argv[i], "--", 2) != 0 || !s_known(argv[i] + 2)) {
            fprintf(stderr, "zbert-broker: unknown option %s\n", argv[i]);
            s_usage(stderr);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "zbert-broker: %s needs a value\n", argv[i]);
            return 2;
        }
    }

    zb_diag_t d = {{0}};
    zb_settings_file_t *conf = NULL;
    const char *path = s_arg(argc, argv, "config");
    if (path == NULL) path = zb_settings_file_get(NULL, "config");
    int rc = zb_settings_file_load(path, &conf, &d);
    if (rc < 0) {
        fprintf(stderr, "zbert-broker: %s\n", zb_diag_text(&d, rc));
        return 2;
    }

    int status = 2;
    const char *level = s_arg(argc, argv, "log-level");
    if (level == NULL) level = zb_settings_file_get(conf, "log-level");
    int lvl = level ? zb_log_parse_level(level) : ZB_LOG_INFO;
    if (lvl < 0) {
        fprintf(stderr, "zbert-broker: log-level: `%s` is not error, warn, info or debug\n", level);
        goto out;
    }
    zb_log_init("zbert-broker", lvl);

    zb_broker_config_t cfg;
    zb_broker_config_default(&cfg);
    for (const char *const *k = zb_broker_config_keys(); *k; k++) {
        const char *v = s_arg(argc, argv, *k);
        if (v == NULL) v = zb_settings_file_get(conf, *k);
        if (v == NULL) continue;
        if ((rc = zb_broker_config_set(&cfg, *k, v, &d)) < 0) {
            fprintf(stderr, "zbert-broker: %s\n", zb_diag_text(&d, rc));
            goto out;
        }
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigemptyset(&sa.sa_mask);
    /* No SA_RESTART: zmq_poll must return EINTR so the loop sees the flag. */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    zb_broker_t *b = NULL;
    if ((rc = zb_broker_new(&cfg, &b, &d)) < 0) {
        ZB_LOG(ZB_LOG_ERROR, "%s", zb_diag_text(&d, rc));
        status = 1;
        goto out;
    }
    rc = zb_broker_run(b, &s_stop);
    zb_broker_destroy(&b);
    status = rc < 0 ? 1 : 0;
out:
    zb_settings_file_destroy(&conf);
    return status;
}
