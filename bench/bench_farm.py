#!/usr/bin/python3
"""bench_farm.py - the driver of `make bench`: what the farm costs.

It owns the benchmark's method, so that the README's figures can be
reproduced with one command:

  1. Throughput, noop provider, transcribe stage, on tmpfs (/dev/shm) so
     the farm is measured rather than the shared disk, contenders run
     alternately a, b, c, a, b, c ...:
       (a) mpfarm run --workers 5
       (b) the older tooling's design rebuilt (bench/baseline_threads.py):
           a Python pool of 5 threads, thread-local sqlite3 connections
       (c) the single-process floor (bench/bench_floor.c): the same store
           and provider code in one C loop, no fork, no IPC
       (d) the physical floor (bench/bench_min.c): one C process, one
           table, per job only claim + the two outputs + complete
     Only the run is timed (not the scan or the set-up).  Targets:
     a >= 3x b and a >= 100% of d (and the older a >= 75% of c).  Then
     (after 2) the same four on the real disk, for the README.
  2. Scaling: mpfarm at 1, 2, 5, 8 workers beside as many floor processes
     sharing one database (what the SQLite writers cost without the farm).
  3. Per-worker private memory (USS, /proc/PID/smaps_rollup), idle and
     after work; target <= 1 MiB idle.
  4. Respawn latency, SIGKILL of a worker to its replacement's READY (from
     the master's debug log); target median <= 50 ms.
  5. Optional: provider goodput against tests/fake_provider.py under a
     farm-wide rate limit (bench/bench_provider.py), when that file exists.

Targets are printed as PASS/MISS; nothing here fails the build.  Each
timed run also reports its CPU time (user+sys of the process and the
children it reaped) and the CPU other processes used meanwhile ("other"),
because a shared box makes wall-clock figures noisy.
"""

import argparse
import datetime
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BASELINE = os.path.join(HERE, "baseline_threads.py")
PY = "/usr/bin/python3"

FARM_CONF = """\
# written by bench/bench_farm.py
[farm]
fetch_size = {fetch}
[transcribe]
provider = noop
[translate]
provider = noop
[noop]
delay_ms = {delay}
"""

TARGET_VS_BASELINE = 3.0
TARGET_VS_FLOOR = 0.75
TARGET_VS_MIN = 1.0
TARGET_USS_KIB = 1024
TARGET_RESPAWN_MS = 50.0


def say(*a):
    print(*a, flush=True)


# ---- set-up -------------------------------------------------------------

