# mpfarm - build, test, bench, install.  `make` and `make check` first run
# `make deps`, which apt-get installs whatever build dependency is missing,
# so a fresh Debian 12 machine needs nothing else.

PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR   = $(PREFIX)/bin
MANDIR   = $(PREFIX)/share/man
SHAREDIR = $(PREFIX)/share/mpfarm

CC      ?= cc
PKGS     = sqlite3 libpq libcurl msgpack jansson inih libmicrohttpd
CFLAGS  ?= -O2 -g
WARN     = -std=c11 -Wall -Wextra -Werror -Wshadow -Wno-missing-field-initializers
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
LIBS     = $(PKG_LIBS) -lev -lm
CPPFLAGS += -D_GNU_SOURCE -Icommon -Iipc -Iworker -Imaster

SRCS     = $(wildcard common/*.c) $(wildcard ipc/*.c) $(wildcard worker/*.c) $(wildcard master/*.c)
LIBSRCS  = $(filter-out master/master_main.c,$(SRCS))
HDRS     = $(wildcard common/*.h) $(wildcard ipc/*.h) $(wildcard worker/*.h) $(wildcard master/*.h)
UNITSRCS = $(wildcard tests/unit/test_*.c)

B        ?= build
OBJS      = $(patsubst %.c,$(B)/%.o,$(SRCS))
LIBOBJS   = $(patsubst %.c,$(B)/%.o,$(LIBSRCS))
UNITBINS  = $(patsubst tests/unit/%.c,$(B)/tests/%,$(UNITSRCS))

SAN_FLAGS = -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

PYTEST   = /usr/bin/python3 -m pytest

DEB_PKGS = build-essential pkg-config libsqlite3-dev sqlite3 libpq-dev postgresql libcurl4-openssl-dev \
	   libev-dev libmsgpack-dev libjansson-dev libinih-dev libcmocka-dev \
	   libmicrohttpd-dev \
	   python3 python3-pytest man-db groff-base runit supervisor logrotate \
	   util-linux procps

# what the integration tests need beyond building: the headless browser
# test of `mpfarm serve` (tests/integration/test_serve.py), and the
# PostgreSQL pass's client library (tests/integration/storelib.py)
TEST_PKGS = chromium chromium-driver python3-selenium python3-psycopg2

# The integration tests that mean the same on both stores: the third
# pass of `make check` runs them on PostgreSQL (MPFARM_TEST_STORE=pg,
# one throwaway cluster, a database per test), with the multi-host ones.
PG_TESTS = $(addprefix tests/integration/,test_pg_hosts.py test_pg_limits.py test_pg_restart.py test_migrate.py $(PG_AGNOSTIC))
PG_AGNOSTIC = test_farm.py test_commands.py test_failed_show.py \
	test_providers.py test_provider_faults.py test_scan_conflicts.py \
	test_review_master.py test_review_worker.py test_owned_trees.py \
	test_secrets.py test_store_cli.py test_ops_cli.py test_http_bounds.py \
	test_hup_provider.py test_media_safety.py test_roots.py test_cli.py \
	test_ops.py

DEMO_PKGS = pocketsphinx pocketsphinx-en-us pocketsphinx-testdata apertium-eng-spa
DEMO_DIR  = demo-work
CLIPS     = /usr/share/pocketsphinx/test/data/librivox

.PHONY: all deps check unit integration sanitize demo bench install uninstall clean \
	check-build-plain check-build-san check-integration-plain check-integration-san \
	check-integration-pg unit-pg

all: deps
	@$(MAKE) --no-print-directory mpfarm

mpfarm: $(B)/mpfarm
	cp $(B)/mpfarm mpfarm

# Installs only what is missing; silent when everything is there.
deps:
	@missing=""; for p in $(DEB_PKGS) $(EXTRA_PKGS); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(B)/mpfarm: $(OBJS)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(OBJS) $(LIBS)

$(B)/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(WARN) $(CFLAGS) $(PKG_CFLAGS) -c -o $@ $<

$(B)/tests/%: tests/unit/%.c $(LIBOBJS) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(WARN) $(CFLAGS) $(PKG_CFLAGS) -o $@ $< $(LIBOBJS) $(LIBS) -lcmocka

unit: $(UNITBINS)
	@set -e; for t in $(UNITBINS); do echo "== $$t"; $$t; done

# The driver and store unit tests again with a PostgreSQL server up
# (started here in a temporary folder, stopped whatever happens).
unit-pg: $(B)/tests/test_store_db $(B)/tests/test_store_limits
	@d=$$(mktemp -d /tmp/mpfarm-pg-XXXXXX); \
	url=$$(tests/pg_cluster.sh start $$d) || { rm -rf $$d; exit 1; }; \
	echo "== $(B)/tests/test_store_db on PostgreSQL"; \
	MPFARM_TEST_PG="$$url" $(B)/tests/test_store_db; rc=$$?; \
	echo "== $(B)/tests/test_store_limits on PostgreSQL"; \
	MPFARM_TEST_PG="$$url" $(B)/tests/test_store_limits || rc=1; \
	tests/pg_cluster.sh stop $$d; exit $$rc

integration: $(B)/mpfarm
	MPFARM_BIN=$(abspath $(B)/mpfarm) $(PYTEST) -q -x -p no:cacheprovider \
	  --basetemp=$(abspath $(B))/pytest tests/integration $(PYTEST_ARGS)

SAN_MAKE = $(MAKE) --no-print-directory B=build-san CFLAGS="$(SAN_FLAGS)" \
	   LDFLAGS="-fsanitize=address,undefined"
SAN_ENV  = ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=99 \
	   UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# The whole suite twice: the normal build and AddressSanitizer + UBSan in
# build-san/.  Builds and the C tests first; then the two integration
# passes run side by side (most of their time is waiting on processes,
# not CPU), each with its own temp folder, output kept whole per pass.
check: deps
	@$(MAKE) --no-print-directory deps DEB_PKGS="$(TEST_PKGS)"
	@$(MAKE) --no-print-directory -j2 check-build-plain check-build-san
	@$(MAKE) --no-print-directory B=build unit
	@$(MAKE) --no-print-directory B=build unit-pg
	@$(MAKE) --no-print-directory B=build fuzz-replay
	@$(SAN_MAKE) unit
	@$(SAN_ENV) $(SAN_MAKE) fuzz-replay
	@$(MAKE) --no-print-directory -j3 -Otarget check-integration-plain \
	  check-integration-san check-integration-pg

check-build-plain:
	@$(MAKE) --no-print-directory B=build build/mpfarm $(patsubst tests/unit/%.c,build/tests/%,$(UNITSRCS))
check-build-san:
	@$(SAN_MAKE) build-san/mpfarm $(patsubst tests/unit/%.c,build-san/tests/%,$(UNITSRCS))
check-integration-plain:
	@echo "== integration tests, normal build"
	@$(MAKE) --no-print-directory B=build integration
check-integration-san:
	@echo "== integration tests, ASan+UBSan build"
	@$(SAN_ENV) MPFARM_SANITIZED=1 $(SAN_MAKE) integration
check-integration-pg:
	@echo "== integration tests, PostgreSQL store"
	@MPFARM_TEST_STORE=pg MPFARM_BIN=$(abspath build/mpfarm) $(PYTEST) -q -x \
	  -p no:cacheprovider --basetemp=$(abspath build)/pytest-pg $(PG_TESTS)

# The sanitizer pass alone.
sanitize:
	@$(SAN_MAKE) build-san/mpfarm
	@$(SAN_MAKE) unit
	@$(SAN_ENV) $(SAN_MAKE) fuzz-replay
	@$(SAN_ENV) MPFARM_SANITIZED=1 $(SAN_MAKE) integration

# The main job, offline: real speech (LibriVox clips) through pocketsphinx,
# then English -> Spanish through apertium, with the exec provider.
demo: deps
	@$(MAKE) --no-print-directory deps DEB_PKGS="$(DEMO_PKGS)"
	@$(MAKE) --no-print-directory B=build build/mpfarm
	rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	cd $(DEMO_DIR) && ../build/mpfarm --config ../etc/demo.conf scan $(CLIPS)
	cd $(DEMO_DIR) && ../build/mpfarm --config ../etc/demo.conf run
	cd $(DEMO_DIR) && ../build/mpfarm --config ../etc/demo.conf status
	@f=$$(ls $(DEMO_DIR)/output/transcripts/*.txt | head -n 1); \
	  echo "== transcript $$f"; cat "$$f"; \
	  t=$(DEMO_DIR)/output/translations/es/$$(basename "$$f"); \
	  echo "== translation $$t"; cat "$$t"

clean:
	rm -rf build build-san build-fuzz mpfarm $(DEMO_DIR) bench-work

include mk/install.mk

include bench/bench.mk
include tests/fuzz/fuzz.mk
