# funnel - top-level build.  Plain make + pkg-config.
#
#   make            build everything into build/
#   make test       install missing Debian packages, build, run the unit and
#                   integration tests, then the same tests under ASan+UBSan
#   make run        install missing packages, build, start funneld and the
#                   services on loopback (data under var/, rules funnel.yaml)
#   make demo       the same on a fresh log (var/demo) holding 90 days of a
#                   fictional company's funnel; prints the dashboard's URL
#   make bench      the docs/DESIGN.md numbers next to Redis Streams (appendfsync
#                   always), the peer docs/DESIGN.md names (tests/bench)
#   make bench-peers the same next to every peer: Redis always and everysec,
#                   NATS JetStream.  BENCH_OUT=tests/bench/RESULTS.md keeps
#                   the table where the README quotes it from
#   make sanitize   build into build-asan/ with -fsanitize=address,undefined
#   make check      the tests without installing; CRASH_STATES=5000 checks
#                   that many simulated power-loss states (default 300)
#   make unit       the unit tests alone; make integration the rest of check
#   make fuzz       libFuzzer on the request decoder and envelope validator
#                   and on the client's reply and record decoders (clang),
#                   FUZZ_SECONDS=60 each; `make check` runs each for 15 s
#   make install    PREFIX=/usr/local DESTDIR= (README "Install and operate"):
#                   binaries, libfunnel (static, and shared with a SONAME),
#                   headers, funnel.pc, the example rules file, systemd units
#                   and the sysusers.d file that creates the funnel user
#
# Layout of the output: build/bin (funneld, funnel), build/lib (libfunnel.a,
# libfunnel.so*, funnel.pc), build/tests (test binaries), build/obj (objects).

PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
DOCDIR ?= $(PREFIX)/share/doc/funnel
# /etc for a system prefix (/usr), PREFIX/etc otherwise
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
# where systemd looks for vendor units and sysusers.d files
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
# the state the units keep: StateDirectory=funnel
STATEDIR ?= /var/lib/funnel
BUILD ?= build
SAN ?=

CC ?= cc
PKGS := libzmq lmdb msgpack libsodium libcjson yaml-0.1 libpcre2-8
DEB_PACKAGES := build-essential pkg-config libzmq3-dev liblmdb-dev lmdb-utils \
	libmsgpack-dev libsodium-dev libcjson-dev libyaml-dev libcmocka-dev libpcre2-dev \
	python3 python3-zmq python3-msgpack \
	libmicrohttpd-dev xxd chromium prometheus nodejs libsystemd-dev systemd libcsv-dev \
	libnats-dev nats-server
# the peers `make bench` measures funnel against, in the same run
BENCH_PACKAGES := redis-server libhiredis-dev nats-server libnats-dev

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
LIBS = $(PKG_LIBS) -lpthread -lm
# sd_notify for Type=notify units: funneld and the services, not libfunnel
SYSTEMD_LIBS = $(shell pkg-config --libs libsystemd 2>/dev/null)
# libfunnel reads a NATS JetStream mirror (clients/lib/natsource.c): what
# links libfunnel links libnats too
NATS_LIBS = $(shell pkg-config --libs libnats 2>/dev/null || echo -lnats)

