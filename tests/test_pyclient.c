/*
 * test_pyclient.c -- the Python client (client/python/zbert_client.py, written from
 * proto/PROTOCOL.md alone) against a real zbert-broker and one zbert-worker on the
 * tiny-seed1 bundle, on 127.0.0.1 with free ports found at start.
 *
 * What it holds the client to, on 342 texts (the 40 embedding fixture texts, 300 lines of
 * the tokenization fixture with their newlines, controls and NULs, a text that is not
 * UTF-8 and one of over 512 wordpieces):
 *   - through the library API, its sentence vectors are bit-identical to zbert-embed's
 *     (the .npy files are compared byte for byte), and its wordpiece rows, ids, offsets and
 *     truncated flags equal zbert-embed's (JSONL compared line by line, floats as %.9g,
 *     which round-trips float32); its byte offsets equal the tokenization fixtures';
 *   - texts given as bytes (MessagePack bin) embed as the same texts given as str;
 *   - the invalid text fails alone with `bad_utf8`;
 *   - its command line writes byte for byte what zbert-embed writes, exit status included;
 *   - it encodes and decodes the worked examples of PROTOCOL.md section 8 and rejects
 *     malformed variants;
 *   - its status lists the worker with the bundle's identity;
 *   - against a broker with small limits it splits requests refused `too_large` and
 *     retries `busy` ones, and gets the same vectors; a passing deadline keeps the results
 *     that arrived; a generator closed early or a client timeout cancels what is open;
 *   - CURVE, against a status server in this process serving CURVE (no ZAP handler: any
 *     client key is let in): its key files as zbert keygen writes them, through the
 *     library (a path, a list, the environment) and the command line; a wrong broker key
 *     gets no answer; key files it cannot use are refused (code `key`, exit 2); its reader
 *     refuses what the C reader refuses;
 *   - liveness (protocol revision 1.3), against fake brokers in the Python process
 *     (tests/pyclient_robust.py): one routing id; a broker back from silence holding the
 *     request (not sent again), one that restarted (sent again with `have`, nothing
 *     computed twice); back-off, then `outage` when the budget is spent; `closing` with two
 *     brokers and with one; duplicate_id with `of`; model identities and pinning, and the
 *     command line's --model-id.
 * The client needs /usr/bin/python3 with pyzmq, msgpack and numpy (Debian python3-zmq,
 * python3-msgpack, python3-numpy, installed by `make deps`); without them every test is
 * skipped with a message saying so. Every child process is killed and reaped in teardown.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "curve.h"
#include "fixture.h"
#include "msg.h"
#include "model.h"
#include "proc.h"

#define S_PYTHON    "/usr/bin/python3"
#define S_TOK_CASES 300

static char s_dir[256];
static char s_bundle[512];
static char s_clients[64], s_backend[64];
static char s_clients2[64], s_backend2[64]; /* a broker with small limits */
static const char *s_skip_reason;           /* non-NULL: the client cannot run here */

/* The corpus: texts point into the fixtures or into s_extra. */
typedef struct s_text {
    const char *ptr;
    size_t len;
    const fx_case_t *fx; /* the fixture case it comes from, or NULL */
} s_text_t;

static fx_file_t s_fx_emb, s_fx_tok;
static s_text_t *s_texts;
static size_t s_n;
static size_t s_bad, s_long; /* indices of the invalid and the long text */
static char *s_long_text;

/* Asks the broker's status (through the C codec, independent of the client under test)
 * until one worker is listed; returns whether it was. */
static bool s_wait_worker(void) {
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_connect(s, s_clients);
    size_t have = 0;
    for (double end = proc_now() + 30; have != 1 && proc_now() < end;) {
        uint8_t *body;
        size_t len;
        zb_msg_status_t st = {.id = {"w", 1}};
        if (zb_msg_encode_status(&st, &body, &len, NULL) != 0) break;
        zmq_send(s, body, len, 0);
        free(body);
        zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 1000) > 0) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, s, 0) >= 0) {
                zb_msg_t r = {0};
                if (zb_msg_decode(zmq_msg_data(&m), zmq_msg_size(&m), &r, NULL) == 0 &&
                    r.type == ZB_MSG_STATUS_REPLY)
                    have = r.u.status_reply.n_workers;
                zb_msg_free(&r);
            }
            zmq_msg_close(&m);
        }
        if (have != 1) usleep(100 * 1000);
    }
    zmq_close(s);
    zmq_ctx_term(ctx);
    return have == 1;
}

/* --- the corpus ------------------------------------------------------------------------ */

static void s_add(const char *p, size_t len, const fx_case_t *fx) {
    s_texts[s_n++] = (s_text_t){p, len, fx};
}

static int s_build_corpus(void) {
    if (fx_load(fx_path("embeddings-tiny-seed1.txt"), &s_fx_emb) != 0 ||
        fx_load(fx_path("tokenization-2000.txt"), &s_fx_tok) != 0 || s_fx_tok.n < S_TOK_CASES)
        return -1;
    s_texts = calloc((size_t)s_fx_emb.n + S_TOK_CASES + 2, sizeof *s_texts);
    /* over 512 wordpieces: each repetition is 10 pieces */
    static const char rep[] = "Spark NLP embeds every token, one by one. ";
    size_t reps = 80, rl = sizeof rep - 1;
    s_long_text = malloc(reps * rl + 1);
    if (!s_texts || !s_long_text) return -1;
    for (size_t i = 0; i < reps; i++) memcpy(s_long_text + i * rl, rep, rl);
    for (int i = 0; i < s_fx_emb.n; i++)
        s_add(s_fx_emb.cases[i].text, s_fx_emb.cases[i].text_len, &s_fx_emb.cases[i]);
    s_bad = s_n;
    s_add("caf\xe9 au lait", 12, NULL); /* Latin-1 */
    for (int i = 0; i < S_TOK_CASES; i++)
        s_add(s_fx_tok.cases[i].text, s_fx_tok.cases[i].text_len, &s_fx_tok.cases[i]);
    s_long = s_n;
    s_add(s_long_text, reps * rl, NULL);
    return 0;
}

