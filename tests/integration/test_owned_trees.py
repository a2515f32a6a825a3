"""mpfarm writes only inside the trees it owns (issue 9 items 1-2) and
checks before paying (issue 8 item 6), on the real binary against the fake
provider: a symbolic link planted in the output tree or beside the database
is never followed (its target is byte-for-byte untouched), the job or the
run fails with a message naming the path, and no provider is called for a
job whose outputs could not be written."""
import os
import shutil
import signal

import pytest

from conftest import wait_for
from test_commands import nobody_farm  # noqa: F401
from test_providers import ENV, config, fake, media  # noqa: F401

__all__ = ["fake", "nobody_farm"]   # the fixtures, imported for pytest

NOOP = "[transcribe]\nprovider = noop\n[translate]\nprovider = noop\n" \
       "languages = en\n"
TRANSCRIBE_ONLY = "[transcribe]\nprovider = noop\n"


def requests(fake):
    return fake.stats()["requests"]


def snapshot(root):
    """Every path under root with its bytes (or link target): to show a
    tree untouched."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            if os.path.islink(p):
                out[p] = ("link", os.readlink(p))
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    out[p] = ("file", f.read(), os.stat(p).st_mode)
            else:
                out[p] = ("dir", os.stat(p).st_mode)
    return out


@pytest.fixture
def elsewhere(tmp_path):
    """A folder outside the farm with something precious in it."""
    d = tmp_path / "elsewhere"
    d.mkdir()
    (d / "keep.wav.txt").write_bytes(b"precious\n")
    (d / ".mpfarm-tmp.1.abcdef").write_bytes(b"not mpfarm's\n")
    return d


# ---- the output tree -----------------------------------------------------

def plant(farm, fake, names, link, target):
    """A scanned farm on the fake provider with a link at output/LINK to
    target; returns target's snapshot."""
    farm.write_config(config(fake, langs="de"))
    for i, name in enumerate(names):
        media(farm, name, b"audio %d" % i)
    farm.scan()
    (farm.output / link).parent.mkdir(parents=True)
    os.symlink(target, farm.output / link)
    return snapshot(target)


def test_symlinked_output_folder_fails_job_without_a_call(farm, fake,
                                                          elsewhere):
    before = plant(farm, fake, ["sub/keep.wav", "sub/other.wav", "top.wav"],
                   "transcripts/sub", elsewhere)
    p = farm.run("run", env=ENV)
    assert p.returncode == 3, p.stderr
    assert snapshot(elsewhere) == before
    rows = farm.query(
        "SELECT m.rel_path, j.status, j.attempts, j.last_error FROM jobs j "
        "JOIN media_files m USING (file_id) WHERE j.stage = 'transcribe' "
        "ORDER BY 1")
    by = {bytes(r[0]) if isinstance(r[0], bytes) else r[0].encode(): r[1:]
          for r in rows}
    for name in (b"sub/keep.wav", b"sub/other.wav"):
        status, attempts, err = by[name]
        assert status == "failed" and attempts == 1, by[name]
        assert "transcripts/sub" in err and "symbolic link" in err, err
    assert by[b"top.wav"][0] == "completed"
    # the good file paid its two calls (transcript, translation); the two
    # under the link paid nothing
    log = fake.stats()["log"]
    assert len(log) == 2, log
    assert not any("keep" in str(e) or "other" in str(e) for e in log), log
    assert (farm.output / "transcripts" / "top.wav.txt").is_file()


def test_symlinked_language_folder_stops_the_run(farm, fake, elsewhere):
    before = plant(farm, fake, ["a.wav"], "translations/de", elsewhere)
    p = farm.run("run", env=ENV)
    assert p.returncode == 2, p.stderr
    assert "translations/de" in p.stderr and "symbolic link" in p.stderr
    assert p.stderr.count("symbolic link") == 1, p.stderr
    assert requests(fake) == 0
    assert snapshot(elsewhere) == before
    assert farm.status_counts() == {"not_started": 1}


