"""The bookkeeping commands on the real binary and real trees: scan, status,
retry, fix and check, and how every command meets bad input (missing or
unreadable folders, malformed config, corrupt or locked database).

Job states are set by hand with SQL (the store's schema: media_files, jobs)
the way an operator with the sqlite3 shell or a crash would leave them, and
the tests assert the exact database state each command leaves behind.

Permission tests: the suite usually runs as root, for whom chmod 000 means
nothing; they then run mpfarm as uid 65534 through setpriv(1) in a
world-writable working directory (skipped if setpriv is missing).
"""
import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import re
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time

import pytest

import storelib
from conftest import Farm, dead_pid, fsbytes

CONF = """[transcribe]
provider = noop
[translate]
provider = noop
languages = en,de
"""

SUMMARY = re.compile(r"^scanned (.+): (\d+) new, (\d+) unchanged, (\d+) changed, "
                     r"(\d+) skipped \(not media\)(.*)$", re.M)


def summaries(out):
    return [dict(root=m[0], new=int(m[1]), unchanged=int(m[2]),
                 changed=int(m[3]), skipped=int(m[4]), extra=m[5])
            for m in SUMMARY.findall(out)]


def touch(p, data=b"fake media\n"):
    p = fsbytes(p)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)
    return p


def file_ids(farm):
    """file_id by rel path (bytes)."""
    return {bytes(r): i for i, r in farm.query(
        "SELECT file_id, rel_path FROM media_files")}


def job_id(farm, fid, stage="transcribe", lang=""):
    return farm.scalar("SELECT job_id FROM jobs WHERE file_id = ? AND "
                       "stage = ? AND lang = ?", (fid, stage, lang))


def job_row(farm, jid):
    return farm.query("SELECT status, ready, owner_pid FROM jobs WHERE "
                      "job_id = ?", (jid,))[0]


def set_job(farm, fid, status, stage="transcribe", lang="", **cols):
    sets = ["status = ?"]
    vals = [status]
    for k, v in cols.items():
        sets.append("%s = ?" % k)
        vals.append(v)
    n = farm.execute("UPDATE jobs SET %s WHERE file_id = ? AND stage = ? "
                     "AND lang = ?" % ", ".join(sets),
                     vals + [fid, stage, lang])
    assert n == 1


def in_progress(farm, fid, stage="transcribe", lang="", owner=None,
                age_s=5):
    owner = owner or dead_pid()
    set_job(farm, fid, "in-progress", stage, lang, owner_pid=owner,
            owner_master=owner, lease=424242,
            started_at=int(time.time() * 1000) - age_s * 1000)
    return owner


def sha(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def store_relations(db):
    """How many relations (tables, views, sequences, indexes) the store
    db holds; on SQLite 0 when the file does not exist (never created)."""
    if not storelib.PG:
        if not os.path.exists(str(db)):
            return 0
        con = storelib.connect(db)
        try:
            return con.execute("SELECT count(*) FROM sqlite_master")\
                .fetchone()[0]
        finally:
            con.close()
    con = storelib.connect(db)
    try:
        return con.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON "
            "n.oid = c.relnamespace WHERE n.nspname = current_schema()")\
            .fetchone()[0]
    finally:
        con.close()


def no_store(farm):
    """The commands run so far left no store behind: on SQLite no database
    file; on PostgreSQL no schema in the test's database (and no SQLite
    file in the working directory either)."""
    if storelib.PG:
        return (store_relations(farm.db) == 0 and
                not (farm.path / "media_tracking.db").exists())
    return not farm.db.exists()


def db_name(farm):
    """How mpfarm names the farm's store in its messages."""
    return farm.db if storelib.PG else "media_tracking.db"


@pytest.fixture
def cfarm(farm):
    farm.write_config(CONF)
    return farm


# ---- scan ---------------------------------------------------------------

def test_scan_registers_media_only(cfarm):
    m = cfarm.media
    for rel in ["a.mp3", "B.WAV", "sub/c.Mp4", "sub/deep/d.flac",
                "notes.txt", "cover.jpg", "sub/.mpfarm-tmp.12.abcdef",
                "x.mp3.part", "._a.mp3"]:
        touch(m / rel, b"x" * 10)
    p = cfarm.scan()
    assert p.returncode == 0, p.stderr
    (s,) = summaries(p.stdout)
    assert s["root"] == os.path.realpath(m)
    assert (s["new"], s["unchanged"], s["changed"], s["skipped"]) == (4, 0, 0, 2)
    assert "3 temporary or system files skipped" in s["extra"]
    rows = cfarm.query("SELECT rel_path, abs_path, scan_root, size, mtime_ns "
                       "FROM media_files ORDER BY rel_path")
    rels = [bytes(r[0]) for r in rows]
    assert rels == [b"B.WAV", b"a.mp3", b"sub/c.Mp4", b"sub/deep/d.flac"]
    root = os.path.realpath(m).encode()
    for rel, ab, sroot, size, mtime in rows:
        assert bytes(ab) == root + b"/" + bytes(rel)
        assert bytes(sroot) == root
        st = os.stat(bytes(ab))
        assert (size, mtime) == (st.st_size, st.st_mtime_ns)
    assert cfarm.status_counts() == {"not_started": 4}
    assert cfarm.status_counts("translate", "en") == {"not_started": 4}
    assert cfarm.status_counts("translate", "de") == {"not_started": 4}
    # translations wait for their transcript
    assert cfarm.scalar("SELECT sum(ready) FROM jobs WHERE stage = "
                        "'translate'") == 0


