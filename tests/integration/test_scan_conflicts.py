"""`mpfarm scan` meeting files whose output name is already taken.

Outputs are named by a file's path relative to the folder it was scanned
under, so two files of different folders can claim one name.  A file
planted under a name another file holds must not block the folder: it is
named on stderr and skipped, the summary counts it, the scan exits 1, and
everything else is registered, then and on every later scan.
`scan --dry-run` reports the same files the same way and writes nothing.
"""
import os
import pathlib
import re

import storelib
from conftest import fsbytes

CONF = """[transcribe]
provider = noop
[translate]
provider = noop
languages = en
"""

SUMMARY = re.compile(r"^(?:would scan|scanned) (.+): (\d+) new, (\d+) "
                     r"unchanged, (\d+) changed, (\d+) skipped \(not media\)"
                     r"(.*)$", re.M)


def summaries(out):
    return {m[0]: dict(new=int(m[1]), unchanged=int(m[2]),
                       changed=int(m[3]), extra=m[5])
            for m in SUMMARY.findall(out)}


def touch(p, data=b"fake media\n"):
    os.makedirs(os.path.dirname(fsbytes(p)), exist_ok=True)
    with open(fsbytes(p), "wb") as f:
        f.write(data)


def real(p):
    return pathlib.Path(os.path.realpath(p))


def registered(farm):
    """{rel: abs} of every registered file, as str."""
    return {bytes(r).decode(): bytes(a).decode() for r, a in farm.query(
        "SELECT rel_path, abs_path FROM media_files")}


def skipped_lines(err):
    """The conflict lines, without say_err's "mpfarm: " prefix."""
    lines = [ln[len("mpfarm: "):] if ln.startswith("mpfarm: ") else ln
             for ln in err.splitlines()]
    return [ln for ln in lines
            if ln.startswith(("scan: skipped ", "scan: would skip "))]


def setup_planted(farm):
    """Folder A registered with talk.mp3; folder B gets a planted talk.mp3
    beside two real new recordings."""
    farm.write_config(CONF)
    a, b = real(farm.path) / "A", real(farm.path) / "B"
    touch(a / "talk.mp3")
    touch(a / "sub" / "other.mp3")
    p = farm.run("scan", a)
    assert p.returncode == 0, p.stderr
    touch(b / "talk.mp3", b"planted\n")
    touch(b / "new1.mp3")
    touch(b / "deep" / "new2.wav")
    return a, b


def test_planted_file_is_skipped_and_the_rest_registered(farm):
    a, b = setup_planted(farm)
    jobs_before = farm.scalar("SELECT count(*) FROM jobs")
    p = farm.run("scan", b)
    assert p.returncode == 1
    (line,) = skipped_lines(p.stderr)
    assert line.startswith("scan: skipped %s: %s, registered before, "
                           % (b / "talk.mp3", a / "talk.mp3"))
    assert "(./output/transcripts/talk.mp3.txt)" in line
    s = summaries(p.stdout)[str(b)]
    assert (s["new"], s["unchanged"], s["changed"]) == (2, 0, 0)
    assert "1 skipped (output name taken, named above)" in s["extra"]
    reg = registered(farm)
    assert reg == {"talk.mp3": str(a / "talk.mp3"),
                   "sub/other.mp3": str(a / "sub" / "other.mp3"),
                   "new1.mp3": str(b / "new1.mp3"),
                   "deep/new2.wav": str(b / "deep" / "new2.wav")}
    # two new files, a transcription and one translation each
    assert farm.scalar("SELECT count(*) FROM jobs") == jobs_before + 4


def test_later_scans_still_register_new_files(farm):
    a, b = setup_planted(farm)
    assert farm.run("scan", b).returncode == 1
    touch(b / "new3.flac")
    p = farm.run("scan", b)
    assert p.returncode == 1
    assert len(skipped_lines(p.stderr)) == 1
    s = summaries(p.stdout)[str(b)]
    assert (s["new"], s["unchanged"]) == (1, 2)
    assert registered(farm)["new3.flac"] == str(b / "new3.flac")
    # the registered file keeps its name and its jobs
    assert registered(farm)["talk.mp3"] == str(a / "talk.mp3")
    # once the planted file is gone, the scan is clean again
    os.unlink(b / "talk.mp3")
    p = farm.run("scan", b)
    assert p.returncode == 0, p.stderr
    assert skipped_lines(p.stderr) == []
    assert "output name taken" not in p.stdout


