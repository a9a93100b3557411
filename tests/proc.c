/*
 * proc.c -- child processes for the integration tests (see proc.h).
 */
#include "proc.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define S_CHILDREN_MAX 64

static pid_t s_children[S_CHILDREN_MAX];
static bool s_atexit;

const char *proc_bin(void) {
    const char *b = getenv("ZB_BIN");
    return b && *b ? b : "bin";
}

int proc_sh(const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof cmd) return -1;
    /* the child must not repeat what this process has buffered */
    fflush(NULL);
    int st = system(cmd);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int proc_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

pid_t proc_spawn(const char *log, char *const argv[]) {
    int slot = -1;
    for (int i = 0; i < S_CHILDREN_MAX && slot < 0; i++)
        if (s_children[i] == 0) slot = i;
    if (slot < 0) return -1;
    if (!s_atexit) {
        atexit(proc_kill_all);
        s_atexit = true;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int out = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int in = open("/dev/null", O_RDONLY);
        if (out >= 0) {
            dup2(out, 1);
            dup2(out, 2);
        }
        if (in >= 0) dup2(in, 0);
        execv(argv[0], argv);
        _exit(127);
    }
    s_children[slot] = pid;
    return pid;
}

void proc_kill(pid_t pid, int sig) {
    if (pid <= 0) return;
    kill(pid, sig);
    for (int i = 0; i < S_CHILDREN_MAX; i++)
        if (s_children[i] == pid) {
            waitpid(pid, NULL, 0);
            s_children[i] = 0;
        }
}

void proc_kill_all(void) {
    for (int i = 0; i < S_CHILDREN_MAX; i++)
        if (s_children[i] > 0) proc_kill(s_children[i], SIGKILL);
}

double proc_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