def test_scan_odd_names_stored_exactly(cfarm):
    names = [b"with space.mp3", b"new\nline.mp3", b"bad\xff\xfe.mp3",
             "\u00fcn\u00efcode.wav".encode(), b'quote"back\\slash.ogg',
             b"-dash.mp3", b"dir\nwith newline/in.mp3", b"tab\there.m4a"]
    for n in names:
        touch(fsbytes(cfarm.media) + b"/" + n)
    p = cfarm.scan()
    assert p.returncode == 0, p.stderr
    # one summary line, nothing broken over lines by the names
    assert p.stdout.count("\n") == 1
    assert summaries(p.stdout)[0]["new"] == len(names)
    got = sorted(bytes(r[0]) for r in cfarm.query(
        "SELECT rel_path FROM media_files"))
    assert got == sorted(names)
    # the other commands cope with them too
    assert cfarm.run("status").returncode == 0
    assert cfarm.run("check").returncode == 0
    for n in names:
        cfarm.write_output(n)
    p = cfarm.run("fix", check=True)
    assert p.stdout.count("-> completed") == len(names)
    assert all("\n" not in line for line in p.stdout.splitlines())
    assert "\\x0a" in p.stdout or "\\n" in p.stdout   # escaped, not raw
    assert cfarm.status_counts() == {"completed": len(names)}
    assert cfarm.status_counts("translate", "en") == {"not_started": len(names)}
    assert cfarm.scalar("SELECT count(*) FROM jobs WHERE stage = 'translate' "
                        "AND ready = 1") == 2 * len(names)
    p = cfarm.run("check")
    assert p.returncode == 0, p.stdout + p.stderr


def test_rescan_is_idempotent(cfarm):
    cfarm.make_tree(1000)
    touch(cfarm.media / "readme.txt")
    p = cfarm.scan()
    assert summaries(p.stdout)[0]["new"] == 1000
    p = cfarm.scan()
    s = summaries(p.stdout)[0]
    assert (s["new"], s["unchanged"], s["changed"], s["skipped"]) == (0, 1000, 0, 1)
    assert cfarm.scalar("SELECT count(*) FROM media_files") == 1000
    assert cfarm.query("SELECT stage, lang, count(*) FROM jobs GROUP BY 1, 2 "
                       "ORDER BY 1, 2") == [("transcribe", "", 1000),
                                            ("translate", "de", 1000),
                                            ("translate", "en", 1000)]
    # a new file is the only thing a third scan adds
    touch(cfarm.media / "late" / "new.opus")
    s = summaries(cfarm.scan().stdout)[0]
    assert (s["new"], s["unchanged"]) == (1, 1000)
    assert cfarm.scalar("SELECT count(*) FROM jobs") == 3003


def test_scan_reports_changed_files(cfarm):
    a = touch(cfarm.media / "a.mp3", b"12345")
    b = touch(cfarm.media / "b.mp3", b"12345")
    touch(cfarm.media / "c.mp3", b"12345")
    cfarm.scan()
    with open(a, "ab") as f:
        f.write(b"more")
    st = os.stat(b)
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))
    p = cfarm.scan()
    s = summaries(p.stdout)[0]
    assert (s["new"], s["unchanged"], s["changed"]) == (0, 1, 2)
    changed = [l for l in p.stdout.splitlines() if l.startswith("changed:")]
    assert len(changed) == 2
    assert any(os.fsdecode(a) in l and "5 -> 9 bytes" in l for l in changed)
    assert any(os.fsdecode(b) in l for l in changed)
    assert cfarm.scalar("SELECT size FROM media_files WHERE rel_path = "
                        "CAST('a.mp3' AS BLOB)") == 9
    s = summaries(cfarm.scan().stdout)[0]
    assert (s["unchanged"], s["changed"]) == (3, 0)


def test_scan_new_language_adds_jobs(cfarm):
    cfarm.make_tree(20)
    cfarm.scan()
    cfarm.write_config(CONF.replace("en,de", "en,de,he"))
    s = summaries(cfarm.scan().stdout)[0]
    assert s["unchanged"] == 20
    assert cfarm.status_counts("translate", "he") == {"not_started": 20}
    # the view has the new language's column, with its jobs' values
    assert cfarm.query("SELECT translation_he_status, count(*) FROM "
                       "processing_status GROUP BY 1") == [("not_started", 20)]


