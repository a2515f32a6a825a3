#!/usr/bin/python3
"""baseline_threads.py - the older Python tooling's design, rebuilt as the
baseline of `make bench`: parallel_transcription.py's thread pool (5
workers) over batches of pending files, db_manager.py's thread-local
sqlite3 connections (WAL, synchronous=NORMAL), and per file: mark it
in-progress (commit), write its outputs (temporary file + rename), mark it
completed (commit).  It writes the same two outputs as mpfarm's noop
provider (REL.txt and REL.json) so that the per-job work is the same.

    baseline_threads.py init DB MEDIA_ROOT     register every file (untimed)
    baseline_threads.py run DB OUTDIR [--workers 5] [--batch-size 50]

`run` prints one line "baseline jobs=N seconds=S rate=R" on stdout.  Its
schema is the older tooling's flat table, not mpfarm's: the point is the
design (threads + one connection each + two commits per file), not a
compatibility test.  Standard library only.
"""

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait

SCHEMA = """
CREATE TABLE IF NOT EXISTS media_files (
    file_id INTEGER PRIMARY KEY,
    file_path TEXT NOT NULL UNIQUE,
    rel_path TEXT NOT NULL,
    transcription_status TEXT NOT NULL DEFAULT 'not_started',
    started_at REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS media_files_tstatus
    ON media_files (transcription_status);
"""

_local = threading.local()


def connect(db):
    """db_manager.py's pattern: one connection per thread, made on first
    use and kept for the life of the thread."""
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(db, timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        _local.conn = conn
    return conn


def write_whole(final, data):
    """Temporary file beside the output, then rename: whole or not at all."""
    folder = os.path.dirname(final)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.rename(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def process_file(db, outdir, file_id, file_path, rel):
    conn = connect(db)
    with conn:
        conn.execute("UPDATE media_files SET transcription_status = "
                     "'in-progress', started_at = ? WHERE file_id = ?",
                     (time.time(), file_id))
    base = os.path.join(outdir, "transcripts", rel)
    name = os.path.basename(file_path)
    write_whole(base + ".txt", ("noop transcript of %s\n" % name).encode())
    write_whole(base + ".json", json.dumps(
        {"provider": "noop", "job": file_id}).encode() + b"\n")
    with conn:
        conn.execute("UPDATE media_files SET transcription_status = "
                     "'completed', finished_at = ? WHERE file_id = ?",
                     (time.time(), file_id))
    return True


def cmd_init(args):
    root = os.path.abspath(args.media_root)
    conn = sqlite3.connect(args.db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    rows = []
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            rows.append((p, os.path.relpath(p, root)))
    rows.sort()
    with conn:
        conn.executemany("INSERT OR IGNORE INTO media_files "
                         "(file_path, rel_path) VALUES (?, ?)", rows)
    conn.close()
    print("baseline init files=%d" % len(rows))


def cmd_run(args):
    t0 = time.monotonic()
    main = sqlite3.connect(args.db, timeout=30.0)
    main.execute("PRAGMA journal_mode=WAL")
    done = failed = 0
    last_id = 0
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        while True:
            # the older tooling: take a batch of pending files, hand it to
            # the pool, wait for the batch, take the next one
            batch = main.execute(
                "SELECT file_id, file_path, rel_path FROM media_files "
                "WHERE transcription_status = 'not_started' AND file_id > ? "
                "ORDER BY file_id LIMIT ?", (last_id, args.batch_size)
            ).fetchall()
            if not batch:
                break
            last_id = batch[-1][0]
            futs = [pool.submit(process_file, args.db, args.outdir, *row)
                    for row in batch]
            wait(futs)
            for f in futs:
                if f.exception() is not None:
                    failed += 1
                    if failed == 1:
                        print("baseline: %s" % f.exception(), file=sys.stderr)
                else:
                    done += 1
    main.close()
    s = time.monotonic() - t0
    print("baseline jobs=%d failed=%d seconds=%.3f rate=%.0f"
          % (done, failed, s, done / s if s > 0 else 0))
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("init")
    p.add_argument("db")
    p.add_argument("media_root")
    p = sub.add_parser("run")
    p.add_argument("db")
    p.add_argument("outdir")
    p.add_argument("--workers", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=50)
    args = ap.parse_args()
    return cmd_init(args) if args.cmd == "init" else cmd_run(args)


if __name__ == "__main__":
    sys.exit(main() or 0)
