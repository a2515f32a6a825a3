"""Media files are read only as the scan registered them (issue 9, item 3):
symbolic links among the recordings are skipped by scan and never read,
a folder swapped for a link or a file replaced after the scan fails the job
before any provider call, --follow-symlinks takes links that stay inside a
scan root, exec engines read the checked file through /dev/fd/N, and
`scan --dry-run` writes nothing.  Providers are tests/fake_provider.py on
127.0.0.1; its ledger proves what was (not) uploaded."""
import hashlib
import os

from test_providers import ENV, config, fake, fake_provider  # noqa: F401
import pytest

SECRET = b"-----BEGIN PRIVATE KEY----- not for upload\n"


def sha12(data):
    return hashlib.sha256(data).hexdigest()[:12]


def uploads(fake):
    """(path, filename) of every transcription request the fake received."""
    return [(e["path"], e.get("filename")) for e in fake.stats()["log"]
            if e["path"] in ("/v1/speech-to-text", "/v1/audio/transcriptions")]


def secret_file(farm, name="secret.mp3"):
    d = farm.path / "private"
    d.mkdir(exist_ok=True)
    p = d / name
    p.write_bytes(SECRET)
    return p


def assert_secret_never_sent(farm, fake):
    """Neither the secret's digest (what the fake's transcript carries)
    nor its bytes show up in any output or the database."""
    blobs = ["\n".join(farm.dump()).encode()]
    if farm.output.exists():
        blobs += [p.read_bytes() for p in farm.output.rglob("*")
                  if p.is_file()]
    for b in blobs:
        assert sha12(SECRET).encode() not in b
        assert SECRET.strip() not in b
    for e in fake.stats()["log"]:
        assert "private" not in str(e.get("filename"))


def jobs(farm):
    """(rel path, status, attempts, last error) of each transcription, by
    path (the path a BLOB/bytea on either store: decoded here)."""
    return sorted((bytes(r).decode(), *rest) for r, *rest in farm.query(
        "SELECT f.rel_path, j.status, j.attempts, j.last_error "
        "FROM jobs j JOIN media_files f USING (file_id) "
        "WHERE j.stage = 'transcribe'"))


def test_scan_skips_planted_links_and_nothing_is_uploaded(farm, fake):
    farm.write_config(config(fake, langs="de"))
    good = farm.media / "good.mp3"
    good.parent.mkdir(parents=True)
    good.write_bytes(b"SAY:hello there")
    secret = secret_file(farm)
    os.symlink(secret, farm.media / "evil.mp3")
    os.symlink(farm.path / "private", farm.media / "linked_folder")
    p = farm.run("scan", farm.media)
    assert p.returncode == 0, p.stderr
    assert "skipped symbolic link" in p.stderr
    assert str(farm.media / "evil.mp3") in p.stderr
    assert str(farm.media / "linked_folder") in p.stderr
    assert "2 symbolic links skipped" in p.stdout
    assert [r[0] for r in jobs(farm)] == ["good.mp3"]
    r = farm.run("run", env=ENV)
    assert r.returncode == 0, r.stderr
    assert uploads(fake) == [("/v1/speech-to-text", "good.mp3")]
    assert not (farm.output / "transcripts" / "evil.mp3.txt").exists()
    assert_secret_never_sent(farm, fake)


def test_folder_swapped_for_link_after_scan_fails_before_upload(farm, fake):
    farm.write_config(config(fake, langs="de"))
    sub = farm.media / "sub"
    sub.mkdir(parents=True)
    (sub / "talk.mp3").write_bytes(b"SAY:the real talk")
    farm.scan()
    # the attacker's folder holds a file of the very same name
    secret_file(farm, "talk.mp3")
    os.rename(sub, farm.media / "sub.orig")
    os.symlink(farm.path / "private", sub)
    r = farm.run("run", env=ENV)
    assert r.returncode != 0 or "failed=1" in r.stderr
    (rel, status, attempts, err), = jobs(farm)
    assert (rel, status, attempts) == ("sub/talk.mp3", "failed", 1)
    assert str(sub / "talk.mp3") in err and "symbolic link" in err
    assert uploads(fake) == []
    assert fake.stats()["requests"] == 0
    assert_secret_never_sent(farm, fake)


def test_file_swapped_for_link_after_scan_fails_before_upload(farm, fake):
    farm.write_config(config(fake, langs="de"))
    f = farm.media / "a.mp3"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"SAY:original")
    farm.scan()
    secret = secret_file(farm)
    f.unlink()
    os.symlink(secret, f)
    farm.run("run", env=ENV)
    (_, status, _, err), = jobs(farm)
    assert status == "failed" and "symbolic link" in err
    assert fake.stats()["requests"] == 0
    assert_secret_never_sent(farm, fake)


def test_replaced_file_fails_then_rescan_registers_it(farm, fake):
    farm.write_config(config(fake, langs="de"))
    a = farm.media / "a.mp3"
    b = farm.media / "b.mp3"
    a.parent.mkdir(parents=True)
    a.write_bytes(b"SAY:first take")
    b.write_bytes(b"SAY:same size A")
    farm.scan()
    # a: another file, another size; b: same size and mtime, new inode
    tmp = farm.media / "a.new"
    tmp.write_bytes(b"SAY:second, longer take")
    os.rename(tmp, a)
    st = b.stat()
    tmp = farm.media / "b.new"
    tmp.write_bytes(b"SAY:same size B")
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.rename(tmp, b)
    assert b.stat().st_size == st.st_size and b.stat().st_ino != st.st_ino
    farm.run("run", "--stage", "transcribe", env=ENV)
    rows = jobs(farm)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("a.mp3", "failed", 1), ("b.mp3", "failed", 1)]
    for rel, _, _, err in rows:
        assert str(farm.media / rel) in err
        assert "changed since the scan" in err and "mpfarm scan" in err
    assert fake.stats()["requests"] == 0
    p = farm.scan()
    assert "changed: " + str(a) in p.stdout
    assert "changed: " + str(b) in p.stdout
    assert [r[1] for r in jobs(farm)] == ["not_started", "not_started"]
    farm.run("run", "--stage", "transcribe", env=ENV)
    assert [r[1] for r in jobs(farm)] == ["completed", "completed"]
    txt = (farm.output / "transcripts" / "b.mp3.txt").read_text()
    assert txt == "same size B\n"