def rels(farm):
    return sorted(bytes(r[0]) for r in farm.query(
        "SELECT rel_path FROM media_files"))


def abs_of(farm, rel):
    return bytes(farm.scalar("SELECT abs_path FROM media_files WHERE "
                             "rel_path = CAST(? AS BLOB)", (rel,)))


def test_scan_conflict_in_one_command_skips_the_later_name(cfarm):
    a, b = cfarm.path / "A", cfarm.path / "B"
    touch(a / "x.mp3")
    touch(a / "y.mp3")
    touch(b / "x.mp3")
    touch(b / "z.mp3")
    a, b = pathlib.Path(os.path.realpath(a)), pathlib.Path(os.path.realpath(b))
    p = cfarm.run("scan", b, a)
    assert p.returncode == 1
    # the root given first keeps the name; the other file is named, skipped
    assert "skipped %s: %s, found first" % (a / "x.mp3", b / "x.mp3") \
        in p.stderr
    sb, sa = summaries(p.stdout)
    assert (sb["new"], sa["new"]) == (2, 1)
    assert "1 skipped (output name taken" in sa["extra"]
    assert "output name taken" not in sb["extra"]
    assert rels(cfarm) == [b"x.mp3", b"y.mp3", b"z.mp3"]
    assert abs_of(cfarm, "x.mp3") == fsbytes(b / "x.mp3")
    assert cfarm.scalar("SELECT count(*) FROM jobs") == 9


def test_scan_conflict_with_earlier_scan_skips_only_it(cfarm):
    a, b = cfarm.path / "A", cfarm.path / "B"
    touch(a / "x.mp3")
    touch(a / "y.mp3")
    touch(b / "x.mp3")
    touch(b / "z.mp3")
    a, b = pathlib.Path(os.path.realpath(a)), pathlib.Path(os.path.realpath(b))
    cfarm.run("scan", a, check=True)
    cfarm.write_config(CONF.replace("en,de", "en,de,he"))
    p = cfarm.run("scan", b)
    assert p.returncode == 1
    assert "skipped %s: %s, registered before" % (b / "x.mp3", a / "x.mp3") \
        in p.stderr
    (s,) = summaries(p.stdout)
    assert s["new"] == 1 and "1 skipped (output name taken" in s["extra"]
    assert rels(cfarm) == [b"x.mp3", b"y.mp3", b"z.mp3"]
    assert abs_of(cfarm, "x.mp3") == fsbytes(a / "x.mp3")
    # the new language is recorded: every registered file gets its job
    assert cfarm.status_counts("translate", "he") == {"not_started": 3}


def test_scan_same_or_nested_roots_once(cfarm):
    touch(cfarm.media / "a.mp3")
    touch(cfarm.media / "sub" / "b.mp3")
    p = cfarm.run("scan", cfarm.media, cfarm.media / "sub", cfarm.media)
    assert p.returncode == 0, p.stderr
    assert "inside" in p.stderr
    assert len(summaries(p.stdout)) == 1
    assert cfarm.scalar("SELECT count(*) FROM media_files") == 2


def test_scan_subfolder_of_earlier_root_keeps_first_name(cfarm):
    touch(cfarm.media / "a.mp3")
    touch(cfarm.media / "sub" / "b.mp3")
    cfarm.scan()
    p = cfarm.run("scan", cfarm.media / "sub")
    assert p.returncode == 0, p.stderr
    s = summaries(p.stdout)[0]
    assert (s["new"], s["unchanged"]) == (0, 1)
    assert sorted(bytes(r[0]) for r in cfarm.query(
        "SELECT rel_path FROM media_files")) == [b"a.mp3", b"sub/b.mp3"]
    # but a name another file already holds is a conflict: that file is
    # skipped, the database keeps what it had
    touch(cfarm.media / "sub" / "a.mp3")
    before = cfarm.dump()
    p = cfarm.run("scan", cfarm.media / "sub")
    assert p.returncode == 1
    assert "skipped %s" % os.path.realpath(cfarm.media / "sub" / "a.mp3") \
        in p.stderr
    assert cfarm.dump() == before


def test_scan_missing_folder(cfarm):
    touch(cfarm.media / "a.mp3")
    p = cfarm.run("scan", cfarm.media, "no-such-folder")
    assert p.returncode == 2
    assert "no-such-folder" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert no_store(cfarm)


def test_scan_file_instead_of_folder(cfarm):
    touch(cfarm.media / "a.mp3")
    p = cfarm.run("scan", cfarm.media / "a.mp3")
    assert p.returncode == 2
    assert "a.mp3" in p.stderr and "not a folder" in p.stderr
    assert no_store(cfarm)


