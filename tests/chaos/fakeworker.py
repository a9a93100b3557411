#!/usr/bin/python3
"""fakeworker.py -- a worker that speaks proto/PROTOCOL.md section 6 and computes nothing.

    fakeworker.py --broker EP [--broker EP ...] --model ID --dim N
                  [--mode garbage|hang] [--name NAME] [--seed S]

It connects a DEALER to each broker's worker endpoint, announces itself with `ready` (the
model identity and width of the real workers, so that it is given their shards),
heartbeats, and answers `reconnect` with a new `ready` as a real worker does.  Its answers
to tasks are wrong on purpose:

  garbage  every task gets a well-formed `result` that does not match it, in turn:
           rows   one row more than the task has texts (the vectors sized to match)
           nan    the right shape, with a NaN among the vectors
           inf    the right shape, with an infinity among the vectors
           dim    vectors one dimension wider than the worker announced
           A broker refuses each one, sets the worker aside by name and tells it to
           reconnect; this worker then announces itself again 1 to 3 s later under a new
           name (NAME-1, NAME-2, ...), as a faulty worker restarted on another host would,
           so that it keeps being given shards.
  hang     it keeps heartbeating but answers no task: every other one gets a malformed
           result (vectors shorter than its rows say), which a broker drops without an
           answer, the others nothing at all.

Prints one line per answer ("garbage rows shard 12 broker 0", "hang shard 13 broker 1") and
per `ready`, on stdout (flushed); SIGTERM exits.
"""
import argparse
import math
import random
import signal
import struct
import sys
import time

import msgpack
import zmq

HEARTBEAT_S = 1.0  # PROTOCOL.md 6: a heartbeat after 1 s without sending
DEAD_S = 3.0       # a peer silent for 3 s is dead
CREDIT = 2
GARBAGE = ("rows", "nan", "inf", "dim")
RESTART_S = (1.0, 3.0)  # the pause before a new `ready` after `reconnect`


def say(msg):
    print(msg, flush=True)


def pack(obj):
    return msgpack.packb(dict(v=1, **obj), use_bin_type=True)


class Link:
    """The connection to one broker."""

    def __init__(self, ctx, ep, k):
        self.ctx, self.ep, self.k = ctx, ep, k
        self.sock = None
        self.epoch = 0
        self.sent = self.heard = 0.0
        self.ready_at = None  # when to announce ourselves again after `reconnect`
        self.open()

    def open(self):
        if self.sock is not None:
            self.sock.close(0)
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(self.ep)
        self.heard = time.monotonic()

    def send(self, obj):
        try:
            self.sock.send(pack(obj), zmq.DONTWAIT)
        except zmq.Again:
            return  # not connected yet: the heartbeat timer tries again
        self.sent = time.monotonic()


class FakeWorker:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.ctx = zmq.Context()
        self.links = [Link(self.ctx, ep, k) for k, ep in enumerate(args.broker)]
        self.renames = 0
        self.n = 0
        self.name = args.name
        for link in self.links:
            self.ready(link)

    def ready(self, link):
        link.epoch += 1
        link.send(dict(type="ready", name=self.name, model=self.args.model, dim=self.args.dim,
                       threads=1, credit=CREDIT, epoch=link.epoch))
        say("ready %s epoch %d broker %d" % (self.name, link.epoch, link.k))

    def answer(self, link, task):
        shard, epoch = task.get("shard"), task.get("epoch")
        texts = task.get("texts") or []
        level = task.get("level", "token")
        n, dim = len(texts), self.args.dim
        self.n += 1
        if self.args.mode == "hang":
            say("hang shard %s broker %d" % (shard, link.k))
            if self.n % 2:
                # malformed: rows promise more vectors than the bin holds
                link.send(dict(type="result", shard=shard, epoch=epoch, tokens=n, level=level,
                               dim=dim, rows=[1] * n, vectors=b"\0\0\0\0"))
            return
        kind = GARBAGE[self.n % len(GARBAGE)]
        rows, width = n, dim
        if kind == "rows":
            rows = n + 1
        elif kind == "dim":
            width = dim + 1
        floats = [self.rng.uniform(-1, 1) for _ in range(rows * width)]
        if kind == "nan":
            floats[self.rng.randrange(len(floats))] = math.nan
        elif kind == "inf":
            floats[self.rng.randrange(len(floats))] = -math.inf
        msg = dict(type="result", shard=shard, epoch=epoch, tokens=2 * rows, level=level,
                   dim=width, rows=[1] * rows, vectors=struct.pack("<%df" % len(floats), *floats))
        if level in ("token", "wordpiece"):
            msg["offsets"] = [[0, 0]] * rows
            msg["byte_offsets"] = [[0, 0]] * rows
        if level == "wordpiece":
            msg["ids"] = [[101]] * rows
        link.send(msg)
        say("garbage %s shard %s broker %d" % (kind, shard, link.k))

    def on_message(self, link, body):
        try:
            m = msgpack.unpackb(body, raw=False)
        except Exception:
            return
        if not isinstance(m, dict):
            return
        t = m.get("type")
        if t == "task":
            self.answer(link, m)
        elif t == "reconnect" and link.ready_at is None:
            # a new name (garbage), after a pause: a faulty worker restarting
            link.ready_at = time.monotonic() + self.rng.uniform(*RESTART_S)

    def run(self):
        poller = zmq.Poller()
        for link in self.links:
            poller.register(link.sock, zmq.POLLIN)
        while True:
            events = dict(poller.poll(100))
            now = time.monotonic()
            for link in self.links:
                if link.sock in events:
                    while True:
                        try:
                            body = link.sock.recv(zmq.DONTWAIT)
                        except zmq.Again:
                            break
                        link.heard = now
                        self.on_message(link, body)
                if link.ready_at is not None and now >= link.ready_at:
                    link.ready_at = None
                    if self.args.mode == "garbage":
                        self.renames += 1
                        self.name = "%s-%d" % (self.args.name, self.renames)
                    self.ready(link)
                elif now - link.heard > DEAD_S:
                    # the broker is gone (or restarted): a new socket, a new ready
                    poller.unregister(link.sock)
                    link.open()
                    poller.register(link.sock, zmq.POLLIN)
                    link.epoch = 0
                    link.ready_at = None
                    self.ready(link)
                elif now - link.sent >= HEARTBEAT_S:
                    link.send(dict(type="heartbeat"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--broker", action="append", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--dim", type=int, required=True)
    ap.add_argument("--mode", choices=("garbage", "hang"), default="garbage")
    ap.add_argument("--name", default="fake")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    FakeWorker(args).run()


if __name__ == "__main__":
    main()
