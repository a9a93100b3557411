/*
 * zbert-embed -- embed texts in process, without a broker.
 *
 *   zbert-embed --model PATH [--level wordpiece|token|sentence]
 *               [--pooling cls|mean] [--normalize] [--threads N]
 *               [--truncate|--windows] [--tokenize-only]
 *               [--sentences] [--token-vector first|mean]
 *               [--compat none|sparknlp]
 *               [--input-format lines|jsonl]
 *               [--format jsonl|npy|table|sparknlp-json]
 *               [--batch-tokens N] [--stats] < input > output
 *   zbert-embed --split-sentences [--compat none|sparknlp]
 *               [--input-format lines|jsonl] < input > output
 *
 * --sentences makes each sentence (engine/sentences.h) its own sequence and
 * adds metadata to token objects.  At token level windows are on unless
 * --truncate is given, so that every token gets a vector.  --compat
 * sparknlp reproduces Spark NLP 2.6.4-2.7.5's BertEmbeddings pipeline
 * (engine/sparknlp.h), token level only.  --split-sentences needs no model:
 * it prints each input's sentence spans (code points, end exclusive), from
 * the default segmenter or, with --compat sparknlp, Spark's detector.
 *
 * --format table is for people: one row per token, piece or text with its
 * span, the first values of its vector and its L2 norm.  --stats prints
 * throughput on stderr at the end (time from the model being ready).
 *
 * Reads texts from stdin (one per line, or one {"text": ...} object per
 * line), embeds them in chunks (length-sorted batches inside a chunk) and
 * writes one output object per input, in input order.  A bad input line gets
 * an error object and a message on stderr naming the line; the other lines
 * go on, and the exit status is 1 at the end.
 *
 * The options are proto/settings tables, command line only (no ZBERT_*
 * variable, no config file): this program's own and client/cli/cliopt's,
 * which `zbert embed` shares; --help is generated from them.  Exit status:
 * 0, 1 on failure (or rejected input lines), 2 on a usage error.
 *
 * The command line is a contract other tools drive: options are only ever
 * added.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cliopt.h"
#include "embed.h"
#include "limits.h"
#include "model.h"
#include "sentences.h"
#include "settings.h"
#include "sparknlp.h"
#include "textio.h"

/* A chunk closes at this many texts or input bytes, whichever comes first:
 * enough texts for length sorting to pay, few enough rows to stay in RAM. */
#define S_CHUNK_TEXTS 512
#define S_CHUNK_BYTES (256u * 1024u)

typedef struct s_args {
    char model[4096]; /* --model */
    zb_cliopt_t cli;  /* the options `zbert embed` shares (client/cli/cliopt);
                       * cli.opt goes to the engine as it is */
    int threads;      /* 0: OpenMP's default */
    int batch_tokens; /* 0: the engine's default */
    bool stats;
    bool split_sentences; /* --split-sentences: spans only, no model */
} s_args_t;

/* Command line only, as zbert-embed always was: it reads no environment
 * variable and no config file. */
#define S_AT(f) ZB_SETTINGS_AT(s_args_t, f)
static const zb_settings_t s_table[] = {
    /* Not ZB_SETTINGS_REQUIRED: --split-sentences needs no model. */
    {.name = "model",
     .kind = ZB_SETTINGS_STRING,
     S_AT(model),
     .max = sizeof((s_args_t *)0)->model - 1,
     .value_name = "PATH",
     .help = "a .zbm bundle or a Hugging Face directory (required but with --split-sentences)"},
    {.name = "threads",
     .kind = ZB_SETTINGS_INT,
     S_AT(threads),
     .min = 1,
     .max = 1024,
     .value_name = "N",
     .def_help = "OpenMP's",
     .help = "threads of the forward pass"},
    {.name = "batch-tokens",
     .kind = ZB_SETTINGS_INT,
     S_AT(batch_tokens),
     .min = 1,
     .max = 1 << 20,
     .value_name = "N",
     .def_help = "the engine's",
     .help = "tokens per encoder batch"},
    {.name = "tokenize-only",
     .kind = ZB_SETTINGS_FLAG,
     S_AT(cli.opt.tokenize_only),
     .help = "wordpieces and their offsets, no vectors"},
    {.name = "split-sentences",
     .kind = ZB_SETTINGS_FLAG,
     S_AT(split_sentences),
     .help = "each text's sentence spans only (no model; --compat sparknlp: Spark's detector)"},
    {.name = "stats",
     .kind = ZB_SETTINGS_FLAG,
     S_AT(stats),
     .help = "throughput on stderr at the end"},
};
#undef S_AT