def test_scan_needs_a_folder(cfarm):
    p = cfarm.run("scan")
    assert p.returncode == 2
    assert "folder" in p.stderr


def test_scan_does_not_loop_on_symlinks(cfarm):
    touch(cfarm.media / "a.mp3")
    os.symlink("..", cfarm.media / "up")
    os.symlink(".", cfarm.media / "self")
    os.symlink("missing.mp3", cfarm.media / "broken.mp3")
    p = cfarm.run("scan", cfarm.media, timeout=20)
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("skipped symbolic link") == 3
    assert cfarm.scalar("SELECT count(*) FROM media_files") == 1
    p = cfarm.run("scan", "--follow-symlinks", cfarm.media, timeout=20)
    assert p.returncode == 0, p.stderr
    assert "never followed" in p.stderr and "broken" in p.stderr
    assert cfarm.scalar("SELECT count(*) FROM media_files") == 1


@pytest.fixture
def nobody_farm():
    """A farm in a world-writable folder, for mpfarm run as uid 65534."""
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot test "
                    "permissions")
    d = tempfile.mkdtemp(prefix="mpfarm-perm-")
    os.chmod(d, 0o777)
    f = Farm(d)
    f.write_config(CONF)
    os.chmod(f.path / "mpfarm.conf", 0o644)
    yield f
    f.stop_all()
    for dirpath, dirnames, _ in os.walk(d):
        for n in dirnames:
            os.chmod(os.path.join(dirpath, n), 0o755)
    shutil.rmtree(d)


def test_scan_unreadable_subfolder_and_file(nobody_farm):
    f = nobody_farm
    touch(f.media / "ok.mp3")
    touch(f.media / "locked" / "hidden.mp3")
    secret = touch(f.media / "secret.mp3")
    os.chmod(f.media / "locked", 0)
    os.chmod(secret, 0)
    p = f.run("scan", f.media, user=65534)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "locked" in p.stderr and "secret.mp3" in p.stderr
    assert "Permission denied" in p.stderr
    s = summaries(p.stdout)[0]
    assert s["new"] == 1 and "2 unreadable" in s["extra"]
    assert [bytes(r[0]) for r in f.query("SELECT rel_path FROM media_files")] \
        == [b"ok.mp3"]


def test_scan_unreadable_root(nobody_farm):
    f = nobody_farm
    touch(f.media / "ok.mp3")
    os.chmod(f.media, 0)
    p = f.run("scan", f.media, user=65534)
    assert p.returncode == 2
    assert str(f.media) in p.stderr and "Permission denied" in p.stderr
    assert no_store(f)


# ---- status -------------------------------------------------------------

def status_fixture(farm):
    """10 files in a known mix of states (see the assertions)."""
    for i in range(10):
        touch(farm.media / ("f%d.mp3" % i))
    farm.scan()
    ids = file_ids(farm)
    fid = [ids[b"f%d.mp3" % i] for i in range(10)]
    for i in range(4):
        set_job(farm, fid[i], "completed")
    set_job(farm, fid[4], "failed", attempts=3, last_error="boom")
    in_progress(farm, fid[5], age_s=125)
    set_job(farm, fid[6], "not_started",
            run_after=int(time.time() * 1000) + 3600 * 1000)
    set_job(farm, fid[0], "completed", "translate", "en")
    set_job(farm, fid[1], "failed", "translate", "en")
    return fid


def test_status_json_exact(cfarm):
    status_fixture(cfarm)
    p = cfarm.run("status", "--json", check=True)
    j = json.loads(p.stdout)
    assert j["files"] == 10
    assert j["stages"] == {
        "transcribe": {"not_started": 4, "in-progress": 1, "completed": 4,
                       "failed": 1},
        "translate:en": {"not_started": 8, "in-progress": 0, "completed": 1,
                         "failed": 1},
        "translate:de": {"not_started": 10, "in-progress": 0, "completed": 0,
                         "failed": 0},
    }
    assert j["waiting_for_transcript"] == {"translate:en": 6,
                                           "translate:de": 6}
    assert j["waiting_for_retry"]["transcribe"] == 1
    assert 120 <= j["oldest_in_progress_age_s"] < 200
    assert "farm" not in j


def test_status_text_like_current_status_report(cfarm):
    status_fixture(cfarm)
    out = cfarm.run("status", check=True).stdout
    assert "Files: 10" in out
    assert ("Transcription:\n- Completed: 4 files\n"
            "- Not started: 4 files (1 waiting for retry)\n"
            "- In progress: 1 file\n- Failed: 1 file\n") in out
    assert ("English Translations:\n- Completed: 1 file\n"
            "- Not started: 8 files (6 waiting for transcript)\n"
            "- In progress: 0 files\n- Failed: 1 file\n") in out
    assert "German Translations:\n- Completed: 0 files\n" in out
    assert re.search(r"Oldest job in progress: running for 2m 0\ds", out)


