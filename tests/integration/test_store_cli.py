"""The store as the command line and SQL clients see it: `retry` (--file in
every form a user types it, the listing of what it resets, --dry-run
leaving the database byte-identical), `fix` and `check` agreeing on every
inconsistent state, and the processing_status view readable by every SQL
client with a file name that is not valid UTF-8.

Job states are set by hand with SQL, the way an operator or a crash leaves
them; every test asserts the database and the output tree afterwards.
"""
import fcntl
import json
import os
import pathlib
import socket
import sqlite3
import subprocess
import time

from conftest import dead_pid, fsbytes
from storelib import PG
from test_commands import sha, touch

CONF = """[transcribe]
provider = noop
[translate]
provider = noop
languages = en,de
[farm]
retry_delay_ms = 50
retry_max_delay_ms = 200
"""


def fid_of(farm, rel):
    return farm.scalar("SELECT file_id FROM media_files WHERE rel_path = ?",
                       (fsbytes(rel),))


def job(farm, fid, stage="transcribe", lang=""):
    return farm.query("SELECT job_id, status, attempts FROM jobs WHERE "
                      "file_id = ? AND stage = ? AND lang = ?",
                      (fid, stage, lang))[0]


def fail(farm, fid, stage="transcribe", lang="", err="HTTP 500: boom"):
    n = farm.execute("UPDATE jobs SET status = 'failed', attempts = 3, "
                     "last_error = ? WHERE file_id = ? AND stage = ? AND "
                     "lang = ?", (err, fid, stage, lang))
    assert n == 1


def tree(root):
    """Every file under root (bytes paths relative to it) with its size."""
    out = {}
    root = fsbytes(root)
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = os.path.getsize(p)
    return out


def failed(farm):
    return farm.scalar("SELECT count(*) FROM jobs WHERE status = 'failed'")


def snapshot(farm):
    """The whole store, to compare before and after a command that must
    change nothing: the SQLite file's bytes (their digest), or on
    PostgreSQL every row of every table and every sequence's position."""
    if not PG:
        return sha(farm.db)
    return farm.dump() + farm.query(
        "SELECT sequencename, last_value FROM pg_sequences WHERE "
        "schemaname = current_schema() ORDER BY 1")


def setup_files(farm, rels):
    farm.write_config(CONF)
    for r in rels:
        touch(farm.media / r)
    farm.scan()
    return {r: fid_of(farm, r) for r in rels}


# ---- retry --file ---------------------------------------------------------

def test_retry_file_every_form(farm):
    ids = setup_files(farm, ["a.wav", "sub/b.wav", "c.wav", "d.wav",
                             "sub/e.wav"])
    for f in ids.values():
        fail(farm, f)
    media = os.path.realpath(farm.media)

    # relative to the current folder
    p = farm.run("retry", "--file", "media/sub/b.wav", check=True)
    assert p.stdout.splitlines() == [
        "retry: %s/sub/b.wav: transcribe (failed after 3 attempts: "
        "HTTP 500: boom)" % media,
        "1 failed job back to not_started"]
    assert job(farm, ids["sub/b.wav"])[1:] == ("not_started", 0)
    assert failed(farm) == 4

    # absolute, from another folder (the database named with --db)
    p = farm.run("retry", "--db", farm.db, "--file",
                 os.path.join(media, "c.wav"), cwd="/", check=True)
    assert p.stdout.splitlines()[-1] == "1 failed job back to not_started"
    assert job(farm, ids["c.wav"])[1] == "not_started"

    # relative from inside a sub-folder, through a symbolic link
    os.symlink(str(farm.media), str(farm.path / "link"))
    p = farm.run("retry", "--file", "link/sub/e.wav", check=True)
    assert job(farm, ids["sub/e.wav"])[1] == "not_started"
    assert "%s/sub/e.wav: transcribe" % media in p.stdout

    # as stored: the name relative to its scan root (no ./a.wav here)
    assert not (farm.path / "a.wav").exists()
    p = farm.run("retry", "--file", "a.wav", check=True)
    assert job(farm, ids["a.wav"])[1] == "not_started"

    # a file moved away since the scan: its old path still names it
    os.unlink(str(farm.media / "d.wav"))
    p = farm.run("retry", "--file", "media/./sub/../d.wav", check=True)
    assert job(farm, ids["d.wav"])[1] == "not_started"
    assert failed(farm) == 0