/* Whether text i holds a NUL. zbert-embed's JSONL input cuts a text at an escaped
 * \u0000 (the fixture's ids, which the client matches, cover the whole text), while its
 * line input keeps it: those texts are compared with a line-input run instead. */
static bool s_has_nul(size_t i) {
    return memchr(s_texts[i].ptr, '\0', s_texts[i].len) != NULL;
}

/* JSONL for zbert-embed --input-format jsonl (raw bytes kept: the invalid text stays
 * invalid), length-prefixed bytes for the Python driver, the one-line texts as lines
 * (plus an over-long line) for both command lines, and the texts with a NUL as lines. */
static int s_write_corpus(void) {
    char p[600];
    snprintf(p, sizeof p, "%s/corpus.jsonl", s_dir);
    FILE *j = fopen(p, "wb");
    snprintf(p, sizeof p, "%s/corpus.bin", s_dir);
    FILE *b = fopen(p, "wb");
    snprintf(p, sizeof p, "%s/lines.txt", s_dir);
    FILE *l = fopen(p, "wb");
    snprintf(p, sizeof p, "%s/nul-lines.txt", s_dir);
    FILE *z = fopen(p, "wb");
    int rc = j && b && l && z ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < s_n; i++) {
        const s_text_t *t = &s_texts[i];
        fputs("{\"text\":\"", j);
        for (size_t k = 0; k < t->len; k++) {
            unsigned char c = (unsigned char)t->ptr[k];
            if (c == '"' || c == '\\')
                fprintf(j, "\\%c", c);
            else if (c < 0x20 || c == 0x7f)
                fprintf(j, "\\u%04x", c);
            else
                fputc(c, j);
        }
        fputs("\"}\n", j);
        uint8_t h[4] = {(uint8_t)t->len, (uint8_t)(t->len >> 8), (uint8_t)(t->len >> 16),
                        (uint8_t)(t->len >> 24)};
        fwrite(h, 1, 4, b);
        fwrite(t->ptr, 1, t->len, b);
        if (!memchr(t->ptr, '\n', t->len) && !memchr(t->ptr, '\r', t->len)) {
            fwrite(t->ptr, 1, t->len, l);
            fputc('\n', l);
        }
        if (s_has_nul(i)) {
            if (memchr(t->ptr, '\n', t->len) || memchr(t->ptr, '\r', t->len)) rc = -1;
            fwrite(t->ptr, 1, t->len, z);
            fputc('\n', z);
        }
    }
    if (rc == 0) {
        for (size_t k = 0; k < (1u << 20) + 1; k++) fputc('x', l); /* over 1 MiB */
        fputs("\nlast line without a newline", l);
    }
    if (j && fclose(j)) rc = -1;
    if (b && fclose(b)) rc = -1;
    if (l && fclose(l)) rc = -1;
    if (z && fclose(z)) rc = -1;
    return rc;
}

/* --- the Python side ------------------------------------------------------------------- */

/* Library API: embeds corpus.bin four ways, writes per run NAME.jsonl (zbert-embed's
 * format), NAME.info (index, error code or ok, rows, truncated, byte offsets) and, at the
 * sentence level, NAME.npy (NaN rows for failed texts, as zbert-embed). Two runs pass the
 * texts as str (bytes when not UTF-8), two as bytes; batches of 50 and 256 texts make a
 * call span several requests, and a request span several parts. */
static const char s_driver[] =
    "import struct, sys\n"
    "import numpy as np\n"
    "import zbert_client as zc\n"
    "ep, src, od = sys.argv[1], sys.argv[2], sys.argv[3]\n"
    "data = open(src, 'rb').read()\n"
    "raw, p = [], 0\n"
    "while p < len(data):\n"
    "    n = struct.unpack_from('<I', data, p)[0]\n"
    "    raw.append(data[p + 4:p + 4 + n])\n"
    "    p += 4 + n\n"
    "def as_str(b):\n"
    "    try:\n"
    "        return b.decode('utf-8')\n"
    "    except UnicodeDecodeError:\n"
    "        return b\n"
    "texts = [as_str(b) for b in raw]\n"
    "runs = [('sentence', 50, texts, dict(level='sentence')),\n"
    "        ('sentence-mean', 256, raw, dict(level='sentence', pooling='mean', "
    "normalize=True)),\n"
    "        ('wordpiece', 50, texts, dict(level='wordpiece')),\n"
    "        ('wordpiece-windows', 256, raw, dict(level='wordpiece', windows=True)),\n"
    "        ('token-sentences-mean', 50, raw, dict(level='token', windows=True, sentences=True,\n"
    "                                               token_vector='mean')),\n"
    "        ('token-sparknlp', 256, texts, dict(level='token', compat='sparknlp'))]\n"
    "for name, batch, items, kw in runs:\n"
    "    with zc.Client(ep, batch=batch, inflight=3) as c:\n"
    "        res = c.embed(items, timeout=240, **kw)\n"
    "    assert len(res) == len(items)\n"
    "    with open(od + '/py-' + name + '.jsonl', 'w', encoding='utf-8') as f:\n"
    "        for i, r in enumerate(res):\n"
    "            f.write(zc.format_jsonl(i, r, kw['level'], items[i]) + '\\n')\n"
    "            if kw['level'] == 'token' and r.ok:\n"
    "                assert r.sentence is not None and r.piece_id.dtype == np.int32\n"
    "                assert len(r.oov) == len(r.word_start) == r.vectors.shape[0]\n"
    "    with open(od + '/py-' + name + '.info', 'w') as f:\n"
    "        for i, r in enumerate(res):\n"
    "            f.write('%d %s %d %d' % (i, r.error.code if r.error else 'ok',\n"
    "                                     r.vectors.shape[0], r.truncated))\n"
    "            if r.byte_offsets is not None:\n"
    "                f.write(' ' + ' '.join(map(str, r.byte_offsets.ravel().tolist())))\n"
    "            f.write('\\n')\n"
    "    if kw['level'] == 'sentence':\n"
    "        dim = max(r.vectors.shape[1] for r in res)\n"
    "        m = np.full((len(res), dim), np.nan, np.float32)\n"
    "        for i, r in enumerate(res):\n"
    "            if r.ok:\n"
    "                m[i] = r.vector\n"
    "        np.save(od + '/py-' + name + '.npy', m)\n"
    "print('library: %d texts embedded in %d runs' % (len(texts), len(runs)))\n";