def test_follow_symlinks_inside_root_only(farm, fake):
    farm.write_config(config(fake, langs="de"))
    real = farm.media / "takes" / "real.wav"
    real.parent.mkdir(parents=True)
    data = b"RIFF the real recording bytes"
    real.write_bytes(data)
    os.symlink("takes/real.wav", farm.media / "alias.wav")
    os.symlink(secret_file(farm), farm.media / "escape.mp3")
    p = farm.run("scan", "--follow-symlinks", farm.media)
    assert p.returncode == 0, p.stderr
    assert "1 symbolic link followed" in p.stdout
    assert str(farm.media / "escape.mp3") in p.stderr
    assert "outside the scan roots" in p.stderr
    assert [r[0] for r in jobs(farm)] == ["alias.wav", "takes/real.wav"]
    r = farm.run("run", "--stage", "transcribe", env=ENV)
    assert r.returncode == 0, r.stderr
    assert sorted(uploads(fake)) == [("/v1/speech-to-text", "alias.wav"),
                                     ("/v1/speech-to-text", "real.wav")]
    txt = (farm.output / "transcripts" / "alias.wav.txt").read_text()
    assert txt == fake_provider.expected_transcript("alias.wav", data) + "\n"
    assert_secret_never_sent(farm, fake)
    # the link retargeted outside after the scan: still the checked file,
    # or nothing (the worker never opens the link itself)
    farm.execute("UPDATE jobs SET status = 'not_started', attempts = 0")
    os.unlink(farm.media / "alias.wav")
    os.symlink(farm.path / "private" / "secret.mp3", farm.media / "alias.wav")
    farm.run("run", "--stage", "transcribe", env=ENV)
    assert_secret_never_sent(farm, fake)


def test_follow_symlinks_config_key(farm):
    farm.write_config("[farm]\nfollow_symlinks = yes\n[transcribe]\n"
                      "provider = noop\n[translate]\nprovider = noop\n"
                      "languages = en\n")
    (farm.media / "d").mkdir(parents=True)
    (farm.media / "d" / "x.mp3").write_bytes(b"x")
    os.symlink("d/x.mp3", farm.media / "y.mp3")
    p = farm.scan()
    assert "1 symbolic link followed" in p.stdout
    assert farm.scalar("SELECT count(*) FROM media_files") == 2


def test_exec_reads_the_checked_file_through_dev_fd(farm):
    data = b"bytes of the recording\nsecond line\n"
    farm.write_config(
        "[transcribe]\nprovider = exec\n[translate]\nprovider = noop\n"
        "languages = en\n[exec]\ntranscribe_command = sh -c "
        "'printf \"%s\\n\" \"$1\"; cat \"$1\"' engine {input}\n")
    (farm.media).mkdir()
    (farm.media / "rec.wav").write_bytes(data)
    farm.scan()
    r = farm.run("run", "--stage", "transcribe")
    assert r.returncode == 0, r.stderr
    out = (farm.output / "transcripts" / "rec.wav.txt").read_bytes()
    first, rest = out.split(b"\n", 1)
    assert first.startswith(b"/dev/fd/") and int(first[8:]) >= 3
    assert rest == data


def snapshot(farm):
    return {n: (farm.path / n).read_bytes() for n in os.listdir(farm.path)
            if n.startswith("media_tracking.db")}


def test_scan_dry_run_writes_nothing(farm):
    farm.write_config("[transcribe]\nprovider = noop\n[translate]\n"
                      "provider = noop\nlanguages = en\n")
    farm.make_tree(3)
    p = farm.run("scan", "--dry-run", farm.media)
    assert p.returncode == 0, p.stderr
    assert not any(n.startswith("media_tracking.db")
                   for n in os.listdir(farm.path))
    assert p.stdout.count("new: ") == 3
    assert "3 new files" in p.stdout and "6 jobs would be created" in p.stdout
    farm.scan()
    before_dump = farm.dump()
    before = snapshot(farm)
    # one file changed, one new, and a new language
    paths = sorted(farm.media.rglob("*.*"))
    paths[0].write_bytes(b"a different, longer recording")
    farm.make_tree(1, start=3)
    farm.write_config("[transcribe]\nprovider = noop\n[translate]\n"
                      "provider = noop\nlanguages = en,fr\n")
    p = farm.run("scan", "--dry-run", farm.media)
    assert p.returncode == 0, p.stderr
    assert snapshot(farm) == before
    assert farm.dump() == before_dump
    assert p.stdout.count("new: ") == 1
    assert "changed: " + str(paths[0]) in p.stdout
    assert "would start again" in p.stdout
    assert "new language fr: 3 registered files" in p.stdout
    # 1 new file x (1 + 2 languages) + fr for the 3 registered files
    assert "6 jobs would be created" in p.stdout
    assert "nothing was written" in p.stdout
    jobs_before = farm.scalar("SELECT count(*) FROM jobs")
    p = farm.scan()
    assert farm.scalar("SELECT count(*) FROM jobs") == jobs_before + 6
    assert "changed: " + str(paths[0]) in p.stdout