def test_retry_file_not_found_changes_nothing(farm):
    ids = setup_files(farm, ["a.wav"])
    fail(farm, ids["a.wav"])
    digest = snapshot(farm)
    for path in ("nope.wav", "media/nope.wav", "/media/a.wav"):
        p = farm.run("retry", "--file", path)
        assert p.returncode == 1, p
        assert "no media file" in p.stderr and path in p.stderr
        assert p.stdout == ""
    assert snapshot(farm) == digest
    assert failed(farm) == 1


def test_retry_combined_filters(farm):
    ids = setup_files(farm, ["a.wav", "b.wav"])
    for f in ids.values():
        farm.execute("UPDATE jobs SET status = 'completed' WHERE file_id = ? "
                     "AND stage = 'transcribe'", (f,))
        for lang in ("en", "de"):
            fail(farm, f, "translate", lang)
    p = farm.run("retry", "--file", "media/a.wav", "--language", "de",
                 check=True)
    lines = p.stdout.splitlines()
    assert len(lines) == 2 and lines[0].endswith(
        "a.wav: translate de (failed after 3 attempts: HTTP 500: boom)")
    assert lines[1] == "1 failed job back to not_started"
    assert job(farm, ids["a.wav"], "translate", "de")[1] == "not_started"
    assert job(farm, ids["a.wav"], "translate", "en")[1] == "failed"
    assert job(farm, ids["b.wav"], "translate", "de")[1] == "failed"
    # a transcribe-only retry of that file finds nothing to reset
    p = farm.run("retry", "--file", "media/a.wav", "--stage", "transcribe",
                 check=True)
    assert p.stdout.strip() == "0 failed jobs back to not_started"
    assert failed(farm) == 3


# ---- retry listing and --dry-run -------------------------------------------

def test_retry_dry_run_is_byte_identical_then_retry_lists(farm):
    ids = setup_files(farm, ["a.wav", "b.wav", "c.wav"])
    media = os.path.realpath(farm.media)
    fail(farm, ids["b.wav"], err="line one\nline two")
    fail(farm, ids["a.wav"], err="x" * 300)
    farm.execute("UPDATE jobs SET status = 'completed' WHERE file_id = ? "
                 "AND stage = 'transcribe'", (ids["c.wav"],))
    fail(farm, ids["c.wav"], "translate", "en")
    digest, before = snapshot(farm), farm.dump()

    p = farm.run("retry", "--dry-run", check=True)
    assert snapshot(farm) == digest and farm.dump() == before
    lines = p.stdout.splitlines()
    assert len(lines) == 4, lines
    assert lines[0].startswith("would retry: %s/a.wav: transcribe (failed "
                               "after 3 attempts: xxx" % media)
    assert lines[0].endswith("...)") and "x" * 121 not in lines[0]
    assert lines[1] == ("would retry: %s/b.wav: transcribe (failed after 3 "
                        "attempts: line one line two)" % media)
    assert lines[2].startswith("would retry: %s/c.wav: translate en" % media)
    assert lines[3] == ("3 failed jobs would go back to not_started "
                        "(dry run: nothing changed)")
    assert failed(farm) == 3

    p = farm.run("retry", check=True)
    got = p.stdout.splitlines()
    assert [l.replace("retry: ", "", 1) for l in got[:3]] == \
        [l.replace("would retry: ", "", 1) for l in lines[:3]]
    assert got[3] == "3 failed jobs back to not_started"
    assert failed(farm) == 0
    assert farm.scalar("SELECT count(*) FROM jobs WHERE attempts != 0 OR "
                       "last_error IS NOT NULL") == 0
    assert farm.run("retry", check=True).stdout == \
        "0 failed jobs back to not_started\n"


# ---- fix and check agree ----------------------------------------------------

def states(farm):
    """{"<rel_path>:<stage><lang>": status} of every job."""
    return {"%s:%s%s" % (bytes(r).decode(), stage, lang): s
            for r, stage, lang, s in farm.query(
                "SELECT f.rel_path, j.stage, j.lang, j.status "
                "FROM jobs j JOIN media_files f USING (file_id)")}