def test_fix_and_check_never_follow_a_language_link(farm, elsewhere):
    farm.write_config(NOOP)
    farm.make_tree(2, per_dir=10)
    farm.scan()
    assert farm.run("run").returncode == 0
    lang = farm.output / "translations" / "en"
    # the real folder moves away; a link to a folder outside takes its
    # place, with a temp file and an output there that mpfarm must not see
    shutil.rmtree(lang)
    os.symlink(elsewhere, lang)
    (elsewhere / "d000").mkdir()
    (elsewhere / "d000" / "rec000000.mp3.txt").write_bytes(b"outside\n")
    (elsewhere / "d000" / ".mpfarm-tmp.7.zzzzzz").write_bytes(b"x")
    before = snapshot(elsewhere)

    c = farm.run("check")
    assert c.returncode == 1, c.stdout + c.stderr
    assert "translations/en" in c.stdout and "symbolic link" in c.stdout
    assert "stale temp" not in c.stdout

    f = farm.run("fix")
    assert "symbolic link" in f.stdout, f.stdout + f.stderr
    assert "removed stale temp" not in f.stdout
    assert snapshot(elsewhere) == before
    assert os.path.islink(lang)
    # the translations whose outputs are not in the tree go back to run
    assert farm.status_counts("translate", "en") == {"not_started": 2}


def test_temp_cleanup_after_a_crash_stays_in_the_tree(farm, elsewhere):
    """A dead farm's in-progress job: the next run removes its worker's
    temps, reached without following a link planted on the way."""
    farm.write_config(TRANSCRIBE_ONLY)
    farm.make_tree(1, per_dir=10)
    farm.scan()
    pid = 4242424
    farm.execute("UPDATE jobs SET status = 'in-progress', owner_pid = ?, "
                 "attempts = 1 WHERE stage = 'transcribe'", (pid,))
    (farm.output / "transcripts").mkdir(parents=True)
    os.symlink(elsewhere, farm.output / "transcripts" / "d000")
    (elsewhere / (".mpfarm-tmp.%d.qqqqqq" % pid)).write_bytes(b"x")
    before = snapshot(elsewhere)
    p = farm.run("run")
    assert p.returncode == 3, p.stderr
    assert snapshot(elsewhere) == before
    err = farm.scalar("SELECT last_error FROM jobs")
    assert "symbolic link" in err and "transcripts/d000" in err


def test_name_too_long_for_the_output_folder_fails_without_a_call(farm,
                                                                   fake):
    farm.write_config(config(fake, langs="de"))
    long = "n" * 249 + ".wav"       # +".json" is 258 bytes: over NAME_MAX
    media(farm, long, b"audio")
    media(farm, "ok.wav", b"audio")
    farm.scan()
    p = farm.run("run", env=ENV)
    assert p.returncode == 3, p.stderr
    rows = farm.query("SELECT status, attempts, last_error FROM jobs "
                      "WHERE stage = 'transcribe' ORDER BY status")
    assert [r[0] for r in rows] == ["completed", "failed"], rows
    row = rows[1]
    assert row[1] == 1 and long in row[2], row
    assert "ENAMETOOLONG" in row[2] and "too long" in row[2], row
    assert all("nnnn" not in str(e) for e in fake.stats()["log"])
    assert len(fake.stats()["log"]) == 2        # ok.wav: transcript + de


# ---- files beside the database --------------------------------------------

def test_link_at_lock_file_is_refused(farm, elsewhere):
    farm.write_config(NOOP)
    farm.make_tree(1)
    farm.scan()
    target = elsewhere / "keep.wav.txt"
    os.symlink(target, str(farm.db) + ".lock")
    before = snapshot(elsewhere)
    p = farm.run("run")
    assert p.returncode == 1, p.stderr
    assert ".lock" in p.stderr and "symbolic link" in p.stderr
    assert snapshot(elsewhere) == before
    assert farm.status_counts() == {"not_started": 1}
    # read-only commands treat it as no lock at all, and leave it
    assert farm.run("status").returncode == 0
    assert snapshot(elsewhere) == before


