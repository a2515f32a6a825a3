"""Many masters on one PostgreSQL database (run in the PostgreSQL pass,
MPFARM_TEST_STORE=pg): several masters on this machine act as separate
hosts.  Every job is completed exactly once with byte-exact outputs; a
host killed with SIGKILL (master and workers) has its jobs taken over
within host_timeout plus a few seconds; a host SIGSTOPped past
host_timeout and continued completes nothing it lost."""
import os
import signal
import subprocess
import time

import pytest

import storelib
from conftest import MPFARM_BIN, SLOW, wait_for

pytestmark = pytest.mark.skipif(
    not storelib.PG, reason="PostgreSQL pass only (MPFARM_TEST_STORE=pg)")

CONF = """
[transcribe]
provider = noop
[farm]
retry_delay_ms = 50
retry_max_delay_ms = 200
heartbeat_timeout = 30
host_timeout = 2
[noop]
delay_ms = {delay}
"""


def reference_outputs(tmp_path, farm, n):
    """What one master on SQLite writes for the same media: the bytes
    every host must have produced."""
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "mpfarm.conf").write_text(CONF.format(delay=0))
    env = dict(farm.env)
    env.pop("MPFARM_DB", None)
    for args in (["scan", str(farm.media)], ["run", "--workers", "2"]):
        p = subprocess.run([MPFARM_BIN, *args], cwd=ref, env=env,
                           capture_output=True, timeout=120 * SLOW)
        assert p.returncode == 0, p.stderr
    out = {}
    for p in (ref / "output").rglob("*"):
        if p.is_file():
            out[p.relative_to(ref / "output")] = p.read_bytes()
    assert len(out) == 2 * n, len(out)
    return out


def assert_done_once(farm, n, ref):
    assert farm.counts() == {"completed": n}
    twice = farm.query("SELECT job_id, count(*) FROM attempts WHERE "
                       "outcome = 'completed' GROUP BY job_id "
                       "HAVING count(*) <> 1")
    assert twice == [], twice
    got = {}
    for p in farm.output.rglob("*"):
        if p.is_file():
            got[p.relative_to(farm.output)] = p.read_bytes()
    assert got == ref


def host_jobs(farm, host_pid):
    """Job ids in progress under the master pid's host row."""
    return [r[0] for r in farm.query(
        "SELECT j.job_id FROM jobs j JOIN hosts h ON h.host_id = "
        "j.owner_host WHERE j.status = 'in-progress' AND h.pid = ?",
        (host_pid,))]


def start_hosts(farm, tmp_path, n, delay, hosts, *extra):
    """n files scanned, the reference outputs, and `hosts` masters of
    --workers 2 started together: (reference, masters, their logs)."""
    farm.write_config(CONF.format(delay=delay))
    farm.make_media(n)
    ref = reference_outputs(tmp_path, farm, n)
    assert farm.run("scan", farm.media).returncode == 0
    logs = [farm.path / ("m%d.log" % i) for i in range(hosts)]
    return ref, [farm.start("run", "--workers", "2", *extra, log=log)
                 for log in logs], logs


def host_completed(log):
    """What a master's farm_exit line says it completed."""
    line = [x for x in log.read_text().splitlines()
            if "event=farm_exit" in x][-1]
    return int(line.split("completed=")[1].split()[0])


def test_three_masters_share_one_database(farm, tmp_path):
    n = 90
    ref, ms, logs = start_hosts(farm, tmp_path, n, 20, 3)
    for m in ms:
        assert m.wait(timeout=120 * SLOW) == 0
    assert_done_once(farm, n, ref)
    done = [host_completed(log) for log in logs]
    assert sum(done) == n, done
    assert all(d > 0 for d in done), done
    # a clean exit leaves no host row behind
    assert farm.query("SELECT count(*) FROM hosts") == [(0,)]