/* PROTOCOL.md section 8 through the client's codec: 8.1 encoded (its second text, not
 * UTF-8, travels as bin: the only byte that differs), 8.2-8.4 decoded, then the same done
 * with keys reversed and wide encodings, and malformed variants; 8.9 encoded from the
 * library's options and 8.10 decoded with its token metadata, which a request that did not
 * ask for it refuses, as it refuses the metadata incomplete or at another level. */
static const char s_spec[] =
    "import sys\n"
    "import msgpack\n"
    "import zbert_client as zc\n"
    "doc = open(sys.argv[1], encoding='utf-8').read()\n"
    "def example(title):\n"
    "    block = doc.split('### ' + title, 1)[1].split('```hex', 1)[1].split('```', 1)[0]\n"
    "    return bytes.fromhex(' '.join(ln.split(';')[0] for ln in block.splitlines()))\n"
    "def bad(body, why):\n"
    "    try:\n"
    "        zc._decode(body)\n"
    "    except zc._Malformed:\n"
    "        return\n"
    "    raise SystemExit('accepted a message with ' + why)\n"
    "emb = zc._embed_msg('r1', [zc._wire_text(t)[0] for t in ['I love NLP', b'caf\\xe9']],\n"
    "                    {'level': 'token'}, 30000)\n"
    "want = example('8.1').replace(b'\\xa4caf\\xe9', b'\\xc4\\x04caf\\xe9')\n"
    "assert msgpack.packb(emb, use_bin_type=True) == want, 'embed differs from 8.1'\n"
    "first, res = zc._parse_part(zc._decode(example('8.2')), 'token')\n"
    "assert first == 0 and len(res) == 2\n"
    "assert res[0].vectors.tolist() == [[0.5, -1.0], [0.25, 2.0], [1.5, -0.5]]\n"
    "assert res[0].offsets.tolist() == [[0, 1], [2, 6], [7, 10]]\n"
    "assert res[0].byte_offsets.tolist() == [[0, 1], [2, 6], [7, 10]] and res[0].ok\n"
    "assert res[1].error.code == 'bad_utf8' and res[1].vectors.shape == (0, 2)\n"
    "done = zc._decode(example('8.3'))\n"
    "assert (done['type'], done['id'], done['texts'], done['parts']) == ('done', 'r1', 2, 1)\n"
    "err = zc._decode(example('8.4'))\n"
    "assert (err['type'], err['code']) == ('error', 'busy')\n"
    "wide = bytes.fromhex('87' 'a57061727473' 'd001' 'aa656c61707365645f6d73'\n"
    "                     'cf000000000000000c' 'a6746f6b656e73' 'cd0006' 'a57465787473'\n"
    "                     'ce00000002' 'a26964' 'd9027231' 'a474797065' 'da0004646f6e65'\n"
    "                     'a176' 'cc01')\n"
    "assert zc._decode(wide) == {'parts': 1, 'elapsed_ms': 12, 'tokens': 6, 'texts': 2,\n"
    "                            'id': 'r1', 'type': 'done', 'v': 1}\n"
    "deep = {'v': 1, 'type': 'done', 'x': [[[[[[{1: -1}]]]]]]}\n"
    "zc._decode(msgpack.packb(deep))\n"
    "deep['x'] = [deep['x']]\n"
    "bad(msgpack.packb(deep), 'nesting of depth 9')\n"
    "bad(bytes.fromhex('83a17601a474797065a4646f6e65a17601'), 'a duplicate key')\n"
    "bad(example('8.3') + b'\\xc0', 'a trailing byte')\n"
    "bad(example('8.3').replace(b'\\xa2r1', b'\\xc4\\x02r1'), 'a bin id')\n"
    "try:\n"
    "    zc._parse_part(zc._decode(example('8.2').replace(b'first\\x00', b'first\\xc2')),\n"
    "                   'token')\n"
    "    raise SystemExit('accepted a part whose first is false')\n"
    "except zc._Malformed:\n"
    "    pass\n"
    "assert zc._decode(example('8.3').replace(b'\\xa1v\\x01', b'\\xa1v\\x02')) is None\n"
    "emb = zc._embed_msg('r3', [zc._wire_text(\"Hi. Don't\")[0]],\n"
    "                    zc._embed_opts('token', sentences=True, token_vector='mean'))\n"
    "assert msgpack.packb(emb, use_bin_type=True) == example('8.9'), 'embed differs from 8.9'\n"
    "part = zc._decode(example('8.10'))\n"
    "first, res = zc._parse_part(part, 'token', True)\n"
    "r = res[0]\n"
    "assert r.sentence.tolist() == [0, 0, 1] and r.piece_id.tolist() == [8790, 119, 1790]\n"
    "assert r.word_start.tolist() == [True] * 3 and r.oov.tolist() == [False] * 3\n"
    "line = zc.format_jsonl(0, r, 'token', \"Hi. Don't\")\n"
    "want = '\"text\":\"Don\\'t\",\"begin\":4,\"end\":9,\"sentence\":1,\"pieceId\":1790'\n"
    "assert want in line, line\n"
    "def bad_part(m, want, why):\n"
    "    try:\n"
    "        zc._parse_part(m, 'token', want)\n"
    "    except zc._Malformed:\n"
    "        return\n"
    "    raise SystemExit('accepted a part with ' + why)\n"
    "bad_part(zc._decode(example('8.10')), False, 'metadata not asked for')\n"
    "bad_part(zc._decode(example('8.2')), True, 'no metadata when asked for')\n"
    "m = zc._decode(example('8.10'))\n"
    "del m['oov']\n"
    "bad_part(m, True, 'three of the four metadata keys')\n"
    "m = zc._decode(example('8.10'))\n"
    "m['oov'] = [[False, True, False]]\n"
    "bad_part(m, True, 'an oov row with a piece')\n"
    "m = zc._decode(example('8.10'))\n"
    "m['word_start'] = [[1, 1, 1]]\n"
    "bad_part(m, True, 'word_start not bool')\n"
    "print('spec examples: 8.1 and 8.9 encoded, 8.2-8.4 and 8.10 decoded, 10 malformed variants '\n"
    "      'rejected')\n";