def test_status_empty_db_and_missing_db(cfarm):
    p = cfarm.run("status")
    assert p.returncode == 1
    assert db_name(cfarm) in p.stderr
    assert no_store(cfarm)
    cfarm.media.mkdir()
    cfarm.scan()
    j = json.loads(cfarm.run("status", "--json", check=True).stdout)
    assert j["files"] == 0
    assert j["oldest_in_progress_age_s"] is None


def test_status_reads_beside_a_writer(cfarm):
    status_fixture(cfarm)
    con = cfarm.connect()
    con.execute("BEGIN IMMEDIATE")
    con.execute("UPDATE jobs SET attempts = attempts")
    try:
        p = cfarm.run("status", "--json", timeout=10)
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["files"] == 10
    finally:
        con.execute("ROLLBACK")
        con.close()


def test_status_shows_farm_file(cfarm):
    status_fixture(cfarm)
    sp = pathlib.Path(str(cfarm.db) + ".status")
    sp.write_text(json.dumps({"pid": os.getpid(), "workers_target": 5,
                              "workers_live": 4, "workers_busy": 2,
                              "busy": 2}))
    # a live pid without the farm lock is not a master (pid reuse)
    j = json.loads(cfarm.run("status", "--json", check=True).stdout)
    assert j["farm"]["stale"] is True
    with open(str(cfarm.db) + ".lock", "w") as lock:
        lock.write("%d\n" % os.getpid())
        lock.flush()
        fcntl.flock(lock, fcntl.LOCK_EX)
        j = json.loads(cfarm.run("status", "--json", check=True).stdout)
        assert j["farm"]["pid"] == os.getpid() and j["farm"]["stale"] is False
        assert j["farm"]["busy"] == 2
        out = cfarm.run("status", check=True).stdout
    assert "Farm:" in out and "running" in out
    assert "- Workers: 4 of 5 running, 2 busy" in out
    gone = dead_pid()
    sp.write_text(json.dumps({"pid": gone, "workers": 5}))
    j = json.loads(cfarm.run("status", "--json", check=True).stdout)
    assert j["farm"]["stale"] is True
    assert "stale" in cfarm.run("status", check=True).stdout


def view_lines(farm, sql):
    """One query's rows as the shell prints them ("a|b" a line): through
    the sqlite3 shell on SQLite; on PostgreSQL (no sqlite3 shell there)
    through the test's own connection."""
    if storelib.PG:
        return ["|".join("" if v is None else str(v) for v in row)
                for row in farm.query(sql)]
    q = farm.sqlite3_cli(sql)
    assert q.returncode == 0, q.stderr
    return q.stdout.splitlines()


def test_processing_status_view_with_sqlite3_shell(cfarm):
    status_fixture(cfarm)
    assert view_lines(cfarm, "SELECT transcription_status, COUNT(*) FROM "
                      "processing_status GROUP BY 1 ORDER BY 1") == [
        "completed|4", "failed|1", "in-progress|1", "not_started|4"]
    assert view_lines(cfarm, "SELECT translation_en_status, COUNT(*) FROM "
                      "processing_status GROUP BY translation_en_status "
                      "ORDER BY 1") == [
        "completed|1", "failed|1", "not_started|8"]
    assert view_lines(cfarm, "SELECT status, COUNT(*) FROM "
                      "processing_status GROUP BY status ORDER BY 1") == [
        "failed|2", "in-progress|4", "not_started|4"]
    lines = view_lines(cfarm, "SELECT file_id, file_path, "
                       "translation_de_status FROM processing_status "
                       "ORDER BY file_id LIMIT 1")
    assert len(lines) == 1, lines
    fid, path, de = lines[0].split("|")
    assert path.startswith(os.path.realpath(cfarm.media)) and de == "not_started"


# ---- retry --------------------------------------------------------------

def test_retry_by_stage_and_language(cfarm):
    for i in range(6):
        touch(cfarm.media / ("f%d.mp3" % i))
    cfarm.scan()
    fid = sorted(file_ids(cfarm).values())
    for i in (0, 1):
        set_job(cfarm, fid[i], "failed", attempts=3, last_error="bad")
    for i in (2, 3, 4):
        set_job(cfarm, fid[i], "completed")
    set_job(cfarm, fid[2], "failed", "translate", "en", attempts=3)
    set_job(cfarm, fid[3], "failed", "translate", "de", attempts=3)
    set_job(cfarm, fid[4], "failed", "translate", "de", attempts=2)

    p = cfarm.run("retry", "--stage", "translate", "--language", "de",
                  check=True)
    assert p.stdout.splitlines()[-1] == "2 failed jobs back to not_started"
    assert cfarm.status_counts("translate", "de") == {"not_started": 6}
    assert cfarm.scalar("SELECT max(attempts) FROM jobs WHERE lang = 'de'") == 0
    assert cfarm.status_counts("translate", "en")["failed"] == 1
    assert cfarm.status_counts()["failed"] == 2

    p = cfarm.run("retry", "--stage", "transcribe", check=True)
    assert p.stdout.splitlines()[-1] == "2 failed jobs back to not_started"
    assert cfarm.status_counts() == {"not_started": 3, "completed": 3}

    p = cfarm.run("retry", check=True)
    assert p.stdout.splitlines()[-1] == "1 failed job back to not_started"
    assert cfarm.scalar("SELECT count(*) FROM jobs WHERE status = 'failed'") == 0
    assert cfarm.run("retry", check=True).stdout.strip() == \
        "0 failed jobs back to not_started"


