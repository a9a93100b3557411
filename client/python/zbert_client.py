"""zbert_client -- a Python client for the zbert embedding service.

Written from proto/PROTOCOL.md (version 1, revision 1.3) alone: one DEALER socket connected to
a broker's client endpoint, one MessagePack map per ZeroMQ frame, vectors as little-endian
float32 `bin`.  It is a robust client in the sense of PROTOCOL.md section 10: one routing id for
its life, pings, an outage budget with back-off, resumption with `open` and `have`, `closing`,
model pinning.

Library:

    from zbert_client import Client
    with Client("tcp://127.0.0.1:5555") as c:
        results = c.embed(["I love NLP", b"caf\\xe9"], level="wordpiece")
        results[0].vectors   # numpy float32 [rows, dim] (read-only)
        results[0].offsets   # numpy uint32 [rows, 2], [begin, end) in code points
        results[0].ids       # numpy uint32 [rows] (wordpiece level)
        results[1].error     # TextError(code="bad_utf8", message=...)
        toks = c.embed(["Hi. Don't"], sentences=True, token_vector="mean")
        toks[0].sentence     # numpy uint32 [rows]: each token's sentence (token metadata)
        toks[0].piece_id     # numpy int32 [rows]: its first wordpiece's id, -1 when oov
        c.status()           # the broker's status_reply as a dict

    # Several brokers to fail over between, a 10-minute outage budget, one model
    with Client(["tcp://b1:5555", "tcp://b2:5555"], outage=600.0) as c:
        c.embed(texts, level="sentence", model="42e2dd7eb5859c2f")

    # CurveZMQ: this client's secret key file and the broker's public key file, as written
    # by `zbert keygen NAME` (NAME.key, NAME.pub)
    with Client("tcp://broker:5555", curve_key="me.key", broker_key="broker.pub") as c:
        c.status()

Command line (`python3 -m zbert_client` with this folder on PYTHONPATH, or run this file):

    zbert_client.py [embed] [--broker EP]... [--level sentence|wordpiece|token]
                    [--pooling cls|mean] [--normalize] [--windows] [--sentences]
                    [--token-vector first|mean] [--compat none|sparknlp] [--model-id ID]
                    [--format jsonl|npy] ... < lines > output
    zbert_client.py status [--broker EP]
    (both also --curve-key FILE --broker-key FILE.pub)

`embed` reads one text per line and writes exactly what `zbert-embed` writes for the same
options (JSONL with floats as %.9g, or an N x dim float32 .npy with NaN rows for rejected
lines); the level defaults to `sentence`.

Invariants: every request id is used once per Client (busy retries and resumptions resend the
same id, as the protocol asks); every text reaches the caller once, in text order, whatever
arrives twice; every received message is validated before it is used, and a malformed answer
fails the call with code `protocol`.
Thread-safety: a Client owns one ZeroMQ socket and must be used by one thread at a time.
"""

import json
import math
import os
import secrets
import stat
import sys
import time
from collections import deque

import msgpack
import numpy as np
import zmq
from zmq.utils import z85

__all__ = ["Client", "TextResult", "TextError", "ZbertError", "format_jsonl",
           "load_certificate", "parse_certificate", "main"]

PROTOCOL_VERSION = 1
DEFAULT_BROKER = "tcp://127.0.0.1:5555"

# Limits of PROTOCOL.md section 2.
BODY_MAX = 256 << 20
TEXTS_MAX = 100_000
TEXT_BYTES_MAX = 1 << 20
ID_MAX = 64
KEYS_MAX = 64
KEY_BYTES_MAX = 64
DEPTH_MAX = 8
DIM_MAX = 16_384
MESSAGE_MAX = 1024
WORKERS_MAX = 4096
U32_LIMIT = 1 << 32
OPEN_MAX = 1024
NAME_MAX = 256  # bytes of a model identity

# Liveness (PROTOCOL.md 10): reconnections while no broker answers wait retry x 2, x 4, ...
# up to this, each 20 % shorter or longer at random.
BACKOFF_MAX_S = 30.0
BACKOFF_JITTER = 0.2

LEVELS = ("token", "wordpiece", "sentence")
POOLINGS = ("cls", "mean")
TOKEN_VECTORS = ("first", "mean")
COMPATS = ("none", "sparknlp")
META_KEYS = ("sentence", "piece_id", "word_start", "oov")


class ZbertError(Exception):
    """A call that failed as a whole.

    code: the broker's error code (`busy`, `timeout`, `no_model`, ... or one this client
    does not know), or a local one: `protocol` (a malformed or unexpected answer),
    `client_timeout` (the call's own timeout passed), `outage` (no broker answered, or the
    only one kept saying `closing`, for the outage budget), `model` (results of another
    model than the call's, or naming none for a call pinned to one), `usage` (bad
    arguments), `key` (a CURVE key file that cannot be used: missing, unreadable,
    malformed, a secret key readable by others, a .pub where the secret key is needed).
    results: for embed(), a list as long as the texts with the results received before the
    failure (the protocol keeps them valid) and None for the others; None otherwise.
    """

    def __init__(self, code, message, request_id=None):
        super().__init__(f"{code}: {message}" + (f" (request {request_id})" if request_id else ""))
        self.code = code
        self.message = message
        self.request_id = request_id
        self.results = None
        self.received = {}


class TextError:
    """A per-text failure: code `bad_utf8`, `too_large`, `unsupported`, `internal` (or a
    newer one)."""

    __slots__ = ("code", "message")

    def __init__(self, code, message):
        self.code = code
        self.message = message

    def __repr__(self):
        return f"TextError({self.code!r}, {self.message!r})"


class TextResult:
    """What the service returned for one text.

    vectors: float32 [rows, dim] (sentence level: one row; zero rows for a failed text).
    offsets, byte_offsets: uint32 [rows, 2], [begin, end) in code points / UTF-8 bytes
    (token and wordpiece levels, else None). ids: uint32 [rows] (wordpiece level, else None).
    Token metadata (token level, when the call asked for it with sentences, compat or
    token_meta; else None): sentence uint32 [rows], the 0-based sentence of each token;
    piece_id int32 [rows], the vocabulary id of its first (with compat: fed) wordpiece, -1
    when the token has none; word_start bool [rows], that piece is not a `##` one; oov bool
    [rows], the token has no wordpiece (its vector is zeros).
    truncated: the text was cut to the model's positions. error: a TextError or None.
    model: the identity of the model that made it (None from a broker before revision 1.3).
    The float arrays are read-only views into the message they came in.
    """

    __slots__ = ("vectors", "offsets", "byte_offsets", "ids", "truncated", "error", "sentence",
                 "piece_id", "word_start", "oov", "model")

    def __init__(self, vectors, offsets=None, byte_offsets=None, ids=None, truncated=False,
                 error=None):
        self.vectors = vectors
        self.offsets = offsets
        self.byte_offsets = byte_offsets
        self.ids = ids
        self.truncated = truncated
        self.error = error
        self.sentence = None
        self.piece_id = None
        self.word_start = None
        self.oov = None
        self.model = None

    @property
    def ok(self):
        return self.error is None

    @property
    def vector(self):
        """The sentence vector (float32 [dim]); only for a sentence-level result."""
        if self.error is not None or self.vectors.shape[0] != 1:
            raise ValueError("no single vector in this result")
        return self.vectors[0]

    def __repr__(self):
        if self.error is not None:
            return f"TextResult(error={self.error!r})"
        return f"TextResult(rows={self.vectors.shape[0]}, truncated={self.truncated})"


# --- decoding and validation ----------------------------------------------------------------

class _Malformed(Exception):
    pass


class _PairsMap:
    """A map with unhashable keys: legal only inside keys a receiver ignores."""

    __slots__ = ("pairs",)

    def __init__(self, pairs):
        self.pairs = pairs


def _pairs_hook(pairs):
    # msgpack-python keeps the last of duplicate keys silently; the protocol rejects them.
    try:
        d = dict(pairs)
    except TypeError:
        return _PairsMap(pairs)
    if len(d) != len(pairs):
        raise _Malformed("a map holds the same key twice")
    return d


def _depth(v, left):
    """Raises when v holds more than `left` levels of nested arrays and maps (scalars do
    not count: the body map is depth 1, the `offsets` entries depth 3)."""
    if isinstance(v, (list, dict, _PairsMap)):
        if left <= 0:
            raise _Malformed(f"nesting deeper than {DEPTH_MAX}")
        items = v if isinstance(v, list) else (v.items() if isinstance(v, dict) else v.pairs)
        for x in items:
            if isinstance(v, list):
                _depth(x, left - 1)
            else:
                _depth(x[0], left - 1)
                _depth(x[1], left - 1)