/* Requests refused and failed: against the small broker every request of 64 texts is
 * split down to 16 (too_large), the open ones retried on busy, and the vectors still equal
 * the other broker's; a deadline that passes fails the call with `timeout` and keeps the
 * results that had arrived, which are right; a generator left early and a client timeout
 * leave no request open at the broker. */
static const char s_errors[] =
    "import sys, time\n"
    "import zbert_client as zc\n"
    "ep, ep_small = sys.argv[1], sys.argv[2]\n"
    "texts = ['text %d: %s' % (i, 'word ' * (i % 40)) for i in range(600)]\n"
    "with zc.Client(ep) as c:\n"
    "    want = [r.vectors.tobytes() for r in c.embed(texts, level='sentence')]\n"
    "with zc.Client(ep_small, batch=64, inflight=4) as c:\n"
    "    got = c.embed(texts, level='sentence', timeout=120)\n"
    "    requests = c._seq\n"
    "assert [r.vectors.tobytes() for r in got] == want\n"
    "assert requests >= 600 // 16 + 2 * 10, requests\n"
    "print('small broker: 600 texts in %d requests after splits, identical' % requests)\n"
    "def open_requests(c):\n"
    "    for _ in range(50):\n"
    "        n = c.status()['requests']\n"
    "        if n == 0:\n"
    "            return 0\n"
    "        time.sleep(0.1)\n"
    "    return n\n"
    "with zc.Client(ep, batch=3000, inflight=4) as c:\n"
    "    try:\n"
    "        c.embed(texts * 20, level='sentence', deadline_ms=20)\n"
    "        raise SystemExit('12,000 texts within 20 ms')\n"
    "    except zc.ZbertError as e:\n"
    "        assert e.code == 'timeout', e\n"
    "        kept = [(i, r) for i, r in enumerate(e.results) if r is not None]\n"
    "    assert all(r.vectors.tobytes() == want[i % 600] for i, r in kept)\n"
    "    print('deadline: timeout, %d results kept, all right' % len(kept))\n"
    "    assert open_requests(c) == 0\n"
    "    it = c.embed_iter(texts * 20, level='sentence')\n"
    "    for i, r in it:\n"
    "        if i == 10:\n"
    "            break\n"
    "    it.close()\n"
    "    assert open_requests(c) == 0, 'requests left open by a closed generator'\n"
    "    try:\n"
    "        c.embed(texts * 20, level='wordpiece', timeout=0.05)\n"
    "        raise SystemExit('12,000 texts within 50 ms')\n"
    "    except zc.ZbertError as e:\n"
    "        assert e.code == 'client_timeout', e\n"
    "    assert open_requests(c) == 0, 'requests left open by a client timeout'\n"
    "    assert len(c.embed(['after all that'], level='sentence')) == 1\n"
    "print('cancel: a closed generator and a client timeout leave no request open')\n";

/* CURVE: key files as zbert keygen writes them (DIR/py-broker.*, DIR/py-client.*,
 * DIR/py-wrong.*, DIR/py-open.key a copy of the client's secret with mode 0644), the status
 * server at argv[1] answering with uptime 4242.  Every successful status is counted by the
 * server (the test checks the count: 4). */
static const char s_curve_py[] =
    "import os, sys\n"
    "import zbert_client as zc\n"
    "from zmq.utils import z85\n"
    "ep, d, client_z85 = sys.argv[1], sys.argv[2], sys.argv[3]\n"
    "key, pub, wrong = d + '/py-client.key', d + '/py-broker.pub', d + '/py-wrong.pub'\n"
    "p, s = zc.load_certificate(key, True)\n"
    "assert z85.encode(p).decode() == client_z85 and len(s) == 32\n"
    "assert zc.load_certificate(d + '/py-client.pub', False) == (p, None)\n"
    "assert zc.load_certificate(key, False) == (p, s)\n"
    "for bk in (pub, [pub]):\n"
    "    with zc.Client(ep, curve_key=key, broker_key=bk) as c:\n"
    "        assert c.status(timeout=20)['uptime_ms'] == 4242\n"
    "os.environ['ZBERT_CURVE_KEY'], os.environ['ZBERT_BROKER_KEY'] = key, pub\n"
    "with zc.Client(ep) as c:\n"
    "    assert c.curve and c.status(timeout=20)['uptime_ms'] == 4242\n"
    "with zc.Client(ep, curve_key='', broker_key='') as c:\n"
    "    assert not c.curve\n"
    "del os.environ['ZBERT_CURVE_KEY'], os.environ['ZBERT_BROKER_KEY']\n"
    "with zc.Client(ep, curve_key=key, broker_key=wrong) as c:\n"
    "    try:\n"
    "        c.status(timeout=0.5)\n"
    "        raise SystemExit('an answer through the wrong broker key')\n"
    "    except zc.ZbertError as e:\n"
    "        assert e.code == 'client_timeout' and 'CURVE' in e.message, e\n"
    "def refused(says, **kw):\n"
    "    try:\n"
    "        zc.Client(ep, **kw).close()\n"
    "    except zc.ZbertError as e:\n"
    "        assert e.code == 'key' and says in e.message, (says, e)\n"
    "        return\n"
    "    raise SystemExit('accepted: %r' % (kw,))\n"
    "refused('No such file', curve_key=d + '/none.key', broker_key=pub)\n"
    "refused('chmod 600 ' + d + '/py-open.key', curve_key=d + '/py-open.key', broker_key=pub)\n"
    "refused('no curve secret-key', curve_key=pub, broker_key=pub)\n"
    "refused('not a regular file', curve_key=key, broker_key=d)\n"
    "refused('go together', curve_key=key, broker_key='')\n"
    "refused('go together', curve_key='', broker_key=pub)\n"
    "refused('2 broker keys for 1 broker:', curve_key=key, broker_key=[pub, pub])\n"
    "# the reader refuses what the C reader refuses, naming the line\n"
    "P, S = z85.encode(p).decode(), z85.encode(s).decode()\n"
    "W = z85.encode(zc.load_certificate(wrong, False)[0]).decode()\n"
    "ok = [('curve\\n    public-key = \"%s\"\\n' % P, False),\n"
    "      ('curve\\r\\n    public-key = %s\\r\\n    secret-key = %s\\r\\n' % (P, S), True),\n"
    "      (\"curve\\n\\tpublic-key\\t=\\t'%s' # c\\n\\tsecret-key = '%s'\\n\" % (P, S), True),\n"
    "      ('#' * 1024 + '\\ncurve\\n    secret-key = %s\\n' % S, True)]\n"
    "for text, secret in ok:\n"
    "    got = zc.parse_certificate(text.encode(), secret, 't')\n"
    "    assert got[0] == p and (got[1] == s) == secret, text\n"
    "bad = [('curve\\n', 't: no curve public-key'),\n"
    "       ('curve\\n    public-key = %s\\n' % P[:39], 't:2: public-key is not a key'),\n"
    "       ('curve\\n    public-key = %s0\\n' % P, 't:2: public-key is not a key'),\n"
    "       ('curve\\n    public-key = ~%s\\n' % P[1:], 't:2: public-key is not a key'),\n"
    "       ('curve\\n    public-key = %%%%%%%%%%%s\\n' % P[5:], 't:2: public-key is not a key'),\n"
    "       ('curve\\n    public-key = %s\\n    public-key = %s\\n' % (P, P), 't:3: public-key "
    "given twice'),\n"
    "       ('curve\\n    public-key = %s\\n    secret-key = %s\\n' % (W, S), 't: public-key is "
    "not that of secret-key'),\n"
    "       ('curve\\n# a\\0b\\n', 't:2: a NUL byte'),\n"
    "       ('curve\\n' + '#' * 1025 + '\\n', 't:2: line over 1024 bytes'),\n"
    "       ('#' * 65537, 't: over 65536 bytes'),\n"
    "       ('curve\\n    public-key = \"%s\\n' % P, 't:2: a quote is not closed'),\n"
    "       ('curve\\n    public-key = %s\\n' % P, 't: no curve secret-key')]\n"
    "for text, says in bad:\n"
    "    try:\n"
    "        zc.parse_certificate(text.encode(), says.endswith('secret-key'), 't')\n"
    "        raise SystemExit('accepted: %r' % text[:80])\n"
    "    except zc.ZbertError as e:\n"
    "        assert e.code == 'key' and e.message.startswith(says), (says, e.message)\n"
    "print('curve: 3 statuses through CURVE, a wrong broker key unanswered, 7 settings and '\n"
    "      '%d texts refused, %d accepted' % (len(bad), len(ok)))\n";