def test_registered_file_still_scans_unchanged_beside_a_conflict(farm):
    a, b = setup_planted(farm)
    p = farm.run("scan", a, b)
    assert p.returncode == 1
    assert len(skipped_lines(p.stderr)) == 1
    sums = summaries(p.stdout)
    assert (sums[str(a)]["unchanged"], sums[str(b)]["new"]) == (2, 2)
    assert "output name taken" not in sums[str(a)]["extra"]


def test_dry_run_reports_conflicts_the_same_way(farm):
    a, b = setup_planted(farm)
    before = farm.dump()
    p = farm.run("scan", "--dry-run", b)
    assert p.returncode == 1
    (line,) = skipped_lines(p.stderr)
    assert line.startswith("scan: would skip %s: %s, registered before, "
                           % (b / "talk.mp3", a / "talk.mp3"))
    news = sorted(ln for ln in p.stdout.splitlines() if ln.startswith("new: "))
    assert news == ["new: %s" % (b / "deep" / "new2.wav"),
                    "new: %s" % (b / "new1.mp3")]
    s = summaries(p.stdout)[str(b)]
    assert s["new"] == 2
    assert "1 skipped (output name taken, named above)" in s["extra"]
    assert "1 file would be skipped (output name taken)" in p.stdout
    assert "4 jobs would be created" in p.stdout
    assert farm.dump() == before
    # and the real scan does what the dry run said
    p2 = farm.run("scan", b)
    assert p2.returncode == 1
    assert [ln.replace("would skip", "skipped") for ln in
            skipped_lines(p.stderr)] == skipped_lines(p2.stderr)


def test_dry_run_without_database_reports_conflicts_within_the_scan(farm):
    farm.write_config(CONF)
    a, b = real(farm.path) / "A", real(farm.path) / "B"
    touch(a / "x.mp3")
    touch(b / "x.mp3")
    touch(b / "y.mp3")
    p = farm.run("scan", "--dry-run", a, b)
    assert p.returncode == 1
    (line,) = skipped_lines(p.stderr)
    assert line.startswith("scan: would skip %s: %s, found first in this "
                           "scan, " % (b / "x.mp3", a / "x.mp3"))
    assert "nothing was written" in p.stdout
    if storelib.PG:
        # an empty database is where a first scan starts: nothing created
        assert "(no farm in this database yet)" in p.stdout
        assert farm.query("SELECT tablename FROM pg_tables WHERE "
                          "schemaname = current_schema()") == []
    else:
        assert "(no database yet)" in p.stdout
        assert not farm.db.exists()
    p = farm.run("scan", a, b)
    assert p.returncode == 1
    assert registered(farm) == {"x.mp3": str(a / "x.mp3"),
                                "y.mp3": str(b / "y.mp3")}


def test_conflicts_with_the_database_and_within_the_scan(farm):
    """Two new folders both hold a name already registered: each is
    skipped against the registered file, neither takes the name."""
    farm.write_config(CONF)
    a, b, c = (real(farm.path) / n for n in "ABC")
    touch(a / "x.mp3")
    assert farm.run("scan", a).returncode == 0
    touch(b / "x.mp3")
    touch(c / "x.mp3")
    touch(c / "z.mp3")
    p = farm.run("scan", b, c)
    assert p.returncode == 1
    lines = skipped_lines(p.stderr)
    assert len(lines) == 2
    assert all("%s, registered before" % (a / "x.mp3") in ln for ln in lines)
    assert registered(farm) == {"x.mp3": str(a / "x.mp3"),
                                "z.mp3": str(c / "z.mp3")}


def test_farm_runs_what_was_registered(farm):
    a, b = setup_planted(farm)
    assert farm.run("scan", b).returncode == 1
    p = farm.run("run")
    assert p.returncode == 0, p.stderr
    assert farm.scalar("SELECT count(*) FROM jobs WHERE status != "
                       "'completed'") == 0
    assert farm.scalar("SELECT count(*) FROM jobs") == 8
