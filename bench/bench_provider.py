#!/usr/bin/python3
"""bench_provider.py - the provider part of `make bench`: does a farm-wide
rate limit pay?  Against tests/fake_provider.py playing ElevenLabs with
100 ms latency and the service's own limits (20 requests/s, 4 at once,
429 with Retry-After beyond them):

  (a) mpfarm --workers 16 with rate = 20 and max_concurrency = 4 in
      [elevenlabs] (and [openai], [deepl]): the master paces every worker;
  (b) the older tooling's design: 16 Python threads, each with its own
      sqlite3 connection, calling the API directly with no shared limit,
      retrying a 429 with exponential backoff and jitter that honours
      Retry-After, giving a file up (failed) after 5 attempts.

Prints goodput (files completed per second of the run) against the limit
and the share of requests answered 429.  Run by bench/bench_farm.py, or:
  bench_provider.py --mpfarm build/mpfarm --fake tests/fake_provider.py
Standard library only.
"""

import argparse
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True      # no bench/__pycache__ in the tree
import baseline_threads  # noqa: E402  (schema, thread-local connections)

PY = "/usr/bin/python3"
KEY = "xi-fake-E1evn-Lb28Wm"     # the fake's default ElevenLabs key


def say(*a):
    print(*a, flush=True)


class Fake:
    """One fake_provider.py process with the service's limits."""

    def __init__(self, args):
        self.proc = subprocess.Popen(
            [PY, args.fake, "--latency-ms", str(args.latency_ms),
             "--rate", str(args.rate), "--max-concurrency",
             str(args.max_concurrency), "--rate-retry-after",
             "--max-seconds", "600"],
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


def make_media(root, n):
    os.makedirs(root, exist_ok=True)
    for i in range(n):
        with open(os.path.join(root, "f%05d.wav" % i), "wb") as f:
            f.write(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"%08d" % i)


def share_429(st):
    n = st.get("requests", 0)
    k = st.get("by_status", {}).get("429", 0)
    return k, n, (100.0 * k / n if n else 0.0)


# ---- (a) mpfarm -------------------------------------------------------

def run_farm(args, fake, rundir, media):
    os.makedirs(rundir)
    conf = "[transcribe]\nprovider = elevenlabs\n[translate]\nprovider = deepl\n"
    for prov in ("elevenlabs", "openai", "deepl"):
        conf += "[%s]\nbase_url = %s\nrate = %g\nmax_concurrency = %d\n" % (
            prov, fake.base, args.rate, args.max_concurrency)
    with open(os.path.join(rundir, "mpfarm.conf"), "w") as f:
        f.write(conf)
    subprocess.run([args.mpfarm, "scan", "--config", "mpfarm.conf", media],
                   cwd=rundir, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    env = dict(os.environ, ELEVENLABS_API_KEY=KEY)
    t0 = time.monotonic()
    with open(os.path.join(rundir, "run.log"), "wb") as log:
        rc = subprocess.run(
            [args.mpfarm, "run", "--config", "mpfarm.conf", "--workers",
             str(args.workers), "--stage", "transcribe"],
            cwd=rundir, env=env, stdout=log, stderr=log).returncode
    wall = time.monotonic() - t0
    out = subprocess.run([args.mpfarm, "status", "--json", "--config",
                          "mpfarm.conf"], cwd=rundir, check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    tr = json.loads(out)["stages"]["transcribe"]
    return {"rc": rc, "wall": wall, "done": tr["completed"],
            "failed": tr["failed"]}


# ---- (b) the older tooling's design ------------------------------------

def multipart(fields, files):
    boundary = "----bench%016x" % random.getrandbits(64)
    out = []
    for k, v in fields.items():
        out.append(('--%s\r\nContent-Disposition: form-data; name="%s"\r\n'
                    '\r\n%s\r\n' % (boundary, k, v)).encode())
    for k, (name, data) in files.items():
        out.append(('--%s\r\nContent-Disposition: form-data; name="%s"; '
                    'filename="%s"\r\nContent-Type: application/octet-stream'
                    '\r\n\r\n' % (boundary, k, name)).encode())
        out.append(data + b"\r\n")
    out.append(("--%s--\r\n" % boundary).encode())
    return b"".join(out), "multipart/form-data; boundary=" + boundary


def transcribe(base, path, max_attempts=5):
    """One file, retried like the older tooling: None if given up."""
    with open(path, "rb") as f:
        data = f.read()
    body, ctype = multipart({"model_id": "scribe_v1"},
                            {"file": (os.path.basename(path), data)})
    for attempt in range(1, max_attempts + 1):
        req = urllib.request.Request(
            base + "/v1/speech-to-text", data=body, method="POST",
            headers={"xi-api-key": KEY, "Content-Type": ctype})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            if e.code != 429 and e.code < 500:
                return None
            ra = e.headers.get("Retry-After")
            wait = min(30.0, 2.0 ** (attempt - 1)) * random.uniform(0.5, 1.5)
            if ra:
                try:
                    wait = max(wait, float(ra))
                except ValueError:
                    pass
            if attempt < max_attempts:
                time.sleep(wait)
        except (urllib.error.URLError, OSError):
            if attempt < max_attempts:
                time.sleep(min(30.0, 2.0 ** (attempt - 1)))
    return None


def baseline_file(db, outdir, base, file_id, file_path, rel):
    conn = baseline_threads.connect(db)
    with conn:
        conn.execute("UPDATE media_files SET transcription_status = "
                     "'in-progress' WHERE file_id = ?", (file_id,))
    res = transcribe(base, file_path)
    if res is None:
        with conn:
            conn.execute("UPDATE media_files SET transcription_status = "
                         "'failed' WHERE file_id = ?", (file_id,))
        return False
    out = os.path.join(outdir, "transcripts", rel)
    baseline_threads.write_whole(out + ".txt", res.get("text", "").encode())
    baseline_threads.write_whole(out + ".json", json.dumps(res).encode())
    with conn:
        conn.execute("UPDATE media_files SET transcription_status = "
                     "'completed' WHERE file_id = ?", (file_id,))
    return True


def run_baseline(args, fake, rundir, media):
    os.makedirs(rundir)
    db = os.path.join(rundir, "media_tracking.db")
    subprocess.run([PY, baseline_threads.__file__, "init", db, media],
                   check=True, stdout=subprocess.DEVNULL)
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT file_id, file_path, rel_path FROM media_files "
                        "ORDER BY file_id").fetchall()
    conn.close()
    outdir = os.path.join(rundir, "output")
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        results = list(pool.map(
            lambda r: baseline_file(db, outdir, fake.base, *r), rows))
    wall = time.monotonic() - t0
    return {"rc": 0, "wall": wall, "done": sum(results),
            "failed": len(results) - sum(results)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mpfarm", required=True)
    ap.add_argument("--fake", required=True)
    ap.add_argument("--workdir", default="/dev/shm")
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--latency-ms", type=int, default=100)
    ap.add_argument("--rate", type=float, default=20)
    ap.add_argument("--max-concurrency", type=int, default=4)
    args = ap.parse_args()
    args.mpfarm = os.path.abspath(args.mpfarm)
    args.fake = os.path.abspath(args.fake)

    root = os.path.join(args.workdir, "provider-%d" % os.getpid())
    media = os.path.join(root, "media")
    make_media(media, args.files)
    rows = []
    try:
        for key, name, fn in (
                ("a", "mpfarm --workers %d, farm-wide limit" % args.workers,
                 run_farm),
                ("b", "python threads x%d, no shared limit" % args.workers,
                 run_baseline)):
            fake = Fake(args)
            try:
                r = fn(args, fake, os.path.join(root, "run-" + key), media)
                r["stats"] = fake.stats()
            finally:
                fake.stop()
            rows.append((key, name, r))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    say("Provider bench: fake ElevenLabs, %d ms latency, service limit "
        "%g req/s and %d at once; %d files" % (
            args.latency_ms, args.rate, args.max_concurrency, args.files))
    say("  %-42s %9s %9s %7s %11s %9s" % (
        "contender", "files/s", "of limit", "failed", "429 / req", "429 %"))
    for key, name, r in rows:
        k, n, p = share_429(r["stats"])
        good = r["done"] / r["wall"] if r["wall"] > 0 else 0
        say("  (%s) %-38s %9.1f %8.0f%% %7d %5d/%-5d %8.1f%%" % (
            key, name, good, 100 * good / args.rate, r["failed"], k, n, p))
        if r["rc"] not in (0,):
            say("      (exit %d)" % r["rc"])


if __name__ == "__main__":
    main()
