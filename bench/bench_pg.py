#!/usr/bin/python3
"""bench_pg.py - the many-hosts part of `make bench`: what one PostgreSQL
database gives several masters, against what it could give.

On a throwaway cluster (tests/pg_cluster.sh: its own socket, no TCP),
media and databases on tmpfs (/dev/shm) so the store is measured rather
than the shared disk, noop provider, transcribe stage, side by side in one
run:

  (a) mpfarm: 1, 2 and 3 masters of --workers 4 started together on one
      PostgreSQL database (each its own "host"), timed from their start to
      the last one's exit: jobs/s;
  (b) the floor: pgbench with as many clients (4, 8, 12) running the
      per-job SQL on the same schema (claim with FOR UPDATE SKIP LOCKED
      and a lease from the sequence returning the file's paths, then the
      attempt row, the fenced completion and the translations made ready
      in one transaction), nothing else: jobs/s;
  (c) mpfarm on SQLite: one master of --workers 4 on a file.

Target: (a) >= 80% of (b) at every host count.  Then the API-bound case:
3 masters of --workers 4 against one tests/fake_provider.py playing
ElevenLabs with 100 ms latency and the service's limits (20 requests/s,
4 at once, 429 with Retry-After beyond them), each master configured with
the same rate = 20 and max_concurrency = 4 (held farm-wide through the
database): goodput >= 95% of the limit and <= 1% answered 429, across all
hosts together.  Goodput is completed requests per second between the
first request and the end of the last (start-up and shutdown aside).

  bench_pg.py --mpfarm build/mpfarm [--files 3000] [--rounds 1]
              [--goodput-files 300]
Targets print PASS/MISS; nothing here fails the build.  Standard library
and the PostgreSQL server package only.
"""

import argparse
import glob
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CLUSTER = os.path.join(REPO, "tests", "pg_cluster.sh")
FAKE = os.path.join(REPO, "tests", "fake_provider.py")
PY = "/usr/bin/python3"
KEY = "xi-fake-E1evn-Lb28Wm"     # the fake's default ElevenLabs key
WORKERS = 4

NOOP_CONF = "[transcribe]\nprovider = noop\n[noop]\ndelay_ms = 0\n"

# One job, in SQL: what a client of the same schema cannot do with less.
# The claim as the FOR UPDATE SKIP LOCKED CTE with a lease from
# the sequence, returning the file's paths; the completion as mpfarm's
# (common_store_job.c): the attempt row written from the job row, fenced
# by the lease, the job completed, the file's translations made ready,
# one COMMIT.  (mpfarm claims a batch per master and publishes several
# short jobs per transaction; a client of pgbench does one job at a time.)
PGBENCH_SCRIPT = r"""
WITH c AS (SELECT job_id FROM jobs WHERE stage = 'transcribe' AND lang = ''
  AND status = 'not_started' AND ready = 1 AND run_after <= 1
  ORDER BY run_after, job_id LIMIT 1 FOR UPDATE SKIP LOCKED)
UPDATE jobs j SET status = 'in-progress', attempts = j.attempts + 1,
  lease = nextval('mpfarm_lease'), owner_pid = :client_id, owner_master = 1,
  started_at = 1, finished_at = NULL FROM c, media_files m
  WHERE j.job_id = c.job_id AND m.file_id = j.file_id
  RETURNING j.job_id AS job_id, j.lease AS lease, j.file_id AS file_id,
  m.abs_path, m.rel_path, m.size, m.mtime_ns \gset
BEGIN;
INSERT INTO attempts (job_id, attempt, worker_pid, started_at, ended_at,
  outcome) SELECT job_id, attempts, owner_pid, started_at, 2, 'completed'
  FROM jobs WHERE job_id = :job_id AND lease = :lease
  AND status = 'in-progress';
UPDATE jobs SET status = 'completed', finished_at = 2, owner_pid = NULL,
  owner_master = NULL, last_error = NULL
  WHERE job_id = :job_id AND lease = :lease AND status = 'in-progress';
UPDATE jobs SET ready = 1 WHERE file_id = :file_id AND stage = 'translate'
  AND ready = 0;
COMMIT;
"""


def say(*a):
    print(*a, flush=True)


def verdict(ok):
    return "PASS" if ok else "MISS"


class Cluster:
    def __init__(self, root):
        self.dir = os.path.join(root, "pg")
        out = subprocess.run([CLUSTER, "start", self.dir], check=True,
                             stdout=subprocess.PIPE, text=True, timeout=120)
        self.base = out.stdout.strip()
        self.n = 0

    def new_db(self):
        self.n += 1
        name = "bench_%d" % self.n
        self.psql("postgres", "CREATE DATABASE %s" % name)
        return name, self.base.replace("postgresql:///postgres",
                                       "postgresql:///" + name, 1)

    def psql(self, db, sql):
        return subprocess.run(["psql", "-X", "-q", "-t", "-A", "-h", self.dir,
                               "-U", "postgres", "-d", db, "-c", sql],
                              check=True, stdout=subprocess.PIPE,
                              text=True).stdout.strip()

    def stop(self):
        subprocess.run([CLUSTER, "stop", self.dir], timeout=120)