def _check_map(m, what, known):
    """A map this client reads: str keys within the limits; depth of the ignored values."""
    if not isinstance(m, dict):
        raise _Malformed(f"{what} is not a map")
    if len(m) > KEYS_MAX:
        raise _Malformed(f"{what} has more than {KEYS_MAX} keys")
    for k, v in m.items():
        if type(k) is not str:
            raise _Malformed(f"{what} has a key that is not a str")
        if len(k.encode("utf-8")) > KEY_BYTES_MAX:
            raise _Malformed(f"{what} has a key over {KEY_BYTES_MAX} bytes")
        if k not in known:
            _depth(v, known[None])


def _get(m, key, what, required=True):
    v = m.get(key)
    if v is None and required:
        raise _Malformed(f"{what}: `{key}` is missing")
    return v


def _uint(v, name, lo=0, hi=(1 << 64) - 1):
    if type(v) is not int or v < lo or v > hi:
        raise _Malformed(f"`{name}` is not a uint in {lo}..{hi}")
    return v


def _str(v, name, lo=0, hi=None):
    if type(v) is not str:
        raise _Malformed(f"`{name}` is not a str")
    n = len(v.encode("utf-8"))
    if n < lo or (hi is not None and n > hi):
        raise _Malformed(f"`{name}` is {n} bytes, outside {lo}..{hi}")
    return v


def _float(v, name):
    if type(v) not in (int, float) or not math.isfinite(v):
        raise _Malformed(f"`{name}` is not a finite float")
    return float(v)


def _list(v, name, n=None):
    if type(v) is not list:
        raise _Malformed(f"`{name}` is not an array")
    if n is not None and len(v) != n:
        raise _Malformed(f"`{name}` has {len(v)} entries, not {n}")
    return v


def _u32_array(v, name, n):
    """An array of exactly n uints below 2^32, as numpy uint32."""
    _list(v, name, n)
    for x in v:
        if type(x) is not int or x < 0 or x >= U32_LIMIT:
            raise _Malformed(f"`{name}` holds a value that is not a uint below 2^32")
    return np.array(v, dtype=np.uint32)


def _bool_array(v, name, n):
    """An array of exactly n bools, as numpy bool."""
    _list(v, name, n)
    for x in v:
        if type(x) is not bool:
            raise _Malformed(f"`{name}` holds a value that is not a bool")
    return np.array(v, dtype=bool)


def _index_list(v, name, first, count):
    """truncated / errors indices: increasing, each in first..first+count-1."""
    prev = first - 1
    for x in v:
        if type(x) is not int or x <= prev or x >= first + count:
            raise _Malformed(f"`{name}` indices are not increasing within the part")
        prev = x


# Body keys each message type defines; None maps to the depth an ignored value may use.
_KNOWN = {
    "part": {"v", "type", "id", "first", "count", "level", "dim", "rows", "vectors", "offsets",
             "byte_offsets", "ids", "sentence", "piece_id", "word_start", "oov", "truncated",
             "errors", "model"},
    "done": {"v", "type", "id", "texts", "tokens", "parts", "elapsed_ms", "model"},
    "error": {"v", "type", "id", "code", "message", "of"},
    "status_reply": {"v", "type", "id", "uptime_ms", "workers", "requests", "queued_shards",
                     "queued_texts", "in_flight_shards", "texts_per_s", "tokens_per_s",
                     "latency_ms", "protocol_errors", "open"},
    "closing": {"v", "type", "message"},
}


def _decode(body):
    """Decodes one body to a dict with `v` 1 and a str `type`; None for another version."""
    if len(body) > BODY_MAX:
        raise _Malformed("message over the body limit")
    try:
        m = msgpack.unpackb(body, raw=False, strict_map_key=False, use_list=True,
                            object_pairs_hook=_pairs_hook)
    except _Malformed:
        raise
    except Exception as e:  # any decoding failure: bad bytes, invalid UTF-8, trailing bytes
        raise _Malformed(f"not one MessagePack map: {e}") from None
    if not isinstance(m, dict):
        raise _Malformed("the body is not a map")
    v = m.get("v")
    if v is None:
        raise _Malformed("`v` is missing")
    _uint(v, "v")
    if v != PROTOCOL_VERSION:
        return None
    t = _str(_get(m, "type", "message"), "type")
    known = {k: True for k in _KNOWN.get(t, {"v", "type", "id"})}
    known[None] = DEPTH_MAX - 1
    _check_map(m, t, known)
    if "id" in m and m["id"] is not None:
        _str(m["id"], "id", 1, ID_MAX)
    return m


def _model_of(m):
    """The `model` a part or done names (revision 1.3), or None."""
    v = m.get("model")
    return None if v is None else _str(v, "model", 1, NAME_MAX)


def _open_ids(m):
    """The ids of a status_reply's `open` (revision 1.3) as a set; empty when absent."""
    v = m.get("open")
    if v is None:
        return set()
    _list(v, "open")
    if len(v) > OPEN_MAX:
        raise _Malformed(f"`open` lists more than {OPEN_MAX} ids")
    return {_str(x, "open", 1, ID_MAX) for x in v}


def _wants_meta(opts):
    """Whether parts answering these embed options carry token metadata (PROTOCOL.md 4)."""
    return opts.get("level", "token") == "token" and (
        bool(opts.get("sentences")) or opts.get("compat", "none") != "none"
        or bool(opts.get("token_meta")))


def _parse_part(m, level_wanted, meta_wanted=False):
    """Validates a part; returns (first, [TextResult] of its texts). meta_wanted: the request
    asked for token metadata, which the part must then carry (and otherwise must not)."""
    first = _uint(_get(m, "first", "part"), "first", 0, TEXTS_MAX - 1)
    count = _uint(_get(m, "count", "part"), "count", 1, TEXTS_MAX - first)
    level = _str(_get(m, "level", "part"), "level")
    if level not in LEVELS:
        raise _Malformed(f"part level `{level}` is unknown")
    if level != level_wanted:
        raise _Malformed(f"part level `{level}` is not the requested `{level_wanted}`")
    dim = _uint(_get(m, "dim", "part"), "dim", 1, DIM_MAX)
    rows = _list(_get(m, "rows", "part"), "rows", count)
    for r in rows:
        _uint(r, "rows", 0, U32_LIMIT - 1)
    total = sum(rows)
    vec = _get(m, "vectors", "part")
    if type(vec) is not bytes:
        raise _Malformed("`vectors` is not a bin")
    if len(vec) != total * dim * 4:
        raise _Malformed(f"`vectors` has {len(vec)} bytes, not sum(rows) x dim x 4 = "
                         f"{total * dim * 4}")
    has_offsets = level in ("token", "wordpiece")
    offsets = m.get("offsets")
    byte_offsets = m.get("byte_offsets")
    ids = m.get("ids")
    if has_offsets:
        _list(_get(m, "offsets", "part"), "offsets", count)
        _list(_get(m, "byte_offsets", "part"), "byte_offsets", count)
    elif offsets is not None or byte_offsets is not None:
        raise _Malformed("offsets sent at the sentence level")
    if level == "wordpiece":
        _list(_get(m, "ids", "part"), "ids", count)
    elif ids is not None:
        raise _Malformed(f"ids sent at the {level} level")
    meta = {k: m.get(k) for k in META_KEYS}
    has_meta = any(v is not None for v in meta.values())
    if has_meta:
        if level != "token":
            raise _Malformed(f"token metadata sent at the {level} level")
        for k in META_KEYS:
            _list(_get(m, k, "part"), k, count)
    if has_meta != meta_wanted:
        raise _Malformed("token metadata sent to a request that did not ask for it"
                         if has_meta else "no token metadata for a request that asked for it "
                         "(are the broker and workers older than protocol 1.1?)")
    truncated = m.get("truncated")
    if truncated is not None:
        _index_list(_list(truncated, "truncated"), "truncated", first, count)
        truncated = set(truncated)
    else:
        truncated = set()
    errors = {}
    raw_errors = m.get("errors")
    if raw_errors is not None:
        idx = []
        for e in _list(raw_errors, "errors"):
            known = {"index": True, "code": True, "message": True, None: DEPTH_MAX - 3}
            _check_map(e, "an `errors` entry", known)
            i = _uint(_get(e, "index", "errors entry"), "errors.index")
            code = _str(_get(e, "code", "errors entry"), "errors.code")
            msg = _str(_get(e, "message", "errors entry"), "errors.message", 0, MESSAGE_MAX)
            idx.append(i)
            errors[i] = TextError(code, msg)
        _index_list(idx, "errors", first, count)

    # One read-only array per part; each text gets a view of its rows.
    flat = np.frombuffer(vec, dtype="<f4").reshape(total, dim)
    out = []
    row = 0
    for k in range(count):
        n = rows[k]
        i = first + k
        err = errors.get(i)
        if err is not None and n != 0:
            raise _Malformed(f"text {i} failed but has {n} rows")
        if level == "sentence" and n != (0 if err else 1):
            raise _Malformed(f"text {i} has {n} rows at the sentence level")
        r = TextResult(flat[row:row + n], truncated=i in truncated, error=err)
        row += n
        if has_offsets:
            r.offsets = _u32_array(offsets[k], "offsets", 2 * n).reshape(n, 2)
            r.byte_offsets = _u32_array(byte_offsets[k], "byte_offsets", 2 * n).reshape(n, 2)
            for o in (r.offsets, r.byte_offsets):
                if n and not bool((o[:, 0] <= o[:, 1]).all()):
                    raise _Malformed(f"text {i} has an offset span with begin > end")
        if level == "wordpiece":
            r.ids = _u32_array(ids[k], "ids", n)
        if has_meta:
            r.sentence = _u32_array(meta["sentence"][k], "sentence", n)
            piece = _u32_array(meta["piece_id"][k], "piece_id", n)
            r.word_start = _bool_array(meta["word_start"][k], "word_start", n)
            r.oov = _bool_array(meta["oov"][k], "oov", n)
            if bool((piece[r.oov] != 0).any()):
                raise _Malformed(f"text {i} has an oov row whose piece_id is not 0")
            # the protocol's 0 of an oov row means "no piece", shown as -1 (ids < 2^31)
            r.piece_id = np.where(r.oov, -1, piece.astype(np.int64)).astype(np.int32)
        out.append(r)
    return first, out