def test_claims_skip_each_other_and_fit_idle_workers(farm, tmp_path):
    """Two masters claim with SKIP LOCKED: no worker is ever handed a job
    another host holds (no job_skipped), each host holds no more jobs
    than it has workers (300 ms jobs are never sent ahead), every job
    runs once, and both hosts work."""
    n = 24
    ref, ms, logs = start_hosts(farm, tmp_path, n, 300, 2, "--log-level",
                                "debug")
    most = {}
    deadline = time.monotonic() + 120 * SLOW
    while any(m.poll() is None for m in ms):
        assert time.monotonic() < deadline, "the masters did not finish"
        for pid, held in farm.query(
                "SELECT h.pid, count(*) FROM jobs j JOIN hosts h ON "
                "h.host_id = j.owner_host WHERE j.status = 'in-progress' "
                "GROUP BY h.pid"):
            most[pid] = max(most.get(pid, 0), held)
        time.sleep(0.05)
    assert [m.returncode for m in ms] == [0, 0]
    assert_done_once(farm, n, ref)
    assert most and all(h <= 2 for h in most.values()), most
    assert farm.query("SELECT count(*) FROM jobs WHERE attempts <> 1") == \
        [(0,)]
    for log in logs:
        text = log.read_text()
        assert "event=job_skipped" not in text
        assert "event=jobs_given_back" not in text
        assert host_completed(log) > 0, log


def test_stop_gives_claims_back_untouched(farm, tmp_path):
    """Short jobs are claimed in batches and sent ahead; a TERM mid-run
    gives back every claim no worker started, as it was: nothing stays
    in progress, and a job that never ran has no attempt counted and no
    attempt row.

    Whether a claim is still unadopted when the TERM comes is a race the
    test cannot fix from outside (a worker adopts what it has read at its
    next write, and may have read the last jobs just before it was
    stopped), so it stops the farm up to eight times, each time with its
    workers SIGSTOPped first so that the master's answers to their last
    DONEs wait unread, until one stop gave claims back; every stop must
    leave the farm clean."""
    n = 1000
    ref, ms, logs = start_hosts(farm, tmp_path, n, 2, 1, "--log-level",
                                "debug")
    master, log = ms[0], logs[0]
    for _ in range(8):
        done = farm.scalar("SELECT count(*) FROM jobs WHERE status = "
                           "'completed'")
        wait_for(lambda: farm.scalar("SELECT count(*) FROM jobs WHERE "
                                     "status = 'completed'") >= done + 30,
                 60, what="the farm under way")
        workers = farm.workers_of(master.pid)
        assert len(workers) == 2, workers
        for w in workers:
            os.kill(w, signal.SIGSTOP)
        time.sleep(0.3)
        master.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        for w in workers:
            os.kill(w, signal.SIGCONT)
        assert master.wait(timeout=60 * SLOW) == 0
        counts = farm.counts()
        assert "in-progress" not in counts, counts
        assert 0 < counts.get("not_started", 0) < n, counts
        assert farm.query(
            "SELECT count(*) FROM jobs j WHERE status = 'not_started' AND "
            "(attempts <> 0 OR EXISTS (SELECT 1 FROM attempts a "
            "WHERE a.job_id = j.job_id))") == [(0,)]
        if "event=jobs_given_back" in log.read_text():
            break
        master = farm.start("run", "--workers", "2", "--log-level", "debug",
                            log=log)
    assert "event=jobs_given_back" in log.read_text()
    # and the next run finishes them, each once
    assert farm.run("run", "--workers", "2").returncode == 0
    assert_done_once(farm, n, ref)


def test_killed_host_jobs_taken_over(farm, tmp_path):
    n = 12
    farm.write_config(CONF.format(delay=1500))
    farm.make_media(n)
    ref = reference_outputs(tmp_path, farm, n)
    farm.run("scan", farm.media)
    a = farm.start("run", "--workers", "3", log=farm.path / "a.log")
    held = wait_for(lambda: len(host_jobs(farm, a.pid)) >= 2 and
                    host_jobs(farm, a.pid), 30, what="host A holding jobs")
    b = farm.start("run", "--workers", "2", "--watch", log=farm.path / "b.log")
    wait_for(lambda: farm.scalar("SELECT count(*) FROM hosts WHERE pid = ?",
                                 (b.pid,)) == 1, 20, what="host B registered")
    os.killpg(a.pid, signal.SIGKILL)
    killed = time.monotonic()
    a.wait(timeout=10)
    # taken over within host_timeout (2 s) plus a few seconds
    wait_for(lambda: all(farm.scalar(
        "SELECT status <> 'in-progress' OR coalesce(owner_master, 0) <> ? FROM jobs "
        "WHERE job_id = ?", (a.pid, j)) for j in held), 2 + 6,
        what="host A's jobs returned")
    assert time.monotonic() - killed < (2 + 6) * SLOW
    wait_for(lambda: farm.scalar("SELECT count(*) FROM jobs WHERE status = "
                                 "'completed'") == n, 60,
             what="every job completed")
    b.send_signal(signal.SIGTERM)
    assert b.wait(timeout=60 * SLOW) == 0
    assert_done_once(farm, n, ref)
    for j in held:
        rows = farm.query("SELECT outcome, message FROM attempts WHERE "
                          "job_id = ? ORDER BY attempt_id", (j,))
        assert rows[0][0] == "interrupted" and "went silent" in rows[0][1], rows
        assert rows[-1][0] == "completed", rows
    assert "in-progress-on-a-silent-host" in (farm.path / "b.log").read_text()