PROTO_SRC := $(wildcard proto/*.c)
LIB_SRC := $(wildcard clients/lib/*.c)
DAEMON_SRC := $(wildcard daemon/*.c)
CLI_SRC := $(wildcard clients/cli/*.c)
SCORING_SRC := $(wildcard clients/scoring/*.c)
ROUTING_SRC := $(wildcard clients/routing/*.c)
METRICS_SRC := $(wildcard clients/metrics/*.c)
GATEWAY_SRC := $(wildcard clients/gateway/*.c)
MIRROR_SRC := $(wildcard clients/mirror/*.c)
# what more than one service links: the shared rules file's reader; the
# HTTP server (httpd.c) apart, for the services that serve HTTP
COMMON_SRC := $(filter-out clients/common/httpd.c,$(wildcard clients/common/*.c))
UNIT_SRC := $(wildcard tests/unit/test_*.c)
ITEST_SRC := $(wildcard tests/integration/test_*.c)
BENCH_SRC := $(wildcard tests/bench/bench_*.c)
# the rest of tests/bench (peers, measuring) goes into every bench binary
BENCH_LIB_SRC := $(filter-out $(BENCH_SRC),$(wildcard tests/bench/*.c))
TESTLIB_SRC := $(wildcard tests/common/*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
PROTO_OBJ := $(call obj,$(PROTO_SRC))
LIB_OBJ := $(call obj,$(LIB_SRC))
DAEMON_OBJ := $(call obj,$(DAEMON_SRC))
CLI_OBJ := $(call obj,$(CLI_SRC))
SCORING_OBJ := $(call obj,$(SCORING_SRC))
# the dashboard page is compiled in (xxd -i), so the binary serves it alone
METRICS_OBJ := $(call obj,$(METRICS_SRC)) $(BUILD)/obj/gen/dashboard_html.o
METRICS_LIBS = $(shell pkg-config --libs libmicrohttpd 2>/dev/null)
# the view and the reports alone, without the HTTP server (unit tests link them)
METRICS_ENGINE_OBJ := $(filter-out %/main.o %/run.o %/report.o %/http.o %/dashboard_html.o,$(METRICS_OBJ))
# the rules engine alone, without the service around it (unit tests link it)
SCORING_ENGINE_OBJ := $(filter-out %/main.o %/apply.o %/explain.o %/whatif.o,$(SCORING_OBJ))
ROUTING_OBJ := $(call obj,$(ROUTING_SRC))
# the embed script is compiled in (xxd -i), like the dashboard
GATEWAY_OBJ := $(call obj,$(GATEWAY_SRC)) $(BUILD)/obj/gen/embed_js.o
# the forms, submissions, rate limit and counters alone, without the server
GATEWAY_ENGINE_OBJ := $(filter-out %/main.o %/run.o %/http.o %/embed_js.o,$(GATEWAY_OBJ))
MIRROR_OBJ := $(call obj,$(MIRROR_SRC))
COMMON_OBJ := $(call obj,$(COMMON_SRC))
HTTPD_OBJ := $(call obj,clients/common/httpd.c)
# the routing engine alone (rules and decisions), for the unit tests
ROUTING_ENGINE_OBJ := $(filter-out %/main.o %/apply.o %/explain.o,$(ROUTING_OBJ))
TESTLIB_OBJ := $(call obj,$(TESTLIB_SRC))
BENCH_LIB_OBJ := $(call obj,$(BENCH_LIB_SRC))

LIBFUNNEL := $(BUILD)/lib/libfunnel.a
# The shared library's ABI version, apart from FUNNEL_VERSION: the major
# (the SONAME) changes when a funnel_* signature or struct changes
# incompatibly; it exports funnel_* only (clients/lib/libfunnel.map).
SO_MAJOR := 1
SO_VERSION := $(SO_MAJOR).0.0
LIBFUNNEL_SO := $(BUILD)/lib/libfunnel.so.$(SO_VERSION)
LIBFUNNEL_PC := $(BUILD)/lib/funnel.pc
FUNNELD := $(BUILD)/bin/funneld
FUNNEL := $(BUILD)/bin/funnel
FUNNEL_SCORING := $(BUILD)/bin/funnel-scoring
FUNNEL_ROUTING := $(BUILD)/bin/funnel-routing
FUNNEL_METRICS := $(BUILD)/bin/funnel-metrics
FUNNEL_GATEWAY := $(BUILD)/bin/funnel-gateway
FUNNEL_MIRROR := $(BUILD)/bin/funnel-mirror
UNIT_BIN := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
ITEST_BIN := $(patsubst tests/integration/%.c,$(BUILD)/tests/%,$(ITEST_SRC))
ITEST_PY := $(sort $(wildcard tests/integration/test_*.py))
BENCH_BIN := $(patsubst tests/bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))
# the fuzz targets are built by clang from the proto sources (tests/fuzz)
DEB_PACKAGES += clang libclang-rt-14-dev
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_BIN := $(BUILD)/fuzz/fuzz_envelope $(BUILD)/fuzz/fuzz_reply
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -Wall -Wextra -fsanitize=fuzzer,address,undefined \
	-fno-sanitize-recover=undefined -fno-omit-frame-pointer -Iinclude -Iproto

.PHONY: FORCE all deps test check unit integration sanitize test-asan run demo bench bench-peers install \
	clean fuzz
# keep every object, including those only tests link
.SECONDARY:
all: $(FUNNELD) $(FUNNEL) $(FUNNEL_SCORING) $(FUNNEL_ROUTING) $(FUNNEL_METRICS) $(FUNNEL_GATEWAY) \
	$(FUNNEL_MIRROR) \
	$(LIBFUNNEL) $(LIBFUNNEL_SO) $(LIBFUNNEL_PC)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(LIBFUNNEL): $(LIB_OBJ) $(PROTO_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(LIBFUNNEL_SO): $(LIB_OBJ) $(PROTO_OBJ) clients/lib/libfunnel.map
	@mkdir -p $(dir $@)
	$(CC) -shared $(LDFLAGS) -Wl,-soname,libfunnel.so.$(SO_MAJOR) \
		-Wl,--version-script,clients/lib/libfunnel.map -o $@ $(LIB_OBJ) $(PROTO_OBJ) $(LIBS) $(NATS_LIBS)
	ln -sf libfunnel.so.$(SO_VERSION) $(BUILD)/lib/libfunnel.so.$(SO_MAJOR)
	ln -sf libfunnel.so.$(SO_MAJOR) $(BUILD)/lib/libfunnel.so

# pkg-config file for the prefix of this build (make install PREFIX=...);
# libdir and includedir below the prefix are written relative to it, so
# pkg-config --define-prefix (or --define-variable=prefix=) can move it
$(LIBFUNNEL_PC): clients/lib/funnel.pc.in include/funnel/limits.h FORCE
	@mkdir -p $(dir $@)
	@v=$$(sed -n 's/^#define FUNNEL_VERSION "\(.*\)"/\1/p' include/funnel/limits.h); \
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))|' \
	    -e 's|@INCLUDEDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))|' \
	    -e "s|@VERSION@|$$v|" clients/lib/funnel.pc.in > $@.tmp; \
	if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv $@.tmp $@; fi

$(FUNNEL_METRICS): $(METRICS_OBJ) $(COMMON_OBJ) $(HTTPD_OBJ) $(LIBFUNNEL)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(METRICS_OBJ) $(COMMON_OBJ) $(HTTPD_OBJ) $(LIBFUNNEL) $(LIBS) $(NATS_LIBS) $(METRICS_LIBS) \
		$(SYSTEMD_LIBS)

$(FUNNEL_GATEWAY): $(GATEWAY_OBJ) $(COMMON_OBJ) $(HTTPD_OBJ) $(LIBFUNNEL)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(GATEWAY_OBJ) $(COMMON_OBJ) $(HTTPD_OBJ) $(LIBFUNNEL) $(LIBS) $(NATS_LIBS) $(METRICS_LIBS) \
		$(SYSTEMD_LIBS)

$(BUILD)/gen/embed_js.c: clients/gateway/embed.js
	@mkdir -p $(dir $@)
	xxd -i -n gw_embed_js $< | sed 's/^unsigned /const unsigned /' > $@

$(BUILD)/gen/dashboard_html.c: clients/metrics/dashboard.html
	@mkdir -p $(dir $@)
	xxd -i -n mx_dashboard_html $< | sed 's/^unsigned /const unsigned /' > $@

$(BUILD)/obj/gen/%.o: $(BUILD)/gen/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

# the daemon links proto/ and nothing of clients/ (the log line format is
# proto/log.c)
$(FUNNELD): $(DAEMON_OBJ) $(PROTO_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS) $(SYSTEMD_LIBS)

# the CLI shares the JSON -> msgpack conversion with funnel-gateway
$(FUNNEL): $(CLI_OBJ) $(BUILD)/obj/clients/common/jsonpack.o $(LIBFUNNEL)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/obj/clients/common/jsonpack.o $(LIBFUNNEL) $(LIBS) $(NATS_LIBS) -lcsv

$(FUNNEL_SCORING): $(SCORING_OBJ) $(COMMON_OBJ) $(LIBFUNNEL)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(SCORING_OBJ) $(COMMON_OBJ) $(LIBFUNNEL) $(LIBS) $(NATS_LIBS) $(SYSTEMD_LIBS)

$(FUNNEL_ROUTING): $(ROUTING_OBJ) $(COMMON_OBJ) $(LIBFUNNEL)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(ROUTING_OBJ) $(COMMON_OBJ) $(LIBFUNNEL) $(LIBS) $(NATS_LIBS) $(SYSTEMD_LIBS)

# funnel-mirror: the log into NATS JetStream, status over HTTP
$(FUNNEL_MIRROR): $(MIRROR_OBJ) $(COMMON_OBJ) $(HTTPD_OBJ) $(LIBFUNNEL)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(MIRROR_OBJ) $(COMMON_OBJ) $(HTTPD_OBJ) $(LIBFUNNEL) $(LIBS) $(NATS_LIBS) $(METRICS_LIBS) \
		$(SYSTEMD_LIBS)

# the services' sources see the shared reader's header
$(BUILD)/obj/clients/scoring/%.o $(BUILD)/obj/clients/routing/%.o $(BUILD)/obj/clients/metrics/%.o \
$(BUILD)/obj/clients/gateway/%.o $(BUILD)/obj/clients/cli/%.o \
$(BUILD)/obj/clients/mirror/%.o: ALL_CFLAGS += -Iclients/common

# daemon/store.c's own unit test links it alone (a real LMDB in a temp dir)
$(BUILD)/tests/test_store: tests/unit/test_store.c $(BUILD)/obj/daemon/store.o $(BUILD)/obj/daemon/journal.o $(PROTO_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Idaemon -Itests/common -o $@ $< $(BUILD)/obj/daemon/store.o $(BUILD)/obj/daemon/journal.o $(PROTO_OBJ) $(LIBS) -lcmocka $(LDFLAGS)

# daemon/journal.c's own unit test links it with the store that replays it
# (real files in a temp dir)
$(BUILD)/tests/test_journal: tests/unit/test_journal.c $(BUILD)/obj/daemon/journal.o $(BUILD)/obj/daemon/store.o $(PROTO_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Idaemon -Itests/common -o $@ $< $(BUILD)/obj/daemon/store.o $(BUILD)/obj/daemon/journal.o $(PROTO_OBJ) $(LIBS) -lcmocka $(LDFLAGS)

# unit tests link every service's engine (no main, no I/O around it)
UNIT_ENGINE_OBJ := $(SCORING_ENGINE_OBJ) $(ROUTING_ENGINE_OBJ) $(METRICS_ENGINE_OBJ) \
	$(GATEWAY_ENGINE_OBJ) $(COMMON_OBJ)
$(BUILD)/tests/%: tests/unit/%.c $(LIBFUNNEL) $(TESTLIB_OBJ) $(UNIT_ENGINE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests/common -Iclients/scoring -Iclients/routing -Iclients/metrics -Iclients/gateway -Iclients/common -o $@ $< $(TESTLIB_OBJ) $(UNIT_ENGINE_OBJ) $(UNIT_EXTRA) $(LIBFUNNEL) $(LIBS) $(NATS_LIBS) $(SYSTEMD_LIBS) -lcmocka $(LDFLAGS)
# the HTTP server's own test links it and libmicrohttpd
$(BUILD)/tests/test_httpd: $(HTTPD_OBJ)
$(BUILD)/tests/test_httpd: UNIT_EXTRA = $(HTTPD_OBJ) $(METRICS_LIBS)

$(BUILD)/tests/%: tests/integration/%.c $(LIBFUNNEL) $(TESTLIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests/common -o $@ $< $(TESTLIB_OBJ) $(LIBFUNNEL) $(LIBS) $(NATS_LIBS) -lcmocka $(LDFLAGS)

$(BUILD)/obj/tests/bench/%.o: tests/bench/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests/common -MMD -MP -c $< -o $@

$(BUILD)/bench/%: tests/bench/%.c $(LIBFUNNEL) $(TESTLIB_OBJ) $(BENCH_LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests/common -o $@ $< $(BENCH_LIB_OBJ) $(TESTLIB_OBJ) $(LIBFUNNEL) $(LIBS) $(NATS_LIBS) \
		-lhiredis $(LDFLAGS)

# Install what is missing (Debian).  Quiet and quick when all is present.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@# the browser tests drive Debian's chromium with playwright-core (and
	@# scan with axe-core); npm ci again whenever the lock file changed
	@if { [ ! -f tests/browser/node_modules/.package-lock.json ] || \
	      [ tests/browser/package-lock.json -nt tests/browser/node_modules/.package-lock.json ]; } && \
	    command -v npm >/dev/null; then \
		echo "installing tests/browser/node_modules (npm ci)"; \
		(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error); \
	fi

# The test command of the README: plain build, then sanitizer build.
test: deps
	$(MAKE) check
	$(MAKE) test-asan

# The fuzzers are their own ASan+UBSan builds: the plain check runs each
# for FUZZ_CHECK_SECONDS, the sanitizer check does not run them again.
ifeq ($(SAN),1)
FUZZ_CHECK :=
else
FUZZ_CHECK := tests/fuzz/fuzz.sh
endif
FUZZ_CHECK_SECONDS ?= 15

# The power-loss harness's LD_PRELOAD library (tests/crash/shim.c), which
# tests/integration/test_crash.py preloads into funneld.  Never built with
# the sanitizers: it sits before their runtime in the library list.
CRASH_SHIM := $(BUILD)/tests/crashshim.so
$(CRASH_SHIM): tests/crash/shim.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE -g -O2 -Wall -Wextra -fPIC -shared -o $@ $< -ldl -lpthread

# CRASH_STATES=5000 make check: more power-loss states (default 300)
check: all $(UNIT_BIN) $(ITEST_BIN) $(CRASH_SHIM) $(if $(FUZZ_CHECK),$(FUZZ_BIN))
	@BUILD=$(BUILD) FUZZ_SECONDS=$(FUZZ_CHECK_SECONDS) sh tests/run.sh $(UNIT_BIN) $(ITEST_BIN) $(FUZZ_CHECK) $(ITEST_PY)

# the unit tests alone (seconds), or the integration tests alone
unit: $(UNIT_BIN)
	@BUILD=$(BUILD) sh tests/run.sh $(UNIT_BIN)

integration: all $(ITEST_BIN) $(CRASH_SHIM)
	@BUILD=$(BUILD) sh tests/run.sh $(ITEST_BIN) $(ITEST_PY)

test-asan:
	$(MAKE) BUILD=build-asan SAN=1 OPT=-O1 check

sanitize:
	$(MAKE) BUILD=build-asan SAN=1 OPT=-O1 all

# funneld and every service on the embedded defaults (clients/run.sh)
run: deps all
	@BUILD=$(BUILD) sh clients/run.sh $(ARGS)

# the same on a fresh log under var/demo, filled with 90 days of a
# fictional company's funnel (clients/demo), then the dashboard's URL
demo: deps all
	@BUILD=$(BUILD) sh clients/demo/demo.sh $(ARGS)

# `make bench`: funnel and Redis Streams with appendfsync always, the peer
# of the docs/DESIGN.md target (a few minutes on 2 cores, most of it filling the
# 10M-event log for the start time).  `make bench-peers`: every column,
# also Redis everysec and JetStream (under a minute more).
# Sizes: BENCH_EVENTS, BENCH_START_EVENTS, ... (tests/bench/bench_funnel.c).
BENCH_OUT ?= $(BUILD)/bench/RESULTS.md
bench: BENCH_PEERS ?= redis-always
bench-peers: BENCH_PEERS ?= all
bench bench-peers: deps
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(BENCH_PACKAGES)"
	@$(MAKE) --no-print-directory all $(BENCH_BIN) $(CRASH_SHIM)
	@BUILD=$(BUILD) BENCH_PEERS="$(BENCH_PEERS)" BENCH_OUT="$(BENCH_OUT)" sh tests/bench/run.sh

# libFuzzer (tests/fuzz): clang instruments the proto code that reads
# every frame, in the daemon (fuzz_envelope) and in libfunnel (fuzz_reply);
# the seeds are tests/fuzz/corpus/<target>, what a run finds goes to
# $(BUILD)/fuzz/corpus-<target> (kept between runs).
$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(PROTO_SRC) $(wildcard proto/*.h include/funnel/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(PKG_CFLAGS) -o $@ $< $(PROTO_SRC) $(PKG_LIBS) -lm

fuzz: deps $(FUZZ_BIN)
	@BUILD=$(BUILD) FUZZ_SECONDS=$(FUZZ_SECONDS) sh tests/fuzz/fuzz.sh

# Units and the rules file name the installed paths: @BINDIR@,
# @SYSCONFDIR@, @STATEDIR@ and @DOCDIR@ are replaced as they are copied.  An
# operator's /etc/funnel/funnel.yaml is never overwritten; the example is
# always installed beside the docs; so is funnel.conf, the settings file
# every program reads (the units pass --config).
SUBST = sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
	-e 's|@STATEDIR@|$(STATEDIR)|g' -e 's|@DOCDIR@|$(DOCDIR)|g'
UNITS := $(wildcard daemon/systemd/*.service)

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)/funnel \
		$(DESTDIR)$(DOCDIR) $(DESTDIR)$(SYSCONFDIR)/funnel $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(SYSUSERSDIR)
	install -m 755 $(FUNNELD) $(FUNNEL) $(FUNNEL_SCORING) $(FUNNEL_ROUTING) $(FUNNEL_METRICS) \
		$(FUNNEL_GATEWAY) $(FUNNEL_MIRROR) $(DESTDIR)$(BINDIR)/
	install -m 644 $(LIBFUNNEL) $(DESTDIR)$(LIBDIR)/
	install -m 755 $(LIBFUNNEL_SO) $(DESTDIR)$(LIBDIR)/
	ln -sf libfunnel.so.$(SO_VERSION) $(DESTDIR)$(LIBDIR)/libfunnel.so.$(SO_MAJOR)
	ln -sf libfunnel.so.$(SO_MAJOR) $(DESTDIR)$(LIBDIR)/libfunnel.so
	install -m 644 $(LIBFUNNEL_PC) $(DESTDIR)$(LIBDIR)/pkgconfig/
	install -m 644 include/funnel/*.h $(DESTDIR)$(INCLUDEDIR)/funnel/
	install -m 644 funnel.yaml $(DESTDIR)$(DOCDIR)/funnel.yaml.example
	install -m 644 README.md proto/PROTOCOL.md clients/metrics/METRICS.md \
		clients/gateway/GATEWAY.md $(DESTDIR)$(DOCDIR)/
	[ -e $(DESTDIR)$(SYSCONFDIR)/funnel/funnel.yaml ] || \
		install -m 644 funnel.yaml $(DESTDIR)$(SYSCONFDIR)/funnel/funnel.yaml
	$(SUBST) daemon/systemd/funnel.conf > $(DESTDIR)$(DOCDIR)/funnel.conf.example
	[ -e $(DESTDIR)$(SYSCONFDIR)/funnel/funnel.conf ] || \
		install -m 644 $(DESTDIR)$(DOCDIR)/funnel.conf.example \
		$(DESTDIR)$(SYSCONFDIR)/funnel/funnel.conf
	for u in $(UNITS); do $(SUBST) $$u > $(DESTDIR)$(UNITDIR)/$$(basename $$u) && \
		chmod 644 $(DESTDIR)$(UNITDIR)/$$(basename $$u) || exit 1; done
	$(SUBST) daemon/systemd/funnel.sysusers > $(DESTDIR)$(SYSUSERSDIR)/funnel.conf
	chmod 644 $(DESTDIR)$(SYSUSERSDIR)/funnel.conf

clean:
	rm -rf build build-asan

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