def _parse_status(m):
    for k in ("uptime_ms", "requests", "queued_shards", "queued_texts", "in_flight_shards",
              "protocol_errors"):
        _uint(_get(m, k, "status_reply"), k)
    for k in ("texts_per_s", "tokens_per_s"):
        if _float(_get(m, k, "status_reply"), k) < 0:
            raise _Malformed(f"`{k}` is negative")
    lat = _get(m, "latency_ms", "status_reply")
    _check_map(lat, "`latency_ms`", {"p50": True, "p90": True, "p99": True, None: DEPTH_MAX - 2})
    for k in ("p50", "p90", "p99"):
        if _float(_get(lat, k, "latency_ms"), "latency_ms." + k) < 0:
            raise _Malformed(f"`latency_ms.{k}` is negative")
    workers = _list(_get(m, "workers", "status_reply"), "workers")
    if len(workers) > WORKERS_MAX:
        raise _Malformed(f"more than {WORKERS_MAX} workers")
    wkeys = ("name", "model", "dim", "threads", "credit", "in_flight", "shards", "tokens",
             "idle_ms", "quarantined_ms")
    for w in workers:
        known = {k: True for k in wkeys}
        known[None] = DEPTH_MAX - 3
        _check_map(w, "a `workers` entry", known)
        _str(_get(w, "name", "worker"), "name", 1, 256)
        _str(_get(w, "model", "worker"), "model", 1, 256)
        _uint(_get(w, "dim", "worker"), "dim", 1, DIM_MAX)
        _uint(_get(w, "threads", "worker"), "threads", 1, 256)
        _uint(_get(w, "credit", "worker"), "credit", 1, 1024)
        for k in ("in_flight", "shards", "tokens", "idle_ms"):
            _uint(_get(w, k, "worker"), k)
        if w.get("quarantined_ms") is not None:
            _uint(w["quarantined_ms"], "quarantined_ms")
    return {k: v for k, v in m.items() if k not in ("v", "type") and v is not None}


# --- the client -----------------------------------------------------------------------------

class _Request:
    """One `embed` request: texts [start, start+n) of the call, or (sent False) one text
    this client fails itself.

    At the broker or not: `sent` while a broker has it as far as we know; `resume` when it
    was at a broker we left or that said `closing` (the next status_reply's `open` says
    whether the broker in use holds it); `want` when it waits to be sent (again)."""

    __slots__ = ("id", "start", "n", "results", "parts", "done", "resend_at", "busy_since",
                 "emitted", "sent", "resume", "want", "sends", "moved")

    def __init__(self, rid, start, n):
        self.id = rid
        self.start = start
        self.n = n
        self.results = [None] * n
        self.parts = 0
        self.done = False
        self.resend_at = None  # set while waiting to resend after `busy`
        self.busy_since = None
        self.emitted = 0
        self.sent = False
        self.resume = False
        self.want = False
        self.sends = 0  # after the first, `parts` of its done counts only the last send's
        self.moved = False  # it was at a broker we left: parts may have been lost with it

    def held(self, k):
        """Whether text k of the request has arrived (yielded or waiting to be)."""
        return k < self.emitted or self.results[k] is not None

    def have(self):
        """The `have` of a resend: [first0, count0, ...] of the texts that arrived."""
        out = []
        for k in range(self.n):
            if not self.held(k):
                continue
            if out and out[-2] + out[-1] == k:
                out[-1] += 1
            else:
                out += [k, 1]
        return out


def _wire_text(t):
    """Wire form of a text and its byte length: str when it is valid UTF-8, else bin (the
    protocol takes both, and checks texts one by one)."""
    if isinstance(t, str):
        try:
            return t, len(t.encode("utf-8"))
        except UnicodeEncodeError:  # lone surrogates: the service reports bad_utf8
            b = t.encode("utf-8", "surrogatepass")
            return b, len(b)
    if isinstance(t, (bytes, bytearray, memoryview)):
        b = bytes(t)
        return b, len(b)
    raise TypeError(f"a text must be str or bytes, not {type(t).__name__}")


def _embed_opts(level="token", pooling=None, normalize=False, windows=False, sentences=False,
                token_vector=None, compat=None, token_meta=False):
    """The options of an `embed`: keys in the order of PROTOCOL.md section 3, each written only
    when it is not the default (level always)."""
    opts = {"level": level}
    if pooling is not None:
        opts["pooling"] = pooling
    if normalize:
        opts["normalize"] = True
    if windows:
        opts["windows"] = True
    if sentences:
        opts["sentences"] = True
    if token_vector not in (None, "first"):
        opts["token_vector"] = token_vector
    if compat not in (None, "none"):
        opts["compat"] = compat
    if token_meta:
        opts["token_meta"] = True
    return opts


def _embed_msg(rid, wire_texts, opts, deadline_ms=None, have=None, model=None):
    """The `embed` map, keys in the order of PROTOCOL.md section 3."""
    msg = {"v": PROTOCOL_VERSION, "type": "embed", "id": rid, "texts": wire_texts}
    msg.update(opts)
    if deadline_ms:
        msg["deadline_ms"] = deadline_ms
    if have:
        msg["have"] = have
    if model is not None:
        msg["model"] = model
    return msg


class _Call:
    """The state of one embed_iter() call."""

    def __init__(self, wire, opts, deadline, end, model):
        self.wire = wire
        self.opts = opts
        self.level = opts["level"]
        self.meta = _wants_meta(opts)
        self.deadline = deadline  # time.monotonic() value, or None
        self.end = end            # client-side timeout, or None
        self.window = deque()     # _Request in text order: open, or done, not all emitted
        self.by_id = {}
        self.dim = None
        self.model = model        # the call's model: the caller's, else the first results'
        self.pinned = model is not None


# --- CurveZMQ key files ---------------------------------------------------------------------

# The limits and rules of zbert's C reader (proto/curve.h): CZMQ's certificate format.
CURVE_FILE_MAX = 65536
CURVE_LINE_MAX = 1024
_Z85 = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
_Z85_VALUE = {c: i for i, c in enumerate(_Z85)}


def _unz85_key(v):
    """The 32-byte key of exactly 40 Z85 characters (bytes), or None."""
    if len(v) != 40:
        return None
    out = bytearray()
    for i in range(0, 40, 5):
        n = 0
        for c in v[i:i + 5]:
            if c not in _Z85_VALUE:
                return None
            n = n * 85 + _Z85_VALUE[c]
        if n >= 1 << 32:  # no 4 bytes encode to it
            return None
        out += n.to_bytes(4, "big")
    return bytes(out)


