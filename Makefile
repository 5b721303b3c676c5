# psd2edge: one entry point for build, tests, demo, benchmarks and install.
# Sources are discovered by directory; each unit test and fuzz target names the
# daemon modules it links in a sibling .deps file (one module name per word).
# (Pattern-rule prerequisites use addprefix, not patsubst: make substitutes the
# stem for every % in them before the second expansion.)

BUILD      ?= build
PREFIX     ?= /usr/local
CC         ?= gcc
CLANG      ?= clang
BPFTOOL    ?= bpftool

WARN       := -Wall -Wextra -Werror
CPPFLAGS   := -D_GNU_SOURCE -Iinclude -Iuser -I$(BUILD)
NL_CFLAGS   = $(shell pkg-config --cflags libnl-3.0)
CFLAGS     ?= -O2 -g
ALL_CFLAGS  = -std=gnu11 $(WARN) $(CFLAGS) $(CPPFLAGS) $(NL_CFLAGS)
LIBS       := -lssl -lcrypto -ljansson -lsqlite3 -lhttp_parser -lbpf -lelf -lz \
              -lnl-route-3 -lnl-3 -lpthread
SAN_FLAGS  := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
FUZZ_FLAGS := -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer

DAEMON_MAIN := user/psd2edged.c
CTL_MAIN    := user/psd2edgectl.c
LIB_SRCS    := $(filter-out $(DAEMON_MAIN) $(CTL_MAIN),$(wildcard user/*.c))
LIB_NAMES   := $(basename $(notdir $(LIB_SRCS)))
# psd2edgectl links only what it needs: it speaks JSON and reads files.
CTL_MODULES := ctl_client buf

BPF_SRCS    := $(wildcard bpf/*.bpf.c)
BPF_OBJS    := $(patsubst bpf/%.bpf.c,$(BUILD)/bpf/%.bpf.o,$(BPF_SRCS))
BPF_SKELS   := $(patsubst bpf/%.bpf.c,$(BUILD)/%.skel.h,$(BPF_SRCS))
BPF_CFLAGS  := -O2 -g -target bpf -mcpu=v3 -D__TARGET_ARCH_x86 -Wall -Werror \
               -Iinclude -I/usr/include/x86_64-linux-gnu

UNIT_TESTS  := $(patsubst tests/unit/%.c,$(BUILD)/asan/%,$(wildcard tests/unit/test_*.c))
FUZZERS     := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))

.DELETE_ON_ERROR:
# Objects built for a test link are kept: several people build in one tree at once.
.SECONDARY:
.SECONDEXPANSION:
.PHONY: all check check-run test-fast deps unit fuzz integration vmtest bench demo install clean

all: $(BUILD)/psd2edged $(BUILD)/psd2edgectl $(BPF_OBJS)

deps:
	scripts/install-deps.sh

# --- BPF objects and skeletons -------------------------------------------------
$(BUILD)/bpf/%.bpf.o: bpf/%.bpf.c $(wildcard include/*.h bpf/*.h) | $(BUILD)/bpf
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(BUILD)/%.skel.h: $(BUILD)/bpf/%.bpf.o
	$(BPFTOOL) gen skeleton $< > $@

# --- daemon and CLI --------------------------------------------------------------
$(BUILD)/obj/%.o: user/%.c $(wildcard user/*.h include/*.h) $(BPF_SKELS) | $(BUILD)/obj
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/psd2edged: $(BUILD)/obj/psd2edged.o $(patsubst %,$(BUILD)/obj/%.o,$(LIB_NAMES))
	$(CC) $(CFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/psd2edgectl: $(BUILD)/obj/psd2edgectl.o $(patsubst %,$(BUILD)/obj/%.o,$(CTL_MODULES))
	$(CC) $(CFLAGS) -o $@ $^ -ljansson

# --- unit tests under ASan + UBSan -------------------------------------------------
$(BUILD)/asan/obj/%.o: user/%.c $(wildcard user/*.h include/*.h) $(BPF_SKELS) | $(BUILD)/asan/obj
	$(CC) $(ALL_CFLAGS) $(SAN_FLAGS) -c $< -o $@

$(BUILD)/asan/test_%: tests/unit/test_%.c tests/unit/test_%.deps \
		$(wildcard tests/unit/*.h include/*.h) \
		$$(addprefix $(BUILD)/asan/obj/,$$(addsuffix .o,$$(shell cat tests/unit/test_$$*.deps))) | $(BUILD)/asan
	$(CC) $(ALL_CFLAGS) $(SAN_FLAGS) -o $@ $< $(filter %.o,$^) $(LIBS) -lcmocka

# test_token_store compiles the store into itself, to stop a rotation at a chosen row.
$(BUILD)/asan/test_token_store: user/token_store.c user/token_store.h

unit: $(UNIT_TESTS) $(BPF_OBJS)

# --- fuzz targets (libFuzzer) ---------------------------------------------------------
$(BUILD)/fuzz/obj/%.o: user/%.c $(wildcard user/*.h include/*.h) $(BPF_SKELS) | $(BUILD)/fuzz/obj
	$(CLANG) $(ALL_CFLAGS) $(FUZZ_FLAGS) -c $< -o $@

$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_%.deps \
		$$(addprefix $(BUILD)/fuzz/obj/,$$(addsuffix .o,$$(shell cat tests/fuzz/fuzz_$$*.deps))) | $(BUILD)/fuzz
	$(CLANG) $(ALL_CFLAGS) $(FUZZ_FLAGS) -o $@ $< $(filter %.o,$^) $(LIBS)

FUZZ_SECONDS ?= 300
fuzz: $(FUZZERS)
	tests/run-fuzz.sh $(FUZZ_SECONDS) $(FUZZERS)

# --- programs run inside the VM (vmtest/): tests/vm/NAME.c and bench/ktls_NAME.c ------------
VM_PROGS    := $(patsubst tests/vm/%.c,$(BUILD)/vm/%,$(wildcard tests/vm/*.c)) \
               $(patsubst bench/%.c,$(BUILD)/vm/%,$(wildcard bench/ktls_*.c))
$(BUILD)/vm/%: $$(wildcard tests/vm/$$*.c bench/$$*.c) $(BUILD)/obj/ktls.o \
		$(BUILD)/obj/splice_fwd.o | $(BUILD)/vm
	$(CC) $(ALL_CFLAGS) -o $@ $(filter %.c %.o,$^) $(LIBS)

# --- benchmark tools (bench/): the mTLS load generator ------------------------------------
$(BUILD)/bench/loadgen: bench/loadgen.c | $(BUILD)/bench
	$(CC) $(ALL_CFLAGS) -o $@ $< -lssl -lcrypto -lpthread

# --- test entry points -----------------------------------------------------------------
check:
	scripts/install-deps.sh
	$(MAKE) check-run

# The load generator is built (not run) so that it cannot rot between benchmark runs.
check-run: all unit $(FUZZERS) $(VM_PROGS) $(BUILD)/bench/loadgen
	tests/run-all.sh

# The inner loop: unit tests and fuzz smoke, no integration namespaces, no VM; tests that need
# root or BPF skip (visibly) instead of failing.
test-fast: unit $(FUZZERS)
	tests/run-all.sh --fast

integration: all
	tests/integration/run.sh

vmtest: all $(VM_PROGS) $(BUILD)/asan/test_xdp $(BUILD)/asan/test_dataplane \
		$(BUILD)/asan/test_policy_store
	vmtest/run-tests.sh

bench: all $(BUILD)/bench/loadgen
	BUILD=$(BUILD) bench/run.sh

demo:
	scripts/install-deps.sh
	$(MAKE) all
	scripts/demo.sh

install: all
	install -D -m 0755 $(BUILD)/psd2edged $(DESTDIR)$(PREFIX)/sbin/psd2edged
	install -D -m 0755 $(BUILD)/psd2edgectl $(DESTDIR)$(PREFIX)/bin/psd2edgectl
	install -D -m 0644 packaging/psd2edged.service $(DESTDIR)/etc/systemd/system/psd2edged.service
	install -D -m 0640 packaging/config.example.json $(DESTDIR)/etc/psd2edge/config.example.json
	install -d -m 0750 $(DESTDIR)/var/lib/psd2edge

clean:
	rm -rf $(BUILD)

$(BUILD) $(BUILD)/vm $(BUILD)/bench $(BUILD)/obj $(BUILD)/bpf $(BUILD)/asan $(BUILD)/asan/obj $(BUILD)/fuzz $(BUILD)/fuzz/obj:
	mkdir -p $@
