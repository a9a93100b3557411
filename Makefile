# zbert -- one GNU Makefile for every component.
#
#   make            build every program into ./bin/
#   make test       build and run the test suite (cmocka unit + integration)
#   make check      the same suite under ASan + UBSan (objects in build/asan)
#   make test-chaos the long chaos test: a 10,000-text job under faults
#   make demo       embed "I love NLP" with a small random model
#   make fuzz       build libFuzzer targets (clang) into build/fuzz
#   make bench      throughput on a real corpus (never part of the tests)
#   make deps       install the Debian packages the build needs (apt-get)
#   make format     clang-format every source file (format-check: only check)

CC      ?= cc
BUILD   ?= build
BIN     ?= bin
OPT     ?= -O2
SANITIZE ?=

BLAS_DIR := /usr/lib/x86_64-linux-gnu/openblas-openmp
BLAS_INC := /usr/include/x86_64-linux-gnu/openblas-openmp

WARN    := -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Werror
BASE_CFLAGS := -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE $(OPT) -g -fPIC $(WARN) \
           -fopenmp -I$(BLAS_INC) $(EXTRA_CFLAGS)
LDFLAGS := -fopenmp -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR) $(EXTRA_LDFLAGS)
ifneq ($(SANITIZE),)
BASE_CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

# --- layers --------------------------------------------------------------
# One folder, one library; a folder sees only the headers of the folders
# below it (project headers are found with -iquote, so proto/limits.h never
# shadows the system <limits.h>):
#
#   proto/       libzbert-proto.a   the wire codec, and the base every process
#                                   shares (errors, limits, log, settings, options)
#   engine/      libzbert-engine.a  model, tokenizer, forward pass (no ZeroMQ,
#                                   no wire codec)                     sees proto
#   worker/      libzbert-worker.a  the worker agent and its task runner
#                                                              sees engine, proto
#   broker/      libzbert-broker.a  the broker                          sees proto
#   client/      libzbert.{a,so}    the C client library                sees proto
#   client/cli/  libzbert-cli.a     the command-line option parser and text
#                                   formats, linked only by programs    sees proto
#
# Programs are each folder's cmd_<name>.c; they sit above every library and
# see them all.  tests/layers.sh checks what the compiler cannot: that the
# engine includes no wire header and references no zmq_* symbol, and that
# no module includes a header of a folder above it.
LAYER_proto  := proto
LAYER_engine := engine proto
LAYER_worker := worker engine proto
LAYER_broker := broker proto
LAYER_client := client proto
LAYER_cli    := client/cli proto
ALL_DIRS     := client/cli worker engine broker client proto
iquote = $(addprefix -iquote ,$(1))
CFLAGS := $(BASE_CFLAGS) $(call iquote,$(ALL_DIRS))