def _cert_value(rest):
    """The value after '=': "quoted", 'quoted' or bare up to a blank; None for an unclosed
    quote."""
    rest = rest.lstrip(b" \t")
    if rest[:1] in (b'"', b"'"):
        end = rest.find(rest[:1], 1)
        return None if end < 0 else rest[1:end]
    n = 0
    while n < len(rest) and rest[n] not in b" \t":
        n += 1
    return rest[:n]


def parse_certificate(data, need_secret, origin="certificate"):
    """Parses a CurveZMQ certificate (CZMQ's format, as `zbert keygen` writes it) from
    bytes, by the rules of zbert's C reader: lines of at most 1024 bytes, `#` comments, a
    section name at column 0, indented `key = value` entries, only the `curve` section's
    `public-key` and `secret-key` used. Returns (public, secret): 32-byte keys, secret None
    when the text has none. Raises ZbertError `key`, naming origin and the line, for a text
    over 64 KiB, a NUL byte, a key that is not 40 Z85 characters or is given twice, a public
    key that is not that of the secret, no public key, or (need_secret) no secret key."""

    def bad(msg, line=None):
        where = origin if line is None else f"{origin}:{line}"
        return ZbertError("key", f"{where}: {msg}")

    if len(data) > CURVE_FILE_MAX:
        raise bad(f"over {CURVE_FILE_MAX} bytes: not a certificate")
    section = None
    keys = {}
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for no, raw in enumerate(lines, 1):
        if len(raw) > CURVE_LINE_MAX:
            raise bad(f"line over {CURVE_LINE_MAX} bytes", no)
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if b"\0" in raw:
            raise bad("a NUL byte: not a certificate", no)
        text = raw.lstrip(b" \t")
        indented = len(text) < len(raw)
        if not text or text.startswith(b"#"):
            continue
        name, eq, rest = text.partition(b"=")
        name = name.rstrip(b" \t")
        if not indented:
            if not eq:
                section = name
            continue
        if not eq or section != b"curve" or name not in (b"public-key", b"secret-key"):
            continue
        value = _cert_value(rest)
        if value is None:
            raise bad("a quote is not closed", no)
        what = name.decode()
        if what in keys:
            raise bad(f"{what} given twice", no)
        key = _unz85_key(value)
        if key is None:
            raise bad(f"{what} is not a key (40 characters of Z85 expected)", no)
        keys[what] = key
    public, secret = keys.get("public-key"), keys.get("secret-key")
    if need_secret and secret is None:
        raise bad("no curve secret-key (a secret key file, NAME.key, is needed here, not a "
                  "NAME.pub)")
    if secret is not None:
        derived = _unz85_key(zmq.curve_public(z85.encode(secret)))
        if public is not None and public != derived:
            raise bad("public-key is not that of secret-key")
        public = derived
    if public is None:
        raise bad("no curve public-key: not a certificate")
    return public, secret


