# tests/fuzz/fuzz.mk - libFuzzer targets (tests/fuzz/fuzz_<target>.c) and
# their saved corpus (tests/fuzz/corpus/<target>/).  Included by the
# Makefile after its variables, like bench/bench.mk.
#   make fuzz                  each target under clang's libFuzzer (+ASan,
#                              UBSan) for FUZZ_SECONDS (60); new inputs go
#                              to build-fuzz/corpus/<target>, crashes to
#                              build-fuzz/crash-<target>-*
#   make fuzz FUZZ_TARGETS=split FUZZ_SECONDS=300
#   make fuzz-replay           every saved input once through a plain build
#                              of each target (part of `make check`, under
#                              the normal and the sanitizer build; no clang)
FUZZ_SECONDS ?= 60
FUZZ_PKGS     = clang
FUZZ_ALL     := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_TARGETS ?= $(FUZZ_ALL)
FUZZ_CFLAGS   = -O1 -g -fsanitize=fuzzer-no-link,address,undefined \
		-fno-omit-frame-pointer -fno-sanitize-recover=all
FUZZ_REPLAYS  = $(patsubst %,$(B)/fuzz/replay_%,$(FUZZ_ALL))

.PHONY: fuzz fuzz-replay fuzz-bins

$(B)/fuzz/replay_%: tests/fuzz/fuzz_%.c tests/fuzz/replay_main.c $(LIBOBJS) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(WARN) $(CFLAGS) $(PKG_CFLAGS) $(LDFLAGS) -o $@ \
	  $< tests/fuzz/replay_main.c $(LIBOBJS) $(LIBS)

fuzz-replay: $(FUZZ_REPLAYS)
	@set -e; for t in $(FUZZ_ALL); do \
	  $(B)/fuzz/replay_$$t tests/fuzz/corpus/$$t; done

# libFuzzer binaries: the objects are built by clang with coverage in
# build-fuzz/ (B=build-fuzz), so they never mix with build/.
$(B)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(LIBOBJS) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(WARN) $(CFLAGS) $(PKG_CFLAGS) -fsanitize=fuzzer \
	  -o $@ $< $(LIBOBJS) $(LIBS)

fuzz-bins: $(patsubst %,$(B)/fuzz/fuzz_%,$(FUZZ_TARGETS))

fuzz:
	@$(MAKE) --no-print-directory deps DEB_PKGS="$(FUZZ_PKGS)"
	@$(MAKE) --no-print-directory B=build-fuzz CC=clang CFLAGS="$(FUZZ_CFLAGS)" \
	  LDFLAGS="-fsanitize=address,undefined" FUZZ_TARGETS="$(FUZZ_TARGETS)" fuzz-bins
	@set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p build-fuzz/corpus/$$t; \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
	  ASAN_OPTIONS=detect_leaks=1 build-fuzz/fuzz/fuzz_$$t \
	    -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -max_len=65536 \
	    -timeout=10 -artifact_prefix=build-fuzz/crash-$$t- -print_final_stats=1 \
	    build-fuzz/corpus/$$t tests/fuzz/corpus/$$t; \
	done
