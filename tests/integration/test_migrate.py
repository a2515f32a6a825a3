"""`mpfarm migrate --to postgresql://...` (PostgreSQL pass,
MPFARM_TEST_STORE=pg): a SQLite farm scanned and partly run is copied
into an empty PostgreSQL farm; the counts it prints agree, the
processing_status view and the jobs and attempts read row for row the
same on both, and `run` on PostgreSQL completes the rest, each job
exactly once.  A non-empty target and a master running on the source are
refused, and the password of the target never shows."""
import os
import signal
import subprocess

import pytest

import storelib
from conftest import MPFARM_BIN, SLOW, wait_for

pytestmark = pytest.mark.skipif(
    not storelib.PG, reason="PostgreSQL pass only (MPFARM_TEST_STORE=pg)")

CONF = """
[farm]
retry_delay_ms = 50
[transcribe]
provider = noop
[translate]
provider = noop
languages = de
[noop]
delay_ms = {delay}
"""


def lite(farm, *args, timeout=120):
    """A command on the SQLite file, whatever MPFARM_DB says."""
    env = dict(farm.env)
    env.pop("MPFARM_DB", None)
    return subprocess.run([MPFARM_BIN, "--db", str(farm.path / "lite.db"),
                           *map(str, args)], cwd=farm.path, env=env,
                          capture_output=True, timeout=timeout * SLOW,
                          encoding="utf-8", errors="replace")


def rows(con, sql):
    return [tuple(v if not isinstance(v, bool) else int(v) for v in r)
            for r in con.execute(sql).fetchall()]


VIEW = "SELECT * FROM processing_status ORDER BY 1"
JOBS = ("SELECT job_id, file_id, stage, lang, status, ready, attempts, "
        "run_after, lease, started_at, finished_at, last_error FROM jobs "
        "ORDER BY job_id")
ATTEMPTS = "SELECT * FROM attempts ORDER BY attempt_id"
FILES = ("SELECT file_id, scan_root, rel_path, abs_path, size, mtime_ns, "
         "dev, ino, abs_path_text FROM media_files ORDER BY file_id")


def test_migrate_then_run_on_postgresql(farm):
    n = 12
    farm.write_config(CONF.format(delay=0))
    farm.make_media(n)
    (farm.media / "sub").mkdir()
    (farm.media / "sub" / "caf\xe9 \u00fc.wav").write_bytes(b"RIFFx")
    n += 1
    assert lite(farm, "scan", farm.media).returncode == 0
    # a partial run: some transcripts done, translations ready for them
    p = lite(farm, "run", "--workers", "2", "--batch-size", "9")
    assert p.returncode == 0, p.stderr
    src = storelib.connect(farm.path / "lite.db")
    done = src.execute("SELECT count(*) FROM jobs WHERE status = "
                       "'completed'").fetchone()[0]
    assert 0 < done < 2 * n, done

    # the password travels to libpq, never to the output
    url = farm.db.replace("postgresql:///", "postgresql://postgres:s3cr3t@/", 1)
    p = lite(farm, "migrate", "--to", url)
    assert p.returncode == 0, p.stderr
    assert "s3cr3t" not in p.stdout + p.stderr
    counts = {}
    for line in p.stdout.splitlines():
        w = line.split()
        if len(w) == 3 and w[1].isdigit():
            counts[w[0]] = (int(w[1]), int(w[2]))
    assert counts["media_files"] == (n, n), p.stdout
    assert counts["jobs"] == (2 * n, 2 * n), p.stdout
    na = src.execute("SELECT count(*) FROM attempts").fetchone()[0]
    assert counts["attempts"] == (na, na), p.stdout

    dst = storelib.connect(farm.db)
    for sql in (VIEW, JOBS, ATTEMPTS, FILES):
        assert rows(dst, sql) == rows(src, sql), sql
    before = rows(src, JOBS)

    # a second migrate into the same farm is refused, nothing changes
    p = lite(farm, "migrate", "--to", farm.db)
    assert p.returncode == 1 and "already holds a farm" in p.stderr, p.stderr
    assert rows(dst, JOBS) == before

    # the rest runs on PostgreSQL, each job exactly once
    p = farm.run("run", "--workers", "3")
    assert p.returncode == 0, p.stderr
    assert farm.counts() == {"completed": 2 * n}
    twice = farm.query("SELECT job_id, count(*) FROM attempts WHERE "
                       "outcome = 'completed' GROUP BY job_id "
                       "HAVING count(*) <> 1")
    assert twice == [], twice
    # jobs done on SQLite were not run again
    for job_id, status, lease in [(r[0], r[4], r[8]) for r in before]:
        if status == "completed":
            assert farm.query("SELECT lease FROM jobs WHERE job_id = ?",
                              (job_id,)) == [(lease,)]
    # new leases and ids come after the copied ones
    last = max(r[0] for r in rows(src, ATTEMPTS))
    new = farm.query("SELECT min(attempt_id) FROM attempts WHERE "
                     "attempt_id > ?", (last,))
    assert new[0][0] is not None
    outs = [q for q in farm.output.rglob("*.txt")]
    assert len(outs) == 2 * n, outs
    src.close()
    dst.close()


def test_migrate_refuses_a_running_master(farm):
    farm.write_config(CONF.format(delay=60000))
    farm.make_media(3)
    assert lite(farm, "scan", farm.media).returncode == 0
    env = dict(farm.env)
    env.pop("MPFARM_DB", None)
    m = subprocess.Popen([MPFARM_BIN, "--db", str(farm.path / "lite.db"),
                          "run", "--workers", "1"], cwd=farm.path, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    farm.procs.append(m)
    try:
        src = storelib.connect(farm.path / "lite.db")
        wait_for(lambda: src.execute("SELECT count(*) FROM jobs WHERE "
                                     "status = 'in-progress'").fetchone()[0]
                 > 0, 30, what="a job in flight")
        src.close()
        p = lite(farm, "migrate", "--to", farm.db)
        assert p.returncode == 1, p.stderr
        assert ("pid %d" % m.pid) in p.stderr and "is running" in p.stderr
    finally:
        os.killpg(m.pid, signal.SIGKILL)
        m.wait(timeout=10)
    # the target was not even opened
    assert farm.query("SELECT count(*) FROM pg_tables WHERE tablename = "
                      "'media_files'") == [(0,)]


def test_migrate_usage(farm):
    farm.write_config(CONF.format(delay=0))
    p = lite(farm, "migrate")
    assert p.returncode == 2 and "needs --to" in p.stderr
    p = lite(farm, "migrate", "--to", str(farm.path / "other.db"))
    assert p.returncode == 2 and "needs --to" in p.stderr
    p = lite(farm, "migrate", "--to", farm.db)
    assert p.returncode == 1 and "no such database" in p.stderr
    p = farm.run("help")
    assert "migrate --to URL" in p.stdout
