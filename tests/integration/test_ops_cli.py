"""What an operator sees of a running farm (issue 8, items 7, 8 and 10):

- job log lines carry file= (the media path relative to its scan root),
  farm_start names each stage's and language's provider, and no key
  appears twice in any line, even in a run full of faults;
- process titles in /proc/PID/cmdline (what `ps -o args` shows):
  "mpfarm: master DB", "mpfarm: worker N idle", "mpfarm: worker N
  transcribe FILE"; a run with nothing to do forks no worker;
- the progress line on a terminal (also with --log-file), its total kept
  right under --watch, and the summary line a run ends with;
- `mpfarm signal SIG` reaches the live master of the database only, and
  the lock file names a pid only while it is held.

Every wait is bounded; every process started here is killed at teardown."""
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

import storelib
from conftest import MPFARM_BIN, SLOW, wait_for
from test_providers import ENV, config, fake, media  # noqa: F401
from test_provider_faults import worker_pids as children

NOOP = """
[farm]
workers = %d
[transcribe]
provider = noop
[translate]
provider = noop
languages = en
[noop]
delay_ms = %d
"""

JOB_EVENTS = ("job_done", "job_failed", "job_hung", "job_released",
              "job_skipped")


def fields(line):
    """The keys of one log line, in order, honouring quoted values (which
    may hold spaces, '=' and escaped quotes)."""
    keys, i, n = [], 0, len(line)
    while i < n:
        while i < n and line[i] == " ":
            i += 1
        m = re.match(r"([A-Za-z0-9_.]+)=", line[i:])
        assert m, "not key=value at %r in %r" % (line[i:i + 30], line)
        keys.append(m.group(1))
        i += m.end()
        if i < n and line[i] == '"':
            i += 1
            while i < n and line[i] != '"':
                i += 2 if line[i] == "\\" else 1
            i += 1
        else:
            while i < n and line[i] != " ":
                i += 1
    return keys


def kv(line):
    out = {}
    for m in re.finditer(r'([A-Za-z0-9_.]+)=("(?:[^"\\]|\\.)*"|\S*)', line):
        out.setdefault(m.group(1), m.group(2))
    return out


def events(text, name):
    return [kv(l) for l in text.splitlines() if " event=%s " % name in l + " "]


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def small_tree(farm, n_top=2, n_sub=2):
    rels = []
    for i in range(n_top):
        media(farm, "top%d.wav" % i, b"RIFF top %d" % i)
        rels.append("top%d.wav" % i)
    for i in range(n_sub):
        media(farm, "sub/deep/rec%d.wav" % i, b"RIFF sub %d" % i)
        rels.append("sub/deep/rec%d.wav" % i)
    return rels


# ---- 8.7 logs ---------------------------------------------------------------

