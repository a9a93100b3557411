# zbert -- one GNU Makefile for every component.
#
#   make            build every program into ./bin/
#   make test       build and run the test suite (cmocka unit + integration)
#   make check      the same suite under ASan + UBSan (objects in build/asan)
#   make demo       embed "I love NLP" with a small random model
#   make fuzz       build libFuzzer targets (clang) into build/fuzz
#   make bench      throughput on a real corpus (never part of the tests)
#   make deps       install the Debian packages the build needs (apt-get)
#   make format     clang-format every source file

CC      ?= cc
BUILD   ?= build
BIN     ?= bin
OPT     ?= -O2
SANITIZE ?=

BLAS_DIR := /usr/lib/x86_64-linux-gnu/openblas-openmp
BLAS_INC := /usr/include/x86_64-linux-gnu/openblas-openmp

WARN    := -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Werror
# Project headers are found with -iquote ("limits.h"), so that proto/limits.h
# never shadows the system <limits.h> (msgpack.h and PATH_MAX need it).
CFLAGS  := -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE $(OPT) -g -fPIC $(WARN) \
           -fopenmp -iquote proto -iquote worker -iquote broker -iquote client -I$(BLAS_INC) $(EXTRA_CFLAGS)
LDFLAGS := -fopenmp -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR) $(EXTRA_LDFLAGS)
ENGINE_LIBS := -lopenblas -lzip -lutf8proc -lsodium
# The protocol library encodes with msgpack-c's packer (a kept library
# rather than a writer of our own) and decodes with its own bounded reader
# (proto/mp.c: msgpack-c's unpacker allocates from declared counts, unsafe
# on untrusted bytes), so everything linking it links msgpack-c (the
# packer is inline in <msgpack.h> today; the flag keeps the dependency
# declared should a release move it into the library).
PROTO_LIBS := -lmsgpackc
ifneq ($(SANITIZE),)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