def test_paused_host_completes_nothing_it_lost(farm, tmp_path):
    n = 8
    farm.write_config(CONF.format(delay=2500))
    farm.make_media(n)
    ref = reference_outputs(tmp_path, farm, n)
    farm.run("scan", farm.media)
    a = farm.start("run", "--workers", "2", log=farm.path / "a.log")
    held = wait_for(lambda: len(host_jobs(farm, a.pid)) == 2 and
                    host_jobs(farm, a.pid), 30, what="host A holding jobs")
    leases = dict(farm.query("SELECT job_id, lease FROM jobs WHERE job_id IN "
                             "(?, ?)", tuple(held)))
    os.killpg(a.pid, signal.SIGSTOP)
    try:
        b = farm.start("run", "--workers", "2", "--watch",
                       log=farm.path / "b.log")
        # B takes A's jobs back and completes them (and the rest)
        wait_for(lambda: farm.scalar("SELECT count(*) FROM jobs WHERE "
                                     "status = 'completed'") == n, 90,
                 what="every job completed by B")
    finally:
        os.killpg(a.pid, signal.SIGCONT)
    # A wakes and finishes its noop delay: its completions are refused
    assert a.wait(timeout=60 * SLOW) in (0, 3)
    b.send_signal(signal.SIGTERM)
    assert b.wait(timeout=60 * SLOW) == 0
    assert_done_once(farm, n, ref)
    for j in held:
        rows = farm.query("SELECT attempt_id, outcome FROM attempts WHERE "
                          "job_id = ? AND outcome = 'completed'", (j,))
        # completed once, under a later lease than the one A held
        assert len(rows) == 1 and rows[0][0] > leases[j], rows
        assert farm.scalar("SELECT attempts FROM jobs WHERE job_id = ?",
                           (j,)) == 2


def test_status_and_signal_find_the_hosts(farm):
    farm.write_config(CONF.format(delay=300))
    farm.make_media(20)
    farm.run("scan", farm.media)
    m = farm.start("run", "--workers", "2", "--watch")
    wait_for(lambda: "Host " in farm.run("status").stdout, 30,
             what="status listing the host")
    out = farm.run("status").stdout
    assert "(pid %d)" % m.pid in out, out
    p = farm.run("signal", "TERM")
    assert p.returncode == 0, p.stderr
    assert "sent TERM to the master" in p.stdout
    assert m.wait(timeout=60 * SLOW) == 0
    # the clean exit removed the host row; nothing left to signal
    assert farm.run("signal", "TERM").returncode == 1


def test_password_never_printed(farm):
    """A password in the URL reaches libpq (PGPASSWORD), never a message,
    a log line, a process title or status."""
    secret = "s3cretPW"
    url = farm.db.replace("postgresql:///", "postgresql://postgres:%s@/"
                          % secret, 1)
    farm.write_config(CONF.format(delay=0))
    farm.make_media(3)
    farm.env["MPFARM_DB"] = url
    outs = [farm.run("scan", farm.media), farm.run("scan", "/nonexistent"),
            farm.run("run", "--workers", "1"), farm.run("status"),
            farm.run("config"), farm.run("show", "nosuchfile")]
    for p in outs:
        assert secret not in p.stdout + p.stderr, p
    assert outs[0].returncode == 0 and outs[2].returncode == 0
    assert "Completed: 3 files" in outs[3].stdout


