"""Named scan roots ([roots]): hosts that mount the same recordings at
different places share one farm.  Two "hosts" here are two configs on this
machine: host A scans its mount, host B has a copy of the tree at another
place (same bytes and modification times, other inodes, as an NFS client
sees them) and runs the jobs from its own mount, with its own output
folder.  Host A's tree is moved away before B runs, so B can only succeed
through its own mapping."""
import os
import shutil

from conftest import DEFAULT_TIMEOUT  # noqa: F401


FILES = ["sub/one.wav", "two.mp3", "deep/er/three.flac"]


def make_host_tree(root):
    for i, rel in enumerate(FILES):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"RIFF" + bytes([i]) * (100 + i))


def host_config(farm, name, mount, output):
    return farm.write_config(
        "[farm]\noutput = %s\n\n[roots]\narchive = %s\n\n"
        "[transcribe]\nprovider = noop\n" % (output, mount),
        name=name)


def setup_two_hosts(farm):
    a = farm.path / "hostA" / "mnt" / "archive"
    b = farm.path / "hostB" / "net" / "recordings"
    make_host_tree(a)
    shutil.copytree(a, b, copy_function=shutil.copy2)
    conf_a = host_config(farm, "a.conf", a, farm.path / "outA")
    conf_b = host_config(farm, "b.conf", b, farm.path / "outB")
    return a, b, conf_a, conf_b


def test_second_host_runs_from_its_own_mount(farm):
    a, b, conf_a, conf_b = setup_two_hosts(farm)
    r = farm.run("scan", a, "--config", conf_a, check=True)
    assert farm.scalar("SELECT count(*) FROM media_files") == 3
    # the store keeps host A's spelling, and the root is registered once
    assert farm.scalar("SELECT value FROM settings WHERE key = "
                       "'root:archive'") == str(a)
    paths = sorted(r[0] for r in farm.query(
        "SELECT file_path FROM processing_status"))
    assert paths == sorted(str(a / f) for f in FILES)
    # device and inode of a shared file are not recorded
    assert farm.scalar("SELECT count(*) FROM media_files "
                       "WHERE ino IS NOT NULL") == 0

    # host A's mount goes away: host B can only read its own
    os.rename(farm.path / "hostA", farm.path / "hostA.gone")
    r = farm.run("--config", conf_b, "--workers", "2", check=True)
    assert farm.scalar("SELECT count(*) FROM jobs WHERE status = "
                       "'completed'") == 3
    for f in FILES:
        out = farm.path / "outB" / "transcripts" / (f + ".txt")
        assert out.is_file(), out
        assert not (farm.path / "outA" / "transcripts" / (f + ".txt")
                    ).exists()
    # one attempt each: nothing failed on the way
    assert farm.scalar("SELECT count(*) FROM attempts") == 3


def test_rescan_from_another_host_changes_nothing(farm):
    a, b, conf_a, conf_b = setup_two_hosts(farm)
    farm.run("scan", a, "--config", conf_a, check=True)
    farm.run("run", "--config", conf_a, check=True)
    done = farm.scalar("SELECT count(*) FROM jobs WHERE status = "
                       "'completed'")
    assert done == 3
    # host B scans its mount: the same three files, known, unchanged
    r = farm.run("scan", "--config", conf_b, b, check=True)
    assert farm.scalar("SELECT count(*) FROM media_files") == 3
    assert farm.scalar("SELECT count(*) FROM jobs WHERE status = "
                       "'completed'") == 3, r.stdout + r.stderr
    assert "0 new, 3 unchanged" in r.stdout, r.stdout
    assert not any(line.startswith("changed:")
                   for line in r.stdout.splitlines()), r.stdout
    # a dry run from host B agrees
    r = farm.run("scan", "--dry-run", b, "--config", conf_b, check=True)
    assert "0 new file" in r.stdout, r.stdout


def test_show_and_retry_take_this_hosts_path(farm):
    a, b, conf_a, conf_b = setup_two_hosts(farm)
    farm.run("scan", a, "--config", conf_a, check=True)
    farm.run("--config", conf_b, check=True)
    target = b / "two.mp3"
    r = farm.run("show", target, "--config", conf_b, check=True)
    # shown as host B sees it, and found on disk there
    assert str(target) in r.stdout, r.stdout
    assert "no longer on disk" not in r.stdout
    r = farm.run("show", "--json", "--config", conf_b, target, check=True)
    assert '"exists": true' in r.stdout.replace('"exists":true',
                                                '"exists": true')
    # retry --file with host B's path names the file (nothing failed)
    farm.execute("UPDATE jobs SET status = 'failed' WHERE file_id = "
                 "(SELECT file_id FROM media_files WHERE rel_path = "
                 "CAST('two.mp3' AS BLOB))")
    r = farm.run("retry", "--file", target, "--config", conf_b, check=True)
    assert farm.scalar("SELECT count(*) FROM jobs WHERE status = "
                       "'failed'") == 0, r.stdout + r.stderr


def test_without_the_mapping_the_other_host_fails_clearly(farm):
    a, b, conf_a, _ = setup_two_hosts(farm)
    farm.run("scan", a, "--config", conf_a, check=True)
    os.rename(farm.path / "hostA", farm.path / "hostA.gone")
    plain = farm.write_config("[farm]\noutput = %s\n[transcribe]\n"
                              "provider = noop\n" % (farm.path / "outC"),
                              name="c.conf")
    r = farm.run("--config", plain)
    assert r.returncode == 3, r.stderr
    err = farm.scalar("SELECT last_error FROM jobs WHERE status = "
                      "'failed' LIMIT 1")
    assert "scan root" in err and str(a) in err, err


def test_bad_roots_lines_are_usage_errors(farm):
    for body, word in (("bad name = /x", "name"),
                       ("archive = relative/path", "absolute")):
        conf = farm.write_config("[roots]\n%s\n" % body, name="bad.conf")
        r = farm.run("status", "--config", conf)
        assert r.returncode == 2, (body, r.stderr)
        assert "bad.conf:2" in r.stderr and word in r.stderr, r.stderr


def test_a_missing_mount_stops_run_before_any_attempt(farm):
    a, b, conf_a, conf_b = setup_two_hosts(farm)
    farm.run("scan", a, "--config", conf_a, check=True)
    shutil.rmtree(farm.path / "hostB")
    r = farm.run("--config", conf_b)
    assert r.returncode == 2, r.stderr
    assert "root archive" in r.stderr and "b.conf:" in r.stderr, r.stderr
    assert farm.scalar("SELECT count(*) FROM attempts") == 0
    # `mpfarm config` shows the same check, and passes once it is there
    r = farm.run("config", "--config", conf_a)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "root archive" in r.stdout and "mounted at" in r.stdout, r.stdout