def test_fix_then_check_agree(farm):
    rels = ["s%02d.wav" % i for i in range(12)]
    ids = setup_files(farm, rels)
    dead = dead_pid()
    o = farm.output

    def st(rel, status, stage="transcribe", lang="", **cols):
        sets = ", ".join(["status = ?"] + ["%s = ?" % k for k in cols])
        assert farm.execute(
            "UPDATE jobs SET %s WHERE file_id = ? AND stage = ? AND lang = ?"
            % sets, [status] + list(cols.values()) +
            [ids[rel], stage, lang]) == 1

    def out(rel, suffix, stage="transcribe", lang=""):
        return farm.write_output(rel, stage, lang, suffix)

    # s00: completed, .txt deleted, its .json left -> not_started, no .json
    st("s00.wav", "completed"); out("s00.wav", ".json")
    # s01: not_started with .txt and .json on disk -> completed, both kept
    out("s01.wav", ".txt"); out("s01.wav", ".json")
    # s02: not_started with only .srt and .vtt (partial sidecars) -> removed
    out("s02.wav", ".srt"); out("s02.wav", ".vtt")
    # s03: failed transcript with a .json only -> removed, stays failed
    st("s03.wav", "failed", attempts=3, last_error="boom"); out("s03.wav", ".json")
    # s04: in-progress, owner dead, no output but a .vtt -> not_started
    st("s04.wav", "in-progress", owner_pid=dead, owner_master=dead)
    out("s04.wav", ".vtt")
    # s05: in-progress, owner dead, .txt written -> completed
    st("s05.wav", "in-progress", owner_pid=dead, owner_master=dead)
    out("s05.wav", ".txt")
    # s06: completed transcript and translation, translation's .txt gone
    #      but its .srt there -> translation not_started, .srt removed
    st("s06.wav", "completed"); out("s06.wav", ".txt"); out("s06.wav", ".json")
    st("s06.wav", "completed", "translate", "en")
    out("s06.wav", ".srt", "translate", "en")
    # s07: failed translation whose .txt exists -> completed
    st("s07.wav", "completed"); out("s07.wav", ".txt")
    st("s07.wav", "failed", "translate", "de", attempts=3)
    out("s07.wav", ".txt", "translate", "de")
    # s08: completed, .txt present, sidecars missing -> fine as it is
    st("s08.wav", "completed"); out("s08.wav", ".txt")
    # s09: all fine, every output
    st("s09.wav", "completed")
    for sfx in (".txt", ".json", ".srt", ".vtt"):
        out("s09.wav", sfx)
    # temp files a crash left
    touch(o / "transcripts" / ".mpfarm-tmp.4242.AbCdEf")
    touch(o / "translations" / "en" / ".mpfarm-tmp.4243.AbCdEf")
    # s10: in-progress, owner dead, .txt deleted and sidecars present
    st("s10.wav", "in-progress", owner_pid=dead, owner_master=dead)
    out("s10.wav", ".json"); out("s10.wav", ".srt")

    p = farm.run("check")
    assert p.returncode == 1, p.stdout
    assert "(mpfarm fix repairs them)" in p.stdout, p.stdout
    problems = [l for l in p.stdout.splitlines() if l.startswith("check: ")
                and "problems in" not in l]

    # --dry-run: database and tree untouched, the same changes listed
    digest, dump, files = snapshot(farm), farm.dump(), tree(o)
    p = farm.run("fix", "--dry-run", check=True)
    assert snapshot(farm) == digest and farm.dump() == dump
    assert tree(o) == files
    dry = [l for l in p.stdout.splitlines() if l.startswith("would fix:")]

    p = farm.run("fix", check=True)
    done = [l for l in p.stdout.splitlines() if l.startswith("fix: ") and
            "change" not in l]
    assert len(done) == len(dry), (dry, done)
    assert "%d changes made" % len(done) in p.stdout
    # every problem check saw was one fix repaired
    assert len(problems) <= len(done), (problems, done)

    s = states(farm)
    assert s["s00.wav:transcribe"] == "not_started"
    assert s["s01.wav:transcribe"] == "completed"
    assert s["s02.wav:transcribe"] == "not_started"
    assert s["s03.wav:transcribe"] == "failed"
    assert s["s04.wav:transcribe"] == "not_started"
    assert s["s05.wav:transcribe"] == "completed"
    assert s["s06.wav:translateen"] == "not_started"
    assert s["s07.wav:translatede"] == "completed"
    assert s["s08.wav:transcribe"] == "completed"
    assert s["s10.wav:transcribe"] == "not_started"
    left = tree(o)
    assert left == {
        b"transcripts/s01.wav.txt": 10, b"transcripts/s01.wav.json": 10,
        b"transcripts/s05.wav.txt": 10,
        b"transcripts/s06.wav.txt": 10, b"transcripts/s06.wav.json": 10,
        b"transcripts/s07.wav.txt": 10,
        b"translations/de/s07.wav.txt": 10,
        b"transcripts/s08.wav.txt": 10,
        b"transcripts/s09.wav.txt": 10, b"transcripts/s09.wav.json": 10,
        b"transcripts/s09.wav.srt": 10, b"transcripts/s09.wav.vtt": 10,
    }, left
    # no attempt left open by the crash
    assert farm.scalar("SELECT count(*) FROM attempts WHERE ended_at IS NULL") == 0

    p = farm.run("check")
    assert p.returncode == 0, p.stdout
    assert "no problems" in p.stdout

    # a second fix changes nothing at all
    dump = farm.dump()
    p = farm.run("fix", check=True)
    assert "nothing to fix" in p.stdout, p.stdout
    assert farm.dump() == dump and tree(o) == left