# --- sources -----------------------------------------------------------
# Each component folder gives a static library of its modules (every .c
# but cmd_*.c) and programs from its cmd_<name>.c files:
#   proto/   libzbert-proto.a   wire codec, error space, text formats
#   worker/  libzbert-engine.a  model, tokenizer, forward pass (no ZeroMQ)
#   broker/  libzbert-broker.a  broker modules
#   client/  libzbert.a, libzbert.so  the client library
PROTO_SRC  := $(filter-out proto/cmd_%.c,$(wildcard proto/*.c))
ENGINE_SRC := $(filter-out worker/cmd_%.c,$(wildcard worker/*.c))
BROKER_SRC := $(filter-out broker/cmd_%.c,$(wildcard broker/*.c))
CLIENT_SRC := $(filter-out client/cmd_%.c,$(wildcard client/*.c))
PROTO_LIB  := $(BUILD)/libzbert-proto.a
ENGINE_LIB := $(BUILD)/libzbert-engine.a
BROKER_LIB := $(BUILD)/libzbert-broker.a
CLIENT_LIB := $(BUILD)/libzbert.a
CLIENT_SO  := $(BUILD)/libzbert.so
ZMQ_LIBS   := -lzmq
BASE_LIBS  := -lcjson -lm

# worker/cmd_X.c -> zbert-X, broker/cmd_broker.c -> zbert-broker,
# client/cmd_zbert.c -> zbert
PROGRAMS := $(patsubst worker/cmd_%.c,$(BIN)/zbert-%,$(wildcard worker/cmd_*.c)) \
            $(patsubst broker/cmd_%.c,$(BIN)/zbert-%,$(wildcard broker/cmd_broker.c)) \
            $(patsubst client/cmd_%.c,$(BIN)/%,$(wildcard client/cmd_zbert.c))
TEST_SRC := $(wildcard tests/test_*.c)
.SECONDARY:
TESTS    := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

.PHONY: all test check demo fuzz bench deps format clean unit integration
all: $(PROGRAMS) $(if $(CLIENT_SRC),$(CLIENT_SO))

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

# archive NAME: objects of the sources listed in $(NAME_SRC)
$(PROTO_LIB): $(PROTO_SRC:%.c=$(BUILD)/%.o)
	rm -f $@ && ar rcs $@ $^
$(ENGINE_LIB): $(ENGINE_SRC:%.c=$(BUILD)/%.o)
	rm -f $@ && ar rcs $@ $^
$(BROKER_LIB): $(BROKER_SRC:%.c=$(BUILD)/%.o)
	rm -f $@ && ar rcs $@ $^
$(CLIENT_LIB): $(CLIENT_SRC:%.c=$(BUILD)/%.o)
	rm -f $@ && ar rcs $@ $^
$(CLIENT_SO): $(CLIENT_SRC:%.c=$(BUILD)/%.o) $(PROTO_SRC:%.c=$(BUILD)/%.o)
	$(CC) -shared $(LDFLAGS) $^ $(ZMQ_LIBS) $(PROTO_LIBS) $(BASE_LIBS) -o $@

$(BIN)/zbert-embed $(BIN)/zbert-model: $(BIN)/zbert-%: $(BUILD)/worker/cmd_%.o $(ENGINE_LIB) $(PROTO_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(ENGINE_LIBS) $(PROTO_LIBS) $(BASE_LIBS) -o $@
$(BIN)/zbert-worker: $(BUILD)/worker/cmd_worker.o $(ENGINE_LIB) $(PROTO_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(ENGINE_LIBS) $(ZMQ_LIBS) $(PROTO_LIBS) $(BASE_LIBS) -lpthread -o $@
$(BIN)/zbert-broker: $(BUILD)/broker/cmd_broker.o $(BROKER_LIB) $(PROTO_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(ZMQ_LIBS) $(PROTO_LIBS) $(BASE_LIBS) -o $@
$(BIN)/zbert: $(BUILD)/client/cmd_zbert.o $(CLIENT_LIB) $(PROTO_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(ZMQ_LIBS) $(PROTO_LIBS) $(BASE_LIBS) -o $@

# Tests link every library, so any module can be tested, and the helpers
# tests/fixture.c (fixture files) and tests/proc.c (child processes).
TEST_LIBS := $(BROKER_LIB) $(CLIENT_LIB) $(ENGINE_LIB) $(PROTO_LIB)
$(BUILD)/tests/%: $(BUILD)/tests/%.o $(BUILD)/tests/fixture.o $(BUILD)/tests/proc.o $(TEST_LIBS)
	$(CC) $(LDFLAGS) $^ $(ENGINE_LIBS) $(ZMQ_LIBS) $(PROTO_LIBS) $(BASE_LIBS) -lpthread -lcmocka -o $@

# --- tests -------------------------------------------------------------
# Each test binary runs in its own process with a timeout, from the repo
# root; ZB_BIN tells integration tests where the programs are.
test: deps-quiet
	$(MAKE) --no-print-directory unit
unit: $(PROGRAMS) $(TESTS)
	@ZB_BIN=$(BIN) BUILD=$(BUILD) sh tests/run.sh $(TESTS)

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
	    $(ENGINE_LIBS) $(ZMQ_LIBS) $(PROTO_LIBS) $(BASE_LIBS) -o $(BUILD)/bench/zbert_latency
	sh bench/run.sh $(BIN) $(BUILD)/bench
bench-deps: deps-quiet
	sh deploy/install-deps.sh fortunes time python3-torch python3-numpy
	command -v node > /dev/null || sh deploy/install-deps.sh nodejs
	command -v npm > /dev/null || sh deploy/install-deps.sh npm
	cd bench/node && npm ci --ignore-scripts --no-audit --no-fund

FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
fuzz:
	$(MAKE) --no-print-directory BUILD=build/fuzz BIN=build/fuzz/bin CC=clang \
	    SANITIZE=1 OPT=-O1 EXTRA_CFLAGS=-fsanitize=fuzzer-no-link build/fuzz/libzbert-engine.a build/fuzz/libzbert-proto.a
	@mkdir -p build/fuzz/bin
	for f in $(FUZZ_SRC); do \
	    n=$$(basename $$f .c); \
	    clang $(CFLAGS) -fopenmp -fsanitize=fuzzer,address,undefined $$f \
	        build/fuzz/libzbert-engine.a build/fuzz/libzbert-proto.a $(LDFLAGS) $(ENGINE_LIBS) $(PROTO_LIBS) $(BASE_LIBS) -o build/fuzz/bin/$$n || exit 1; \
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

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build bin

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
