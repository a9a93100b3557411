/*
 * cmd_broker.c -- zbert-broker: settings from the command line, ZBERT_*
 * environment variables and a config file (in that precedence, then the
 * defaults), signal handling, and the broker's loop (broker.h).
 *
 *   zbert-broker [--clients EP] [--workers EP] [--config FILE]
 *                [--curve-key FILE --allow-clients DIR --allow-workers DIR]
 *                [--insecure] [--log-level error|warn|info|debug] [--KEY VALUE ...]
 *
 * The settings are the broker's table (zb_broker_config_table) and
 * log-level, parsed by proto/settings; --help is generated from them, and
 * deploy/zbert-broker.conf.example documents the same keys.
 * SIGINT or SIGTERM once: tell the clients `closing`, start no more work,
 * deliver what the workers hold (drain-ms at most), exit 0 without an error
 * for what is left (the clients send it elsewhere).  A second signal: exit
 * now.  SIGHUP: read
 * the allow-lists again (they are also reloaded when their directories
 * change).
 *
 * Exit status: 0 after a stop by signal, 1 when the broker cannot start or
 * its loop fails, 2 for a usage error.
 */
#include <malloc.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "log.h"
#include "settings.h"

/* The only mutable globals: written by the signal handlers, read (and
 * s_reload reset) by the loop. */
static volatile sig_atomic_t s_stop, s_reload;

static void s_on_signal(int sig) {
    (void)sig;
    if (s_stop < 2) s_stop++;
}

static void s_on_hup(int sig) {
    (void)sig;
    s_reload = 1;
}

/* Settings of the process rather than of the broker. */
typedef struct s_opts {
    int log_level;
} s_opts_t;

static const zb_settings_t s_table[] = {
    ZB_SETTINGS_LOG_LEVEL(s_opts_t, log_level, "info", "what to log"),
};

static const char s_about[] =
    "SIGINT or SIGTERM: tell the clients `closing`, start no more work, deliver what the\n"
    "workers hold (drain-ms at most), exit 0; a second signal stops at once.\n"
    "SIGHUP: read allow-clients and allow-workers again (also done when they change).\n"
    "Without curve-key only local endpoints are bound (loopback, ipc://) unless --insecure.\n"
    "The keys are documented in deploy/zbert-broker.conf.example.\n";

int main(int argc, char **argv) {
    zb_broker_config_t cfg;
    zb_broker_config_default(&cfg);
    s_opts_t opts;
    memset(&opts, 0, sizeof opts);
    size_t n_broker;
    const zb_settings_t *broker_table = zb_broker_config_table(&n_broker);
    const zb_settings_group_t groups[] = {
        {broker_table, n_broker, &cfg, false},
        {s_table, sizeof s_table / sizeof *s_table, &opts, false},
    };
    const zb_settings_program_t prog = {
        .name = "zbert-broker", .about = s_about, .groups = groups, .n_groups = 2};
    zb_settings_result_t res;
    zb_diag_t d = {{0}};
    int rc = zb_settings_parse(&prog, argc, argv, &res, &d);
    /* The broker's settings hold no list: nothing stays allocated. */
    zb_settings_release(&prog);
    if (rc < 0) {
        fprintf(stderr, "zbert-broker: %s (see zbert-broker --help)\n", zb_diag_text(&d, rc));
        return 2;
    }
    if (res.help) {
        zb_settings_help(&prog, stdout);
        return 0;
    }
    zb_log_init("zbert-broker", opts.log_level);
    /* Parts and request bodies are large and short-lived: from this size
     * glibc maps each on its own and gives it back when freed, so the
     * broker's memory goes down again once a slow client has drained
     * (broker.h, Memory).  Set, the threshold also stops growing by
     * itself, which glibc does after such a block is freed. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigemptyset(&sa.sa_mask);
    /* No SA_RESTART: zmq_poll must return EINTR so the loop sees the flag. */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = s_on_hup;
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    zb_broker_t *b = NULL;
    if ((rc = zb_broker_new(&cfg, &b, &d)) < 0) {
        ZB_LOG(ZB_LOG_ERROR, "%s", zb_diag_text(&d, rc));
        return 1;
    }
    rc = zb_broker_run(b, &s_stop, &s_reload);
    zb_broker_destroy(&b);
    return rc < 0 ? 1 : 0;
}