def load_certificate(path, need_secret):
    """Reads the certificate at path (see parse_certificate). With need_secret, a file
    readable by others or writable by its group is refused, as zbert's C programs do (chmod
    600; judged after parsing, so that a .pub given for the secret is named as such).
    Raises ZbertError `key` naming the file."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        raise ZbertError("key", f"{path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ZbertError("key", f"{path}: not a regular file")
        data = b""
        while len(data) <= CURVE_FILE_MAX:
            chunk = os.read(fd, CURVE_FILE_MAX + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as e:
        raise ZbertError("key", f"{path}: {e.strerror}") from None
    finally:
        os.close(fd)
    keys = parse_certificate(data, need_secret, str(path))
    mode = stat.S_IMODE(st.st_mode)
    if need_secret and mode & 0o027:
        raise ZbertError("key", f"{path}: a secret key must not be readable by others nor "
                                f"writable by its group (mode {mode:03o}): chmod 600 {path}")
    return keys


def _curve_options(curve_key, broker_key, n_brokers):
    """The socket options of Client's curve_key and broker_key (None: the environment's
    ZBERT_CURVE_KEY, ZBERT_BROKER_KEY; "": none) for each of the n_brokers endpoints, or None
    without CURVE."""
    if curve_key is None:
        curve_key = os.environ.get("ZBERT_CURVE_KEY", "")
    if broker_key is None:
        broker_key = [k.strip() for k in os.environ.get("ZBERT_BROKER_KEY", "").split(",")]
    if isinstance(broker_key, (str, bytes, os.PathLike)):
        broker_key = [broker_key]
    broker_key = [k for k in broker_key if k not in ("", b"")]
    if not curve_key and not broker_key:
        return None
    if not curve_key or not broker_key:
        raise ZbertError("key", "curve_key and broker_key go together: CURVE takes this "
                                "client's secret key file and the broker's public key file")
    if len(broker_key) not in (1, n_brokers):
        raise ZbertError("key", f"{len(broker_key)} broker keys for {n_brokers} broker"
                                f"{'' if n_brokers == 1 else 's'}: give one for every broker, or "
                                "one per broker in the same order")
    if not zmq.has("curve"):
        raise ZbertError("key", "CURVE asked for, but this libzmq has no CURVE support")
    public, secret = load_certificate(curve_key, True)
    servers = [load_certificate(k, False)[0] for k in broker_key]
    return [{zmq.CURVE_SERVERKEY: servers[i if len(servers) > 1 else 0],
             zmq.CURVE_PUBLICKEY: public, zmq.CURVE_SECRETKEY: secret}
            for i in range(n_brokers)]


class Client:
    """A connection to a broker's client endpoint, failing over between several.

    endpoint: one endpoint, a list of them, or a comma-separated str (default
    $ZBERT_BROKER, then tcp://127.0.0.1:5555); requests go to one broker at a time and move
    to the next when it stays silent or says `closing`.
    batch: texts per `embed` request (1..100,000); inflight: requests open at once;
    batch_bytes: text bytes per request (bodies stay far below the 256 MiB limit);
    busy_retry_s: how long a request refused with `busy` is retried (with the same id, as
    the protocol asks) before the call fails with `busy`.
    retry: seconds of silence after which a broker with open requests is presumed gone (it
    is pinged after ping, default retry / 4); outage: how long open requests wait while no
    broker answers (or the only one says `closing`) before the call fails with `outage`;
    meanwhile the client reconnects to each broker in turn, after pauses that double from
    2 x retry up to 30 s, each 20 % shorter or longer at random.  A reconnection keeps this
    client's routing id (16 random bytes drawn here), pings first, and sends again only the
    requests the broker does not list in `open`, with `have`: no text already received is
    computed again.
    curve_key, broker_key: CurveZMQ (encryption, the broker proven by its public key, this
    client shown to the broker by its own): the path of this client's secret key file
    (NAME.key of `zbert keygen`) and of the broker's public key file (its NAME.pub; or a
    list of one per broker). Both, or neither; None takes $ZBERT_CURVE_KEY and
    $ZBERT_BROKER_KEY (comma-separated), "" means none. The files are read here; a bad one
    raises ZbertError `key`. A broker whose key is not the one given, or that refuses this
    client's, never answers: calls end with `client_timeout` or `outage`. The attribute
    `curve` tells whether this client uses CURVE.
    """

    def __init__(self, endpoint=None, *, batch=256, inflight=8, batch_bytes=32 << 20,
                 busy_retry_s=60.0, context=None, curve_key=None, broker_key=None,
                 retry=3.0, ping=None, outage=300.0):
        if not 1 <= batch <= TEXTS_MAX:
            raise ValueError(f"batch must be 1..{TEXTS_MAX}")
        if inflight < 1:
            raise ValueError("inflight must be at least 1")
        if retry < 0.05:
            raise ValueError("retry must be 0.05 s at least")
        ping = retry / 4 if ping is None else ping
        if not 0 < ping < retry:
            raise ValueError("ping must be above 0 and below retry")
        if outage < retry:
            raise ValueError("outage must be retry at least: a broker is presumed gone only "
                             "after retry")
        endpoint = endpoint or os.environ.get("ZBERT_BROKER") or DEFAULT_BROKER
        if isinstance(endpoint, str):
            endpoint = [e.strip() for e in endpoint.split(",") if e.strip()]
        self.endpoints = list(endpoint)
        if not self.endpoints:
            raise ValueError("no broker endpoint")
        self.endpoint = self.endpoints[0]
        self.batch = batch
        self.inflight = inflight
        self.batch_bytes = batch_bytes
        self.busy_retry_s = busy_retry_s
        self.retry = retry
        self.ping = ping
        self.outage = outage
        self._sock = None
        self._curve = _curve_options(curve_key, broker_key, len(self.endpoints))
        self.curve = self._curve is not None
        self._ctx = context or zmq.Context.instance()
        # One routing id for every socket of this client: a broker takes a reconnection for
        # the client it knew (the first byte is not 0: libzmq keeps those ids for itself).
        self.routing_id = bytes([1 + secrets.randbelow(255)]) + secrets.token_bytes(15)
        # Ids are unique per client; the random prefix also keeps them apart from answers
        # to an earlier Client that reached this one (they are ignored as unknown).
        self._prefix = secrets.token_hex(4)
        self._seq = 0
        self._cur = 0
        self._down_since = None    # an outage: since when no broker has served us
        self._reconnect_at = None  # the next reconnection while the broker stays silent
        self._reconnects = 0       # in this outage: the back-off's exponent
        self._open_socket()

    def _open_socket(self):
        s = self._ctx.socket(zmq.DEALER)
        try:
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.MAXMSGSIZE, BODY_MAX + 4096)
            s.setsockopt(zmq.RCVHWM, 256)
            s.setsockopt(zmq.ROUTING_ID, self.routing_id)
            # CURVE options apply to the connections made after them
            for opt, value in (self._curve[self._cur] if self._curve else {}).items():
                s.setsockopt(opt, value)
            s.connect(self.endpoints[self._cur])
        except Exception:
            s.close(0)
            raise
        self._sock = s
        self.endpoint = self.endpoints[self._cur]
        self._closing = False
        self._quiet_since = time.monotonic()
        self._ping_at = None

    def close(self):
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _silence_hint(self):
        # a CURVE handshake that cannot complete is silence to a ZeroMQ socket's user
        return (" (with CURVE: or the broker key is not that broker's, or the broker does not "
                "allow this client's key)") if self.curve else ""

    def _next_id(self, kind):
        self._seq += 1
        return f"{kind}-{self._prefix}-{self._seq}"

    def _send(self, msg):
        self._sock.send(msgpack.packb(msg, use_bin_type=True), copy=False)

    def _recv(self, timeout_s):
        """One decoded message; None on timeout or for a message of another version."""
        ms = None if timeout_s is None else max(0, int(timeout_s * 1000))
        if not self._sock.poll(ms):
            return None
        body = self._sock.recv(copy=False)
        try:
            m = _decode(body.buffer)
        except _Malformed as e:
            raise ZbertError("protocol", f"malformed message from the broker: {e}") from None
        # anything at all proves the broker is there; only `closing` keeps an outage (and
        # the reconnection it awaits) going
        self._quiet_since = time.monotonic()
        self._ping_at = None
        if m is None or m["type"] != "closing":
            self._down_since = self._reconnect_at = None
            self._reconnects = 0
        return m

    # --- status ---

    def status(self, timeout=5.0):
        """The broker's status_reply as a dict (without `v` and `type`).

        Raises ZbertError `client_timeout` when no answer comes within timeout seconds.
        Not to be called while an embed_iter() generator of this Client is open.
        """
        sid = self._next_id("status")
        self._send({"v": PROTOCOL_VERSION, "type": "status", "id": sid})
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise ZbertError("client_timeout",
                                 f"no status_reply within {timeout} s"
                                 + (" (the broker is stopping)" if self._closing
                                    else self._silence_hint()))
            m = self._recv(left)
            if m is not None and m["type"] == "closing":
                self._closing = True
                continue
            if m is None or m["type"] != "status_reply" or m.get("id") != sid:
                continue  # an answer to an earlier call, or a type this client ignores
            self._closing = False
            try:
                return _parse_status(m)
            except _Malformed as e:
                raise ZbertError("protocol", f"malformed status_reply: {e}") from None

    # --- embed ---

    def embed(self, texts, level="token", pooling=None, normalize=False, windows=False,
              deadline_ms=None, timeout=None, sentences=False, token_vector=None, compat=None,
              token_meta=False, model=None):
        """Embeds texts (str or bytes each); returns one TextResult per text, in order.

        level: `token` (the protocol's default), `wordpiece` or `sentence`; pooling: `cls`
        or `mean` (sentence level); normalize: L2-normalise each vector; windows: texts over
        512 wordpieces get overlapping windows instead of truncation. sentences (token and
        wordpiece levels): each sentence of a text is its own sequence; token_vector (token
        level): `first` or `mean` of a token's wordpiece rows; compat (token level): `none` or
        `sparknlp` (Spark NLP 2.6.4-2.7.5's BertEmbeddings); token_meta: token metadata
        without sentences or compat (they imply it). model: only workers of this model
        identity (as `zbert status` lists it) serve the call; None: the call keeps to the
        model of the first results it receives, and names it in its later requests.  Results
        of another model fail the call with `model`.  deadline_ms: the
        service gives up this long after the call starts (0/None: never); timeout: this
        client gives up after that many seconds (None: never). A text that cannot be
        embedded alone (invalid UTF-8, over 1 MiB) comes back with `error` set; a failure of
        the call raises ZbertError, whose `results` hold what had arrived (None elsewhere).
        """
        texts = list(texts)
        out = [None] * len(texts)
        try:
            for i, r in self.embed_iter(texts, level=level, pooling=pooling,
                                        normalize=normalize, windows=windows,
                                        deadline_ms=deadline_ms, timeout=timeout,
                                        sentences=sentences, token_vector=token_vector,
                                        compat=compat, token_meta=token_meta, model=model):
                out[i] = r
        except ZbertError as e:
            for i, r in e.received.items():
                out[i] = r
            e.results = out
            raise
        return out

    def embed_iter(self, texts, level="token", pooling=None, normalize=False, windows=False,
                   deadline_ms=None, timeout=None, sentences=False, token_vector=None,
                   compat=None, token_meta=False, model=None):
        """Like embed(), but a generator of (index, TextResult) in text order, as they come.

        At most `inflight` requests are open, and results wait for in-order output only
        within them, so memory stays bounded for any number of texts. Closing the generator
        early cancels the open requests. On failure the ZbertError's `received` maps the
        indices of results that had arrived but were not yielded yet to those results.
        """
        if level not in LEVELS:
            raise ZbertError("usage", f"level must be one of {', '.join(LEVELS)}")
        if pooling is not None and pooling not in POOLINGS:
            raise ZbertError("usage", "pooling must be cls or mean")
        if deadline_ms is not None and (type(deadline_ms) is not int or deadline_ms < 0):
            raise ZbertError("usage", "deadline_ms must be a non-negative int")
        if token_vector is not None and token_vector not in TOKEN_VECTORS:
            raise ZbertError("usage", "token_vector must be first or mean")
        if compat is not None and compat not in COMPATS:
            raise ZbertError("usage", "compat must be none or sparknlp")
        if compat == "sparknlp" and level != "token":
            raise ZbertError("usage", "compat sparknlp gives token vectors: use level token")
        if sentences and level == "sentence":
            raise ZbertError("usage", "sentences applies to the token and wordpiece levels")
        if model is not None and (type(model) is not str
                                  or not 1 <= len(model.encode("utf-8", "surrogatepass"))
                                  <= NAME_MAX):
            raise ZbertError("usage", f"model must be a str of 1 to {NAME_MAX} bytes")
        wire = [_wire_text(t) for t in texts]
        opts = _embed_opts(level, pooling, normalize, windows, sentences, token_vector, compat,
                           token_meta)
        t0 = time.monotonic()
        call = _Call(wire, opts, t0 + deadline_ms / 1000.0 if deadline_ms else None,
                     None if timeout is None else t0 + timeout, model)
        return self._run(call, timeout)

    def _run(self, call, timeout):
        pending = deque(self._chunks(call.wire))
        window = call.window
        failed = None
        try:
            while pending or window:
                while pending and len(window) < self.inflight:
                    start, n, local_error = pending.popleft()
                    if local_error is not None:
                        # Over 1 MiB: the service would fail it alone; do it here and keep
                        # the body small.
                        req = _Request(None, start, 1)
                        req.results[0] = TextResult(np.zeros((0, 0), np.float32),
                                                    error=local_error)
                        req.done = True
                        window.append(req)
                        continue
                    req = _Request(self._next_id("r"), start, n)
                    window.append(req)
                    call.by_id[req.id] = req
                    self._send_embed(call, req)
                # Yield what is contiguous at the head of the window.
                while window:
                    head = window[0]
                    while head.emitted < head.n and head.results[head.emitted] is not None:
                        k = head.emitted
                        r = head.results[k]
                        head.results[k] = None
                        head.emitted += 1
                        yield head.start + k, r
                    if head.emitted < head.n or not head.done:
                        break
                    window.popleft()
                if not window:
                    continue
                now = time.monotonic()
                wake = self._tick(call, now)
                for q in window:
                    if q.resend_at is not None:
                        if q.resend_at <= now:
                            q.resend_at = None
                            self._send_embed(call, q)
                        else:
                            wake = min(wake, q.resend_at)
                if call.end is not None and now >= call.end:
                    raise ZbertError("client_timeout", f"no complete answer within {timeout} "
                                                       f"s{self._silence_hint()}")
                wait = min(0.5, wake - now)
                if call.end is not None:
                    wait = min(wait, call.end - now)
                m = self._recv(max(0.0, wait))
                if m is not None:
                    self._handle(call, m)
        except ZbertError as e:
            failed = e
            raise
        finally:
            # A failure, or the caller stopped early: cancel what is still open, and hand
            # what arrived to the caller.
            for q in window:
                if q.id is not None and not q.done and (q.sent or q.resume):
                    self._cancel(q.id)
                if failed is not None:
                    for k in range(q.emitted, q.n):
                        if q.results[k] is not None:
                            failed.received[q.start + k] = q.results[k]

    # --- liveness (PROTOCOL.md 10) ---

    def _owed(self, call):
        """Whether the broker owes us something: a request it has (or may have), or, while
        it is closing, one waiting to be sent (pings tell when a broker takes them)."""
        return any(not q.done and q.id is not None
                   and (q.sent or (self._closing and q.want)) for q in call.window)

    def _tick(self, call, now):
        """Pings, reconnections and the outage budget; returns when it wants to run next."""
        owed = self._owed(call)
        waiting = owed or any(q.want and not q.done for q in call.window)
        if not waiting:
            self._down_since = self._reconnect_at = None
            self._reconnects = 0
        elif self._closing and self._down_since is None:
            self._down_since = now
        if self._down_since is not None and now - self._down_since >= self.outage:
            if self._closing:
                why = (f"broker {self.endpoint} is stopping, and no broker took the call's "
                       f"requests over within the outage budget of {self.outage} s")
            else:
                why = (f"no broker answered within the outage budget of {self.outage} s "
                       f"({len(self.endpoints)} endpoint{'' if len(self.endpoints) == 1 else 's'}"
                       f" tried){self._silence_hint()}")
            raise ZbertError("outage", why)
        if self._reconnect_at is not None:
            if now >= self._reconnect_at:
                self._presume_gone(call, now, self._down_since)
        elif (owed and now - self._quiet_since >= self.retry and self._ping_at is not None
              and now - self._ping_at >= self.ping):
            self._presume_gone(call, now, self._quiet_since)
        if self._owed(call) and now - self._quiet_since >= self.ping and (
                self._ping_at is None or now - self._ping_at >= self.ping):
            self._send_ping(now)
        if not self._closing:
            for q in call.window:
                if q.want and not q.done and q.resend_at is None:
                    self._send_embed(call, q)
        wake = now + 0.5
        if self._owed(call):
            wake = min(wake, (self._ping_at or self._quiet_since) + self.ping)
        if self._reconnect_at is not None:
            wake = min(wake, self._reconnect_at)
        if self._down_since is not None:
            wake = min(wake, self._down_since + self.outage)
        return max(wake, now + 0.01)

    def _send_ping(self, now):
        try:
            self._send({"v": PROTOCOL_VERSION, "type": "status", "id": self._next_id("p")})
            self._ping_at = now
        except zmq.Again:
            pass  # no connection yet: the next tick tries again

    def _presume_gone(self, call, now, since):
        """The broker in use has been silent since `since`: an outage begins or goes on, and
        the next endpoint is tried after a growing, jittered pause."""
        if self._down_since is None:
            self._down_since = since
        self._reconnects += 1
        self._reconnect_at = now + self._backoff()
        self._reconnect(call, now)

    def _backoff(self):
        """retry doubled once per reconnection of this outage, capped, with jitter."""
        pause = min(self.retry * 2 ** self._reconnects, max(BACKOFF_MAX_S, self.retry))
        return pause * (1 + BACKOFF_JITTER * (2 * secrets.randbelow(10001) / 10000 - 1))

    def _reconnect(self, call, now):
        """Leaves the broker in use for the next endpoint (the same one when there is one),
        under the same routing id.  What it had is resumed: a ping goes out first, and its
        answer's `open` says which requests the new broker holds."""
        self._sock.close(0)
        self._sock = None
        self._cur = (self._cur + 1) % len(self.endpoints)
        for q in call.window:
            if q.sent and not q.done:
                q.resume = q.moved = True
        self._open_socket()
        self._send_ping(now)
        for q in call.window:
            if q.want and not q.done and q.resend_at is None:
                self._send_embed(call, q)

    def _resume(self, call, m):
        """A status_reply: the requests we left at a broker are held by this one when it
        lists them in `open`; the others go again with `have`, or end here when every text
        arrived.  A broker of an earlier revision lists none: everything goes again."""
        self._closing = False  # a stopping broker answers `closing`, not this
        try:
            held = _open_ids(m)
        except _Malformed as e:
            raise ZbertError("protocol", f"malformed status_reply: {e}") from None
        for q in list(call.window):
            if not q.resume or q.done:
                continue
            q.resume = False
            if q.id in held:
                continue
            q.sent = False
            if all(q.held(k) for k in range(q.n)):
                q.done = True  # everything arrived but the done
                del call.by_id[q.id]
            else:
                q.want = True
                self._send_embed(call, q)

    def _on_closing(self, call):
        """The broker in use is stopping: what it has is to be resumed, at once at the next
        endpoint, or here when a broker takes requests again (within the outage budget)."""
        if self._down_since is None:
            self._down_since = time.monotonic()
        self._closing = True
        for q in call.window:
            if q.sent and not q.done:
                q.resume = q.moved = True
        if len(self.endpoints) == 1:
            return
        # The first `closing` of an outage moves on at once; the next ones (every broker
        # stopping) wait for the back-off, or this client would bounce between them.
        now = time.monotonic()
        if self._reconnects == 0:
            self._reconnects = 1
            self._reconnect(call, now)
        elif self._reconnect_at is None:
            self._reconnect_at = now + self._backoff()

    # --- requests ---

    def _chunks(self, wire):
        """(start, n, None) runs of texts for one request each, or (i, 1, TextError)."""
        start, n, size = 0, 0, 0
        for i, (_, blen) in enumerate(wire):
            if blen > TEXT_BYTES_MAX:
                if n:
                    yield start, n, None
                yield i, 1, TextError("too_large", f"the text is {blen} bytes, over the "
                                                   f"limit of {TEXT_BYTES_MAX}")
                start, n, size = i + 1, 0, 0
                continue
            # +6: a str header takes at most 5 bytes; the body stays below batch_bytes + 1 MiB.
            if n and (n == self.batch or size + blen + 6 > self.batch_bytes):
                yield start, n, None
                start, n, size = i, 0, 0
            n += 1
            size += blen + 6
        if n:
            yield start, n, None

    def _send_embed(self, call, req):
        """Sends req (again: with `have`, the texts that arrived sent empty, and the call's
        model once known).  Held back while the broker in use is closing."""
        if self._closing:
            req.want = True
            return
        deadline_ms = None
        if call.deadline is not None:
            # The protocol's deadline counts from the broker's receipt of each request; a
            # call of several requests gives each what is left of the call's deadline.
            deadline_ms = int(math.ceil((call.deadline - time.monotonic()) * 1000))
            if deadline_ms <= 0:
                raise ZbertError("timeout", "the deadline passed", req.id)
        have = req.have()
        wire = [("" if req.held(k) else w)
                for k, (w, _) in enumerate(call.wire[req.start:req.start + req.n])]
        if not self._owed(call):
            self._quiet_since = time.monotonic()  # waiting starts now
            self._ping_at = None
        self._send(_embed_msg(req.id, wire, call.opts, deadline_ms, have, call.model))
        req.sends += 1
        req.sent = True
        req.want = False

    def _cancel(self, rid):
        try:
            self._send({"v": PROTOCOL_VERSION, "type": "cancel", "id": rid})
        except zmq.ZMQError:
            pass

    def _handle(self, call, m):
        t = m["type"]
        rid = m.get("id")
        if t == "closing":
            self._on_closing(call)
            return
        if t == "status_reply":
            self._resume(call, m)
            return
        if t == "error" and rid is None:
            of = m.get("of")
            if of is not None and _str(of, "of", 1, ID_MAX) in call.by_id:
                # A copy of one of ours refused as duplicate_id (revision 1.3): without an
                # id no request ends; the open one goes on.
                return
            # An error without id answers a message the broker could not read; this client
            # sends only well-formed ones, so it cannot tell which request failed.
            raise ZbertError("protocol", "the broker could not read a request: "
                                         f"{m.get('code')}: {m.get('message')}")
        req = call.by_id.get(rid) if rid is not None else None
        if req is None or t not in ("part", "done", "error"):
            return  # an answer to an earlier call or a cancelled request, or a newer type
        try:
            if t == "part":
                model = _model_of(m)
                first, results = _parse_part(m, call.level, call.meta)
                if first + len(results) > req.n:
                    raise _Malformed(f"it covers texts up to {first + len(results)} of a "
                                     f"request of {req.n}")
                self._check_model(call, model, first + req.start, len(results))
                for k, r in enumerate(results):
                    if req.held(first + k):
                        continue  # a text is kept once (a resend's answer repeats texts)
                    if r.error is None:
                        dim = r.vectors.shape[1]
                        if call.dim is None:
                            call.dim = dim
                        elif dim != call.dim:
                            raise _Malformed(f"dim {dim} after dim {call.dim} in one call")
                    r.model = model
                    req.results[first + k] = r
                req.parts += 1
            elif t == "done":
                texts = _uint(_get(m, "texts", "done"), "texts", 1, TEXTS_MAX)
                _uint(_get(m, "tokens", "done"), "tokens")
                parts = _uint(_get(m, "parts", "done"), "parts", 1)
                _uint(_get(m, "elapsed_ms", "done"), "elapsed_ms")
                model = _model_of(m)
                if model is not None and call.model is not None and model != call.model:
                    raise ZbertError("model", f"the broker finished a request as model {model} "
                                              f"in a call of model {call.model}", rid)
                missing = sum(1 for k in range(req.n) if not req.held(k))
                if texts == req.n and missing and req.moved:
                    # Parts the broker sent into a connection that died are lost without
                    # its knowing: the rest goes again, with `have`.
                    req.sent = False
                    req.want = True
                    self._send_embed(call, req)
                    return
                if texts != req.n or missing:
                    raise _Malformed(f"it comes after {req.n - missing} of {req.n} texts "
                                     f"(and says {texts})")
                if parts != req.parts and req.sends <= 1 and not req.moved:
                    raise _Malformed(f"it counts {parts} parts; {req.parts} arrived")
                req.done = True
                req.sent = False
                del call.by_id[rid]
            else:
                code = _str(_get(m, "code", "error"), "code")
                msg = _str(_get(m, "message", "error"), "message", 0, MESSAGE_MAX)
                self._request_error(call, req, code, msg)
        except _Malformed as e:
            raise ZbertError("protocol", f"malformed {t}: {e}", rid) from None

    def _check_model(self, call, model, first, count):
        """One call, one model: the caller's, or the first results'."""
        what = f"texts {first}..{first + count - 1}"
        if model is None:
            if call.pinned:
                raise ZbertError("model", f"{what} name no model in a call of model "
                                          f"{call.model} (is the broker older than protocol "
                                          "1.3?)")
            return
        if call.model is None:
            call.model = model
        elif model != call.model:
            raise ZbertError("model", f"{what} came from model {model} in a call of model "
                                      f"{call.model} (name the model to choose one)")

    def _request_error(self, call, req, code, msg):
        now = time.monotonic()
        if code == "duplicate_id" and req.sends > 1:
            return  # a copy we sent again: an earlier one goes on
        if code == "busy" and req.parts == 0:
            # Nothing of it was accepted: resend with the same id after a pause that grows
            # from 50 ms to 2 s.
            if req.busy_since is None:
                req.busy_since = now
            if now - req.busy_since > self.busy_retry_s:
                del call.by_id[req.id]
                req.done = True
                raise ZbertError(code, msg, req.id)
            req.sent = False
            req.resend_at = now + min(2.0, 0.05 * 2 ** int((now - req.busy_since) / 0.5))
            return
        del call.by_id[req.id]
        req.done = True  # no message for this id follows an error
        req.sent = False
        if code == "too_large" and req.n > 1 and req.parts == 0:
            # Refused whole for its size (the broker's own limits may be below the
            # protocol's): two halves take its place in the order.
            half = req.n // 2
            a = _Request(self._next_id("r"), req.start, half)
            b = _Request(self._next_id("r"), req.start + half, req.n - half)
            pos = call.window.index(req)
            call.window[pos] = a
            call.window.insert(pos + 1, b)
            for q in (a, b):
                call.by_id[q.id] = q
                self._send_embed(call, q)
            return
        raise ZbertError(code, msg, req.id)


# --- zbert-embed's JSONL ----------------------------------------------------------------------

def _json_str(s):
    """A JSON string as zbert-embed writes it: UTF-8 kept, `"` and `\\` escaped, newline, tab
    and carriage return as \\n \\t \\r, other control characters (below U+0020, and
    U+007F) as \\u00XX."""
    out = ['"']
    short = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
    for ch in s:
        c = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ch in short:
            out.append(short[ch])
        elif c < 0x20 or c == 0x7F:
            out.append(f"\\u{c:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _floats(row):
    # %.9g round-trips float32; Python's % formatting rounds exactly as C's printf does.
    return "[" + ",".join(["%.9g" % x for x in row.tolist()]) + "]"


def format_jsonl(index, result, level, text=None):
    """One line (without newline) of zbert-embed's JSONL output for a result.

    An error result gives {"index":i,"error":message}. The token level needs the text the
    result is for (str, or bytes of valid UTF-8): its token objects carry each token's text,
    which the protocol does not send (it is the text's bytes over the token's
    byte_offsets), and, with token metadata, its sentence, pieceId, isWordStart and isOOV.
    """
    if result.error is not None:
        return f'{{"index":{index},"error":{_json_str(result.error.message)}}}'
    head = f'{{"index":{index}' + (',"truncated":true' if result.truncated else "")
    if level == "sentence":
        return f'{head},"vector":{_floats(result.vector)}}}'
    if level == "wordpiece":
        ids = ",".join(map(str, result.ids.tolist()))
        offs = ",".join(f"[{b},{e}]" for b, e in result.offsets.tolist())
        vecs = ",".join(_floats(v) for v in result.vectors)
        return f'{head},"ids":[{ids}],"offsets":[{offs}],"vectors":[{vecs}]}}'
    if level == "token":
        if text is None:
            raise ValueError("format_jsonl: the token level needs the text")
        raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        toks = []
        for k in range(result.vectors.shape[0]):
            bb, be = result.byte_offsets[k].tolist()
            b, e = result.offsets[k].tolist()
            t = f'{{"text":{_json_str(raw[bb:be].decode("utf-8"))},"begin":{b},"end":{e},'
            if result.sentence is not None:
                t += (f'"sentence":{int(result.sentence[k])},'
                      f'"pieceId":{int(result.piece_id[k])},'
                      f'"isWordStart":{"true" if result.word_start[k] else "false"},'
                      f'"isOOV":{"true" if result.oov[k] else "false"},')
            toks.append(t + f'"vector":{_floats(result.vectors[k])}}}')
        return f'{head},"tokens":[{",".join(toks)}]}}'
    raise ValueError(f"format_jsonl: level {level!r} is not supported")


# --- command line -----------------------------------------------------------------------------

_PROG = "zbert_client"

_USAGE = f"""usage: {_PROG} [embed] [--broker EP]... [--level sentence|wordpiece|token]
                    [--pooling cls|mean] [--normalize] [--truncate|--windows] [--sentences]
                    [--token-vector first|mean] [--compat none|sparknlp] [--format jsonl|npy]
                    [--model-id ID] [--deadline-ms N] [--timeout S] [--batch N]
                    [--inflight N] [--retry-ms N] [--outage-ms N]
                    [--curve-key FILE --broker-key FILE.pub] < lines > out
       {_PROG} status [--broker EP] [--timeout S] [--curve-key FILE --broker-key FILE.pub]

embed: one UTF-8 text per line on stdin; writes what zbert-embed writes for the same
options (JSONL, or with --format npy an N x dim float32 .npy, NaN rows for rejected lines).
The broker defaults to $ZBERT_BROKER, then {DEFAULT_BROKER}; several --broker to fail over
between.  A broker silent for --retry-ms (default 3000) is presumed gone; open requests wait
--outage-ms (default 300000) for a broker to answer again.  --model-id: only workers of that
model identity serve the run; without it the run keeps to the model of its first results.
--curve-key (this client's secret key file, from `zbert keygen`) and --broker-key (the
broker's public key file) connect with CurveZMQ; they default to $ZBERT_CURVE_KEY and
$ZBERT_BROKER_KEY.
Exit status: 0; 1 on failure; 2 on a usage error or a key file that cannot be used.
"""


class _Usage(Exception):
    pass


def _parse_args(argv):
    a = {"cmd": "embed", "broker": None, "level": "sentence", "pooling": None,
         "normalize": False, "windows": None, "sentences": False, "token_vector": None,
         "compat": None, "format": "jsonl", "deadline_ms": None,
         "timeout": None, "batch": 256, "inflight": 8, "curve_key": None, "broker_key": None,
         "retry_ms": 3000, "outage_ms": 300000, "model_id": None}
    args = list(argv)
    if args and args[0] in ("embed", "status"):
        a["cmd"] = args.pop(0)
    values = {"--level": ("level", str), "--model-id": ("model_id", str),
              "--retry-ms": ("retry_ms", int), "--outage-ms": ("outage_ms", int),
              "--pooling": ("pooling", str), "--format": ("format", str),
              "--token-vector": ("token_vector", str), "--compat": ("compat", str),
              "--deadline-ms": ("deadline_ms", int), "--timeout": ("timeout", float),
              "--batch": ("batch", int), "--inflight": ("inflight", int),
              "--curve-key": ("curve_key", str)}
    while args:
        opt = args.pop(0)
        if opt in ("-h", "--help"):
            raise _Usage("")
        if opt == "--normalize":
            a["normalize"] = True
        elif opt == "--windows":
            a["windows"] = True
        elif opt == "--truncate":
            a["windows"] = False
        elif opt == "--sentences":
            a["sentences"] = True
        elif opt in ("--broker-key", "--broker"):  # repeatable, as zbert's
            if not args:
                raise _Usage(f"{opt} needs a value")
            key = opt[2:].replace("-", "_")
            a[key] = (a[key] or []) + [args.pop(0)]
        elif opt in values:
            if not args:
                raise _Usage(f"{opt} needs a value")
            key, conv = values[opt]
            try:
                a[key] = conv(args.pop(0))
            except ValueError:
                raise _Usage(f"{opt}: not a valid value") from None
        else:
            raise _Usage(f"unknown option {opt}")
    if a["level"] not in LEVELS:
        raise _Usage("--level must be token, wordpiece or sentence")
    if a["token_vector"] is not None and a["token_vector"] not in TOKEN_VECTORS:
        raise _Usage("--token-vector must be first or mean")
    if a["compat"] is not None and a["compat"] not in COMPATS:
        raise _Usage("--compat must be none or sparknlp")
    if a["compat"] == "sparknlp" and a["level"] != "token":
        raise _Usage("--compat sparknlp gives token vectors; use it with --level token")
    if a["windows"] is None:
        # as zbert-embed: at the token level every token gets a vector (windows), unless
        # --truncate; Spark NLP compatibility has its own cap
        a["windows"] = a["level"] == "token" and a["compat"] in (None, "none")
    if a["pooling"] is not None and a["pooling"] not in POOLINGS:
        raise _Usage("--pooling must be cls or mean")
    if a["sentences"] and a["level"] == "sentence":
        raise _Usage("--sentences applies to the token and wordpiece levels")
    if a["format"] not in ("jsonl", "npy"):
        raise _Usage("--format must be jsonl or npy")
    if a["format"] == "npy" and a["level"] != "sentence":
        raise _Usage("--format npy holds one sentence vector per text; use it with "
                     "--level sentence")
    if not 1 <= a["batch"] <= TEXTS_MAX or a["inflight"] < 1:
        raise _Usage(f"--batch must be 1..{TEXTS_MAX} and --inflight at least 1")
    if a["deadline_ms"] is not None and a["deadline_ms"] < 0:
        raise _Usage("--deadline-ms must be >= 0")
    if a["retry_ms"] < 50 or a["outage_ms"] < a["retry_ms"]:
        raise _Usage("--retry-ms must be 50 at least, and --outage-ms not below it")
    if a["model_id"] is not None and not 1 <= len(a["model_id"].encode()) <= NAME_MAX:
        raise _Usage(f"--model-id must be 1 to {NAME_MAX} bytes")
    return a


def _read_lines(data):
    """Lines of stdin as zbert-embed reads them: split on LF, one trailing CR dropped, a
    last line without LF kept."""
    if not data:
        return []
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]


def _dim_from_status(client, timeout, model):
    dims = {w["dim"] for w in client.status(timeout=timeout or 5.0)["workers"]
            if model is None or w["model"] == model}
    if len(dims) != 1:
        raise ZbertError("no_model", "no worker tells the vector width (needed for an "
                                     "empty .npy)")
    return dims.pop()


def _cmd_embed(a):
    lines = _read_lines(sys.stdin.buffer.read())
    rejected = {}
    texts, where = [], []
    for i, ln in enumerate(lines):
        if len(ln) > TEXT_BYTES_MAX:
            rejected[i] = "limit exceeded"
            continue
        try:
            texts.append(ln.decode("utf-8"))
        except UnicodeDecodeError:
            rejected[i] = "invalid UTF-8"
            continue
        where.append(i)
    for i, msg in sorted(rejected.items()):
        print(f"{_PROG}: input line {i + 1}: {msg}", file=sys.stderr)
    out = sys.stdout.buffer
    npy = a["format"] == "npy"
    vecs = {}  # line -> sentence vector (npy)
    dim = None
    failed = len(rejected)
    with Client(a["broker"], batch=a["batch"], inflight=a["inflight"],
                curve_key=a["curve_key"], broker_key=a["broker_key"],
                retry=a["retry_ms"] / 1000.0, outage=a["outage_ms"] / 1000.0) as c:
        it = c.embed_iter(texts, level=a["level"], pooling=a["pooling"],
                          normalize=a["normalize"], windows=a["windows"],
                          sentences=a["sentences"], token_vector=a["token_vector"],
                          compat=a["compat"], deadline_ms=a["deadline_ms"],
                          timeout=a["timeout"], model=a["model_id"])
        model = a["model_id"]
        written = 0  # lines written so far (jsonl)

        def write_rejected(upto):
            nonlocal written
            while written < upto:
                if not npy:
                    r = TextResult(None, error=TextError("input", rejected[written]))
                    out.write(format_jsonl(written, r, a["level"]).encode() + b"\n")
                written += 1

        for k, r in it:
            i = where[k]
            model = model or r.model
            write_rejected(i)
            if r.error is not None:
                failed += 1
                print(f"{_PROG}: input line {i + 1}: {r.error.code}: {r.error.message}",
                      file=sys.stderr)
            if npy:
                if dim is None and r.vectors.shape[1]:
                    dim = r.vectors.shape[1]
                if r.error is None:
                    vecs[i] = r.vector
            else:
                line = format_jsonl(i, r, a["level"], texts[k])
                out.write(line.encode("utf-8") + b"\n")
            written = i + 1
        write_rejected(len(lines))
        if npy:
            if dim is None:  # no vector came back: the workers tell the width
                dim = _dim_from_status(c, a["timeout"], model)
            mat = np.full((len(lines), dim), np.nan, np.float32)
            for i, v in vecs.items():
                mat[i] = v
            np.save(out, mat)
    out.flush()
    if failed:
        tail = " (their rows are NaN)" if npy else ""
        print(f"{_PROG}: {failed} of {len(lines)} input lines rejected{tail}", file=sys.stderr)
        return 1
    return 0


def _cmd_status(a):
    with Client(a["broker"], curve_key=a["curve_key"], broker_key=a["broker_key"]) as c:
        st = c.status(timeout=a["timeout"] or 5.0)
    st.pop("id", None)
    print(json.dumps(st, indent=1, ensure_ascii=False))
    return 0


def main(argv=None):
    """The command line; returns the exit status (0, 1 on failure, 2 on usage errors)."""
    try:
        a = _parse_args(sys.argv[1:] if argv is None else argv)
    except _Usage as e:
        if not str(e):  # --help
            sys.stdout.write(_USAGE)
            return 0
        print(f"{_PROG}: {e}", file=sys.stderr)
        sys.stderr.write(_USAGE)
        return 2
    try:
        return _cmd_status(a) if a["cmd"] == "status" else _cmd_embed(a)
    except ZbertError as e:
        print(f"{_PROG}: {e}", file=sys.stderr)
        return 2 if e.code == "key" else 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
