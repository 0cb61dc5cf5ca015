# funnel - top-level build.  Plain make + pkg-config.
#
#   make            build everything into build/
#   make test       install missing Debian packages, build, run the unit and
#                   integration tests, then the same tests under ASan+UBSan
#   make run        install missing packages, build, start funneld on loopback
#   make bench      the DESIGN.md numbers (tests/bench)
#   make sanitize   build into build-asan/ with -fsanitize=address,undefined
#   make install    PREFIX=/usr/local DESTDIR=
#
# Layout of the output: build/bin (funneld, funnel), build/lib (libfunnel.a,
# libfunnel.so), build/tests (test binaries), build/obj (objects).

PREFIX ?= /usr/local
DESTDIR ?=
BUILD ?= build
SAN ?=

CC ?= cc
PKGS := libzmq lmdb msgpack libsodium libcjson yaml-0.1
DEB_PACKAGES := build-essential pkg-config libzmq3-dev liblmdb-dev lmdb-utils \
	libmsgpack-dev libsodium-dev libcjson-dev libyaml-dev libcmocka-dev \
	python3 python3-zmq python3-msgpack
# the peers `make bench` measures funnel against, in the same run
BENCH_PACKAGES := redis-server libhiredis-dev

OPT ?= -O2
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -g $(OPT) -Wall -Wextra -Wshadow -Wstrict-prototypes \
	-Wno-missing-field-initializers -fPIC -Iinclude -Iproto
ifeq ($(SAN),1)
CFLAGS_BASE += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
ALL_CFLAGS = $(CFLAGS_BASE) $(PKG_CFLAGS) $(CFLAGS)
LIBS = $(PKG_LIBS) -lpthread

PROTO_SRC := $(wildcard proto/*.c)
LIB_SRC := $(wildcard clients/lib/*.c)
DAEMON_SRC := $(wildcard daemon/*.c)
CLI_SRC := $(wildcard clients/cli/*.c)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
ITEST_SRC := $(wildcard tests/integration/test_*.c)
BENCH_SRC := $(wildcard tests/bench/bench_*.c)
TESTLIB_SRC := $(wildcard tests/common/*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
PROTO_OBJ := $(call obj,$(PROTO_SRC))
LIB_OBJ := $(call obj,$(LIB_SRC))
DAEMON_OBJ := $(call obj,$(DAEMON_SRC))
CLI_OBJ := $(call obj,$(CLI_SRC))
TESTLIB_OBJ := $(call obj,$(TESTLIB_SRC))

LIBFUNNEL := $(BUILD)/lib/libfunnel.a
LIBFUNNEL_SO := $(BUILD)/lib/libfunnel.so
FUNNELD := $(BUILD)/bin/funneld
FUNNEL := $(BUILD)/bin/funnel
UNIT_BIN := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
ITEST_BIN := $(patsubst tests/integration/%.c,$(BUILD)/tests/%,$(ITEST_SRC))
BENCH_BIN := $(patsubst tests/bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))

.PHONY: all deps test check unit integration sanitize test-asan run bench install clean
# keep every object, including those only tests link
.SECONDARY:
all: $(FUNNELD) $(FUNNEL) $(LIBFUNNEL) $(LIBFUNNEL_SO)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(LIBFUNNEL): $(LIB_OBJ) $(PROTO_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(LIBFUNNEL_SO): $(LIB_OBJ) $(PROTO_OBJ)
	@mkdir -p $(dir $@)
	$(CC) -shared $(LDFLAGS) -o $@ $^ $(LIBS)

$(FUNNELD): $(DAEMON_OBJ) $(PROTO_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(FUNNEL): $(CLI_OBJ) $(LIBFUNNEL)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(LIBFUNNEL) $(LIBS)

$(BUILD)/tests/%: tests/unit/%.c $(LIBFUNNEL) $(TESTLIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests/common -o $@ $< $(TESTLIB_OBJ) $(LIBFUNNEL) $(LIBS) -lcmocka $(LDFLAGS)

$(BUILD)/tests/%: tests/integration/%.c $(LIBFUNNEL) $(TESTLIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests/common -o $@ $< $(TESTLIB_OBJ) $(LIBFUNNEL) $(LIBS) -lcmocka $(LDFLAGS)

# The scoring rules engine: clients/scoring/*.c but the service's main.c.
# Its unit test links it on top of the usual test objects.
SCORING_ENGINE_OBJ := $(call obj,$(filter-out clients/scoring/main.c,$(wildcard clients/scoring/*.c)))
$(BUILD)/tests/test_rules: tests/unit/test_rules.c $(SCORING_ENGINE_OBJ) $(LIBFUNNEL) $(TESTLIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests/common -Iclients/scoring -o $@ $< $(SCORING_ENGINE_OBJ) $(TESTLIB_OBJ) $(LIBFUNNEL) $(LIBS) -lcmocka -lm $(LDFLAGS)

$(BUILD)/bench/%: tests/bench/%.c $(LIBFUNNEL) $(TESTLIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests/common -o $@ $< $(TESTLIB_OBJ) $(LIBFUNNEL) $(LIBS) -lhiredis $(LDFLAGS)

# Install what is missing (Debian).  Quiet and quick when all is present.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# The test command of the README: plain build, then sanitizer build.
test: deps
	$(MAKE) check
	$(MAKE) test-asan

check: all $(UNIT_BIN) $(ITEST_BIN)
	@BUILD=$(BUILD) sh tests/run.sh $(UNIT_BIN) $(ITEST_BIN)

test-asan:
	$(MAKE) BUILD=build-asan SAN=1 OPT=-O1 check

sanitize:
	$(MAKE) BUILD=build-asan SAN=1 OPT=-O1 all

run: deps all
	$(FUNNELD) $(ARGS)

bench: deps
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(BENCH_PACKAGES)"
	@$(MAKE) --no-print-directory all $(BENCH_BIN)
	@BUILD=$(BUILD) sh tests/bench/run.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include/funnel
	install -m 755 $(FUNNELD) $(FUNNEL) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(LIBFUNNEL) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(LIBFUNNEL_SO) $(DESTDIR)$(PREFIX)/lib/
	install -m 644 include/funnel/*.h $(DESTDIR)$(PREFIX)/include/funnel/

clean:
	rm -rf build build-asan

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