def test_check_and_fix_on_a_file_no_job_writes(farm):
    setup_files(farm, ["a.wav"])
    stray = farm.write_output("notes", suffix=".txt")
    p = farm.run("check")
    assert p.returncode == 1 and "matches no job" in p.stdout
    assert "mpfarm fix repairs" not in p.stdout
    p = farm.run("fix", check=True)
    assert "1 file under" in p.stdout and "left alone" in p.stdout
    assert os.path.exists(stray)
    assert farm.run("check").returncode == 1


class LiveMaster:
    """This test posing as a live master under its own pid: on SQLite it
    holds the farm lock (DB.lock); on PostgreSQL it is a host row of this
    machine, heartbeaten before every command (beat) as a master does."""

    HOST_ID = "f" * 32

    def __init__(self, farm):
        self.farm = farm
        self.fd = None
        if PG:
            now = int(time.time() * 1000)
            farm.execute("INSERT INTO hosts (host_id, hostname, pid, "
                         "started_at, seen_at, figures) VALUES "
                         "(?, ?, ?, ?, ?, '')", (self.HOST_ID,
                                                 socket.gethostname(),
                                                 os.getpid(), now, now))
        else:
            self.fd = os.open(str(farm.db) + ".lock",
                              os.O_RDWR | os.O_CREAT, 0o644)
            os.write(self.fd, b"%d\n" % os.getpid())
            fcntl.flock(self.fd, fcntl.LOCK_EX)

    def beat(self):
        if PG:
            assert self.farm.execute(
                "UPDATE hosts SET seen_at = ? WHERE host_id = ?",
                (int(time.time() * 1000), self.HOST_ID)) == 1

    def stop(self):
        """Gone the way a master stops: lock released / host row removed."""
        if PG:
            assert self.farm.execute("DELETE FROM hosts WHERE host_id = ?",
                                     (self.HOST_ID,)) == 1
        elif self.fd is not None:
            os.close(self.fd)
            self.fd = None


def test_fix_leaves_stale_outputs_to_a_running_farm(farm):
    """A live master (this test, under its own pid): a worker may be
    renaming onto a sidecar right now."""
    ids = setup_files(farm, ["a.wav"])
    side = farm.write_output("a.wav", suffix=".json")
    master = LiveMaster(farm)
    try:
        master.beat()
        p = farm.run("fix", check=True)
        assert "master pid %d is running" % os.getpid() in p.stdout
        assert "stale outputs left alone" in p.stdout
        master.beat()
        assert farm.run("check").returncode == 0
    finally:
        master.stop()
    assert os.path.exists(side)
    assert job(farm, ids["a.wav"])[1] == "not_started"
    p = farm.run("check")
    assert p.returncode == 1 and "a stale output" in p.stdout


# ---- the view reads everywhere ----------------------------------------------