static const char s_about[] =
    "forms:\n"
    "  zbert-embed --model PATH [options] < input > output\n"
    "  zbert-embed --split-sentences [--compat none|sparknlp] [--input-format lines|jsonl]\n"
    "Input is one text per line (or one {\"text\": ...} object per line); the output has one\n"
    "object per text, in input order.  Exit status: 0; 1 on failure or when input lines were\n"
    "rejected; 2 on a usage error.\n";

/*
 * Parses the command line into a.  Returns -1 when main goes on, else the
 * exit status: 0 after --help (printed), 2 after a usage error (said on
 * stderr).
 */
static int s_parse_args(int argc, char **argv, s_args_t *a) {
    memset(a, 0, sizeof *a);
    zb_cliopt_init(&a->cli);
    size_t n_cli;
    const zb_settings_t *cli_table = zb_cliopt_table(&n_cli);
    const zb_settings_group_t groups[] = {
        {s_table, sizeof s_table / sizeof *s_table, a, true},
        {cli_table, n_cli, &a->cli, true},
    };
    const zb_settings_program_t p = {.name = "zbert-embed",
                                     .about = s_about,
                                     .groups = groups,
                                     .n_groups = 2,
                                     .hook = zb_cliopt_hook,
                                     .hook_ctx = &a->cli,
                                     .hook_help = zb_cliopt_hook_help};
    zb_settings_result_t res;
    zb_diag_t d = {{0}};
    int rc = zb_settings_parse(&p, argc, argv, &res, &d);
    zb_settings_release(&p); /* no lists in these tables */
    if (rc == 0 && res.help) {
        zb_settings_help(&p, stdout);
        return 0;
    }
    /* spans only: no model, the embedding options' rules do not apply */
    if (rc == 0 && a->split_sentences) return -1;
    /* given, even empty: opening "" fails as it always did */
    if (rc == 0 && zb_settings_source(&p, &res, "model") != ZB_SETTINGS_FROM_ARGV)
        rc = zb_diag_set(&d, ZB_EINVAL, "--model PATH is required");
    if (rc == 0) rc = zb_cliopt_finish(&a->cli, &p, &res, &d);
    if (rc != 0) {
        fprintf(stderr, "zbert-embed: %s (see zbert-embed --help)\n", zb_diag_text(&d, rc));
        return 2;
    }
    return -1;
}

/* --- results as textio views ------------------------------------------ */

/* Per-text scratch arrays in the layout textio reads. */
typedef struct s_view_buf {
    uint32_t *offsets, *byte_offsets; /* [2 * cap] */
    int32_t *ids;                     /* [cap] */
    size_t cap;
} s_view_buf_t;

static int s_view_reserve(s_view_buf_t *b, size_t n) {
    if (n <= b->cap) return 0;
    uint32_t *o = realloc(b->offsets, 2 * n * sizeof *o);
    if (o) b->offsets = o;
    uint32_t *bo = realloc(b->byte_offsets, 2 * n * sizeof *bo);
    if (bo) b->byte_offsets = bo;
    int32_t *id = realloc(b->ids, n * sizeof *id);
    if (id) b->ids = id;
    if (!o || !bo || !id) return -1;
    b->cap = n;
    return 0;
}

/* Describes result r of input item it for the writer. */
static int s_view(const zb_textio_item_t *it, const zb_embed_result_t *r, const zb_options_t *o,
                  size_t index, s_view_buf_t *b, zb_textio_text_t *t) {
    *t = (zb_textio_text_t){.index = index, .text = it->text, .text_len = it->len};
    if (it->text == NULL) {
        t->error = it->error;
        return 0;
    }
    if (r->status != 0) {
        t->error = r->detail[0] ? r->detail : zb_strerror(r->status);
        return 0;
    }
    t->truncated = r->truncated;
    t->dim = r->dim;
    t->vectors = o->tokenize_only ? NULL : r->vectors;
    if (!o->tokenize_only && o->level == ZB_LEVEL_TOKEN) {
        t->n_rows = r->words.n;
        if (s_view_reserve(b, t->n_rows)) return -1;
        for (size_t i = 0; i < t->n_rows; i++) {
            const zb_tokenizer_word_t *w = &r->words.v[i];
            b->offsets[2 * i] = w->begin;
            b->offsets[2 * i + 1] = w->end;
            b->byte_offsets[2 * i] = w->byte_begin;
            b->byte_offsets[2 * i + 1] = w->byte_end;
        }
        /* the engine's rows are the writer's: [words.n] */
        if (zb_options_meta(o)) t->meta = r->meta;
    } else if (!o->tokenize_only && o->level == ZB_LEVEL_SENTENCE) {
        t->n_rows = r->n_vectors;
    } else {
        t->n_rows = r->pieces.n;
        if (s_view_reserve(b, t->n_rows)) return -1;
        for (size_t i = 0; i < t->n_rows; i++) {
            const zb_tokenizer_piece_t *pc = &r->pieces.v[i];
            b->ids[i] = pc->id;
            b->offsets[2 * i] = pc->begin;
            b->offsets[2 * i + 1] = pc->end;
            b->byte_offsets[2 * i] = pc->byte_begin;
            b->byte_offsets[2 * i + 1] = pc->byte_end;
        }
    }
    /* after s_view_reserve: it may move the arrays */
    t->offsets = b->offsets;
    t->byte_offsets = b->byte_offsets;
    t->ids = b->ids;
    return 0;
}