def make_media(root, n):
    os.makedirs(root, exist_ok=True)
    for i in range(n):
        with open(os.path.join(root, "f%05d.wav" % i), "wb") as f:
            f.write(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"%08d" % i)


def rundir_for(root, tag, conf):
    d = os.path.join(root, tag)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    with open(os.path.join(d, "mpfarm.conf"), "w") as f:
        f.write(conf)
    return d


def scan(mpfarm, rundir, db, media):
    subprocess.run([mpfarm, "--db", db, "scan", media], cwd=rundir,
                   check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def masters(mpfarm, rundir, db, hosts, env=None, extra=()):
    """hosts masters started together; wall seconds to the last exit."""
    t0 = time.monotonic()
    ps = []
    for h in range(hosts):
        log = open(os.path.join(rundir, "m%d.log" % h), "wb")
        ps.append(subprocess.Popen(
            [mpfarm, "--db", db, "run", "--workers", str(WORKERS),
             "--output", os.path.join(rundir, "output"), *extra],
            cwd=rundir, stdout=log, stderr=log, env=env))
        log.close()
    rcs = [p.wait() for p in ps]
    wall = time.monotonic() - t0
    if any(rcs):
        raise RuntimeError("a master failed (%s): see %s" % (rcs, rundir))
    return wall


def completed_pg(cluster, name):
    return int(cluster.psql(name, "SELECT count(*) FROM jobs WHERE status "
                            "= 'completed'"))


def run_mpfarm_pg(args, cluster, root, media, hosts, tag):
    name, url = cluster.new_db()
    d = rundir_for(root, tag, NOOP_CONF)
    scan(args.mpfarm, d, url, media)
    wall = masters(args.mpfarm, d, url, hosts)
    done = completed_pg(cluster, name)
    if done != args.files:
        raise RuntimeError("%s: %d of %d completed" % (tag, done, args.files))
    per = []
    for h in range(hosts):
        text = open(os.path.join(d, "m%d.log" % h), errors="replace").read()
        m = re.findall(r"event=farm_exit.*?completed=(\d+)", text)
        per.append(int(m[-1]) if m else 0)
    shutil.rmtree(d, ignore_errors=True)
    return done / wall, per


def run_pgbench(args, cluster, root, media, clients, tag):
    name, url = cluster.new_db()
    d = rundir_for(root, tag, NOOP_CONF)
    scan(args.mpfarm, d, url, media)
    script = os.path.join(d, "claim_complete.sql")
    with open(script, "w") as f:
        f.write(PGBENCH_SCRIPT)
    per_client = args.files // clients
    out = subprocess.run(
        ["pgbench", "-n", "-h", cluster.dir, "-U", "postgres", "-c",
         str(clients), "-j", "2", "-t", str(per_client), "-f", script, name],
        cwd=d, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    m = re.search(r"tps = ([\d.]+) \(without initial", out.stdout)
    if out.returncode != 0 or m is None:
        raise RuntimeError("pgbench failed:\n" + out.stdout[-2000:])
    done = completed_pg(cluster, name)
    if done != per_client * clients:
        raise RuntimeError("pgbench completed %d of %d" %
                           (done, per_client * clients))
    shutil.rmtree(d, ignore_errors=True)
    return float(m.group(1))


def run_mpfarm_sqlite(args, root, media, tag):
    d = rundir_for(root, tag, NOOP_CONF)
    db = os.path.join(d, "media_tracking.db")
    scan(args.mpfarm, d, db, media)
    wall = masters(args.mpfarm, d, db, 1)
    con = __import__("sqlite3").connect(db)
    done = con.execute("SELECT count(*) FROM jobs WHERE status = "
                       "'completed'").fetchone()[0]
    con.close()
    if done != args.files:
        raise RuntimeError("%s: %d of %d completed" % (tag, done, args.files))
    shutil.rmtree(d, ignore_errors=True)
    return done / wall


def throughput(args, cluster, root):
    media = os.path.join(root, "media")
    make_media(media, args.files)
    res = {("a", h): [] for h in (1, 2, 3)}
    res.update({("b", h): [] for h in (1, 2, 3)})
    res["c"] = []
    shares = {}
    # alternate the contenders, so a busy spell of the shared box falls
    # on all of them alike
    for r in range(args.rounds):
        for h in (1, 2, 3):
            rate, per = run_mpfarm_pg(args, cluster, root, media, h,
                                      "a%d_%d" % (h, r))
            res[("a", h)].append(rate)
            shares[h] = per
            res[("b", h)].append(run_pgbench(args, cluster, root, media,
                                             WORKERS * h, "b%d_%d" % (h, r)))
        res["c"].append(run_mpfarm_sqlite(args, root, media, "c_%d" % r))
    say("")
    say("PostgreSQL throughput, noop, %d jobs, median of %d round(s), "
        "jobs/s:" % (args.files, args.rounds))
    say("  %-8s %-30s %12s %12s %7s" % ("hosts", "(a) mpfarm masters x 4 "
        "workers", "(b) pgbench", "a/b", ""))
    ok_all = True
    for h in (1, 2, 3):
        a = statistics.median(res[("a", h)])
        b = statistics.median(res[("b", h)])
        ok = a >= 0.8 * b
        ok_all = ok_all and ok
        say("  %-8d %-30.0f %12.0f %6.0f%%  %s  (b: %d clients; per "
            "host: %s)" % (h, a, b, 100 * a / b, verdict(ok), WORKERS * h,
                           "/".join(map(str, shares[h]))))
    say("  (c) mpfarm on SQLite, 1 master x 4 workers: %.0f jobs/s" %
        statistics.median(res["c"]))
    say("  target (a) >= 80%% of (b) at every host count: %s" %
        verdict(ok_all))


class Fake:
    def __init__(self, args):
        self.proc = subprocess.Popen(
            [PY, FAKE, "--latency-ms", "100", "--rate", str(args.rate),
             "--max-concurrency", str(args.max_concurrency),
             "--rate-retry-after", "--max-seconds", "600"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "PORT":
            self.stop()
            raise RuntimeError("fake_provider.py did not start")
        self.base = "http://127.0.0.1:%s" % line[1]

    def stats(self):
        with urllib.request.urlopen(self.base + "/_stats", timeout=10) as r:
            return json.load(r)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def goodput(args, cluster, root):
    media = os.path.join(root, "media_api")
    make_media(media, args.goodput_files)
    fake = Fake(args)
    try:
        conf = ("[transcribe]\nprovider = elevenlabs\n[elevenlabs]\n"
                "base_url = %s\nrate = %g\nmax_concurrency = %d\n" %
                (fake.base, args.rate, args.max_concurrency))
        name, url = cluster.new_db()
        d = rundir_for(root, "api", conf)
        scan(args.mpfarm, d, url, media)
        env = dict(os.environ, ELEVENLABS_API_KEY=KEY)
        wall = masters(args.mpfarm, d, url, 3, env=env)
        st = fake.stats()
    finally:
        fake.stop()
    done = completed_pg(cluster, name)
    reqs = [e for e in st["log"] if e["path"] == "/v1/speech-to-text"]
    ok = [e for e in reqs if e["status"] == 200]
    n429 = st["by_status"].get("429", 0)
    first = min(e["t"] for e in reqs)
    last = max(e["t"] + e["ms"] / 1000.0 for e in reqs)
    gp = len(ok) / (last - first)
    share = 100.0 * n429 / max(1, st["requests"])
    say("")
    say("API-bound, 3 masters x %d workers, one fake ElevenLabs (%g req/s, "
        "%d at once, 100 ms):" % (WORKERS, args.rate, args.max_concurrency))
    say("  %d files, %d completed, %d requests, %d answered 429 (%.2f%%), "
        "most at once %d" % (args.goodput_files, done, st["requests"], n429,
                             share, st["max_concurrency"]))
    say("  goodput %.2f req/s = %.1f%% of the limit (%.1f files/s over the "
        "whole %.1f s run)" % (gp, 100 * gp / args.rate, done / wall, wall))
    say("  target >= 95%% of the limit and <= 1%% 429: %s" %
        verdict(gp >= 0.95 * args.rate and share <= 1.0 and
                done == args.goodput_files))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mpfarm", required=True)
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--goodput-files", type=int, default=300)
    ap.add_argument("--rate", type=float, default=20)
    ap.add_argument("--max-concurrency", type=int, default=4)
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-goodput", action="store_true")
    args = ap.parse_args()
    if not shutil.which("pgbench") or \
            not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        say("bench_pg: no PostgreSQL server or pgbench (make deps): skipped")
        return 0
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    root = tempfile.mkdtemp(prefix="mpfarm-bench-pg-", dir=base)
    os.chmod(root, 0o755)
    cluster = Cluster(root)
    try:
        say("bench_pg: %s, %d cores, load %.1f" % (
            cluster.psql("postgres", "SHOW server_version"),
            os.cpu_count(), os.getloadavg()[0]))
        if not args.skip_throughput:
            throughput(args, cluster, root)
        if not args.skip_goodput:
            goodput(args, cluster, root)
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
