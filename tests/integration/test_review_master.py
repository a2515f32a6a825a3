"""Regression tests for the security review's master-side findings:
links planted in the output tree are not followed by `show` or serve's
/file/ID (3), serve answers only known Host names and no other site's
Origin (5), failed/show escape C1 controls (7), a link or FIFO at
<db>.status neither hangs nor is followed by status and serve (8), and a
worker's process title escapes control bytes of a file name (9b)."""
import http.client
import json
import os
import subprocess
import time

from conftest import SLOW, wait_for
from servelib import Serve
from test_provider_faults import worker_pids as children

CONF = """
[farm]
workers = 1
[transcribe]
provider = noop
[translate]
provider = noop
languages = en
"""


def completed(farm, names, conf=CONF):
    """Scan `names` (bytes or str, relative to farm.media) and run the
    noop farm to the end."""
    farm.write_config(conf)
    for n in names:
        p = os.path.join(os.fsencode(farm.media), os.fsencode(n))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(b"RIFF fake media\n")
    farm.scan()
    p = farm.run("run", timeout=60)
    assert p.returncode == 0, p.stderr


def raw(farm, *args, timeout=30):
    """Run mpfarm and keep stdout as bytes (no decoding that could turn a
    raw byte into the same text as an escape)."""
    return subprocess.run(farm._argv(args), cwd=str(farm.path), env=farm.env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout * SLOW)