# Sources of a library: its folder's .c files but cmd_*.c.
lib_src = $(filter-out $(1)/cmd_%.c,$(wildcard $(1)/*.c))
PROTO_SRC  := $(call lib_src,proto)
ENGINE_SRC := $(call lib_src,engine)
WORKER_SRC := $(call lib_src,worker)
BROKER_SRC := $(call lib_src,broker)
CLIENT_SRC := $(call lib_src,client)
CLI_SRC    := $(call lib_src,client/cli)

PROTO_LIB  := $(BUILD)/libzbert-proto.a
ENGINE_LIB := $(BUILD)/libzbert-engine.a
WORKER_LIB := $(BUILD)/libzbert-worker.a
BROKER_LIB := $(BUILD)/libzbert-broker.a
CLIENT_LIB := $(BUILD)/libzbert.a
CLIENT_SO  := $(BUILD)/libzbert.so
CLI_LIB    := $(BUILD)/libzbert-cli.a

# The protocol library encodes with msgpack-c's packer (a kept library
# rather than a writer of our own) and decodes with its own bounded reader
# (proto/mp.c: msgpack-c's unpacker allocates from declared counts, unsafe
# on untrusted bytes), so everything linking it links msgpack-c (the
# packer is inline in <msgpack.h> today; the flag keeps the dependency
# declared should a release move it into the library).
PROTO_LIBS  := -lmsgpackc -lm
ENGINE_LIBS := -lopenblas -lzip -lutf8proc -lsodium -lcjson -lm
CLI_LIBS    := -lcjson
ZMQ_LIBS    := -lzmq

# A module is compiled with the include path of its folder's layer;
# programs (cmd_*.c) and tests see every folder.
$(BUILD)/proto/%.o:      CFLAGS = $(BASE_CFLAGS) $(call iquote,$(LAYER_proto))
$(BUILD)/engine/%.o:     CFLAGS = $(BASE_CFLAGS) $(call iquote,$(LAYER_engine))
$(BUILD)/worker/%.o:     CFLAGS = $(BASE_CFLAGS) $(call iquote,$(LAYER_worker))
$(BUILD)/broker/%.o:     CFLAGS = $(BASE_CFLAGS) $(call iquote,$(LAYER_broker))
$(BUILD)/client/%.o:     CFLAGS = $(BASE_CFLAGS) $(call iquote,$(LAYER_client))
$(BUILD)/client/cli/%.o: CFLAGS = $(BASE_CFLAGS) $(call iquote,$(LAYER_cli))
$(foreach d,engine worker broker client,\
  $(eval $(BUILD)/$(d)/cmd_%.o: CFLAGS = $(BASE_CFLAGS) $(call iquote,$(ALL_DIRS))))

PROGRAMS := $(BIN)/zbert-embed $(BIN)/zbert-model $(BIN)/zbert-worker $(BIN)/zbert-broker \
            $(BIN)/zbert
TEST_SRC := $(wildcard tests/test_*.c)
.SECONDARY:
TESTS    := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

.PHONY: all test check demo fuzz bench deps format format-check clean unit integration layers \
        test-chaos
all: $(PROGRAMS) $(CLIENT_SO)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(PROTO_LIB):  $(PROTO_SRC:%.c=$(BUILD)/%.o)
$(ENGINE_LIB): $(ENGINE_SRC:%.c=$(BUILD)/%.o)
$(WORKER_LIB): $(WORKER_SRC:%.c=$(BUILD)/%.o)
$(BROKER_LIB): $(BROKER_SRC:%.c=$(BUILD)/%.o)
$(CLIENT_LIB): $(CLIENT_SRC:%.c=$(BUILD)/%.o)
$(CLI_LIB):    $(CLI_SRC:%.c=$(BUILD)/%.o)
$(BUILD)/%.a:
	rm -f $@ && ar rcs $@ $^

# The shared client library exports the public API (client/zbert.h) and
# nothing else: the version script makes every other symbol local, and
# --as-needed drops a library no object of it uses.
$(CLIENT_SO): $(CLIENT_SRC:%.c=$(BUILD)/%.o) $(PROTO_LIB) client/libzbert.map
	$(CC) -shared -Wl,--version-script=client/libzbert.map -Wl,--as-needed $(LDFLAGS) \
	    $(CLIENT_SRC:%.c=$(BUILD)/%.o) $(PROTO_LIB) $(ZMQ_LIBS) $(PROTO_LIBS) -o $@

$(BIN)/zbert-embed: $(BUILD)/engine/cmd_embed.o $(ENGINE_LIB) $(CLI_LIB) $(PROTO_LIB)
$(BIN)/zbert-model: $(BUILD)/engine/cmd_model.o $(ENGINE_LIB) $(PROTO_LIB)
$(BIN)/zbert-worker: $(BUILD)/worker/cmd_worker.o $(WORKER_LIB) $(ENGINE_LIB) $(PROTO_LIB)
$(BIN)/zbert-broker: $(BUILD)/broker/cmd_broker.o $(BROKER_LIB) $(PROTO_LIB)
$(BIN)/zbert: $(BUILD)/client/cmd_zbert.o $(CLIENT_LIB) $(CLI_LIB) $(PROTO_LIB)
$(PROGRAMS):
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(ENGINE_LIBS) $(CLI_LIBS) $(ZMQ_LIBS) $(PROTO_LIBS) -lpthread -o $@

# Tests link every library, so any module can be tested, and the helpers
# tests/fixture.c (fixture files), tests/proc.c (child processes) and
# tests/fakebroker.c (a fake broker for the worker's tests).
TEST_LIBS := $(WORKER_LIB) $(BROKER_LIB) $(CLIENT_LIB) $(CLI_LIB) $(ENGINE_LIB) $(PROTO_LIB)
$(BUILD)/tests/%.o: CFLAGS = $(BASE_CFLAGS) $(call iquote,$(ALL_DIRS))
$(BUILD)/tests/%: $(BUILD)/tests/%.o $(BUILD)/tests/fixture.o $(BUILD)/tests/proc.o \
                  $(BUILD)/tests/fakebroker.o $(TEST_LIBS)
	$(CC) $(LDFLAGS) $^ $(ENGINE_LIBS) $(CLI_LIBS) $(ZMQ_LIBS) $(PROTO_LIBS) -lpthread -lcmocka -o $@

# --- tests -------------------------------------------------------------
# Each test binary runs in its own process with a timeout, from the repo
# root; ZB_BIN tells integration tests where the programs are.
test: deps-quiet
	$(MAKE) --no-print-directory unit
unit: $(PROGRAMS) $(CLIENT_SO) $(TESTS)
	@ZB_BIN=$(BIN) BUILD=$(BUILD) sh tests/run.sh $(TESTS) tests/layers.py tests/chaos/chaos.py

# The chaos test (tests/chaos/chaos.py): a zbert embed job through two brokers and three
# workers under seeded faults, its output compared with zbert-embed's.  make test runs its
# short form; this is the long one (10,000 texts, every fault kind, within 10 minutes).
# CHAOS passes options, e.g. make test-chaos CHAOS='--faults worker-kill,reset --seed 7'.
CHAOS ?=
test-chaos: deps-quiet
	$(MAKE) --no-print-directory $(PROGRAMS)
	ZB_BIN=$(BIN) tests/chaos/chaos.py --long $(CHAOS)

check: deps-quiet
	$(MAKE) --no-print-directory BUILD=build/asan BIN=build/asan/bin SANITIZE=1 OPT=-O1 unit

# --- demo, bench, fuzz ---------------------------------------------------
DEMO_MODEL := models/demo-tiny
demo: deps-quiet
	$(MAKE) --no-print-directory all
	sh deploy/demo.sh $(BIN) $(DEMO_MODEL)

bench: deps-quiet
	@sh deploy/install-deps.sh fortunes time
	$(MAKE) --no-print-directory all $(ENGINE_LIB) $(PROTO_LIB) $(CLIENT_LIB)
	@mkdir -p $(BUILD)/bench
	$(CC) $(CFLAGS) bench/sgemm_probe.c $(LDFLAGS) -lopenblas -o $(BUILD)/bench/sgemm_probe
	$(CC) $(CFLAGS) bench/latency.c $(ENGINE_LIB) $(CLIENT_LIB) $(PROTO_LIB) $(LDFLAGS) \
	    $(ENGINE_LIBS) $(ZMQ_LIBS) $(PROTO_LIBS) -o $(BUILD)/bench/zbert_latency
	sh bench/run.sh $(BIN) $(BUILD)/bench
bench-deps: deps-quiet
	sh deploy/install-deps.sh fortunes time python3-torch python3-numpy
	command -v node > /dev/null || sh deploy/install-deps.sh nodejs
	command -v npm > /dev/null || sh deploy/install-deps.sh npm
	cd bench/node && npm ci --ignore-scripts --no-audit --no-fund

# proto/curve uses libzmq's Z85 and key derivation: the targets link libzmq.
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
fuzz:
	$(MAKE) --no-print-directory BUILD=build/fuzz BIN=build/fuzz/bin CC=clang \
	    SANITIZE=1 OPT=-O1 EXTRA_CFLAGS=-fsanitize=fuzzer-no-link build/fuzz/libzbert-broker.a \
	    build/fuzz/libzbert-engine.a build/fuzz/libzbert-proto.a
	@mkdir -p build/fuzz/bin
	for f in $(FUZZ_SRC); do \
	    n=$$(basename $$f .c); \
	    clang $(CFLAGS) -fopenmp -fsanitize=fuzzer,address,undefined $$f \
	        build/fuzz/libzbert-broker.a build/fuzz/libzbert-engine.a build/fuzz/libzbert-proto.a \
	        $(LDFLAGS) $(ENGINE_LIBS) $(ZMQ_LIBS) $(PROTO_LIBS) -o build/fuzz/bin/$$n || exit 1; \
	done
	@echo "fuzz targets in build/fuzz/bin (run e.g. build/fuzz/bin/fuzz_safetensors -max_total_time=60)"

# --- dependencies ------------------------------------------------------
DEB_PACKAGES := build-essential pkg-config libopenblas-openmp-dev libzip-dev libutf8proc-dev \
                libcjson-dev libsodium-dev libzmq3-dev libmsgpack-dev libcmocka-dev \
                python3-zmq python3-msgpack python3-numpy
deps:
	sh deploy/install-deps.sh $(DEB_PACKAGES)
deps-quiet:
	@sh deploy/install-deps.sh $(DEB_PACKAGES)

# The whole tree follows .clang-format; CI runs format-check.
format:
	@sh deploy/install-deps.sh clang-format
	clang-format -i $$(git ls-files '*.c' '*.h')
format-check:
	@sh deploy/install-deps.sh clang-format
	@clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h') && echo "format-check: clean"


clean:
	rm -rf build bin

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
