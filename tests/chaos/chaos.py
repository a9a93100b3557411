#!/usr/bin/python3
"""chaos.py -- the service under faults: one corpus-scale job must come out whole.

    tests/chaos/chaos.py [--long] [--texts N] [--faults KIND,...] [--seed S]
                         [--timeout S] [--model tiny|L,H,A,I] [--keep]

A `zbert embed` job reads a generated corpus (texts built from a fixed word list by a seeded
generator; some over 512 wordpieces) and goes through two brokers, A and B (`--broker A
--broker B`, each reached through tcpproxy.py), served by three zbert-workers that each
serve both brokers.  Meanwhile a seeded fault script, every step of which it prints and
logs, breaks things.  Fault kinds (--faults):

  worker-kill   SIGKILL a worker; it is started again 0.5 to 3 s later
  worker-stop   SIGSTOP a worker, SIGCONT 1 to 6 s later (past the 3 s heartbeat limit or
                not)
  worker-term   SIGTERM a worker (it drains and leaves); it is started again
  garbage       a fake worker (fakeworker.py) serves both brokers and answers every task
                with a result that does not match it: a row too many, a NaN or an infinity
                among the vectors, vectors one dimension too wide
  hang          a fake worker that heartbeats and takes tasks but never answers usefully
                (nothing, or a malformed result)
  reset         cut the client's connections: the proxy closes both ends of every
                connection at once with a RST
  broker-term   SIGTERM the broker serving the client (it drains and exits); it is started
                again
  broker-kill   SIGKILL the other broker (the one serving the client when there was no
                SIGTERM); it is started again

The worker faults follow one another at random intervals for the whole job, at least one
worker always running, spaced by the speed of the machine (pace()); the others happen at
drawn points of the job's progress (the fraction of the output written): the fake workers
early, then until the end, resets spread over the job, the SIGTERM of one broker and later
the SIGKILL of the other (never both brokers down at once).

Then it checks that `zbert embed` exited 0, that its output has every text exactly once,
in order, byte for byte what zbert-embed writes for the same corpus and options, that no
broker or worker died by itself (an exit the script did not cause fails the run), and, as
it stops the cluster with SIGTERM at the end, that every worker and broker exits 0.  Each
broker's peak memory (VmHWM of /proc/PID/status, sampled) is recorded and checked against
the bound the broker documents (broker_vmhwm_bound below).  It prints the figures: texts,
faults injected by kind, times, memory peaks.  A job that stops writing for --stall
seconds, or outlasts --timeout, fails with what each broker holds.

Forms: without --long (what `make test` runs), 4,000 texts and the fault kinds of
SHORT_FAULTS; with --long (`make test-chaos`), 10,000 texts and every kind.  Everything
runs on 127.0.0.1 under a temporary directory, removed at the end with every process
started here (also when the run fails or is interrupted; ZB_KEEP_LOGS=1 or --keep keeps
the directory).  The programs are taken from $ZB_BIN (default bin/).  Exit status 0 when
every check holds, 1 with what did not, 2 on a usage error.
"""
import argparse
import ctypes
import heapq
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

WORKER_KINDS = ("worker-kill", "worker-stop", "worker-term")
KINDS = WORKER_KINDS + ("garbage", "hang", "reset", "broker-term", "broker-kill")
# The kinds the short form (make test) injects: those the service survives today.
SHORT_FAULTS = ("worker-kill", "worker-stop", "worker-term", "garbage", "broker-term",
                "broker-kill")
LONG_FAULTS = KINDS

# The same options for zbert-embed and zbert embed: mean pooling over every window, so that
# each window of a long text counts in its vector.
EMBED_OPTIONS = ["--level", "sentence", "--pooling", "mean", "--windows"]

# The model: zbert-model random of this shape (layers, hidden, heads, intermediate), slow
# enough that a job lasts long enough to be hit; "tiny" takes tests/fixtures/tiny-seed1.
# Programs built with AddressSanitizer (make check) run a smaller one: they are slower.
MODEL_SHAPE = "4,256,4,1024"
MODEL_SHAPE_SANITIZED = "tiny"
MODEL_SEED = 7

# Broker settings given to both brokers (the memory bound below depends on them).  Shards
# of 8 texts: a request of the client's 64 is delivered in several parts (faults fall
# between them), and a shard is short next to the time between two worker faults.
BROKER_SHARD_TEXTS = 8
BROKER_QUEUE_BYTES_MAX = 64 << 20
BROKER_CLIENT_BYTES_MAX = 16 << 20  # given only to a broker that has the setting
WORKERS = 3
WORKER_CREDIT = 2  # zbert-worker's default for 64-text batches


def broker_vmhwm_bound(inputs):
    """The broker's documented peak memory (VmHWM, bytes) for these inputs, or None.

    The broker documents its formula in broker/broker.h and the README (roughly
    queue-bytes-max + clients x client-bytes-max + workers x credit x largest result +
    fixed overhead).  Until it does, this returns None: the peaks are measured and
    printed, not checked.  inputs: queue_bytes_max, clients, client_bytes_max (None when
    the broker has no such setting), workers, credit, largest_result (bytes of the
    largest result body of this job).
    """
    return None