/* A broker that only answers `status`, serving CURVE with the key pair it is given, on a
 * loopback port, in a thread: the CURVE server the Python client talks to. */
typedef struct s_curve_server {
    void *ctx, *sock;
    char ep[64];
    pthread_t thread;
    atomic_int stop, statuses;
} s_curve_server_t;

static void *s_curve_main(void *arg) {
    s_curve_server_t *sv = arg;
    while (!atomic_load(&sv->stop)) {
        zmq_pollitem_t it = {sv->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 20) <= 0) continue;
        uint8_t rid[256];
        int rlen = zmq_recv(sv->sock, rid, sizeof rid, 0);
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (rlen > 0 && zmq_msg_recv(&m, sv->sock, 0) >= 0) {
            zb_msg_t q = {0};
            if (zb_msg_decode(zmq_msg_data(&m), zmq_msg_size(&m), &q, NULL) == 0 &&
                q.type == ZB_MSG_STATUS) {
                zb_msg_status_reply_t r = {.id = q.u.status.id, .uptime_ms = 4242};
                uint8_t *body;
                size_t len;
                if (zb_msg_encode_status_reply(&r, &body, &len, NULL) == 0) {
                    zmq_send(sv->sock, rid, (size_t)rlen, ZMQ_SNDMORE);
                    zmq_send(sv->sock, body, len, 0);
                    free(body);
                    atomic_fetch_add(&sv->statuses, 1);
                }
            }
            zb_msg_free(&q);
        }
        zmq_msg_close(&m);
    }
    return NULL;
}