def test_retry_unknown_language(cfarm):
    cfarm.media.mkdir()
    cfarm.scan()
    p = cfarm.run("retry", "--language", "xx")
    assert p.returncode == 2 and "xx" in p.stderr


# ---- fix ----------------------------------------------------------------

def fix_fixture(farm):
    """Files a..f with one inconsistency each; returns {name: file_id}."""
    farm.write_config(CONF.replace("en,de", "en"))
    for n in "abcdef":
        touch(farm.media / "sub" / (n + ".mp3"))
    farm.scan()
    ids = {k.decode()[4]: v for k, v in file_ids(farm).items()}
    # a: in-progress, output missing, owner gone -> not_started
    in_progress(farm, ids["a"])
    touch(fsbytes(farm.output / "transcripts/sub/.mpfarm-tmp.999.XyZ123"))
    # b: in-progress, output whole, owner gone -> completed
    in_progress(farm, ids["b"])
    farm.write_output("sub/b.mp3")
    farm.write_output("sub/b.mp3", suffix=".json", text=b"{}")
    # c: not_started, output whole -> completed (translation made ready)
    farm.write_output("sub/c.mp3")
    # d: completed, output missing -> not_started (translation waits again)
    set_job(farm, ids["d"], "completed")
    # e: failed, output whole -> completed; its translation exists too
    set_job(farm, ids["e"], "failed", attempts=3)
    farm.write_output("sub/e.mp3")
    farm.write_output("sub/e.mp3", "translate", "en")
    # f: completed with its output: left alone
    set_job(farm, ids["f"], "completed")
    farm.write_output("sub/f.mp3")
    return ids


def test_fix_dry_run_changes_nothing(farm):
    ids = fix_fixture(farm)
    before = farm.dump()
    p = farm.run("fix", "--dry-run", check=True)
    assert farm.dump() == before
    assert (farm.output / "transcripts/sub/.mpfarm-tmp.999.XyZ123").exists()
    lines = [l for l in p.stdout.splitlines() if l.startswith("would fix:")]
    assert len(lines) == 7   # a, b, c, d, e, e's translation, the temp file
    assert any("job %d transcribe" % job_id(farm, ids["a"]) in l and
               "in-progress -> not_started" in l for l in lines)
    assert "nothing changed" in p.stdout


def test_fix_reconciles(farm):
    ids = fix_fixture(farm)
    ja = job_id(farm, ids["a"])
    owner = farm.scalar("SELECT owner_pid FROM jobs WHERE job_id = ?", (ja,))
    p = farm.run("fix", check=True)
    media = os.path.realpath(farm.media)
    assert ("fix: job %d transcribe %s/sub/a.mp3: in-progress -> not_started "
            "(output missing, owner %d gone)" % (ja, media, owner)) in p.stdout
    st = {n: job_row(farm, job_id(farm, ids[n])) for n in "abcdef"}
    assert st == {"a": ("not_started", 1, None), "b": ("completed", 1, None),
                  "c": ("completed", 1, None), "d": ("not_started", 1, None),
                  "e": ("completed", 1, None), "f": ("completed", 1, None)}
    tr = {n: job_row(farm, job_id(farm, ids[n], "translate", "en"))[:2]
          for n in "abcdef"}
    # translations are ready exactly when their transcript is completed
    assert tr == {"a": ("not_started", 0), "b": ("not_started", 1),
                  "c": ("not_started", 1), "d": ("not_started", 0),
                  "e": ("completed", 1), "f": ("not_started", 1)}
    assert not (farm.output / "transcripts/sub/.mpfarm-tmp.999.XyZ123").exists()
    assert "removed stale temp file" in p.stdout
    # the attempt a crash left open is closed
    assert farm.scalar("SELECT count(*) FROM attempts WHERE ended_at IS NULL") == 0
    assert "7 changes made" in p.stdout
    # idempotent, and check agrees
    p = farm.run("fix", check=True)
    assert "nothing to fix" in p.stdout
    p = farm.run("check")
    assert p.returncode == 0, p.stdout