# --- words of the corpus --------------------------------------------------------------

WORDS = (
    "the of and to in is was for on that by with as at from his her it an were are which "
    "this be or had not but first one their its new after who they have two all she been "
    "other when there also into many more than time during city years only most school "
    "world between three state river where later under national about second while team "
    "tokenization embedding vector broker worker shard request cluster failover recovery "
    "café naïve Zürich façade jalapeño über résumé Ångström São Paulo Kraków "
    "NLP BERT GPU ZeroMQ MessagePack e-mail U.S. don't isn't (really) [note] well, end. "
    "Why? yes! 3.14 1,000 42 2024-01-31 #hashtag @user x86_64 日本語 中文 한국어 Ελληνικά "
    "русский עברית العربية हिन्दी 😀 👍🏽 ★ → ∑ — … “quoted” ‘single’"
).split()


def make_corpus(path, n, seed):
    """Writes n texts, one per line; returns (texts, texts over 512 wordpieces)."""
    rng = random.Random("corpus-%d" % seed)
    long_texts = 0
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            r = rng.random()
            if r < 0.002:
                k = 0  # an empty text
            elif r < 0.017:
                k = rng.randint(600, 1100)  # every word is a wordpiece at least: > 512
                long_texts += 1
            elif r < 0.2:
                k = rng.randint(40, 200)
            else:
                k = rng.randint(1, 40)
            f.write(" ".join(rng.choice(WORDS) for _ in range(k)) + "\n")
    return n, long_texts


# --- processes ------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_PARENT = os.getpid()
_CHILDREN = []  # every Popen started here, for cleanup


def _child_setup():
    # A child dies with this script, even when the script is killed with SIGKILL.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != _PARENT:
        os._exit(1)


def spawn(argv, log):
    with open(log, "ab") as out:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             preexec_fn=_child_setup, cwd=ROOT)
    _CHILDREN.append(p)
    return p


def kill_all():
    """SIGKILL and reap every child still running (stopped ones too)."""
    for p in _CHILDREN:
        if p.poll() is None:
            try:
                p.kill()
            except OSError:
                pass
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    _CHILDREN.clear()


class Failure(Exception):
    pass


def vmhwm_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tail(path, n=15):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return "    (no log)"
    return "\n".join("    " + line for line in lines[-n:]) or "    (empty)"


