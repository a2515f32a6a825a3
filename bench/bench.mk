# bench/bench.mk - `make bench`: the throughput, memory and respawn
# benchmark of issue "bench" (bench/bench_farm.py drives it).  Kept in its
# own fragment so the bench's files stay under bench/; the Makefile
# includes it after its variables (B, LIBOBJS, HDRS, LIBS ...) and after
# `all`, so that `all` stays the default goal.
#   make bench                     everything, 5 000 files (about 2 min on
#                                  2 cores)
#   make bench BENCH_FILES=20000   the figures of record (README), about
#                                  4 min
#   make bench BENCH_ARGS="--rounds 1 --no-disk --only throughput"
#                                  quicker still
BENCH_FILES ?= 5000
BENCH_ARGS ?=

$(B)/bench_%: bench/bench_%.c $(LIBOBJS) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(WARN) $(CFLAGS) $(PKG_CFLAGS) -o $@ $< $(LIBOBJS) $(LIBS)

bench: $(B)/mpfarm $(B)/bench_floor $(B)/bench_min $(B)/bench_split
	/usr/bin/python3 bench/bench_farm.py --mpfarm $(abspath $(B)/mpfarm) \
	  --floor $(abspath $(B)/bench_floor) --min $(abspath $(B)/bench_min) \
	  --files $(BENCH_FILES) $(BENCH_ARGS)
	/usr/bin/python3 bench/bench_upload.py --mpfarm $(abspath $(B)/mpfarm)
	/usr/bin/python3 bench/bench_hostile.py --mpfarm $(abspath $(B)/mpfarm)
	$(B)/bench_split

# The many-hosts part (bench/bench_pg.py): mpfarm with 1-3 masters on one
# PostgreSQL database beside pgbench's floor and mpfarm on SQLite, and the
# API-bound goodput of 3 masters under one farm-wide rate limit.  About 1
# minute on 2 cores; steadier: make bench-pg PG_BENCH_ARGS="--files 15000 --rounds 3"
PG_BENCH_ARGS ?=

bench-pg: $(B)/mpfarm
	/usr/bin/python3 bench/bench_pg.py --mpfarm $(abspath $(B)/mpfarm) \
	  $(PG_BENCH_ARGS)

bench: bench-pg

.PHONY: bench-pg
