#!/usr/bin/env python3
"""layers.py -- the tree is the architecture: check that it holds.

Checks, from the sources and the built libraries (BUILD, default build/):
  - no file includes a header by a relative path ("../x.h");
  - each library module includes only headers of its own folder and of the
    folders below it (the layers of the Makefile, restated here on purpose:
    a change to one must be a change to the other);
  - no cycle between modules (a module is a .c/.h pair; A -> B when A's .c or
    .h includes B.h);
  - the engine includes no wire-codec header (msg.h, mp.h) nor ZeroMQ or
    msgpack, directly or through another header (the compiler's .d files),
    and its library references no zmq_* symbol;
  - build/libzbert.so exports only zbert_* symbols.
Prints one line per violation, then a count; exits 1 on any violation.
"""
import os
import re
import subprocess
import sys

# folder -> folders whose headers it may include (itself first).  Programs
# (cmd_*.c) and tests sit above every library and may include anything.
LAYERS = {
    "proto": ["proto"],
    "engine": ["engine", "proto"],
    "worker": ["worker", "engine", "proto"],
    "broker": ["broker", "proto"],
    "client": ["client", "proto"],
    "client/cli": ["client/cli", "proto"],
}
WIRE_HEADERS = {"msg.h", "mp.h"}
FOREIGN_WIRE = {"zmq.h", "msgpack.h"}
INCLUDE = re.compile(r'^\s*#\s*include\s+([<"])([^">]+)[">]', re.M)

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
build = os.path.join(root, os.environ.get("BUILD", "build"))
failures = []
checks = 0


def fail(msg):
    failures.append(msg)
    print("FAIL " + msg)


def sources(folder):
    d = os.path.join(root, folder)
    return sorted(f for f in os.listdir(d) if f.endswith((".c", ".h")))


def includes(path):
    with open(path, encoding="utf-8") as fh:
        return INCLUDE.findall(fh.read())


# 1-2: relative includes and layers
owner = {}  # header name -> folder
for folder in LAYERS:
    for f in sources(folder):
        if f.endswith(".h"):
            if f in owner:
                fail(f"header {f} exists in {owner[f]} and {folder}")
            owner[f] = folder

graph = {}
for folder, allowed in LAYERS.items():
    for f in sources(folder):
        rel = f"{folder}/{f}"
        checks += 1
        module = f"{folder}/{f.rsplit('.', 1)[0]}"
        is_program = f.startswith("cmd_")
        for kind, name in includes(os.path.join(root, rel)):
            if "../" in name:
                fail(f"{rel}: includes {name} by a relative path")
            if kind != '"':
                if folder == "engine" and name in FOREIGN_WIRE:
                    fail(f"{rel}: the engine includes <{name}>")
                continue
            where = owner.get(name)
            if where is None:
                fail(f"{rel}: includes {name}, no library header of that name")
                continue
            if not is_program and where not in allowed:
                fail(f"{rel}: includes {where}/{name}, outside its layers {allowed}")
            if folder == "engine" and not is_program and name in WIRE_HEADERS:
                fail(f"{rel}: the engine includes the wire header {name}")
            target = f"{where}/{name[:-2]}"
            if not is_program and target != module:
                graph.setdefault(module, set()).add(target)

# 3: cycles between modules
checks += 1
state = {}


def visit(m, stack):
    state[m] = 1
    stack.append(m)
    for n in sorted(graph.get(m, ())):
        if state.get(n) == 1:
            fail("module cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
        elif n not in state:
            visit(n, stack)
    stack.pop()
    state[m] = 2


for m in sorted(graph):
    if m not in state:
        visit(m, [])

# 4: the engine's objects, as compiled (headers reached through others too)
engine_build = os.path.join(build, "engine")
if os.path.isdir(engine_build):
    for d in sorted(os.listdir(engine_build)):
        if not d.endswith(".d") or d.startswith("cmd_"):
            continue
        checks += 1
        with open(os.path.join(engine_build, d), encoding="utf-8") as fh:
            deps = fh.read().replace("\\\n", " ").split()
        for dep in deps:
            base = os.path.basename(dep.rstrip(":"))
            if base in WIRE_HEADERS | FOREIGN_WIRE and not dep.startswith("build"):
                if base in FOREIGN_WIRE or dep.startswith("proto/"):
                    fail(f"build/engine/{d}: compiled with {dep}")
else:
    fail(f"{engine_build}: not built")


def symbols(args):
    out = subprocess.run(["nm"] + args, capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"nm {' '.join(args)}: {out.stderr.strip()}")
        return []
    return [line.split()[-1] for line in out.stdout.splitlines()
            if len(line.split()) >= 2 and not line.endswith(":")]


engine_lib = os.path.join(build, "libzbert-engine.a")
checks += 1
if os.path.exists(engine_lib):
    for s in symbols(["-u", engine_lib]):
        if s.startswith("zmq_") or s.startswith("msgpack_"):
            fail(f"libzbert-engine.a references {s}")
else:
    fail(f"{engine_lib}: not built")

# 5: the public library's surface
so = os.path.join(build, "libzbert.so")
checks += 1
if os.path.exists(so):
    exported = symbols(["-D", "--defined-only", so])
    if not exported:
        fail("libzbert.so exports nothing")
    for s in exported:
        if not s.startswith("zbert_"):
            fail(f"libzbert.so exports {s}")
    needed = subprocess.run(["objdump", "-p", so], capture_output=True, text=True).stdout
    for lib in re.findall(r"NEEDED\s+(\S+)", needed):
        # the sanitizer runtimes come with a `make check` build
        if not re.match(r"lib(zmq|c|m|asan|ubsan)\.so", lib):
            fail(f"libzbert.so needs {lib}")
else:
    fail(f"{so}: not built")

print(f"layers: {checks} files and libraries checked, {len(failures)} violations")
sys.exit(1 if failures else 0)
