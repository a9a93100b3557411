"""pyclient_robust.py -- the Python client's liveness against fake brokers (tests only).

Run by tests/test_pyclient.c (`test_robust`) with client/python on PYTHONPATH.  Each fake is a
ROUTER socket served by a thread of this process, with ZMQ_ROUTER_HANDOVER as the broker sets
it, speaking protocol revision 1.3 at the sentence level (a text's vector is [its byte length,
its CRC-32 mod 1000], so every result can be checked), and scripted per check:

  - identity: one 16-byte routing id (first byte not 0) for the client's life, reconnections
    and failover included;
  - a broker silent for a while that holds the request: after the silence the client pings and
    does not send the request again (`open` lists it);
  - a broker that restarted and lost everything: the request goes again with `have`, the texts
    received sent empty; no text is computed twice;
  - no broker at all: reconnections back off (3 to 8 connections in a 2 s outage with a retry
    of 0.1 s, not 20) and the call fails with `outage`, naming the budget;
  - `closing` with two brokers: the request moves to the second at once, with `have`; with
    every broker stopping, the back-off paces the moves until `outage`; with one broker, the
    client waits for it to come back and sends again what it lost;
  - a duplicate_id without id but with `of` naming the request ends nothing;
  - models: results name their model, a pinned call names it in every request and refuses
    another; an unpinned call keeps to the model of its first results; the command line's
    --model-id.
Exits non-zero (an assertion) on the first failure; prints one line per check.
"""

import subprocess
import sys
import threading
import time
import zlib

import msgpack
import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

import zbert_client as zc


def vector(t):
    b = t if isinstance(t, bytes) else t.encode("utf-8")
    return [float(len(b)), float(zlib.crc32(b) % 1000)]


class Fake:
    """A scripted broker.  behave(fake, rid, embed) answers an embed; statuses are answered
    with `open` listing what the fake holds."""

    def __init__(self, ctx, behave, model=None):
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.ep = f"tcp://127.0.0.1:{port}"
        self.mon = self.sock.get_monitor_socket(zmq.EVENT_ACCEPTED)
        self.behave = behave
        self.models = [model] if isinstance(model, str) or model is None else list(model)
        self.rids = set()
        self.embeds = []        # the embed maps received
        self.computed = 0       # texts covered by the parts sent
        self.accepted = 0       # connections accepted
        self.silent = False
        self.mute_until = 0.0   # ignores everything until then
        self.closing_until = 0.0
        self.forget = False     # after the mute: a broker that restarted
        self.held = {}          # id -> (embed, first text not yet sent, model, parts sent)
        self.started = time.monotonic() - 60
        self.stop = False
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.main, daemon=True)
        self.thread.start()

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.disable_monitor()
        self.mon.close(0)
        self.sock.close(0)

    def send(self, rid, m):
        try:
            self.sock.send_multipart([rid, msgpack.packb(dict(v=1, **m), use_bin_type=True)])
        except zmq.ZMQError:
            pass

    def model(self):
        return self.models[(len(self.embeds) - 1) % len(self.models)]

    def part(self, rid, e, a, b, model):
        texts = e["texts"][a:b]
        m = {"type": "part", "id": e["id"], "first": a, "count": b - a, "level": "sentence",
             "dim": 2, "rows": [1] * (b - a),
             "vectors": np.array([vector(t) for t in texts], "<f4").tobytes()}
        if model is not None:
            m["model"] = model
        self.send(rid, m)
        self.computed += b - a

    def done(self, rid, e, parts, model):
        m = {"type": "done", "id": e["id"], "texts": len(e["texts"]), "tokens": 1,
             "parts": max(parts, 1), "elapsed_ms": 1}
        if model is not None:
            m["model"] = model
        self.send(rid, m)

    def serve(self, rid, e, first=0, model=None, parts=0):
        """Parts of at most 3 texts outside `have` from text first, then done (counting the
        parts sent before)."""
        have, n = e.get("have") or [], len(e["texts"])
        held = set()
        for k in range(0, len(have), 2):
            held.update(range(have[k], have[k] + have[k + 1]))
        a = first
        while a < n:
            if a in held:
                a += 1
                continue
            b = a
            while b < n and b < a + 3 and b not in held:
                b += 1
            self.part(rid, e, a, b, model)
            parts += 1
            a = b
        self.done(rid, e, parts, model)

    def main(self):
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.mon, zmq.POLLIN)
        while not self.stop:
            ready = dict(poller.poll(10))
            if self.mon in ready:
                ev = recv_monitor_message(self.mon)
                if ev["event"] == zmq.EVENT_ACCEPTED:
                    self.accepted += 1
            if self.sock not in ready:
                continue
            rid, body = self.sock.recv_multipart()
            self.rids.add(rid)
            if self.silent:
                continue
            m = msgpack.unpackb(body, raw=False)
            now = time.monotonic()
            if now < self.closing_until:
                self.send(rid, {"type": "closing", "message": "stopping"})
                continue
            if now < self.mute_until:
                continue
            if self.mute_until and self.forget:
                self.started, self.held = now, {}
            self.mute_until = 0.0
            if m["type"] == "status":
                self.send(rid, {"type": "status_reply", "id": m.get("id"),
                                "uptime_ms": int((now - self.started) * 1000), "workers": [],
                                "requests": len(self.held), "queued_shards": 0,
                                "queued_texts": 0, "in_flight_shards": 0, "texts_per_s": 0.0,
                                "tokens_per_s": 0.0,
                                "latency_ms": {"p50": 0.0, "p90": 0.0, "p99": 0.0},
                                "protocol_errors": 0, "open": list(self.held)})
                for rid_held, (e, first, model, parts) in list(self.held.items()):
                    del self.held[rid_held]
                    self.serve(rid, e, first, model, parts)
            elif m["type"] == "embed":
                self.embeds.append(m)
                self.behave(self, rid, m)