def test_fix_leaves_a_running_host_alone(farm):
    """No lock file on PostgreSQL: a heartbeating host is what tells fix
    that in-progress jobs are alive (their workers may be elsewhere)."""
    farm.write_config(CONF.format(delay=4000))
    farm.make_media(4)
    farm.run("scan", farm.media)
    m = farm.start("run", "--workers", "2")
    wait_for(lambda: farm.query("SELECT count(*) FROM jobs WHERE status = "
                                "'in-progress'")[0][0] == 2, 30,
             what="2 running")
    before = farm.query("SELECT job_id, lease FROM jobs WHERE status = "
                        "'in-progress' ORDER BY 1")
    p = farm.run("fix")
    assert p.returncode == 0, p.stderr
    assert farm.query("SELECT job_id, lease FROM jobs WHERE status = "
                      "'in-progress' ORDER BY 1") == before
    m.send_signal(signal.SIGTERM)
    m.wait(timeout=60 * SLOW)


def test_dead_master_of_this_host_is_no_live_master(farm):
    """A host row of this machine whose master died (kill -9: the row is
    still fresh, host_timeout has not passed) does not count as a running
    master for fix, which then repairs as on an idle farm."""
    farm.write_config(CONF.format(delay=0))
    farm.make_media(2)
    assert farm.run("scan", farm.media).returncode == 0
    gone = subprocess.Popen(["true"])
    gone.wait()                     # a pid nobody has any more
    now = int(time.time() * 1000)
    farm.execute("INSERT INTO hosts (host_id, hostname, pid, started_at, "
                 "seen_at, figures) VALUES (?, ?, ?, ?, ?, '')",
                 ("e" * 32, os.uname().nodename, gone.pid, now, now))
    p = farm.run("fix")
    assert p.returncode == 0, p.stderr
    assert "is running" not in p.stdout, p.stdout
    # the same row with a live pid (this test's) is a running master
    farm.execute("UPDATE hosts SET pid = ?, seen_at = ?",
                 (os.getpid(), int(time.time() * 1000)))
    p = farm.run("fix")
    assert "master pid %d is running" % os.getpid() in p.stdout, p.stdout


def test_master_waits_only_for_work_it_could_run(farm):
    """Without --watch a master that runs out of work waits for the jobs
    other hosts still run in its stages (one may come back), and only
    those: one started with --stage translate leaves while another host
    still transcribes (translations wait for transcripts, as on SQLite);
    one running every stage waits, takes its share of the translations
    once the transcripts are done, and ends with the others."""
    farm.write_config(CONF.format(delay=3000) +
                      "[translate]\nprovider = noop\nlanguages = de\n")
    farm.make_media(2)
    assert farm.run("scan", farm.media).returncode == 0
    a = farm.start("run", "--workers", "2", log=farm.path / "a.log")
    wait_for(lambda: len(host_jobs(farm, a.pid)) == 2, 30,
             what="host A transcribing both files")
    t = farm.run("run", "--stage", "translate", "--workers", "1",
                 "--log-level", "debug")
    assert t.returncode == 0, t.stderr
    assert "event=waiting_for_hosts" not in t.stderr
    assert len(host_jobs(farm, a.pid)) == 2     # it did not wait for A
    b = farm.start("run", "--workers", "1", log=farm.path / "b.log")
    wait_for(lambda: "event=waiting_for_hosts jobs=2" in
             (farm.path / "b.log").read_text(), 30, what="B waiting for A")
    assert a.wait(timeout=60 * SLOW) == 0
    assert b.wait(timeout=60 * SLOW) == 0
    assert farm.counts() == {"completed": 4}
    done = [host_completed(farm.path / x) for x in ("a.log", "b.log")]
    assert sum(done) == 4 and done[0] >= 2, done


def test_empty_database_is_where_a_farm_starts(farm):
    """A new PostgreSQL database (no mpfarm tables yet) is what a missing
    SQLite file is: config's checks pass, the dry runs preview and create
    nothing; one holding another program's media_files is refused."""
    farm.write_config(CONF.format(delay=0))
    farm.make_media(2)
    tables = "SELECT count(*) FROM pg_tables WHERE schemaname = " \
        "current_schema()"
    p = farm.run("config")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "no farm in it yet" in p.stdout
    p = farm.run("run", "--dry-run")
    assert p.returncode == 0, p.stderr
    assert "holds no farm yet" in p.stdout
    p = farm.run("scan", "--dry-run", farm.media)
    assert p.returncode == 0, p.stderr
    assert "new: " in p.stdout and \
        "nothing was written (no farm in this database yet)" in p.stdout
    assert farm.query(tables) == [(0,)]
    farm.execute("CREATE TABLE media_files (a int)")
    p = farm.run("scan", "--dry-run", farm.media)
    assert p.returncode == 1 and "not an mpfarm database" in p.stderr, \
        p.stdout + p.stderr