@contextlib.contextmanager
def posing_as_master(farm):
    """This test process as the farm's live master: on SQLite it holds the
    farm lock (a flock on DB.lock naming its pid); on PostgreSQL, which
    has no lock file, it is a host row of this machine with its pid and a
    fresh heartbeat."""
    if storelib.PG:
        now = int(time.time() * 1000)
        farm.execute("INSERT INTO hosts (host_id, hostname, pid, started_at, "
                     "seen_at) VALUES (?, ?, ?, ?, ?)",
                     ("test-posing-master", socket.gethostname(), os.getpid(),
                      now, now))
        try:
            yield
        finally:
            farm.execute("DELETE FROM hosts WHERE host_id = ?",
                         ("test-posing-master",))
        return
    with open(str(farm.db) + ".lock", "w") as lock:
        lock.write("%d\n" % os.getpid())
        lock.flush()
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def test_fix_leaves_a_running_farm_alone(farm):
    ids = fix_fixture(farm)
    with posing_as_master(farm):
        p = farm.run("fix", check=True)
    assert "master pid %d is running" % os.getpid() in p.stdout
    assert job_row(farm, job_id(farm, ids["a"]))[0] == "in-progress"
    assert job_row(farm, job_id(farm, ids["b"]))[0] == "in-progress"
    assert (farm.output / "transcripts/sub/.mpfarm-tmp.999.XyZ123").exists()
    # the rules that do not touch in-progress jobs still apply
    assert job_row(farm, job_id(farm, ids["c"]))[0] == "completed"
    assert job_row(farm, job_id(farm, ids["d"]))[0] == "not_started"


def test_fix_leaves_job_of_live_owner(farm):
    ids = fix_fixture(farm)
    with subprocess.Popen(["sleep", "30"]) as live:
        try:
            in_progress(farm, ids["a"], owner=live.pid)
            farm.run("fix", check=True)
            assert job_row(farm, job_id(farm, ids["a"]))[0] == "in-progress"
        finally:
            live.kill()


# ---- check --------------------------------------------------------------

def test_check_clean(cfarm):
    cfarm.make_tree(30)
    cfarm.scan()
    for rel in [bytes(r[0]) for r in cfarm.query(
            "SELECT rel_path FROM media_files")][:10]:
        cfarm.write_output(rel)
        cfarm.write_output(rel, suffix=".json", text=b"{}")
        cfarm.write_output(rel, "translate", "de")
    cfarm.run("fix", check=True)
    p = cfarm.run("check")
    assert p.returncode == 0, p.stdout
    assert p.stdout.strip() == "check: 30 files, 90 jobs, no problems"


def test_check_finds_every_problem(farm):
    farm.write_config(CONF.replace("en,de", "en"))
    for n in "abcd":
        touch(farm.media / (n + ".mp3"))
    farm.scan()
    ids = {k.decode()[0]: v for k, v in file_ids(farm).items()}
    set_job(farm, ids["a"], "completed")                    # output missing
    farm.write_output("b.mp3")                              # job not_started
    owner = in_progress(farm, ids["c"])                     # owner gone
    farm.write_output("stray.mp3")                          # matches no job
    farm.write_output("d.mp3", "translate", "en", ".srt")   # not completed
    touch(fsbytes(farm.output / "translations/en/.mpfarm-tmp.1.abc"))
    before = farm.dump()
    p = farm.run("check")
    assert p.returncode == 1
    assert farm.dump() == before
    out = p.stdout
    ja, jb, jc = (job_id(farm, ids[n]) for n in "abc")
    jd = job_id(farm, ids["d"], "translate", "en")
    assert re.search(r"job %d transcribe .*/a\.mp3: completed but its output "
                     r".*transcripts/a\.mp3\.txt is missing" % ja, out)
    assert re.search(r"transcripts/b\.mp3\.txt exists but job %d is "
                     r"not_started" % jb, out)
    assert re.search(r"job %d transcribe .*c\.mp3: in-progress but its owner "
                     r"%d is gone" % (jc, owner), out)
    assert re.search(r"transcripts/stray\.mp3\.txt matches no job", out)
    assert re.search(r"translations/en/d\.mp3\.srt exists but job %d is "
                     r"not_started" % jd, out)
    assert "stale temp file" in out
    assert "check: 6 problems" in out


# ---- bad input ----------------------------------------------------------

@pytest.mark.parametrize("text,line", [
    ("[farm]\nworkers = lots\n", 2),
    ("[transcribe]\nprovider = noop\n[farm\n", 3),
    ("[farm]\n\n\nbogus_key = 1\n", 4),
])
def test_malformed_config(farm, text, line):
    farm.write_config(text)
    farm.media.mkdir()
    for cmd in (["status"], ["scan", farm.media], ["check"], ["fix"],
                ["retry"]):
        p = farm.run(*cmd)
        assert p.returncode == 2, (cmd, p.stderr)
        assert "mpfarm.conf:%d" % line in p.stderr, p.stderr
    assert no_store(farm)