/* Writes a script into the temporary folder; returns its path (static buffer). */
static const char *s_script(const char *name, const char *text) {
    static char p[600];
    snprintf(p, sizeof p, "%s/%s", s_dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
    return p;
}

/* Runs the client's Python (a script path or `-m zbert_client ...`) with a time limit. */
#define S_RUN_PY "PYTHONPATH=client/python timeout 300 " S_PYTHON

/* --- comparing outputs ----------------------------------------------------------------- */

/* The lines of a file: malloc'd array of pointers into *buf (NULs written over '\n'). */
static char **s_lines(const char *path, char **buf, size_t *n) {
    size_t len;
    *buf = fx_read_file(path, &len);
    assert_non_null(*buf);
    char **v = calloc(len + 1, sizeof *v);
    assert_non_null(v);
    *n = 0;
    for (char *p = *buf; p < *buf + len;) {
        char *nl = memchr(p, '\n', (size_t)(*buf + len - p));
        v[(*n)++] = p;
        if (!nl) break;
        *nl = '\0';
        p = nl + 1;
    }
    return v;
}

/* The part of a JSONL object after its "index", which must be i. */
static const char *s_after_index(const char *line, size_t i) {
    char want[48];
    int n = snprintf(want, sizeof want, "{\"index\":%zu,", i);
    if (strncmp(line, want, (size_t)n) != 0) {
        fprintf(stderr, "line %zu does not start with %s: %.80s\n", i, want, line);
        fail();
    }
    return line + n;
}

/* zbert-embed's JSONL (ref: every text through its JSONL input; ref_nul: the texts with a
 * NUL, in order, through its line input) against the client's, object by object:
 * identical but for the invalid text, an error in both (its message is the service's in
 * the client's). */
static void s_compare_jsonl(const char *ref_path, const char *ref_nul_path, const char *py_path) {
    char *ra, *na, *pa;
    size_t nr, nn, np;
    char **r = s_lines(ref_path, &ra, &nr);
    char **nul = s_lines(ref_nul_path, &na, &nn);
    char **p = s_lines(py_path, &pa, &np);
    assert_int_equal(nr, s_n);
    assert_int_equal(np, s_n);
    size_t same = 0, k = 0;
    for (size_t i = 0; i < s_n; i++) {
        const char *py = s_after_index(p[i], i);
        const char *ref = s_has_nul(i) ? s_after_index(nul[k], k) : s_after_index(r[i], i);
        k += s_has_nul(i);
        if (i == s_bad) {
            assert_true(strncmp(ref, "\"error\":\"", 9) == 0);
            assert_true(strncmp(py, "\"error\":\"", 9) == 0);
            continue;
        }
        if (strcmp(ref, py) == 0)
            same++;
        else if (same + 1 == i)
            fprintf(stderr, "text %zu differs:\n  zbert-embed: %.200s\n  client:      %.200s\n", i,
                    ref, py);
    }
    assert_int_equal(k, nn);
    printf("%s: %zu of %zu objects identical to zbert-embed's (%zu with a NUL through its "
           "line input), +1 error in both\n",
           strrchr(py_path, '/') + 1, same, s_n - 1, nn);
    assert_int_equal(same, s_n - 1);
    free(r);
    free(nul);
    free(p);
    free(ra);
    free(na);
    free(pa);
}

/* A float32 .npy (version 1 header): its bytes, header length and row count. */
static char *s_npy(const char *path, size_t *len, size_t *header, size_t *rows, size_t cols) {
    char *b = fx_read_file(path, len);
    assert_non_null(b);
    assert_true(*len >= 10 && memcmp(b, "\x93NUMPY\x01\x00", 8) == 0);
    *header = 10 + (size_t)(unsigned char)b[8] + 256 * (size_t)(unsigned char)b[9];
    assert_true(*header <= *len && (*len - *header) % (cols * 4) == 0);
    *rows = (*len - *header) / (cols * 4);
    return b;
}

/* The client's sentence .npy against zbert-embed's, row by row (texts with a NUL from the
 * line-input run, as above), and header for header: bit-identical. */
static void s_compare_npy(const char *ref_path, const char *ref_nul_path, const char *py_path) {
    size_t lr, ln, lp, hr, hn, hp, nr, nn, np;
    char *r = s_npy(ref_path, &lr, &hr, &nr, 64);
    char *n = s_npy(ref_nul_path, &ln, &hn, &nn, 64);
    char *p = s_npy(py_path, &lp, &hp, &np, 64);
    assert_int_equal(nr, s_n);
    assert_int_equal(np, s_n);
    assert_int_equal(hp, hr);
    assert_memory_equal(p, r, hr);
    size_t same = 0, k = 0;
    for (size_t i = 0; i < s_n; i++) {
        const char *ref = s_has_nul(i) ? n + hn + k++ * 256 : r + hr + i * 256;
        same += memcmp(ref, p + hp + i * 256, 256) == 0;
    }
    assert_int_equal(k, nn);
    printf("%s: %zu of %zu rows bit-identical to zbert-embed's (NaN for the invalid text)\n",
           strrchr(py_path, '/') + 1, same, s_n);
    assert_int_equal(same, s_n);
    free(r);
    free(n);
    free(p);
}

/* The client's NAME.info: every text ok but the invalid one (bad_utf8, no rows); the long
 * text truncated unless windows (no text is with windows); at the wordpiece level, rows and
 * byte offsets as the fixtures' for the texts they hold untruncated. */
static void s_check_info(const char *name, bool wordpiece, bool windows) {
    char path[600], *buf;
    size_t n;
    snprintf(path, sizeof path, "%s/py-%s.info", s_dir, name);
    char **l = s_lines(path, &buf, &n);
    assert_int_equal(n, s_n);
    size_t checked = 0;
    for (size_t i = 0; i < n; i++) {
        char *p = l[i];
        unsigned long idx = strtoul(p, &p, 10);
        char code[32];
        int used = 0;
        assert_int_equal(sscanf(p, " %31s%n", code, &used), 1);
        p += used;
        unsigned long rows = strtoul(p, &p, 10), trunc = strtoul(p, &p, 10);
        assert_int_equal(idx, i);
        if (i == s_bad) {
            assert_string_equal(code, "bad_utf8");
            assert_int_equal(rows, 0);
            continue;
        }
        assert_string_equal(code, "ok");
        if (windows) assert_int_equal(trunc, 0);
        if (i == s_long) assert_int_equal(trunc, !windows);
        if (!wordpiece) {
            assert_int_equal(rows, 1);
            continue;
        }
        if (i == s_long) {
            if (windows)
                assert_true(rows > 512);
            else
                assert_int_equal(rows, 512);
        }
        /* fixtures of fewer than 512 ids are untruncated */
        const fx_case_t *fx = s_texts[i].fx;
        if (!fx || fx->n_ids >= 512) continue;
        assert_int_equal(rows, fx->n_ids);
        for (int k = 0; k < 2 * fx->n_ids; k++)
            assert_int_equal(strtoul(p, &p, 10), fx->byte_off[k]);
        checked++;
    }
    if (wordpiece) printf("%s: byte offsets of %zu texts equal to the fixtures'\n", name, checked);
    free(l);
    free(buf);
}

/* --- setup ----------------------------------------------------------------------------- */

static int setup(void **st) {
    (void)st;
    if (access(S_PYTHON, X_OK) != 0) {
        s_skip_reason = S_PYTHON " is missing (install python3, python3-zmq, python3-msgpack "
                                 "and python3-numpy, or run `make deps`)";
        return 0;
    }
    if (proc_sh(S_PYTHON " -c 'import zmq, msgpack, numpy' 2> /dev/null") != 0) {
        s_skip_reason = S_PYTHON " lacks zmq, msgpack or numpy (install python3-zmq, "
                                 "python3-msgpack and python3-numpy, or run `make deps`)";
        return 0;
    }
    snprintf(s_dir, sizeof s_dir, "/tmp/zbert-pyclient-XXXXXX");
    if (!mkdtemp(s_dir)) return -1;
    snprintf(s_bundle, sizeof s_bundle, "%s/tiny.zbm", s_dir);
    if (proc_sh("%s/zbert-model convert %s -o %s > /dev/null", proc_bin(), fx_path("tiny-seed1"),
                s_bundle))
        return -1;
    if (s_build_corpus() != 0 || s_write_corpus() != 0) return -1;
    int pc = proc_free_port(), pw = proc_free_port();
    int pc2 = proc_free_port(), pw2 = proc_free_port();
    if (pc < 0 || pw < 0 || pc2 < 0 || pw2 < 0) return -1;
    snprintf(s_clients, sizeof s_clients, "tcp://127.0.0.1:%d", pc);
    snprintf(s_backend, sizeof s_backend, "tcp://127.0.0.1:%d", pw);
    snprintf(s_clients2, sizeof s_clients2, "tcp://127.0.0.1:%d", pc2);
    snprintf(s_backend2, sizeof s_backend2, "tcp://127.0.0.1:%d", pw2);
    char broker[512], worker[512], blog[512], blog2[512], wlog[512];
    snprintf(broker, sizeof broker, "%s/zbert-broker", proc_bin());
    snprintf(worker, sizeof worker, "%s/zbert-worker", proc_bin());
    snprintf(blog, sizeof blog, "%s/broker.log", s_dir);
    snprintf(blog2, sizeof blog2, "%s/broker2.log", s_dir);
    snprintf(wlog, sizeof wlog, "%s/worker.log", s_dir);
    char *bargv[] = {broker, "--clients", s_clients, "--workers", s_backend, NULL};
    /* 16 texts per request, 40 texts open: bigger requests are refused too_large, more
     * at once busy */
    char *bargv2[] = {
        broker, "--clients",         s_clients2, "--workers", s_backend2, "--request-texts-max",
        "16",   "--queue-texts-max", "40",       NULL};
    char *wargv[] = {worker,     "--model",   s_bundle, "--broker", s_backend, "--broker",
                     s_backend2, "--threads", "2",      "--name",   "py-test", NULL};
    proc_spawn(blog, bargv);
    proc_spawn(blog2, bargv2);
    proc_spawn(wlog, wargv);
    return s_wait_worker() ? 0 : -1;
}

static int teardown(void **st) {
    (void)st;
    proc_kill_all();
    if (s_dir[0] && getenv("ZB_KEEP_LOGS") == NULL) proc_sh("rm -rf '%s'", s_dir);
    fx_free(&s_fx_emb);
    fx_free(&s_fx_tok);
    free(s_texts);
    free(s_long_text);
    return 0;
}

#define S_NEED_PYTHON()                                                                            \
    do {                                                                                           \
        if (s_skip_reason) {                                                                       \
            printf("skipped: the Python client cannot run: %s\n", s_skip_reason);                  \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

/* --- tests ----------------------------------------------------------------------------- */

static void test_spec_examples(void **st) {
    (void)st;
    S_NEED_PYTHON();
    assert_int_equal(proc_sh(S_RUN_PY " %s proto/PROTOCOL.md", s_script("spec.py", s_spec)), 0);
}

static void test_status(void **st) {
    (void)st;
    S_NEED_PYTHON();
    char out[600];
    snprintf(out, sizeof out, "%s/status.json", s_dir);
    assert_int_equal(proc_sh(S_RUN_PY " -m zbert_client status --broker %s > %s", s_clients, out),
                     0);
    size_t len;
    char *text = fx_read_file(out, &len);
    assert_non_null(text);
    cJSON *j = cJSON_Parse(text);
    assert_non_null(j);
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(j, "workers");
    assert_int_equal(cJSON_GetArraySize(w), 1);
    const cJSON *w0 = cJSON_GetArrayItem(w, 0);
    zb_model_t *m = NULL;
    assert_int_equal(zb_model_open(s_bundle, &m, NULL), 0);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(w0, "model")->valuestring,
                        zb_model_identity(m));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(w0, "name")->valuestring, "py-test");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(w0, "dim")->valueint, 64);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(w0, "threads")->valueint, 2);
    assert_non_null(cJSON_GetObjectItemCaseSensitive(j, "latency_ms"));
    zb_model_close(&m);
    cJSON_Delete(j);
    free(text);
}

