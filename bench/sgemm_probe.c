/*
 * sgemm_probe -- what OpenBLAS cblas_sgemm delivers at BERT's linear-layer
 * shapes on this machine, the yardstick of the benchmark's "fraction of the
 * sgemm bound" column.
 *
 *   sgemm_probe [--threads N] [--hidden H] [--intermediate I] [--seconds S]
 *
 * For M = 32, 128 and 512 rows it times C[M,N] += A[M,K] * W[N,K]^T (row
 * major, W laid out as a Linear layer's weight, beta 1 as the engine calls
 * it) at the three shapes of a layer: N,K = H,H (query, key, value, output),
 * I,H (intermediate) and H,I (output).  Each shape is timed in five trials
 * of about S/5 seconds; the best trial counts (a bound, so noise from other
 * processes should not lower it).  The layer rate at M weighs the shapes by
 * their FLOPs: 4 x (H,H), 1 x (I,H), 1 x (H,I), i.e. total FLOPs over total
 * time.  Output: one JSON object on stdout.
 *
 * Single-threaded driver; OpenBLAS runs its own N threads (OpenMP build).
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_TRIALS 5

static const int s_rows[] = {32, 128, 512};

static double s_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int s_parse_int(const char *v, int lo, int hi, int *out) {
    char *end = NULL;
    long x = strtol(v, &end, 10);
    if (end == v || *end != '\0' || x < lo || x > hi) return -1;
    *out = (int)x;
    return 0;
}

/* Fills with small values so the sums stay finite over many calls. */
static void s_fill(float *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (float)((seed >> 16) & 0x7fff) / 32768.0f * 0.02f - 0.01f;
    }
}

/* Best GFLOP/s over the trials of C += A W^T at (m, n, k). */
static double s_rate(int m, int n, int k, double trial_s, const float *a, const float *w,
                     float *c) {
    double flops = 2.0 * m * n * k, best = 0.0;
    for (int i = 0; i < 2; i++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a, k, w, k, 1.0f, c, n);
    for (int t = 0; t < S_TRIALS; t++) {
        int reps = 0;
        double t0 = s_now(), dt;
        do {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a, k, w, k, 1.0f, c,
                        n);
            reps++;
            dt = s_now() - t0;
        } while (dt < trial_s || reps < 3);
        double r = flops * reps / dt / 1e9;
        if (r > best) best = r;
    }
    return best;
}

int main(int argc, char **argv) {
    int threads = 2, hidden = 768, inter = 3072, seconds = 2;
    for (int i = 1; i < argc; i++) {
        int *dst = NULL, lo = 1, hi = 1 << 16;
        if (!strcmp(argv[i], "--threads")) {
            dst = &threads;
            hi = 256;
        } else if (!strcmp(argv[i], "--hidden")) {
            dst = &hidden;
        } else if (!strcmp(argv[i], "--intermediate")) {
            dst = &inter;
        } else if (!strcmp(argv[i], "--seconds")) {
            dst = &seconds;
            hi = 600;
        }
        if (dst == NULL || i + 1 >= argc || s_parse_int(argv[i + 1], lo, hi, dst) != 0) {
            fprintf(stderr, "usage: sgemm_probe [--threads N] [--hidden H] [--intermediate I] "
                            "[--seconds S]\n");
            return 2;
        }
        i++;
    }
    openblas_set_num_threads(threads);

    int mmax = s_rows[sizeof s_rows / sizeof s_rows[0] - 1];
    int wide = hidden > inter ? hidden : inter;
    float *a = malloc((size_t)mmax * (size_t)wide * sizeof *a);
    float *w = malloc((size_t)hidden * (size_t)inter * sizeof *w);
    float *c = malloc((size_t)mmax * (size_t)wide * sizeof *c);
    if (a == NULL || w == NULL || c == NULL) {
        fprintf(stderr, "sgemm_probe: out of memory\n");
        free(a);
        free(w);
        free(c);
        return 1;
    }
    s_fill(a, (size_t)mmax * (size_t)wide, 1);
    s_fill(w, (size_t)hidden * (size_t)inter, 2);
    memset(c, 0, (size_t)mmax * (size_t)wide * sizeof *c);

    /* The layer's shapes and how many of each one layer runs. */
    const int shape_n[3] = {hidden, inter, hidden};
    const int shape_k[3] = {hidden, hidden, inter};
    const int shape_count[3] = {4, 1, 1};
    /* 9 timed shapes share the time budget. */
    double trial_s = (double)seconds / 9.0 / S_TRIALS;

    printf("{\"threads\":%d,\"hidden\":%d,\"intermediate\":%d,\"openblas\":\"%s\",\"rows\":[",
           threads, hidden, inter, openblas_get_config());
    size_t n_rows = sizeof s_rows / sizeof s_rows[0];
    for (size_t r = 0; r < n_rows; r++) {
        int m = s_rows[r];
        double flops = 0.0, sec = 0.0, rate[3];
        for (int s = 0; s < 3; s++) {
            rate[s] = s_rate(m, shape_n[s], shape_k[s], trial_s, a, w, c);
            double f = 2.0 * m * shape_n[s] * shape_k[s] * shape_count[s];
            flops += f;
            sec += f / (rate[s] * 1e9);
        }
        printf("%s{\"m\":%d,\"hh\":%.2f,\"ih\":%.2f,\"hi\":%.2f,\"layer\":%.2f}", r ? "," : "", m,
               rate[0], rate[1], rate[2], flops / sec / 1e9);
    }
    printf("]}\n");
    free(a);
    free(w);
    free(c);
    return 0;
}