def test_job_lines_carry_file_and_no_key_repeats(farm, fake):
    """A run with transient errors, malformed answers and one hung request:
    every job line names its file relative to the scan root (subfolders
    included), and no line of the whole log repeats a key."""
    # the hung request is caught by the job timeout (curl's low-speed
    # limit would see it later); generous for a loaded sanitizer build
    farm.write_config(config(fake).replace(
        "[farm]\n", "[farm]\njob_timeout = %d\n" % (2 * SLOW), 1).replace(
        "low_speed_time = 2", "low_speed_time = 120"))
    rels = small_tree(farm, 3, 3)
    farm.scan()
    fake.control(faults=[
        {"kind": "status", "status": 500, "count": 3},
        {"kind": "malformed", "count": 1},
        {"kind": "hang", "seconds": 60, "count": 1},
    ])
    p = farm.run("run", "--log-level", "debug", env=ENV, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    assert farm.status_counts() == {"completed": 6}
    assert farm.status_counts("translate", "de") == {"completed": 6}
    log = p.stderr
    for line in log.splitlines():
        if not line.startswith("ts="):
            continue
        keys = fields(line)
        dups = {k for k in keys if keys.count(k) > 1}
        assert not dups, "key repeated (%s) in: %s" % (dups, line)
    seen = set()
    for ev in JOB_EVENTS:
        for e in events(log, ev):
            assert e.get("file", "").strip('"') in rels, (ev, e)
            seen.add(e["file"])
    assert {"sub/deep/rec0.wav", "sub/deep/rec1.wav", "top0.wav"} <= seen
    assert len(events(log, "job_done")) == 12
    failed = events(log, "job_failed")
    assert failed and all(e["file"] in rels for e in failed)
    hung = events(log, "job_hung")
    assert len(hung) == 1 and hung[0]["file"] in rels
    # the worker killed for it: its exit names the same job and file
    exits = [e for e in events(log, "worker_exit") if e["job"] != "0"]
    assert any(e["job"] == hung[0]["job"] and e["file"] == hung[0]["file"]
               for e in exits), exits


def test_farm_start_names_each_provider(farm, fake):
    farm.write_config(config(fake, transcribe="openai", translate="deepl",
                             langs="en,he",
                             extra="[translate.he]\nprovider = openai\n"))
    p = farm.run("run", env=ENV)
    assert p.returncode == 0, p.stderr
    start = [l for l in p.stderr.splitlines() if "event=farm_start" in l]
    assert len(start) == 1
    assert start[0].endswith(" transcribe=openai translate.en=deepl "
                             "translate.he=openai"), start[0]
    # only what this run works on
    p = farm.run("run", "--stage", "translate", "--language", "he", env=ENV)
    assert p.returncode == 0, p.stderr
    start = [l for l in p.stderr.splitlines() if "event=farm_start" in l][0]
    assert start.endswith(" stage=translate translate.he=openai"), start


# ---- 8.7 titles, nothing to do ---------------------------------------------

def test_process_titles(farm):
    # one worker more than files: one of them is always idle
    farm.write_config(NOOP % (4, 500))
    rels = small_tree(farm, 1, 2)
    farm.scan()
    m = farm.popen("run")
    # the master names its store: the SQLite file, or the PostgreSQL URL
    master = "mpfarm: master %s" % (farm.db if storelib.PG
                                    else "media_tracking.db")
    wait_for(lambda: cmdline(m.pid) == master, 15)
    with open("/proc/%d/comm" % m.pid) as f:
        assert f.read().strip() == "mpfarm-master"
    busy = set()
    idle = set()

    def look():
        for k in children(m.pid):
            t = cmdline(k)
            if re.fullmatch(r"mpfarm: worker [0-3] idle", t):
                idle.add(t)
            elif t and t != master:     # not just forked
                busy.add(t)
        return any("sub/deep/" in t for t in busy) and idle and any(
            "translate:en" in t for t in busy)
    wait_for(look, 30)
    for t in busy:
        mm = re.fullmatch(r"mpfarm: worker ([0-3]) (transcribe|translate:en) "
                          r"(.+)", t)
        assert mm and mm.group(3) in rels, t
    kid = children(m.pid)[0]
    with open("/proc/%d/comm" % kid) as f:
        assert f.read().strip() == "mpfarm-worker"
    # what ps shows, and no environment shows through the padding
    if shutil.which("ps"):
        out = subprocess.run(["ps", "-o", "args=", "-p", str(m.pid)],
                             capture_output=True, text=True, timeout=10)
        assert out.stdout.strip() == master
    with open("/proc/%d/cmdline" % m.pid, "rb") as f:
        raw = f.read()
    assert b"PATH=" not in raw and raw.rstrip(b"\0") == master.encode()
    assert farm.wait(m, 60) == 0
    assert farm.status_counts() == {"completed": 3}


def test_nothing_to_do_forks_no_worker(farm):
    farm.write_config(NOOP % (3, 0))
    p = farm.run("run")                  # no file at all
    assert p.returncode == 0, p.stderr
    assert "event=worker_spawn" not in p.stderr
    assert "nothing to do" in p.stderr
    small_tree(farm, 2, 1)
    farm.scan()
    p = farm.run("run")
    assert p.returncode == 0 and p.stderr.count("event=worker_spawn") == 3
    p = farm.run("run")                  # everything completed
    assert p.returncode == 0, p.stderr
    assert "event=worker_spawn" not in p.stderr
    assert "nothing to do: 6 completed" in p.stderr


# ---- 8.8 the progress line ---------------------------------------------------

def need_script():
    if shutil.which("script") is None:
        pytest.skip("script(1) from util-linux is needed for a pty")


def on_pty(farm, cmd, timeout=120):
    p = subprocess.run(["script", "-qec", cmd, "/dev/null"],
                       cwd=str(farm.path), env=farm.env,
                       capture_output=True, timeout=timeout * SLOW)
    assert b"Sanitizer" not in p.stdout, p.stdout[-3000:]
    return p


SUMMARY = re.compile(r"mpfarm: (\d+) completed, (\d+) failed in [\d.]+ s "
                     r"\([\d.]+ jobs/s\)")


def test_progress_line_and_summary_on_a_terminal(farm):
    need_script()
    # German translations fail at once (an engine that exits 1)
    farm.write_config((NOOP % (2, 100)).replace("languages = en",
                                                 "languages = en,de") +
                      "[farm]\nmax_attempts = 1\n[translate.de]\n"
                      "provider = exec\n[exec]\ntranslate_command = false\n")
    small_tree(farm, 4, 4)
    farm.scan()
    p = on_pty(farm, "%s run" % MPFARM_BIN)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 3, out[-2000:]
    # redrawn in place: done/total, failed, rate, ETA
    assert re.search(r"\r\x1b\[K\d+/24 jobs done, \d+ failed, [\d.]+ jobs/s, "
                     r"ETA ", out), out[-2000:]
    m = SUMMARY.search(out)
    assert m and m.group(1) == "16" and m.group(2) == "8", out[-2000:]
    assert "event=farm_exit" in out        # the log shares the terminal
    assert farm.status_counts("translate", "de") == {"failed": 8}


def test_progress_line_with_a_log_file(farm):
    need_script()
    farm.write_config(NOOP % (2, 150))
    small_tree(farm, 3, 3)
    farm.scan()
    p = on_pty(farm, "%s run --log-file farm.log" % MPFARM_BIN)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out
    assert "event=" not in out                 # the log went to the file
    assert re.search(r"\d+/12 jobs done, 0 failed", out), out
    m = SUMMARY.search(out)
    assert m and m.group(1) == "12" and m.group(2) == "0", out
    log = (farm.path / "farm.log").read_text()
    assert "event=farm_exit" in log and "jobs done" not in log


def test_progress_total_follows_a_new_scan_under_watch(farm):
    need_script()
    farm.write_config(NOOP % (2, 100) + "[farm]\ncheck_interval = 1\n")
    small_tree(farm, 2, 0)
    farm.scan()
    typescript = farm.path / "tty.out"
    s = subprocess.Popen(["script", "-qfec", "%s run --watch" % MPFARM_BIN,
                          str(typescript)], cwd=str(farm.path), env=farm.env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def text():
            return typescript.read_bytes().decode(errors="replace") \
                if typescript.exists() else ""
        wait_for(lambda: "4/4 jobs done" in text(), 30)
        small_tree(farm, 0, 3)             # 6 more jobs
        farm.scan()
        wait_for(lambda: "10/10 jobs done" in text(), 30)
        assert farm.run("signal", "TERM").returncode == 0
        s.wait(timeout=60 * SLOW)
        m = SUMMARY.search(text())
        assert m and m.group(1) == "10", text()[-2000:]
        assert "Sanitizer" not in text()
    finally:
        if s.poll() is None:
            os.killpg(s.pid, signal.SIGKILL)
            s.wait(timeout=10)


# ---- 8.10 signalling the master ---------------------------------------------

def lock_file(farm):
    return farm.path / "media_tracking.db.lock"


def host_pids(farm):
    """PostgreSQL, which has no lock file: the master pids the host rows
    name (a master's row lives while it runs)."""
    return sorted(r[0] for r in farm.query("SELECT pid FROM hosts"))


def test_signal_usr1_reaches_the_live_master(farm):
    farm.write_config(NOOP % (2, 300))
    small_tree(farm, 3, 3)
    farm.scan()
    m = farm.popen("run", "--watch")
    wait_for(lambda: "event=farm_ready" in m.log_err.read_text(), 20)
    if storelib.PG:
        assert host_pids(farm) == [m.pid]
    else:
        assert lock_file(farm).read_text().strip() == str(m.pid)
    p = farm.run("signal", "USR1")
    assert p.returncode == 0, p.stderr
    assert "pid %d" % m.pid in p.stdout
    wait_for(lambda: "pid=%d event=stats " % m.pid in m.log_err.read_text(),
             10)
    for name in ("sigusr1", "SigUsr1", "usr1"):        # any spelling
        assert farm.run("signal", name).returncode == 0
    wait_for(lambda: m.log_err.read_text().count("event=stats ") == 4, 10)
    p = farm.run("signal", "ttin")
    assert p.returncode == 0
    wait_for(lambda: "event=workers_target target=3 by=TTIN"
             in m.log_err.read_text(), 10)
    # TERM through the command: a graceful stop, then an empty lock file
    assert farm.run("signal", "TERM").returncode == 0
    assert farm.wait(m, 60) == 0
    if storelib.PG:
        assert host_pids(farm) == [] and not lock_file(farm).exists()
    else:
        assert lock_file(farm).read_text() == ""
    assert "event=farm_exit" in m.log_err.read_text()


def test_lock_file_empty_after_a_clean_run(farm):
    farm.write_config(NOOP % (2, 0))
    small_tree(farm, 2, 0)
    farm.scan()
    assert farm.run("run").returncode == 0
    if storelib.PG:
        # no lock file beside a URL; the host row naming the master's pid
        # is gone with it
        assert host_pids(farm) == [] and not lock_file(farm).exists()
    else:
        assert lock_file(farm).exists() and lock_file(farm).read_text() == ""


def test_signal_without_a_master(farm):
    farm.write_config(NOOP % (1, 0))
    p = farm.run("signal", "HUP")       # no lock file at all
    assert p.returncode == 1
    if storelib.PG:
        # a database no farm ever used: no schema (signal creates none)
        assert "no mpfarm master of %s is running (no farm in this " \
            "database yet)" % farm.db in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert farm.scalar("SELECT count(*) FROM pg_tables WHERE "
                           "schemaname = current_schema()") == 0
        farm.media.mkdir()
        farm.scan()                     # the schema, and no host row
        p = farm.run("signal", "HUP")
        assert p.returncode == 1
        assert "no mpfarm master of %s is running on this host" % farm.db \
            in p.stderr, p.stderr
    else:
        assert "no mpfarm master is running on media_tracking.db" in p.stderr
    # a stale lock file naming a live process that is not a master; on
    # PostgreSQL a host row of this machine naming it, whose heartbeat
    # stopped long ago (a master killed with -9, its pid reused since)
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        if storelib.PG:
            now = int(time.time() * 1000)
            farm.execute("INSERT INTO hosts (host_id, hostname, pid, "
                         "started_at, seen_at) VALUES (?, ?, ?, ?, ?)",
                         ("stale", socket.gethostname(), bystander.pid,
                          now - 3600 * 1000, now - 600 * 1000))
        else:
            lock_file(farm).write_text("%d\n" % bystander.pid)
        p = farm.run("signal", "TERM")
        assert p.returncode == 1, p.stderr
        assert "no mpfarm master" in p.stderr
        time.sleep(0.2)
        assert bystander.poll() is None, "TERM sent to a stale pid"
    finally:
        bystander.kill()
        bystander.wait(timeout=10)


@pytest.mark.parametrize("args", [("KILL",), ("SIGSTOP",), ("9",), ("usr3",),
                                  ()])
def test_signal_usage_errors(farm, args):
    farm.write_config(NOOP % (1, 0))
    p = farm.run("signal", *args)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "signal" in p.stderr
    assert not lock_file(farm).exists()
