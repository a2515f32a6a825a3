"""The farm (`mpfarm run`) on the real binary: normal runs, chaos (workers
and the master killed with SIGKILL, a worker SIGSTOPped), signals, hung and
crash-looping jobs, the exec provider's exit-code contract.  Afterwards
every job must be completed exactly once, nothing in-progress, outputs
whole, no worker alive without its master and no zombies."""
import os
import random
import signal
import time

import pytest

from conftest import alive, wait_for, zombies_of, SLOW

BASE = """
[transcribe]
provider = noop
[farm]
retry_delay_ms = 50
retry_max_delay_ms = 200
heartbeat_timeout = 3
[translate]
provider = noop
languages = en,de
"""


def assert_all_done_once(farm, njobs):
    c = farm.counts()
    assert c == {"completed": njobs}, c
    # exactly one completed attempt per job: nothing ran to completion twice
    rows = farm.query("SELECT job_id, COUNT(*) FROM attempts WHERE outcome="
                      "'completed' GROUP BY job_id HAVING COUNT(*) != 1")
    assert rows == []
    assert farm.query("SELECT COUNT(DISTINCT job_id) FROM attempts WHERE "
                      "outcome='completed'")[0][0] == njobs


def assert_outputs(farm, nfiles, langs=("en", "de")):
    tr = sorted((farm.output / "transcripts").rglob("*.txt"))
    assert len(tr) == nfiles
    for t in tr:
        name = t.name[:-len(".txt")]
        assert t.read_text() == f"noop transcript of {name}\n"
        for lang in langs:
            rel = t.relative_to(farm.output / "transcripts")
            tl = farm.output / "translations" / lang / rel
            assert tl.read_text() == f"[{lang}] noop transcript of {name}\n"
    leftovers = [p for p in farm.output.rglob(".mpfarm-tmp.*")]
    assert leftovers == []


def test_run_completes_everything(farm):
    farm.write_config(BASE)
    farm.make_media(120)
    farm.run("scan", farm.media, check=True)
    p = farm.run("run", "--workers", "3", check=True)
    assert "event=farm_exit" in p.stderr
    assert_all_done_once(farm, 360)
    assert_outputs(farm, 120)
    # the translation jobs became ready only after their transcripts
    bad = farm.query("""SELECT COUNT(*) FROM jobs t JOIN jobs s ON s.file_id =
        t.file_id AND s.stage = 'transcribe' WHERE t.stage = 'translate'
        AND t.finished_at < s.finished_at""")
    assert bad[0][0] == 0
    # a second run finds nothing to do, says why, and exits 0
    p = farm.run("run", check=True)
    assert "nothing to do" in p.stderr


def test_stage_and_language_filters(farm):
    farm.write_config(BASE)
    farm.make_media(10)
    farm.run("scan", farm.media, check=True)
    farm.run("run", "--stage", "transcribe", check=True)
    assert farm.query("SELECT stage, status, COUNT(*) FROM jobs GROUP BY 1, 2 "
                      "ORDER BY 1, 2") == [
        ("transcribe", "completed", 10), ("translate", "not_started", 20)]
    farm.run("run", "--stage", "translate", "--language", "de", check=True)
    assert farm.query("SELECT lang, status, COUNT(*) FROM jobs WHERE stage="
                      "'translate' GROUP BY 1, 2 ORDER BY 1, 2") == [
        ("de", "completed", 10), ("en", "not_started", 10)]
    p = farm.run("run", "--language", "fr")
    assert p.returncode == 2 and "fr" in p.stderr