/* The library API on the whole corpus, six ways (two at the token level with token
 * metadata), against zbert-embed on the same texts. */
static void test_library(void **st) {
    (void)st;
    S_NEED_PYTHON();
    assert_int_equal(proc_sh(S_RUN_PY " %s %s %s/corpus.bin %s", s_script("driver.py", s_driver),
                             s_clients, s_dir, s_dir),
                     0);
    static const struct {
        const char *name, *opts;
        bool wordpiece, windows, token;
    } runs[] = {
        {"sentence", "--level sentence", false, false, false},
        {"sentence-mean", "--level sentence --pooling mean --normalize", false, false, false},
        {"wordpiece", "--level wordpiece", true, false, false},
        {"wordpiece-windows", "--level wordpiece --windows", true, true, false},
        {"token-sentences-mean", "--sentences --token-vector mean", false, true, true},
        {"token-sparknlp", "--compat sparknlp", false, false, true},
    };
    for (size_t r = 0; r < sizeof runs / sizeof *runs; r++) {
        const char *name = runs[r].name;
        for (int npy = 0; npy <= (!runs[r].wordpiece && !runs[r].token); npy++) {
            const char *fmt = npy ? "--format npy" : "", *ext = npy ? "npy" : "jsonl";
            /* zbert-embed rejects the invalid line: exit status 1 */
            assert_int_equal(proc_sh("%s/zbert-embed --model %s --input-format jsonl %s %s < "
                                     "%s/corpus.jsonl > %s/ref-%s.%s 2> /dev/null",
                                     proc_bin(), s_bundle, runs[r].opts, fmt, s_dir, s_dir, name,
                                     ext),
                             1);
            assert_int_equal(proc_sh("%s/zbert-embed --model %s %s %s < %s/nul-lines.txt > "
                                     "%s/refnul-%s.%s",
                                     proc_bin(), s_bundle, runs[r].opts, fmt, s_dir, s_dir, name,
                                     ext),
                             0);
            char ref[600], nul[600], py[600];
            snprintf(ref, sizeof ref, "%s/ref-%s.%s", s_dir, name, ext);
            snprintf(nul, sizeof nul, "%s/refnul-%s.%s", s_dir, name, ext);
            snprintf(py, sizeof py, "%s/py-%s.%s", s_dir, name, ext);
            if (npy)
                s_compare_npy(ref, nul, py);
            else
                s_compare_jsonl(ref, nul, py);
        }
        if (!runs[r].token) s_check_info(name, runs[r].wordpiece, runs[r].windows);
    }
}