def make_media(root, n, per_dir=1000):
    """n empty .wav files in folders of per_dir: an archive's shape."""
    os.makedirs(root, exist_ok=True)
    flags = os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC
    for d in range((n + per_dir - 1) // per_dir):
        sub = os.path.join(root, "d%03d" % d)
        os.makedirs(sub, exist_ok=True)
        for i in range(d * per_dir, min(n, (d + 1) * per_dir)):
            os.close(os.open(os.path.join(sub, "f%06d.wav" % i), flags, 0o644))


def write_conf(rundir, delay=0, extra="", fetch=50):
    with open(os.path.join(rundir, "mpfarm.conf"), "w") as f:
        f.write(FARM_CONF.format(delay=delay, fetch=fetch) + extra)


def check_call(argv, cwd, what):
    p = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise RuntimeError("%s failed (exit %d): %s" % (
            what, p.returncode, (p.stderr or p.stdout).strip()[-500:]))
    return p.stdout


def farm_status(mpfarm, rundir):
    out = check_call([mpfarm, "status", "--json", "--config", "mpfarm.conf"],
                     rundir, "mpfarm status")
    return json.loads(out)


# ---- timing ----------------------------------------------------------

def cpu_busy_s():
    """Seconds of busy CPU, all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)
    return busy / os.sysconf("SC_CLK_TCK")


def timed(argv, cwd, log_path):
    """Run argv to completion: (exit code, wall s, own+children CPU s,
    CPU s others used meanwhile)."""
    with open(log_path, "ab") as log:
        busy0 = cpu_busy_s()
        t0 = time.monotonic()
        p = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=log)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
        busy1 = cpu_busy_s()
        p.returncode = os.waitstatus_to_exitcode(status)
    cpu = ru.ru_utime + ru.ru_stime
    return p.returncode, wall, cpu, max(0.0, (busy1 - busy0) - cpu)


class Contender:
    def __init__(self, key, name, args):
        self.key, self.name, self.args = key, name, args
        self.runs = []          # dicts: rate, wall, cpu, other, ok

    def prepare(self, rundir, media):
        raise NotImplementedError

    def argv(self):
        raise NotImplementedError

    def verify(self, rundir):
        raise NotImplementedError

    def run_once(self, workroot, media, tag):
        rundir = os.path.join(workroot, "run-%s-%s" % (self.key, tag))
        shutil.rmtree(rundir, ignore_errors=True)
        os.makedirs(rundir)
        try:
            self.prepare(rundir, media)
            os.sync()
            rc, wall, cpu, other = timed(self.argv(), rundir,
                                         os.path.join(rundir, "run.log"))
            done = self.verify(rundir) if rc == 0 else 0
            ok = rc == 0 and done == self.args.files
            if not ok:
                with open(os.path.join(rundir, "run.log"), "rb") as f:
                    tail = f.read()[-600:].decode(errors="replace")
                say("   !! %s: exit %d, %d of %d jobs completed\n%s" % (
                    self.name, rc, done, self.args.files, tail))
            r = {"rate": done / wall if wall > 0 else 0.0, "wall": wall,
                 "cpu": cpu, "other": other, "ok": ok, "jobs": done}
            self.runs.append(r)
            return r
        finally:
            if self.args.keep:
                pass
            elif self.args.defer_cleanup:
                # ext4: creating files right after deleting tens of
                # thousands makes its inode allocator skip the recently
                # deleted ones one by one (recently_deleted() in
                # find_inode_bit); the next contender would pay for
                # this one's clean-up.  So on disk, clean up at the end.
                self.args.defer_cleanup.append(rundir)
            else:
                shutil.rmtree(rundir, ignore_errors=True)


class FarmLike(Contender):
    """mpfarm and the floor share the set-up: scan, then the timed run."""

    def prepare(self, rundir, media):
        write_conf(rundir, fetch=self.args.batch_size)
        check_call([self.args.mpfarm, "scan", "--config", "mpfarm.conf",
                    media], rundir, "mpfarm scan")

    def verify(self, rundir):
        st = farm_status(self.args.mpfarm, rundir)
        return int(st["stages"]["transcribe"]["completed"])


class Farm(FarmLike):
    def argv(self):
        a = self.args
        return [a.mpfarm, "run", "--config", "mpfarm.conf", "--workers",
                str(a.workers), "--stage", "transcribe"]


class FarmN(Farm):
    """mpfarm with a given number of workers (the scaling table)."""

    def __init__(self, key, name, args, workers):
        super().__init__(key, name, args)
        self.workers = workers

    def argv(self):
        a = self.args
        return [a.mpfarm, "run", "--config", "mpfarm.conf", "--workers",
                str(self.workers), "--stage", "transcribe"]


class FloorShards(FarmLike):
    """n floor processes side by side on one database, each taking the
    jobs with job_id % n == i (BENCH_FLOOR_SHARD): the farm's database
    work by n writers, without master or IPC."""

    def __init__(self, key, name, args, n):
        super().__init__(key, name, args)
        self.n = n

    def argv(self):
        a = self.args
        script = ('pids=""; for i in $(seq 0 %d); do BENCH_FLOOR_SHARD=$i/%d '
                  '"$0" run --config mpfarm.conf --stage '
                  'transcribe & pids="$pids $!"; done; rc=0; '
                  'for p in $pids; do wait $p || rc=1; done; exit $rc' % (
                      self.n - 1, self.n))
        return ["/bin/sh", "-c", script, a.floor]


class Floor(FarmLike):
    def argv(self):
        a = self.args
        return [a.floor, "run", "--config", "mpfarm.conf", "--stage",
                "transcribe"]


class MinFloor(Contender):
    """bench/bench_min.c: the physical floor (one table, claim, two
    outputs, complete)."""

    def prepare(self, rundir, media):
        check_call([self.args.min, "init", "min.db", media], rundir,
                   "bench_min init")

    def argv(self):
        return [self.args.min, "run", "min.db", "output",
                str(self.args.batch_size)]

    def verify(self, rundir):
        db = sqlite3.connect(os.path.join(rundir, "min.db"))
        n = db.execute("SELECT count(*) FROM jobs WHERE "
                       "status = 'completed'").fetchone()[0]
        db.close()
        return n


class Baseline(Contender):
    def prepare(self, rundir, media):
        check_call([PY, BASELINE, "init", "media_tracking.db", media],
                   rundir, "baseline init")

    def argv(self):
        a = self.args
        return [PY, BASELINE, "run", "media_tracking.db", "output",
                "--workers", str(a.workers), "--batch-size",
                str(a.batch_size)]

    def verify(self, rundir):
        db = sqlite3.connect(os.path.join(rundir, "media_tracking.db"))
        n = db.execute("SELECT count(*) FROM media_files WHERE "
                       "transcription_status = 'completed'").fetchone()[0]
        db.close()
        return n


def median_of(runs, key):
    vals = [r[key] for r in runs if r["ok"]]
    return statistics.median(vals) if vals else 0.0


def verdict(ok):
    return "PASS" if ok else "MISS"


def throughput(args, where, workroot, rounds):
    """Alternating rounds of a, b, c, d; returns the contenders."""
    media = os.path.join(workroot, "media")
    t0 = time.monotonic()
    make_media(media, args.files)
    say("   %d empty .wav files in %s (%.1f s, untimed)" % (
        args.files, media, time.monotonic() - t0))
    cs = [Farm("a", "mpfarm --workers %d" % args.workers, args),
          Baseline("b", "python threads x%d" % args.workers, args),
          Floor("c", "C floor (1 process)", args),
          MinFloor("d", "physical floor (1 table)", args)]
    for rnd in range(1, rounds + 1):
        for c in cs:
            r = c.run_once(workroot, media, "%s%d" % (where, rnd))
            say("   round %d  %-22s %8.0f jobs/s  %6.2f s wall  %5.2f s cpu"
                "  other %4.2f s%s" % (rnd, c.name, r["rate"], r["wall"],
                                      r["cpu"], r["other"],
                                      "" if r["ok"] else "  INVALID"))
    shutil.rmtree(media, ignore_errors=True)
    return cs


def print_throughput(title, cs, args):
    a = cs[0]
    say("")
    say("%s: noop transcribe, %d files, %d workers, batch %d, "
        "median of %d" % (title, args.files, args.workers, args.batch_size,
                          len(a.runs)))
    say("  %-24s %10s %12s %10s %12s" % ("contender", "jobs/s", "range",
                                          "cpu us/job", "cpu cores"))
    for x in cs:
        ok = [r for r in x.runs if r["ok"]]
        rates = [r["rate"] for r in ok]
        rng = "%.0f-%.0f" % (min(rates), max(rates)) if rates else "-"
        cpu_job = statistics.median(
            [r["cpu"] / r["jobs"] * 1e6 for r in ok]) if ok else 0
        cores = statistics.median([r["cpu"] / r["wall"] for r in ok]) \
            if ok else 0
        say("  (%s) %-20s %10.0f %12s %10.1f %12.2f" % (
            x.key, x.name, median_of(x.runs, "rate"), rng, cpu_job, cores))
    ra, rb, rc, rd = (median_of(x.runs, "rate") for x in cs)
    vs_b = ra / rb if rb else 0.0
    vs_c = ra / rc if rc else 0.0
    vs_d = ra / rd if rd else 0.0
    say("  a / b = %.2fx   (target >= %.1fx)   %s" % (
        vs_b, TARGET_VS_BASELINE, verdict(vs_b >= TARGET_VS_BASELINE)))
    say("  a / c = %.0f%%    (target >= %.0f%%)   %s" % (
        vs_c * 100, TARGET_VS_FLOOR * 100, verdict(vs_c >= TARGET_VS_FLOOR)))
    say("  a / d = %.0f%%    (target >= %.0f%%)   %s" % (
        vs_d * 100, TARGET_VS_MIN * 100, verdict(vs_d >= TARGET_VS_MIN)))
    return {"a": ra, "b": rb, "c": rc, "d": rd, "a_over_b": vs_b,
            "a_over_c": vs_c, "a_over_d": vs_d}


def scaling(args, workroot):
    """mpfarm alone at several worker counts: does the farm use the
    cores?  (One run each, so read it as a shape, not a figure.)"""
    media = os.path.join(workroot, "media-scaling")
    make_media(media, args.files)
    say("")
    say("Scaling on tmpfs, %d files, one run per cell: mpfarm --workers N, "
        "and N floor processes" % args.files)
    say("sharing the database with no master and no IPC (what N SQLite "
        "writers cost by themselves)")
    say("  %-4s | %-30s | %-30s" % ("N", "mpfarm: jobs/s  cpu us/job  cores",
                                     "N floors: jobs/s  cpu us/job  cores"))
    out = {}

    def cell(r):
        return "%14.0f %11.1f %6.2f%s" % (
            r["rate"], r["cpu"] / max(1, r["jobs"]) * 1e6,
            r["cpu"] / r["wall"] if r["wall"] else 0,
            "" if r["ok"] else " INVALID")
    for w in args.scaling:
        ra = FarmN("a%d" % w, "mpfarm --workers %d" % w, args, w).run_once(
            workroot, media, "scale")
        rc = FloorShards("c%d" % w, "%d floors" % w, args, w).run_once(
            workroot, media, "scale")
        out[w] = {"mpfarm": ra["rate"], "floors": rc["rate"]}
        say("  %-4d | %-30s | %-30s" % (w, cell(ra), cell(rc)))
    shutil.rmtree(media, ignore_errors=True)
    return out


def create_probe(root, n=5000):
    """Microseconds to create one empty file here (a fresh folder)."""
    d = os.path.join(root, "probe-%d" % os.getpid())
    os.makedirs(d)
    flags = os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC
    t0 = time.monotonic()
    for i in range(n):
        os.close(os.open(os.path.join(d, "p%05d" % i), flags, 0o644))
    return (time.monotonic() - t0) / n * 1e6, d


# ---- the master's log ------------------------------------------------

LOG_RE = re.compile(r"^ts=(\S+)Z .*?event=(\S+)(.*)$")


def log_ts_ms(ts):
    d = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%f")
    return d.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000.0


class FarmLog:
    """Follows a farm's --log-file: which pid holds each slot, which of
    them sent READY, and when."""

    def __init__(self, path):
        self.path, self.pos, self.buf = path, 0, b""
        self.slot_pid = {}      # slot -> pid of its latest worker
        self.ready = {}         # pid -> ready ts (ms)
        self.spawned = {}       # pid -> (slot, spawn ts ms)

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return
        self.pos += len(data)
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for raw in lines:
            m = LOG_RE.match(raw.decode(errors="replace"))
            if not m:
                continue
            ts, ev, rest = log_ts_ms(m.group(1)), m.group(2), m.group(3)
            if ev not in ("worker_spawn", "worker_ready"):
                continue
            kv = dict(re.findall(r"(\w+)=(\S+)", rest))
            slot, pid = int(kv["slot"]), int(kv["worker_pid"])
            if ev == "worker_spawn":
                self.slot_pid[slot] = pid
                self.spawned[pid] = (slot, ts)
            else:
                self.ready[pid] = ts

    def all_ready(self, n):
        self.poll()
        return len(self.slot_pid) >= n and all(
            self.slot_pid.get(s) in self.ready for s in range(n))

    def wait(self, cond, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.poll()
            if cond():
                return True
            time.sleep(0.002)
        return False


class LiveFarm:
    """An `mpfarm run --watch` we started, with its log followed."""

    def __init__(self, args, rundir, workers):
        self.args, self.rundir, self.workers = args, rundir, workers
        self.logpath = os.path.join(rundir, "farm.log")
        self.log = FarmLog(self.logpath)
        self.proc = subprocess.Popen(
            [args.mpfarm, "run", "--config", "mpfarm.conf", "--watch",
             "--check-interval", "1", "--workers", str(workers),
             "--stage", "transcribe", "--log-level", "debug",
             "--log-file", self.logpath],
            cwd=rundir, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(rundir, "farm.stderr"), "wb"))
        if not self.log.wait(lambda: self.log.all_ready(workers)
                             or self.proc.poll() is not None, 15):
            self.stop()
            raise RuntimeError("the farm's workers did not all get ready")
        if self.proc.poll() is not None:
            raise RuntimeError("the farm exited at start (exit %d), see %s"
                               % (self.proc.returncode, self.logpath))

    def worker_pids(self):
        self.log.poll()
        return [self.log.slot_pid[s] for s in range(self.workers)]

    def kill_and_time(self, slot, timeout=5.0):
        """SIGKILL the worker in slot; (ms to spawn, ms to READY) of its
        replacement, or None on timeout."""
        self.log.poll()
        old = self.log.slot_pid[slot]
        t0 = time.time() * 1000.0
        os.kill(old, signal.SIGKILL)

        def replaced():
            p = self.log.slot_pid.get(slot)
            return p != old and p in self.log.ready
        if not self.log.wait(replaced, timeout):
            return None
        new = self.log.slot_pid[slot]
        return (self.log.spawned[new][1] - t0, self.log.ready[new] - t0)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def jitter_sleep(ms):
    """ms plus a random 0-200 ms: the kills must not phase-lock with the
    master's periodic timers, or every kill measures the same offset."""
    time.sleep((ms + random.uniform(0, 200)) / 1000.0)


def smaps(pid):
    """(RSS, PSS, USS) in KiB from /proc/PID/smaps_rollup."""
    v = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[-1] == "kB":
                v[parts[0].rstrip(":")] = int(parts[1])
    uss = v.get("Private_Clean", 0) + v.get("Private_Dirty", 0) + \
        v.get("Private_Hugetlb", 0)
    return v.get("Rss", 0), v.get("Pss", 0), uss


def mem_line(label, pids):
    vals = [smaps(p) for p in pids]
    uss = [u for _, _, u in vals]
    say("  %-34s USS %5d-%5d KiB (median %5d)  PSS median %5d  RSS median "
        "%5d" % (label, min(uss), max(uss), statistics.median(uss),
                 statistics.median([p for _, p, _ in vals]),
                 statistics.median([r for r, _, _ in vals])))
    return statistics.median(uss), max(uss)


def pct(vals, q):
    s = sorted(vals)
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def respawn_line(label, lat):
    if not lat:
        say("  %-34s no replacement got ready" % label)
        return None
    spawn = [s for s, _ in lat]
    ready = [r for _, r in lat]
    med = statistics.median(ready)
    say("  %-34s n=%2d  kill->READY median %6.1f ms  p90 %6.1f  max %6.1f"
        "   (kill->fork median %5.1f, fork->READY median %4.1f)" % (
            label, len(ready), med, pct(ready, 0.9), max(ready),
            statistics.median(spawn),
            statistics.median([r - s for s, r in lat])))
    return med


def memory_and_respawn(args, workroot):
    """Farm 1: nothing to do (idle USS, idle kills), then 20 000 jobs
    (USS after work).  Farm 2: busy workers (noop delay) killed one after
    another, the respawn figure of record."""
    res = {}
    empty = os.path.join(workroot, "media-empty")
    os.makedirs(empty, exist_ok=True)
    media = os.path.join(workroot, "media-mem")
    make_media(media, args.files)

    rundir = os.path.join(workroot, "farm-idle")
    os.makedirs(rundir, exist_ok=True)
    write_conf(rundir)
    check_call([args.mpfarm, "scan", "--config", "mpfarm.conf", empty],
               rundir, "mpfarm scan")
    farm = LiveFarm(args, rundir, args.workers)
    try:
        say("")
        say("Memory: %d workers of `mpfarm run --watch`" % args.workers)
        time.sleep(0.5)
        res["uss_idle"], res["uss_idle_max"] = mem_line(
            "idle, nothing to do", farm.worker_pids())
        mem_line("(master)", [farm.proc.pid])
        idle_lat = []
        for s in range(args.workers):
            r = farm.kill_and_time(s)
            if r is not None:
                idle_lat.append(r)
            jitter_sleep(100)
        time.sleep(0.3)
        check_call([args.mpfarm, "scan", "--config", "mpfarm.conf", media],
                   rundir, "mpfarm scan")
        end = time.monotonic() + 120
        while time.monotonic() < end:
            st = farm_status(args.mpfarm, rundir)
            if st["stages"]["transcribe"]["completed"] >= args.files:
                break
            time.sleep(0.2)
        time.sleep(0.3)
        res["uss_work"], _ = mem_line(
            "idle after %d jobs" % args.files, farm.worker_pids())
        mem_line("(master)", [farm.proc.pid])
        say("  target: worker USS <= %d KiB idle   %s" % (
            TARGET_USS_KIB, verdict(res["uss_idle_max"] <= TARGET_USS_KIB)))
    finally:
        farm.stop()

    rundir = os.path.join(workroot, "farm-busy")
    os.makedirs(rundir, exist_ok=True)
    write_conf(rundir, delay=args.respawn_delay_ms)
    check_call([args.mpfarm, "scan", "--config", "mpfarm.conf", media],
               rundir, "mpfarm scan")
    farm = LiveFarm(args, rundir, args.workers)
    busy_lat = []
    try:
        time.sleep(0.3)
        for k in range(args.kills):
            r = farm.kill_and_time(k % args.workers)
            if r is not None:
                busy_lat.append(r)
            jitter_sleep(args.kill_gap_ms)
    finally:
        farm.stop()
    say("")
    say("Respawn latency: SIGKILL of a worker -> replacement READY "
        "(master's debug log, ms)")
    res["respawn_busy"] = respawn_line(
        "busy (noop %d ms), %d kills" % (args.respawn_delay_ms, args.kills),
        busy_lat)
    res["respawn_idle"] = respawn_line(
        "idle, first kill of each slot", idle_lat)
    if res["respawn_busy"] is not None:
        say("  target: median <= %.0f ms   %s" % (
            TARGET_RESPAWN_MS,
            verdict(res["respawn_busy"] <= TARGET_RESPAWN_MS)))
    if len(busy_lat) < args.kills:
        say("  !! %d of %d kills got no ready replacement within 5 s" % (
            args.kills - len(busy_lat), args.kills))
    if not args.keep:
        shutil.rmtree(media, ignore_errors=True)
    return res


# ---- main -------------------------------------------------------------

def snapshot_binaries(args, bindir):
    """Run private copies: a rebuild of build/ during the bench (others
    edit and build the tree) must not swap or half-write the binaries."""
    os.makedirs(bindir, exist_ok=True)
    for attr in ("mpfarm", "floor", "min"):
        src = getattr(args, attr)
        dst = os.path.join(bindir, os.path.basename(src))
        for attempt in range(20):
            try:
                shutil.copy2(src, dst)
                subprocess.run([dst, "--version"], check=True,
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
                break
            except (OSError, subprocess.CalledProcessError):
                if attempt == 19:
                    raise
                time.sleep(1)
        setattr(args, attr, dst)


def environment():
    import platform
    try:
        sq = subprocess.run(["sqlite3", "--version"], stdout=subprocess.PIPE,
                            text=True).stdout.split()[0]
    except (OSError, IndexError):
        sq = "?"
    say("mpfarm bench: %d CPUs, Linux %s, SQLite %s, Python %s, load %s" % (
        os.cpu_count(), platform.release(), sq, platform.python_version(),
        " ".join("%.2f" % x for x in os.getloadavg())))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mpfarm", default=os.path.join(REPO, "build/mpfarm"))
    ap.add_argument("--floor", default=os.path.join(REPO, "build/bench_floor"))
    ap.add_argument("--min", default=os.path.join(REPO, "build/bench_min"))
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=50,
                    help="the older design's batch, and how many jobs the "
                    "floors take from the database at once (mpfarm's "
                    "fetch_size, default 50)")
    ap.add_argument("--rounds", type=int, default=5,
                    help="alternating rounds on tmpfs (default 5)")
    ap.add_argument("--disk-rounds", type=int, default=3)
    ap.add_argument("--no-disk", action="store_true")
    ap.add_argument("--tmpfs", default="/dev/shm")
    ap.add_argument("--disk-dir", default=os.path.join(REPO, "bench-work"))
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--kill-gap-ms", type=int, default=250)
    ap.add_argument("--respawn-delay-ms", type=int, default=100,
                    help="noop delay of the busy farm whose workers are killed")
    ap.add_argument("--scaling", default="1,2,5,8",
                    help="worker counts of the scaling table ('' = none)")
    ap.add_argument("--provider-files", type=int, default=300)
    ap.add_argument("--only", default="throughput,scaling,disk,memory,provider",
                    help="comma list of parts to run")
    ap.add_argument("--provider-wait", type=float, default=0,
                    help="seconds to wait for tests/fake_provider.py")
    ap.add_argument("--keep", action="store_true", help="keep work folders")
    args = ap.parse_args()
    args.mpfarm = os.path.abspath(args.mpfarm)
    args.floor = os.path.abspath(args.floor)
    args.min = os.path.abspath(args.min)
    only = set(args.only.split(","))
    args.scaling = [int(x) for x in args.scaling.split(",") if x.strip()]
    for p in (args.mpfarm, args.floor, args.min):
        if not os.access(p, os.X_OK):
            sys.exit("bench: %s is missing (make B=build build/mpfarm "
                     "build/bench_floor build/bench_min)" % p)

    t_start = time.monotonic()
    environment()
    summary = {}
    args.defer_cleanup = None
    shm = os.path.join(args.tmpfs, "mpfarm-bench-%d" % os.getpid())
    try:
        snapshot_binaries(args, os.path.join(shm, "bin"))
        if "throughput" in only:
            say("")
            say("Throughput on tmpfs (%s), alternating a, b, c, d:" % shm)
            os.makedirs(shm, exist_ok=True)
            cs = throughput(args, "shm", shm, args.rounds)
            summary["tmpfs"] = print_throughput("Throughput on tmpfs", cs, args)
        if "scaling" in only and args.scaling:
            os.makedirs(shm, exist_ok=True)
            summary["scaling"] = scaling(args, shm)
        if "disk" in only and not args.no_disk:
            disk = os.path.join(args.disk_dir, "run-%d" % os.getpid())
            os.makedirs(disk, exist_ok=True)
            say("")
            say("Throughput on the real disk (%s), alternating a, b, c, d:" % disk)
            os.makedirs(shm, exist_ok=True)
            us_shm, _ = create_probe(shm)
            us_disk, _ = create_probe(disk)
            say("   creating an empty file: %.0f us here, %.0f us on tmpfs.  "
                "(ext4 skips inodes freed" % (us_disk, us_shm))
            say("   in the last ~50 min one by one, so mass deletions on this "
                "file system, ours included,")
            say("   slow every creation down for a while: read these figures "
                "with that one.)")
            args.defer_cleanup = [disk]
            try:
                cs = throughput(args, "disk", disk, args.disk_rounds)
                summary["disk"] = print_throughput(
                    "Throughput on the real disk", cs, args)
            finally:
                args.defer_cleanup = None
                if not args.keep:
                    shutil.rmtree(disk, ignore_errors=True)
                    try:
                        os.rmdir(args.disk_dir)     # only if empty
                    except OSError:
                        pass
        if "memory" in only:
            os.makedirs(shm, exist_ok=True)
            summary["memory"] = memory_and_respawn(args, shm)
        if "provider" in only:
            fake = os.path.join(REPO, "tests", "fake_provider.py")
            end = time.monotonic() + args.provider_wait
            while not os.path.exists(fake) and time.monotonic() < end:
                time.sleep(5)
            prov = os.path.join(HERE, "bench_provider.py")
            say("")
            if not os.path.exists(fake):
                say("Provider bench: skipped (tests/fake_provider.py absent)")
            elif not os.path.exists(prov):
                say("Provider bench: skipped (bench/bench_provider.py absent)")
            else:
                subprocess.run([PY, prov, "--mpfarm", args.mpfarm,
                                "--fake", fake, "--workdir", shm,
                                "--files", str(args.provider_files)])
    finally:
        if not args.keep:
            shutil.rmtree(shm, ignore_errors=True)
    say("")
    say("bench done in %.0f s, load %s" % (
        time.monotonic() - t_start,
        " ".join("%.2f" % x for x in os.getloadavg())))
    if os.environ.get("BENCH_JSON"):
        with open(os.environ["BENCH_JSON"], "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
