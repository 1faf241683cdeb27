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

LIB_SRC  := $(wildcard common/*.c engine/*.c engine/cpu/*.c ingest/*.c ui/*.c ctx/*.c)
APP_SRC  := $(wildcard app/*.c)
TEST_SRC := $(wildcard tests/*.c)
CU_SRC   := $(wildcard engine/cuda/*.cu)

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
APP_OBJ  := $(APP_SRC:%.c=$(BUILD)/obj/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/obj/%.o)

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

.PHONY: all setup demo test check test-cuda bench clean print-cuda
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

$(BUILD)/obj/app/main.o: $(BUILD)/gen/commands.inc
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

$(SALA_TEST): $(TEST_OBJ) $(LIBSALA)
	$(CC) $(LDFLAGS) -rdynamic -o $@ $(TEST_OBJ) $(LIBSALA) $(PKG_LIBS) -lcunit $(LDLIBS)

# CUDA backend: a shared object the sala binary loads with dlopen (engine/backend.c). It calls
# back into the loading executable for the backend-neutral helpers (sala_errf, eng_config_*,
# eng_alibi_slopes), which is why both executables are linked with -rdynamic.
NVFLAGS := -O3 -std=c++17 -Xcompiler -fPIC -I. -Icommon \
           -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_90,code=[sm_90,compute_90]
$(BUILD)/obj/%.cu.o: %.cu $(wildcard engine/cuda/*.h engine/*.h) | $(SETUP_STAMP)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c $< -o $@
$(CUDA_SO): $(CU_SRC:%.cu=$(BUILD)/obj/%.cu.o)
	$(NVCC) -shared -o $@ $^ -lcublasLt -lcublas -lcudart

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
	rm -rf build build-san

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