def serve(fake, rid, e):
    fake.serve(rid, e, model=fake.model())


def half_then(fake, rid, e, forget):
    """The first half, then silence for 0.5 s (a restart when forget)."""
    n, model = len(e["texts"]), fake.model()
    for a in range(0, n // 2, 2):
        fake.part(rid, e, a, min(a + 2, n // 2), model)
    if not forget:
        fake.held[e["id"]] = (e, n // 2, model, (n // 2 + 1) // 2)
    fake.mute_until, fake.forget = time.monotonic() + 0.5, forget


def half_then_restart(fake, rid, e):
    if len(fake.embeds) == 1:
        half_then(fake, rid, e, True)
    else:
        serve(fake, rid, e)


def half_then_hold(fake, rid, e):
    half_then(fake, rid, e, False)


def third_then_closing(stop_s, restart):
    def behave(fake, rid, e):
        if len(fake.embeds) > 1:
            return serve(fake, rid, e)
        n, model = len(e["texts"]), fake.model()
        for a in range(0, n // 3, 2):
            fake.part(rid, e, a, min(a + 2, n // 3), model)
        now = time.monotonic()
        fake.closing_until = now + stop_s
        if restart:
            fake.mute_until, fake.forget = now + stop_s + 0.3, True
        fake.send(rid, {"type": "closing", "message": "stopping"})
    return behave


def dup_of(fake, rid, e):
    fake.send(rid, {"type": "error", "code": "duplicate_id", "of": e["id"],
                    "message": "another request is open under this id"})
    serve(fake, rid, e)


def texts(n, tag):
    return [f"{tag} text {i} " + "w " * (i % 5) for i in range(n)]


def check(results, items):
    assert len(results) == len(items)
    for r, t in zip(results, items):
        assert r.ok and r.vectors.shape == (1, 2), r
        assert r.vector.tolist() == vector(t), (r.vector, t)


def fails(code, fn):
    try:
        fn()
    except zc.ZbertError as e:
        assert e.code == code, e
        return e
    raise AssertionError(f"no ZbertError {code}")


ctx = zmq.Context.instance()

# identity and a silence during which the broker holds the request
f = Fake(ctx, half_then_hold, "tiny-a")
with zc.Client(f.ep, retry=0.2) as c:
    assert len(c.routing_id) == 16 and c.routing_id[0] != 0
    items = texts(21, "hold")
    check(c.embed(items, level="sentence"), items)
    rid = c.routing_id
assert f.rids == {rid}, f.rids
assert len(f.embeds) == 1 and f.computed == 21 and f.accepted >= 2, (len(f.embeds), f.computed)
f.close()
print("identity: one 16-byte routing id; a broker back from silence holds the request: "
      "not sent again")

# a restart that lost everything: `have`, nothing computed twice
f = Fake(ctx, half_then_restart, "tiny-a")
with zc.Client(f.ep, retry=0.2) as c:
    items = texts(21, "restart")
    check(c.embed(items, level="sentence"), items)
assert len(f.embeds) == 2 and len(f.rids) == 1
e0, e1 = f.embeds
assert e0["id"] == e1["id"] and "have" not in e0 and e1["have"] == [0, 10], e1.get("have")
assert sum(1 for t in e1["texts"] if t) == 11 and f.computed == 21, f.computed
assert e1["model"] == "tiny-a"  # pinned to the model of its first results
f.close()
print("restart: sent again with have [0, 10], 21 texts computed for 21")

# nobody: back-off, then the outage budget
f = Fake(ctx, serve)
f.silent = True
with zc.Client(f.ep, retry=0.1, outage=2.0) as c:
    t0 = time.monotonic()
    e = fails("outage", lambda: c.embed(["x"], level="sentence"))
    spent = time.monotonic() - t0
assert 1.5 <= spent < 8, spent
assert "outage budget of 2.0 s" in e.message, e
assert 3 <= f.accepted <= 8, f.accepted
f.close()
print(f"outage: {f.accepted} connections in {spent:.1f} s, then `outage`")

# closing with two brokers: moved at once, with have
a, b = Fake(ctx, third_then_closing(3600, False), "tiny-a"), Fake(ctx, serve, "tiny-a")
with zc.Client([a.ep, b.ep], retry=5.0) as c:
    items = texts(21, "closing")
    t0 = time.monotonic()
    check(c.embed(items, level="sentence"), items)
    assert time.monotonic() - t0 < 2.5
assert len(a.embeds) == 1 and len(b.embeds) == 1 and b.embeds[0]["have"] == [0, 7]
assert a.computed + b.computed == 21 and a.rids == b.rids
a.close()
b.close()
print("closing: moved to the other broker at once, 21 texts computed for 21")

# every broker stopping: paced by the back-off, then `outage`
a, b = Fake(ctx, third_then_closing(3600, False)), Fake(ctx, serve)
b.closing_until = time.monotonic() + 3600
with zc.Client([a.ep, b.ep], retry=0.2, outage=2.0) as c:
    t0 = time.monotonic()
    e = fails("outage", lambda: c.embed(texts(21, "every"), level="sentence"))
    spent = time.monotonic() - t0
assert 1.5 <= spent < 8 and "is stopping" in e.message, (spent, e)
assert 2 <= a.accepted + b.accepted <= 10, (a.accepted, b.accepted)
a.close()
b.close()
print(f"closing everywhere: {a.accepted + b.accepted} connections in {spent:.1f} s, then `outage`")

# closing with one broker: waited out
f = Fake(ctx, third_then_closing(0.4, True), "tiny-a")
with zc.Client(f.ep, retry=0.2, outage=10.0) as c:
    items = texts(21, "wait")
    check(c.embed(items, level="sentence"), items)
assert len(f.embeds) == 2 and f.embeds[1]["have"] == [0, 7] and f.computed == 21
f.close()
print("closing, one broker: waited for it, then sent again with have")

# duplicate_id without id, with of: the request goes on
f = Fake(ctx, dup_of)
with zc.Client(f.ep) as c:
    items = texts(5, "dup")
    check(c.embed(items, level="sentence"), items)
f.close()
print("duplicate_id with of: the request goes on")

# models
f = Fake(ctx, serve, "tiny-a")
with zc.Client(f.ep, batch=2, inflight=1) as c:
    items = texts(6, "model")
    res = c.embed(items, level="sentence")
    check(res, items)
    assert all(r.model == "tiny-a" for r in res)
    assert [e.get("model") for e in f.embeds] == [None, "tiny-a", "tiny-a"]
    c.embed(items[:1], level="sentence", model="tiny-a")
    assert f.embeds[-1]["model"] == "tiny-a"
    e = fails("model", lambda: c.embed(items[:1], level="sentence", model="tiny-b"))
    assert "tiny-a" in e.message and "tiny-b" in e.message
f.close()
f = Fake(ctx, serve, ["tiny-a", "tiny-b"])
with zc.Client(f.ep, batch=2, inflight=3) as c:
    e = fails("model", lambda: c.embed(texts(6, "two"), level="sentence"))
    assert "came from model tiny-b in a call of model tiny-a" in e.message, e
    assert sum(r is not None for r in e.results) == 2
f.close()
f = Fake(ctx, serve)  # names no model: a pinned call cannot be checked
with zc.Client(f.ep) as c:
    e = fails("model", lambda: c.embed(["x"], level="sentence", model="tiny-a"))
    assert "older than protocol 1.3" in e.message
f.close()
f = Fake(ctx, serve, "tiny-a")
run = subprocess.run([sys.executable, "-m", "zbert_client", "--broker", f.ep, "--model-id",
                      "tiny-b"], input=b"one\ntwo\n", capture_output=True)
assert run.returncode == 1 and b"tiny-b" in run.stderr, run
run = subprocess.run([sys.executable, "-m", "zbert_client", "--broker", f.ep, "--model-id",
                      "tiny-a"], input=b"one\ntwo\n", capture_output=True)
assert run.returncode == 0 and run.stdout.count(b"\n") == 2, run
assert f.embeds[-1]["model"] == "tiny-a"
f.close()
print("models: named in results, pinned calls, one model per call, --model-id")
