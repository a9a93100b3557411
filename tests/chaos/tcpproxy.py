#!/usr/bin/python3
"""tcpproxy.py -- a TCP relay that can cut every connection at once.

    tcpproxy.py --route LISTEN_PORT:HOST:PORT [--route ...]

For each route, accepts connections on 127.0.0.1:LISTEN_PORT and relays each one, byte for
byte in both directions, to a new connection to HOST:PORT.  It stands between a client and
a broker so that the connection can be broken the way networks break them:

  SIGUSR1   cut every connection of every route at once: both sockets of each pair are
            closed abruptly with SO_LINGER 0, so that each peer gets a RST (as when a NAT,
            a firewall or a load balancer drops its state), then print "cut N connections"
  SIGTERM   exit

A connection whose upstream refuses (the broker is down) is cut the same way at once; one
that either side closes is closed on the other side once what it sent has been passed on.
Each direction buffers at most 4 MiB and stops reading its sender beyond that.  Prints
"listening" once every route is bound, then one line per cut, on stdout (flushed).
"""
import argparse
import errno
import selectors
import signal
import socket
import struct
import sys

BUF_MAX = 4 << 20
CHUNK = 256 << 10

cut_requested = False


def on_usr1(_sig, _frm):
    global cut_requested
    cut_requested = True


def say(msg):
    print(msg, flush=True)


def reset(sock):
    """Closes sock with a RST rather than a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class Pair:
    """One relayed connection: the accepted socket and its upstream."""

    def __init__(self, down, up):
        self.socks = (down, up)
        self.pending = (bytearray(), bytearray())  # bytes waiting to go to socks[i]
        self.eof = [False, False]                   # socks[i] sent FIN
        self.events = [0, 0]                        # what socks[i] is registered for
        self.closed = False


class Proxy:
    def __init__(self, routes):
        self.sel = selectors.DefaultSelector()
        self.pairs = set()
        for lport, host, port in routes:
            ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind(("127.0.0.1", lport))
            ls.listen(64)
            ls.setblocking(False)
            self.sel.register(ls, selectors.EVENT_READ, ("listen", (host, port)))

    def accept(self, ls, target):
        try:
            down, _ = ls.accept()
        except OSError:
            return
        up = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        up.settimeout(2.0)
        try:
            up.connect(target)
        except OSError:
            up.close()
            reset(down)
            return
        for s in (down, up):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        p = Pair(down, up)
        self.pairs.add(p)
        self.interest(p)

    def interest(self, p):
        """Registers each side for what it waits for (a side waiting for nothing is left
        out of the selector: an idle EOF'd or writable socket would wake it for ever)."""
        for i in (0, 1):
            ev = 0
            if not p.eof[i] and len(p.pending[1 - i]) < BUF_MAX:
                ev |= selectors.EVENT_READ
            if p.pending[i]:
                ev |= selectors.EVENT_WRITE
            s = p.socks[i]
            if ev == p.events[i]:
                continue
            if p.events[i] == 0:
                self.sel.register(s, ev, ("pair", p, i))
            elif ev == 0:
                self.sel.unregister(s)
            else:
                self.sel.modify(s, ev, ("pair", p, i))
            p.events[i] = ev

    def close(self, p, abrupt):
        if p.closed:
            return
        p.closed = True
        self.pairs.discard(p)
        for i, s in enumerate(p.socks):
            if p.events[i]:
                self.sel.unregister(s)
            if abrupt:
                reset(s)
            else:
                s.close()

    def on_pair(self, p, i, events):
        if p.closed:
            return
        s, other = p.socks[i], 1 - i
        if events & selectors.EVENT_READ and not p.eof[i]:
            try:
                data = s.recv(CHUNK)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                self.close(p, True)  # a reset on one side is passed on as a reset
                return
            if data == b"":
                p.eof[i] = True
            elif data:
                p.pending[other].extend(data)
        if p.pending[i] and events & selectors.EVENT_WRITE:
            try:
                n = s.send(p.pending[i])
                del p.pending[i][:n]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self.close(p, True)
                return
        # a side that closed: close both once what it sent has gone to the other
        for k in (0, 1):
            if p.eof[k] and not p.pending[1 - k]:
                self.close(p, False)
                return
        self.interest(p)

    def cut_all(self):
        n = len(self.pairs)
        for p in list(self.pairs):
            self.close(p, True)
        say("cut %d connections" % n)

    def run(self):
        global cut_requested
        say("listening")
        while True:
            if cut_requested:
                cut_requested = False
                self.cut_all()
            try:
                ready = self.sel.select(0.1)
            except InterruptedError:
                continue
            for key, events in ready:
                if key.data[0] == "listen":
                    self.accept(key.fileobj, key.data[1])
                else:
                    self.on_pair(key.data[1], key.data[2], events)


def route(text):
    try:
        lport, host, port = text.split(":")
        return int(lport), host, int(port)
    except ValueError:
        raise argparse.ArgumentTypeError("a route is LISTEN_PORT:HOST:PORT, not %r" % text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--route", type=route, action="append", required=True)
    args = ap.parse_args()
    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        proxy = Proxy(args.route)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            say("tcpproxy: a listening port is taken: %s" % e)
        raise
    proxy.run()


if __name__ == "__main__":
    main()