def test_chaos_kills_and_stops(farm):
    """Workers SIGKILLed every few hundred ms, one SIGSTOPped, the master
    SIGKILLed and restarted: every job completes exactly once."""
    farm.write_config(BASE + "[noop]\ndelay_ms = 60\n")
    nfiles = 150
    farm.make_media(nfiles)
    farm.run("scan", farm.media, check=True)
    m = farm.start("run", "--workers", "4", "--max-attempts", "50")
    rng = random.Random(7)
    stopped = None
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline and m.poll() is None:
        time.sleep(0.25)
        kids = farm.workers_of(m.pid)
        if not kids:
            continue
        victim = rng.choice(kids)
        if stopped is None:
            os.kill(victim, signal.SIGSTOP)
            stopped = victim
        else:
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
    # the master dies hard with jobs in flight (workers frozen until the
    # database shows one, so the restart has something to recover); its
    # workers must die with it
    for _ in range(200):
        kids = farm.workers_of(m.pid)
        for k in kids:
            try:
                os.kill(k, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        if farm.query("SELECT COUNT(*) FROM jobs WHERE status = "
                      "'in-progress'")[0][0] > 0:
            break
        for k in kids:
            if k != stopped:
                try:
                    os.kill(k, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        time.sleep(0.05)
    m.send_signal(signal.SIGKILL)
    m.wait(timeout=10)
    wait_for(lambda: not any(alive(k) for k in kids), 5,
             what="workers to die with their master")
    if stopped is not None and alive(stopped):
        raise AssertionError("a SIGSTOPped worker outlived its master")
    done_before = farm.counts().get("completed", 0)
    assert done_before < nfiles * 3, "chaos ended too late to test a restart"
    # the next master resumes everything that was in flight
    p = farm.run("run", "--workers", "4", "--max-attempts", "50", check=True)
    assert "event=recovered" in p.stderr
    assert farm.query("SELECT COUNT(*) FROM attempts WHERE message LIKE "
                      "'%master pid % is gone%'")[0][0] > 0
    assert farm.query("SELECT COUNT(*) FROM attempts WHERE outcome="
                      "'crashed'")[0][0] > 0
    assert_all_done_once(farm, nfiles * 3)
    assert_outputs(farm, nfiles)
    assert farm.query("SELECT COUNT(*) FROM jobs WHERE status='in-progress'")[0][0] == 0


def test_sigstop_worker_is_replaced(farm):
    farm.write_config(BASE + "[noop]\ndelay_ms = 300\n")
    farm.make_media(12)
    farm.run("scan", farm.media, check=True)
    m = farm.start("run", "--workers", "2")
    kids = wait_for(lambda: farm.workers_of(m.pid), 10, what="workers")
    time.sleep(0.5)
    os.kill(kids[0], signal.SIGSTOP)
    assert m.wait(timeout=60 * SLOW) == 0
    assert "event=worker_silent" in farm.log()
    assert not alive(kids[0])
    assert_all_done_once(farm, 36)
    assert zombies_of(m.pid) == []


def test_signals_usr1_ttin_ttou_term(farm):
    farm.write_config(BASE + "[noop]\ndelay_ms = 200\n")
    farm.make_media(40)
    farm.run("scan", farm.media, check=True)
    m = farm.start("run", "--workers", "2")
    wait_for(lambda: len(farm.workers_of(m.pid)) == 2, 10, what="2 workers")
    m.send_signal(signal.SIGUSR1)
    wait_for(lambda: "event=stats" in farm.log(), 5, what="stats line")
    line = [l for l in farm.log().splitlines() if "event=stats" in l][0]
    for key in ("uptime_s=", "workers_target=2", "workers_live=2",
                "workers_busy=", "workers_idle=", "transcribe_done=",
                "translate_failed=", "queue_depth=", "respawns=",
                "hung_kills=", "rate_per_s="):
        assert key in line, key
    m.send_signal(signal.SIGTTIN)
    wait_for(lambda: len(farm.workers_of(m.pid)) == 3, 10, what="3 workers")
    # identical signals sent back to back coalesce (POSIX): one at a time
    m.send_signal(signal.SIGTTOU)
    wait_for(lambda: "target=2 by=TTOU" in farm.log(), 10, what="TTOU seen")
    m.send_signal(signal.SIGTTOU)
    wait_for(lambda: len(farm.workers_of(m.pid)) == 1, 10, what="1 worker")
    m.send_signal(signal.SIGTERM)
    assert m.wait(timeout=30 * SLOW) == 0
    c = farm.counts()
    assert "in-progress" not in c
    assert c.get("completed", 0) < 120
    # resume: the next run finishes the rest
    farm.write_config(BASE)
    farm.run("run", "--workers", "4", timeout=300, check=True)
    assert_all_done_once(farm, 120)


def test_term_grace_kills_and_returns_jobs(farm):
    farm.write_config(BASE + "[noop]\ndelay_ms = 20000\n")
    farm.make_media(3)
    farm.run("scan", farm.media, check=True)
    m = farm.start("run", "--workers", "3", "--grace", "1")
    wait_for(lambda: farm.counts().get("in-progress", 0) == 3, 10 ,
             what="3 jobs running")
    t0 = time.monotonic()
    m.send_signal(signal.SIGTERM)
    assert m.wait(timeout=20 * SLOW) == 0
    assert time.monotonic() - t0 < 10 * SLOW
    c = farm.counts()
    assert c == {"not_started": 9}, c
    # an interrupted attempt is given back: no attempts consumed
    assert farm.query("SELECT MAX(attempts) FROM jobs")[0][0] == 0
    assert farm.query("SELECT COUNT(*) FROM attempts WHERE outcome="
                      "'interrupted'")[0][0] == 3


def test_term_with_jobs_sent_ahead_breaks_no_worker(farm):
    """Short jobs are sent ahead; on TERM a worker runs those it already
    claimed and skips the rest, and its answers reach the master in the
    order the jobs were sent: no worker is taken for broken and killed,
    no attempt is counted as a crash, nothing stays in progress."""
    farm.write_config(BASE + "[noop]\ndelay_ms = 2\n")
    farm.make_media(300)
    farm.run("scan", farm.media, check=True)
    m = farm.start("run", "--workers", "2", "--stage", "transcribe")
    wait_for(lambda: farm.counts().get("completed", 0) >= 40, 30,
             what="the farm under way")
    m.send_signal(signal.SIGTERM)
    assert m.wait(timeout=30 * SLOW) == 0
    log = farm.log()
    assert "event=worker_broken" not in log
    assert "event=worker_kill" not in log
    assert farm.query("SELECT COUNT(*) FROM attempts WHERE outcome <> "
                      "'completed'")[0][0] == 0
    c = farm.counts()
    assert "in-progress" not in c and c.get("not_started", 0) > 0, c


def test_quit_stops_at_once_losing_nothing(farm):
    farm.write_config(BASE + "[noop]\ndelay_ms = 20000\n")
    farm.make_media(2)
    farm.run("scan", farm.media, check=True)
    m = farm.start("run", "--workers", "2")
    wait_for(lambda: farm.counts().get("in-progress", 0) == 2, 10,
             what="2 jobs running")
    m.send_signal(signal.SIGQUIT)
    assert m.wait(timeout=10 * SLOW) == 0
    assert farm.counts() == {"not_started": 6}


def test_hung_job_is_killed_and_fails(farm):
    # a duration of this run's own: other suites on the machine (another
    # worktree's run of this test, test_ops' bystander) sleep 60 too
    secs = "60.%06d" % random.randrange(10 ** 6)
    farm.write_config(BASE + """
[transcribe]
provider = exec
[exec]
transcribe_command = sleep %s
""" % secs)
    farm.make_media(1)
    farm.run("scan", farm.media, check=True)
    p = farm.run("run", "--job-timeout", "1", "--max-attempts", "2",
                 "--stage", "transcribe", timeout=60)
    assert p.returncode == 3, p.stderr
    row = farm.query("SELECT status, attempts, last_error FROM jobs WHERE "
                     "stage='transcribe'")[0]
    assert row[0] == "failed" and row[1] == 2
    assert "hung" in row[2]
    assert farm.query("SELECT COUNT(*) FROM attempts WHERE outcome='timeout'")[0][0] == 2
    assert "event=job_hung" in p.stderr
    # the engine died with its worker: no sleep left behind
    out = os.popen("pgrep -fx 'sleep %s'" % secs).read().split()
    assert out == []


def test_crash_looping_job_ends_failed_throttled(farm):
    # the engine kills the worker running it: a job that kills workers
    farm.write_config(BASE + """
[transcribe]
provider = exec
[exec]
transcribe_command = sh -c 'kill -9 $PPID; sleep 5'
""")
    farm.make_media(1)
    farm.run("scan", farm.media, check=True)
    p = farm.run("run", "--workers", "2", "--max-attempts", "3",
                 "--stage", "transcribe", timeout=60)
    assert p.returncode == 3, p.stderr
    row = farm.query("SELECT status, attempts, last_error FROM jobs WHERE "
                     "stage='transcribe'")[0]
    assert row[0] == "failed" and row[1] == 3, row
    assert "signal 9" in row[2]
    assert farm.query("SELECT COUNT(*) FROM attempts WHERE outcome='crashed'")[0][0] == 3
    # three crashes cost three respawns, not a fork storm
    assert p.stderr.count("event=worker_spawn") <= 2 + 3 + 1


def test_exec_exit_codes(farm):
    script = farm.path / "engine.sh"
    script.write_text("""#!/bin/sh
# {input} is /dev/fd/N, the media file the worker opened and checked
case "$(cat "$1")" in
  RIFF0) echo "hello from $(cat "$1")" ;;
  RIFF1) [ -e "$0.once" ] && { echo retried ok; exit 0; }
         touch "$0.once"; echo busy >&2; exit 75 ;;
  *) echo "bad input, cannot decode" >&2; exit 3 ;;
esac
""")
    script.chmod(0o755)
    farm.write_config(BASE + f"""
[transcribe]
provider = exec
[translate]
provider = exec
languages = es
[exec]
transcribe_command = {script} {{input}}
translate_command = sed -e "s/^/{{lang}}: /"
""")
    farm.make_media(3)
    farm.run("scan", farm.media, check=True)
    p = farm.run("run", timeout=60)
    assert p.returncode == 3
    rows = dict((r[0], r[1:]) for r in farm.query(
        "SELECT m.rel_path, j.status, j.last_error FROM jobs j JOIN "
        "media_files m USING (file_id) WHERE j.stage='transcribe'"))
    assert rows[b"f00000.wav"][0] == "completed"
    assert rows[b"f00001.wav"][0] == "completed"
    assert rows[b"f00002.wav"][0] == "failed"
    assert "exit 3" in rows[b"f00002.wav"][1]
    assert "cannot decode" in rows[b"f00002.wav"][1]
    tr = (farm.output / "translations" / "es" / "f00000.wav.txt").read_text()
    assert tr == "es: hello from RIFF0\n"


def test_watch_picks_up_new_work(farm):
    farm.write_config(BASE)
    farm.make_media(5)
    farm.run("scan", farm.media, check=True)
    m = farm.start("run", "--watch", "--check-interval", "1")
    wait_for(lambda: farm.counts() == {"completed": 15}, 30, what="first batch")
    farm.make_media(5, prefix="g")
    farm.run("scan", farm.media, check=True)
    wait_for(lambda: farm.counts() == {"completed": 30}, 30, what="new work")
    m.send_signal(signal.SIGTERM)
    assert m.wait(timeout=20) == 0


def test_second_master_refused(farm):
    farm.write_config(BASE + "[noop]\ndelay_ms = 5000\n")
    farm.make_media(2)
    farm.run("scan", farm.media, check=True)
    m = farm.start("run")
    wait_for(lambda: farm.counts().get("in-progress", 0) > 0, 10, what="start")
    p = farm.run("run", timeout=30)
    assert p.returncode == 1
    assert f"pid {m.pid}" in p.stderr
    m.send_signal(signal.SIGQUIT)
    m.wait(timeout=10)


def test_hup_reloads_config_and_keeps_old_on_error(farm):
    farm.write_config(BASE + "[farm]\nworkers = 2\n[noop]\ndelay_ms = 100\n")
    farm.make_media(60)
    farm.run("scan", farm.media, check=True)
    m = farm.start("run")
    wait_for(lambda: len(farm.workers_of(m.pid)) == 2, 10, what="2 workers")
    farm.write_config(BASE + "[farm]\nworkers = 3\n[noop]\ndelay_ms = 100\n")
    m.send_signal(signal.SIGHUP)
    wait_for(lambda: len(farm.workers_of(m.pid)) == 3, 10, what="3 workers")
    assert "event=config_reloaded workers=3" in farm.log()
    # a broken file is logged and the running settings kept
    farm.write_config("[farm]\nworkers = lots\n")
    m.send_signal(signal.SIGHUP)
    wait_for(lambda: "event=config_reload_failed" in farm.log(), 10,
             what="reload failure logged")
    assert "mpfarm.conf:2" in farm.log()
    # a file that parses but cannot run a farm is refused too
    farm.write_config(BASE + "[farm]\nworkers = 0\n")
    m.send_signal(signal.SIGHUP)
    wait_for(lambda: "must be at least 1" in farm.log(), 10,
             what="workers = 0 refused")
    time.sleep(0.3)
    assert len(farm.workers_of(m.pid)) == 3
    m.send_signal(signal.SIGTERM)
    assert m.wait(timeout=30 * SLOW) == 0
    assert "in-progress" not in farm.counts()


def test_output_that_is_a_file_is_refused_before_workers(farm):
    farm.write_config(BASE)
    farm.make_media(2)
    farm.run("scan", farm.media, check=True)
    (farm.path / "out.txt").write_text("not a folder")
    p = farm.run("run", "--output", "out.txt")
    assert p.returncode == 2
    assert "out.txt is not a folder" in p.stderr
    assert "worker_spawn" not in p.stderr
    assert farm.counts() == {"not_started": 6}


def test_progress_line_on_a_terminal(farm):
    """With stderr on a terminal, one line of done/total, rate and ETA."""
    import shutil
    import subprocess
    if shutil.which("script") is None:
        pytest.skip("script(1) from util-linux is needed for a pty")
    farm.write_config(BASE + "[noop]\ndelay_ms = 80\n")
    farm.make_media(40)
    farm.run("scan", farm.media, check=True)
    from conftest import MPFARM_BIN as BIN
    p = subprocess.run(["script", "-qec", f"{BIN} run --workers 2",
                        "/dev/null"], cwd=farm.path, env=farm.env,
                       capture_output=True, timeout=120 * SLOW)
    assert p.returncode == 0, p.stdout
    out = p.stdout.decode(errors="replace")
    assert "/120 jobs" in out
    assert "mpfarm: 120 completed, 0 failed in " in out   # summary
    assert farm.counts() == {"completed": 120}


def test_locked_database_never_strands_a_job(farm):
    """A worker that cannot record its outcome (the database stays locked
    past the busy timeout) must not leave its job in-progress: the master
    returns it, and the run completes it once the lock is gone."""
    import sqlite3
    import threading
    farm.write_config(BASE.replace("[translate]\nprovider = noop\nlanguages = en,de\n",
                                   "") + "busy_timeout = 50\n[noop]\ndelay_ms = 400\n")
    farm.make_media(2)
    farm.run("scan", farm.media, check=True)
    m = farm.start("run", "--workers", "2")
    wait_for(lambda: farm.counts().get("in-progress", 0) == 2, 10,
             what="2 jobs running")
    con = sqlite3.connect(farm.db, timeout=10, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    time.sleep(1.5)          # both jobs end while the lock is held
    con.execute("ROLLBACK")
    con.close()
    rc = m.wait(timeout=60 * SLOW)
    assert rc == 0, farm.log()[-3000:]
    assert farm.counts() == {"completed": 2}


EXEC_ONLY = BASE.replace("[translate]\nprovider = noop\nlanguages = en,de\n", "")


def engine_fds(farm, command):
    """The transcript of one file whose engine is `command`."""
    farm.write_config(EXEC_ONLY + """
[transcribe]
provider = exec
[exec]
transcribe_command = %s
""" % command)
    farm.make_media(1)
    farm.run("scan", farm.media, check=True)
    farm.run("run", check=True)
    return (farm.output / "transcripts" / "f00000.wav.txt").read_text().split()


def test_engines_get_no_channel_fd(farm):
    """An engine starts with stdin, stdout and stderr and nothing else of
    the worker's (channel, database, sockets), whoever opened them and
    however.  ls lists its own descriptors, so 3 is the folder it reads."""
    assert engine_fds(farm, "ls /proc/self/fd") == ["0", "1", "2", "3"]


def test_engine_with_input_gets_the_media_fd_only(farm):
    """With {input} in its command the engine also holds the media
    descriptor it names, and still nothing else."""
    first, *fds = engine_fds(
        farm, """sh -c 'echo "$0"; exec ls /proc/self/fd' {input}""")
    media = first.rsplit("/", 1)[1]
    assert first.startswith("/dev/fd/") and int(media) > 3, first
    assert sorted(fds, key=int) == ["0", "1", "2", "3", media], fds


def test_ctrl_c_lets_engines_finish(farm):
    """INT to the whole terminal process group is a graceful stop: the
    engines, in their own group, finish their jobs; nothing is charged."""
    farm.write_config(BASE.replace("[translate]\nprovider = noop\nlanguages = en,de\n",
                                   "") + """
[transcribe]
provider = exec
[exec]
transcribe_command = sh -c 'sleep 1; echo done'
""")
    farm.make_media(2)
    farm.run("scan", farm.media, check=True)
    m = farm.start("run", "--workers", "2")
    wait_for(lambda: farm.counts().get("in-progress", 0) == 2, 10,
             what="2 jobs running")
    os.killpg(m.pid, signal.SIGINT)
    assert m.wait(timeout=30 * SLOW) == 0
    assert farm.counts() == {"completed": 2}
    assert farm.query("SELECT MAX(attempts) FROM jobs")[0][0] == 1


def test_chaos_fast_batched_jobs(farm):
    """Jobs fast enough to be sent ahead and published several to a
    transaction, while workers are SIGKILLed every 50 ms and then the
    master: still every job completed exactly once, outputs whole."""
    farm.write_config(BASE.replace("languages = en,de", "languages = en"))
    nfiles = 4000
    farm.make_media(nfiles)
    farm.run("scan", farm.media, check=True)
    m = farm.start("run", "--workers", "4", "--max-attempts", "50")
    rng = random.Random(3)
    kills = 0
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline and m.poll() is None:
        time.sleep(0.05)
        kids = farm.workers_of(m.pid)
        if kids:
            try:
                os.kill(rng.choice(kids), signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass
    if m.poll() is None:
        m.send_signal(signal.SIGKILL)
    m.wait(timeout=10)
    p = farm.run("run", "--workers", "4", "--max-attempts", "50",
                 timeout=300, check=True)
    assert kills > 0
    assert_all_done_once(farm, nfiles * 2)
    assert_outputs(farm, nfiles, langs=("en",))
    assert "worker_broken" not in p.stderr
    assert "worker_broken" not in farm.log()


def test_recycling_replacement_first_one_at_a_time(farm):
    farm.write_config(BASE.replace("languages = en,de", "languages = en") +
                      "[noop]\ndelay_ms = 5\n")
    farm.make_media(150)
    farm.run("scan", farm.media, check=True)
    p = farm.run("run", "--workers", "3", "--max-jobs-per-worker", "20",
                 "--log-level", "debug", check=True, timeout=120)
    assert_all_done_once(farm, 300)
    lines = p.stderr.splitlines()
    recycles = [l for l in lines if "event=worker_recycle" in l]
    assert len(recycles) >= 5, len(recycles)
    leaving = set()
    for l in lines:
        kv = dict(f.split("=", 1) for f in l.split() if "=" in f)
        if kv.get("event") == "worker_recycle":
            # never two recycles at once, and the new worker already runs
            assert not leaving, l
            leaving.add(kv["old_pid"])
            assert any(f"event=worker_spawn" in x and f"pid={kv['new_pid']} "
                       in x + " " for x in lines[:lines.index(l)])
        elif kv.get("event") == "worker_retired":
            leaving.discard(kv["worker_pid"])
    # every completion reached the master across the recycles
    done = [l for l in lines if "event=job_done" in l]
    assert len(done) == 300