def get(port, path, headers=()):
    """GET with exactly these headers (Host included when given)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30 * SLOW)
    try:
        hs = dict(headers)
        c.putrequest("GET", path, skip_host="Host" in hs,
                     skip_accept_encoding=True)
        for k, v in hs.items():
            c.putheader(k, v)
        c.endheaders()
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


# ---- 3: no link followed in the output tree --------------------------

def test_show_and_file_page_ignore_planted_links(farm, tmp_path):
    completed(farm, ["a.wav"])
    tdir = farm.output / "transcripts"
    real = sorted(f.stat().st_size for f in tdir.iterdir())
    doc = json.loads(farm.run("show", "a.wav", "--json", check=True).stdout)
    jobs = {j["stage"]: j for j in doc["jobs"]}
    assert sorted(o["bytes"] for o in jobs["transcribe"]["outputs"]) == real
    assert jobs["translate"]["outputs"]        # control: listed when real

    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 12345)
    for f in tdir.iterdir():                   # a.wav.txt, a.wav.json
        f.unlink()
        f.symlink_to(secret)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "a.wav.txt").write_bytes(b"x" * 54321)
    en = farm.output / "translations" / "en"
    for f in en.iterdir():
        f.unlink()
    en.rmdir()
    en.symlink_to(elsewhere)

    doc = json.loads(farm.run("show", "a.wav", "--json", check=True).stdout)
    for j in doc["jobs"]:
        assert j["outputs"] == [], j
    text = farm.run("show", "a.wav", check=True).stdout
    assert "12345" not in text and "54321" not in text
    assert "- output:" not in text

    s = Serve(farm)
    try:
        st, body = get(s.port, "/file/%d" % doc["file_id"])
        assert st == 200
        assert b"12345" not in body and b"54321" not in body
        assert b"a.wav" in body
    finally:
        s.stop(farm)


# ---- 5: Host and Origin ---------------------------------------------

def test_serve_refuses_foreign_host_and_origin(farm):
    completed(farm, ["a.wav"])
    farm.write_config(CONF + "[serve]\nallowed_hosts = dash.example.org, "
                      "other.lan\n")
    s = Serve(farm)
    try:
        p = s.port
        for host in ("127.0.0.1:%d" % p, "127.0.0.1", "localhost:%d" % p,
                     "LocalHost", "[::1]:%d" % p, "10.1.2.3:%d" % p,
                     "dash.example.org:%d" % p, "Dash.Example.ORG",
                     "other.lan"):
            st, body = get(p, "/api/status", {"Host": host})
            assert st == 200, (host, st, body)
            assert json.loads(body)["stages"]
        for host in ("attacker.example", "attacker.example:%d" % p,
                     "127.0.0.1.attacker.example", "localhost.evil",
                     "evil.example.org", "127.0.0.1:x", "[::1"):
            for path in ("/", "/api/status", "/metrics", "/file/1"):
                st, body = get(p, path, {"Host": host})
                assert st == 421, (host, path, st)
                assert b"stages" not in body and b"mpfarm_" not in body
        # a page of another site, even with a good Host
        own = {"Host": "127.0.0.1:%d" % p}
        for origin in ("http://attacker.example", "null",
                       "http://127.0.0.1:%d.evil" % p):
            st, body = get(p, "/api/status", dict(own, Origin=origin))
            assert st == 403, (origin, st)
            assert b"stages" not in body
        for origin in ("http://127.0.0.1:%d" % p, "https://127.0.0.1:%d" % p):
            st, _ = get(p, "/api/status", dict(own, Origin=origin))
            assert st == 200, origin
        log = s.proc.log_err.read_text(errors="replace")
        assert "event=serve_refused why=host" in log
        assert "event=serve_refused why=origin" in log
    finally:
        s.stop(farm)


def test_serve_allowed_hosts_star_and_bad_value(farm):
    completed(farm, ["a.wav"])
    farm.write_config(CONF + "[serve]\nallowed_hosts = *\n")
    s = Serve(farm)
    try:
        st, _ = get(s.port, "/api/status", {"Host": "anything.example"})
        assert st == 200
    finally:
        s.stop(farm)
    farm.write_config(CONF + "[serve]\nallowed_hosts = good.lan, bad/host\n")
    p = farm.run("serve", "--listen", "127.0.0.1:0", timeout=20)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "allowed_hosts" in p.stderr and "bad/host" in p.stderr


# ---- 7: C1 controls in failed and show ------------------------------

C1_NAMES = [b"c1\xc2\x9b31m.wav", b"raw\x9b.wav", b"esc\x1b]0;x\x07.wav"]


def assert_clean(out):
    text = out.decode("utf-8")               # valid UTF-8 throughout
    bad = [c for c in text if (ord(c) < 0x20 and c != "\n") or
           0x7f <= ord(c) <= 0x9f]
    assert bad == [], bad


def test_failed_and_show_escape_c1_controls(farm):
    completed(farm, C1_NAMES)
    farm.execute("UPDATE jobs SET status = 'failed', last_error = "
                 "'bad \u009b31m answer' WHERE lang = ''")
    p = raw(farm, "failed")
    assert p.returncode == 0, p.stderr
    assert_clean(p.stdout)
    assert len(p.stdout.splitlines()) == len(C1_NAMES)
    assert b"c1\\xc2\\x9b31m.wav" in p.stdout
    assert b"raw\\x9b.wav" in p.stdout
    assert b"esc\\x1b]0;x\\x07.wav" in p.stdout
    assert b"bad \\xc2\\x9b31m answer" in p.stdout
    for n in C1_NAMES:
        q = raw(farm, "show", os.path.join(os.fsencode(farm.media), n))
        assert q.returncode == 0, q.stderr
        assert_clean(q.stdout)
        assert b"transcribe: failed" in q.stdout
    q = raw(farm, "show", os.path.join(os.fsencode(farm.media), C1_NAMES[0]))
    assert b"c1\\xc2\\x9b31m.wav" in q.stdout


# ---- 8: <db>.status as a FIFO or a link -----------------------------

def test_status_file_fifo_and_link_ignored(farm, tmp_path):
    completed(farm, ["a.wav"])
    sfile = farm.path / (farm.db.name + ".status")
    assert not sfile.exists()
    # a live-looking status file elsewhere: followed, it would show up
    target = tmp_path / "planted.json"
    target.write_text(json.dumps({"pid": os.getpid(), "planted": True}))
    plain = json.loads(farm.run("status", "--json", check=True).stdout)
    assert "farm" not in plain

    os.mkfifo(sfile)
    t0 = time.monotonic()
    doc = json.loads(farm.run("status", "--json", check=True,
                              timeout=20).stdout)
    assert "farm" not in doc
    assert farm.run("status", check=True, timeout=20).stdout
    s = Serve(farm)
    try:
        st, body = get(s.port, "/api/status")
        assert st == 200 and "farm" not in json.loads(body)
        st, body = get(s.port, "/")
        assert st == 200
    finally:
        s.stop(farm)
    assert time.monotonic() - t0 < 60 * SLOW

    sfile.unlink()
    sfile.symlink_to(target)
    doc = json.loads(farm.run("status", "--json", check=True).stdout)
    assert "farm" not in doc and "planted" not in json.dumps(doc)
    s = Serve(farm)
    try:
        st, body = get(s.port, "/api/status")
        assert st == 200 and b"planted" not in body
    finally:
        s.stop(farm)

    # control: the same content as a regular file is read
    sfile.unlink()
    sfile.write_text(target.read_text())
    doc = json.loads(farm.run("status", "--json", check=True).stdout)
    assert doc["farm"]["planted"] is True


# ---- 9b: process titles ---------------------------------------------

def test_worker_title_escapes_control_bytes(farm):
    name = b"t\x1b[2Jx\x07\xc2\x85y.wav"
    farm.write_config(CONF + "[noop]\ndelay_ms = 20000\n")
    p = os.path.join(os.fsencode(farm.media), name)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(b"RIFF fake media\n")
    farm.scan()
    proc = farm.popen("run")

    def busy_title():
        for c in children(proc.pid):
            try:
                with open("/proc/%d/cmdline" % c, "rb") as f:
                    cl = f.read()
            except OSError:
                continue
            if b"transcribe" in cl:
                return cl
        return None
    try:
        cl = wait_for(busy_title, timeout=30)
        assert b"\x1b" not in cl and b"\x07" not in cl
        assert b"\xc2\x85" not in cl
        assert b"t\\x1b[2Jx\\x07\\xc2\\x85y.wav" in cl
    finally:
        proc.terminate()
        farm.wait(proc, timeout=60)