/* --- main --------------------------------------------------------------- */

/* --split-sentences: one {"index","sentence_spans"} object per input. */
static int s_split_sentences(const s_args_t *a) {
    static char outbuf[1 << 16];
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    bool spark = a->cli.opt.compat == ZB_COMPAT_SPARKNLP;
    zb_textio_reader_t *reader = zb_textio_reader_new(stdin, a->cli.input);
    zb_textio_item_t it = {0};
    zb_sentences_spans_t spans = {0};
    zb_sparknlp_doc_t doc = {0};
    uint32_t *sp = NULL;
    size_t sp_cap = 0, index = 0, n_bad = 0;
    int status = 0;
    if (reader == NULL) goto oom;
    for (;; index++) {
        int got = zb_textio_read(reader, &it);
        if (got < 0) {
            fprintf(stderr, "zbert-embed: cannot read input: %s\n", strerror(errno));
            status = 1;
            break;
        }
        if (got == 0) break;
        const char *err = it.text ? NULL : it.error;
        size_t n = 0;
        if (err == NULL) {
            int rc = spark ? zb_sparknlp_sentences(it.text, it.len, &doc)
                           : zb_sentences_split(it.text, it.len, &spans);
            if (rc == ZB_ENOMEM) goto oom;
            if (rc != 0) err = spark && doc.error[0] ? doc.error : zb_strerror(rc);
            n = spark ? doc.n_sentences : spans.n;
        }
        if (err == NULL && n > sp_cap) {
            uint32_t *p = realloc(sp, 2 * n * sizeof *p);
            if (p == NULL) goto oom;
            sp = p;
            sp_cap = n;
        }
        for (size_t k = 0; err == NULL && k < n; k++) {
            sp[2 * k] = spark ? doc.sentences[k].begin : spans.v[k].begin;
            sp[2 * k + 1] = spark ? doc.sentences[k].end : spans.v[k].end;
        }
        zb_textio_write_sentence_spans(stdout, index, sp, err ? 0 : n, err);
        if (err) {
            n_bad++;
            fprintf(stderr, "zbert-embed: input line %zu: %s\n", index + 1, err);
        }
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "zbert-embed: cannot write output: %s\n", strerror(errno));
        status = 1;
    }
    if (n_bad) {
        fprintf(stderr, "zbert-embed: %zu of %zu input lines rejected\n", n_bad, index);
        status = 1;
    }
    goto out;
oom:
    fprintf(stderr, "zbert-embed: out of memory\n");
    status = 1;
out:
    zb_textio_item_clear(&it);
    zb_textio_reader_destroy(&reader);
    zb_sentences_spans_free(&spans);
    zb_sparknlp_doc_free(&doc);
    free(sp);
    return status;
}

