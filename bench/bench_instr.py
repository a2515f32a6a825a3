#!/usr/bin/python3
"""bench_instr.py - instructions per job, the figure to compare store
variants by on a shared machine (wall time there swings with what the
neighbours run; counted instructions do not).

Runs under callgrind (user-space instructions, every process of the run:
with --trace-children the master and each worker count too):

  (a) mpfarm run --workers N     the whole farm
  (c) bench/bench_floor.c        mpfarm's store code in one process
  (d) bench/bench_min.c          the physical floor, one table

on the same empty files (tmpfs), set-up uncounted, and prints the
marginal instructions per job of each: (Ir of a run over N files - Ir of
a run over N/4) / (3N/4), which leaves out what a run pays once (dynamic
linking, opening the store, forking; callgrind also hands each forked
worker a copy of its parent's counts so far).  For (c) it also splits
the figure by store function.  Kernel work (the file system) is not
counted: `make bench` shows that side.

    bench_instr.py [--files 2000] [--only a,c,d] [--keep]

Needs valgrind.  Slow (~50x): keep --files small.
"""

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import bench_farm  # noqa: E402  (make_media, write_conf, check_call)


def callgrind(argv, cwd, tag):
    out = os.path.join(cwd, "cg.%s.%%p" % tag)
    subprocess.run(["valgrind", "--tool=callgrind", "--trace-children=yes",
                    "--callgrind-out-file=" + out] + argv, cwd=cwd,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)
    total = 0
    files = glob.glob(os.path.join(cwd, "cg.%s.*" % tag))
    for f in files:
        with open(f) as fh:
            for line in fh:
                if line.startswith("summary:") or line.startswith("totals:"):
                    total += int(line.split()[1])
                    break
    return total, files


def shares(files):
    """(sqlite Ir, mpfarm store Ir) from callgrind_annotate's inclusive
    figures of the floor's one process."""
    p = subprocess.run(["callgrind_annotate", "--inclusive=yes"] + files,
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                       text=True)
    inc = {}
    for line in p.stdout.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(.*?\)\s+\S*:(\S+)", line)
        if m:
            inc.setdefault(m.group(2), int(m.group(1).replace(",", "")))
    return inc


def run_one(args, key, root, media, n):
    """(total Ir, {function: inclusive Ir}) of contender key over n files."""
    run = os.path.join(root, "run-%s-%d" % (key, n))
    os.makedirs(run)
    if key == "d":
        bench_farm.check_call([args.min, "init", "min.db", media], run,
                              "bench_min init")
        argv = [args.min, "run", "min.db", "output"]
    else:
        bench_farm.write_conf(run)
        bench_farm.check_call([args.mpfarm, "scan", "--config",
                               "mpfarm.conf", media], run, "scan")
        argv = ([args.mpfarm, "run", "--workers", str(args.workers)]
                if key == "a" else [args.floor, "run"]) + [
            "--config", "mpfarm.conf", "--stage", "transcribe"]
    ir, files = callgrind(argv, run, key)
    return ir, (shares(files) if key == "c" else {})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mpfarm", default=os.path.join(REPO, "build/mpfarm"))
    ap.add_argument("--floor", default=os.path.join(REPO, "build/bench_floor"))
    ap.add_argument("--min", default=os.path.join(REPO, "build/bench_min"))
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=5)
    ap.add_argument("--only", default="a,c,d")
    ap.add_argument("--tmpfs", default="/dev/shm")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    only = set(args.only.split(","))
    root = os.path.join(args.tmpfs, "mpfarm-instr-%d" % os.getpid())
    big, small = args.files, max(1, args.files // 4)
    media = {}
    for n in (small, big):
        media[n] = os.path.join(root, "media-%d" % n)
        bench_farm.make_media(media[n], n)
    try:
        for key, name in (("a", "mpfarm --workers %d" % args.workers),
                          ("c", "C floor (mpfarm's store)"),
                          ("d", "physical floor (1 table)")):
            if key not in only:
                continue
            ir1, inc1 = run_one(args, key, root, media[small], small)
            ir2, inc2 = run_one(args, key, root, media[big], big)
            per = float(big - small)
            line = "(%s) %-28s %9.0f Ir/job" % (key, name, (ir2 - ir1) / per)
            if key == "c":
                line += "   " + ", ".join(
                    "%s %.0f" % (label, (inc2.get(f, 0) - inc1.get(f, 0)) / per)
                    for label, f in (("sqlite3_step", "sqlite3_step"),
                                     ("claim", "store_job_claim"),
                                     ("complete", "store_job_complete"),
                                     ("fetch", "store_runnable_fetch")))
            print(line, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