BAD = b"bad\xff\\name \xc3.wav"             # invalid bytes and a backslash
BAD_ESC = "bad\\xff\\\\name \\xc3.wav"


def shell(farm, sql):
    """The store's command-line client (sqlite3, or PostgreSQL's psql,
    unaligned and without headers) running one statement."""
    if not PG:
        return farm.sqlite3_cli(sql)
    bins = sorted(pathlib.Path("/usr/lib/postgresql").glob("*/bin/psql"))
    return subprocess.run(
        [str(bins[-1]) if bins else "psql", "-X", "-A", "-t", "-v",
         "ON_ERROR_STOP=1", "-d", farm.db, "-c", sql], cwd=str(farm.path),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30,
        encoding="utf-8", errors="backslashreplace")


def test_view_valid_utf8_and_exact_bytes(farm):
    farm.write_config(CONF)
    touch(fsbytes(farm.media) + b"/" + BAD)
    touch(farm.media / "caf\u00e9.wav")
    touch(fsbytes(farm.media) + b"/tab\there.wav")
    farm.scan()
    media = os.path.realpath(farm.media)

    rows = farm.query("SELECT * FROM processing_status ORDER BY file_id")
    if PG:
        cols = [r[0] for r in farm.query(
            "SELECT column_name FROM information_schema.columns WHERE "
            "table_schema = current_schema() AND table_name = "
            "'processing_status' ORDER BY ordinal_position")]
    else:
        con = sqlite3.connect(str(farm.db))
        cols = [d[0] for d in con.execute(
            "SELECT * FROM processing_status").description]
        con.close()
    assert len(rows[0]) == len(cols)
    assert cols == ["file_id", "file_path", "status", "transcription_status",
                    "translation_en_status", "translation_de_status",
                    "file_path_bytes"]
    paths = [r[1] for r in rows]
    assert paths == [media + "/" + BAD_ESC, media + "/caf\u00e9.wav",
                     media + "/tab\\x09here.wav"]
    assert [bytes(r[6]) for r in rows] == [
        fsbytes(media) + b"/" + BAD, fsbytes(media + "/caf\u00e9.wav"),
        fsbytes(media) + b"/tab\there.wav"]
    # the store's own shell reads it too: sqlite3, or psql
    q = shell(farm, "SELECT file_path FROM processing_status "
              "WHERE file_id = 1")
    assert q.returncode == 0 and q.stdout.strip() == media + "/" + BAD_ESC

    # every command still finds the real file: run, outputs named by bytes
    farm.run("run", "--workers", "2", check=True)
    out = fsbytes(farm.output / "transcripts") + b"/" + BAD
    assert os.path.exists(out + b".txt")
    assert os.path.exists(fsbytes(farm.output / "translations" / "de") +
                          b"/" + BAD + b".txt")
    assert farm.scalar("SELECT count(*) FROM processing_status WHERE "
                       "status = 'completed'") == 3
    assert farm.run("check").returncode == 0

    # the escaped name names the file for retry
    fid = farm.scalar("SELECT file_id FROM processing_status WHERE "
                      "file_path_bytes = ?", (fsbytes(media) + b"/" + BAD,))
    fail(farm, fid)
    p = farm.run("retry", "--file", media + "/" + BAD_ESC, check=True)
    assert p.stdout.splitlines()[0].startswith(
        "retry: %s/%s: transcribe" % (media, BAD_ESC))
    assert p.stdout.splitlines()[-1] == "1 failed job back to not_started"
    # and the raw bytes too
    fail(farm, fid)
    p = farm.run("retry", "--file", fsbytes(media) + b"/" + BAD, check=True)
    assert p.stdout.splitlines()[-1] == "1 failed job back to not_started"