int main(int argc, char **argv) {
    s_args_t a;
    int exit_status = s_parse_args(argc, argv, &a);
    if (exit_status >= 0) return exit_status;
    if (a.split_sentences) return s_split_sentences(&a);

    zb_diag_t d = {{0}};
    zb_model_t *model = NULL;
    zb_embed_t *emb = NULL;
    int rc = zb_model_open(a.model, &model, &d);
    if (rc != 0) {
        fprintf(stderr, "zbert-embed: %s: %s\n", a.model, zb_diag_text(&d, rc));
        return 1;
    }
    zb_embed_config_t cfg = {.threads = a.threads, .batch_tokens_max = a.batch_tokens};
    rc = zb_embed_new(model, &cfg, &emb, &d);
    if (rc != 0) {
        fprintf(stderr, "zbert-embed: %s\n", zb_diag_text(&d, rc));
        zb_model_close(&model);
        return 1;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    FILE *out = stdout;
    static char outbuf[1 << 16];
    setvbuf(out, outbuf, _IOFBF, sizeof outbuf);

    zb_textio_item_t *items = calloc(S_CHUNK_TEXTS, sizeof *items);
    zb_embed_result_t *res = calloc(S_CHUNK_TEXTS, sizeof *res);
    const char **texts = calloc(S_CHUNK_TEXTS, sizeof *texts);
    size_t *lens = calloc(S_CHUNK_TEXTS, sizeof *lens);
    s_view_buf_t vbuf = {0};
    zb_textio_reader_t *reader = zb_textio_reader_new(stdin, a.cli.input);
    zb_textio_writer_t *writer =
        zb_textio_writer_new(out, a.cli.output, &a.cli.opt, zb_embed_dim(emb));
    size_t index = 0, n_bad = 0;
    int status = 0;
    if (!items || !res || !texts || !lens || !reader || !writer) {
        fprintf(stderr, "zbert-embed: out of memory\n");
        status = 1;
        goto out;
    }
    for (bool eof = false; !eof;) {
        size_t n = 0, bytes = 0;
        while (n < S_CHUNK_TEXTS && bytes < S_CHUNK_BYTES) {
            int got = zb_textio_read(reader, &items[n]);
            if (got < 0) {
                fprintf(stderr, "zbert-embed: cannot read input: %s\n", strerror(errno));
                status = 1;
                goto out;
            }
            if (got == 0) {
                eof = true;
                break;
            }
            bytes += items[n++].len;
        }
        if (n == 0) break;
        /* Rejected lines run as empty texts so indices stay aligned; their
         * results are replaced by the error. */
        for (size_t i = 0; i < n; i++) {
            texts[i] = items[i].text ? items[i].text : "";
            lens[i] = items[i].text ? items[i].len : 0;
        }
        rc = zb_embed_run(emb, texts, lens, n, &a.cli.opt, res);
        if (rc != 0) {
            fprintf(stderr, "zbert-embed: %s\n", zb_strerror(rc));
            status = 1;
            goto out;
        }
        for (size_t i = 0; i < n; i++, index++) {
            zb_textio_text_t view;
            if (s_view(&items[i], &res[i], &a.cli.opt, index, &vbuf, &view) != 0 ||
                zb_textio_write(writer, &view) != 0) {
                fprintf(stderr, "zbert-embed: out of memory\n");
                status = 1;
                goto out;
            }
            if (view.error) {
                n_bad++;
                fprintf(stderr, "zbert-embed: input line %zu: %s\n", index + 1, view.error);
            }
            zb_textio_item_clear(&items[i]);
        }
    }
    if (zb_textio_writer_finish(writer) != 0) {
        fprintf(stderr, "zbert-embed: cannot write output: %s\n", strerror(errno));
        status = 1;
    }
    if (a.stats) {
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double sec = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        zb_embed_stats_t st;
        zb_embed_stats(emb, &st);
        fprintf(stderr,
                "zbert-embed: stats texts=%llu sequences=%llu tokens=%llu batches=%llu "
                "seconds=%.3f tokens_per_s=%.1f texts_per_s=%.1f\n",
                (unsigned long long)st.texts, (unsigned long long)st.sequences,
                (unsigned long long)st.tokens, (unsigned long long)st.batches, sec,
                sec > 0 ? (double)st.tokens / sec : 0.0, sec > 0 ? (double)st.texts / sec : 0.0);
    }
    if (n_bad) {
        fprintf(stderr, "zbert-embed: %zu of %zu input lines rejected%s\n", n_bad, index,
                a.cli.output == ZB_TEXTIO_OUT_NPY ? " (their rows are NaN)" : "");
        status = 1;
    }
out:
    for (size_t i = 0; items && i < S_CHUNK_TEXTS; i++) {
        zb_textio_item_clear(&items[i]);
        if (res) zb_embed_result_free(&res[i]);
    }
    free(items);
    free(res);
    free(texts);
    free(lens);
    free(vbuf.offsets);
    free(vbuf.byte_offsets);
    free(vbuf.ids);
    zb_textio_reader_destroy(&reader);
    zb_textio_writer_destroy(&writer);
    zb_embed_destroy(&emb);
    zb_model_close(&model);
    return status;
}