def free_ports(n):
    """n distinct free TCP ports on 127.0.0.1 below the ephemeral range: a restarted broker
    binds its port again, and no outgoing connection may take it meanwhile (nor connect to
    itself through it)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    low = max(low, 2048)
    rng = random.Random()
    ports = []
    while len(ports) < n:
        port = rng.randrange(low // 2, low)
        if port in ports:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
            ports.append(port)
        except OSError:
            pass
        finally:
            s.close()
    return ports


class Proc:
    """A process of the cluster, started again after faults; state is what the script
    expects of it: up, stopped (SIGSTOP), draining (SIGTERM sent), down."""

    def __init__(self, label, argv, log):
        self.label, self.argv, self.log = label, argv, log
        self.p = None
        self.state = "down"
        self.since = 0.0
        self.lives = 0
        self.peak_kb = 0

    def start(self):
        self.p = spawn(self.argv, self.log)
        self.state, self.since = "up", time.monotonic()
        self.lives += 1
        return self.p.pid

    def send(self, sig):
        if self.p is not None and self.p.poll() is None:
            os.kill(self.p.pid, sig)

    def kill(self):
        self.send(signal.SIGKILL)
        self.p.wait(timeout=30)
        self.state, self.since = "down", time.monotonic()

    def sample(self):
        if self.p is not None and self.p.poll() is None:
            self.peak_kb = max(self.peak_kb, vmhwm_kb(self.p.pid))


# --- the run --------------------------------------------------------------------------

class Chaos:
    def __init__(self, args):
        self.a = args
        self.bin = os.path.join(ROOT, os.environ.get("ZB_BIN") or "bin")
        self.dir = tempfile.mkdtemp(prefix="zbert-chaos-")
        self.faults = {k: 0 for k in KINDS}
        self.notes = {}
        self.events = []
        self.seq = 0
        self.t0 = time.monotonic()
        self.job_t0 = None
        self.flog = open(self.path("faults.log"), "w")
        self.rng = {k: random.Random("%s-%d" % (k, args.seed)) for k in
                    ("workers", "points", "broker")}
        self.fakes = []
        self.proxy = None
        self.client = None

    def path(self, name):
        return os.path.join(self.dir, name)

    def exe(self, name):
        return os.path.join(self.bin, name)

    def say(self, msg):
        print("chaos: " + msg, flush=True)

    def log(self, kind, msg):
        t = time.monotonic() - (self.job_t0 or self.t0)
        line = "[%7.2f s] %-12s %s" % (t, kind, msg)
        self.flog.write(line + "\n")
        self.flog.flush()
        if not self.a.quiet:
            print("chaos: " + line, flush=True)

    def at(self, delay, fn, *args):
        self.seq += 1
        heapq.heappush(self.events, (time.monotonic() + delay, self.seq, fn, args))

    def sh(self, argv, **kw):
        return subprocess.run(argv, cwd=ROOT, check=False, **kw)

    # --- setup ---

    def make_model(self):
        bundle = self.path("model.zbm")
        if self.a.model == "tiny":
            src = os.path.join(ROOT, "tests", "fixtures", "tiny-seed1")
        else:
            try:
                shape = tuple(int(x) for x in self.a.model.split(","))
                assert len(shape) == 4
            except (ValueError, AssertionError):
                raise Failure("--model takes tiny or LAYERS,HIDDEN,HEADS,INTERMEDIATE")
            src = self.path("model")
            r = self.sh([self.exe("zbert-model"), "random", "--layers", str(shape[0]),
                         "--hidden", str(shape[1]), "--heads", str(shape[2]),
                         "--intermediate", str(shape[3]), "--vocab",
                         os.path.join(ROOT, "tests", "fixtures", "tiny-seed1", "vocab.txt"),
                         "--seed", str(MODEL_SEED), "-o", src], stdout=subprocess.DEVNULL)
            if r.returncode != 0:
                raise Failure("zbert-model random failed (%d)" % r.returncode)
        r = self.sh([self.exe("zbert-model"), "convert", src, "-o", bundle],
                    stdout=subprocess.DEVNULL)
        if r.returncode != 0:
            raise Failure("zbert-model convert failed (%d)" % r.returncode)
        r = self.sh([self.exe("zbert-model"), "inspect", bundle], capture_output=True, text=True)
        ident = re.search(r"^identity: (\S+)", r.stdout, re.M)
        dim = re.search(r"hidden (\d+)", r.stdout)
        if r.returncode != 0 or not ident or not dim:
            raise Failure("zbert-model inspect: cannot read the identity of %s" % bundle)
        self.bundle, self.model_id, self.dim = bundle, ident.group(1), int(dim.group(1))

    def reference(self):
        t = time.monotonic()
        with open(self.corpus, "rb") as inp, open(self.path("reference.jsonl"), "wb") as out:
            r = subprocess.run([self.exe("zbert-embed"), "--model", self.bundle, "--threads", "2"]
                               + EMBED_OPTIONS, stdin=inp, stdout=out,
                               stderr=open(self.path("reference.err"), "wb"), cwd=ROOT)
        if r.returncode != 0:
            raise Failure("zbert-embed failed (%d) on the corpus:\n%s"
                          % (r.returncode, tail(self.path("reference.err"))))
        self.ref_time = time.monotonic() - t
        self.ref_size = os.path.getsize(self.path("reference.jsonl"))

    def broker_help(self):
        r = self.sh([self.exe("zbert-broker"), "--help"], capture_output=True, text=True)
        return r.stdout + r.stderr

    def start_cluster(self):
        pa, wa, pb, wb, xa, xb = free_ports(6)
        self.ep = {"A": "tcp://127.0.0.1:%d" % pa, "B": "tcp://127.0.0.1:%d" % pb}
        self.wep = {"A": "tcp://127.0.0.1:%d" % wa, "B": "tcp://127.0.0.1:%d" % wb}
        self.xep = {"A": "tcp://127.0.0.1:%d" % xa, "B": "tcp://127.0.0.1:%d" % xb}
        extra = ["--queue-bytes-max", str(BROKER_QUEUE_BYTES_MAX),
                 "--shard-texts-max", str(BROKER_SHARD_TEXTS)]
        self.client_bytes_max = None
        if "--client-bytes-max" in self.broker_help():
            extra += ["--client-bytes-max", str(BROKER_CLIENT_BYTES_MAX)]
            self.client_bytes_max = BROKER_CLIENT_BYTES_MAX
        self.brokers = {}
        for name in ("A", "B"):
            argv = [self.exe("zbert-broker"), "--clients", self.ep[name], "--workers",
                    self.wep[name]] + extra
            b = Proc("broker " + name, argv, self.path("broker-%s.log" % name))
            b.start()
            self.brokers[name] = b
        self.workers = []
        for k in range(1, WORKERS + 1):
            argv = [self.exe("zbert-worker"), "--model", self.bundle, "--broker", self.wep["A"],
                    "--broker", self.wep["B"], "--threads", "1", "--name", "chaos-w%d" % k]
            w = Proc("worker w%d" % k, argv, self.path("worker-%d.log" % k))
            w.start()
            self.workers.append(w)
        # the client reaches both brokers through the proxy
        self.proxy_log = self.path("proxy.log")
        self.proxy = spawn([sys.executable, os.path.join(HERE, "tcpproxy.py"),
                            "--route", "%d:127.0.0.1:%d" % (xa, pa),
                            "--route", "%d:127.0.0.1:%d" % (xb, pb)], self.proxy_log)
        self.proxy_seen = 0
        deadline = time.monotonic() + 60
        while "listening" not in open(self.proxy_log).read():
            if self.proxy.poll() is not None or time.monotonic() > deadline:
                raise Failure("the proxy did not start:\n%s" % tail(self.proxy_log))
            time.sleep(0.05)
        for name in ("A", "B"):
            self.wait_workers(name, WORKERS, 90)

    def status(self, name):
        """The broker's status (a dict), or None."""
        r = self.sh([self.exe("zbert"), "status", "--broker", self.ep[name], "--json",
                     "--timeout-ms", "2000"], capture_output=True, text=True)
        try:
            return json.loads(r.stdout) if r.returncode == 0 else None
        except ValueError:
            return None

    def wait_workers(self, name, n, limit):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            st = self.status(name)
            if st is not None and len(st.get("workers", [])) >= n:
                return
            time.sleep(0.2)
        raise Failure("broker %s does not list %d workers after %d s:\n%s"
                      % (name, n, limit, tail(self.brokers[name].log)))

    def diagnose(self):
        """What each broker holds, for a run that stopped moving."""
        lines = []
        for name in ("A", "B"):
            st = self.status(name) if self.brokers[name].state == "up" else None
            if st is None:
                lines.append("    broker %s: no status" % name)
                continue
            busy = ["%s %d in flight%s" % (w["name"], w["in_flight"],
                                           " (set aside)" if w.get("quarantined_ms") else "")
                    for w in st.get("workers", []) if w.get("in_flight")]
            lines.append("    broker %s: %d open requests, %d shards queued, %d in flight%s; "
                         "%d bad results, %d protocol errors"
                         % (name, st["requests"], st["queued_shards"], st["in_flight_shards"],
                            (" (" + ", ".join(busy) + ")") if busy else "",
                            st.get("bad_results", 0), st["protocol_errors"]))
        return "\n".join(lines)

    def client_broker(self):
        """The broker holding the client's requests now, or None when that is unclear."""
        busy = []
        for name in ("A", "B"):
            st = self.status(name)
            if st is not None and st.get("requests", 0) > 0:
                busy.append(name)
        return busy[0] if len(busy) == 1 else None

    # --- faults on workers ---

    def worker_fault(self):
        if self.done:
            return
        rng = self.rng["workers"]
        kinds = [k for k in WORKER_KINDS if k in self.a.faults]
        up = [w for w in self.workers if w.state == "up"]
        if len(up) >= 2:  # one worker at least keeps running
            kind, w = rng.choice(kinds), rng.choice(up)
            if kind == "worker-kill":
                pid = w.p.pid
                w.kill()
                delay = rng.uniform(0.5, 3.0)
                self.log(kind, "%s (pid %d) SIGKILL; back in %.1f s" % (w.label, pid, delay))
                self.at(delay, self.restart, w)
            elif kind == "worker-stop":
                w.send(signal.SIGSTOP)
                w.state, w.since = "stopped", time.monotonic()
                delay = rng.uniform(1.0, 6.0)
                self.log(kind, "%s (pid %d) SIGSTOP; SIGCONT in %.1f s" % (w.label, w.p.pid, delay))
                self.at(delay, self.cont, w)
            else:
                w.send(signal.SIGTERM)
                w.state, w.since = "draining", time.monotonic()
                self.log(kind, "%s (pid %d) SIGTERM" % (w.label, w.p.pid))
            self.faults[kind] += 1
        self.at(rng.uniform(*self.a.worker_gap), self.worker_fault)

    def restart(self, proc):
        if self.done:
            return
        pid = proc.start()
        self.log("restart", "%s started again (pid %d)" % (proc.label, pid))

    def cont(self, w):
        if w.state != "stopped":
            return
        w.send(signal.SIGCONT)
        w.state, w.since = "up", time.monotonic()
        self.log("continue", "%s (pid %d) SIGCONT" % (w.label, w.p.pid))

    # --- faults on brokers, the connection, fake workers ---

    def both_brokers_up(self, settle=2.0):
        now = time.monotonic()
        return all(b.state == "up" and now - b.since >= settle for b in self.brokers.values())

    def broker_fault(self, kind):
        """SIGTERM (broker-term) or SIGKILL (broker-kill) to a broker: the SIGTERM to the
        one serving the client, the SIGKILL to the other one (the client's by then: a
        broker that drained and exited comes back only after the client has had time to
        move), or to the client's when there was no SIGTERM."""
        if self.done:
            return
        if not self.both_brokers_up():
            self.at(0.5, self.broker_fault, kind)
            return
        client = self.client_broker()
        name = self.notes.get("broker-term") if kind == "broker-kill" else None
        if name is not None:
            name = "B" if name == "A" else "A"
        else:
            name = client or self.rng["broker"].choice(("A", "B"))
        whose = ("the client's" if client == name else
                 "not the client's" if client is not None else "the client's unknown")
        b = self.brokers[name]
        pid = b.p.pid
        if kind == "broker-kill":
            b.kill()
            delay = self.rng["broker"].uniform(1.0, 3.0)
            self.log(kind, "%s (pid %d, %s) SIGKILL; back in %.1f s"
                     % (b.label, pid, whose, delay))
            self.at(delay, self.restart, b)
        else:
            b.send(signal.SIGTERM)
            b.state, b.since = "draining", time.monotonic()
            self.log(kind, "%s (pid %d, %s) SIGTERM" % (b.label, pid, whose))
        self.faults[kind] += 1
        self.notes[kind] = name

    def reset(self, tries=40):
        if self.done:
            return
        self.proxy.send_signal(signal.SIGUSR1)
        self.at(0.3, self.reset_check, tries)

    def reset_check(self, tries):
        with open(self.proxy_log) as f:
            cuts = re.findall(r"^cut (\d+) connections", f.read(), re.M)
        if len(cuts) <= self.proxy_seen:
            self.at(0.2, self.reset_check, tries)  # the proxy has not answered yet
            return
        self.proxy_seen = len(cuts)
        n = int(cuts[-1])
        if n == 0:
            # the client is between connections: try again in a moment
            if tries > 1:
                self.at(0.5, self.reset, tries - 1)
            return
        self.faults["reset"] += 1
        self.notes["reset-connections"] = self.notes.get("reset-connections", 0) + n
        self.log("reset", "the proxy cut %d connection%s (RST)" % (n, "s" if n > 1 else ""))

    def start_fake(self, mode):
        if self.done:
            return
        log = self.path("fake-%s.log" % mode)
        argv = [sys.executable, os.path.join(HERE, "fakeworker.py"), "--broker", self.wep["A"],
                "--broker", self.wep["B"], "--model", self.model_id, "--dim", str(self.dim),
                "--mode", mode, "--name", "chaos-%s" % mode, "--seed", str(self.a.seed)]
        p = spawn(argv, log)
        self.fakes.append((mode, p, log))
        self.log(mode, "fake worker (pid %d) serving both brokers" % p.pid)

    def plan(self):
        """Schedules the worker faults by time and the others at points of progress."""
        f, rng = self.a.faults, self.rng["points"]
        self.points = []  # (progress fraction, label, fn, args)
        if "garbage" in f:
            self.points.append((rng.uniform(0.02, 0.1), "a garbage worker", self.start_fake,
                                ("garbage",)))
        if "hang" in f:
            self.points.append((rng.uniform(0.05, 0.2), "a hanging worker", self.start_fake,
                                ("hang",)))
        if "reset" in f:
            for _ in range(self.a.resets):
                self.points.append((rng.uniform(0.1, 0.9), "a connection reset", self.reset,
                                    ()))
        if "broker-term" in f:
            self.points.append((rng.uniform(0.2, 0.4), "SIGTERM to the client's broker",
                                self.broker_fault, ("broker-term",)))
        if "broker-kill" in f:
            self.points.append((rng.uniform(0.55, 0.75), "SIGKILL to the other broker"
                                if "broker-term" in f else "SIGKILL to the client's broker",
                                self.broker_fault, ("broker-kill",)))
        self.points.sort(key=lambda x: x[0])
        if any(k in f for k in WORKER_KINDS):
            self.at(self.rng["workers"].uniform(*self.a.worker_gap), self.worker_fault)
        for p, label, _, _ in self.points:
            self.say("plan: at %2.0f%% of the output, %s" % (100 * p, label))

    # --- the loop ---

    def check_procs(self):
        """Follows draining processes and catches those that die by themselves."""
        now = time.monotonic()
        for proc in list(self.brokers.values()) + self.workers:
            rc = proc.p.poll()
            if proc.state == "draining":
                if rc is not None:
                    if rc != 0:
                        raise Failure("%s exited with status %d after SIGTERM:\n%s"
                                      % (proc.label, rc, tail(proc.log)))
                    drained = now - proc.since
                    proc.state, proc.since = "down", now
                    if proc in self.brokers.values():
                        # long enough for the client to find the broker gone and move
                        delay = self.rng["broker"].uniform(5.0, 8.0)
                    else:
                        delay = self.rng["workers"].uniform(0.5, 3.0)
                    self.log("exit", "%s drained and exited 0 in %.1f s; back in %.1f s"
                             % (proc.label, drained, delay))
                    self.at(delay, self.restart, proc)
                elif now - proc.since > self.a.drain_limit:
                    raise Failure("%s did not exit within %d s of SIGTERM:\n%s"
                                  % (proc.label, self.a.drain_limit, tail(proc.log)))
            elif proc.state in ("up", "stopped") and rc is not None:
                raise Failure("%s exited by itself with status %d:\n%s"
                              % (proc.label, rc, tail(proc.log)))
        for mode, p, log in self.fakes:
            if p.poll() is not None:
                raise Failure("the %s fake worker exited with status %d:\n%s"
                              % (mode, p.returncode, tail(log)))
        if self.proxy.poll() is not None:
            raise Failure("the proxy exited with status %d:\n%s"
                          % (self.proxy.returncode, tail(self.proxy_log)))

    def progress(self):
        try:
            return os.path.getsize(self.out) / max(1, self.ref_size)
        except OSError:
            return 0.0

    def run_job(self):
        self.out = self.path("output.jsonl")
        self.client_log = self.path("client.log")
        argv = [self.exe("zbert"), "embed", "--broker", self.xep["A"], "--broker", self.xep["B"],
                "--progress", "never", "--log-level", "info", "-o", self.out] + EMBED_OPTIONS \
            + self.a.client_opt + [self.corpus]
        self.done = False
        self.plan()
        self.job_t0 = time.monotonic()
        self.client = spawn(argv, self.client_log)
        self.client_peak_kb = 0
        last_progress, last_move = -1.0, self.job_t0
        next_point = 0
        while True:
            now = time.monotonic()
            for b in self.brokers.values():
                b.sample()
            self.client_peak_kb = max(self.client_peak_kb, vmhwm_kb(self.client.pid))
            if self.client.poll() is not None:
                break
            self.check_procs()
            prog = self.progress()
            if prog != last_progress:
                last_progress, last_move = prog, now
            while next_point < len(self.points) and prog >= self.points[next_point][0]:
                _, _, fn, args = self.points[next_point]
                fn(*args)
                next_point += 1
            while self.events and self.events[0][0] <= now:
                _, _, fn, args = heapq.heappop(self.events)
                fn(*args)
            if now - self.job_t0 > self.a.timeout:
                raise Failure("the job did not finish within %d s (%.0f%% of the output written)"
                              "\n%s\n  client log:\n%s" % (self.a.timeout, 100 * prog,
                                                           self.diagnose(),
                                                           tail(self.client_log)))
            if now - last_move > self.a.stall:
                raise Failure("no output for %d s (%.0f%% written)\n%s\n  client log:\n%s"
                              % (self.a.stall, 100 * prog, self.diagnose(),
                                 tail(self.client_log)))
            time.sleep(0.05)
        self.done = True
        self.job_time = time.monotonic() - self.job_t0
        self.client_rc = self.client.returncode
        self.check_procs()

    # --- checks ---

    def check_output(self):
        n = self.n_texts
        seen = [0] * n
        bad = 0
        first_diff = None
        with open(self.out, "rb") as out, open(self.path("reference.jsonl"), "rb") as ref:
            k = 0
            for line in out:
                m = re.match(rb'\{"index":(\d+)[,}]', line)
                i = int(m.group(1)) if m else -1
                if 0 <= i < n:
                    seen[i] += 1
                else:
                    bad += 1
                r = ref.readline()
                if first_diff is None and line != r:
                    first_diff = k
                k += 1
            if first_diff is None and ref.readline():
                first_diff = k
        missing = sum(1 for s in seen if s == 0)
        doubled = sum(1 for s in seen if s > 1)
        self.out_lines = k
        problems = []
        if missing:
            problems.append("%d of %d texts missing (first: %d)"
                            % (missing, n, next(i for i, s in enumerate(seen) if s == 0)))
        if doubled:
            problems.append("%d texts written more than once (first: %d)"
                            % (doubled, next(i for i, s in enumerate(seen) if s > 1)))
        if bad:
            problems.append("%d lines without a valid index" % bad)
        if first_diff is not None:
            problems.append("the output differs from zbert-embed's from line %d on"
                            % (first_diff + 1))
        return problems

    def check(self):
        problems = []
        if self.client_rc != 0:
            problems.append("zbert embed exited with status %d; its log ends:\n%s"
                            % (self.client_rc, tail(self.client_log)))
        problems += self.check_output()
        self.bound = broker_vmhwm_bound(dict(
            queue_bytes_max=BROKER_QUEUE_BYTES_MAX, clients=1,
            client_bytes_max=self.client_bytes_max, workers=WORKERS + len(self.fakes),
            credit=WORKER_CREDIT, largest_result=64 * self.dim * 4 + 4096))
        if self.bound is not None and not self.sanitized():
            for name, b in self.brokers.items():
                if b.peak_kb * 1024 > self.bound:
                    problems.append("broker %s peaked at %.1f MiB, over its documented %.1f MiB"
                                    % (name, b.peak_kb / 1024, self.bound / 2**20))
        return problems

    def sanitized(self):
        """Whether the programs are built with AddressSanitizer (their memory is not the
        product's)."""
        with open(self.exe("zbert-broker"), "rb") as f:
            return b"__asan_init" in f.read()

    # --- figures ---

    def figures(self):
        self.figures_shown = True
        f, parts = self.faults, []
        for mode, _, log in self.fakes:
            with open(log) as fl:
                text = fl.read()
            f[mode] = len(re.findall(r"^%s " % mode, text, re.M))
            self.notes[mode] = len(set(re.findall(r"^ready (\S+)", text, re.M)))
        for k in KINDS:
            if k not in self.a.faults:
                continue
            s = "%s %d" % (k, f[k])
            if k in ("broker-term", "broker-kill") and k in self.notes:
                s += " (broker %s)" % self.notes[k]
            elif k == "reset" and f[k]:
                s += " (%d connections)" % self.notes.get("reset-connections", 0)
            elif k == "garbage" and f[k]:
                s += " results (from %d names)" % self.notes["garbage"]
            elif k == "hang" and f[k]:
                s += " tasks unanswered or malformed"
            elif not f[k]:
                s += " (none before the end)"
            parts.append(s)
        self.say("faults: " + (", ".join(parts) if parts else "none"))
        jt = getattr(self, "job_time", None)
        self.say("time: job %s, reference (zbert-embed, 2 threads) %.1f s, whole run %.1f s"
                 % ("%.1f s" % jt if jt is not None else "unfinished", self.ref_time,
                    time.monotonic() - self.t0))
        peaks = ", ".join("%s %.1f MiB (%d run%s)" % (n, b.peak_kb / 1024, b.lives,
                                                      "s" if b.lives > 1 else "")
                          for n, b in self.brokers.items())
        self.say("broker memory peaks (VmHWM): %s; client %.1f MiB"
                 % (peaks, self.client_peak_kb / 1024))
        if self.sanitized():
            self.say("broker memory bound: not checked (programs built with AddressSanitizer)")
        elif getattr(self, "bound", None) is None:
            self.say("broker memory bound: none documented yet (broker_vmhwm_bound): "
                     "peaks recorded, not checked")
        else:
            self.say("broker memory bound: %.1f MiB" % (self.bound / 2**20))

    def pace(self):
        """The time between two worker faults, from the speed of this machine (the
        reference run): a SIGKILL, or a SIGSTOP past the heartbeat limit, loses the shards
        of its worker, and the broker fails a request whose shard is lost three times
        (PROTOCOL.md 6).  Faults on workers at least 6 shard times apart leave a shard
        taken back time to be done again elsewhere before the next one (it goes to the
        head of the queue, and a worker holds at most its credit, 2), so that no shard is
        lost more often than the broker allows however the faults fall."""
        shards = max(1.0, self.n_texts / BROKER_SHARD_TEXTS)
        # one shard on one worker thread, three workers sharing two cores
        self.shard_s = 3.0 * self.ref_time / shards
        lo = max(1.0, 6 * self.shard_s)
        return lo, 2.5 * lo

    def go(self):
        if self.a.model is None:
            self.a.model = MODEL_SHAPE_SANITIZED if self.sanitized() else MODEL_SHAPE
        if "garbage" in self.a.faults or "hang" in self.a.faults:
            r = self.sh([sys.executable, "-c", "import zmq, msgpack"], capture_output=True)
            if r.returncode != 0:
                raise Failure("the fake worker needs pyzmq and msgpack for %s (Debian: "
                              "python3-zmq python3-msgpack, make deps installs them)"
                              % sys.executable)
        self.say("seed %d, faults %s; logs in %s" % (self.a.seed, ",".join(self.a.faults) or "none",
                                                      self.dir))
        self.make_model()
        self.corpus = self.path("corpus.txt")
        self.n_texts, n_long = make_corpus(self.corpus, self.a.texts, self.a.seed)
        self.reference()
        self.say("%d texts (%d over 512 wordpieces), model %s (dim %d), options %s; "
                 "zbert-embed took %.1f s" % (self.n_texts, n_long, self.a.model, self.dim,
                                              " ".join(EMBED_OPTIONS), self.ref_time))
        if self.a.worker_gap is None:
            self.a.worker_gap = self.pace()
        if any(k in self.a.faults for k in WORKER_KINDS):
            self.say("a shard takes about %.2f s on a worker: a worker fault every %.1f to "
                     "%.1f s" % (self.shard_s, *self.a.worker_gap) if hasattr(self, "shard_s")
                     else "a worker fault every %.1f to %.1f s" % self.a.worker_gap)
        self.client_peak_kb = 0
        self.start_cluster()
        self.say("brokers A %s and B %s (the client through a proxy), %d workers serving both"
                 % (self.ep["A"], self.ep["B"], WORKERS))
        try:
            self.run_job()
        finally:
            self.done = True
        problems = self.check()
        problems += self.shutdown()
        self.figures()
        if problems:
            raise Failure("\n".join(problems))
        self.say("output: %d texts, each once, in order, byte for byte zbert-embed's (%d bytes)"
                 % (self.out_lines, self.ref_size))

    def shutdown(self):
        """Stops the cluster as an operator would (SIGTERM: the workers, then the brokers)
        and checks that each exits 0 -- under AddressSanitizer, without a leak."""
        problems = []
        for group in (self.workers, list(self.brokers.values())):
            for proc in group:
                if proc.state == "stopped":
                    proc.send(signal.SIGCONT)
                if proc.state in ("up", "stopped"):
                    proc.send(signal.SIGTERM)
                    proc.state, proc.since = "draining", time.monotonic()
            for proc in group:
                if proc.state != "draining":
                    continue
                try:
                    rc = proc.p.wait(timeout=self.a.drain_limit)
                except subprocess.TimeoutExpired:
                    problems.append("%s did not exit within %d s of SIGTERM at the end:\n%s"
                                    % (proc.label, self.a.drain_limit, tail(proc.log)))
                    continue
                proc.state = "down"
                if rc != 0:
                    problems.append("%s exited with status %d after SIGTERM at the end:\n%s"
                                    % (proc.label, rc, tail(proc.log)))
        return problems

    def cleanup(self):
        kill_all()
        self.flog.close()
        if self.a.keep or os.environ.get("ZB_KEEP_LOGS"):
            self.say("logs kept in %s" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def fault_list(text):
    if text in ("all", ""):
        return list(KINDS) if text == "all" else []
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    for k in kinds:
        if k not in KINDS:
            raise argparse.ArgumentTypeError("unknown fault kind %r (kinds: %s)"
                                             % (k, ", ".join(KINDS)))
    return kinds


def gap(text):
    try:
        lo, hi = (float(x) for x in text.split(","))
        assert 0 < lo <= hi
        return lo, hi
    except (ValueError, AssertionError):
        raise argparse.ArgumentTypeError("a gap is MIN,MAX seconds, not %r" % text)


def main():
    ap = argparse.ArgumentParser(
        description="A corpus-scale zbert embed job through two brokers and three workers "
        "under seeded faults; its output must equal zbert-embed's.",
        epilog="fault kinds: " + ", ".join(KINDS))
    ap.add_argument("--long", action="store_true",
                    help="the long form: 10,000 texts, every fault kind, 3 resets")
    ap.add_argument("--texts", type=int, help="texts in the corpus (default 4000; long 10000)")
    ap.add_argument("--faults", type=fault_list,
                    help="comma-separated kinds, all, or '' (default %s; long: all)"
                    % ",".join(SHORT_FAULTS))
    ap.add_argument("--seed", type=int, default=int(os.environ.get("ZB_CHAOS_SEED", "1")),
                    help="seeds the corpus and the fault script (default $ZB_CHAOS_SEED or 1)")
    ap.add_argument("--resets", type=int, help="connection cuts (default 1; long 3)")
    ap.add_argument("--worker-gap", type=gap,
                    help="seconds between worker faults, MIN,MAX (default: from the speed of "
                    "the reference run, see pace())")
    ap.add_argument("--timeout", type=int,
                    help="seconds the job may take (default 300; long 480)")
    ap.add_argument("--stall", type=int, default=150,
                    help="seconds without new output before the run fails (default 150)")
    ap.add_argument("--drain-limit", type=int, default=60,
                    help="seconds a SIGTERM'd broker or worker may take to exit (default 60)")
    ap.add_argument("--model",
                    help="tiny (tests/fixtures/tiny-seed1) or LAYERS,HIDDEN,HEADS,INTERMEDIATE "
                    "of a random model (default %s; %s with AddressSanitizer)"
                    % (MODEL_SHAPE, MODEL_SHAPE_SANITIZED))
    ap.add_argument("--client-opt", type=shlex.split, default=[],
                    help="more options for zbert embed, e.g. --client-opt='--inflight 4'")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--quiet", action="store_true", help="do not print each fault")
    a = ap.parse_args()
    if a.texts is None:
        a.texts = 10000 if a.long else 4000
    if a.faults is None:
        a.faults = list(LONG_FAULTS if a.long else SHORT_FAULTS)
    if a.resets is None:
        a.resets = 3 if a.long else 1
    if a.timeout is None:
        a.timeout = 480 if a.long else 300
    if a.texts < 1:
        ap.error("--texts must be at least 1")

    def on_signal(sig, _frm):
        raise SystemExit(128 + sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    run = Chaos(a)
    rc = 1
    try:
        run.go()
        run.say("PASS")
        rc = 0
    except SystemExit as e:
        run.say("interrupted (%s): stopping every process started here" % e.code)
        raise
    except Failure as e:
        run.say("FAIL: %s" % e)
        if getattr(run, "brokers", None) and not getattr(run, "figures_shown", False):
            try:
                run.figures()
            except Exception:
                pass
    finally:
        run.cleanup()
    return rc


if __name__ == "__main__":
    sys.exit(main())
