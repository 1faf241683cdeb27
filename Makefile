# sala top-level Makefile.
#   make            CPU build (always) + CUDA backend when nvcc is found (CUDA=0 forces CPU only)
#   make demo       setup if needed, build, run the main job on samples/
#   make test       setup if needed, build, run every CPU test (no GPU, no real weights)
#   make check      the test suite under ASan+UBSan (separate build dir)
#   make test-cuda  CUDA parity tests (needs a GPU)
#   make bench      benchmarks
# Sources are found by wildcard: a new .c file in a module folder is built with no Makefile edit.

BUILD   ?= build
CC      ?= cc
NVCC    ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CUDA    ?= $(if $(NVCC),1,0)
SAN     ?= 0
OPT     ?= -O2

PKGS    := sqlite3 libxml-2.0 poppler-glib libpcre2-8 ncursesw libcjson libutf8proc openblas \
           libxxhash glib-2.0 cairo
SETUP_STAMP := $(BUILD)/.setup-done

# pkg-config include dirs become -isystem so third-party headers do not trip -Wpedantic.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null | sed 's/-I/-isystem /g')
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN    := -Wall -Wextra -Wpedantic -Wno-unused-parameter -Wshadow -Wno-overlength-strings
CFLAGS  += -std=c11 $(OPT) -g $(WARN) -D_GNU_SOURCE -fopenmp -MMD -MP -I. -Icommon -I$(BUILD)/gen
LDLIBS  += -lm -ldl -lpthread -fopenmp
ifeq ($(SAN),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif
ifeq ($(SAN),thread)
CFLAGS  += -fsanitize=thread -fno-omit-frame-pointer
LDFLAGS += -fsanitize=thread
endif

LIB_SRC  := $(wildcard common/*.c engine/*.c engine/cpu/*.c ingest/*.c ui/*.c ctx/*.c)
APP_SRC  := $(wildcard app/*.c)
TEST_SRC := $(wildcard tests/*.c)
FUZZ_SRC := $(wildcard tests/fuzz/*.c)
CU_SRC   := $(wildcard engine/cuda/*.cu)

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
APP_OBJ  := $(APP_SRC:%.c=$(BUILD)/obj/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/obj/%.o) $(FUZZ_SRC:%.c=$(BUILD)/obj/%.o)

SALA      := $(BUILD)/sala
SALA_TEST := $(BUILD)/sala-test
LIBSALA   := $(BUILD)/libsala.a
CUDA_SO   := $(BUILD)/libsala_cuda.so

ALL := $(SALA) $(SALA_TEST)
ifeq ($(CUDA),1)
ifneq ($(CU_SRC),)
ALL += $(CUDA_SO)
endif
endif

.PHONY: all setup demo test check test-cuda bench clean print-cuda fuzz fuzz-build fuzz-merge fuzz-seeds
all: print-cuda $(ALL)

print-cuda:
ifeq ($(CUDA),1)
	@echo "make: CUDA backend: building with $(NVCC)"
else
	@echo "make: CUDA backend: off (no nvcc found, or CUDA=0): CPU only"
endif

$(SETUP_STAMP): scripts/setup
	@mkdir -p $(BUILD)
	./scripts/setup
	@touch $@
setup: $(SETUP_STAMP)

# Generated tables: every `SALA_COMMAND(name, "summary")` in app/*.c and every
# `SALA_SUITE(name)` in tests/*.c, so that adding a command or suite touches only its own file.
$(BUILD)/gen/commands.inc: $(APP_SRC)
	@mkdir -p $(dir $@)
	@grep -h '^SALA_COMMAND(' $(APP_SRC) | sed 's/^SALA_COMMAND(/X(/; s/;[[:space:]]*$$//' | sort > $@.tmp && mv $@.tmp $@
$(BUILD)/gen/suites.inc: $(TEST_SRC)
	@mkdir -p $(dir $@)
	@grep -h '^SALA_SUITE(' $(TEST_SRC) | sed 's/^SALA_SUITE(/X(/; s/;[[:space:]]*$$//' | sort > $@.tmp && mv $@.tmp $@

# Schema migrations schema/NNNN_*.sql, embedded as {name, bytes} pairs in file-name order so
# that the binary works from any directory (ingest/db.c includes the table).
SCHEMA_SQL := $(sort $(wildcard schema/*.sql))
$(BUILD)/gen/schema.inc: $(SCHEMA_SQL) Makefile
	@mkdir -p $(dir $@)
	@for f in $(SCHEMA_SQL); do printf '{"%s", (const unsigned char[]){\n' "$$(basename $$f)"; \
	    xxd -i < $$f; printf ', 0x00}},\n'; done > $@.tmp && mv $@.tmp $@

# The model configurations of samples/models/*.json, embedded as {name, text} pairs for
# `sala bench gpu --random-weights NAME` (app/bench_gpu.c includes the table).
MODEL_JSON := $(sort $(wildcard samples/models/*.json))
$(BUILD)/gen/models.inc: $(MODEL_JSON) Makefile
	@mkdir -p $(dir $@)
	@for f in $(MODEL_JSON); do printf '{"%s", (const char[]){\n' "$$(basename $$f .json)"; \
	    xxd -i < $$f; printf ', 0x00}},\n'; done > $@.tmp && mv $@.tmp $@

$(BUILD)/obj/app/main.o: $(BUILD)/gen/commands.inc
$(BUILD)/obj/app/bench_gpu.o: $(BUILD)/gen/models.inc
$(BUILD)/obj/ingest/db.o: $(BUILD)/gen/schema.inc
$(BUILD)/obj/tests/main.o: $(BUILD)/gen/suites.inc

$(BUILD)/obj/%.o: %.c | $(SETUP_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -c $< -o $@

$(LIBSALA): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(SALA): $(APP_OBJ) $(LIBSALA)
	$(CC) $(LDFLAGS) -rdynamic -o $@ $(APP_OBJ) $(LIBSALA) $(PKG_LIBS) $(LDLIBS)

# The test binary only: fault-injection seams (tests/fault.c) wrap our own objects' calls to
# the allocator and to write/fsync/rename; libraries' internal calls are not redirected.
FAULT_WRAP := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup,--wrap=strndup \
              -Wl,--wrap=write,--wrap=pwrite,--wrap=fsync,--wrap=fdatasync,--wrap=rename
$(SALA_TEST): $(TEST_OBJ) $(LIBSALA)
	$(CC) $(LDFLAGS) -rdynamic $(FAULT_WRAP) -o $@ $(TEST_OBJ) $(LIBSALA) $(PKG_LIBS) -lcunit $(LDLIBS)

# The fuzz targets built into the test binary become fuzz_<name>_one (tests/fuzz/fuzz.h), which
# tests/test_fuzz_replay.c feeds the committed corpora and every past crasher.
$(BUILD)/obj/tests/fuzz/%.o: CFLAGS += -DFUZZ_REPLAY

# CUDA backend: a shared object the sala binary loads with dlopen (engine/backend.c). It calls
# back into the loading executable for the backend-neutral helpers (sala_errf, eng_config_*,
# eng_alibi_slopes), which is why both executables are linked with -rdynamic.
NVFLAGS := -O3 -std=c++17 -Xcompiler -fPIC,-Wall,-Wextra -I. -Icommon \
           -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_90,code=[sm_90,compute_90]
$(BUILD)/obj/%.cu.o: %.cu $(wildcard engine/cuda/*.h engine/*.h) | $(SETUP_STAMP)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c $< -o $@
# -lcuda: the driver API (virtual memory management for the sequence caches, cu_cache.cu),
# linked against the toolkit's stub; the real libcuda.so.1 comes with the GPU driver (the .so is
# only dlopen'ed where one exists: elsewhere the backend reports itself unavailable).
CUDA_STUBS ?= $(dir $(NVCC))../lib64/stubs
$(CUDA_SO): $(CU_SRC:%.cu=$(BUILD)/obj/%.cu.o)
	$(NVCC) -shared -o $@ $^ -lcublasLt -lcublas -lcudart -L$(CUDA_STUBS) -lcuda

SHARED ?= ../shared
export SALA_BIN := $(abspath $(SALA))
export SALA_SHARED := $(abspath $(SHARED))

# Real documents for the ingestion tests (Debian packages, npm), fetched once into testdata/.
TESTDATA_STAMP := testdata/.dl/ok
$(TESTDATA_STAMP): scripts/fetch-testdata
	./scripts/fetch-testdata testdata
	@touch $@

test: all $(TESTDATA_STAMP)
	$(SALA_TEST)

check: $(TESTDATA_STAMP)
	$(MAKE) BUILD=build-san SAN=1 CUDA=0 OPT=-O1 all
	ASAN_OPTIONS=detect_leaks=1 SALA_BIN=$(abspath build-san/sala) build-san/sala-test

test-cuda: all
	SALA_TEST_CUDA=1 $(SALA_TEST) cuda

bench: all
	./scripts/bench

demo: all
	./scripts/demo

clean:
	rm -rf build build-san build-fuzz

# ---- fuzzing (issue 9): libFuzzer + ASan + UBSan with clang, in build-fuzz/ ----
#   make fuzz [FUZZ_TIME=60] [FUZZ=xml] [FUZZ_JOBS=1]
#                       run each target (or those named), one after the other, for FUZZ_TIME
#                       seconds on FUZZ_JOBS worker processes (libFuzzer -jobs), on
#                       build-fuzz/corpus/<t> seeded from tests/fuzz/corpus/<t>; crashers land in
#                       build-fuzz/crash/<t>/, worker logs in build-fuzz/log/<t>/; one summary line
#                       per target (executions, exec/s), also appended to build-fuzz/runs.txt
#   make fuzz-merge [FUZZ=xml] [FUZZ_FROM=DIR]
#                       minimize the work corpus back into tests/fuzz/corpus/<t>; with FUZZ_FROM,
#                       first unpack DIR/fuzz-results.tgz (a run of scripts/fuzz-pack's runner on
#                       another machine) into build-fuzz/corpus/<t> and build-fuzz/crash/<t>
# The libFuzzer options and sanitizer settings live in tests/fuzz/run (the runner of both).
FUZZ_BUILD  := build-fuzz
FUZZ_CC     ?= clang
FUZZ_TIME   ?= 60
FUZZ_JOBS   ?= 1
FUZZ_ALL    := $(patsubst tests/fuzz/fuzz_%.c,%,$(filter-out tests/fuzz/fuzz_common.c,$(wildcard tests/fuzz/fuzz_*.c)))
FUZZ        ?= $(FUZZ_ALL)
FUZZ_SAN    := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS := -std=c11 -g -O1 $(WARN) -D_GNU_SOURCE -I. -Icommon $(FUZZ_SAN)
FUZZ_LIBSRC := common/common.c common/json.c engine/safetensors.c engine/config.c engine/model.c \
               engine/statefile.c ingest/doc.c ingest/xml.c ingest/pdf.c ingest/repo.c \
               ingest/tokenizer.c ingest/prompt.c ingest/text.c tests/fuzz/fuzz_common.c
FUZZ_LIBOBJ := $(FUZZ_LIBSRC:%.c=$(FUZZ_BUILD)/obj/%.o)
FUZZ_BINS   := $(FUZZ_ALL:%=$(FUZZ_BUILD)/fuzz_%)
FUZZ_RUN    := tests/fuzz/run --bin $(FUZZ_BUILD) --seeds tests/fuzz/corpus --dicts tests/fuzz \
               --supp tests/fuzz/lsan.supp --work $(FUZZ_BUILD)

$(FUZZ_BUILD)/obj/%.o: %.c | $(SETUP_STAMP)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link $(PKG_CFLAGS) -MMD -MP -c $< -o $@
# --as-needed: only the libraries the targets use (scripts/fuzz-pack copies them)
$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/obj/tests/fuzz/fuzz_%.o $(FUZZ_LIBOBJ)
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -Wl,--as-needed -o $@ $^ $(PKG_LIBS) -lm -ldl -lpthread
.SECONDARY: $(FUZZ_LIBOBJ) $(FUZZ_ALL:%=$(FUZZ_BUILD)/obj/tests/fuzz/fuzz_%.o)
fuzz-build: $(FUZZ_BINS)

fuzz: fuzz-build
	@$(FUZZ_RUN) --each --cores $(FUZZ_JOBS) --time $(FUZZ_TIME) $(FUZZ)

# Generated seeds (tiny model, shards + index, state files); the hand-written ones sit beside them.
fuzz-seeds: all
	@mkdir -p $(FUZZ_ALL:%=tests/fuzz/corpus/%)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -o $(BUILD)/mkseeds tests/fuzz/tools/mkseeds.c $(LIBSALA) $(PKG_LIBS) $(LDLIBS)
	$(BUILD)/mkseeds tests/fuzz/corpus

fuzz-merge: fuzz-build
	@$(if $(FUZZ_FROM),$(FUZZ_RUN) --import $(FUZZ_FROM) $(FUZZ) || \
	    echo "fuzz-merge: $(FUZZ_FROM) brought crashers (above): fix them first";) \
	$(FUZZ_RUN) --merge $(FUZZ)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
-include $(shell find $(FUZZ_BUILD)/obj -name '*.d' 2>/dev/null)
