"""`mpfarm failed` and `mpfarm show`: answers without SQL, over a database
filled by a real run against the fake provider (two transcriptions refused
with HTTP 400).  Outputs, --json shapes, filters, the ways to name a file,
and a file that is not there."""
import json
import os

import storelib
from servelib import (ENV, FAILED_TRANSCRIPTS, HOSTILE, NAMES,  # noqa: F401
                      fake, filled)


def failed_rows(farm):
    """The failed jobs, their paths (BLOB / bytea in the store) as text."""
    rows = farm.query(
        "SELECT f.abs_path, j.stage, j.lang, j.attempts, "
        "j.last_error, j.file_id FROM jobs j JOIN media_files f USING "
        "(file_id) WHERE j.status = 'failed' ORDER BY f.rel_path")
    return [(bytes(r[0]).decode("utf-8"),) + tuple(r[1:]) for r in rows]


def test_failed_lists_each_failed_job(filled):
    farm = filled
    p = farm.run("failed", check=True)
    lines = p.stdout.splitlines()
    rows = failed_rows(farm)
    assert len(lines) == len(rows) == FAILED_TRANSCRIPTS
    for line, (path, stage, lang, attempts, err, _) in zip(lines, rows):
        assert line.startswith(path + "  transcribe  ")
        assert "%d attempt" % attempts in line
        assert err and "400" in err and line.endswith(err)


def test_failed_json_shape_and_filters(filled):
    farm = filled
    doc = json.loads(farm.run("failed", "--json", check=True).stdout)
    rows = failed_rows(farm)
    assert doc["count"] == len(doc["failed"]) == len(rows)
    for item, (path, stage, lang, attempts, err, fid) in zip(doc["failed"],
                                                            rows):
        assert set(item) == {"job_id", "file_id", "file", "stage",
                             "language", "attempts", "failed_at_ms",
                             "last_error"}
        assert (item["file"], item["stage"], item["attempts"],
                item["last_error"], item["file_id"]) == (
                    path, stage, attempts, err, fid)
        assert item["language"] is None
        assert isinstance(item["failed_at_ms"], int)
    # the translations never failed: filters find nothing, exit 0
    p = farm.run("failed", "--stage", "translate", "--json", check=True)
    assert json.loads(p.stdout) == {"count": 0, "failed": []}
    p = farm.run("failed", "--language", "de", check=True)
    assert p.stdout == "" and "no failed jobs" in p.stderr
    p = farm.run("failed", "--stage", "transcribe", "--json", check=True)
    assert json.loads(p.stdout)["count"] == FAILED_TRANSCRIPTS
    # a translation made to fail shows up under its language only
    farm.execute("UPDATE jobs SET status = 'failed', last_error = 'x' "
                 "WHERE job_id = (SELECT min(job_id) FROM jobs WHERE lang = "
                 "'fr' AND status = 'completed')")
    fr = json.loads(farm.run("failed", "--language", "fr", "--json",
                             check=True).stdout)
    assert fr["count"] == 1 and fr["failed"][0]["language"] == "fr"
    assert fr["failed"][0]["stage"] == "translate"
    assert json.loads(farm.run("failed", "--language", "de", "--json",
                               check=True).stdout)["count"] == 0


def test_show_completed_file_every_way_to_name_it(filled):
    farm = filled
    rel = NAMES[0]
    fid, status = farm.query(
        "SELECT file_id, status FROM processing_status WHERE file_path = ?",
        (str(farm.media / rel),))[0]
    if status != "completed":       # the 400s may have hit this one
        fid, abs_path = farm.query(
            "SELECT file_id, file_path FROM processing_status WHERE status "
            "= 'completed' ORDER BY file_id LIMIT 1")[0]
        rel = os.path.relpath(abs_path, farm.media)
    ways = [str(farm.media / rel), "media/" + rel, "./media/" + rel, rel,
            str(fid)]
    outs = [farm.run("show", w, "--json", check=True).stdout for w in ways]
    assert all(o == outs[0] for o in outs)
    doc = json.loads(outs[0])
    assert doc["file_id"] == fid and doc["rel_path"] == rel
    assert doc["file"] == str(farm.media / rel) and doc["exists"] is True
    assert [(j["stage"], j["language"], j["status"]) for j in doc["jobs"]] \
        == [("transcribe", None, "completed"), ("translate", "de",
            "completed"), ("translate", "fr", "completed")]
    for j in doc["jobs"]:
        assert j["attempts"] == 1 and j["last_error"] is None
        assert len(j["history"]) == 1
        h = j["history"][0]
        assert h["outcome"] == "completed" and h["attempt"] == 1
        assert h["worker_pid"] > 0 and h["ended_at_ms"] >= h["started_at_ms"]
        paths = [o["path"] for o in j["outputs"]]
        assert any(p.endswith(rel + ".txt") for p in paths)
        for o in j["outputs"]:
            assert os.path.getsize(os.path.join(farm.path, o["path"])) \
                == o["bytes"]
    # the text form says the same
    text = farm.run("show", str(fid), check=True).stdout
    assert text.startswith("File %d: %s\n" % (fid, farm.media / rel))
    assert "\ntranscribe: completed, 1 attempt\n" in text
    assert "\ntranslate:fr: completed, 1 attempt\n" in text
    assert text.count("by worker pid") == 3


def test_show_failed_file_history(filled):
    farm = filled
    path, _, _, attempts, err, fid = failed_rows(farm)[0]
    doc = json.loads(farm.run("show", path, "--json", check=True).stdout)
    tr = doc["jobs"][0]
    assert tr["status"] == "failed" and tr["last_error"] == err
    assert tr["outputs"] == []
    assert [h["http_status"] for h in tr["history"]] == [400] * attempts
    assert all(h["outcome"] == "permanent" for h in tr["history"])
    assert all(j["status"] == "not_started" and j["history"] == []
               for j in doc["jobs"][1:])
    text = farm.run("show", path, check=True).stdout
    assert ": permanent, HTTP 400" in text and "- last error: " in text


def test_show_hostile_name_is_plain_text(filled):
    farm = filled
    p = farm.run("show", "media/" + HOSTILE, check=True)
    assert p.stdout.startswith("File ")
    assert HOSTILE in p.stdout.splitlines()[0]


def test_show_unknown_file_exits_1(filled):
    farm = filled
    for what in ("media/nope.mp3", "/nowhere/x.mp3", "999999"):
        p = farm.run("show", what)
        assert p.returncode == 1 and p.stdout == ""
        assert "show: no file" in p.stderr and "file id" in p.stderr
    p = farm.run("show")
    assert p.returncode == 2 and "show needs a file" in p.stderr


def test_failed_and_show_without_database(farm):
    farm.write_config("[transcribe]\nprovider = noop\n[translate]\n"
                      "provider = noop\nlanguages = en\n")
    for args in (("failed",), ("show", "x.mp3")):
        p = farm.run(*args)
        assert p.returncode == 1, p.stderr
        assert p.stdout == ""
        if storelib.PG:
            # the database is there (a server's); the schema is not
            assert farm.db in p.stderr
            assert "no mpfarm schema" in p.stderr
        else:
            assert "media_tracking.db" in p.stderr
    if storelib.PG:
        # read-only commands: nothing created in the empty database
        assert farm.query(
            "SELECT tablename FROM pg_tables WHERE schemaname = "
            "current_schema()") == []
    else:
        assert not farm.db.exists()


def test_env_is_unused(filled):
    # failed and show never need a key: run them with none
    farm = filled
    assert ENV and farm.run("failed", "--json", check=True).returncode == 0