def test_migration_escapes_old_rows(farm):
    """A version-1 database with a non-UTF-8 name and message: the first
    read-write command migrates it and every text column decodes."""
    farm.write_config(CONF)
    touch(fsbytes(farm.media) + b"/" + BAD)
    farm.scan()
    con = sqlite3.connect(str(farm.db), isolation_level=None)
    con.executescript(
        "DROP VIEW processing_status;"
        "ALTER TABLE media_files DROP COLUMN abs_path_text;"
        "UPDATE jobs SET status = 'failed', "
        "last_error = CAST(X'6f70656e20ff2e776176' AS TEXT) "
        "WHERE stage = 'transcribe';"
        "CREATE VIEW processing_status AS SELECT file_id, "
        "CAST(abs_path AS TEXT) AS file_path FROM media_files;"
        "PRAGMA user_version = 2;")
    try:
        con.execute("SELECT * FROM processing_status").fetchall()
        raise AssertionError("a version-2 view should not decode")
    except sqlite3.OperationalError:
        pass
    con.close()
    farm.run("retry", "--dry-run").returncode   # read-only: no migration
    assert farm.scalar("PRAGMA user_version") == 2
    farm.scan()
    assert farm.scalar("PRAGMA user_version") == 5
    con = sqlite3.connect(str(farm.db))
    con.execute("SELECT * FROM processing_status").fetchall()
    assert con.execute("SELECT last_error FROM jobs WHERE stage = "
                       "'transcribe'").fetchone()[0] == "open \\xff.wav"
    assert con.execute("SELECT file_path FROM processing_status"
                       ).fetchone()[0].endswith("/" + BAD_ESC)
    con.close()


def test_migration_to_v4_keeps_the_running_attempt(farm):
    """A schema-3 database whose master died with a job running (its
    attempt row still open): the first read-write command migrates it, the
    running attempt is then its job's row (show lists it, the attempts
    table holds ended ones only), and the next run writes it down as
    interrupted and finishes the job under a later lease."""
    ids = setup_files(farm, ["a.mp3", "b.mp3"])
    dead = dead_pid()
    now = int(time.time() * 1000)
    ja = job(farm, ids["a.mp3"])[0]
    # PostgreSQL's leases and attempt ids come from one sequence
    lease = farm.scalar("SELECT nextval('mpfarm_lease')") if PG else 7
    version = ("SELECT max(version) FROM mpfarm_schema" if PG
               else "PRAGMA user_version")
    con = farm.connect()
    for sql in (
            "UPDATE jobs SET status = 'in-progress', attempts = 1, "
            "lease = %d, owner_pid = %d, owner_master = %d, started_at = %d "
            "WHERE job_id = %d" % (lease, dead, dead, now - 5000, ja),
            "INSERT INTO attempts (attempt_id, job_id, attempt, worker_pid, "
            "started_at) VALUES (%d, %d, 1, %d, %d)" % (lease, ja, dead,
                                                        now - 5000),
            "UPDATE mpfarm_schema SET version = 3" if PG
            else "PRAGMA user_version = 3"):
        con.execute(sql)
    con.close()
    assert farm.scalar(version) == 3
    farm.scan()
    assert farm.scalar(version) == 5
    assert farm.scalar("SELECT count(*) FROM attempts") == 0
    assert job(farm, ids["a.mp3"])[1:] == ("in-progress", 1)
    p = farm.run("show", "--json", farm.media / "a.mp3", check=True)
    tries = json.loads(p.stdout)["jobs"][0]["history"]
    assert [(t["attempt"], t["worker_pid"], t["outcome"], t["ended_at_ms"])
            for t in tries] == [(1, dead, None, None)]
    p = farm.run("show", farm.media / "a.mp3", check=True)
    assert "by worker pid %d: running" % dead in p.stdout

    farm.run("run", "--stage", "transcribe", check=True, timeout=60)
    assert farm.status_counts() == {"completed": 2}
    rows = farm.query("SELECT attempt, worker_pid, started_at, outcome, "
                      "message FROM attempts WHERE job_id = ? ORDER BY "
                      "attempt_id", (ja,))
    assert rows[0] == (1, dead, now - 5000, "interrupted",
                       "master pid %d is gone" % dead)
    assert [r[3] for r in rows] == ["interrupted", "completed"]
    # a later lease: the job's next claim count (SQLite), a later number
    # of the sequence (PostgreSQL)
    later = farm.scalar("SELECT lease FROM jobs WHERE job_id = ?", (ja,))
    assert later > lease if PG else later == lease + 1
    tries = json.loads(farm.run("show", "--json", farm.media / "a.mp3",
                                check=True).stdout)["jobs"][0]["history"]
    assert [t["outcome"] for t in tries] == ["interrupted", "completed"]