static void test_errors(void **st) {
    (void)st;
    S_NEED_PYTHON();
    assert_int_equal(
        proc_sh(S_RUN_PY " %s %s %s", s_script("errors.py", s_errors), s_clients, s_clients2), 0);
}

/* The command line against zbert-embed on the one-line texts, an over-long line and a last
 * line without newline: the same bytes out, the same exit status (1: two rejected lines). */
static void test_cli(void **st) {
    (void)st;
    S_NEED_PYTHON();
    static const char *opts[] = {
        "--level sentence",
        "--level sentence --pooling mean --normalize --format npy",
        "--level sentence --format npy --windows",
        "--level wordpiece",
        "--level wordpiece --windows --normalize",
        "--level wordpiece --sentences",
        "--level token --sentences --token-vector mean",
        "--level token --compat sparknlp",
        "--level token --truncate --normalize",
    };
    for (size_t i = 0; i < sizeof opts / sizeof *opts; i++) {
        int a = proc_sh("%s/zbert-embed --model %s %s < %s/lines.txt > %s/cli-a.out 2> /dev/null",
                        proc_bin(), s_bundle, opts[i], s_dir, s_dir);
        int b = proc_sh(S_RUN_PY " -m zbert_client --broker %s %s --batch 40 < %s/lines.txt > "
                                 "%s/cli-b.out 2> %s/cli-b.err",
                        s_clients, opts[i], s_dir, s_dir, s_dir);
        assert_int_equal(a, 1);
        assert_int_equal(b, a);
        int same = proc_sh("cmp %s/cli-a.out %s/cli-b.out", s_dir, s_dir);
        assert_int_equal(same, 0);
        printf("zbert_client %s: identical to zbert-embed\n", opts[i]);
    }
}

/* The client's liveness against scripted fake brokers (tests/pyclient_robust.py). */
static void test_robust(void **st) {
    (void)st;
    S_NEED_PYTHON();
    assert_int_equal(proc_sh(S_RUN_PY " tests/pyclient_robust.py"), 0);
}

/* The client over CURVE (s_curve_py), then its command line: status with key files, and a
 * secret key file others may read refused with exit 2. */
static void test_curve(void **st) {
    (void)st;
    S_NEED_PYTHON();
    zb_curve_cert_t server, client, wrong;
    char base[600];
    const struct {
        const char *name;
        zb_curve_cert_t *c;
    } pairs[] = {{"py-broker", &server}, {"py-client", &client}, {"py-wrong", &wrong}};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(zb_curve_keypair(pairs[i].c, pairs[i].name, NULL), 0);
        snprintf(base, sizeof base, "%s/%s", s_dir, pairs[i].name);
        assert_int_equal(zb_curve_save(base, pairs[i].c, NULL), 0);
    }
    assert_int_equal(proc_sh("cp %s/py-client.key %s/py-open.key && chmod 644 %s/py-open.key",
                             s_dir, s_dir, s_dir),
                     0);
    s_curve_server_t sv = {.ctx = zmq_ctx_new()};
    sv.sock = zmq_socket(sv.ctx, ZMQ_ROUTER);
    int zero = 0;
    zmq_setsockopt(sv.sock, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zb_curve_server_socket(sv.sock, &server, "clients", NULL), 0);
    assert_int_equal(zmq_bind(sv.sock, "tcp://127.0.0.1:*"), 0);
    size_t n = sizeof sv.ep;
    assert_int_equal(zmq_getsockopt(sv.sock, ZMQ_LAST_ENDPOINT, sv.ep, &n), 0);
    assert_int_equal(pthread_create(&sv.thread, NULL, s_curve_main, &sv), 0);
    char z[ZB_CURVE_Z85_CHARS + 1];
    zb_curve_z85(client.pub, z);
    int rc = proc_sh(S_RUN_PY " %s %s %s '%s'", s_script("curve.py", s_curve_py), sv.ep, s_dir, z);
    int statuses = atomic_load(&sv.statuses);
    int cli = proc_sh(S_RUN_PY " -m zbert_client status --broker %s --curve-key %s/py-client.key "
                               "--broker-key %s/py-broker.pub > %s/curve-status.json",
                      sv.ep, s_dir, s_dir, s_dir);
    int cli_open = proc_sh(S_RUN_PY " -m zbert_client status --broker %s --curve-key "
                                    "%s/py-open.key --broker-key %s/py-broker.pub 2> %s/curve.err",
                           sv.ep, s_dir, s_dir, s_dir);
    atomic_store(&sv.stop, 1);
    pthread_join(sv.thread, NULL);
    zmq_close(sv.sock);
    zmq_ctx_term(sv.ctx);
    assert_int_equal(rc, 0);
    assert_int_equal(statuses, 3);
    assert_int_equal(atomic_load(&sv.statuses), 4);
    assert_int_equal(cli, 0);
    assert_int_equal(cli_open, 2);
    char path[600];
    snprintf(path, sizeof path, "%s/curve-status.json", s_dir);
    size_t len;
    char *text = fx_read_file(path, &len);
    assert_non_null(text);
    assert_non_null(strstr(text, "\"uptime_ms\": 4242"));
    free(text);
    snprintf(path, sizeof path, "%s/curve.err", s_dir);
    text = fx_read_file(path, &len);
    assert_non_null(text);
    assert_non_null(strstr(text, "py-open.key"));
    assert_non_null(strstr(text, "chmod 600"));
    free(text);
    explicit_bzero(&client, sizeof client);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_examples), cmocka_unit_test(test_status),
        cmocka_unit_test(test_library),       cmocka_unit_test(test_cli),
        cmocka_unit_test(test_errors),        cmocka_unit_test(test_curve),
        cmocka_unit_test(test_robust),
    };
    return cmocka_run_group_tests_name("pyclient", tests, setup, teardown);
}