def test_link_at_status_file_is_refused(farm, elsewhere):
    farm.write_config(NOOP)
    farm.make_tree(1)
    farm.scan()
    os.symlink(elsewhere / "keep.wav.txt", str(farm.db) + ".status")
    before = snapshot(elsewhere)
    p = farm.run("run")
    assert p.returncode == 2, p.stderr
    assert ".status" in p.stderr and "symbolic link" in p.stderr
    assert snapshot(elsewhere) == before


def test_status_temp_is_never_a_fixed_name(farm, elsewhere):
    """The old fixed temp name <db>.status.tmp, planted as a link, is not
    written through while the master refreshes its status file."""
    farm.write_config(NOOP)
    farm.make_tree(2)
    farm.scan()
    os.symlink(elsewhere / "keep.wav.txt", str(farm.db) + ".status.tmp")
    before = snapshot(elsewhere)
    p = farm.popen("run", "--watch", "--check-interval", "1")
    status = str(farm.db) + ".status"
    wait_for(lambda: os.path.isfile(status) and
             not os.path.islink(status), timeout=30)
    os.kill(p.pid, signal.SIGTERM)
    assert farm.wait(p) == 0
    assert snapshot(elsewhere) == before
    assert os.path.islink(str(farm.db) + ".status.tmp")
    leftovers = [n for n in os.listdir(farm.path)
                 if n.startswith("media_tracking.db.status")]
    assert leftovers == ["media_tracking.db.status.tmp"], leftovers


def test_link_at_log_file_is_refused(farm, elsewhere):
    farm.write_config(NOOP)
    farm.make_tree(1)
    farm.scan()
    log = farm.path / "farm.log"
    os.symlink(elsewhere / "keep.wav.txt", log)
    before = snapshot(elsewhere)
    p = farm.run("run", "--log-file", log)
    assert p.returncode == 1, p.stderr
    assert "farm.log" in p.stderr and "symbolic link" in p.stderr
    assert snapshot(elsewhere) == before
    assert farm.status_counts() == {"not_started": 1}


# ---- permissions: run as an unprivileged user -----------------------------

def chown_tree(root, uid):
    if os.geteuid() != 0:
        pytest.skip("needs root to run mpfarm as another user")
    os.chown(root, uid, uid)
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            os.chown(os.path.join(dirpath, n), uid, uid)


def scanned_as_nobody(f, fake, names):
    """Media scanned by uid 65534 into a farm on the fake provider."""
    f.write_config(config(fake, langs="de"))
    for i, name in enumerate(names):
        media(f, name, b"audio %d" % i)
    chown_tree(f.media, 65534)
    assert f.run("scan", f.media, user=65534).returncode == 0


def test_unwritable_output_subfolder_makes_no_call(nobody_farm, fake):
    f = nobody_farm
    scanned_as_nobody(f, fake, ["locked/r%d.wav" % i for i in range(5)])
    sub = f.output / "transcripts" / "locked"
    sub.mkdir(parents=True)
    chown_tree(f.output, 65534)
    os.chmod(sub, 0o555)
    p = f.run("run", env=ENV, user=65534)
    assert p.returncode == 3, p.stderr
    assert requests(fake) == 0
    rows = f.query("SELECT status, attempts, last_error FROM jobs "
                   "WHERE stage = 'transcribe'")
    assert len(rows) == 5
    for status, attempts, err in rows:
        assert status == "failed" and attempts == 1, rows
        assert "EACCES" in err and "transcripts/locked" in err, err
    assert os.listdir(sub) == []


def test_unwritable_output_root_stops_the_run(nobody_farm, fake):
    f = nobody_farm
    scanned_as_nobody(f, fake, ["r%d.wav" % i for i in range(3)])
    f.output.mkdir()
    os.chmod(f.output, 0o755)           # root's: not writable by 65534
    p = f.run("run", env=ENV, user=65534)
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert "not writable" in lines[0] and "./output" in lines[0]
    assert "EACCES" in lines[0]
    assert requests(fake) == 0
    assert f.status_counts() == {"not_started": 3}
    assert "worker_spawn" not in p.stderr