def test_corrupt_database(cfarm):
    cfarm.media.mkdir()
    touch(cfarm.media / "a.mp3")
    cfarm.db.write_bytes(os.urandom(16384))
    digest = sha(cfarm.db)
    for cmd in (["status"], ["status", "--json"], ["scan", cfarm.media],
                ["check"], ["fix"], ["fix", "--dry-run"], ["retry"]):
        p = cfarm.run(*cmd)
        assert p.returncode not in (0, 2) and p.returncode > 0, (cmd, p)
        assert "media_tracking.db" in p.stderr, (cmd, p.stderr)
        assert "not a database" in p.stderr, (cmd, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert sha(cfarm.db) == digest


def test_locked_database(cfarm):
    cfarm.write_config(CONF + "[farm]\nbusy_timeout = 300\n")
    for i in range(3):
        touch(cfarm.media / ("f%d.mp3" % i))
    cfarm.scan()
    touch(cfarm.media / "new.mp3")
    set_job(cfarm, 1, "failed")
    set_job(cfarm, 2, "completed")          # output missing: fix must write
    # a writer gives up after busy_timeout: behind SQLite's write lock, or
    # on PostgreSQL behind the row locks another session holds
    # (lock_timeout), with the database named
    if storelib.PG:
        con = cfarm.connect()
        con.execute("BEGIN")
        why, name = "lock timeout", cfarm.db
    else:
        con = sqlite3.connect(str(cfarm.db), isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        why, name = "locked", "media_tracking.db"
    con.execute("UPDATE jobs SET attempts = attempts")
    try:
        for cmd in (["scan", cfarm.media], ["retry"], ["fix"]):
            t0 = time.monotonic()
            p = cfarm.run(*cmd, timeout=20)
            took = time.monotonic() - t0
            assert p.returncode == 1, (cmd, p.stdout, p.stderr)
            assert why in p.stderr and name in p.stderr, p.stderr
            # named once, not "DB: DB: ..."
            assert p.stderr.count(name) == 1, p.stderr
            assert took < 5, took
    finally:
        con.execute("ROLLBACK")
        con.close()
    assert cfarm.scalar("SELECT count(*) FROM media_files") == 3
    assert cfarm.status_counts() == {"failed": 1, "completed": 1,
                                     "not_started": 1}
    # read-only commands still work while a writer holds the lock (WAL);
    # on PostgreSQL while a writer holds every job row locked
    if storelib.PG:
        con = cfarm.connect()
        con.execute("BEGIN")
    else:
        con = sqlite3.connect(str(cfarm.db), isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
    con.execute("UPDATE jobs SET attempts = attempts")
    try:
        assert cfarm.run("status", timeout=20).returncode == 0
        p = cfarm.run("check", timeout=20)
        assert p.returncode == 1 and "completed but its output" in p.stdout
    finally:
        con.execute("ROLLBACK")
        con.close()


def test_unknown_command_and_option(farm):
    p = farm.run("frobnicate")
    assert p.returncode == 2 and "frobnicate" in p.stderr
    p = farm.run("status", "--frobnicate")
    assert p.returncode == 2 and "--frobnicate" in p.stderr
    p = farm.run("status", "extra-arg")
    assert p.returncode == 2 and "extra-arg" in p.stderr
    p = farm.run("retry", "--stage", "sideways")
    assert p.returncode == 2 and "sideways" in p.stderr
    assert no_store(farm)


def test_db_from_environment(cfarm):
    touch(cfarm.media / "a.mp3")
    # on PostgreSQL the farm's own database is named by MPFARM_DB already:
    # the variable given here names another one instead
    other = storelib.pg_new_db() if storelib.PG else \
        str(cfarm.path / "elsewhere.db")
    p = cfarm.run("scan", cfarm.media, env={"MPFARM_DB": other})
    assert p.returncode == 0, p.stderr
    assert store_relations(other) > 0 and no_store(cfarm)
    j = json.loads(cfarm.run("status", "--json", "--db", other,
                             check=True).stdout)
    assert j["files"] == 1


def test_scan_ten_thousand_files_quickly(cfarm):
    cfarm.make_tree(10000, per_dir=500)
    t0 = time.monotonic()
    p = cfarm.scan()
    took = time.monotonic() - t0
    assert summaries(p.stdout)[0]["new"] == 10000
    assert took < 10 * (4 if os.environ.get("MPFARM_SANITIZED") else 1), took
    t0 = time.monotonic()
    cfarm.run("status", check=True)
    assert time.monotonic() - t0 < 5 * (4 if os.environ.get(
        "MPFARM_SANITIZED") else 1)
